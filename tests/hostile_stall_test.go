package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
// whose reads never return (losetup -P makes loopvisor read the partition
// table; mount makes it read the superblock). Sandbox B, on the same state
// directory, and `loopvisor gc` keep answering.
func TestAttack7StallRun(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state := stateDir(t)
	dirA, dirB := workDir(t), workDir(t)
	image(t, dirB, "b.img", 8<<20)
	supA := exec.Command(loopvisor, "run", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--",
		"sh", "-c", fmt.Sprintf(`mkdir -p f m
%s file f 67108864 || exit 1
d=$(losetup -P -f --show f/img) || exit 1
echo "$d" > dev
echo ready > ready
mount -t ext4 "$d" m &
exec sleep 1000`, filepath.Join(binDir, "fusehang")))
	supA.Dir = dirA
	supA.Env = append(os.Environ(), "PATH="+binDir+":/usr/sbin:/usr/bin:/sbin:/bin")
	var logA strings.Builder
	supA.Stdout, supA.Stderr = &logA, &logA
	if err := supA.Start(); err != nil {
		t.Fatal(err)
	}
	// A's exit status after SIGTERM is not what the test checks, and
	// Signal and Kill fail only once A has ended.
	waitA := make(chan struct{})
	go func() { _ = supA.Wait(); close(waitA) }()
	defer func() {
		_ = supA.Process.Signal(syscall.SIGTERM)
		select {
		case <-waitA:
		case <-time.After(20 * time.Second):
			_ = supA.Process.Kill()
			<-waitA
			t.Errorf("sandbox A did not end after SIGTERM:\n%s", logA.String())
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dirA, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox A did not attach its FUSE-backed file:\n%s", logA.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // A's partition scan and superblock check are stuck

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
}
