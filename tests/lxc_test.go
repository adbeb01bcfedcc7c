package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// LXC acceptance tests: real LXC 5 (lxc-start, lxc-attach, lxc-stop), an
// unprivileged container (root mapped to SandboxUID:65536) on the stock
// Debian image, no network, in a private lxcpath (lxc-start -P) so that
// nothing global is left behind. The agent serves LXC's seccomp notify
// proxy (agent --lxc-socket); the container's config is what
// `loopvisor lxc-config` writes.

// lxcSubIDs adds root's SandboxUID:65536 range to /etc/subuid and
// /etc/subgid (LXC wants it for an unprivileged container) and restores
// both files byte for byte afterwards.
func lxcSubIDs(t *testing.T) {
	t.Helper()
	want := fmt.Sprintf("root:%d:65536", SandboxUID)
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		old, err := os.ReadFile(f)
		existed := err == nil
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if st, err := os.Stat(f); err == nil {
			mode = st.Mode().Perm()
		}
		t.Cleanup(func() {
			var err error
			if existed {
				err = os.WriteFile(f, old, mode)
			} else {
				err = removeIfExists(f)
			}
			if err != nil {
				t.Errorf("restore %s: %v", f, err)
			}
		})
		if bytes.Contains(append([]byte("\n"), old...), []byte("\n"+want+"\n")) {
			continue
		}
		add := old
		if len(add) > 0 && add[len(add)-1] != '\n' {
			add = append(add, '\n')
		}
		check(t, os.WriteFile(f, append(add, want+"\n"...), mode))
	}
}

// lxcEnv is a private lxcpath with its own agent (nil: without loopvisor).
type lxcEnv struct {
	dist      string // stock image of the containers ("" bookworm)
	path      string
	agent     *agentProc
	lxcSocket string
}

func newLXCEnv(t *testing.T, withAgent bool) *lxcEnv {
	t.Helper()
	needTools(t, "lxc-start", "lxc-attach", "lxc-stop", "lxc-info")
	lxcSubIDs(t)
	dir, err := os.MkdirTemp("", "loopvisor-lxc-")
	check(t, err)
	cleanupDir(t, dir)
	check(t, os.Chmod(dir, 0o755)) // the container's root reaches its rootfs through it
	e := &lxcEnv{path: dir}
	lxcCgroupCleanup(t, "lxc.pivot")
	if withAgent {
		state := stateDir(t)
		e.lxcSocket = filepath.Join(state, "lxc.sock")
		e.agent = startAgent(t, state, "--lxc-socket", e.lxcSocket)
	}
	return e
}

// lxcContainer is a started container of an lxcEnv.
type lxcContainer struct {
	env  *lxcEnv
	name string
	root string // its rootfs on the host
}

var lxcSeq int

