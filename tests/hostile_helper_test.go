package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// Attacks 1 and 2 of the confinement issue: a FUSE helper must run the
// host's binary, with the container's confinement or less.

// helperConfinement checks what the kernel says of a running helper pid,
// against the container process ref: the container's user, pid, net, ipc,
// uts, cgroup and time namespaces and cgroups, a mount namespace of its own
// that holds no container file, its root's ids, no groups, no capability,
// no_new_privs and a seccomp filter.
func helperConfinement(t *testing.T, helper, ref int, hostUID int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", helper))
	if err != nil {
		t.Fatalf("helper %d: %v", helper, err)
	}
	field := func(name string) string {
		for _, l := range strings.Split(string(status), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && k == name {
				return strings.Join(strings.Fields(v), " ")
			}
		}
		return "?"
	}
	want := map[string]string{
		"Uid":        fmt.Sprintf("%d %d %d %d", hostUID, hostUID, hostUID, hostUID),
		"Gid":        fmt.Sprintf("%d %d %d %d", hostUID, hostUID, hostUID, hostUID),
		"Groups":     "",
		"CapInh":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapEff":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	}
	for k, v := range want {
		if got := field(k); got != v {
			t.Errorf("helper %s: %q, want %q", k, got, v)
		}
	}
	ns := func(pid int, n string) string {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, n))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, n := range []string{"user", "pid", "net", "ipc", "uts", "cgroup", "time"} {
		if h, c := ns(helper, n), ns(ref, n); h != c {
			t.Errorf("helper's %s namespace %s, container's %s", n, h, c)
		}
	}
	if h, c := ns(helper, "mnt"), ns(ref, "mnt"); h == c || h == ns(os.Getpid(), "mnt") {
		t.Errorf("helper's mount namespace %s is the container's or the host's", h)
	}
	hc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", helper))
	cc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ref))
	if string(hc) != string(cc) {
		t.Errorf("helper's cgroups\n%s\ncontainer's\n%s", hc, cc)
	}
	// The jail: the host's system directories, a few device nodes, nothing
	// of the container's (its /tmp, its /etc) or of the host's (/root, /run).
	root := fmt.Sprintf("/proc/%d/root", helper)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"usr": true, "bin": true, "sbin": true, "lib": true, "lib32": true, "lib64": true,
		"libx32": true, "etc": true, "dev": true, "mnt": true, "tmp": true, ".loopvisor": true}
	for _, e := range ents {
		if !allowed[e.Name()] {
			t.Errorf("helper's jail shows /%s", e.Name())
		}
	}
	// Only the helper's own files: no shell, no other host program.
	for _, p := range []string{"etc/passwd", "etc/shadow", "tmp/disk.img", "root", "run", "proc", "sys", "home", "work",
		"usr/bin/sh", "bin/sh", "usr/bin/ls", "usr/sbin/runc", "usr/bin/runc", "usr/bin/umount"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("helper's jail has /%s", p)
		}
	}
}

// helperPids returns the pids of processes named name whose parent chain
// does not matter: the helpers loopvisor started.
func pidsNamed(name string) []int {
	var out []int
	for _, pid := range pids() {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(comm)) == name {
			out = append(out, pid)
		}
	}
	return out
}

// TestAttack1HelperSwap: the sandbox binds its own program over fuse2fs and
// mounts an ext4 image. Before the fix loopvisor ran that program as the
// helper, outside the sandbox's seccomp filter (Seccomp: 0), where its raw
// LOOP_CTL_REMOVE/ADD reached host devices. Now the host's fuse2fs serves
// the mount and the sandbox's program never runs.
func TestAttack1HelperSwap(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	fsImage(t, dir, "disk.img", "mkfs.ext4", 32<<20)
	evil := filepath.Join(dir, "evil")
	check(t, os.WriteFile(evil, []byte("#!/bin/sh\ngrep -E 'Seccomp|CapEff' /proc/self/status > "+dir+"/evil.ran\nexit 1\n"), 0o755))
	check(t, os.Chown(evil, SandboxUID, SandboxUID))
	fuse2fs, err := exec.LookPath("fuse2fs")
	if err != nil {
		t.Fatal(err)
	}
	fuse2fs, _ = filepath.EvalSymlinks(fuse2fs)
	r := sandbox(t, dir, stateDir(t), nil, fmt.Sprintf(`set -e
mount --bind ./evil %s
mkdir -p mnt
mount -o loop disk.img mnt
echo from-sandbox > mnt/hello
cat mnt/hello
umount mnt`, fuse2fs))
	if r.Code != 0 || !strings.Contains(r.Stdout, "from-sandbox") {
		t.Fatalf("mount with the host's helper failed:\n%s", r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "evil.ran")); err == nil {
		t.Fatalf("the sandbox's program ran as the FUSE helper:\n%s", b)
	}
	hostFsck(t, filepath.Join(dir, "disk.img"))
}

