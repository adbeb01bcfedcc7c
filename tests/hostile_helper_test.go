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
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
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

// TestAttack1HelperConfinedRun: in `loopvisor run`, the helper runs in the
// sandbox's namespaces, as its root, with no capability, no_new_privs and
// the helper filter, in a jail.
func TestAttack1HelperConfinedRun(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	fsImage(t, dir, "disk.img", "mkfs.ext4", 32<<20)
	fifo := filepath.Join(dir, "go")
	check(t, exec.Command("mkfifo", fifo).Run())
	check(t, os.Chown(fifo, SandboxUID, SandboxUID))
	done := sandboxAsync(dir, stateDir(t), nil, `set -e
mkdir -p mnt
mount -o loop disk.img mnt
echo "sandbox $$"
echo ready > ready
read x < go
umount mnt`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sandbox did not mount")
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// TestAttack3HelperNode: the helper's own device node is reachable from
// the sandbox through /proc/HELPER/root while the helper runs. Before the
// fix it belonged to the sandbox's root (chmod 0666 worked) and was never
// revoked, so a kept reference reopened whatever device got the index
// next. Now the sandbox cannot chmod it and a reopen after the helper
// exited fails.
func TestAttack3HelperNode(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	dir := workDir(t)
	fsImage(t, dir, "disk.img", "mkfs.ext4", 32<<20)
	r := sandbox(t, dir, stateDir(t), nil, `mkdir -p mnt
mount -o loop disk.img mnt || exit 1
h=$(pgrep -x fuse2fs)
n=$(ls /proc/$h/root/dev/ | grep '^loop')
if chmod 0666 /proc/$h/root/dev/$n 2>/dev/null; then echo chmod-ok; else echo chmod-refused; fi
exec 7</proc/$h/root/dev/$n || exit 1
umount mnt
sleep 0.5
if head -c1 /proc/self/fd/7 >/dev/null 2>&1; then echo reopen-ok; else echo reopen-refused; fi`)
	if r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "chmod-refused") {
		t.Errorf("the sandbox could chmod its helper's node:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "reopen-refused") {
		t.Errorf("a kept reference to the helper's node reopened after the helper exited:\n%s", r)
	}
}
