package notify

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrGone is returned by Listener.Next once no task uses the filter any more
// (EPOLLHUP on the listener) or the listener was closed.
var ErrGone = errors.New("notify: no task uses the filter any more")

// Request is one trapped system call, copied out of the kernel.
type Request struct {
	ID   uint64
	Pid  int // thread id of the caller, in the supervisor's pid namespace
	Nr   int32
	Arch uint32
	Args [6]uint64
	// Mem and Proc are set for a notification another process received
	// (LXC's monitor sends them with each one): the caller's
	// /proc/PID/mem, through which its memory is then read and written,
	// and its /proc/PID directory, through which its status and
	// namespaces are read. They are borrowed: notify never closes them.
	// Either way every read is followed by an ID check.
	Mem, Proc *os.File
}

// Reply is the answer to a Request: either Errno (> 0) or Val, or Continue,
// or FD.
type Reply struct {
	Val      int64
	Errno    syscall.Errno
	Continue bool
	// FD, if set, is installed in the caller (SECCOMP_IOCTL_NOTIF_ADDFD)
	// and its number is the call's result; Respond closes it.
	FD      *os.File
	Cloexec bool // FD gets O_CLOEXEC in the caller
	// SetFD installs FD at descriptor NewFD instead (replacing what is
	// there, as dup2), and the call then gets Val.
	SetFD bool
	NewFD int
}

// Errno makes a Reply that fails the call with e.
func Errno(e syscall.Errno) Reply { return Reply{Errno: e} }

// Value makes a Reply that returns v.
func Value(v int64) Reply { return Reply{Val: v} }

// Listener is a seccomp listener fd, driven through the Go netpoller
// (NewListener) or by blocking receives on one OS thread
// (NewBlockingListener).
//
// Every use of the fd but the netpoller's wait holds a reference (use,
// done), taken with two atomic operations and no allocation: the hot path
// of a trapped call is a receive, a few checks and a reply, and the
// closures os.File's RawConn needs cost more than the checks.
type Listener struct {
	f        *os.File
	rc       syscall.RawConn // the netpoller's wait (Next of NewListener)
	fd       int
	SyncWake bool // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP is in effect
	blocking bool // Next blocks in SECCOMP_IOCTL_NOTIF_RECV
	// refs counts the calls using fd, plus closingRef once Close was
	// called: the call that brings it to closingRef closes f.
	refs     atomic.Int64
	mu       sync.Mutex
	closed   bool
	pidfds   map[int]int // tid -> pidfd, see Target
	observer bool        // made by Observe: Valid and Target only
	// The file cache (fdcache.go), under mu.
	poll    *pollRecv // Next of NewListener
	keep    func(*unix.Stat_t) bool
	files   map[fileKey]*cachedFile
	sweeper *time.Timer
	hits    atomic.Int64 // calls recognised by kcmp (tests)
	// The blocking receive's yields (nextBlocking), used by the one
	// goroutine that calls Next.
	recvs     uint32
	lastYield time.Time
}

// yieldAfter is how long a blocking listener's Next serves without
// passing through the Go scheduler: well below sysmon's 10 ms (see
// NewBlockingListener). yieldCheck is how many receives pass between two
// readings of the clock (about 50 ns, too much for every call): with 8,
// a caller making 800 calls a second or more, whose calls sysmon would
// preempt, is yielded for within 10 ms; slower ones leave the receive
// blocked long enough for sysmon to take the P and the goroutine to be
// scheduled on its way back.
const (
	yieldAfter = 2 * time.Millisecond
	yieldCheck = 8
)

// closingRef marks Listener.refs once Close was called.
const closingRef = 1 << 62

// errClosed is what a call on a closed listener returns.
var errClosed = os.NewSyscallError("seccomp listener", os.ErrClosed)

