package devcgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestConfined (root, cgroup v2): a process started into a Confined cgroup
// opens the device it allows and no other, from its first instruction
// on; Close removes the cgroup. The same open outside it succeeds.
func TestConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (cgroups, BPF)")
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if _, err := unifiedMount(mi); err != nil {
		t.Skip("no cgroup v2 hierarchy")
	}
	cg, err := NewConfined([]Device{{Type: 'c', Major: 1, Minor: 3}}) // /dev/null
	if err != nil {
		t.Fatal(err)
	}
	opens := func(confined bool) string {
		cmd := exec.Command("sh", "-c", "for d in /dev/null /dev/zero; do if head -c 0 $d 2>/dev/null; then echo $d ok; else echo $d denied; fi; done")
		if confined {
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Dir.Fd())}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got, want := opens(true), "/dev/null ok\n/dev/zero denied"; got != want {
		t.Errorf("in the cgroup: %q, want %q", got, want)
	}
	if got, want := opens(false), "/dev/null ok\n/dev/zero ok"; got != want {
		t.Errorf("outside it: %q, want %q", got, want)
	}
	path := cg.path
	if err := cg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still there after Close (%v)", path, err)
	}
}

// TestRemoveStaleConfined (root, cgroup v2): an empty cgroup named for a
// process that is gone is removed; one named for a live process stays.
func TestRemoveStaleConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (cgroups)")
	}
	mi, own, err := readSelf()
	if err != nil {
		t.Fatal(err)
	}
	parent, err := ownDir(mi, own, unifiedMount, unifiedPath)
	if err != nil {
		t.Skip("no cgroup v2 hierarchy of this process:", err)
	}
	// A pid that is gone: a child that exited and was waited for.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(parent, ConfinedPrefix+strconv.Itoa(cmd.Process.Pid)+"-1")
	live := filepath.Join(parent, ConfinedPrefix+strconv.Itoa(os.Getpid())+"-999999")
	for _, d := range []string{dead, live} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(d) })
	}
	// And a v1 devices cgroup of kcreate's, where the host has one.
	if p1, err := ownDir(mi, own, devicesMount, devicesPath); err == nil {
		v1 := filepath.Join(p1, V1KcreatePrefix+strconv.Itoa(cmd.Process.Pid))
		if err := os.Mkdir(v1, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(v1) })
		dead = dead + " " + v1
	}
	if _, err := RemoveStaleConfined(); err != nil {
		t.Fatal(err)
	}
	for _, d := range strings.Fields(dead) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("the dead process's cgroup %s is still there (%v)", d, err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live process's cgroup was removed: %v", err)
	}
}
