package linux

import (
	"golang.org/x/sys/unix"
)

// ReserveFDTable grows the calling process's descriptor table to at least
// n slots (capped at RLIMIT_NOFILE's soft limit) and returns the size asked
// of the kernel. The table never shrinks: what it costs is 8 bytes of
// kernel memory per slot (512 KiB for 65,536).
//
// Why: the kernel grows the table by doubling when a new descriptor does
// not fit, and in a multithreaded process each growth waits for an RCU
// grace period while every other thread that allocates a descriptor
// (accept, recvmsg with SCM_RIGHTS, open, pidfd_open, pidfd_getfd) sleeps
// behind it. The Go runtime gives each goroutine stuck there an OS thread
// of its own, so an agent receiving hundreds of listeners at once used to
// gain 10 to 30 threads at every doubling (issue 13). Grown once at start,
// before any container is served, the table does not grow again until n
// descriptors are in use.
func ReserveFDTable(n int) (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < uint64(n) {
		n = int(rl.Cur)
	}
	if n < 1 {
		return 0, nil
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Close(fd) }()
	if fd >= n-1 {
		return n, nil // already that large
	}
	// Whatever sits at n-1 is replaced by dup3: only an unused slot is
	// taken (F_DUPFD picks the lowest free one at or above n-1).
	hi, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, n-1)
	if err != nil {
		return 0, err
	}
	_ = unix.Close(hi)
	return n, nil
}
