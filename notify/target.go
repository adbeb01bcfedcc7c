package notify

import (
	"bytes"
	"errors"
	"io"
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

// Target opens the caller of req. Close it when the request is answered.
//
// Pidfds are cached per thread id: a pidfd stays bound to one task, so a
// cached one either names the caller or a dead task that had its tid, in
// which case pidfd_getfd fails with ESRCH and the Target opens a fresh one.
func (l *Listener) Target(req *Request) (*Target, error) {
	t := new(Target)
	l.Open(t, req)
	if err := t.pidFD(); err != nil {
		return nil, err
	}
	return t, nil
}

// Open is Target that fills t, for a serve loop that reuses one Target
// from request to request (no allocation per call). The caller's pidfd is
// looked up or opened when first needed: a call on a file the listener
// keeps needs none. Errors come from the methods then (ErrStale).
func (l *Listener) Open(t *Target, req *Request) {
	*t = Target{l: l, req: req, pidfd: -1}
}

// pidFD makes t.pidfd the caller's pidfd: the cached one, else a fresh
// one (refresh).
func (t *Target) pidFD() error {
	if t.pidfd >= 0 {
		return nil
	}
	l := t.l
	l.mu.Lock()
	pidfd, ok := l.pidfds[t.req.Pid]
	l.mu.Unlock()
	if ok {
		t.pidfd = pidfd
		return nil
	}
	return t.refresh()
}

// refresh opens a new pidfd for the caller and caches it.
func (t *Target) refresh() error {
	l := t.l
	pidfd, err := unix.PidfdOpen(t.req.Pid, unix.PIDFD_THREAD)
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 6.9 have no PIDFD_THREAD; fds are shared by the
		// thread group in practice, so the leader will do.
		pidfd, err = unix.PidfdOpen(t.req.Pid, 0)
	}
	if err != nil {
		return ErrStale
	}
	// The tid could have been reused between RECV and pidfd_open: the ID
	// check proves the pidfd names the trapped task.
	if !l.Valid(t.req.ID) {
		_ = unix.Close(pidfd) // unused pidfd; only its staleness matters
		return ErrStale
	}
	l.mu.Lock()
	// Dropping cached pidfds: a close error leaves nothing to undo.
	if old, ok := l.pidfds[t.req.Pid]; ok {
		_ = unix.Close(old)
	}
	if len(l.pidfds) >= maxCachedPidfds {
		for tid, fd := range l.pidfds {
			_ = unix.Close(fd)
			delete(l.pidfds, tid)
		}
	}
	l.pidfds[t.req.Pid] = pidfd
	l.mu.Unlock()
	t.pidfd = pidfd
	return nil
}

// maxCachedPidfds bounds the pidfd cache of one listener.
const maxCachedPidfds = 512

// Close ends the Target's use of the caller; the pidfd stays cached.
func (t *Target) Close() { t.pidfd = -1 }

// Pid returns the caller's thread id in the supervisor's pid namespace.
func (t *Target) Pid() int { return t.req.Pid }

// Valid reports whether the request is still pending.
func (t *Target) Valid() bool { return t.l.Valid(t.req.ID) }

// FD is a file descriptor the supervisor duplicated from a caller, with
// its open flags. It is a plain value: no finalizer; Close it once.
type FD struct {
	N     int
	Flags int // F_GETFL: O_ACCMODE and friends
	c     *cachedFile
	recog bool
}

// Fd returns the descriptor number.
func (f FD) Fd() uintptr { return uintptr(f.N) }

// Recognised reports whether GetFDStat recognised the file with kcmp
// rather than duplicating it: it is then the caller's only if the call is
// still pending, which the reply proves by itself (a reply to a call that
// is gone goes nowhere) and Valid proves before anything else is done
// with it.
func (f FD) Recognised() bool { return f.recog }

// Close closes the descriptor; for a file the listener keeps
// (GetFDStat), it ends this use of the listener's reference.
func (f FD) Close() error {
	if f.c != nil {
		f.c.release()
		return nil
	}
	return unix.Close(f.N)
}

// GetFD duplicates the caller's file descriptor unsafeFD into the
// supervisor. It fails with EBADF as the kernel's fget() would: for a bad
// descriptor and for an O_PATH one (which needs no permission to open, so
// serving it would bypass the file's mode).
//
// It does not re-check the notification ID: a pidfd names one task for
// good, so the descriptor is the caller's. Check Valid before acting.
func (t *Target) GetFD(unsafeFD uint32) (FD, error) {
	if unsafeFD > 0x7fffffff {
		return FD{N: -1}, unix.EBADF
	}
	if err := t.pidFD(); err != nil {
		return FD{N: -1}, err
	}
	fd, err := unix.PidfdGetfd(t.pidfd, int(unsafeFD), 0)
	if errors.Is(err, unix.ESRCH) {
		// A cached pidfd of a dead task that had the caller's tid.
		if rerr := t.refresh(); rerr != nil {
			return FD{N: -1}, rerr
		}
		fd, err = unix.PidfdGetfd(t.pidfd, int(unsafeFD), 0)
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ESRCH):
			return FD{N: -1}, ErrStale
		case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
			return FD{N: -1}, err
		}
		return FD{N: -1}, unix.EBADF
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_PATH != 0 {
		_ = unix.Close(fd) // our duplicate, refused before any use
		return FD{N: -1}, unix.EBADF
	}
	return FD{N: fd, Flags: fl}, nil
}

