package notify

import (
	"fmt"
	"os"
	"testing"
)

// TestMain fails the package if the tests leave file descriptors open, as
// cilium/ebpf does: notify hands out pidfds and duplicated caller fds, and
// a leak there would exhaust a long-running supervisor.
func TestMain(m *testing.M) {
	// The first os.Pipe starts the runtime's netpoller, whose epoll and
	// wake-up fds then live for the rest of the process: start it before
	// counting so they are not taken for a leak.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify: pipe:", err)
		os.Exit(1)
	}
	_ = r.Close()
	_ = w.Close()

	before, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify: counting fds:", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify: counting fds:", err)
		os.Exit(1)
	}
	if after > before {
		fmt.Fprintf(os.Stderr, "notify: fd leak: %d open before the tests, %d after\n", before, after)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// openFDs counts the process's open file descriptors (including the one
// ReadDir reads /proc/self/fd through, the same in every count).
func openFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}