// start creates a container whose init runs initScript (in /lv, output to
// /lv/init.out, status to /lv/init.rc), then sleeps; it is stopped (-k)
// when t ends.
func (e *lxcEnv) start(t *testing.T, initScript string, lxcConfigArgs ...string) *lxcContainer {
	t.Helper()
	lxcSeq++
	c := &lxcContainer{env: e, name: fmt.Sprintf("lvt%d-%d", os.Getpid(), lxcSeq)}
	dir := filepath.Join(e.path, c.name)
	c.root = filepath.Join(dir, "rootfs")
	dist := e.dist
	if dist == "" {
		dist = "bookworm"
	}
	tarball, err := oci.StockImage(dist)
	check(t, err)
	check(t, oci.UnpackShifted(tarball, c.root, SandboxUID))
	check(t, os.Chmod(dir, 0o755))
	lv := filepath.Join(c.root, "lv")
	check(t, os.Mkdir(lv, 0o755))
	init := "cd /lv\n(\n" + initScript + "\n) > /lv/init.out 2>&1\necho $? > /lv/init.rc.tmp && mv /lv/init.rc.tmp /lv/init.rc\nexec sleep infinity\n"
	check(t, os.WriteFile(filepath.Join(lv, "init.sh"), []byte(init), 0o755))
	check(t, os.Chown(lv, SandboxUID, SandboxUID))
	check(t, os.Chown(filepath.Join(lv, "init.sh"), SandboxUID, SandboxUID))
	config := filepath.Join(dir, "config")
	check(t, os.WriteFile(config, []byte(fmt.Sprintf(`lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
lxc.uts.name = %s
lxc.rootfs.path = dir:%s
lxc.idmap = u 0 %d 65536
lxc.idmap = g 0 %d 65536
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.init.cmd = /bin/sh /lv/init.sh
`, c.name, c.root, SandboxUID, SandboxUID)), 0o644))
	if e.agent != nil {
		args := append([]string{"lxc-config", "--proxy", e.lxcSocket, "--state-dir", e.agent.state}, lxcConfigArgs...)
		r := run(t, dir, loopvisor, append(args, config)...)
		if r.Code != 0 {
			t.Fatalf("lxc-config:\n%s", r)
		}
	}
	logFile := filepath.Join(e.path, c.name+".log")
	lxcCgroupCleanup(t, "lxc.monitor."+c.name, "lxc.payload."+c.name)
	t.Cleanup(func() {
		// -k: SIGKILL the init; an error only says it was not running.
		_ = exec.Command("lxc-stop", "-P", e.path, "-n", c.name, "-k").Run()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("LXC log of %s (errors):\n%s", c.name, grepLines(string(b), "ERROR"))
		}
	})
	r := run(t, dir, "lxc-start", "-P", e.path, "-n", c.name, "-o", logFile, "-l", "INFO")
	if r.Code != 0 {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("lxc-start:\n%s\nlog:\n%s", r, grepLines(string(b), "ERROR"))
	}
	return c
}

// lxcCgroupCleanup removes, when t ends, the cgroup directories LXC
// leaves behind (its monitor's and payload's after a failed start, and
// lxc.pivot, where it parks its monitor on the way out) unless they
// existed before. They are empty once LXC is done; one still in use by
// another LXC stays (rmdir fails with EBUSY).
func lxcCgroupCleanup(t *testing.T, names ...string) {
	t.Helper()
	existed := map[string]bool{}
	for _, n := range names {
		for _, d := range lxcCgroupDirs(n) {
			existed[d] = true
		}
	}
	t.Cleanup(func() {
		for _, n := range names {
			for _, d := range lxcCgroupDirs(n) {
				if !existed[d] {
					_ = os.Remove(d) // EBUSY: in use by a live LXC; nothing of this test's
				}
			}
		}
	})
}

