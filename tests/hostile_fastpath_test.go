package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// TestAttackControlFDToOtherSandbox: sandbox A takes a free device
// (losetup -f: its instance now holds one, the answer the trapped-call
// fast path gives without a notification ID check) and passes its
// loop-control fd (SCM_RIGHTS) to sandbox B, another `loopvisor run` with
// another uid and its own supervisor. B issues LOOP_CTL_GET_FREE on it
// twice (the second could be recognised by a file cache). B must get no
// answer about A's instance (A's free device) and must not change it: A's
// next losetup -f still names the same device. Without loopvisor neither
// sandbox can attach a loop device at all.
func TestAttackControlFDToOtherSandbox(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	if r := bare(t, dir, stateDir(t), "truncate -s 1M bare.img && losetup -f --show bare.img"); r.Code == 0 {
		t.Fatalf("losetup attaches without loopvisor; the test shows nothing:\n%s", r)
	}
	shared := filepath.Join(dir, "shared")
	check(t, os.Mkdir(shared, 0o777))
	check(t, os.Chmod(shared, 0o777))
	sock := filepath.Join(shared, "sock")
	done := filepath.Join(shared, "b_done")
	fdpass := filepath.Join(binDir, "fdpass")
	recv := make(chan outcome, 1)
	bState := stateDir(t)
	go func() {
		r, err := command(dir, loopvisor, "run", "--state-dir", bState, "--uid-map", "200000:65536", "--log-level", "info",
			"--", "sh", "-c", fdpass+" recv "+sock+" getfree 0; touch "+done)
		recv <- outcome{r, err}
	}()
	waitFileWithin(t, sock, 30*time.Second) // sandbox B listens
	a := sandbox(t, dir, stateDir(t), nil, `set -e
echo "A-free $(losetup -f)"
`+fdpass+` send `+sock+` /dev/loop-control
i=0
while [ ! -e `+done+` ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "A-free-after $(losetup -f)"
`)
	o := <-recv
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("sandbox A:\n%s\nsandbox B:\n%s", a, o.r)
	if a.Code != 0 || !strings.Contains(a.Stdout, "sent") {
		t.Fatalf("sandbox A could not pass its loop-control fd:\n%s", a)
	}
	m := regexp.MustCompile(`A-free /dev/loop(\d+)\n`).FindStringSubmatch(a.Stdout)
	if m == nil {
		t.Fatalf("sandbox A got no free device:\n%s", a)
	}
	if !strings.Contains(o.r.Stdout, "rdev ") || strings.Count(o.r.Stdout, "\nOK ")+strings.Count(o.r.Stdout, "\nERR ") != 2 {
		t.Fatalf("sandbox B got no fd or issued no calls:\n%s", o.r)
	}
	if strings.Contains(o.r.Stdout, "OK "+m[1]+"\n") {
		t.Errorf("sandbox B got sandbox A's free device loop%s through A's loop-control fd", m[1])
	}
	if !strings.Contains(a.Stdout, "A-free-after /dev/loop"+m[1]+"\n") {
		t.Errorf("sandbox A's instance changed while B used its loop-control fd:\n%s", a.Stdout)
	}
}