// fifoDir returns a work directory holding disk.img, a 32 MiB ext4
// image, and the path of go there, a FIFO the sandbox's root may read: a
// script's `read x < go` waits until the test writes a line to it.
func fifoDir(t *testing.T) (dir, fifo string) {
	t.Helper()
	dir = workDir(t)
	fsImage(t, dir, "disk.img", "mkfs.ext4", 32<<20)
	fifo = filepath.Join(dir, "go")
	check(t, exec.Command("mkfifo", fifo).Run())
	check(t, os.Chown(fifo, SandboxUID, SandboxUID))
	return dir, fifo
}

// TestAttack1HelperConfinedRun: in `loopvisor run`, the helper runs in the
// sandbox's namespaces, as its root, with no capability, no_new_privs and
// the helper filter, in a jail.
func TestAttack1HelperConfinedRun(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir, fifo := fifoDir(t)
	done := sandboxAsync(dir, stateDir(t), nil, `set -e
mkdir -p mnt
mount -o loop disk.img mnt
echo "sandbox $$"
echo ready > ready
read x < go
umount mnt`)
	waitFileExists(t, filepath.Join(dir, "ready"))
	helpers := pidsNamed("fuse2fs")
	var ref int
	for _, p := range pidsNamed("sh") {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cwd/ready", p)); err == nil && strings.TrimSpace(string(b)) == "ready" {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p)); l == dir {
				ref = p
			}
		}
	}
	checked := false
	for _, h := range helpers {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", h)); ref != 0 {
			if r, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", ref)); l == r {
				helperConfinement(t, h, ref, SandboxUID)
				checked = true
			}
		}
	}
	check(t, os.WriteFile(fifo, []byte("go\n"), 0))
	o := <-done
	if o.err != nil {
		t.Fatalf("sandbox: %v", o.err)
	}
	if o.r.Code != 0 {
		t.Fatalf("sandbox:\n%s", o.r)
	}
	if !checked {
		t.Fatalf("no fuse2fs helper found in the sandbox's user namespace (helpers %v, sandbox sh %d)", helpers, ref)
	}
}

// TestAttack2HelperConfinedAgent: a runc/crun container's helper runs in
// the container's user, pid, net, ipc, uts, cgroup and time namespaces and
// in its cgroups (before the fix: the host's net, ipc, uts and cgroup
// namespaces, outside the container's cgroups, no seccomp), and the image's
// own fuse2fs (replaced by a program that records its run) never runs.
func TestAttack2HelperConfinedAgent(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		b := ociBundle(t, a, "sh", "-c", `set -e
cd /tmp
truncate -s 32M disk.img
mkfs.ext4 -q disk.img
mkdir -p /mnt/m
mount -o loop disk.img /mnt/m
echo written > /mnt/m/hello
echo mounted
sleep 1000`)
		// The image's own fuse2fs becomes a program that leaves a mark.
		imgHelper := filepath.Join(b.Rootfs, "usr", "sbin", "fuse2fs")
		if _, err := os.Stat(imgHelper); err != nil {
			imgHelper = filepath.Join(b.Rootfs, "usr", "bin", "fuse2fs")
		}
		check(t, removeIfExists(imgHelper))
		check(t, os.WriteFile(imgHelper, []byte("#!/bin/sh\necho ran > /tmp/evil.ran\nexit 1\n"), 0o755))
		c, err := rt.Start(b)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			removeContainer(t, c)
			waitGone(t, a)
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _ := c.Output()
			if strings.Contains(out, "mounted") {
				break
			}
			if time.Now().After(deadline) {
				o, e := c.Output()
				t.Fatalf("container did not mount:\n%s\n%s\n%s", o, e, a.logText())
			}
			time.Sleep(50 * time.Millisecond)
		}
		init, err := c.Pid()
		if err != nil {
			t.Fatal(err)
		}
		var st []struct {
			Pid    int `json:"pid"`
			Mounts []struct {
				HelperPid int `json:"helper_pid"`
			} `json:"mounts"`
		}
		r := run(t, "/", loopvisor, "status", "--socket", a.socket, "--json")
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, r)
		}
		found := false
		for _, s := range st {
			for _, m := range s.Mounts {
				if s.Pid == init {
					helperConfinement(t, m.HelperPid, init, 100000)
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("no helper for container %d in status:\n%s", init, r.Stdout)
		}
		if _, err := os.Stat(filepath.Join(b.Rootfs, "tmp", "evil.ran")); err == nil {
			t.Errorf("the image's fuse2fs ran")
		}
	})
}

