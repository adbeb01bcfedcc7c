package nsexec

// #cgo CFLAGS: -Wall -O2
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/devcgroup"
)

// NS is what nsexec needs to act as the caller inside its sandbox.
type NS struct {
	PidFD *os.File // a task of the sandbox (the caller)
	Root  *os.File // the caller's root, O_PATH
	Cwd   *os.File // the caller's working directory, O_PATH
}

// Close releases the descriptors.
func (ns *NS) Close() {
	for _, f := range []*os.File{ns.PidFD, ns.Root, ns.Cwd} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// OpenNS opens the caller's root and cwd through /proc. pidfd is borrowed:
// it is duplicated.
func OpenNS(pid int, pidfd int) (*NS, error) {
	dup, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ns := &NS{PidFD: os.NewFile(uintptr(dup), "pidfd")}
	for _, x := range []struct {
		name string
		dst  **os.File
	}{{"root", &ns.Root}, {"cwd", &ns.Cwd}} {
		fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/"+x.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			ns.Close()
			return nil, err
		}
		*x.dst = os.NewFile(uintptr(fd), x.name)
	}
	return ns, nil
}

func nsexecCmd(ns *NS, op string, mnt *os.File, args ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args = append([]string{"loopvisor-nsexec"}, args...)
	cmd.Env = append(os.Environ(), "_LOOPVISOR_NSEXEC="+op)
	cmd.ExtraFiles = []*os.File{ns.PidFD, ns.Root, ns.Cwd}
	if mnt != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, mnt)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	return cmd
}

// OpTimeout bounds a short nsexec op. It works in the container's mount
// namespace, where a path may cross a FUSE mount the container serves and
// never answers; FUSE waits are killable, so the op is killed and fails
// with ETIMEDOUT instead of holding its caller for ever.
const OpTimeout = 10 * time.Second

// runOp runs a short nsexec op and returns the errno it reports.
func runOp(ns *NS, op string, mnt *os.File, args ...string) error {
	return runCmd(nsexecCmd(ns, op, mnt, args...), op, args, OpTimeout)
}

// LoopIoctl runs ioctl(loop, cmd, buf or arg) as the task pid (pidfd)
// in its user namespace, with its ids, backing as the backing file at fd
// 7 (a loop_config in buf must name fd 7). Bounded by OpTimeout: the
// backing file may be on a FUSE file system the container serves.
func LoopIoctl(pid, pidfd int, loop, backing *os.File, cmd uint32, arg uint64, buf []byte) error {
	dup, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	pf := os.NewFile(uintptr(dup), "pidfd")
	defer func() { _ = pf.Close() }()
	args := []string{strconv.Itoa(pid), strconv.FormatUint(uint64(cmd), 10), strconv.FormatUint(arg, 10)}
	cmd0 := exec.Command("/proc/self/exe", args...)
	cmd0.Args = append([]string{"loopvisor-nsexec"}, args...)
	cmd0.Env = []string{"_LOOPVISOR_NSEXEC=loopioctl"}
	cmd0.ExtraFiles = []*os.File{pf, nil, nil, loop, backing}
	cmd0.Stdin = bytes.NewReader(buf)
	cmd0.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	return runCmd(cmd0, "loopioctl", args, OpTimeout)
}

// CreateTimeout bounds CreateSuperblock: the kernel reads the image (an
// ext4 journal replay of a large one takes a while) from a backing file
// that may sit on a FUSE mount of the container.
const CreateTimeout = 2 * time.Minute

// CreateSuperblock runs FSCONFIG_CMD_CREATE on the file system context fsctx
// (fsopen by the supervisor; its parameters set, its source devPath) as
// host root, in a private mount namespace where devPath, "/dev/loopN" or
// "/dev/loopNpM", is a block node of dev, the loop device that serves it.
// The kernel looks the source up at the create and shows the same string
// as the mount's source: a kernel mount then names the device as the
// sandbox knows it, without a node in the host's /dev. The caller
// fsmounts fsctx afterwards. Bounded by CreateTimeout.
//
// The file system reads the container's image at the create and may open
// other block devices by the numbers it finds there (ext4's external
// journal), so the create can open no device but dev: it starts in a
// cgroup v2 whose device program allows only dev (ConfineBPF), or, where
// that cannot be made, runs in a child v1 devices cgroup (ConfineV1).
// When the cgroup v2 could not be made for want of a resource (EAGAIN,
// ENOMEM: a cgroup.max.descendants reached, which a container can do by
// stalling creates), or was made but the op could not be started in it
// (pids.max reached, which a container sharing the supervisor's cgroup
// can do by forking; the cgroup removed), the fallback must confine:
// where there is no v1 devices hierarchy (a cgroup v2-only host) the
// create fails with EAGAIN instead of running unconfined. Only a kernel
// without clone3's CLONE_INTO_CGROUP falls back as a host without
// cgroup v2 does.
func CreateSuperblock(fsctx *os.File, devPath string, dev uint64) error {
	err := CreateSuperblockWith(fsctx, devPath, dev, ConfineBPF)
	var ce *confineError
	if !errors.As(err, &ce) {
		return err
	}
	how := ConfineV1
	if ce.mustConfine() {
		how = confineV1Only
	}
	return CreateSuperblockWith(fsctx, devPath, dev, how)
}

