package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestKilledSupervisorRevokes: a supervisor killed with SIGKILL revokes
// none of its nodes itself. A reference to the sandbox's /dev/loopN that
// the sandbox passed to a process outside it (same host uid) survived, and
// after gc released the device it reopened whatever the index was then: a
// device the kernel made again on open (autoload), or the next tenant's.
// Now gc revokes every node of the dead instance before any of its devices
// leaves, so the kept reference opens nothing.
func TestKilledSupervisorRevokes(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	before := map[string]bool{}
	if ents, err := os.ReadDir("/sys/devices/virtual/block"); err == nil {
		for _, e := range ents {
			before[e.Name()] = true
		}
	}
	// Runs before hostGuard's check: a device the kernel re-created for
	// the stale reference (on the code before the fix) goes.
	t.Cleanup(func() {
		ents, _ := os.ReadDir("/sys/devices/virtual/block")
		for _, e := range ents {
			idx, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "loop"))
			if before[e.Name()] || err != nil || !strings.HasPrefix(e.Name(), "loop") {
				continue
			}
			ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
			if err != nil {
				continue
			}
			_, _, _ = unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx))
			_ = ctl.Close()
		}
	})
	state := stateDir(t)
	dir := workDir(t)
	image(t, dir, "a.img", 8<<20)
	sup := sandboxCmd(dir, state, `d=$(losetup -f --show a.img) || exit 1
echo "$d" > dev
exec sleep 1000`)
	var logS strings.Builder
	sup.Stdout, sup.Stderr = &logS, &logS
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = sup.Wait(); close(waited) }()
	defer func() {
		_ = sup.Process.Kill()
		<-waited
	}()
	var dev string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "dev")); err == nil && strings.HasPrefix(string(b), "/dev/loop") {
			dev = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox did not attach:\n%s", logS.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The sandbox's node, as a process it passed it to would hold it.
	var node *os.File
	for _, p := range pidsNamed("sleep") {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p)); l != dir {
			continue
		}
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/root%s", p, dev), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == nil {
			node = f
		}
	}
	if node == nil {
		t.Fatal("sandbox's node not found")
	}
	defer func() { _ = node.Close() }()
	reopen := func() string {
		cmd := exec.Command("setpriv", "--reuid", strconv.Itoa(SandboxUID), "--regid", strconv.Itoa(SandboxUID),
			"--clear-groups", "sh", "-c", `if head -c1 /proc/self/fd/3 >/dev/null 2>&1; then echo reopen-ok; else echo reopen-refused; fi`)
		cmd.ExtraFiles = []*os.File{node}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if live := reopen(); !strings.Contains(live, "reopen-ok") {
		t.Fatalf("control: the sandbox's uid could not open its node while the sandbox ran (the test cannot tell): %s", live)
	}
	check(t, sup.Process.Signal(syscall.SIGKILL))
	<-waited
	r := run(t, "/", loopvisor, "gc", "--state-dir", state, "--wait", "10s", "--log-level", "info")
	t.Logf("gc:\n%s%s", r.Stdout, r.Stderr)
	if after := reopen(); !strings.Contains(after, "reopen-refused") {
		t.Errorf("a reference to %s kept outside the sandbox opened again after its supervisor was killed and gc ran: %s", dev, after)
	}
}
