package notify

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// seccompData mirrors struct seccomp_data (include/uapi/linux/seccomp.h).
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

// seccompNotif mirrors struct seccomp_notif.
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

// seccompNotifResp mirrors struct seccomp_notif_resp.
type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// ioctlPtr is internal/linux's EINTR-retrying pointer ioctl.
func ioctlPtr(fd int, req uint, p unsafe.Pointer) error { return linux.IoctlPtr(uintptr(fd), req, p) }

func recvNotif(fd int, n *seccompNotif) error {
	*n = seccompNotif{}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// sendResp and idValid never wait for a container (the listener's mutex
// is held only briefly by the kernel): they skip the runtime's
// system-call bookkeeping (linux.IoctlPtrRaw). The kernel's SEND does not
// sleep interruptibly before it has consumed the reply, so a retry after
// EINTR is safe.
func sendResp(fd int, r *seccompNotifResp) error {
	return linux.IoctlPtrRaw(uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
}

func idValid(fd int, id uint64) error {
	return linux.IoctlPtrRaw(uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
}

func setFlags(fd int, flags uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS), uintptr(flags))
	if e != 0 {
		return e
	}
	return nil
}

// readMem copies len(buf) bytes at addr of pid into buf.
func readMem(pid int, addr uint64, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(buf) {
		return unix.EFAULT
	}
	return nil
}

// writeMem copies buf to addr in pid.
func writeMem(pid int, addr uint64, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := unix.ProcessVMWritev(pid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(buf) {
		return unix.EFAULT
	}
	return nil
}

// progBytes returns prog as the kernel reads it (struct sock_filter[]).
func progBytes(prog []unix.SockFilter) []byte {
	if len(prog) == 0 {
		return nil
	}
	n := len(prog) * int(unsafe.Sizeof(prog[0]))
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), n)...)
}

// progFromBytes decodes an exported BPF program (struct sock_filter[]).
func progFromBytes(raw []byte) ([]unix.SockFilter, error) {
	const insn = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(raw)%insn != 0 || len(raw) == 0 {
		return nil, fmt.Errorf("seccomp: exported program has %d bytes", len(raw))
	}
	prog := make([]unix.SockFilter, len(raw)/insn)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(raw)), raw)
	return prog, nil
}

// Install loads prog into the calling process (all threads) and returns the
// listener fd. It asks for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV where the
// kernel has it, so that SIGURG and friends cannot livelock a trapped call.
//
// Preconditions: the caller has CAP_SYS_ADMIN in its user namespace or has
// set no_new_privs.
func Install(prog []unix.SockFilter) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	flags := []uintptr{
		filterFlagNewListener | filterFlagTSync | filterFlagTSyncESRCH | filterFlagWaitKillableRecv,
		filterFlagNewListener | filterFlagTSync | filterFlagTSyncESRCH,
	}
	var lastErr error
	for _, fl := range flags {
		r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, fl, uintptr(unsafe.Pointer(&fprog)))
		runtime.KeepAlive(prog)
		if e == 0 {
			return int(r), nil
		}
		lastErr = e
		if e != unix.EINVAL {
			break
		}
	}
	return -1, os.NewSyscallError("seccomp(SECCOMP_SET_MODE_FILTER)", lastErr)
}

// nativeBigEndian is true on big-endian hosts, whose seccomp structs the
// byte decoders of proxied.go do not handle.
var nativeBigEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 0
}()

// getNotifSizes fills s with struct seccomp_notif_sizes {u16 notif, resp, data}.
func getNotifSizes(s *[3]uint16) error {
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(s)))
	if e != 0 {
		return e
	}
	return nil
}
