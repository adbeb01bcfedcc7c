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

// TestConfineMustConfine: the failures of the cgroup v2 set-up that a
// container can cause (mkdir's EAGAIN at cgroup.max.descendants, BPF's
// ENOMEM; once the cgroup is made, any failure to start in it: clone3's
// EAGAIN at pids.max, ENODEV for a removed cgroup, as runCmd reports
// them) keep CreateSuperblock's fallback confined; a host that cannot
// give the cgroup (no such directory, no BPF, no CLONE_INTO_CGROUP) does
// not. TestKcreateFullCgroupNotUnconfined (tests/) runs the mkdir case.
func TestConfineMustConfine(t *testing.T) {
	start := func(errno unix.Errno) error {
		return &Error{Op: "kcreate", Step: "start", Errno: unix.EIO, cause: &os.PathError{Op: "fork/exec", Path: "/proc/self/exe", Err: errno}}
	}
	for _, c := range []struct {
		err  *confineError
		want bool
	}{
		{&confineError{&os.PathError{Op: "mkdir", Err: unix.EAGAIN}, false}, true},
		{&confineError{fmt.Errorf("cgroup x: device program: %w", unix.ENOMEM), false}, true},
		{&confineError{&os.PathError{Op: "mkdir", Err: unix.ENOENT}, false}, false},
		{&confineError{fmt.Errorf("cgroup x: device program: %w", unix.EPERM), false}, false},
		{&confineError{start(unix.EAGAIN), true}, true},
		{&confineError{start(unix.ENOMEM), true}, true},
		{&confineError{start(unix.ENODEV), true}, true},
		{&confineError{start(unix.EOPNOTSUPP), true}, true},
		{&confineError{start(unix.ENOSYS), true}, false},
		{&confineError{start(unix.E2BIG), true}, false},
		{&confineError{start(unix.EINVAL), true}, false},
	} {
		if got := c.err.mustConfine(); got != c.want {
			t.Errorf("mustConfine(%v, made %v) = %v, want %v", c.err.err, c.err.made, got, c.want)
		}
	}
}
