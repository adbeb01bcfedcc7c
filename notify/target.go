package notify

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Target is the task behind one Request, as the supervisor reaches it.
//
// A Target is valid only while its Request is pending: every method that
// reads the task re-checks the notification ID afterwards, so a result is
// never used for a task that died and whose pid was reused.
type Target struct {
	l     *Listener
	req   *Request
	pidfd int
}

// ErrStale means the notification is no longer pending (the caller died or
// was interrupted); nothing must be done on its behalf.
var ErrStale = unix.ENOENT

// Target opens the caller of req. Close it when the request is answered.
func (l *Listener) Target(req *Request) (*Target, error) {
	pidfd, err := unix.PidfdOpen(req.Pid, unix.PIDFD_THREAD)
	if err != nil {
		if err == unix.EINVAL {
			// Kernels before 6.9 have no PIDFD_THREAD; fds are shared
			// by the thread group in practice, so the leader will do.
			pidfd, err = unix.PidfdOpen(req.Pid, 0)
		}
		if err != nil {
			return nil, ErrStale
		}
	}
	t := &Target{l: l, req: req, pidfd: pidfd}
	// The pid could have been reused between RECV and pidfd_open: the ID
	// check proves the pidfd names the trapped task.
	if !l.Valid(req.ID) {
		t.Close()
		return nil, ErrStale
	}
	return t, nil
}

// Close releases the pidfd.
func (t *Target) Close() {
	if t.pidfd >= 0 {
		unix.Close(t.pidfd)
		t.pidfd = -1
	}
}

// Pid returns the caller's thread id in the supervisor's pid namespace.
func (t *Target) Pid() int { return t.req.Pid }

// Valid reports whether the request is still pending.
func (t *Target) Valid() bool { return t.l.Valid(t.req.ID) }

// GetFD duplicates the caller's file descriptor unsafeFD into the
// supervisor. It fails with EBADF as the kernel would for a bad descriptor.
func (t *Target) GetFD(unsafeFD uint32) (*os.File, error) {
	if unsafeFD > 0x7fffffff {
		return nil, unix.EBADF
	}
	fd, err := unix.PidfdGetfd(t.pidfd, int(unsafeFD), 0)
	if err != nil {
		if err == unix.ESRCH {
			return nil, ErrStale
		}
		if err == unix.EMFILE || err == unix.ENFILE {
			return nil, err
		}
		return nil, unix.EBADF
	}
	f := os.NewFile(uintptr(fd), "target-fd")
	if !t.Valid() {
		f.Close()
		return nil, ErrStale
	}
	return f, nil
}

// Read copies len(buf) bytes at unsafeAddr of the caller into buf. A bad
// address gives EFAULT, as copy_from_user would.
func (t *Target) Read(unsafeAddr uint64, buf []byte) error {
	err := readMem(t.req.Pid, unsafeAddr, buf)
	if !t.Valid() {
		return ErrStale
	}
	if err != nil {
		if err == unix.ESRCH {
			return ErrStale
		}
		return unix.EFAULT
	}
	return nil
}

// Write copies buf to unsafeAddr in the caller (copy_to_user).
func (t *Target) Write(unsafeAddr uint64, buf []byte) error {
	if !t.Valid() {
		return ErrStale
	}
	if err := writeMem(t.req.Pid, unsafeAddr, buf); err != nil {
		if err == unix.ESRCH {
			return ErrStale
		}
		return unix.EFAULT
	}
	return nil
}

// Status returns the contents of /proc/PID/status of the caller.
func (t *Target) Status() ([]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(t.req.Pid) + "/status")
	if !t.Valid() {
		return nil, ErrStale
	}
	return b, err
}

// UserNS returns the inode of the caller's user namespace.
func (t *Target) UserNS() (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/"+strconv.Itoa(t.req.Pid)+"/ns/user", &st)
	if !t.Valid() {
		return 0, ErrStale
	}
	if err != nil {
		return 0, err
	}
	return st.Ino, nil
}
