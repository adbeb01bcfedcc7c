package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unboundHostLoop creates an unbound host loop device (LOOP_CTL_ADD, the
// kernel picks the index) for the test to attack, and removes it when the
// test ends: the test must not depend on the host having a spare one.
func unboundHostLoop(t *testing.T) int {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The ioctls are done; nothing depends on the close.
	defer func() { _ = ctl.Close() }()
	// LOOP_CTL_ADD takes the index as an int: -1 asks for any free one.
	r, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(^uint(0)))
	if e != 0 {
		t.Fatalf("LOOP_CTL_ADD: %v", e)
	}
	idx := int(r)
	t.Cleanup(func() { removeHostLoop(t, idx) })
	return idx
}

// removeHostLoop removes host loop device idx, created by the test.
func removeHostLoop(t *testing.T, idx int) {
	t.Helper()
	if err := loopCtlRemove(idx); err != nil {
		t.Errorf("cannot remove loop%d, created by the test: %v", idx, err)
	}
}

// loopCtlRemove removes host loop device idx (LOOP_CTL_REMOVE), retrying
// for three seconds while something (udev's probe) still holds it open.
// The error is the one that ended the tries: unix.ENODEV for an index
// with no device.
func loopCtlRemove(idx int) error {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() { _ = ctl.Close() }() // only ioctls went through it
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx))
		if e == 0 {
			return nil
		}
		if (e != unix.EBUSY && e != unix.EINTR) || time.Now().After(deadline) {
			return e
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFile(t *testing.T, p string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", p)
	return ""
}

// TestIsolation runs two sandboxes at once. Neither can see, open, remove,
// re-add or configure the other's devices or the host's, also with the
// high bits of the ioctl cmd set; both devices stay bound throughout.
func TestIsolation(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state := stateDir(t)
	dir := workDir(t)
	image(t, dir, "a.img", 16<<20)
	image(t, dir, "b.img", 16<<20)
	hostIdx := unboundHostLoop(t)
	script := func(me, other string) string {
		return fmt.Sprintf(`set -u
d=$(losetup -f --show %[1]s.img) || exit 1
echo ${d#/dev/loop} > %[1]s.idx.tmp; mv %[1]s.idx.tmp %[1]s.idx
while [ ! -f %[2]s.idx ]; do sleep 0.02; done
o=$(cat %[2]s.idx)
echo "open $(loopctl open /dev/loop$o)"
echo "remove $(loopctl remove $o)"
echo "remove64 $(loopctl remove64 $o)"
echo "add $(loopctl add $o)"
echo "add64 $(loopctl add64 $o)"
echo "hostremove $(loopctl remove %[3]d)"
echo "hostremove64 $(loopctl remove64 %[3]d)"
echo "hostopen $(loopctl open /dev/loop%[3]d)"
echo "attach $(losetup /dev/loop$o %[1]s.img 2>&1 >/dev/null | grep -c 'failed\|No such' )"
g=$(loopctl getfree); echo "getfree-other $([ "$g" = "OK $o" ] && echo yes || echo no)"
echo "seen $(losetup -a | grep -c "loop$o:") $(ls /sys/block | grep -cx "loop$o")"
echo done > %[1]s.done
while [ ! -f host.checked ]; do sleep 0.02; done
losetup -d $d
`, me, other, hostIdx)
	}
	done := map[string]<-chan outcome{
		"a": sandboxAsync(dir, state, nil, script("a", "b")),
		"b": sandboxAsync(dir, state, nil, script("b", "a")),
	}
	// While both sandboxes wait: both devices are still bound to their
	// own images, and the host's device still exists.
	func() {
		// Releases both sandboxes; if it fails they time out in
		// sandboxCommand and the test fails there.
		defer func() {
			if err := os.WriteFile(filepath.Join(dir, "host.checked"), []byte("x\n"), 0o644); err != nil {
				t.Error(err)
			}
		}()
		waitFile(t, filepath.Join(dir, "a.done"), time.Minute)
		waitFile(t, filepath.Join(dir, "b.done"), time.Minute)
		for _, me := range []string{"a", "b"} {
			idx := waitFile(t, filepath.Join(dir, me+".idx"), time.Second)
			b, err := os.ReadFile("/sys/block/loop" + idx + "/loop/backing_file")
			if err != nil || strings.TrimSpace(string(b)) != filepath.Join(dir, me+".img") {
				t.Errorf("loop%s of sandbox %s is no longer bound to %s.img: %q %v", idx, me, me, b, err)
			}
		}
		if _, err := os.Stat(fmt.Sprintf("/sys/devices/virtual/block/loop%d", hostIdx)); err != nil {
			t.Errorf("the host's loop%d was removed from inside a sandbox", hostIdx)
		}
	}()
	res := map[string]result{}
	for me, c := range done {
		o := <-c
		if o.err != nil {
			t.Fatalf("sandbox %s: %v", me, o.err)
		}
		res[me] = o.r
	}
	want := []string{
		"open ERR ENOENT", "remove ERR ENODEV", "remove64 ERR ENODEV", "add ERR EEXIST",
		"add64 ERR EEXIST", "hostremove ERR ENODEV", "hostremove64 ERR ENODEV",
		"hostopen ERR ENOENT", "attach 1", "getfree-other no", "seen 0 0",
	}
	for me, r := range res {
		if r.Code != 0 {
			t.Fatalf("sandbox %s failed:\n%s", me, r)
		}
		for _, w := range want {
			if !strings.Contains(r.Stdout, w+"\n") {
				t.Errorf("sandbox %s: want %q in\n%s", me, w, r.Stdout)
			}
		}
	}
}

// TestHostCannotBindFreedDevice: when a sandbox detaches a device
// (deferred to its last close), loopvisor claims it again (on the kernel's
// uevent, else at the next 50 ms watcher tick), so the host's losetup cannot
// bind a device whose node is in the sandbox. Host tools are far slower
// than either path, so this checks the claim, not the uevent's latency.
func TestHostCannotBindFreedDevice(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	hostImg := image(t, dir, "host.img", 8<<20)
	done := sandboxAsync(dir, state, nil, `d=$(losetup -f --show a.img) && losetup -d $d && echo $d > dev.tmp && mv dev.tmp dev; while [ ! -f host.done ]; do sleep 0.02; done`)
	dev := waitFile(t, filepath.Join(dir, "dev"), time.Minute)
	bound := 0
	for i := 0; i < 20; i++ {
		r := run(t, dir, "losetup", dev, hostImg)
		if r.Code == 0 {
			bound++
			run(t, dir, "losetup", "-d", dev)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(dir, "host.done"), []byte("x\n"), 0o644); err != nil {
		t.Error(err) // the sandbox then times out in sandboxCommand
	}
	if o := <-done; o.err != nil {
		t.Fatalf("sandbox: %v", o.err)
	} else if o.r.Code != 0 {
		t.Fatalf("sandbox:\n%s", o.r)
	}
	if bound > 0 {
		t.Errorf("the host bound %s, a device of a live sandbox, %d times out of 20", dev, bound)
	}
}