// use takes a reference on l.fd; false once Close was called.
func (l *Listener) use() bool {
	for {
		r := l.refs.Load()
		if r&closingRef != 0 {
			return false
		}
		if l.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// done drops a reference taken by use; the last one after Close closes
// the fd.
func (l *Listener) done() {
	if l.refs.Add(-1) == closingRef {
		_ = l.f.Close() // nothing is left to report it to
	}
}

// NewListener takes ownership of fd, a seccomp listener, and drives it
// through the Go netpoller: any number of listeners cost no OS thread while
// they wait (the agent's case).
func NewListener(fd int) (*Listener, error) {
	return newListener(fd, false)
}

// NewBlockingListener takes ownership of fd, a seccomp listener, to be
// served by one goroutine: Next blocks in SECCOMP_IOCTL_NOTIF_RECV on that
// goroutine's OS thread, so that with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
// the kernel hands the CPU from the trapped task straight to it, without
// the netpoller's wake-up and goroutine scheduling on the way (about half
// of a trapped call's time, make bench). It costs one OS thread per
// listener while it waits: for one sandbox (`run`), not for many (the
// agent).
//
// A goroutine that only ever waits in system calls never passes through
// the Go scheduler, and the runtime's sysmon takes that for a goroutine
// running too long: every 10 ms it preempts it (SIGURG) or takes its P
// away in the receive, and then polls every 20 to 100 µs for milliseconds,
// waking a thread on the CPUs the trapped task and the serving thread
// share. Next therefore yields to the scheduler (runtime.Gosched) once per
// yieldAfter of steady serving. The serving goroutine must not lock its
// OS thread: a locked goroutine's yield hands its P to another thread and
// back.
//
// Where the kernel has no sync wake-up (before 6.6) a blocking receive is
// not woken when the last task leaves the filter, so the listener is
// driven through the netpoller as by NewListener and Blocking reports
// false.
func NewBlockingListener(fd int) (*Listener, error) {
	return newListener(fd, true)
}

func newListener(fd int, blocking bool) (*Listener, error) {
	l := &Listener{fd: fd, pidfds: map[int]int{}, poll: &pollRecv{}}
	l.poll.fn = l.poll.try
	if err := setFlags(fd, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); err == nil {
		l.SyncWake = true
	}
	l.blocking = blocking && l.SyncWake
	// A blocking fd is not registered with the netpoller: os.File then
	// closes it only once no call (a receive in progress) uses it.
	if err := unix.SetNonblock(fd, !l.blocking); err != nil {
		_ = unix.Close(fd) // we own fd and fail; nothing else uses it
		return nil, os.NewSyscallError("fcntl(O_NONBLOCK)", err)
	}
	l.f = os.NewFile(uintptr(fd), "seccomp-listener")
	rc, err := l.f.SyscallConn()
	if err != nil {
		_ = l.f.Close() // the SyscallConn error is the one to report
		return nil, err
	}
	l.rc = rc
	return l, nil
}

// Blocking reports whether Next blocks its OS thread in the kernel (see
// NewBlockingListener).
func (l *Listener) Blocking() bool { return l.blocking }

// Next blocks until a notification arrives and returns it. It returns
// ErrGone once no task uses the filter.
func (l *Listener) Next() (Request, error) {
	if l.observer {
		return Request{}, ErrObserver
	}
	if l.blocking {
		return l.nextBlocking()
	}
	r := l.poll
	r.err = nil
	if err := l.rc.Read(r.fn); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return Request{}, ErrGone
		}
		return Request{}, err
	}
	if r.err != nil {
		return Request{}, r.err
	}
	return r.n.request(), nil
}

// pollRecv is the netpoller's receive of one listener: fn (bound once,
// so that a wait allocates nothing) polls the fd and receives the
// notification into n, or sets err. Only one goroutine calls Next.
type pollRecv struct {
	n   seccompNotif
	err error
	fn  func(fd uintptr) bool
}