// Read copies len(buf) bytes at unsafeAddr of the caller into buf. A bad
// address gives EFAULT, as copy_from_user would.
func (t *Target) Read(unsafeAddr uint64, buf []byte) error {
	err := t.readMem(unsafeAddr, buf)
	if !t.Valid() {
		return ErrStale
	}
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
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
	if err := t.writeMem(unsafeAddr, buf); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrStale
		}
		return unix.EFAULT
	}
	return nil
}

// Status returns the contents of /proc/PID/status of the caller.
func (t *Target) Status() ([]byte, error) {
	b, err := t.procFile("status")
	if !t.Valid() {
		return nil, ErrStale
	}
	return b, err
}

// UserNS returns the inode of the caller's user namespace.
func (t *Target) UserNS() (uint64, error) {
	var st unix.Stat_t
	var err error
	if t.req.Proc != nil {
		err = unix.Fstatat(int(t.req.Proc.Fd()), "ns/user", &st, 0)
	} else {
		err = unix.Stat("/proc/"+strconv.Itoa(t.req.Pid)+"/ns/user", &st)
	}
	if !t.Valid() {
		return 0, ErrStale
	}
	if err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PidFD returns a pidfd of the caller, freshly opened so that it cannot
// name a dead task with the same tid (-1 if the call is stale). It stays
// owned by the Target.
func (t *Target) PidFD() int {
	if t.refresh() != nil {
		return -1
	}
	return t.pidfd
}

// ReadString copies the NUL-terminated string at unsafeAddr (at most max
// bytes including the NUL) out of the caller, as strndup_user would: EFAULT
// for an unreadable address, ENAMETOOLONG if there is no NUL within max.
func (t *Target) ReadString(unsafeAddr uint64, max int) (string, error) {
	const page = 4096
	var out []byte
	addr := unsafeAddr
	for len(out) < max {
		// Read up to the end of the current page: the next page may be
		// unmapped even though the string ends before it.
		n := page - int(addr%page)
		if n > max-len(out) {
			n = max - len(out)
		}
		buf := make([]byte, n)
		if err := t.readMem(addr, buf); err != nil {
			if !t.Valid() {
				return "", ErrStale
			}
			return "", unix.EFAULT
		}
		if i := bytes.IndexByte(buf, 0); i >= 0 {
			out = append(out, buf[:i]...)
			if !t.Valid() {
				return "", ErrStale
			}
			return string(out), nil
		}
		out = append(out, buf...)
		addr += uint64(n)
	}
	if !t.Valid() {
		return "", ErrStale
	}
	return "", unix.ENAMETOOLONG
}

// readMem reads the caller's memory: through Request.Mem if set, else
// with process_vm_readv on its pid.
func (t *Target) readMem(addr uint64, buf []byte) error {
	if t.req.Mem == nil {
		return readMem(t.req.Pid, addr, buf)
	}
	return memIO(t.req.Mem.ReadAt, addr, buf)
}

// writeMem is readMem's counterpart.
func (t *Target) writeMem(addr uint64, buf []byte) error {
	if t.req.Mem == nil {
		return writeMem(t.req.Pid, addr, buf)
	}
	return memIO(t.req.Mem.WriteAt, addr, buf)
}

// memIO does one whole transfer through a /proc/PID/mem file; any short
// or failed transfer is EFAULT, as a partial copy_from_user is.
func memIO(rw func([]byte, int64) (int, error), addr uint64, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if addr > 1<<63-1-uint64(len(buf)) {
		return unix.EFAULT
	}
	n, err := rw(buf, int64(addr))
	if err != nil || n != len(buf) {
		return unix.EFAULT
	}
	return nil
}

// procFile reads file name of the caller's /proc/PID directory.
func (t *Target) procFile(name string) ([]byte, error) {
	if t.req.Proc == nil {
		return os.ReadFile("/proc/" + strconv.Itoa(t.req.Pid) + "/" + name)
	}
	fd, err := unix.Openat(int(t.req.Proc.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() { _ = f.Close() }() // read-only
	return io.ReadAll(io.LimitReader(f, 1<<20))
}
