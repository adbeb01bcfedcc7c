package loopctl

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// Host is the machine's loop driver, as host root sees it.
type Host struct {
	ctl *os.File // /dev/loop-control

	mu    sync.Mutex
	nodes map[NodeID]bool // loop-control nodes of the supervisor's own (AddControlNode)
}

// NodeID is an inode: the device of its file system and its number.
type NodeID struct{ Dev, Ino uint64 }

// NodeIDOf returns st's inode.
func NodeIDOf(st *unix.Stat_t) NodeID { return NodeID{Dev: st.Dev, Ino: st.Ino} }

// AddControlNode makes an inode the supervisor made (an agent's
// /dev/loop-control for containers it has not taken over yet) a
// loop-control node for every instance of h.
func (h *Host) AddControlNode(id NodeID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nodes == nil {
		h.nodes = map[NodeID]bool{}
	}
	h.nodes[id] = true
}

func (h *Host) isControlNode(st *unix.Stat_t) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	ok := h.nodes[NodeIDOf(st)]
	h.mu.Unlock()
	return ok
}

// OpenHost opens /dev/loop-control. It fails with a message that says what to
// do when the loop driver is missing.
func OpenHost() (*Host, error) {
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("open /dev/loop-control: %w (load the loop module: modprobe loop)", err)
		}
		if os.IsPermission(err) {
			return nil, fmt.Errorf("open /dev/loop-control: %w (loopvisor must run as root)", err)
		}
		return nil, err
	}
	return &Host{ctl: f}, nil
}

// Close releases /dev/loop-control.
func (h *Host) Close() error { return h.ctl.Close() }

func (h *Host) ctlIoctl(cmd uint32, arg uintptr) (int, error) {
	return linux.Ioctl(h.ctl.Fd(), cmd, arg)
}

// Add creates loop device idx (LOOP_CTL_ADD); idx < 0 lets the kernel pick
// the lowest free index. It returns the index created.
func (h *Host) Add(idx int) (int, error) { return h.ctlIoctl(unix.LOOP_CTL_ADD, uintptr(idx)) }

// Remove deletes loop device idx (LOOP_CTL_REMOVE).
func (h *Host) Remove(idx int) error {
	_, err := h.ctlIoctl(unix.LOOP_CTL_REMOVE, uintptr(idx))
	return err
}

func loopSysDir(idx int) string {
	return linux.SysRoot + "/devices/virtual/block/loop" + strconv.Itoa(idx)
}

// Exists reports whether loop device idx exists on the host.
func Exists(idx int) bool {
	_, err := os.Lstat(loopSysDir(idx))
	return err == nil
}

// Bound reports whether loop device idx has a backing file.
func Bound(idx int) bool {
	_, err := os.Lstat(loopSysDir(idx) + "/loop")
	return err == nil
}

// BackingFile returns what sysfs says backs loop device idx ("" if unbound).
func BackingFile(idx int) string {
	b, err := os.ReadFile(loopSysDir(idx) + "/loop/backing_file")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// Index returns the loop index of a block device number, or -1 if dev is
// not a whole loop device.
func Index(rdev uint64) int {
	if unix.Major(rdev) != linux.LoopMajor {
		return -1
	}
	// part_shift is 0 unless the module was loaded with max_part; sysfs
	// knows the name either way.
	link, err := os.Readlink(fmt.Sprintf("%s/dev/block/%d:%d", linux.SysRoot, unix.Major(rdev), unix.Minor(rdev)))
	if err != nil {
		return int(unix.Minor(rdev))
	}
	name := link[strings.LastIndexByte(link, '/')+1:]
	n, err := strconv.Atoi(strings.TrimPrefix(name, "loop"))
	if err != nil || !strings.HasPrefix(name, "loop") {
		return -1
	}
	return n
}

// IsLoopControl reports whether st describes the kernel's
// /dev/loop-control (a container's own is not: see Instance.isControl).
func IsLoopControl(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR &&
		unix.Major(st.Rdev) == linux.MiscMajor && unix.Minor(st.Rdev) == linux.LoopCtlMinor
}

// IsLoopDevice reports whether st describes a whole loop block device.
func IsLoopDevice(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(st.Rdev) == linux.LoopMajor
}

// Ioctl and IoctlBuf are the EINTR-retrying wrappers of internal/linux.
var (
	Ioctl    = linux.Ioctl
	IoctlBuf = linux.IoctlBuf
)
