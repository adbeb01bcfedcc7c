package loopctl

import (
	"errors"
	"os"
	"strconv"

	"github.com/loopvisor/loopvisor/internal/linux"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
)

// Loop ioctl commands, from internal/linux.
const (
	cmdSetFD        = linux.LoopSetFD
	cmdClrFD        = linux.LoopClrFD
	cmdSetStatus    = linux.LoopSetStatus
	cmdGetStatus    = linux.LoopGetStatus
	cmdSetStatus64  = linux.LoopSetStatus64
	cmdGetStatus64  = linux.LoopGetStatus64
	cmdChangeFD     = linux.LoopChangeFD
	cmdSetCapacity  = linux.LoopSetCapacity
	cmdSetDirectIO  = linux.LoopSetDirectIO
	cmdSetBlockSize = linux.LoopSetBlockSize
	cmdConfigure    = linux.LoopConfigure
	cmdCtlAdd       = linux.LoopCtlAdd
	cmdCtlRemove    = linux.LoopCtlRemove
	cmdCtlGetFree   = linux.LoopCtlGetFree
)

// CmdName names a loop ioctl command for logs.
func CmdName(cmd uint32) string {
	switch cmd {
	case cmdSetFD:
		return "LOOP_SET_FD"
	case cmdClrFD:
		return "LOOP_CLR_FD"
	case cmdSetStatus:
		return "LOOP_SET_STATUS"
	case cmdGetStatus:
		return "LOOP_GET_STATUS"
	case cmdSetStatus64:
		return "LOOP_SET_STATUS64"
	case cmdGetStatus64:
		return "LOOP_GET_STATUS64"
	case cmdChangeFD:
		return "LOOP_CHANGE_FD"
	case cmdSetCapacity:
		return "LOOP_SET_CAPACITY"
	case cmdSetDirectIO:
		return "LOOP_SET_DIRECT_IO"
	case cmdSetBlockSize:
		return "LOOP_SET_BLOCK_SIZE"
	case cmdConfigure:
		return "LOOP_CONFIGURE"
	case cmdCtlAdd:
		return "LOOP_CTL_ADD"
	case cmdCtlRemove:
		return "LOOP_CTL_REMOVE"
	case cmdCtlGetFree:
		return "LOOP_CTL_GET_FREE"
	}
	return "ioctl"
}

// Caller is the trapped task, as the supervisor reaches it. Every method
// fails with ErrStale once the trapped call is no longer pending.
type Caller interface {
	GetFD(unsafeFD uint32) (notify.FD, error)
	Read(unsafeAddr uint64, buf []byte) error
	Write(unsafeAddr uint64, buf []byte) error
	// Privileged reports whether the caller has CAP_SYS_ADMIN in the
	// instance's user namespace (loopfs's ns_capable rule).
	Privileged() (bool, error)
	Valid() bool
}

// ErrStale is notify.ErrStale: the trapped call is no longer pending.
var ErrStale = notify.ErrStale

func fail(err error) notify.Reply { return notify.Fail(err) }

func value(v int, err error) notify.Reply {
	if err != nil {
		return notify.Fail(err)
	}
	return notify.Value(int64(v))
}

// Ioctl serves ioctl(unsafeFD, cmd, arg) trapped in the instance's sandbox.
// cmd has already been truncated to 32 bits as the kernel does.
func (in *Instance) Ioctl(c Caller, unsafeFD uint32, cmd uint32, arg uint64) notify.Reply {
	return in.IoctlABI(c, unsafeFD, cmd, arg, false)
}

