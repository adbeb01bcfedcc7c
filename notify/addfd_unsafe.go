package notify

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompNotifAddfd mirrors struct seccomp_notif_addfd
// (include/uapi/linux/seccomp.h).
type seccompNotifAddfd struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// addFD installs srcfd in the caller of notification id and, with
// SECCOMP_ADDFD_FLAG_SEND, answers the call with the new descriptor's
// number in one step; with r.SetFD it replaces descriptor r.NewFD and
// does not answer.
func addFD(fd int, id uint64, srcfd int, r Reply) error {
	a := seccompNotifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SEND, SrcFD: uint32(srcfd)}
	if r.SetFD {
		a.Flags, a.NewFD = unix.SECCOMP_ADDFD_FLAG_SETFD, uint32(r.NewFD)
	}
	if r.Cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
}

// respondFD answers id with r.FD installed in the caller; if that fails
// (its table is full, say) the call fails with the kernel's errno instead.
func (l *Listener) respondFD(id uint64, r Reply) error {
	defer func() { _ = r.FD.Close() }() // our copy; the caller has its own
	if !l.use() {
		return errClosed
	}
	err := addFD(l.fd, id, int(r.FD.Fd()), r)
	l.done()
	switch {
	case err == nil && r.SetFD:
		return l.Respond(id, Value(r.Val))
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EINPROGRESS):
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)", err)
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		e = unix.EIO
	}
	return l.Respond(id, Errno(e))
}

// Resolve turns r into a reply another process can send for notification
// id (a proxied notification: LXC's monitor answers with
// SECCOMP_IOCTL_NOTIF_SEND, which cannot carry a descriptor). A reply
// with FD installs it in the caller now (SECCOMP_IOCTL_NOTIF_ADDFD without
// SEND; with SetFD at NewFD) and becomes the value the call returns: the
// new descriptor's number, or r.Val for SetFD. If the install fails the
// call fails with the kernel's errno (ENOENT: the call is gone). Replies
// without FD are returned unchanged. r.FD is closed.
func (l *Listener) Resolve(id uint64, r Reply) Reply {
	if r.FD == nil {
		return r
	}
	defer func() { _ = r.FD.Close() }() // our copy; the caller has its own
	a := seccompNotifAddfd{ID: id, SrcFD: uint32(r.FD.Fd())}
	if r.SetFD {
		a.Flags, a.NewFD = unix.SECCOMP_ADDFD_FLAG_SETFD, uint32(r.NewFD)
	}
	if r.Cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	if !l.use() {
		return Errno(unix.EIO)
	}
	var n int
	var err error
	var r1 uintptr
	var e syscall.Errno
	for {
		r1, _, e = unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), uintptr(unix.SECCOMP_IOCTL_NOTIF_ADDFD), uintptr(unsafe.Pointer(&a)))
		if e != unix.EINTR {
			break
		}
	}
	l.done()
	n = int(r1)
	if e != 0 {
		err = e
	}
	if err != nil {
		var e syscall.Errno
		if !errors.As(err, &e) {
			e = unix.EIO
		}
		return Errno(e)
	}
	if r.SetFD {
		return Value(r.Val)
	}
	return Value(int64(n))
}