// TestAttack3HelperNode: the helper's own device node sits in its jail.
// Before the fix it belonged to the sandbox's root (chmod 0666 worked) and
// was never revoked, so a reference kept through /proc/HELPER/root reopened
// whatever device got the index next. The sandbox can no longer reach the
// jail at all (TestHelperNotTraceable); the node's revocation stays as a
// second wall, checked here with a reference the test takes from the jail
// and hands to the sandbox's host uid: it opens the node while the helper
// runs, cannot chmod it, and cannot reopen it once the helper has exited.
func TestAttack3HelperNode(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir, fifo := fifoDir(t)
	done := sandboxAsync(dir, stateDir(t), nil, `set -e
mkdir -p mnt
mount -o loop disk.img mnt
h=$(pgrep -x fuse2fs)
if ls /proc/$h/root/dev/ >/dev/null 2>&1; then echo jail-reachable; fi
echo ready > ready
read x < go
umount mnt
echo unmounted > unmounted
read x < go`)
	released := false
	release := func() {
		if !released {
			released = true
			check(t, os.WriteFile(fifo, []byte("go\n"), 0))
		}
	}
	t.Cleanup(func() {
		if !released {
			_ = os.WriteFile(fifo, []byte("go\n"), 0)
		}
	})
	waitFileExists(t, filepath.Join(dir, "ready"))
	var node *os.File
	for _, h := range pidsNamed("fuse2fs") {
		root := fmt.Sprintf("/proc/%d/root/dev", h)
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "loop") {
				f, err := os.OpenFile(filepath.Join(root, e.Name()), unix.O_PATH|unix.O_CLOEXEC, 0)
				check(t, err)
				node = f
			}
		}
	}
	if node == nil {
		t.Fatal("no helper node found")
	}
	defer func() { _ = node.Close() }()
	// As the sandbox's root on the host: a reference it kept.
	asSandbox := func(script string) string {
		cmd := exec.Command("setpriv", "--reuid", strconv.Itoa(SandboxUID), "--regid", strconv.Itoa(SandboxUID),
			"--clear-groups", "sh", "-c", script)
		cmd.ExtraFiles = []*os.File{node}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	const try = `if head -c1 /proc/self/fd/3 >/dev/null 2>&1; then echo reopen-ok; else echo reopen-refused; fi
if chmod 0666 /proc/self/fd/3 2>/dev/null; then echo chmod-ok; else echo chmod-refused; fi`
	live := asSandbox(try)
	release()
	waitFileExists(t, filepath.Join(dir, "unmounted"))
	after := asSandbox(try)
	released = false
	release()
	o := <-done
	if o.err != nil || o.r.Code != 0 {
		t.Fatalf("sandbox: %v\n%s", o.err, o.r)
	}
	if strings.Contains(o.r.Stdout, "jail-reachable") {
		t.Errorf("the sandbox reached its helper's jail:\n%s", o.r)
	}
	if !strings.Contains(live, "reopen-ok") {
		t.Errorf("control: the sandbox's uid could not open the helper's node while it served (the test cannot tell):\n%s", live)
	}
	if !strings.Contains(live, "chmod-refused") || !strings.Contains(after, "chmod-refused") {
		t.Errorf("the sandbox's uid could chmod its helper's node:\n%s\n%s", live, after)
	}
	if !strings.Contains(after, "reopen-refused") {
		t.Errorf("a kept reference to the helper's node reopened after the helper exited:\n%s", after)
	}
}

