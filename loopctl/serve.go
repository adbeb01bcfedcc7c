package loopctl

import (
	"os"
	"strconv"

	"github.com/loopvisor/loopvisor/internal/linux"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

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
	f, err := c.GetFD(unsafeFD)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = f.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fail(err)
	}
	// Log entries are built only when something is logged: this is the
	// hot path of every trapped call.
	log := func() *logrus.Entry { return in.log.WithField("syscall", CmdName(cmd)) }
	switch {
	case IsLoopControl(&st):
		return in.control(c, log, f, cmd, arg)
	case IsLoopDevice(&st):
		idx := Index(st.Rdev)
		if !in.Owns(idx) {
			log().WithField("loop", idx).Warn("ioctl on a loop device outside the instance: EPERM")
			return notify.Errno(unix.EPERM)
		}
		r := in.device(c, log, f, idx, cmd, arg)
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

func (in *Instance) control(c Caller, log func() *logrus.Entry, f notify.FD, cmd uint32, arg uint64) notify.Reply {
	switch cmd {
	case cmdCtlGetFree:
		// GET_FREE may create a device: not for a call that is gone.
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
		// them; running them on our copy returns its errno.
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	}
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

func (in *Instance) device(c Caller, logf func() *logrus.Entry, f notify.FD, idx int, cmd uint32, arg uint64) notify.Reply {
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
		r := value(IoctlBuf(f.Fd(), cmd, buf))
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
		return in.blkpg(c, idx, arg)
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
		r := value(IoctlBuf(f.Fd(), cmd, buf))
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
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	default:
		// LOOP_CTL_* on a loop device: lo_ioctl refuses them.
		return value(Ioctl(f.Fd(), cmd, uintptr(arg)))
	}
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
