package supervisor

import (
	"fmt"
	"path/filepath"

	"github.com/loopvisor/loopvisor/supervisor/ociproto"
)

// AgentInfo is what an agent says about itself (ociproto.InfoRequest):
// where it keeps the nodes a container's config bind-mounts.
type AgentInfo struct {
	StateDir string `json:"state_dir"`
	// NodeDir holds loop-control and fuse, the nodes `loopvisor
	// oci-config` bind-mounts on a container's /dev (StateDir/dev).
	NodeDir string `json:"node_dir"`
}

// Info describes the agent.
func (a *Agent) Info() AgentInfo {
	dir, err := filepath.Abs(a.reg.Dir)
	if err != nil {
		dir = a.reg.Dir
	}
	return AgentInfo{StateDir: dir, NodeDir: filepath.Join(dir, "dev")}
}

// QueryInfo asks the agent at socket about itself. An agent that predates
// the info request closes the connection without an answer.
func QueryInfo(socket string) (AgentInfo, error) {
	var out AgentInfo
	if err := ociproto.QueryWith(socket, ociproto.InfoRequest, &out); err != nil {
		return AgentInfo{}, err
	}
	if out.NodeDir == "" || !filepath.IsAbs(out.NodeDir) {
		return AgentInfo{}, fmt.Errorf("agent at %s: no node directory in its answer", socket)
	}
	return out, nil
}
