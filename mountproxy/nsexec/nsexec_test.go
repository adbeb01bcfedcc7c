package nsexec

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCreateSuperblockName: only a node directly in /dev can be named;
// anything else is refused before a process is started.
func TestCreateSuperblockName(t *testing.T) {
	for _, p := range []string{"", "loop0", "/dev/", "/dev/x/loop0", "/tmp/loop0", "/dev/../loop0"} {
		if err := CreateSuperblock(nil, p, unix.Mkdev(7, 0)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("CreateSuperblock(%q) = %v, want EINVAL", p, err)
		}
	}
}
