package supervisor

import (
	"errors"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/notify"
)

// Audit arches whose ioctl the filter traps.
const (
	auditArchX86_64 = 0xc000003e
	auditArchI386   = 0x40000003
	x32SyscallBit   = 0x40000000
)

var ioctlI386 = func() int32 {
	n, err := seccomp.GetSyscallFromNameByArch("ioctl", seccomp.ArchX86)
	if err != nil {
		return -1
	}
	return int32(n)
}()

var ioctlX32 = func() int32 {
	n, err := seccomp.GetSyscallFromNameByArch("ioctl", seccomp.ArchX32)
	if err != nil {
		return -1
	}
	return int32(n)
}()

// Serve answers the listener's notifications for instance in until no task
// uses the filter any more. Requests of one listener are served in order,
// so a flood from one sandbox queues behind itself only.
func Serve(l *notify.Listener, in *loopctl.Instance, log *logrus.Entry) error {
	for {
		req, err := l.Next()
		if errors.Is(err, notify.ErrGone) {
			return nil
		}
		if err != nil {
			return err
		}
		reply := handle(l, in, &req, log)
		if err := l.Respond(req.ID, reply); err != nil {
			log.WithError(err).WithField("pid", req.Pid).Warn("cannot answer notification")
		}
	}
}

func handle(l *notify.Listener, in *loopctl.Instance, req *notify.Request, log *logrus.Entry) notify.Reply {
	compat := false
	switch {
	case req.Arch == auditArchX86_64 && req.Nr == unix.SYS_IOCTL:
	case req.Arch == auditArchX86_64 && req.Nr == ioctlX32:
		compat = true
	case req.Arch == auditArchI386 && req.Nr == ioctlI386:
		compat = true
	case req.Arch == notify.NativeArch && req.Nr == unix.SYS_IOCTL:
	default:
		log.WithFields(logrus.Fields{"pid": req.Pid, "nr": req.Nr, "arch": req.Arch}).Warn("unexpected trapped syscall: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	cmd := uint32(req.Args[1])
	arg := req.Args[2]
	if compat {
		arg &= 0xffffffff
		if cmd == 0x4C02 || cmd == 0x4C03 {
			// struct loop_info differs in the compat ABIs.
			log.WithFields(logrus.Fields{"pid": req.Pid, "syscall": loopctl.CmdName(cmd)}).Warn("32-bit LOOP_SET/GET_STATUS is not served: EINVAL; use the 64 variants")
			return notify.Errno(unix.EINVAL)
		}
	}
	t, err := l.Target(req)
	if err != nil {
		return notify.Errno(unix.ENOENT) // nobody left to read it
	}
	defer t.Close()
	r := in.Ioctl(caller{Target: t, userNS: in.UserNS}, uint32(req.Args[0]), cmd, arg)
	if r.Continue {
		return notify.Reply{Continue: true}
	}
	if r.Errno != 0 {
		return notify.Errno(r.Errno)
	}
	return notify.Value(r.Val)
}
