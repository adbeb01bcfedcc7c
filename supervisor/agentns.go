package supervisor

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// nsKey names a container by kernel objects rather than by the id string
// a runtime sends: the inodes (on nsfs) of its init's user, pid and mount
// namespaces. Two runtimes with separate state roots may each run a
// container called "demo"; they never share these three namespaces.
type nsKey struct {
	User, PID, Mnt uint64
}

func (k nsKey) String() string {
	return fmt.Sprintf("user:[%d] pid:[%d] mnt:[%d]", k.User, k.PID, k.Mnt)
}

// errGone means the process exited before the agent could identify it.
var errGone = errors.New("the process exited before the agent could identify it")

// readNS reads the namespace inodes of task tid (a pid or a thread id)
// through /proc. The result names tid's namespaces only if tid is known to
// have been the same task throughout (see procNS and identifyCaller).
func readNS(tid int) (nsKey, error) {
	var k nsKey
	for _, x := range []struct {
		name string
		ino  *uint64
	}{{"user", &k.User}, {"pid", &k.PID}, {"mnt", &k.Mnt}} {
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(tid)+"/ns/"+x.name, &st); err != nil {
			if err == unix.ENOENT || err == unix.ESRCH {
				return k, errGone
			}
			return k, fmt.Errorf("namespaces of %d: %w", tid, err)
		}
		*x.ino = st.Ino
	}
	return k, nil
}

// pidfdAlive reports whether the process behind pidfd has not exited (a
// pidfd polls readable once its process is gone, zombie or reaped).
func pidfdAlive(pidfd int) bool {
	for {
		p := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 0
	}
}

// procNS identifies process pid: it opens a pidfd first, then reads the
// namespace inodes through /proc/PID, then checks that the pidfd's process
// is still alive. A pid reused between the two steps would show as the
// pidfd's process having exited, so the inodes are those of the process the
// pidfd names. The caller owns the returned pidfd.
func procNS(pid int) (nsKey, int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nsKey{}, -1, errGone
	}
	if err != nil {
		return nsKey{}, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	k, err := readNS(pid)
	if err == nil && !pidfdAlive(pidfd) {
		err = errGone
	}
	if err != nil {
		_ = unix.Close(pidfd)
		return nsKey{}, -1, err
	}
	return k, pidfd, nil
}

// identifyCaller reads the namespaces of the task that made trapped call
// req. The notification is the only kernel object that names a process the
// runtime sent no pid for (crun exec): while the call is pending its caller
// is alive and blocked in the filter, so ID_VALID after the reads proves
// the tid named that caller throughout. errStale: the call went away
// (signal, death); wait for the next one.
func identifyCaller(l *notify.Listener, req *notify.Request) (nsKey, error) {
	if !l.Valid(req.ID) {
		return nsKey{}, errStale
	}
	k, err := readNS(req.Pid)
	if !l.Valid(req.ID) {
		return nsKey{}, errStale
	}
	if err != nil {
		return nsKey{}, err
	}
	return k, nil
}

var errStale = errors.New("the trapped call is no longer pending")

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}