// IoctlABI is Ioctl for a caller of the native ABI (compat false) or of
// a 32-bit one (compat true, notify.Call.Compat): the kernel answers those
// through the drivers' compat_ioctl, with the 32-bit structure layouts.
func (in *Instance) IoctlABI(c Caller, unsafeFD uint32, cmd uint32, arg uint64, compat bool) notify.Reply {
	f, st, err := getFDStat(c, unsafeFD)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = f.Close() }()
	// Log entries are built only when something is logged: this is the
	// hot path of every trapped call.
	log := func() *logrus.Entry { return in.log.WithField("syscall", CmdName(cmd)) }
	control := in.isControl(&st)
	if f.Recognised() && !control && !c.Valid() {
		// A file recognised by kcmp is the caller's only while the call
		// is pending: control checks that before any side effect (or
		// gives an answer only the reply proves); the rest act at once.
		return fail(ErrStale)
	}
	switch {
	case control:
		return in.control(c, log, cmd, arg)
	case IsLoopDevice(&st):
		idx := Index(st.Rdev)
		if !in.Owns(idx) {
			log().WithField("loop", idx).Warn("ioctl on a loop device outside the instance: EPERM")
			return notify.Errno(unix.EPERM)
		}
		r := in.device(c, log, f, idx, cmd, arg, compat)
		if cmd != cmdGetStatus64 && cmd != cmdGetStatus && cmd != hdioGetGeo {
			in.View.RefreshPartitions() // a size may have changed
		}
		return r
	case cmd == blkRRPart || cmd == blkPG || cmd == hdioGetGeo:
		return notify.Continue // another block device: the kernel's business
	case cmd >= cmdCtlAdd && cmd <= cmdCtlGetFree:
		// Never CONTINUE a loop-control command: the caller could swap a
		// real loop-control fd in after this check. The argument is an
		// integer, so running it on our copy gives the kernel's answer.
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	default:
		return notify.Continue
	}
}

// KeptGetFree answers LOOP_CTL_GET_FREE on descriptor unsafeFD of req's
// caller when that is a loop-control file l keeps
// (notify.Listener.KeptStat) and the instance holds a free device: the
// answer IoctlABI gives for it, without a Target. ok is false otherwise:
// serve the call with IoctlABI. As there, the answer has no side effect,
// so the reply alone proves the file was the caller's.
func (in *Instance) KeptGetFree(l *notify.Listener, req *notify.Request, unsafeFD uint32) (r notify.Reply, ok bool) {
	var st unix.Stat_t
	if !l.KeptStat(req, unsafeFD, &st) || !in.isControl(&st) {
		return r, false
	}
	idx, ok := in.heldFree()
	if !ok {
		return r, false
	}
	return notify.Value(int64(idx)), true
}

// statCaller is a Caller that returns a descriptor with its fstat,
// recognising a file it has seen before without duplicating it again
// (notify.Target.GetFDStat).
type statCaller interface {
	GetFDStat(unsafeFD uint32) (notify.FD, unix.Stat_t, error)
}

// getFDStat duplicates the caller's descriptor unsafeFD and returns it
// with its fstat.
func getFDStat(c Caller, unsafeFD uint32) (notify.FD, unix.Stat_t, error) {
	if sc, ok := c.(statCaller); ok {
		return sc.GetFDStat(unsafeFD)
	}
	var st unix.Stat_t
	f, err := c.GetFD(unsafeFD)
	if err != nil {
		return f, st, err
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close() // our duplicate, refused before any use
		return notify.FD{N: -1}, st, err
	}
	return f, st, nil
}

func (in *Instance) control(c Caller, log func() *logrus.Entry, cmd uint32, arg uint64) notify.Reply {
	switch cmd {
	case cmdCtlGetFree:
		// A free device the instance holds is an answer without side
		// effects: the reply reaches the caller only if the call is
		// still pending, which proves the caller's file as well
		// (notify.FD.Recognised). No ID check is needed for it.
		if idx, ok := in.heldFree(); ok {
			return value(idx, nil)
		}
		// Otherwise GET_FREE may create a device: not for a call that
		// is gone.
		if !c.Valid() {
			return fail(ErrStale)
		}
		idx, err := in.GetFree()
		if err != nil {
			log().WithError(err).Info("denied")
		}
		return value(idx, err)
	case cmdCtlAdd:
		if !c.Valid() {
			return fail(ErrStale)
		}
		idx, err := in.Add(int32(uint32(arg)))
		if err != nil {
			log().WithError(err).WithField("loop", int32(uint32(arg))).Info("denied")
		}
		return value(idx, err)
	case cmdCtlRemove:
		if !c.Valid() {
			return fail(ErrStale)
		}
		err := in.Remove(int32(uint32(arg)))
		return value(0, err)
	default:
		// Other loop commands on loop-control: the misc driver refuses
		// them (loop_control_ioctl). The container's node is not the
		// misc device, so its answer is given here.
		return notify.Errno(unix.ENOSYS)
	}
}

