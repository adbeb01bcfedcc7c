package loopctl

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/loopvisor/loopvisor/internal/linux"

	"golang.org/x/sys/unix"
)

func TestFailAndValue(t *testing.T) {
	if r := fail(unix.EBUSY); r.Errno != unix.EBUSY || r.Val != 0 || r.Continue {
		t.Errorf("fail(EBUSY) = %+v", r)
	}
	if r := value(5, nil); r.Errno != 0 || r.Val != 5 || r.Continue {
		t.Errorf("value(5, nil) = %+v", r)
	}
	if r := value(-1, unix.ENXIO); r.Errno != unix.ENXIO || r.Val != 0 {
		t.Errorf("value(-1, ENXIO) = %+v", r)
	}
}

func TestCmdName(t *testing.T) {
	names := map[uint32]string{
		0x4C00: "LOOP_SET_FD",
		0x4C01: "LOOP_CLR_FD",
		0x4C02: "LOOP_SET_STATUS",
		0x4C03: "LOOP_GET_STATUS",
		0x4C04: "LOOP_SET_STATUS64",
		0x4C05: "LOOP_GET_STATUS64",
		0x4C06: "LOOP_CHANGE_FD",
		0x4C07: "LOOP_SET_CAPACITY",
		0x4C08: "LOOP_SET_DIRECT_IO",
		0x4C09: "LOOP_SET_BLOCK_SIZE",
		0x4C0A: "LOOP_CONFIGURE",
		0x4C80: "LOOP_CTL_ADD",
		0x4C81: "LOOP_CTL_REMOVE",
		0x4C82: "LOOP_CTL_GET_FREE",
	}
	for cmd, want := range names {
		if got := CmdName(cmd); got != want {
			t.Errorf("CmdName(%#x) = %q, want %q", cmd, got, want)
		}
	}
	// The constants agree with x/sys (which has no LOOP_CHANGE_FD).
	xsys := [][2]uint32{
		{unix.LOOP_SET_FD, 0x4C00}, {unix.LOOP_CLR_FD, 0x4C01}, {unix.LOOP_SET_STATUS, 0x4C02},
		{unix.LOOP_GET_STATUS, 0x4C03}, {unix.LOOP_SET_STATUS64, 0x4C04}, {unix.LOOP_GET_STATUS64, 0x4C05},
		{unix.LOOP_SET_CAPACITY, 0x4C07}, {unix.LOOP_SET_DIRECT_IO, 0x4C08}, {unix.LOOP_SET_BLOCK_SIZE, 0x4C09},
		{unix.LOOP_CONFIGURE, 0x4C0A}, {unix.LOOP_CTL_ADD, 0x4C80}, {unix.LOOP_CTL_REMOVE, 0x4C81},
		{unix.LOOP_CTL_GET_FREE, 0x4C82},
	}
	for _, p := range xsys {
		if p[0] != p[1] {
			t.Errorf("x/sys constant %#x != %#x", p[0], p[1])
		}
	}
	for _, cmd := range []uint32{0, 0x4C0B, 0x4C7F, 0x4C83, 0x5401, 0x80044C00, 0xffffffff} {
		if got := CmdName(cmd); got != "ioctl" {
			t.Errorf("CmdName(%#x) = %q, want ioctl", cmd, got)
		}
	}
}

