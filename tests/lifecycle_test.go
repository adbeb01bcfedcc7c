package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLimitPerInstance: beyond --max-loop the sandbox gets ENOSPC, as
// loopfs gave.
func TestLimitPerInstance(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	for _, n := range []string{"a", "b", "c"} {
		image(t, dir, n+".img", 8<<20)
	}
	out := sandboxOK(t, dir, state, []string{"--max-loop", "2"}, `
losetup -f --show a.img >/dev/null && echo a-ok
losetup -f --show b.img >/dev/null && echo b-ok
echo "third $(loopctl getfree)"
losetup -f --show c.img >/dev/null 2>&1 || echo c-refused
losetup -D; echo "after-detach $(loopctl getfree | cut -c1-2)"`)
	for _, w := range []string{"a-ok", "b-ok", "third ERR ENOSPC", "c-refused", "after-detach OK"} {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("want %q in\n%s", w, out)
		}
	}
}

// TestLimitPerUID: the per-host-uid limit spans sandboxes, so one user
// cannot exhaust the host by starting many; another uid is not affected.
func TestLimitPerUID(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	image(t, dir, "b.img", 8<<20)
	flags := []string{"--max-loop-per-uid", "3"}
	held := sandboxAsync(dir, state, flags, `losetup -f --show a.img >/dev/null && losetup -f --show b.img >/dev/null && echo ok > held
while [ ! -f release ]; do sleep 0.02; done; losetup -D`)
	var holder outcome
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		if err := os.WriteFile(filepath.Join(dir, "release"), []byte("x\n"), 0o644); err != nil {
			t.Error(err) // the holder then times out in sandboxCommand
		}
		holder = <-held
	}
	defer release()
	waitFile(t, filepath.Join(dir, "held"), time.Minute)
	out := sandboxOK(t, dir, state, flags, `losetup -f --show a.img >/dev/null && echo "first OK"; echo "second $(loopctl getfree)"; echo "add $(loopctl add -1)"; losetup -D`)
	if !strings.Contains(out, "first OK\n") || !strings.Contains(out, "second ERR ENOSPC\n") || !strings.Contains(out, "add ERR ENOSPC\n") {
		t.Errorf("same uid: want one more device, then ENOSPC:\n%s", out)
	}
	// A sandbox of another host uid has its own budget.
	r := run(t, dir, loopvisor, "run", "--state-dir", state, "--uid-map", "300000:65536", "--max-loop-per-uid", "3",
		"--", "sh", "-c", `loopctl getfree | cut -c1-2`)
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "OK" {
		t.Errorf("another uid should not be limited:\n%s", r)
	}
	release()
	if holder.err != nil || holder.r.Code != 0 {
		t.Errorf("holder sandbox failed: %v\n%s", holder.err, holder.r)
	}
}

// TestCleanupOnExit: a sandbox that exits with devices bound (one held
// open by a process that dies with it, one with autoclear, one merely
// allocated) leaves nothing behind by the time run returns.
func TestCleanupOnExit(t *testing.T) {
	needRoot(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	image(t, dir, "b.img", 8<<20)
	before := snapshot()
	r := sandbox(t, dir, state, nil, `set -e
a=$(losetup -f --show a.img)
b=$(losetup -f --show b.img)
losetup -f >/dev/null
loopctl hold "$a" 1000 &
sleep 0.2
losetup -a | wc -l`)
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "2" {
		t.Fatalf("sandbox:\n%s", r)
	}
	// No waiting: run returns only after the release.
	if after := snapshot(); after != before {
		t.Fatalf("devices left behind when run returned\n--- before\n%s\n--- after\n%s", before, after)
	}
	if js, _ := filepath.Glob(filepath.Join(state, "instances", "*.json")); len(js) != 0 {
		t.Errorf("journals left behind: %v", js)
	}
}

// startHeld starts a sandbox in the background that attaches img and waits;
// it returns once the device is bound, with the supervisor's process.
func startHeld(t *testing.T, dir, state, img string) (*exec.Cmd, string) {
	t.Helper()
	check(t, removeIfExists(filepath.Join(dir, "dev")))
	cmd := sandboxCmd(dir, state, "losetup -f --show "+img+" > dev.tmp && mv dev.tmp dev; sleep 1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dev := waitFile(t, filepath.Join(dir, "dev"), time.Minute)
	return cmd, dev
}

func bound(dev string) bool {
	_, err := os.Stat("/sys/block/" + filepath.Base(dev) + "/loop")
	return err == nil
}

// TestKillAndGC: after kill -9 of the supervisor the sandbox dies but its
// device stays bound; `loopvisor gc` releases it, but never while the
// device is mounted on the host; and a new `run` with the same state dir
// does the same.
func TestKillAndGC(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	img := image(t, dir, "fs.img", 32<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	check(t, os.Chown(img, SandboxUID, SandboxUID))

	cmd, dev := startHeld(t, dir, state, "fs.img")
	check(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait() // "signal: killed", as intended
	time.Sleep(100 * time.Millisecond)
	if !bound(dev) {
		t.Fatalf("%s was released without gc: the test cannot tell whether gc works", dev)
	}
	js, _ := filepath.Glob(filepath.Join(state, "instances", "*.json"))
	if len(js) != 1 {
		t.Fatalf("want one journal of the dead supervisor, got %v", js)
	}

	// Mounted on the host: gc must leave it alone.
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("host mount: %v %s", err, out)
	}
	r := run(t, dir, loopvisor, "gc", "--state-dir", state)
	check(t, exec.Command("umount", mnt).Run())
	if r.Code == 0 || !bound(dev) || !strings.Contains(r.Stdout, "1 still in use") {
		t.Fatalf("gc detached a device mounted on the host:\n%s", r)
	}
	r = run(t, dir, loopvisor, "gc", "--state-dir", state, "--log-level", "info")
	if r.Code != 0 || !strings.Contains(r.Stdout, "released 1") || bound(dev) {
		t.Fatalf("gc did not release %s:\n%s", dev, r)
	}
	if js, _ := filepath.Glob(filepath.Join(state, "instances", "*.json")); len(js) != 0 {
		t.Errorf("journal left after gc: %v", js)
	}

	// The next run with the same state dir cleans up too.
	cmd, dev = startHeld(t, dir, state, "fs.img")
	check(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait() // "signal: killed", as intended
	time.Sleep(100 * time.Millisecond)
	if !bound(dev) {
		t.Fatalf("%s released without gc", dev)
	}
	r = sandbox(t, dir, state, nil, "true")
	if r.Code != 0 || bound(dev) || !strings.Contains(r.Stderr, "gc: released") {
		t.Fatalf("a new run did not release the dead supervisor's %s:\n%s", dev, r)
	}
}
