package supervisor_test

import (
	"log"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/supervisor"
)

// A container manager that receives seccomp listener fds itself (as LXD
// does) uses the agent as a library: one Agent per host, Attach for every
// listener of a container, Close when the manager stops. tests/library_test.go
// runs this against a real runc container.
func ExampleAgent_Attach() {
	pol := mountproxy.DefaultPolicy()
	agent, err := supervisor.NewAgent(supervisor.AgentConfig{
		StateDir: "/run/loopvisor", // journals: a restarted manager reclaims what it held
		Limits:   loopctl.Limits{MaxLoop: 8, MaxPerUID: 64},
		Mounts:   &pol,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Close()

	// For each process of a container that loads the filter: its
	// container id, the pid of the container's init, and the listener fd.
	var (
		containerID = "c1"
		initPid     = 4242
		listenerFD  = -1 // from the runtime or from seccomp(2) in the manager's own code
	)
	if err := agent.Attach(containerID, initPid, "max-loop=4", "creating", listenerFD); err != nil {
		log.Print(err) // the container's trapped calls then fail with ENOSYS
	}
	for _, s := range agent.Status() {
		log.Printf("%s: %d devices", s.Container, len(s.Devices))
	}
}
