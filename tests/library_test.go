package tests

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/supervisor"
	"github.com/loopvisor/loopvisor/tests/oci"
)

// TestLibraryAttach: a manager that receives the runtime's listener fd
// itself serves it with the supervisor package (NewAgent, Attach, Close),
// the way ExampleAgent_Attach shows.
func TestLibraryAttach(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	rt, cleanup, err := oci.New("runc")
	if err != nil {
		t.Fatal(err)
	}
	cleanupRuntime(t, cleanup)
	state := stateDir(t)
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	pol := mountproxy.DefaultPolicy()
	agent, err := supervisor.NewAgent(supervisor.AgentConfig{StateDir: state, Limits: loopctl.DefaultLimits, Mounts: &pol, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()

	// The manager's own socket and protocol handling.
	sock := filepath.Join(state, "manager.sock")
	ln, err := oci.ListenAgent(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }() // unlinks the socket; nothing to lose
	served := make(chan error, 1)
	go func() {
		st, files, err := ln.Accept(30 * time.Second)
		if err != nil {
			served <- err
			return
		}
		f, err := st.SeccompFd(files)
		if err != nil {
			served <- err
			return
		}
		fd, err := unix.Dup(int(f.Fd()))
		for _, x := range files {
			_ = x.Close() // received fds; the one needed is duplicated
		}
		if err != nil {
			served <- err
			return
		}
		served <- agent.Attach(st.State.ID, st.State.Pid, st.Metadata, st.State.Status, fd)
	}()

	dir := tempBundleDir(t)
	b, err := oci.NewBundle(dir, []string{"sh", "-c", "cd /tmp && truncate -s 8M a.img && losetup -f --show a.img && losetup -a | wc -l && losetup -D"}, "truncate", "wc")
	if err != nil {
		t.Fatal(err)
	}
	ociConfigFor(t, b, sock, state)
	res, err := rt.Run(b, nil)
	if serr := <-served; serr != nil {
		t.Fatalf("Attach: %v", serr)
	}
	if err != nil || res.Code != 0 || !strings.Contains(res.Stdout, "/dev/loop") || !strings.Contains(res.Stdout, "\n1\n") {
		t.Fatalf("container: %v\n%s", err, res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(agent.Status()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(agent.Status()); n != 0 {
		t.Errorf("%d instances still live after the container exited", n)
	}
}
