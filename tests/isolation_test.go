package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// unboundHostLoop returns the index of an existing, unbound host loop
// device, creating none.
func unboundHostLoop(t *testing.T) int {
	t.Helper()
	devs, _ := filepath.Glob("/sys/devices/virtual/block/loop*")
	for _, d := range devs {
		if _, err := os.Stat(d + "/loop"); err == nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "loop")); err == nil {
			return n
		}
	}
	t.Skip("no unbound host loop device to test against")
	return -1
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
	var wg sync.WaitGroup
	res := map[string]result{}
	var mu sync.Mutex
	for _, p := range [][2]string{{"a", "b"}, {"b", "a"}} {
		wg.Add(1)
		go func(me, other string) {
			defer wg.Done()
			r := sandbox(t, dir, state, nil, script(me, other))
			mu.Lock()
			res[me] = r
			mu.Unlock()
		}(p[0], p[1])
	}
	// While both sandboxes wait: both devices are still bound to their
	// own images, and the host's device still exists.
	func() {
		defer os.WriteFile(filepath.Join(dir, "host.checked"), []byte("x\n"), 0o644)
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
	wg.Wait()
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
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	hostImg := image(t, dir, "host.img", 8<<20)
	done := make(chan result, 1)
	go func() {
		done <- sandbox(t, dir, state, nil, `d=$(losetup -f --show a.img) && losetup -d $d && echo $d > dev.tmp && mv dev.tmp dev; while [ ! -f host.done ]; do sleep 0.02; done`)
	}()
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
	os.WriteFile(filepath.Join(dir, "host.done"), []byte("x\n"), 0o644)
	if r := <-done; r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	if bound > 0 {
		t.Errorf("the host bound %s, a device of a live sandbox, %d times out of 20", dev, bound)
	}
}
