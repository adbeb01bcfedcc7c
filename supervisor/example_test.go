package supervisor_test

import (
	"log"
	"os"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/notify"
	"github.com/loopvisor/loopvisor/supervisor"
)

// A container manager that receives seccomp listener fds itself (as an OCI
// runtime's listenerPath agent does) uses the agent as a library: one Agent per host, Attach for every
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

// A manager that keeps the listener and proxies each notification itself
// (Incus's seccomp server receives LXC's proxy packets) hands loopvisor
// the notifications it does not serve: the decoded seccomp_notif, the
// caller's /proc/PID and /proc/PID/mem fds, the listener fd (for ID
// checks only) and the container's init. It sends the reply to the kernel
// (or back to LXC) itself. The instance is released when the init exits,
// or earlier with ReleaseProxied. `loopvisor agent --lxc-socket` serves
// LXC's monitor this way.
func ExampleAgent_HandleProxied() {
	pol := mountproxy.DefaultPolicy()
	agent, err := supervisor.NewAgent(supervisor.AgentConfig{
		StateDir: "/run/loopvisor",
		Limits:   loopctl.Limits{MaxLoop: 8, MaxPerUID: 64},
		Mounts:   &pol,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Close()

	// What the manager's proxy received for one notification (from LXC:
	// the seccomp_notif bytes and three SCM_RIGHTS fds).
	var (
		rawNotif           = make([]byte, notify.NotifSize)
		procDir, mem       *os.File // the caller's /proc/PID and /proc/PID/mem
		listenerFD         = -1
		containerInit      = 4242
		containerName      = "incus/c1"
		containerPolicy    = "max-loop=4"
		sendToKernelOrLXC  = func(resp []byte) {}
		notificationIsOurs = func(r notify.Request) bool { return r.Nr == int32(unix.SYS_IOCTL) }
	)
	req, err := notify.UnmarshalNotif(rawNotif)
	if err != nil || !notificationIsOurs(req) {
		return // the manager's own handlers
	}
	req.Proc, req.Mem = procDir, mem
	reply := agent.HandleProxied(supervisor.Proxied{
		Container: containerName, InitPid: containerInit, Policy: containerPolicy,
		Request: req, Listener: listenerFD,
	})
	// The struct seccomp_notif_resp for the kernel's SECCOMP_IOCTL_NOTIF_SEND
	// (or the third part of an LXC proxy reply): error, val and the
	// CONTINUE flag as reply says.
	sendToKernelOrLXC(notify.MarshalResp(req.ID, reply, notify.NotifRespSize))

	// The manager stopped the container before its init exited.
	agent.ReleaseProxied(containerName, containerInit)
}
