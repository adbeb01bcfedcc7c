package linux

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ioctl issues ioctl(fd, cmd, arg) with an integer argument, retrying
// EINTR.
func Ioctl(fd uintptr, cmd uint32, arg uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(cmd), arg)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}

// IoctlBuf issues an ioctl whose argument points at buf (NULL if buf is
// empty), retrying EINTR.
func IoctlBuf(fd uintptr, cmd uint32, buf []byte) (int, error) {
	if len(buf) == 0 {
		return Ioctl(fd, cmd, 0)
	}
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(cmd), uintptr(unsafe.Pointer(&buf[0])))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}

// IoctlPtr issues an ioctl whose argument is a pointer to a kernel
// structure the caller keeps alive, retrying EINTR.
func IoctlPtr(fd uintptr, cmd uint, p unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(cmd), uintptr(p))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// IoctlPtrRaw is IoctlPtr through unix.RawSyscall: the Go runtime's
// system-call bookkeeping (entersyscall/exitsyscall) is skipped and the
// OS thread keeps its P throughout.
//
// Preconditions: the command never sleeps on anything a container
// controls (the seccomp listener's SEND and ID_VALID take a mutex held
// only briefly); a call that may wait goes through IoctlPtr.
func IoctlPtrRaw(fd uintptr, cmd uint, p unsafe.Pointer) error {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_IOCTL, fd, uintptr(cmd), uintptr(p))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
