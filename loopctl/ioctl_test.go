package loopctl

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// fakeCaller hands Ioctl a file of the test's choosing as the caller's fd.
type fakeCaller struct {
	path  string
	flags int
	valid bool
	reads int
}

func (c *fakeCaller) GetFD(unsafeFD uint32) (notify.FD, error) {
	if unsafeFD == 99 {
		return notify.FD{N: -1}, unix.EBADF
	}
	fd, err := unix.Open(c.path, c.flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return notify.FD{N: -1}, err
	}
	return notify.FD{N: fd, Flags: c.flags}, nil
}
func (c *fakeCaller) Read(uint64, []byte) error  { c.reads++; return unix.EFAULT }
func (c *fakeCaller) Write(uint64, []byte) error { return unix.EFAULT }
func (c *fakeCaller) Privileged() (bool, error)  { return true, nil }
func (c *fakeCaller) Valid() bool                { return c.valid }

// Ioctl with a fake caller: what is not loopvisor's is CONTINUEd, bad fds
// give the kernel's EBADF, loop-control commands on a non-loop-control fd
// get the kernel's own answer on a copy (never CONTINUE), and nothing
// reads the caller's memory for such calls.
func TestIoctlFakeCaller(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := &Instance{devs: map[int]*os.File{}, binding: map[int]int{}, log: logrus.NewEntry(logrus.New())}
	tests := []struct {
		name string
		fd   uint32
		cmd  uint32
		want notify.Reply
	}{
		{"bad fd", 99, cmdSetFD, notify.Errno(unix.EBADF)},
		{"LOOP_SET_FD on a regular file", 3, cmdSetFD, notify.Continue},
		{"LOOP_GET_STATUS64 on a regular file", 3, cmdGetStatus64, notify.Continue},
		{"BLKRRPART on a regular file", 3, blkRRPart, notify.Continue},
		{"LOOP_CTL_GET_FREE on a regular file", 3, cmdCtlGetFree, notify.Errno(unix.ENOTTY)},
		{"LOOP_CTL_REMOVE on a regular file", 3, cmdCtlRemove, notify.Errno(unix.ENOTTY)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeCaller{path: file, flags: unix.O_RDONLY, valid: true}
			if got := in.Ioctl(c, tt.fd, tt.cmd, 0x1000); got != tt.want {
				t.Errorf("Ioctl = %+v, want %+v", got, tt.want)
			}
			if c.reads != 0 {
				t.Errorf("read the caller's memory %d times for a call that is not loopvisor's", c.reads)
			}
		})
	}
}
