package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestControlFDPassedOut: the sandbox opens its /dev/loop-control and
// passes the fd (SCM_RIGHTS) to a process outside any filter: another
// container run without loopvisor, with another uid. Before the fix the
// node was the real loop-control (10:237), and the kernel's
// loop_control_ioctl checks no capability: the outside process created a
// host loop device, outside every instance, journal and limit. Now the
// node opens nothing of the loop driver; only the supervisor gives it the
// meaning of loop-control, for the sandbox's own trapped calls.
func TestControlFDPassedOut(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	idx := 200
	for ; ; idx++ {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", idx)); os.IsNotExist(err) {
			break
		}
	}
	// Runs before hostGuard's check: a device the attack made goes.
	t.Cleanup(func() {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", idx)); err != nil {
			return
		}
		ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer func() { _ = ctl.Close() }()
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx)); e != 0 {
			t.Errorf("cleanup: remove loop%d: %v", idx, e)
		}
	})
	dir := workDir(t)
	shared := filepath.Join(dir, "shared")
	check(t, os.Mkdir(shared, 0o777))
	check(t, os.Chmod(shared, 0o777))
	sock := filepath.Join(shared, "sock")
	fdpass := filepath.Join(binDir, "fdpass")
	// The outside process: a container without loopvisor (no filter),
	// root mapped to another unprivileged uid.
	recv := make(chan outcome, 1)
	recvState := stateDir(t)
	go func() {
		r, err := command(dir, loopvisor, "run", "--bare", "--state-dir", recvState, "--uid-map", "200000:65536",
			"--", fdpass, "recv", sock, "add", strconv.Itoa(idx))
		recv <- outcome{r, err}
	}()
	waitFileWithin(t, sock, 30*time.Second) // the outside process listens
	r := sandbox(t, dir, stateDir(t), nil, fdpass+" send "+sock+" /dev/loop-control")
	if r.Code != 0 || !strings.Contains(r.Stdout, "sent") {
		t.Fatalf("sandbox could not pass its loop-control fd:\n%s", r)
	}
	o := <-recv
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("outside process:\n%s", o.r.Stdout)
	if strings.Contains(o.r.Stdout, "OK ") {
		t.Errorf("a process outside the filter created host loop%d with the sandbox's loop-control fd:\n%s", idx, o.r)
	}
	if !strings.Contains(o.r.Stdout, "rdev ") {
		t.Errorf("the outside process got no fd:\n%s", o.r)
	}
	if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", idx)); err == nil {
		t.Errorf("host loop%d exists", idx)
	}
	// The sandbox's own tools still work through the node.
	out := sandboxOK(t, dir, stateDir(t), nil, `set -e
truncate -s 8M img
d=$(losetup -f --show img)
test -c /dev/loop-control && echo is-char
losetup -d $d
echo done`)
	if !strings.Contains(out, "is-char") || !strings.Contains(out, "done") {
		t.Errorf("losetup through the node:\n%s", out)
	}
}