// Confinement says how CreateSuperblockWith confines the create.
type Confinement int

const (
	// ConfineBPF starts the op in a new cgroup v2 (devcgroup.NewConfined)
	// whose device program allows dev only: no migration, no fork.
	ConfineBPF Confinement = iota
	// ConfineV1 has the op run the create in a child process in a new v1
	// devices cgroup allowing dev only; where the host has no v1 devices
	// hierarchy the create is not confined (README).
	ConfineV1
	// confineV1Only is ConfineV1 that fails (EAGAIN) where there is no
	// v1 devices hierarchy, instead of running the create unconfined.
	confineV1Only
)

// confineError says the confinement asked for could not be set up (no
// cgroup v2, no BPF): CreateSuperblock then uses the other. made says
// the cgroup was made and the op could not be started in it.
type confineError struct {
	err  error
	made bool
}

func (e *confineError) Error() string { return "confine the create: " + e.err.Error() }
func (e *confineError) Unwrap() error { return e.err }

// mustConfine reports whether the fallback must confine the create (or
// fail) rather than run it unconfined where the host has no v1 devices
// hierarchy: the host can give the cgroup v2, and what kept the create
// out of it may be the container's doing (a limit reached, the cgroup
// removed). Not so where the cgroup could not be made for another reason
// (no cgroup v2, not writable, no BPF), or the kernel lacks clone3's
// CLONE_INTO_CGROUP (ENOSYS before 5.3; E2BIG or EINVAL before 5.7).
func (e *confineError) mustConfine() bool {
	if !e.made {
		return errors.Is(e.err, unix.EAGAIN) || errors.Is(e.err, unix.ENOMEM)
	}
	var ne *Error
	if errors.As(e.err, &ne) && ne.cause != nil {
		return !errors.Is(ne.cause, unix.ENOSYS) && !errors.Is(ne.cause, unix.E2BIG) && !errors.Is(ne.cause, unix.EINVAL)
	}
	return true
}

// CreateSuperblockWith is CreateSuperblock with the confinement chosen
// (tests check each).
func CreateSuperblockWith(fsctx *os.File, devPath string, dev uint64, how Confinement) error {
	name, ok := strings.CutPrefix(devPath, "/dev/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return &Error{Op: "kcreate", Step: "device name", Errno: unix.EINVAL, Detail: devPath}
	}
	args := []string{name, strconv.FormatUint(uint64(unix.Major(dev)), 10), strconv.FormatUint(uint64(unix.Minor(dev)), 10)}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{"_LOOPVISOR_NSEXEC=kcreate"}
	cmd.ExtraFiles = []*os.File{nil, nil, nil, fsctx}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if how == ConfineBPF {
		cg, err := devcgroup.NewConfined([]devcgroup.Device{{Type: 'b', Major: unix.Major(dev), Minor: unix.Minor(dev)}})
		if err != nil {
			return &confineError{err, false}
		}
		defer func() { _ = cg.Close() }() // after runCmd's Wait; an empty cgroup left behind is removed by gc
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Dir.Fd())
		args = append(args, "bpf")
	}
	if how == confineV1Only {
		args = append(args, "v1")
	}
	cmd.Args = append([]string{"loopvisor-nsexec"}, args...)
	err := runCmd(cmd, "kcreate", args, CreateTimeout)
	var ne *Error
	if how == ConfineBPF && errors.As(err, &ne) && ne.Step == "start" {
		return &confineError{err, true} // clone3 refused the cgroup
	}
	return err
}