func TestIsLoopControlDevice(t *testing.T) {
	tests := []struct {
		name        string
		mode        uint32
		rdev        uint64
		ctl, device bool
	}{
		{"loop-control", unix.S_IFCHR | 0o600, unix.Mkdev(10, 237), true, false},
		{"loop-control as block", unix.S_IFBLK | 0o600, unix.Mkdev(10, 237), false, false},
		{"other misc (fuse)", unix.S_IFCHR | 0o666, unix.Mkdev(10, 229), false, false},
		{"char 7:237", unix.S_IFCHR | 0o600, unix.Mkdev(7, 237), false, false},
		{"loop0", unix.S_IFBLK | 0o660, unix.Mkdev(7, 0), false, true},
		{"loop5", unix.S_IFBLK | 0o660, unix.Mkdev(7, 5), false, true},
		{"loop large minor", unix.S_IFBLK | 0o660, unix.Mkdev(7, 1<<20-1), false, true},
		{"loop as char (vcs 7:0)", unix.S_IFCHR | 0o620, unix.Mkdev(7, 0), false, false},
		{"sda", unix.S_IFBLK | 0o660, unix.Mkdev(8, 0), false, false},
		{"regular file", unix.S_IFREG | 0o644, 0, false, false},
		{"regular file with stale rdev", unix.S_IFREG | 0o644, unix.Mkdev(7, 0), false, false},
		{"dir", unix.S_IFDIR | 0o755, unix.Mkdev(10, 237), false, false},
		{"fifo", unix.S_IFIFO | 0o600, unix.Mkdev(7, 1), false, false},
		{"socket", unix.S_IFSOCK | 0o600, unix.Mkdev(10, 237), false, false},
		{"symlink", unix.S_IFLNK | 0o777, unix.Mkdev(7, 1), false, false},
		{"zero", 0, 0, false, false},
	}
	for _, tt := range tests {
		st := &unix.Stat_t{Mode: tt.mode, Rdev: tt.rdev}
		if got := IsLoopControl(st); got != tt.ctl {
			t.Errorf("%s: IsLoopControl = %v, want %v", tt.name, got, tt.ctl)
		}
		if got := IsLoopDevice(st); got != tt.device {
			t.Errorf("%s: IsLoopDevice = %v, want %v", tt.name, got, tt.device)
		}
	}
	// The real node, where there is one.
	var st unix.Stat_t
	if err := unix.Stat("/dev/loop-control", &st); err == nil {
		if !IsLoopControl(&st) || IsLoopDevice(&st) {
			t.Errorf("/dev/loop-control: IsLoopControl %v, IsLoopDevice %v", IsLoopControl(&st), IsLoopDevice(&st))
		}
	}
	if err := unix.Stat("/dev/null", &st); err == nil && (IsLoopControl(&st) || IsLoopDevice(&st)) {
		t.Errorf("/dev/null taken for a loop node")
	}
}

// withSysRoot points linux.SysRoot at dir for the test.
func withSysRoot(t *testing.T, dir string) {
	t.Helper()
	old := linux.SysRoot
	linux.SysRoot = dir
	t.Cleanup(func() { linux.SysRoot = old })
}

func TestIndex(t *testing.T) {
	root := t.TempDir()
	withSysRoot(t, root)
	links := map[string]string{
		"7:5":   "../../devices/virtual/block/loop5",
		"7:16":  "../../devices/virtual/block/loop1", // max_part=15: minor 16 is loop1
		"7:17":  "../../devices/virtual/block/loop1/loop1p1",
		"7:40":  "../../devices/virtual/block/loop123", // sysfs is trusted over the minor
		"7:41":  "../../devices/virtual/block/sda",
		"7:42":  "../../devices/virtual/block/loop",
		"7:43":  "../../devices/virtual/block/7",
		"7:44":  "loop9", // no slash
		"7:45":  "../../devices/virtual/block/loopx",
		"7:46":  "../../devices/virtual/block/loop-1",
		"8:0":   "../../devices/virtual/block/loop8", // not major 7: never consulted
		"7:100": "../../devices/virtual/block/loop100",
	}
	if err := os.MkdirAll(filepath.Join(root, "dev", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, "dev", "block", name)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		major, minor uint32
		want         int
	}{
		{7, 5, 5},
		{7, 16, 1},
		{7, 17, -1},
		{7, 40, 123},
		{7, 41, -1},
		{7, 42, -1},
		{7, 43, -1},
		{7, 44, 9},
		{7, 45, -1},
		{7, 46, -1},
		{7, 100, 100},
		{7, 0, 0}, // no sysfs entry: the minor
		{7, 3, 3}, // no sysfs entry: the minor
		{7, 1<<20 - 1, 1<<20 - 1},
		{8, 0, -1},
		{10, 237, -1},
		{0, 0, -1},
		{259, 7, -1},
	}
	for _, tt := range tests {
		if got := Index(unix.Mkdev(tt.major, tt.minor)); got != tt.want {
			t.Errorf("Index(%d:%d) = %d, want %d", tt.major, tt.minor, got, tt.want)
		}
	}
}

func TestSysfsQueries(t *testing.T) {
	root := t.TempDir()
	withSysRoot(t, root)
	blk := filepath.Join(root, "devices", "virtual", "block")
	if err := os.MkdirAll(filepath.Join(blk, "loop3", "loop"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blk, "loop3", "loop", "backing_file"), []byte("/srv/disk.img\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(blk, "loop4"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		idx           int
		exists, bound bool
		backing       string
	}{
		{3, true, true, "/srv/disk.img"},
		{4, true, false, ""},
		{5, false, false, ""},
	} {
		if got := Exists(tt.idx); got != tt.exists {
			t.Errorf("Exists(%d) = %v", tt.idx, got)
		}
		if got := Bound(tt.idx); got != tt.bound {
			t.Errorf("Bound(%d) = %v", tt.idx, got)
		}
		if got := BackingFile(tt.idx); got != tt.backing {
			t.Errorf("BackingFile(%d) = %q, want %q", tt.idx, got, tt.backing)
		}
	}
}
