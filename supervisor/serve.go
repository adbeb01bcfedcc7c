package supervisor

import (
	"errors"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/notify"
)

// Sandbox is what the serve loop answers for.
type Sandbox struct {
	Instance *loopctl.Instance
	Mounts   *mountproxy.Proxy // nil: mount calls are not trapped
	Log      *logrus.Entry
	// Check, if set, vets each trapped call's caller before anything is
	// done for it: an error refuses the call with EPERM (logged), errStale
	// drops it.
	Check func(l *notify.Listener, req *notify.Request) error
	// Warm, if set, is called once, at the first trapped call (before it
	// is served): work a sandbox that uses loop devices will want done
	// ahead of its mounts, and one that never does should not pay for.
	Warm     func()
	warmOnce sync.Once
}

// Serve answers the listener's notifications until no task uses the filter
// any more. Requests of one listener are served in order, so a flood from
// one sandbox queues behind itself only. A blocking listener's receive
// blocks whichever OS thread this goroutine runs on; the goroutine is not
// locked to one (the listener yields to the Go scheduler now and then, see
// notify.NewBlockingListener), so a call may be received on one thread and
// answered on another, and nothing here may rely on per-thread state.
//
// The listener keeps the callers' loop-control files it sees
// (Instance.KeepFile): later calls on them are recognised with one kcmp.
func Serve(l *notify.Listener, sb *Sandbox) error {
	if sb.Instance != nil {
		l.KeepFiles(sb.Instance.KeepFile)
	}
	sc := new(scratch)
	for {
		var err error
		sc.req, err = l.Next()
		if errors.Is(err, notify.ErrGone) {
			return nil
		}
		if err != nil {
			return err
		}
		reply := answerWith(l, sb, &sc.req, sc)
		if err := l.Respond(sc.req.ID, reply); err != nil {
			sb.Log.WithError(err).WithField("pid", sc.req.Pid).Warn("cannot answer notification")
		}
	}
}

// scratch is what one serve loop reuses from request to request, so that
// serving a call allocates nothing: the request, its Target and the
// caller handed to loopctl and mountproxy (which keep none of them past
// the call).
type scratch struct {
	req notify.Request
	t   notify.Target
	c   caller
}

// answer vets req's caller with sb.Check, then decides it (handle).
func answer(l *notify.Listener, sb *Sandbox, req *notify.Request) notify.Reply {
	return answerWith(l, sb, req, nil)
}

// answerWith is answer with the scratch of a serve loop (nil: none).
func answerWith(l *notify.Listener, sb *Sandbox, req *notify.Request, sc *scratch) notify.Reply {
	if sb.Warm != nil {
		sb.warmOnce.Do(sb.Warm)
	}
	if sb.Check != nil {
		if err := sb.Check(l, req); err != nil {
			if !errors.Is(err, errStale) {
				sb.Log.WithError(err).WithField("pid", req.Pid).Warn("refused: trapped call from a process outside the container: EPERM")
			}
			return notify.Errno(unix.EPERM)
		}
	}
	if sb.Instance != nil && req.Arch == notify.NativeArch && uint32(req.Args[1]) == notify.LoopCtlGetFree {
		// The hot call: GET_FREE on a kept loop-control file, answered
		// before any other bookkeeping (loopctl.Instance.KeptGetFree).
		if call, ok := notify.Decode(req); ok && call.Syscall == notify.SysIoctl && !call.Compat {
			if r, ok := sb.Instance.KeptGetFree(l, req, uint32(call.Args[0])); ok {
				return r
			}
		}
	}
	return handleWith(l, sb, req, sc)
}

// handle decides one notification: notify decodes it, loopctl and
// mountproxy act on copies of its arguments, and the reply goes back to
// Serve, which answers it.
func handle(l *notify.Listener, sb *Sandbox, req *notify.Request) notify.Reply {
	return handleWith(l, sb, req, nil)
}

// handleWith is handle with the scratch of a serve loop (nil: none).
func handleWith(l *notify.Listener, sb *Sandbox, req *notify.Request, sc *scratch) notify.Reply {
	call, ok := notify.Decode(req)
	if !ok && call.NoABI {
		return notify.Errno(unix.ENOSYS) // the kernel's answer: no such ABI
	}
	if !ok {
		sb.Log.WithFields(logrus.Fields{"pid": req.Pid, "nr": req.Nr, "arch": req.Arch}).Warn("unexpected trapped syscall: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	if call.Syscall == notify.SysUmount2 && l != nil {
		// The loop-control files the listener keeps would make the
		// caller's /dev (or any mount holding one) busy.
		l.DropFiles()
	}
	args := call.Args
	if call.Syscall == notify.SysIoctl && call.Compat {
		if cmd := uint32(args[1]); cmd == notify.LoopSetStatus || cmd == notify.LoopGetStatus {
			// struct loop_info differs in the compat ABIs.
			sb.Log.WithFields(logrus.Fields{"pid": req.Pid, "syscall": loopctl.CmdName(cmd)}).Warn("32-bit LOOP_SET/GET_STATUS is not served: EINVAL; use the 64 variants")
			return notify.Errno(unix.EINVAL)
		}
		if uint32(args[1]) == notify.HdioGetGeo {
			// Partition geometry is served in the 64-bit layout only;
			// the kernel answers 32-bit callers (ENOTTY for a loop device).
			return notify.Continue
		}
	}
	if call.Syscall != notify.SysIoctl && sb.Mounts == nil {
		return notify.Continue
	}
	if sc == nil {
		sc = new(scratch)
	}
	t := &sc.t
	l.Open(t, req)
	defer t.Close()
	sc.c = caller{Target: t, userNS: sb.Instance.UserNS}
	c := &sc.c
	switch call.Syscall {
	case notify.SysIoctl:
		return sb.Instance.IoctlABI(c, uint32(args[0]), uint32(args[1]), args[2], call.Compat)
	case notify.SysMount:
		return sb.Mounts.Mount(c, args)
	case notify.SysUmount2:
		return sb.Mounts.Umount(c, args)
	case notify.SysFsopen:
		return sb.Mounts.Fsopen(c, args)
	case notify.SysFsconfig:
		return sb.Mounts.Fsconfig(c, args)
	case notify.SysFsmount:
		return sb.Mounts.Fsmount(c, args)
	case notify.SysFspick:
		return sb.Mounts.Fspick(c, args)
	}
	return notify.Errno(unix.ENOSYS)
}