func lxcCgroupDirs(name string) []string {
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + name)
	return append(v1, v2...)
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitInit waits for the init's script to finish and returns its output
// and exit status.
func (c *lxcContainer) waitInit(t *testing.T) (string, int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, err := os.ReadFile(filepath.Join(c.root, "lv", "init.rc"))
		if err == nil {
			rc, err := strconv.Atoi(strings.TrimSpace(string(b)))
			check(t, err)
			out, _ := os.ReadFile(filepath.Join(c.root, "lv", "init.out"))
			return string(out), rc
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(c.root, "lv", "init.out"))
			t.Fatalf("the container's init did not finish its script; output so far:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// attach runs script with sh -c in the container through lxc-attach
// (a process with its own seccomp filter, served by the same monitor).
func (c *lxcContainer) attach(t *testing.T, script string) result {
	t.Helper()
	return run(t, c.root, "lxc-attach", "-P", c.env.path, "-n", c.name, "--", "sh", "-c", "cd /lv && "+script)
}

// stop stops the container (SIGKILL to its init, as a host shutdown would).
func (c *lxcContainer) stop(t *testing.T) {
	t.Helper()
	if r := run(t, c.root, "lxc-stop", "-P", c.env.path, "-n", c.name, "-k"); r.Code != 0 {
		t.Fatalf("lxc-stop:\n%s", r)
	}
}

// lxcScenario is what the tests run in the container's init and through
// lxc-attach, in /lv/WHERE: losetup -f/-a/-D, mount -o loop of ext4 with a
// write, and the partitioned image build of TestPartitionedImageBuild.
func lxcScenario(where string) string {
	return strings.ReplaceAll(`set -e
mkdir -p /lv/WHERE && cd /lv/WHERE
truncate -s 64M ext.img && mkfs.ext4 -q ext.img
echo "free $(losetup -f)"
dev=$(losetup -f --show ext.img)
echo "attached $dev"
losetup -a
losetup -D
echo "after -D: $(losetup -a | wc -l)"
mkdir -p mnt && mount -o loop ext.img mnt
echo written-in-WHERE > mnt/hello
umount mnt
echo "after mount: $(losetup -a | wc -l)"
truncate -s 128M disk.img
printf 'label: gpt\n,32M,U\n,,L\n' | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
ls ${dev}p1 ${dev}p2
mkfs.vfat ${dev}p1 >/dev/null && mkfs.ext4 -q ${dev}p2
mkdir -p root && mount ${dev}p2 root && mkdir -p root/boot && mount ${dev}p1 root/boot
echo efi-WHERE > root/boot/efi.txt && echo root-WHERE > root/r.txt
umount root/boot && umount root && losetup -d $dev
echo "done: $(losetup -a | wc -l) $(ls /dev | grep -c 'loop[0-9]*p[0-9]' || true)"`, "WHERE", where)
}

// checkScenario checks, on the host, what lxcScenario left in dir.
func checkScenario(t *testing.T, out, dir, where string) {
	t.Helper()
	for _, w := range []string{"free /dev/loop", "attached /dev/loop", "after -D: 0", "after mount: 0", "done: 0 0"} {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", where, w, out)
		}
	}
	if !regexp.MustCompile(`/dev/loop\d+: \[\d+\]:\d+ \(/lv/` + where + `/ext.img\)`).MatchString(out) {
		t.Errorf("%s: losetup -a did not list the device:\n%s", where, out)
	}
	ext := filepath.Join(dir, "ext.img")
	hostFsck(t, ext)
	if got := debugfsCat(t, ext, "/hello"); got != "written-in-"+where+"\n" {
		t.Errorf("%s: /hello on the host: %q", where, got)
	}
	img := filepath.Join(dir, "disk.img")
	d, _ := exec.Command("sfdisk", "-d", img).Output()
	if !strings.Contains(string(d), "label: gpt") {
		t.Fatalf("%s: host partition table:\n%s", where, d)
	}
	esp, root := extract(t, img, 1), extract(t, img, 2)
	if o, err := exec.Command("fsck.vfat", "-n", esp).CombinedOutput(); err != nil {
		t.Errorf("%s: fsck.vfat -n: %v\n%s", where, err, o)
	}
	hostFsck(t, root)
	if got := debugfsCat(t, root, "/r.txt"); got != "root-"+where+"\n" {
		t.Errorf("%s: /r.txt on the root partition: %q", where, got)
	}
	cmd := exec.Command("mtype", "-i", esp, "::efi.txt")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if o, err := cmd.Output(); err != nil || string(o) != "efi-"+where+"\n" {
		t.Errorf("%s: ESP efi.txt: %q %v", where, o, err)
	}
}

var lxcLoopDev = regexp.MustCompile(`/dev/loop(\d+)`)

// TestLXCLoopAndMount: in an unprivileged LXC container configured by
// lxc-config, losetup, mount -o loop and a partitioned image build work in
// the container's init and through lxc-attach; the host finds clean file
// systems with the data; lxc-stop with a device still attached releases
// it.
func TestLXCLoopAndMount(t *testing.T) {
	needRoot(t)
	needTools(t, "fuse2fs", "fusefat", "sfdisk", "fsck.vfat", "mtype", "debugfs")
	hostGuard(t)
	e := newLXCEnv(t, true)
	before := snapshot() // with the agent's node tmpfs mounted
	c := e.start(t, lxcScenario("init"))
	out, rc := c.waitInit(t)
	if rc != 0 {
		t.Fatalf("in the container's init: exit %d\n%s\nagent log:\n%s", rc, out, e.agent.logText())
	}
	checkScenario(t, out, filepath.Join(c.root, "lv", "init"), "init")
	r := c.attach(t, lxcScenario("attach"))
	if r.Code != 0 {
		t.Fatalf("through lxc-attach:\n%s", r)
	}
	checkScenario(t, r.Stdout, filepath.Join(c.root, "lv", "attach"), "attach")

	// A device left attached goes with the container.
	r = c.attach(t, "losetup -f --show init/ext.img && losetup -a | wc -l")
	m := lxcLoopDev.FindStringSubmatch(r.Stdout)
	if r.Code != 0 || m == nil || !strings.HasSuffix(strings.TrimSpace(r.Stdout), "\n1") {
		t.Fatalf("attach a device to leave behind:\n%s", r)
	}
	if b, err := os.ReadFile("/sys/block/loop" + m[1] + "/loop/backing_file"); err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), "/lv/init/ext.img") {
		t.Fatalf("host: loop%s is not bound to the container's image: %q %v", m[1], b, err)
	}
	c.stop(t)
	if after := waitSnapshot(before, 10*time.Second); after != before {
		t.Errorf("lxc-stop did not release the container's devices\n--- before\n%s\n--- after\n%s\nagent log:\n%s", before, after, e.agent.logText())
	}
	if !strings.Contains(e.agent.logText(), "container gone; instance released") {
		t.Errorf("the agent did not release the instance:\n%s", e.agent.logText())
	}
}