// TestAttackFileCacheBound: a sandbox opens 100 descriptors of its
// /dev/loop-control and has 8 threads issue LOOP_CTL_GET_FREE on every one
// (800 thread/descriptor pairs, each a key of the supervisor's kcmp file
// cache). The supervisor may keep at most maxCachedFiles (64) references
// to them, plus a pidfd per calling thread; a cache without a bound would
// hold one file per pair for as long as the sandbox keeps calling. The
// count is read while the sandbox waits, before it closes anything. The
// same calls fail without loopvisor (no loop-control node to open).
func TestAttackFileCacheBound(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	check(t, os.Chmod(dir, 0o777))
	const fds, threads, kept = 100, 8, 64
	probe := filepath.Join(binDir, "ctlflood") + " " + strconv.Itoa(fds) + " " + strconv.Itoa(threads)
	if r := bare(t, dir, stateDir(t), probe); r.Code == 0 {
		t.Fatalf("ctlflood ran without loopvisor; the test shows nothing:\n%s", r)
	}
	cmd := sandboxCmd(dir, stateDir(t), "cd "+dir+" && "+probe)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	check(t, cmd.Start())
	ended := false
	t.Cleanup(func() {
		if !ended {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitFile := func(name string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s from the sandbox:\n%s", name, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var links []string
	count := func() int {
		fdDir := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/fd"
		ents, err := os.ReadDir(fdDir)
		check(t, err)
		links = links[:0]
		for _, e := range ents {
			l, _ := os.Readlink(filepath.Join(fdDir, e.Name()))
			links = append(links, l)
		}
		return len(ents)
	}
	waitFile("opened")
	before := count()
	check(t, os.WriteFile(filepath.Join(dir, "go1"), nil, 0o644))
	waitFile("called")
	during := count()
	t.Logf("supervisor's descriptors after the calls: %q", links)
	check(t, os.WriteFile(filepath.Join(dir, "go2"), nil, 0o644))
	err := cmd.Wait()
	ended = true
	t.Logf("supervisor descriptors: %d before the calls, %d after them\n%s", before, during, out.String())
	if err != nil || !strings.Contains(out.String(), fmt.Sprintf("calls %d ok %d", 2*fds*threads, 2*fds*threads)) {
		t.Fatalf("the sandbox's calls did not all succeed (%v):\n%s", err, out.String())
	}
	// Slack for the descriptors serving opens besides (its pidfd of the
	// probe's main thread, the caller's namespace files); a cache
	// without a bound would add about 800.
	if extra := during - before; extra > kept+threads+32 {
		t.Errorf("the supervisor holds %d more descriptors after %d callers' calls on %d loop-control descriptors; the cache keeps at most %d", extra, threads, fds, kept)
	}
}

// TestAttackControlFDToOtherContainer is TestAttackControlFDToOtherSandbox
// through the agent, where one process serves both containers (runc): A's
// loop-control fd, passed to B over a socket in a directory both see, must
// give B no answer about A's instance and leave A's instance as it was.
func TestAttackControlFDToOtherContainer(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	a := startAgent(t, stateDir(t))
	rt, cleanup, err := oci.New("runc")
	if err != nil {
		t.Fatal(err)
	}
	cleanupRuntime(t, cleanup)
	shared := tempBundleDir(t)
	check(t, os.Chmod(shared, 0o777))
	fdpass := filepath.Join(binDir, "fdpass")
	bundle := func(script string) *oci.Bundle {
		b, err := oci.NewBundle(tempBundleDir(t), []string{"sh", "-c", script}, "truncate", fdpass)
		if err != nil {
			t.Fatal(err)
		}
		ociConfig(t, a, b)
		check(t, os.Mkdir(filepath.Join(b.Rootfs, "shared"), 0o755))
		b.AddMount("/shared", "bind", shared, "rbind", "rw")
		check(t, b.Save())
		return b
	}
	bb := bundle(fdpass + " recv /shared/sock getfree 0 > /shared/b_out 2>&1; : > /shared/b_done; sleep 1000")
	ab := bundle("sleep 1000")
	cb, err := rt.Start(bb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, cb) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(shared, "sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			bOut, _ := os.ReadFile(filepath.Join(shared, "b_out"))
			t.Fatalf("container B did not listen:\n%s", bOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ca, err := rt.Start(ab)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, ca) })
	res, err := ca.Exec("sh", "-c", `set -e
echo "A-free $(losetup -f)"
`+fdpass+` send /shared/sock /dev/loop-control
i=0
while [ ! -e /shared/b_done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "A-free-after $(losetup -f)"`)
	if err != nil {
		t.Fatal(err)
	}
	bOut, _ := os.ReadFile(filepath.Join(shared, "b_out"))
	t.Logf("container A:\n%s\ncontainer B:\n%s", res, bOut)
	if res.Code != 0 || !strings.Contains(res.Stdout, "sent") {
		t.Fatalf("container A could not pass its loop-control fd:\n%s", res)
	}
	m := regexp.MustCompile(`A-free /dev/loop(\d+)\n`).FindStringSubmatch(res.Stdout)
	if m == nil {
		t.Fatalf("container A got no free device:\n%s", res)
	}
	b := "\n" + string(bOut)
	if !strings.Contains(b, "rdev ") || strings.Count(b, "\nOK ")+strings.Count(b, "\nERR ") != 2 {
		t.Fatalf("container B got no fd or issued no calls:\n%s", bOut)
	}
	if strings.Contains(b, "\nOK "+m[1]+"\n") {
		t.Errorf("container B got container A's free device loop%s through A's loop-control fd", m[1])
	}
	if !strings.Contains(res.Stdout, "A-free-after /dev/loop"+m[1]+"\n") {
		t.Errorf("container A's instance changed while B used its loop-control fd:\n%s", res.Stdout)
	}
	killContainer(t, ca)
	killContainer(t, cb)
	waitGone(t, a)
}

// TestAttackBlockSizeHold: the supervisor sets a FUSE mount's device to
// the file system's block size and holds it open until the helper has it.
// That must reach no other device (a second device of the sandbox keeps
// the kernel's 4096, as on the host) and hold nothing past the mount: once
// the umount has returned and the device is detached, the sandbox's
// LOOP_CTL_REMOVE of it succeeds (EBUSY while anyone has it open). The
// block sizes are compared with the host's kernel mount.
func TestAttackBlockSizeHold(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs", "blockdev")
	hostGuard(t)
	script := `mkdir -p a
o=$(losetup -f --show other.img)
mount -o loop fs.img a; echo "mount $?"
d=$(findmnt -n -o SOURCE a)
echo "mounted: $(blockdev --getbsz $d), other device: $(blockdev --getbsz $o)"
umount a; echo "umount $?"
echo "after: other device $(blockdev --getbsz $o)"
losetup -d $o
echo "left $(losetup -a | wc -l)"
echo "dev ${d#/dev/loop}"`
	hostDir, dir := workDir(t), workDir(t)
	for _, d := range []string{hostDir, dir} {
		fsImage(t, d, "fs.img", "mkfs.ext4", 32<<20)
		image(t, d, "other.img", 8<<20)
	}
	host := hostScript(t, hostDir, script)
	if !strings.Contains(host, "mounted: 1024, other device: 4096\n") {
		t.Fatalf("set-up: the host's mount should set its device's block size to 1024 and no other:\n%s", host)
	}
	state := stateDir(t)
	out := sandboxOK(t, dir, state, nil, script+"\nloopctl remove ${d#/dev/loop}")
	t.Logf("sandbox:\n%s\nhost:\n%s", out, host)
	cut := func(s string) string { return s[:strings.Index(s, "dev ")] }
	if cut(out) != cut(host) {
		t.Errorf("sandbox:\n%s\nhost:\n%s", out, host)
	}
	if !strings.HasSuffix(out, "OK 0\n") {
		t.Errorf("the sandbox could not remove its device after the umount (held open?):\n%s", out)
	}
	bareFails(t, dir, state, `mkdir -p a; mount -o loop fs.img a`)
}

// TestAttackKeptFileBusiesMount: the supervisor keeps its own reference to
// the loop-control file a caller used (the trapped-call fast path). The
// sandbox takes a free device (losetup -f: it opens /dev/loop-control,
// asks and closes it) and at once unmounts its /dev (after the mounts
// below it): nothing of the sandbox has /dev open any more, so the kernel
// must let it go, as it does in the same sandbox without the call. A
// reference the supervisor still held would make it EBUSY. (The /dev the
// sandbox unmounts is loopvisor's view: there is none without it.)
func TestAttackKeptFileBusiesMount(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	script := func(call string) string {
		return `umount /dev/pts /dev/shm || exit 1
` + call + `
umount /dev; echo "umount /dev: $?"`
	}
	dir, state := workDir(t), stateDir(t)
	if c := sandbox(t, dir, state, nil, script("true")); !strings.Contains(c.Stdout, "umount /dev: 0\n") {
		t.Fatalf("set-up: without a loop-control call the sandbox's /dev should unmount:\n%s", c)
	}
	out := sandbox(t, dir, state, nil, script("losetup -f || exit 1"))
	if !strings.Contains(out.Stdout, "umount /dev: 0\n") {
		t.Errorf("the sandbox's /dev is busy after a loop-control call (a reference the supervisor keeps):\n%s", out)
	}
	bareFails(t, dir, state, "truncate -s 1M bare.img && losetup -f --show bare.img")
}
