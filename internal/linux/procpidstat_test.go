package linux

import (
	"os"
	"testing"
)

// ReadPidStat of this process: running or sleeping, started after boot;
// of a pid that cannot exist: an error.
func TestReadPidStat(t *testing.T) {
	st, err := ReadPidStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'R' && st.State != 'S' {
		t.Errorf("state %q", st.State)
	}
	if st.StartTime == 0 {
		t.Error("start time 0")
	}
	if _, err := ReadPidStat(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}
