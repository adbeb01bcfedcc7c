package supervisor

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkPoolBounds: never more than n steps at once, however many
// goroutines ask.
func TestWorkPoolBounds(t *testing.T) {
	p := newWorkPool(3, quietLog())
	var cur, peak atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.do("step", nil, func() {
				n := cur.Add(1)
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				cur.Add(-1)
			})
		}()
	}
	wg.Wait()
	if peak.Load() > 3 || peak.Load() < 1 {
		t.Fatalf("peak concurrency %d, want 1..3", peak.Load())
	}
}

// TestWorkPoolHungStep: a step blocked past the limit gives its slot back,
// so other steps run; do still returns only when the step has returned.
func TestWorkPoolHungStep(t *testing.T) {
	p := newWorkPool(1, quietLog())
	p.limit = 20 * time.Millisecond
	release := make(chan struct{})
	hungDone := make(chan struct{})
	go func() {
		p.do("hung", nil, func() { <-release })
		close(hungDone)
	}()
	ran := make(chan struct{})
	go p.do("other", nil, func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a hung step kept the only worker")
	}
	select {
	case <-hungDone:
		t.Fatal("do returned before its step did")
	default:
	}
	close(release)
	<-hungDone
}

// TestProcNS: a live process's namespaces are those /proc shows; an exited
// one is errGone.
func TestProcNS(t *testing.T) {
	k, pidfd, err := procNS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer closeFD(pidfd)
	if k2, err := readNS(os.Getpid()); err != nil || k2 != k || k.User == 0 || k.PID == 0 || k.Mnt == 0 {
		t.Fatalf("procNS %v, readNS %v %v", k, k2, err)
	}
	if !pidfdAlive(pidfd) {
		t.Fatal("pidfdAlive(self) = false")
	}
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Skip(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := procNS(p.Pid); !errors.Is(err, errGone) {
		t.Fatalf("procNS of a reaped process: %v, want errGone", err)
	}
}
