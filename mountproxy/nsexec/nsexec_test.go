package nsexec

import (
	"errors"
	"fmt"
	"os"
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

// TestConfineTransient: the failures of the cgroup v2 set-up that a
// container can cause by reaching a limit (mkdir's EAGAIN at
// cgroup.max.descendants, BPF's ENOMEM, clone3's EAGAIN at pids.max as
// runCmd reports it) are transient, so CreateSuperblock's fallback must
// confine; a host that cannot give the cgroup (no such directory, no
// CLONE_INTO_CGROUP) is not. TestKcreateFullCgroupNotUnconfined (tests/)
// runs the mkdir case for real.
func TestConfineTransient(t *testing.T) {
	start := func(errno unix.Errno) error {
		return &Error{Op: "kcreate", Step: "start", Errno: unix.EIO, cause: &os.PathError{Op: "fork/exec", Path: "/proc/self/exe", Err: errno}}
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "mkdir", Err: unix.EAGAIN}, true},
		{fmt.Errorf("cgroup x: device program: %w", unix.ENOMEM), true},
		{start(unix.EAGAIN), true},
		{start(unix.ENOMEM), true},
		{&os.PathError{Op: "mkdir", Err: unix.ENOENT}, false},
		{fmt.Errorf("cgroup x: device program: %w", unix.EPERM), false},
		{start(unix.E2BIG), false},
		{start(unix.EOPNOTSUPP), false},
	} {
		if got := (&confineError{c.err}).transient(); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
