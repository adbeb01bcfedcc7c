// Package fdleak fails a test binary that leaves file descriptors open, as
// cilium/ebpf's TestMain does: loopvisor hands out pidfds, duplicated
// caller fds and device fds, and a leak would exhaust a long-running
// supervisor. Use it from TestMain: os.Exit(fdleak.Run(m, "pkg")).
//
// When not to use this package: outside tests.
package fdleak

import (
	"fmt"
	"os"
	"testing"
)

// Run runs m and returns its exit code, or 1 if more fds are open after
// the tests than before.
func Run(m *testing.M, pkg string) int {
	// The first os.Pipe starts the runtime's netpoller, whose epoll and
	// wake-up fds then live for the rest of the process: start it before
	// counting so they are not taken for a leak.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, pkg+": pipe:", err)
		return 1
	}
	_ = r.Close()
	_ = w.Close()
	before, err := open()
	if err != nil {
		fmt.Fprintln(os.Stderr, pkg+": counting fds:", err)
		return 1
	}
	code := m.Run()
	after, err := open()
	if err != nil {
		fmt.Fprintln(os.Stderr, pkg+": counting fds:", err)
		return 1
	}
	if after > before {
		fmt.Fprintf(os.Stderr, "%s: fd leak: %d open before the tests, %d after\n", pkg, before, after)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// open counts the process's open file descriptors (including the one
// ReadDir reads /proc/self/fd through, the same in every count).
func open() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}
