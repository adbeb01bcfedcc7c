package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// Attack 7 of the confinement issue: one container stalls all. A container
// makes loopvisor touch a FUSE mount it serves and never answers; every
// other container's loop calls, `loopvisor gc` and `loopvisor status` must
// still answer within 2 s (a liveness bound the issue sets, not a speed
// target).

const stallBound = 2 * time.Second

// within runs name args and fails t if it does not finish within d.
func within(t *testing.T, d time.Duration, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("%s %s did not answer within %v (stalled by another container)", name, strings.Join(args, " "), d)
	} else if err != nil {
		t.Logf("%s %s: %v (%v)\n%s", name, strings.Join(args, " "), err, time.Since(start), out)
	}
}

// TestAttack7StallAgent: container A mounts a FUSE file system that never
// answers over its own /dev, then asks for a loop device: loopvisor must
// publish /dev/loopN there. Before the fix that blocked for ever while the
// state-dir lock and the agent's locks were held, and every other
// container, gc and status hung until A was killed.
func TestAttack7StallAgent(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		lc := filepath.Join(binDir, "loopctl")
		fh := filepath.Join(binDir, "fusehang")
		ba := ociBundle(t, a, "sh", "-c", fmt.Sprintf(`set -e
: > /tmp/lc
mount --bind /dev/loop-control /tmp/lc
%s hang /dev
echo hung
LOOPCTL_CONTROL=/tmp/lc %s getfree
echo getfree-returned
sleep 1000`, fh, lc))
		ca, err := rt.Start(ba)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			removeContainer(t, ca)
			waitGone(t, a)
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _ := ca.Output()
			if strings.Contains(out, "hung") {
				break
			}
			if time.Now().After(deadline) {
				o, e := ca.Output()
				t.Fatalf("container A did not mount its FUSE /dev:\n%s\n%s", o, e)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // A's GET_FREE is now stuck publishing its node

		bb := ociBundle(t, a, "sh", "-c", `set -e
cd /tmp
truncate -s 8M b.img
for i in 1 2 3 4 5; do d=$(losetup -f --show b.img); losetup -d $d; done
echo b-done`)
		done := make(chan error, 1)
		var res oci.Result
		go func() {
			var err error
			res, err = rt.Run(bb, nil)
			done <- err
		}()
		within(t, stallBound, loopvisor, "status", "--socket", a.socket)
		within(t, stallBound, loopvisor, "gc", "--state-dir", a.state, "--wait", "0s")
		select {
		case err := <-done:
			if err != nil || res.Code != 0 || !strings.Contains(res.Stdout, "b-done") {
				t.Errorf("container B: %v\n%s", err, res)
			}
		case <-time.After(5 * 5 * stallBound):
			t.Errorf("container B's losetup stalled behind container A")
			killContainer(t, ca)
			t.Logf("container B after A was killed: %v", <-done)
		}
	})
}

// TestAttack7StallRun: sandbox A attaches a file on a FUSE mount it serves
// whose size query (GETATTR) is never answered: LOOP_CONFIGURE asks for the
// backing file's size, and loopvisor asks it as the caller (the driver's
// getattr runs as the calling task; a FUSE file system the container
// serves refuses host root), so A's call waits for A's own server, in D
// state once the server has read the request, as it would on the host.
// Sandbox B, on the same state directory, and `loopvisor gc` keep
// answering. (The loop driver's reads of such a file never reach the
// server: the kernel's loop worker is not in the server's user namespace
// and FUSE refuses it, so partition scans and superblock checks get EIO
// at once.)
func TestAttack7StallRun(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state := stateDir(t)
	dirA, dirB := workDir(t), workDir(t)
	image(t, dirB, "b.img", 8<<20)
	lc := filepath.Join(binDir, "loopctl")
	supA := sandboxCmd(dirA, state, fmt.Sprintf(`mkdir -p f
%s attrhang f 67108864 || exit 1
r=$(%[2]s getfree)
case "$r" in "OK "*) ;; *) echo "getfree: $r"; exit 1;; esac
echo ready > ready
%[2]s configure /dev/loop${r#OK } f/img > configured
exec sleep 1000`, filepath.Join(binDir, "fusehang"), lc))
	var logA strings.Builder
	supA.Stdout, supA.Stderr = &logA, &logA
	if err := supA.Start(); err != nil {
		t.Fatal(err)
	}
	// A's exit status after SIGTERM is not what the test checks.
	defer func() {
		if !terminate(supA, 20*time.Second) {
			t.Errorf("sandbox A did not end after SIGTERM:\n%s", logA.String())
		}
	}()
	// A's server has read the size query and will never answer it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dirA, "getattr-pending")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox A's LOOP_CONFIGURE never asked its FUSE server for the size:\n%s", logA.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	done := sandboxAsync(dirB, state, nil, `set -e
for i in 1 2 3 4 5; do d=$(losetup -f --show b.img); losetup -d $d; done
echo b-done`)
	within(t, stallBound, loopvisor, "gc", "--state-dir", state, "--wait", "0s")
	select {
	case o := <-done:
		if o.err != nil || o.r.Code != 0 || !strings.Contains(o.r.Stdout, "b-done") {
			t.Errorf("sandbox B: %v\n%s", o.err, o.r)
		}
	case <-time.After(5 * 5 * stallBound):
		t.Errorf("sandbox B's losetup stalled behind sandbox A")
		_ = supA.Process.Kill()
		<-done
	}
	// A was stalled all along: its call has not returned.
	if b, err := os.ReadFile(filepath.Join(dirA, "configured")); err == nil && len(b) > 0 {
		t.Errorf("sandbox A's LOOP_CONFIGURE returned (%q): the test did not stall it", b)
	}
}

// TestFUSEBackedSize: a loop device over a file on a FUSE mount the
// sandbox serves has the file's size. Before the fix it had size 0: the
// loop driver asks the backing file's getattr for the size as the task
// that issues LOOP_CONFIGURE, which was the supervisor (host root), and
// FUSE answers only tasks of the server's user namespace. Offset,
// sizelimit and LOOP_SET_CAPACITY take the size the same way.
func TestFUSEBackedSize(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	script := fmt.Sprintf(`set -e
mkdir -p f
%s file f 67108864
stat -c "file %%s" f/img
d=$(losetup -f --show f/img)
echo "device $(blockdev --getsize64 $d)"
losetup -c $d
echo "capacity $(blockdev --getsize64 $d)"
losetup -d $d
d=$(losetup -f --show -o 1048576 f/img)
echo "offset $(blockdev --getsize64 $d)"
losetup -d $d
umount f`, filepath.Join(binDir, "fusehang"))
	bareFails(t, dir, stateDir(t), script)
	out := sandboxOK(t, dir, stateDir(t), nil, script)
	for _, want := range []string{"file 67108864", "device 67108864", "capacity 67108864", "offset 66060288"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q:\n%s", want, out)
		}
	}
}
