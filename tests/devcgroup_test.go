package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/internal/devcgroup"
)

// cgroup2Root returns where the cgroup v2 hierarchy is mounted (on hybrid
// hosts /sys/fs/cgroup/unified), or "" if it is not.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	check(t, err)
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		for i, x := range f {
			if x == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && f[3] == "/" {
				return f[4]
			}
		}
	}
	return ""
}

// TestDeviceCgroupV2: the agent's cgroup v2 grant, against a runtime-like
// device program (allows c 1:3 only, attached with BPF_F_ALLOW_MULTI as
// runc does) on a cgroup of the test's own in the v2 hierarchy (the kernel
// runs v2 device programs on hybrid hosts too). A process in that cgroup:
// /dev/loop-control is denied; after Grant it opens and the runtime's rules
// still decide the rest (/dev/null allowed, /dev/zero denied); after Revoke
// it is denied again; Grant again, then Close puts the runtime's program
// back (denied again, /dev/null still allowed).
func TestDeviceCgroupV2(t *testing.T) {
	needRoot(t)
	root := cgroup2Root(t)
	if root == "" {
		t.Fatal("no cgroup v2 hierarchy mounted")
	}
	cg := filepath.Join(root, fmt.Sprintf("loopvisor-test-v2-%d", os.Getpid()))
	check(t, os.Mkdir(cg, 0o755))
	t.Cleanup(func() {
		if err := syscall.Rmdir(cg); err != nil && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("cgroup %s left behind: %v", cg, err)
		}
	})
	detach, err := devcgroup.AttachFilter(cg, []devcgroup.Device{{Type: 'c', Major: 1, Minor: 3}})
	check(t, err)
	// Detaching fails once Close has put the program back and the test
	// ended early; the cgroup's removal drops it anyway.
	t.Cleanup(func() { _ = detach() })

	// The container's init: a process in the cgroup.
	sleeper := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec sleep 300`, "sh", cg)
	check(t, sleeper.Start())
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sleeper.Process.Pid))
		if strings.Contains(string(b), "0::/"+filepath.Base(cg)+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process did not enter %s:\n%s", cg, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// probe opens path O_RDWR from a new process in the cgroup.
	probe := func(path string) string {
		t.Helper()
		r := run(t, "/", "sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" open "$3"`, "sh", cg, filepath.Join(binDir, "loopctl"), path)
		out := strings.TrimSpace(r.Stdout)
		if strings.HasPrefix(out, "OK ") {
			return "OK"
		}
		return out
	}
	expect := func(when string, want map[string]string) {
		t.Helper()
		for path, w := range want {
			if got := probe(path); got != w {
				t.Errorf("%s: open %s: %q, want %q", when, path, got, w)
			}
		}
	}
	ctl := devcgroup.Device{Type: 'c', Major: 10, Minor: 237}
	expect("runtime's program only", map[string]string{"/dev/loop-control": "ERR EPERM", "/dev/null": "OK", "/dev/zero": "ERR EPERM"})

	alive := func() bool { return sleeper.Process.Signal(syscall.Signal(0)) == nil }
	c, err := devcgroup.Open(sleeper.Process.Pid, alive)
	check(t, err)
	if !strings.Contains(c.Path, "v2:/"+filepath.Base(cg)) {
		t.Errorf("Open found %q, want the v2 cgroup %s", c.Path, cg)
	}
	if wrote, err := c.Grant(ctl); err != nil || !wrote {
		t.Fatalf("Grant: %v %v", wrote, err)
	}
	expect("granted", map[string]string{"/dev/loop-control": "OK", "/dev/null": "OK", "/dev/zero": "ERR EPERM"})
	if wrote, err := c.Revoke(ctl); err != nil || !wrote {
		t.Errorf("Revoke: %v %v", wrote, err)
	}
	expect("revoked", map[string]string{"/dev/loop-control": "ERR EPERM", "/dev/null": "OK"})
	if _, err := c.Grant(ctl); err != nil {
		t.Fatal(err)
	}
	expect("granted again", map[string]string{"/dev/loop-control": "OK"})
	check(t, c.Close())
	expect("closed", map[string]string{"/dev/loop-control": "ERR EPERM", "/dev/null": "OK", "/dev/zero": "ERR EPERM"})
	// The runtime's own program is attached again: it detaches.
	if err := detach(); err != nil {
		t.Errorf("the runtime's program should be back in place: %v", err)
	}
	expect("no program", map[string]string{"/dev/loop-control": "OK"})
}