// TestLXCIsolation: two containers of one agent see only their own
// devices: one's bound device is neither listed, nor in /dev, nor
// detachable in the other; each lists exactly its own.
func TestLXCIsolation(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	e := newLXCEnv(t, true)
	setup := "truncate -s 16M a.img && mkfs.ext4 -q a.img && losetup -f --show a.img"
	c1 := e.start(t, setup)
	c2 := e.start(t, setup)
	idx := map[*lxcContainer]string{}
	for _, c := range []*lxcContainer{c1, c2} {
		out, rc := c.waitInit(t)
		m := lxcLoopDev.FindStringSubmatch(out)
		if rc != 0 || m == nil {
			t.Fatalf("%s init: exit %d\n%s\nagent log:\n%s", c.name, rc, out, e.agent.logText())
		}
		idx[c] = m[1]
	}
	if idx[c1] == idx[c2] {
		t.Fatalf("both containers got loop%s", idx[c1])
	}
	for _, p := range [][2]*lxcContainer{{c1, c2}, {c2, c1}} {
		self, other := p[0], p[1]
		r := self.attach(t, "losetup -a; echo count $(losetup -a | wc -l); ls /dev; ls /sys/block")
		if r.Code != 0 || !strings.Contains(r.Stdout, "count 1") || !strings.Contains(r.Stdout, "/dev/loop"+idx[self]+":") {
			t.Errorf("%s lists other than its own device:\n%s", self.name, r)
		}
		for _, l := range strings.Fields(r.Stdout) {
			if l == "loop"+idx[other] {
				t.Errorf("%s sees %s's loop%s in /dev or /sys/block:\n%s", self.name, other.name, idx[other], r.Stdout)
			}
		}
		r = self.attach(t, "losetup -d /dev/loop"+idx[other])
		if r.Code == 0 {
			t.Errorf("%s detached %s's loop%s", self.name, other.name, idx[other])
		}
		if _, err := os.Stat("/sys/block/loop" + idx[other] + "/loop/backing_file"); err != nil {
			t.Errorf("%s's loop%s is gone after %s tried to detach it: %v", other.name, idx[other], self.name, err)
		}
	}
	// The agent's status knows both, each with its own device.
	st := run(t, "/", loopvisor, "status", "--socket", e.agent.socket)
	for _, c := range []*lxcContainer{c1, c2} {
		if !strings.Contains(st.Stdout, "lxc/"+c.name) || !strings.Contains(st.Stdout, "loop"+idx[c]) {
			t.Errorf("status does not show %s with loop%s:\n%s", c.name, idx[c], st)
		}
	}
}

// TestLXCWithoutLoopvisor: the same container without lxc-config: losetup
// and mount -o loop fail, in the init and through lxc-attach.
func TestLXCWithoutLoopvisor(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	e := newLXCEnv(t, false)
	script := "truncate -s 16M a.img && mkfs.ext4 -q a.img && losetup -f --show a.img"
	c := e.start(t, script)
	out, rc := c.waitInit(t)
	if rc == 0 || strings.Contains(out, "/dev/loop") {
		t.Errorf("losetup worked in the init without loopvisor: exit %d\n%s", rc, out)
	}
	r := c.attach(t, script)
	if r.Code == 0 || strings.Contains(r.Stdout, "/dev/loop") {
		t.Errorf("losetup worked through lxc-attach without loopvisor:\n%s", r)
	}
	r = c.attach(t, "mkdir -p mnt && mount -o loop a.img mnt")
	if r.Code == 0 {
		t.Errorf("mount -o loop worked without loopvisor:\n%s", r)
	}
}