// isControl reports whether st is a loop-control node for the instance:
// its own /dev/loop-control (a /dev/null node the view made), the
// supervisor's (an agent's, before it takes the container over) or the
// kernel's (a node of the host's, if a runtime bound one in).
func (in *Instance) isControl(st *unix.Stat_t) bool {
	return IsLoopControl(st) || in.View.IsControl(st) || in.host.isControlNode(st)
}

// KeepFile is the policy of notify.Listener.KeepFiles for the
// instance's listeners: loop-control nodes, character devices that count
// no opens (the loop driver's misc device, or the /dev/null node the view
// shows as loop-control), are kept. A caller's loop device is never kept:
// a reference the supervisor held would keep it open, and a detach with
// autoclear, LOOP_CTL_REMOVE and exclusive opens depend on who has it
// open.
func (in *Instance) KeepFile(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && in.isControl(st)
}

// writable reports whether f was opened for writing (the loop driver's
// BLK_OPEN_WRITE).
func writable(f notify.FD) bool { return f.Flags&unix.O_ACCMODE != unix.O_RDONLY }

// mayAdmin applies the loop driver's "opened for write or CAP_SYS_ADMIN"
// rule with CAP_SYS_ADMIN taken in the instance's user namespace.
func mayAdmin(c Caller, f notify.FD) (bool, error) {
	if writable(f) {
		return true, nil
	}
	return c.Privileged()
}

// adminCheck applies mayAdmin and says what to answer if the caller may
// not: the kernel's EPERM, logged.
func adminCheck(c Caller, f notify.FD, log func() *logrus.Entry) (notify.Reply, bool) {
	ok, err := mayAdmin(c, f)
	if err != nil {
		return fail(err), true
	}
	if !ok {
		log().Info("caller neither opened the device for writing nor has CAP_SYS_ADMIN: EPERM")
		return notify.Errno(unix.EPERM), true
	}
	return notify.Reply{}, false
}

