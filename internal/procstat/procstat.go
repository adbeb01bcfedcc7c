// Package procstat reads a process's thread count and resident memory from
// /proc/PID/status, once (Read) or as a running peak (Sample), for the
// benchmarks and the resource-bound tests of the agent.
//
// When not to use this package: for timings, or anything a supervisor
// decides on.
package procstat

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stat is one reading of /proc/PID/status.
type Stat struct {
	Threads int
	RSSKiB  int
}

// Read reads pid's Threads and VmRSS; a process that is gone reads as zero.
func Read(pid int) Stat {
	var s Stat
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return s
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Threads:":
			s.Threads, _ = strconv.Atoi(f[1])
		case "VmRSS:":
			s.RSSKiB, _ = strconv.Atoi(f[1])
		}
	}
	return s
}

// Sampler records the peak threads and RSS of a process.
type Sampler struct {
	mu         sync.Mutex
	max        Stat
	quit, done chan struct{}
}

// Sample starts reading pid every interval until Stop.
func Sample(pid int, every time.Duration) *Sampler {
	s := &Sampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			p := Read(pid)
			s.mu.Lock()
			s.max.Threads = max(s.max.Threads, p.Threads)
			s.max.RSSKiB = max(s.max.RSSKiB, p.RSSKiB)
			s.mu.Unlock()
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Peak returns the peak so far.
func (s *Sampler) Peak() Stat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// Stop ends the sampling.
func (s *Sampler) Stop() { close(s.quit); <-s.done }
