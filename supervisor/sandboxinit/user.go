package sandboxinit

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The init of a sandbox that an unprivileged user's `loopvisor run` made
// (--user): its user namespace's maps are written by newuidmap and
// newgidmap from outside, and its /dev is built from the host's nodes,
// since nothing can mknod a usable device inside. The agent binds the
// instance's /dev/loop-control and loop nodes into it.

// MapsWritten is the byte the parent sends once the id maps are written.
const MapsWritten = 'M'

// becomeRoot waits until the parent has written the id maps, which map
// the sandbox's uid and gid 0 to the user's own, then execs init again:
// the first exec ran with unmapped ids and so dropped every capability; the
// second runs as uid 0 of the namespace and has them all there. The pid,
// and so the parent's view of the sandbox, stays the same.
func becomeRoot(sock *os.File, reexecuted bool) error {
	if reexecuted {
		// Gaining capabilities cleared the parent-death signal: set it
		// again, then make sure the parent did not die meanwhile (its end
		// of the socket stays open while it lives).
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return os.NewSyscallError("prctl PR_SET_PDEATHSIG", err)
		}
		p := []unix.PollFd{{Fd: int32(sock.Fd()), Events: unix.POLLIN}}
		if n, err := unix.Poll(p, 0); err == nil && n == 1 && p[0].Revents&unix.POLLHUP != 0 {
			return fmt.Errorf("loopvisor run exited while the sandbox started")
		}
		// Drop the host's supplementary groups where the maps allow it
		// (newgidmap may have denied setgroups).
		if err := syscall.Setgroups(nil); err != nil && err != syscall.EPERM {
			return os.NewSyscallError("setgroups", err)
		}
		return nil
	}
	// Not os.Geteuid: once the maps are written it says 0 before the exec
	// that gives the capabilities.
	b := make([]byte, 1)
	if n, err := sock.Read(b); err != nil || n != 1 || b[0] != MapsWritten {
		return fmt.Errorf("the parent did not write the id maps")
	}
	argv := append([]string(nil), os.Args...)
	for i, a := range argv {
		if a == "--user" {
			argv[i] = ReexecFlag
			break
		}
		if a == "--" {
			break
		}
	}
	err := syscall.Exec("/proc/self/exe", argv, os.Environ())
	return os.NewSyscallError("exec as the namespace's root", err)
}

// ReexecFlag replaces --user in the arguments of the second exec.
const ReexecFlag = "--user-root"

// hostNodes are bound from the host's /dev into the sandbox's.
var hostNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// setupUserMounts gives the sandbox a private /dev (tmpfs with binds of the
// host's harmless nodes; the agent adds fuse, loop-control and the loop
// nodes), devpts, /dev/shm and its own /proc.
func setupUserMounts() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return os.NewSyscallError("make / private", err)
	}
	type bind struct {
		name string
		fd   int
	}
	var binds []bind
	defer func() {
		for _, b := range binds {
			_ = unix.Close(b.fd)
		}
	}()
	for _, n := range hostNodes {
		src := "/dev/" + n
		fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("open_tree %s: %w", src, err)
		}
		binds = append(binds, bind{n, fd})
	}
	if err := unix.Mount("dev", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return os.NewSyscallError("mount /dev", err)
	}
	for _, b := range binds {
		p := filepath.Join("/dev", b.name)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_ = f.Close()
		if err := unix.MoveMount(b.fd, "", unix.AT_FDCWD, p, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("attach %s: %w", p, os.NewSyscallError("move_mount", err))
		}
	}
	for _, d := range []string{"/dev/pts", "/dev/shm"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join("/dev", link)); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return os.NewSyscallError("mount /dev/pts", err)
	}
	if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return os.NewSyscallError("mount /dev/shm", err)
	}
	return mountProc()
}
