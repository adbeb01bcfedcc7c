package supervisor

import (
	"time"

	"github.com/sirupsen/logrus"
)

// agentWorkers bounds how many containers the agent sets up or releases at
// once. Setting up and releasing make blocking system calls (flock on the
// state directory, fork+exec+wait of nsexec, unmounting a view), and the Go
// runtime gives every goroutine blocked in a system call an OS thread of
// its own: 1,000 containers exiting together used to cost ~1,000 threads,
// kept for the agent's life. A few workers are as fast on a small machine.
const agentWorkers = 4

// agentFDTable is the descriptor table the agent reserves at start
// (linux.ReserveFDTable; capped at RLIMIT_NOFILE): the agent holds about 9
// descriptors per container, so 65,536 slots (512 KiB of kernel memory)
// serve some 7,000 containers before the kernel grows the table again.
// Each growth waits for an RCU grace period with every descriptor-opening
// thread asleep behind it, and the Go runtime then adds a thread for each
// goroutine so stuck: that is what moved the agent's peak between 12 and
// 40 threads for 1,000 containers (issue 13).
const agentFDTable = 1 << 16

// workLimit is how long one step may hold a worker. A step that blocks
// longer (a container that serves a FUSE mount over its own /dev and never
// answers makes publishing into it hang) gives its worker back, so that
// other containers are still set up and released, and finishes on its own.
const workLimit = 10 * time.Second

// workPool is a counting semaphore for the agent's blocking work: a
// goroutine waiting for a slot is parked, not on a thread.
type workPool struct {
	slots chan struct{}
	limit time.Duration
	log   *logrus.Entry
}

func newWorkPool(n int, log *logrus.Entry) *workPool {
	return &workPool{slots: make(chan struct{}, n), limit: workLimit, log: log}
}

// do runs f holding a slot for at most p.limit and returns when f has
// returned.
func (p *workPool) do(what string, log *logrus.Entry, f func()) {
	p.slots <- struct{}{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(p.limit)
	select {
	case <-done:
		t.Stop()
		<-p.slots
		return
	case <-t.C:
		<-p.slots
	}
	if log == nil {
		log = p.log
	}
	log.WithField("step", what).Warnf("still blocked after %v; its worker goes to other containers", p.limit)
	<-done
}