func runCmd(cmd *exec.Cmd, op string, args []string, timeout time.Duration) error {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return &Error{Op: op, Step: "start", Errno: unix.EIO, Detail: err.Error(), cause: err}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		werr := <-done
		return &Error{Op: op, Step: "timeout", Errno: unix.ETIMEDOUT, Detail: fmt.Sprintf("%s: no answer within %v (the container's mount table or backing file stalls); killed (%v)", strings.Join(args, " "), timeout, werr)}
	}
	first := strings.TrimSpace(strings.SplitN(out.String(), "\n", 2)[0])
	num, step, _ := strings.Cut(first, " ")
	if n, perr := strconv.Atoi(num); perr == nil {
		if n == 0 && err == nil {
			return nil
		}
		if n > 0 {
			return &Error{Op: op, Step: step, Errno: unix.Errno(n), Detail: strings.TrimSpace(errb.String())}
		}
	}
	return &Error{Op: op, Step: "run", Errno: unix.EIO, Detail: fmt.Sprintf("%v: %s", err, strings.TrimSpace(errb.String()))}
}

// Error is a failed nsexec op: which op, the step that failed (setns,
// open target, move_mount, ...) and the errno the kernel gave there, which
// is what the container sees (errors.Is(err, unix.EPERM) works).
type Error struct {
	Op     string
	Step   string
	Errno  unix.Errno
	Detail string // what nsexec printed, for the log
	cause  error  // why the op could not be started (Step "start")
}

func (e *Error) Error() string {
	s := "nsexec " + e.Op
	if e.Step != "" {
		s += ": " + e.Step
	}
	s += ": " + e.Errno.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

// Bind attaches mnt (a detached mount, e.g. an open_tree clone of a device
// node) on target inside the sandbox of ns, creating target as an empty
// file if needed.
func Bind(ns *NS, mnt *os.File, target string) error { return runOp(ns, "bind", mnt, target) }

// Lookup looks path up as task pid (a thread of the sandbox ns names)
// would: in its user namespace, from its root and cwd, with its ids and
// effective capabilities. It returns the errno of the caller's own lookup,
// so that nothing resolved as host root tells the caller more.
func Lookup(ns *NS, pid int, path string, follow bool) error {
	f := "0"
	if follow {
		f = "1"
	}
	return runOp(ns, "lookup", nil, strconv.Itoa(pid), path, f)
}

// Unbind detaches whatever is mounted on target inside the sandbox of ns
// and removes target.
func Unbind(ns *NS, target string) error { return runOp(ns, "unbind", nil, target) }

// Move attaches mnt on the existing directory target inside the sandbox.
func Move(ns *NS, mnt *os.File, target string) error { return runOp(ns, "move", mnt, target) }

// MoveLocked attaches mnt (a detached mount made by host root) on the
// existing directory target inside the sandbox with the flags it has
// locked, as the kernel locks those of a mount the sandbox inherited (the
// sandbox cannot remount it without nosuid or nodev, nor change its atime
// flags), then with the MOUNT_ATTR_* bits set (only RDONLY, NOEXEC and
// NOSYMFOLLOW, else EINVAL) set on it before it is attached, not locked:
// the sandbox may clear those, as on the host. Any idmapping must be set
// on mnt before.
func MoveLocked(ns *NS, mnt *os.File, target string, set uint64) error {
	return runOp(ns, "lockmove", mnt, target, strconv.FormatUint(set, 10))
}

// CloneMount makes another mount of the file system mounted at src (whose
// mount id must be srcID, else ESTALE) on the directory target inside the
// sandbox of ns: an open_tree clone of that one mount, private, with the
// MOUNT_ATTR_* bits clr cleared and set set, as a new mount(2) of an
// already mounted device gets another mount of its superblock.
func CloneMount(ns *NS, src string, srcID uint64, target string, set, clr uint64) error {
	return runOp(ns, "clonemount", nil, src, strconv.FormatUint(srcID, 10), target,
		strconv.FormatUint(set, 10), strconv.FormatUint(clr, 10))
}

// RemountBind sets the per-mount flags of the mount at target inside the
// sandbox of ns: mount(NULL, target, NULL, MS_REMOUNT|MS_BIND|flags, NULL)
// as the caller, so the kernel refuses to clear a locked flag (EPERM).
func RemountBind(ns *NS, target string, flags uint64) error {
	return runOp(ns, "remountbind", nil, target, strconv.FormatUint(flags, 10))
}

// Umount runs umount2(target, flags) inside the sandbox of ns.
func Umount(ns *NS, target string, flags int) error {
	return runOp(ns, "umount", nil, target, strconv.Itoa(flags))
}
