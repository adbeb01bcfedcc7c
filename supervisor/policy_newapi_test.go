package supervisor

import (
	"testing"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
)

// The agent serves the new mount API only to containers whose metadata
// says their filter traps it (oci-config writes mount-api=new).
func TestPolicyForNewAPI(t *testing.T) {
	pol := mountproxy.DefaultPolicy()
	a := &Agent{cfg: AgentConfig{Limits: loopctl.Limits{MaxLoop: 8}, Mounts: &pol}}
	for md, want := range map[string]bool{"": false, "max-loop=4": false, "mount-api=new": true, "max-loop=2;mount-api=new": true} {
		_, p, err := a.policyFor(md)
		if err != nil || p == nil || p.NewAPI != want {
			t.Errorf("%q: NewAPI %v (%v), want %v", md, p != nil && p.NewAPI, err, want)
		}
	}
	if _, _, err := a.policyFor("mount-api=old"); err == nil {
		t.Error("mount-api=old must be refused")
	}
	if pol.NewAPI {
		t.Error("policyFor changed the agent's own policy")
	}
}
