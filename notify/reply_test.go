package notify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

func TestErrnoOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"EBADF", syscall.EBADF, unix.EBADF},
		{"EFAULT", unix.EFAULT, unix.EFAULT},
		{"ENOSPC", unix.ENOSPC, unix.ENOSPC},
		{"EBUSY", unix.EBUSY, unix.EBUSY},
		{"EINVAL", unix.EINVAL, unix.EINVAL},
		{"EPERM", unix.EPERM, unix.EPERM},
		{"ENXIO", unix.ENXIO, unix.ENXIO},
		{"ErrStale", ErrStale, unix.ENOENT},
		{"wrapped ErrStale", fmt.Errorf("read: %w", ErrStale), unix.ENOENT},
		{"wrapped EBUSY", fmt.Errorf("ioctl: %w", unix.EBUSY), unix.EBUSY},
		{"double wrapped ENOSPC", fmt.Errorf("a: %w", fmt.Errorf("b: %w", unix.ENOSPC)), unix.ENOSPC},
		{"SyscallError", os.NewSyscallError("ioctl", unix.ENOTTY), unix.ENOTTY},
		{"PathError EACCES", &fs.PathError{Op: "open", Path: "/x", Err: unix.EACCES}, unix.EACCES},
		{"PathError ENOENT", &fs.PathError{Op: "open", Path: "/x", Err: unix.ENOENT}, unix.ENOENT},
		{"os.ErrNotExist", os.ErrNotExist, unix.ENOENT},
		{"fs.ErrNotExist wrapped", fmt.Errorf("journal: %w", fs.ErrNotExist), unix.ENOENT},
		{"os.ErrPermission", os.ErrPermission, unix.EPERM},
		{"os.ErrPermission wrapped", fmt.Errorf("x: %w", os.ErrPermission), unix.EPERM},
		{"linux.ErrShort", linux.ErrShort, unix.EIO},
		{"plain", errors.New("something"), unix.EIO},
		{"text of an errno, not wrapped", errors.New("ioctl: " + unix.EBUSY.Error()), unix.EIO},
		{"os.ErrClosed", os.ErrClosed, unix.EIO},
		{"context.Canceled", context.Canceled, unix.EIO},
		{"joined", errors.Join(errors.New("a"), unix.EROFS), unix.EROFS},
	}
	for _, tt := range tests {
		if got := ErrnoOf(tt.err); got != tt.want {
			t.Errorf("%s: ErrnoOf(%v) = %v (%d), want %v (%d)", tt.name, tt.err, got, int(got), tt.want, int(tt.want))
		}
	}
}

// A stale call is not an ENOENT the kernel gave: they can be told apart.
func TestErrStaleIsNotENOENT(t *testing.T) {
	if errors.Is(ErrStale, unix.ENOENT) || errors.Is(unix.ENOENT, ErrStale) {
		t.Fatal("ErrStale and ENOENT must be distinct errors")
	}
}
