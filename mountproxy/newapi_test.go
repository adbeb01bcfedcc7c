package mountproxy

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// fdCallerFake is a memCaller whose descriptors are this process's.
type fdCallerFake struct {
	memCaller
}

func (c *fdCallerFake) GetFD(fd uint32) (notify.FD, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return notify.FD{N: -1}, unix.EBADF
	}
	return notify.FD{N: n}, nil
}

func newAPIProxy(t *testing.T, newAPI bool) *Proxy {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	pol := DefaultPolicy()
	pol.NewAPI = newAPI
	p := New(pol, noDevices{}, nil, logrus.NewEntry(log))
	t.Cleanup(p.Close)
	return p
}

// The new mount API's bookkeeping with a fake caller whose descriptors are
// the test's own: a served fsopen hands out a context, later calls on it
// (and only on it) are served with the kernel's errnos and phases, other
// descriptors are the kernel's. Needs CAP_SYS_ADMIN for fsopen.
func TestNewAPIContexts(t *testing.T) {
	if fd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC); err != nil {
		t.Skipf("fsopen(ext4) as this user: %v", err)
	} else {
		_ = unix.Close(fd)
	}
	const typ, src, key, val = 0x1000, 0x2000, 0x3000, 0x4000
	c := &fdCallerFake{memCaller{mem: map[uint64]string{typ: "ext4", src: "source", key: "nosuchkey", val: "x"}, privileged: true}}

	if r := newAPIProxy(t, false).Fsopen(c, [6]uint64{typ, unix.FSOPEN_CLOEXEC}); r.Errno != unix.ENOSYS {
		t.Fatalf("without Policy.NewAPI fsopen = %+v, want ENOSYS", r)
	}
	p := newAPIProxy(t, true)
	r := p.Fsopen(c, [6]uint64{typ, unix.FSOPEN_CLOEXEC})
	if r.FD == nil || !r.Cloexec {
		t.Fatalf("fsopen = %+v, want a context with O_CLOEXEC", r)
	}
	ctx := r.FD // stands for the caller's descriptor
	defer func() { _ = ctx.Close() }()
	fd := uint64(ctx.Fd())
	other, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(other) }()
	steps := []struct {
		name string
		call func() notify.Reply
		want notify.Reply
	}{
		{"another context is the kernel's", func() notify.Reply { return p.Fsconfig(c, [6]uint64{uint64(other), unix.FSCONFIG_SET_FLAG, key}) }, notify.Continue},
		{"fsmount of another context", func() notify.Reply { return p.Fsmount(c, [6]uint64{uint64(other)}) }, notify.Continue},
		{"bad command", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, 99}) }, notify.Errno(unix.EOPNOTSUPP)},
		{"flag with a value", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, key, val}) }, notify.Errno(unix.EINVAL)},
		{"unknown key", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, key}) }, notify.Errno(unix.EINVAL)},
		{"unreadable key", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, 0x9000}) }, notify.Errno(unix.EFAULT)},
		{"fsmount before create", func() notify.Reply { return p.Fsmount(c, [6]uint64{fd, unix.FSMOUNT_CLOEXEC}) }, notify.Errno(unix.EINVAL)},
		{"fsmount bad flags", func() notify.Reply { return p.Fsmount(c, [6]uint64{fd, 2}) }, notify.Errno(unix.EINVAL)},
		{"ro", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, 0x5000}) }, notify.Reply{}},
		{"create without source", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_CMD_CREATE}) }, notify.Errno(unix.EINVAL)},
		{"after a failed create", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, 0x5000}) }, notify.Errno(unix.EBUSY)},
		{"create again", func() notify.Reply { return p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_CMD_CREATE}) }, notify.Errno(unix.EBUSY)},
	}
	c.mem[0x5000] = "ro"
	for _, s := range steps {
		if got := s.call(); got != s.want {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}
	if x := p.contextOf(c, fd); x == nil || x.flags&unix.MS_RDONLY == 0 {
		t.Errorf("the context should be known with ro recorded: %+v", x)
	}
	// Beyond maxContexts the oldest is forgotten: its calls become the
	// kernel's.
	for i := 0; i < maxContexts; i++ {
		r := p.Fsopen(c, [6]uint64{typ, unix.FSOPEN_CLOEXEC})
		if r.FD == nil {
			t.Fatalf("fsopen %d = %+v", i, r)
		}
		defer func() { _ = r.FD.Close() }()
	}
	if got := p.Fsconfig(c, [6]uint64{fd, unix.FSCONFIG_SET_FLAG, key}); got != notify.Continue {
		t.Errorf("a forgotten context: %+v, want CONTINUE", got)
	}
}

// fdCloexec reads FD_CLOEXEC from fdinfo.
func TestFdCloexec(t *testing.T) {
	r, w, err := os.Pipe() // O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(); _ = w.Close() }()
	plain, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(plain) }()
	if ce, err := fdCloexec(os.Getpid(), int32(r.Fd())); err != nil || !ce {
		t.Errorf("pipe: %v %v, want cloexec", ce, err)
	}
	if ce, err := fdCloexec(os.Getpid(), int32(plain)); err != nil || ce {
		t.Errorf("dup: %v %v, want no cloexec", ce, err)
	}
	if _, err := fdCloexec(os.Getpid(), 1<<30); !errors.Is(err, unix.EBADF) {
		t.Errorf("no such fd: %v, want EBADF", err)
	}
}
