package mountproxy

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// detachedTmpfsRoot makes a detached tmpfs mount (the test's own, gone
// with its fd) and returns its fd. Needs CAP_SYS_ADMIN.
func detachedTmpfsRoot(t *testing.T) int {
	t.Helper()
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		t.Skipf("fsopen(tmpfs) as this user: %v", err)
	}
	defer func() { _ = unix.Close(fs) }()
	if err := unix.FsconfigSetString(fs, "size", "1M"); err != nil {
		t.Fatal(err)
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		t.Fatal(err)
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(mnt) })
	return mnt
}

// pickFor registers a context fspick would have handed out for the mount
// whose root is mnt, and returns the caller's descriptor for it.
func pickFor(t *testing.T, p *Proxy, mnt int, pk *pickState) uint64 {
	t.Helper()
	f := newFileFd(t, mnt)
	token, err := pickContext(f)
	if err != nil {
		t.Fatal(err)
	}
	if pk.private, err = pickContext(f); err != nil {
		t.Fatal(err)
	}
	p.api.add(&fsContext{file: token, fstype: "tmpfs", phase: phaseAwaitingReconf, pick: pk})
	// The caller's descriptor: the same open file.
	dup, err := unix.FcntlInt(token.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(dup) })
	return uint64(dup)
}

func statfsFlags(t *testing.T, fd int) (int64, uint64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Flags, st.Blocks
}

// fsconfig on a context fspick handed out, with a fake caller whose
// descriptors are the test's: a kernel mount's options are checked against
// the type's allow-list (size= is not on tmpfs's: EINVAL) and the flags
// parsed; FSCONFIG_CMD_RECONFIGURE reconfigures the supervisor's private
// context, so a parameter slipped onto the caller's own descriptor past
// the trap is never applied; the context is then forgotten (the kernel's).
// A FUSE mount's file system options are ignored as mount(2)'s remount
// ignores them, and a read-only helper's superblock stays read-only
// (EROFS). Create and fsmount answer EBUSY as on a reconfiguration
// context. Needs CAP_SYS_ADMIN.
func TestFspickContexts(t *testing.T) {
	mnt := detachedTmpfsRoot(t)
	const ro, rw, size, big, opt = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
	c := &fdCallerFake{memCaller{mem: map[uint64]string{ro: "ro", rw: "rw", size: "size", big: "8M", opt: "user_id=0"}, privileged: true}}
	p := newAPIProxy(t, true)

	fd := pickFor(t, p, mnt, &pickState{dev: "0:1", idx: -1})
	_, blocks := statfsFlags(t, mnt)
	steps := []struct {
		name string
		call func() notify.Reply
		want notify.Reply
	}{
		{"option off the allow-list", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_STRING, size, big}) }, notify.Errno(unix.EINVAL)},
		{"create", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_CMD_CREATE}) }, notify.Errno(unix.EBUSY)},
		{"fsmount", func() notify.Reply { return p.Fsmount(c, [6]uint64{fd, unix.FSMOUNT_CLOEXEC}) }, notify.Errno(unix.EBUSY)},
		{"ro", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, ro}) }, notify.Reply{}},
	}
	for _, s := range steps {
		if got := s.call(); got != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}
	// What the kernel would parse on the caller's descriptor if it won a
	// race against the trap: never applied.
	if err := unix.FsconfigSetString(int(fd), "size", "8M"); err != nil {
		t.Fatal(err)
	}
	if got := p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_CMD_RECONFIGURE}); got != (notify.Reply{}) {
		t.Fatalf("reconfigure: %+v", got)
	}
	if flags, b := statfsFlags(t, mnt); flags&unix.ST_RDONLY == 0 || b != blocks {
		t.Errorf("after ro: flags %#x blocks %d, want read-only and %d blocks", flags, b, blocks)
	}
	// Forgotten once reconfigured: the kernel's from then.
	if got := p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, rw}); got != notify.Continue {
		t.Errorf("after the reconfiguration: %+v, want CONTINUE", got)
	}

	// A FUSE mount: options ignored, rw of a read-only helper refused.
	fuse := pickFor(t, p, mnt, &pickState{dev: "0:2", idx: -1, fm: &fuseMount{readOnly: true}})
	for _, s := range []struct {
		name string
		args [6]uint64
		want notify.Reply
	}{
		{"a FUSE option", [6]uint64{fuse, unix.FSCONFIG_SET_STRING, opt, big}, notify.Reply{}},
		{"rw", [6]uint64{fuse, unix.FSCONFIG_SET_FLAG, rw}, notify.Reply{}},
		{"reconfigure rw", [6]uint64{fuse, unix.FSCONFIG_CMD_RECONFIGURE}, notify.Errno(unix.EROFS)},
		{"after a failed reconfigure", [6]uint64{fuse, unix.FSCONFIG_SET_FLAG, ro}, notify.Errno(unix.EBUSY)},
	} {
		if got := p.Fsconfig(c, s.args); got != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}
	if flags, _ := statfsFlags(t, mnt); flags&unix.ST_RDONLY == 0 {
		t.Errorf("the refused rw remount changed the superblock")
	}
	// An unprivileged caller: EPERM at the reconfiguration, as the kernel.
	c.privileged = false
	fd = pickFor(t, p, mnt, &pickState{dev: "0:3", idx: -1})
	if got := p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_CMD_RECONFIGURE}); got != notify.Errno(unix.EPERM) {
		t.Errorf("unprivileged reconfigure: %+v, want EPERM", got)
	}
	// Umount of the superblock forgets its contexts.
	p.api.dropPicks("0:3")
	if p.contextOf(c, fd) != nil {
		t.Errorf("dropPicks left the context")
	}
}

func TestDevIndex(t *testing.T) {
	for _, c := range []struct {
		dev  string
		want int
	}{{"0:52", -1}, {"8:1", -1}, {"x", -1}, {"7:x", -1}} {
		if got := devIndex(c.dev); got != c.want {
			t.Errorf("devIndex(%q) = %d, want %d", c.dev, got, c.want)
		}
	}
}

// newFileFd returns a duplicate of fd as an *os.File, closed at cleanup.
func newFileFd(t *testing.T, fd int) *os.File {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(d), "mnt")
	t.Cleanup(func() { _ = f.Close() })
	return f
}
