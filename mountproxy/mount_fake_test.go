package mountproxy

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// memCaller is a caller whose memory is a map of strings by address.
type memCaller struct {
	mem        map[uint64]string
	privileged bool
	reads      int
}

func (c *memCaller) Read(addr uint64, buf []byte) error {
	c.reads++
	s, ok := c.mem[addr]
	if !ok {
		return unix.EFAULT
	}
	copy(buf, s)
	return nil
}

func (c *memCaller) ReadString(addr uint64, _ int) (string, error) {
	c.reads++
	s, ok := c.mem[addr]
	if !ok {
		return "", unix.EFAULT
	}
	return s, nil
}
func (c *memCaller) Valid() bool               { return true }
func (c *memCaller) Pid() int                  { return os.Getpid() }
func (c *memCaller) PidFD() int                { return -1 }
func (c *memCaller) Privileged() (bool, error) { return c.privileged, nil }

// noDevices owns nothing.
type noDevices struct{}

func (noDevices) Owns(int) bool                { return false }
func (noDevices) NodePath(int) (string, error) { return "", unix.ENOENT }
func (noDevices) HelperNode(int, bool) (*os.File, func(), error) {
	return nil, nil, unix.ENOENT
}
func (noDevices) FuseNode() (*os.File, error) { return nil, unix.ENOENT }
func (noDevices) DevName(int) string          { return "loop" }

// Proxy.Mount with a fake caller: mounts that are not of an instance's
// device are the kernel's (CONTINUE), whatever the type, flags or paths;
// an unreadable pointer in a call that may be ours is CONTINUEd too (the
// kernel then gives its own EFAULT).
func TestMountFakeCaller(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	p := New(DefaultPolicy(), noDevices{}, nil, logrus.NewEntry(log))
	const src, tgt, typ, bad = 0x1000, 0x2000, 0x3000, 0x4000
	mem := map[uint64]string{src: file, tgt: dir, typ: "ext4"}
	tests := []struct {
		name  string
		args  [6]uint64
		mem   map[uint64]string
		want  notify.Reply
		reads bool
	}{
		{"remount", [6]uint64{src, tgt, typ, unix.MS_REMOUNT}, mem, notify.Continue, false},
		{"bind", [6]uint64{src, tgt, 0, unix.MS_BIND}, mem, notify.Continue, false},
		{"no type", [6]uint64{src, tgt, 0, 0}, mem, notify.Continue, false},
		{"unserved type", [6]uint64{src, tgt, typ, 0}, map[uint64]string{src: file, tgt: dir, typ: "tmpfs"}, notify.Continue, true},
		{"source is a regular file", [6]uint64{src, tgt, typ, 0}, mem, notify.Continue, true},
		{"source is /dev/null", [6]uint64{src, tgt, typ, 0}, map[uint64]string{src: "/dev/null", tgt: dir, typ: "ext4"}, notify.Continue, true},
		{"unreadable type", [6]uint64{src, tgt, bad, 0}, mem, notify.Continue, true},
		{"unreadable source", [6]uint64{bad, tgt, typ, 0}, mem, notify.Continue, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &memCaller{mem: tt.mem, privileged: true}
			if got := p.Mount(c, tt.args); got != tt.want {
				t.Errorf("Mount = %+v, want %+v", got, tt.want)
			}
			if !tt.reads && c.reads != 0 {
				t.Errorf("read the caller's memory for a call the filter lets through")
			}
		})
	}
}