func (in *Instance) device(c Caller, logf func() *logrus.Entry, f notify.FD, idx int, cmd uint32, arg uint64, compat bool) notify.Reply {
	log := func() *logrus.Entry { return logf().WithField("loop", idx) }
	switch cmd {
	case cmdSetFD, cmdChangeFD:
		// The kernel takes the fd from the low 32 bits of arg.
		backing, err := c.GetFD(uint32(arg))
		if err != nil {
			return fail(err)
		}
		defer func() { _ = backing.Close() }()
		if !c.Valid() {
			return fail(ErrStale)
		}
		if cmd == cmdSetFD {
			in.BeginBind(idx)
			defer in.EndBind(idx)
		}
		if r, done := in.asCaller(c, idx, f, &backing, cmd, backingArg, nil, log); done {
			logBind(log, r, backing)
			return r
		}
		r := value(Ioctl(f.Fd(), cmd, backing.Fd()))
		logBind(log, r, backing)
		return r
	case cmdConfigure:
		buf := make([]byte, linux.SizeofLoopConfig)
		if err := c.Read(arg, buf); err != nil {
			return fail(err)
		}
		cfg, err := linux.DecodeLoopConfig(buf)
		if err != nil {
			return fail(unix.EFAULT)
		}
		backing, err := c.GetFD(cfg.FD)
		if err != nil {
			return fail(err)
		}
		defer func() { _ = backing.Close() }()
		if err := linux.SetConfigFD(buf, uint32(backing.Fd())); err != nil {
			return fail(err)
		}
		if !c.Valid() {
			return fail(ErrStale)
		}
		in.BeginBind(idx)
		r, done := in.asCaller(c, idx, f, &backing, cmd, 0, buf, log)
		if !done {
			r = value(IoctlBuf(f.Fd(), cmd, buf))
		}
		in.EndBind(idx)
		logBind(log, r, backing)
		if r.Errno == 0 && cfg.Info.Flags&loFlagsPartscan != 0 {
			in.scanLater(idx)
		}
		return r
	case blkRRPart:
		return in.rrpart(c, idx)
	case hdioGetGeo:
		return in.getgeo(c, idx, arg)
	case blkPG:
		ok, err := c.Privileged()
		if err != nil {
			return fail(err)
		}
		if !ok {
			return notify.Errno(unix.EACCES)
		}
		return in.blkpg(c, idx, arg, compat)
	case cmdClrFD:
		if !c.Valid() {
			return fail(ErrStale)
		}
		// Partition devices hold the whole device open: release them
		// first, or the detach would wait for them.
		if err := in.DropPartitions(idx); err != nil {
			log().WithError(err).Warn("partitions in use: the detach happens when they are released")
		}
		r := value(Ioctl(f.Fd(), cmd, 0))
		if r.Errno == 0 {
			log().Info("detached")
		}
		return r
	case cmdSetStatus64, cmdSetStatus:
		if r, denied := adminCheck(c, f, log); denied {
			return r
		}
		size := linux.SizeofLoopInfo64
		if cmd == cmdSetStatus {
			size = linux.SizeofLoopInfo
		}
		buf := make([]byte, size)
		if err := c.Read(arg, buf); err != nil {
			return fail(err)
		}
		r, done := in.asCaller(c, idx, f, nil, cmd, 0, buf, log)
		if !done {
			r = value(IoctlBuf(f.Fd(), cmd, buf))
		}
		if r.Errno == 0 && cmd == cmdSetStatus64 {
			if info, err := linux.DecodeLoopInfo64(buf); err == nil && info.Flags&loFlagsPartscan != 0 {
				in.scanLater(idx)
			}
		}
		return r
	case cmdGetStatus64, cmdGetStatus:
		if arg == 0 {
			return value(Ioctl(f.Fd(), cmd, 0)) // the kernel's EINVAL
		}
		size := linux.SizeofLoopInfo64
		if cmd == cmdGetStatus {
			size = linux.SizeofLoopInfo
		}
		buf := make([]byte, size)
		r, err := IoctlBuf(f.Fd(), cmd, buf)
		if err != nil {
			return fail(err)
		}
		if err := c.Write(arg, buf); err != nil {
			return fail(err)
		}
		return notify.Reply{Val: int64(r)}
	case cmdSetCapacity, cmdSetDirectIO, cmdSetBlockSize:
		if r, denied := adminCheck(c, f, log); denied {
			return r
		}
		if !c.Valid() {
			return fail(ErrStale)
		}
		// LOOP_SET_BLOCK_SIZE claims the device exclusively before it looks
		// at the state; the supervisor's own claim must not answer EBUSY.
		in.BeginBind(idx)
		defer in.EndBind(idx)
		if cmd == cmdSetCapacity {
			if r, done := in.asCaller(c, idx, f, nil, cmd, arg, nil, log); done {
				return r
			}
		}
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	default:
		// LOOP_CTL_* on a loop device: lo_ioctl refuses them (EINVAL);
		// lo_compat_ioctl does not know them (ENOTTY).
		if compat && cmd >= cmdCtlAdd && cmd <= cmdCtlGetFree {
			return notify.Errno(unix.ENOTTY)
		}
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	}
}

// backingArg is the fd number a backing file has in an asCaller process.
const backingArg = 7

// nsCaller is a Caller the supervisor can act as: its pid and pidfd.
type nsCaller interface {
	Pid() int
	PidFD() int
}

