package supervisor

import (
	"errors"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/notify"
)

// Audit arches whose calls the filter traps.
const (
	auditArchX86_64 = 0xc000003e
	auditArchI386   = 0x40000003
)

type sysKey struct {
	arch uint32
	nr   int32
}

type sysInfo struct {
	name   string
	compat bool // 32-bit pointers and structures
}

// syscalls names every trapped (arch, nr) pair.
var syscalls = func() map[sysKey]sysInfo {
	m := map[sysKey]sysInfo{}
	add := func(arch seccomp.ScmpArch, audit uint32, compat bool) {
		for _, name := range []string{"ioctl", "mount", "umount2", "umount", "fsopen"} {
			nr, err := seccomp.GetSyscallFromNameByArch(name, arch)
			if err == nil && nr >= 0 {
				m[sysKey{audit, int32(nr)}] = sysInfo{name, compat}
			}
		}
	}
	add(seccomp.ArchAMD64, auditArchX86_64, false)
	add(seccomp.ArchX32, auditArchX86_64, true)
	add(seccomp.ArchX86, auditArchI386, true)
	if notify.NativeArch != auditArchX86_64 {
		add(seccomp.ArchNative, notify.NativeArch, false)
	}
	return m
}()

// Sandbox is what the serve loop answers for.
type Sandbox struct {
	Instance *loopctl.Instance
	Mounts   *mountproxy.Proxy // nil: mount calls are not trapped
	Log      *logrus.Entry
}

// Serve answers the listener's notifications until no task uses the filter
// any more. Requests of one listener are served in order, so a flood from
// one sandbox queues behind itself only.
func Serve(l *notify.Listener, sb *Sandbox) error {
	for {
		req, err := l.Next()
		if errors.Is(err, notify.ErrGone) {
			return nil
		}
		if err != nil {
			return err
		}
		reply := handle(l, sb, &req)
		if err := l.Respond(req.ID, reply); err != nil {
			sb.Log.WithError(err).WithField("pid", req.Pid).Warn("cannot answer notification")
		}
	}
}

func handle(l *notify.Listener, sb *Sandbox, req *notify.Request) notify.Reply {
	info, ok := syscalls[sysKey{req.Arch, req.Nr}]
	if !ok {
		sb.Log.WithFields(logrus.Fields{"pid": req.Pid, "nr": req.Nr, "arch": req.Arch}).Warn("unexpected trapped syscall: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	args := req.Args
	if info.compat {
		for i := range args {
			args[i] &= 0xffffffff
		}
	}
	if info.name == "ioctl" && info.compat {
		if cmd := uint32(args[1]); cmd == 0x4C02 || cmd == 0x4C03 {
			// struct loop_info differs in the compat ABIs.
			sb.Log.WithFields(logrus.Fields{"pid": req.Pid, "syscall": loopctl.CmdName(cmd)}).Warn("32-bit LOOP_SET/GET_STATUS is not served: EINVAL; use the 64 variants")
			return notify.Errno(unix.EINVAL)
		}
	}
	if info.name != "ioctl" && sb.Mounts == nil {
		return notify.Reply{Continue: true}
	}
	t, err := l.Target(req)
	if err != nil {
		return notify.Errno(unix.ENOENT) // nobody left to read it
	}
	defer t.Close()
	var r loopctl.Result
	c := caller{Target: t, userNS: sb.Instance.UserNS}
	switch info.name {
	case "ioctl":
		r = sb.Instance.Ioctl(c, uint32(args[0]), uint32(args[1]), args[2])
	case "mount":
		r = sb.Mounts.Mount(c, args)
	case "umount2":
		r = sb.Mounts.Umount(c, args)
	case "umount": // i386: umount(target) is umount2(target, 0)
		args[1] = 0
		r = sb.Mounts.Umount(c, args)
	case "fsopen":
		r = sb.Mounts.Fsopen(c, args)
	}
	switch {
	case r.Continue:
		return notify.Reply{Continue: true}
	case r.Errno != 0:
		return notify.Errno(r.Errno)
	default:
		return notify.Value(r.Val)
	}
}
