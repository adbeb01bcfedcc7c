package main

// The bench never hangs: every process it starts is recorded, and when the
// overall deadline (-deadline) passes, a watchdog says which phase was
// running, stops them all (SIGTERM, which loopvisor forwards to its
// sandbox before releasing its devices; SIGKILL after a grace period),
// releases what loopvisor journals list, and exits non-zero.

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// waitDelay bounds how long Wait waits for a child's output pipes after
// the child has exited: a grandchild (a FUSE helper, a sandboxed process)
// may hold them open.
const waitDelay = 5 * time.Second

var children struct {
	sync.Mutex
	cmds     []*exec.Cmd
	phase    string
	cleanups []func()
	stopping bool
}

// start starts cmd and records it for the watchdog.
func start(cmd *exec.Cmd) error {
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = waitDelay
	}
	children.Lock()
	defer children.Unlock()
	if children.stopping {
		return fmt.Errorf("%s: the bench is stopping", cmd.Path)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	children.cmds = append(children.cmds, cmd)
	return nil
}

// setPhase names what the bench is measuring, for the watchdog's message.
func setPhase(p string) {
	children.Lock()
	children.phase = p
	children.Unlock()
	fmt.Fprintf(os.Stderr, "bench: %s\n", p)
}

// atDeadline registers f to run when the watchdog stops the bench (after
// the children are gone), last registered first.
func atDeadline(f func()) {
	children.Lock()
	children.cleanups = append(children.cleanups, f)
	children.Unlock()
}

// watchdog stops the bench once d has passed.
func watchdog(d time.Duration) {
	time.AfterFunc(d, func() {
		children.Lock()
		children.stopping = true
		cmds := append([]*exec.Cmd(nil), children.cmds...)
		phase := children.phase
		cleanups := children.cleanups
		children.Unlock()
		fmt.Fprintf(os.Stderr, "bench: overall deadline of %v passed while %s: stopping\n", d, phase)
		signalAll(cmds, syscall.SIGTERM)
		if !waitGone(cmds, 15*time.Second) {
			signalAll(cmds, syscall.SIGKILL)
			waitGone(cmds, 5*time.Second)
		}
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		os.Exit(1)
	})
}

// signalAll signals every child still running. Signalling one that has
// been reaped fails (os: process already finished) and is no error here.
func signalAll(cmds []*exec.Cmd, sig syscall.Signal) {
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Process.Signal(sig)
		}
	}
}

// waitGone waits up to d until no child answers signal 0 any more (their
// own waiters reap them).
func waitGone(cmds []*exec.Cmd, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		alive := false
		for _, c := range cmds {
			if c.Process != nil && c.Process.Signal(syscall.Signal(0)) == nil && !zombie(c.Process.Pid) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
	}
	return false
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] == 'Z'
		}
	}
	return false
}