// asCaller runs a size-computing loop command (LOOP_SET_FD, LOOP_CHANGE_FD,
// LOOP_CONFIGURE, LOOP_SET_STATUS(64), LOOP_SET_CAPACITY) as the caller, in
// its user namespace with its ids, when the backing file is on FUSE: the
// loop driver takes the size from the file's getattr as the calling task,
// and a FUSE file system the container serves answers host root EACCES
// (fuse_allow_current_process), which the driver turns into a device of
// size 0. backing is the new backing file, or nil for the bound one.
// done is false when the command is the supervisor's to run (not on
// FUSE, or the caller cannot be acted as). LOOP_SET_STATUS and
// LOOP_SET_CAPACITY on a read-only fd (allowed by adminCheck) need
// CAP_SYS_ADMIN in the host's user namespace: the op gets a writable fd
// of the same device then.
func (in *Instance) asCaller(c Caller, idx int, f notify.FD, backing *notify.FD, cmd uint32, arg uint64, buf []byte, log func() *logrus.Entry) (notify.Reply, bool) {
	nc, ok := c.(nsCaller)
	if !ok {
		return notify.Reply{}, false
	}
	if backing != nil {
		fuse := onFUSE(int(backing.Fd()))
		in.mu.Lock()
		in.fuseBacked[idx] = fuse
		in.mu.Unlock()
		if !fuse {
			return notify.Reply{}, false
		}
		if cmd == cmdConfigure {
			if err := linux.SetConfigFD(buf, backingArg); err != nil {
				return fail(err), true
			}
		}
	} else {
		in.mu.Lock()
		fuse := in.fuseBacked[idx]
		in.mu.Unlock()
		if !fuse {
			return notify.Reply{}, false
		}
	}
	var lf *os.File
	var err error
	if backing == nil && f.Flags&unix.O_ACCMODE == unix.O_RDONLY {
		// LOOP_SET_STATUS and LOOP_SET_CAPACITY on a read-only fd need
		// CAP_SYS_ADMIN in the host's user namespace, which the caller
		// has in loopvisor's terms (adminCheck) but not in the kernel's:
		// the op gets a writable fd of the same device instead.
		var path string
		if path, err = in.NodePath(idx); err == nil {
			lf, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		}
	} else {
		lf, err = dupFile(f, "loop")
	}
	if err != nil {
		return fail(err), true
	}
	defer func() { _ = lf.Close() }()
	var bf *os.File
	if backing != nil {
		if bf, err = dupFile(*backing, "backing"); err != nil {
			return fail(err), true
		}
		defer func() { _ = bf.Close() }()
	}
	err = nsexec.LoopIoctl(nc.Pid(), nc.PidFD(), lf, bf, cmd, arg, buf)
	if err == nil {
		return notify.Reply{}, true
	}
	var ne *nsexec.Error
	if errors.As(err, &ne) && ne.Step != "ioctl" {
		log().WithError(err).Warn("cannot act as the caller on its FUSE-backed file")
	}
	if errors.Is(err, unix.ETIMEDOUT) && (cmd == cmdSetFD || cmd == cmdConfigure) {
		// The container's FUSE server did not answer the size query in
		// time. The killed op may still have bound the device (the
		// request was answered late): the caller hears ETIMEDOUT, so the
		// device must be unbound as well.
		_, _ = Ioctl(f.Fd(), cmdClrFD, 0)
	}
	if !c.Valid() {
		return fail(ErrStale), true
	}
	return fail(err), true
}

func dupFile(f notify.FD, name string) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// onFUSE reports whether fd is a file on a FUSE file system.
func onFUSE(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.FUSE_SUPER_MAGIC
}

func logBind(log func() *logrus.Entry, r notify.Reply, backing notify.FD) {
	if r.Errno != 0 {
		return
	}
	name, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(backing.Fd())))
	log().WithField("backing", name).Info("attached")
}

// scanLater reads the partition table of idx before the reply, as the
// kernel does within LOOP_CONFIGURE and LOOP_SET_STATUS64 (losetup -P probes
// the partitions right after the call), bounded by ScanTimeout and without
// holding the instance's lock during the read.
func (in *Instance) scanLater(idx int) {
	if err := in.Rescan(idx); err != nil {
		in.log.WithError(err).WithField("loop", idx).Warn("partition scan")
	}
}
