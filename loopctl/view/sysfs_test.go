package view

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// fakeSys makes a sysfs tree with loop devices idxs (size in sectors) and
// a host /proc/partitions, and points the package at them.
func fakeSys(t *testing.T, sizes map[int]string) {
	t.Helper()
	sys, proc := t.TempDir(), t.TempDir()
	for idx, size := range sizes {
		d := filepath.Join(sys, "devices/virtual/block/loop"+strconv.Itoa(idx))
		if err := os.MkdirAll(filepath.Join(d, "queue"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]string{"size": size, "dev": "7:" + strconv.Itoa(idx), "ro": "0", "diskseq": "42"} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(v+"\n"), 0o444); err != nil {
				t.Fatal(err)
			}
		}
	}
	host := "major minor  #blocks  name\n\n 254        0  268435456 vda\n   7        3      65536 loop3\n 259        0       1024 loop3p1\n"
	if err := os.WriteFile(filepath.Join(proc, "partitions"), []byte(host), 0o444); err != nil {
		t.Fatal(err)
	}
	oldSys, oldProc := linux.SysRoot, ProcRoot
	linux.SysRoot, ProcRoot = sys, proc
	t.Cleanup(func() { linux.SysRoot, ProcRoot = oldSys, oldProc })
}

// TestPartitionSysfs: AddPartition turns loopN's sysfs entry into a
// directory with the real attributes (as symlinks) and loopNpM in it, with
// the class and dev links leading there; RemovePartition of the last one
// makes loopN a symlink again; /proc/partitions follows, without the
// host's loop devices.
func TestPartitionSysfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a tmpfs of its own, device nodes")
	}
	fakeSys(t, map[int]string{7: "131072", 9: "40960"})
	v, err := New(100000, 100000)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v.Close() }()
	procPartitionsUsed.Store(true)
	root := "/proc/self/fd/" + strconv.Itoa(v.fd())
	link := func(p string) string {
		t.Helper()
		l, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return "error: " + err.Error()
		}
		return l
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	}
	if err := v.AddLoop(7); err != nil {
		t.Fatal(err)
	}
	if got := link(SysBlock + "/loop7"); got != "../devices/virtual/block/loop7" {
		t.Errorf("loop7 without partitions: %q", got)
	}
	if err := v.AddPartition(7, Part{Num: 2, Dev: 9, Start: 6144}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		SysBlock + "/loop7/size":              "/sys/devices/virtual/block/loop7/size",
		SysBlock + "/loop7/queue":             "/sys/devices/virtual/block/loop7/queue",
		SysBlock + "/loop7/loop7p2/size":      "/sys/devices/virtual/block/loop9/size",
		SysBlock + "/loop7/loop7p2/dev":       "/sys/devices/virtual/block/loop9/dev",
		SysBlock + "/loop7/loop7p2/subsystem": "/sys/class/block",
		SysClass + "/loop7":                   "../../block/loop7",
		SysDev + "/7:7":                       "../../block/loop7",
		SysClass + "/loop7p2":                 "../../block/loop7/loop7p2",
		SysDev + "/7:9":                       "../../block/loop7/loop7p2",
	} {
		if got := link(p); got != want {
			t.Errorf("%s -> %q, want %q", p, got, want)
		}
	}
	for p, want := range map[string]string{
		SysBlock + "/loop7/loop7p2/start":     "6144\n",
		SysBlock + "/loop7/loop7p2/partition": "2\n",
		SysBlock + "/loop7/loop7p2/uevent":    "MAJOR=7\nMINOR=9\nDEVNAME=loop7p2\nDEVTYPE=partition\nDISKSEQ=42\nPARTN=2\n",
		ProcPartitions: "major minor  #blocks  name\n\n 254        0  268435456 vda\n" +
			"   7        7      65536 loop7\n   7        9      20480 loop7p2\n",
	} {
		if got := read(p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, SysBlock, "loop7", "loop7p2", "start")); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("start: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(root, Dev, "loop7p2")); err != nil {
		t.Errorf("no /dev/loop7p2: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, Dev, "loop9")); err == nil {
		t.Errorf("/dev/loop9 is shown; it serves a partition")
	}

	v.RemovePartition(7, Part{Num: 2, Dev: 9, Start: 6144})
	if got := link(SysBlock + "/loop7"); got != "../devices/virtual/block/loop7" {
		t.Errorf("loop7 after its last partition: %q", got)
	}
	for _, p := range []string{SysClass + "/loop7p2", SysDev + "/7:9", Dev + "/loop7p2"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if got := read(ProcPartitions); strings.Contains(got, "loop7p2") {
		t.Errorf("/proc/partitions after the partition went:\n%s", got)
	}
	ents, err := os.ReadDir(filepath.Join(root, SysBlock))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary entry %s left in %s", e.Name(), SysBlock)
		}
	}

	// A device removed with its partitions takes everything with it.
	if err := v.AddPartition(7, Part{Num: 1, Dev: 9, Start: 2048}); err != nil {
		t.Fatal(err)
	}
	v.RemoveLoop(7)
	for _, p := range []string{SysBlock + "/loop7", SysClass + "/loop7", SysClass + "/loop7p1", SysDev + "/7:7", SysDev + "/7:9", Dev + "/loop7p1"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s left behind after RemoveLoop", p)
		}
	}
	if got := read(ProcPartitions); strings.Contains(got, "loop") {
		t.Errorf("/proc/partitions after RemoveLoop:\n%s", got)
	}
}