// TestHelperNotTraceable: the container's root owns every process of its
// own, so before the fix it could ptrace its FUSE helper (same uid, pid
// namespace and capabilities in its user namespace), read its memory, open
// its fds and look into its jail through /proc/HELPER/root, and make the
// helper run code of its choosing under the helper's filter instead of its
// own. Now every way in is refused, while the same probe succeeds against
// a process the container started itself (so the probe can tell).
func TestHelperNotTraceable(t *testing.T) {
	needRoot(t)
	for _, c := range []struct{ fstype, helper, mkfs, use string }{
		{"ext4", "fuse2fs", "truncate -s 32M disk.img && mkfs.ext4 -q disk.img",
			"echo still-served > mnt/hello && cat mnt/hello"},
		{"vfat", "fusefat", "truncate -s 32M disk.img && mkfs.vfat disk.img >/dev/null",
			"echo still-served > mnt/hello && cat mnt/hello"},
		{"squashfs", "squashfuse", "mkdir t && echo still-served > t/hello && mksquashfs t disk.img -quiet -no-progress >/dev/null",
			"cat mnt/hello"},
	} {
		t.Run(c.fstype, func(t *testing.T) {
			hostGuard(t)
			dir := workDir(t)
			probe := filepath.Join(binDir, "helperprobe")
			r := sandbox(t, dir, stateDir(t), nil, fmt.Sprintf(`set -e
%[2]s
mkdir -p mnt
mount -t %[3]s -o loop disk.img mnt
sleep 1000 &
own=$!
h=$(pgrep -x %[4]s)
echo "== own"
%[1]s $own
echo "== helper"
%[1]s $h
kill $own
%[5]s
umount mnt`, probe, c.mkfs, c.fstype, c.helper, c.use))
			if r.Code != 0 {
				t.Fatalf("sandbox:\n%s", r)
			}
			own, helper, ok := strings.Cut(r.Stdout, "== helper\n")
			if !ok || !strings.Contains(helper, "still-served") {
				t.Fatalf("sandbox output:\n%s", r)
			}
			t.Logf("against the helper:\n%s", helper)
			for _, op := range []string{"attach", "seize", "vmread", "mem", "root", "fddir", "fdlink", "environ", "ns", "cwd", "getfd"} {
				if !strings.Contains(own, op+" OK\n") {
					t.Errorf("control: the sandbox's root could not %s its own process (the probe cannot tell):\n%s", op, own)
				}
				if !strings.Contains(helper, op+" ERR ") {
					t.Errorf("the sandbox's root could %s its FUSE helper:\n%s", op, helper)
				}
			}
		})
	}
}

// TestFUSEHelperLimit: each FUSE mount costs a helper (processes, memory
// charged to the container but also a jail, pipes and a goroutine in the
// supervisor). Before the fix a sandbox could start helpers without end
// (up to its devices, and a helper such as squashfuse does not refuse a
// device mounted twice); now --max-fuse bounds those
// running or starting per sandbox, the next mount fails with ENOSPC (what
// mount(2) answers when a mount namespace reaches fs.mount-max), and an
// umount frees a slot.
func TestFUSEHelperLimit(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	fsImage(t, dir, "disk.img", "mkfs.ext4", 32<<20)
	script := `set -e
d1=$(losetup -r -f --show disk.img)
d2=$(losetup -r -f --show disk.img)
d3=$(losetup -r -f --show disk.img)
mkdir -p m1 m2 m3
mount -o ro $d1 m1
mount -o ro $d2 m2
if mount -o ro $d3 m3 2>err; then echo third-mounted; umount m3; else echo third-refused; cat err; fi
umount m2
mount -o ro $d3 m3 && echo freed-slot-used
umount m3
umount m1
losetup -d $d1 $d2 $d3`
	bareFails(t, dir, stateDir(t), script)
	r := sandbox(t, dir, stateDir(t), []string{"--max-fuse", "2"}, script)
	if r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "third-refused") || !strings.Contains(r.Stdout, "No space left on device") {
		t.Errorf("a third FUSE mount with --max-fuse 2 was not refused with ENOSPC:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "freed-slot-used") {
		t.Errorf("an umount did not free a helper slot:\n%s", r)
	}
	if !strings.Contains(r.Stderr, "too many FUSE helpers") {
		t.Errorf("no log line for the refusal:\n%s", r.Stderr)
	}
}
