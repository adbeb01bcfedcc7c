package mountproxy

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// A helper the container could ptrace would be the container's: it runs as
// the container's root, in its pid namespace, and root of a user namespace
// holds CAP_SYS_PTRACE over every process whose memory belongs to that
// namespace. So every program a helper runs (the helper, and loopvisor as
// fusermount) is exec'd from an execute-only copy owned by host root: the
// kernel (fs/exec.c, would_dump) sees that the process cannot read the file
// it runs, marks its memory non-dumpable and moves the memory's owner to
// the nearest user namespace that maps the file's owner, the host's. From
// then on ptrace, process_vm_readv, pidfd_getfd, /proc/PID/mem, root, cwd,
// fd and environ all need CAP_SYS_PTRACE in the host's user namespace,
// which the container does not have. The helper's ids stay the container
// root's (its files, its limits).

// execOnlyStore holds the copies on a tmpfs that is mounted nowhere: only
// the supervisor (and its jail launchers, by fd) can reach it.
type execOnlyStore struct {
	mu    sync.Mutex
	root  *os.File // detached tmpfs
	seq   int
	files map[string]execOnlyFile
}

type execOnlyFile struct {
	key  string // source identity: dev, inode, size, mtime
	name string
	fd   *os.File // O_PATH
}

var execOnly execOnlyStore

// execOnlyCopy returns an O_PATH fd (the caller's) of an execute-only copy
// (mode 0111, owned by host root) of the regular file src, made once and
// made again when src changes.
func execOnlyCopy(src string) (*os.File, error) {
	s := &execOnly
	s.mu.Lock()
	defer s.mu.Unlock()
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer func() { _ = in.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", src)
	}
	key := fmt.Sprintf("%d:%d:%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	if f, ok := s.files[src]; ok && f.key == key {
		return dupPath(f.fd)
	}
	if s.root == nil {
		root, err := detachedTmpfs()
		if err != nil {
			return nil, err
		}
		s.root, s.files = root, map[string]execOnlyFile{}
	}
	s.seq++
	name := "x" + strconv.Itoa(s.seq)
	fd, err := unix.Openat(int(s.root.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o100)
	if err != nil {
		return nil, os.NewSyscallError("create execute-only copy", err)
	}
	out := os.NewFile(uintptr(fd), name)
	_, err = io.Copy(out, in)
	if err == nil {
		err = unix.Fchmod(fd, 0o111)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = unix.Unlinkat(int(s.root.Fd()), name, 0)
		return nil, fmt.Errorf("execute-only copy of %s: %w", src, err)
	}
	pfd, err := unix.Openat(int(s.root.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unlinkat(int(s.root.Fd()), name, 0)
		return nil, os.NewSyscallError("open execute-only copy", err)
	}
	if old, ok := s.files[src]; ok {
		// Jails still running hold their own mount of the old copy.
		_ = old.fd.Close()
		_ = unix.Unlinkat(int(s.root.Fd()), old.name, 0)
	}
	f := execOnlyFile{key: key, name: name, fd: os.NewFile(uintptr(pfd), name)}
	s.files[src] = f
	return dupPath(f.fd)
}

func dupPath(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// detachedTmpfs returns a tmpfs mount attached nowhere, mode 0700, nosuid
// and nodev (not noexec: helpers run from it).
func detachedTmpfs() (*os.File, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("fsopen(tmpfs)", err)
	}
	defer func() { _ = unix.Close(fsfd) }()
	if err := unix.FsconfigSetString(fsfd, "mode", "0700"); err != nil {
		return nil, os.NewSyscallError("fsconfig(mode)", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, os.NewSyscallError("fsconfig(create)", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, os.NewSyscallError("fsmount(tmpfs)", err)
	}
	return os.NewFile(uintptr(mfd), "loopvisor-execonly"), nil
}