func (r *pollRecv) try(fd uintptr) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd[:], 0); err != nil {
		if errors.Is(err, unix.EINTR) {
			return false
		}
		r.err = os.NewSyscallError("poll", err)
		return true
	}
	if pfd[0].Revents&unix.POLLIN != 0 {
		err := recvNotif(int(fd), &r.n)
		switch {
		case err == nil:
			return true
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			// The caller died or was signalled between the wake-up
			// and our receive: nothing to answer.
			return false
		default:
			r.err = os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", err)
			return true
		}
	}
	if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
		r.err = ErrGone
		return true
	}
	return false
}

func (n *seccompNotif) request() Request {
	return Request{
		ID:   n.ID,
		Pid:  int(n.Pid),
		Nr:   n.Data.Nr,
		Arch: n.Data.Arch,
		Args: n.Data.Args,
	}
}

// timeNow and gosched are the clock and the yield of maybeYield (variables
// for tests).
var (
	timeNow = time.Now
	gosched = runtime.Gosched
)

// maybeYield yields to the Go scheduler if the serving goroutine has not
// done so for yieldAfter, reading the clock once every yieldCheck calls
// (see NewBlockingListener).
func (l *Listener) maybeYield() {
	if l.recvs++; l.recvs%yieldCheck != 0 {
		return
	}
	if now := timeNow(); now.Sub(l.lastYield) >= yieldAfter {
		l.lastYield = now
		gosched()
	}
}

// nextBlocking is Next on a blocking listener. The kernel ends a blocking
// receive with ENOENT both when the caller it woke for is gone and when no
// task uses the filter any more; only in the second case does poll say
// POLLHUP.
func (l *Listener) nextBlocking() (Request, error) {
	l.maybeYield()
	for {
		if !l.use() {
			return Request{}, ErrGone
		}
		var n seccompNotif
		err := recvNotif(l.fd, &n)
		hup := false
		if errors.Is(err, unix.ENOENT) {
			pfd := [1]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
			if _, perr := unix.Poll(pfd[:], 0); perr == nil && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				hup = true
			}
		}
		l.done()
		switch {
		case err == nil:
			return n.request(), nil
		case hup:
			return Request{}, ErrGone
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINTR):
			// The caller died or was signalled between its wake-up
			// and our receive: nothing to answer.
		default:
			return Request{}, os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", err)
		}
	}
}

// Respond sends r for the notification id. ENOENT (the caller is gone or
// restarted its call after a signal) is not an error: there is nobody left to
// answer.
func (l *Listener) Respond(id uint64, r Reply) error {
	if l.observer {
		return ErrObserver
	}
	if r.FD != nil {
		return l.respondFD(id, r)
	}
	resp := respFor(id, r)
	if !l.use() {
		return errClosed
	}
	err := sendResp(l.fd, &resp)
	l.done()
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_SEND)", err)
	}
	return nil
}

// respFor is the kernel's form of reply r to notification id.
func respFor(id uint64, r Reply) seccompNotifResp {
	resp := seccompNotifResp{ID: id}
	switch {
	case r.Continue:
		resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	case r.Errno != 0:
		resp.Error = -int32(r.Errno)
	default:
		resp.Val = r.Val
	}
	return resp
}

// Valid reports whether notification id is still pending: the caller is
// alive and still blocked in the same system call. Call it after every read
// of the caller's memory or fds and before any side effect.
func (l *Listener) Valid(id uint64) bool {
	if !l.use() {
		return false
	}
	err := idValid(l.fd, id)
	l.done()
	return err == nil
}

// Close releases the listener. Callers blocked in the filter then get ENOSYS.
// The fd is released once the calls using it (a blocking receive in
// progress) return.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for tid, fd := range l.pidfds {
		_ = unix.Close(fd) // a cached pidfd: closing it cannot fail in a way that matters
		delete(l.pidfds, tid)
	}
	drop := l.dropFilesLocked(true)
	l.mu.Unlock()
	closeFiles(drop)
	if l.refs.Add(closingRef) == closingRef {
		return l.f.Close()
	}
	return nil
}

// String names the listener for logs.
func (l *Listener) String() string { return fmt.Sprintf("seccomp-listener(fd %d)", l.fd) }