// incusDefaultProfile is the profile Incus 6.0 generates for a container
// with default settings (seccompHeader, "denylist\n[all]\n" and
// defaultSeccompPolicy in internal/server/seccomp/seccomp.go).
const incusDefaultProfile = `2
denylist
[all]
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 38
open_by_handle_at errno 38
init_module errno 38
finit_module errno 38
delete_module errno 38
`

// TestLXCIncusProfile: docs/incus.md's recipe as far as it is LXC's: the
// profile merged into Incus's default (what raw.seccomp would hold) with
// the proxy, cookie and hook lines raw.lxc would add. LXC loads it and the
// container gets loop devices, within the cookie's limit. (Incus itself is
// not installed here.)
func TestLXCIncusProfile(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	e := newLXCEnv(t, true)
	base := filepath.Join(e.path, "incus-default.seccomp")
	check(t, os.WriteFile(base, []byte(incusDefaultProfile), 0o644))
	c := e.start(t, "truncate -s 16M a.img && for i in 1 2; do losetup -f --show a.img; done; losetup -f --show a.img; echo rc=$?",
		"--base-profile", base, "--cookie", "max-loop=2")
	out, rc := c.waitInit(t)
	if rc != 0 || len(lxcLoopDev.FindAllString(out, -1)) != 2 || !strings.Contains(out, "rc=1") {
		t.Fatalf("want two devices, then the cookie's max-loop=2 refusing a third: exit %d\n%s\nagent log:\n%s", rc, out, e.agent.logText())
	}
	b, err := os.ReadFile(filepath.Join(e.path, c.name, "config.seccomp"))
	check(t, err)
	if !strings.HasPrefix(string(b), incusDefaultProfile) || !strings.Contains(string(b), "ioctl notify") {
		t.Errorf("merged profile:\n%s", b)
	}
}

// TestLXCNewMountAPI: on trixie, whose util-linux (2.41) mounts with
// fsopen/fsconfig/fsmount/move_mount, mount -o loop works in the
// container: the proxied fsopen's context descriptor is installed in the
// caller (ADDFD without SEND) and LXC answers with its number. Its
// remount (fspick, fsconfig, FSCONFIG_CMD_RECONFIGURE) makes the mount
// read-only and back, the same way.
func TestLXCNewMountAPI(t *testing.T) {
	needRoot(t)
	needTools(t, "fuse2fs", "debugfs")
	hostGuard(t)
	e := newLXCEnv(t, true)
	e.dist = "trixie"
	c := e.start(t, `set -e
truncate -s 32M ext.img && mkfs.ext4 -q ext.img
mkdir -p mnt && mount -o loop ext.img mnt
grep " /lv/mnt " /proc/self/mountinfo
mount -o remount,ro mnt
if touch mnt/x 2>/dev/null; then echo remount-ro-ignored; else echo remount-ro-honoured; fi
mount -o remount,rw mnt
echo new-api > mnt/hello && umount mnt
echo "left $(losetup -a | wc -l)"`)
	out, rc := c.waitInit(t)
	if rc != 0 || !strings.Contains(out, "remount-ro-honoured\n") || !strings.Contains(out, "left 0") {
		t.Fatalf("mount -o loop on trixie: exit %d\n%s\nagent log:\n%s", rc, out, e.agent.logText())
	}
	if !strings.Contains(e.agent.logText(), "syscall=fsconfig") {
		t.Errorf("the mount did not go through the new mount API:\n%s", e.agent.logText())
	}
	img := filepath.Join(c.root, "lv", "ext.img")
	hostFsck(t, img)
	if got := debugfsCat(t, img, "/hello"); got != "new-api\n" {
		t.Errorf("/hello on the host: %q", got)
	}
}
