package notify

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrStale means the trapped call is no longer pending (the caller died,
// or a signal restarted the call under a new notification ID): nothing
// must be done on its behalf. It is distinct from every errno, so a stale
// call cannot be mistaken for a real ENOENT.
var ErrStale = errors.New("notify: the trapped call is no longer pending")

// ErrnoOf maps an error to the errno the container sees. It is the only
// place that does so: handlers return Go errors (an errno the kernel gave,
// wrapped or not, a typed error that unwraps to one, or anything else) and
// Fail turns them into a Reply here.
func ErrnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, ErrStale) {
		return unix.ENOENT // the kernel discards the answer to a stale ID
	}
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	if errors.Is(err, os.ErrNotExist) {
		return unix.ENOENT
	}
	if errors.Is(err, os.ErrPermission) {
		return unix.EPERM
	}
	return unix.EIO
}

// Fail makes a Reply that fails the call with ErrnoOf(err).
func Fail(err error) Reply { return Reply{Errno: ErrnoOf(err)} }

// Continue is the Reply for a call that is not loopvisor's to decide: the
// kernel runs it with the caller's own credentials.
var Continue = Reply{Continue: true}
