package linux

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fdSize reads FDSize (the descriptor table's slots) from /proc/self/status.
func fdSize(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "FDSize:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no FDSize in /proc/self/status")
	return 0
}

func TestReserveFDTable(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	want := 4096
	if rl.Cur < uint64(want) {
		t.Skipf("RLIMIT_NOFILE %d is below %d", rl.Cur, want)
	}
	if before := fdSize(t); before >= want {
		t.Skipf("the table already has %d slots", before)
	}
	got, err := ReserveFDTable(want)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("ReserveFDTable(%d) = %d", want, got)
	}
	if n := fdSize(t); n < want {
		t.Fatalf("FDSize %d after reserving %d", n, want)
	}
	// Capped at the soft limit, without an error.
	low := unix.Rlimit{Cur: uint64(want) + 100, Max: rl.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) }()
	got, err = ReserveFDTable(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if got != int(low.Cur) {
		t.Fatalf("ReserveFDTable past the limit = %d, want %d", got, low.Cur)
	}
}
