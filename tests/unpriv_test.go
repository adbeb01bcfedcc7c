package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// Unprivileged host users: `loopvisor agent --user-socket` serves their
// rootless podman containers and their `loopvisor run` sandboxes, and
// refuses whatever is not theirs. The users are real (useradd, with
// /etc/subuid and /etc/subgid ranges) and removed again.

// hostUser is an unprivileged host user made for one test.
type hostUser struct {
	name     string
	uid, gid int
	home     string
	runtime  string // XDG_RUNTIME_DIR
	sub      int    // first id of its /etc/subuid and /etc/subgid range (65536 ids)
}

// userSubBase is where the test users' sub-id ranges start: clear of
// root's (100000) and of the sandboxes' (SandboxUID and the like).
const userSubBase = 600000

var userSeq int

// newHostUser adds a user with useradd and gives it its own 65536 sub ids;
// t's cleanup kills what still runs as it, deletes it and restores
// /etc/subuid and /etc/subgid as they were.
func newHostUser(t *testing.T) *hostUser {
	t.Helper()
	saved := map[string][]byte{}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		saved[f] = b
	}
	userSeq++
	u := &hostUser{name: fmt.Sprintf("lvu%d%d", os.Getpid()%10000, userSeq), sub: userSubBase + 70000*userSeq}
	home, err := os.MkdirTemp("", "loopvisor-home-")
	check(t, err)
	rt, err := os.MkdirTemp("", "loopvisor-xdg-")
	check(t, err)
	u.home, u.runtime = home, rt
	t.Cleanup(func() {
		for _, pid := range pidsOfUID(u.uid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if u.uid > 0 {
			waitNoPids(u.uid)
			if out, err := exec.Command("userdel", u.name).CombinedOutput(); err != nil {
				t.Errorf("userdel %s: %v\n%s", u.name, err, out)
			}
		}
		for f, b := range saved {
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Error(err)
			}
		}
		for _, d := range []string{home, rt} {
			if err := os.RemoveAll(d); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	if out, err := exec.Command("useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group", u.name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	for _, x := range []struct {
		flag string
		id   *int
	}{{"-u", &u.uid}, {"-g", &u.gid}} {
		out, err := exec.Command("id", x.flag, u.name).Output()
		check(t, err)
		*x.id, err = strconv.Atoi(strings.TrimSpace(string(out)))
		check(t, err)
	}
	// useradd may have picked ranges itself: the user gets exactly one.
	for f, b := range saved {
		var keep []string
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, u.name+":") {
				keep = append(keep, line)
			}
		}
		keep = append(keep, fmt.Sprintf("%s:%d:65536", u.name, u.sub))
		check(t, os.WriteFile(f, []byte(strings.Join(keep, "\n")+"\n"), 0o644))
	}
	for _, d := range []string{home, rt} {
		check(t, os.Chown(d, u.uid, u.gid))
	}
	check(t, os.Chmod(home, 0o755))
	check(t, os.Chmod(rt, 0o700))
	return u
}

// pidsOfUID lists the processes whose real uid is uid.
func pidsOfUID(uid int) []int {
	var out []int
	for _, pid := range pids() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == strconv.Itoa(uid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// waitNoPids waits (up to 10 s) until no process of uid is left.
func waitNoPids(uid int) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(pidsOfUID(uid)) > 0; {
		time.Sleep(50 * time.Millisecond)
	}
}

// asUser returns a command that runs args as u (setpriv: no supplementary
// groups, no capabilities), with the environment a login would give.
func (u *hostUser) command(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("setpriv", append([]string{"--reuid", strconv.Itoa(u.uid), "--regid", strconv.Itoa(u.gid), "--clear-groups", "--"}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name, "XDG_RUNTIME_DIR=" + u.runtime,
		"PATH=" + binDir + ":/usr/sbin:/usr/bin:/sbin:/bin"}
	return cmd
}

// run runs args as u in dir (up to three minutes) and returns the result.
func (u *hostUser) run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := u.command(dir, args...)
	cmd.WaitDelay = 10 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	check(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v: timed out\n%s%s", args, so.String(), se.String())
	}
	return result{Stdout: so.String(), Stderr: se.String(), Code: cmd.ProcessState.ExitCode()}
}

// dir returns a directory u owns, removed when t ends.
func (u *hostUser) dir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "loopvisor-userwork-")
	check(t, err)
	cleanupDir(t, d)
	check(t, os.Chmod(d, 0o755))
	check(t, os.Chown(d, u.uid, u.gid))
	return d
}

// userAgent starts an agent with a user socket in a root-owned directory
// every user can search. It allows kernel mounts of ext4, which users'
// containers must never get.
func userAgent(t *testing.T) (*agentProc, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-usock-")
	check(t, err)
	cleanupDir(t, dir)
	check(t, os.Chmod(dir, 0o755))
	sock := filepath.Join(dir, "agent.sock")
	return startAgent(t, stateDir(t), "--user-socket", sock, "--allow-kernel-mount", "ext4"), sock
}

// userImage makes an ext4 image in dir owned by u (the sandbox's root is
// u's own uid).
func userImage(t *testing.T, u *hostUser, dir string) string {
	t.Helper()
	fsImage(t, dir, "disk.img", "mkfs.ext4", 64<<20)
	p := filepath.Join(dir, "disk.img")
	check(t, os.Chown(p, u.uid, u.gid))
	return p
}

// hostCheckImage runs e2fsck -fn on img and checks that /hello holds want.
func hostCheckImage(t *testing.T, img, want string) {
	t.Helper()
	hostFsck(t, img)
	if got := debugfsCat(t, img, "/hello"); strings.TrimSpace(got) != want {
		t.Fatalf("the image's /hello = %q, want %q", got, want)
	}
}

const loopScript = `set -e
d=$(losetup -f --show disk.img); echo attached $d
losetup -a
losetup -d $d
mkdir -p mnt
mount -o loop disk.img mnt
echo %s > mnt/hello
umount mnt
echo done`

// TestUnprivRun: `loopvisor run` started by an unprivileged user makes its
// namespace with newuidmap/newgidmap and the system agent serves it:
// losetup, mount -o loop, write, umount, and the host's fsck is clean. The
// same command without loopvisor fails.
func TestUnprivRun(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	u := newHostUser(t)
	a, sock := userAgent(t)
	dir := u.dir(t)
	img := userImage(t, u, dir)

	bareRun := u.run(t, dir, loopvisor, "run", "--bare", "--", "sh", "-c", "cat /proc/self/uid_map; losetup -f --show disk.img")
	if bareRun.Code == 0 || strings.Contains(bareRun.Stdout, "/dev/loop") || !strings.Contains(bareRun.Stderr, "losetup: ") {
		t.Fatalf("losetup worked without loopvisor, so this test proves nothing:\n%s", bareRun)
	}
	if !strings.Contains(bareRun.Stdout, fmt.Sprintf("%d", u.sub)) {
		t.Fatalf("the bare sandbox does not map the user's sub ids:\n%s", bareRun)
	}

	r := u.run(t, dir, loopvisor, "run", "--agent", sock, "--log-level", "info", "--",
		"sh", "-c", "stat -c 'loop-control %t:%T' /dev/loop-control; "+fmt.Sprintf(loopScript, "unpriv-run"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "done") {
		t.Fatalf("loopvisor run as %s:\n%s\nagent:\n%s", u.name, r, a.logText())
	}
	// The sandbox's /dev/loop-control is the decoy (a /dev/null node).
	if !strings.Contains(r.Stdout, "loop-control 1:3") {
		t.Errorf("/dev/loop-control in a user's sandbox is not the decoy:\n%s", r)
	}
	hostCheckImage(t, img, "unpriv-run")
	userServed(t, a, u, fmt.Sprintf("peer_uid=%d", u.uid))
}

// userServed checks a's log: the agent took the container for u's (its
// user namespace and id maps are u's, its owner u) and mounted through a
// jailed FUSE helper, never by the kernel (the agent allows ext4 kernel
// mounts); want are more lines the log must hold.
func userServed(t *testing.T, a *agentProc, u *hostUser, want ...string) {
	t.Helper()
	log := a.logText()
	for _, w := range append(want,
		"user socket: the container's user namespace and id maps are the user's",
		fmt.Sprintf(`owner="uid %d"`, u.uid),
		"mounted through a jailed FUSE helper",
	) {
		if !strings.Contains(log, w) {
			t.Errorf("agent log lacks %q:\n%s", w, log)
		}
	}
	if strings.Contains(log, "mounted by the kernel") {
		t.Errorf("a user's container got a kernel mount (the agent allows ext4 kernel mounts):\n%s", log)
	}
}

// TestUnprivDecoyControl: the user who owns a sandbox can open its /dev
// from outside the filter (/proc/PID/root); its /dev/loop-control must not
// be the host's, or LOOP_CTL_ADD would create host devices unchecked.
func TestUnprivDecoyControl(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	u := newHostUser(t)
	a, sock := userAgent(t)
	dir := u.dir(t)
	cmd := u.command(dir, loopvisor, "run", "--agent", sock, "--", "sh", "-c", "echo ready; exec sleep 600")
	out, err := cmd.StdoutPipe()
	check(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	check(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("sandbox did not start: %q %v\n%s\nagent:\n%s", line, err, stderr.String(), a.logText())
	}
	m := regexp.MustCompile(`container's user namespace and id maps are the user's.* init=(\d+)`).FindStringSubmatch(a.logText())
	if m == nil {
		t.Fatalf("no init pid in the agent log:\n%s", a.logText())
	}
	idx := freeIndexRange(t, 1)
	r := u.run(t, dir, "env", "LOOPCTL_CONTROL=/proc/"+m[1]+"/root/dev/loop-control", filepath.Join(binDir, "loopctl"), "add", strconv.Itoa(idx))
	if !strings.Contains(r.Stdout, "ERR ENOTTY") {
		t.Errorf("LOOP_CTL_ADD through the sandbox's /dev/loop-control from outside its filter: want ENOTTY (a /dev/null node)\n%s", r)
	}
	if !loopIndexAbsent(idx) {
		if rm := run(t, "/", filepath.Join(binDir, "loopctl"), "remove", strconv.Itoa(idx)); !strings.Contains(rm.Stdout, "OK") {
			t.Errorf("cannot remove loop%d again:\n%s", idx, rm)
		}
		t.Fatalf("the user created host loop device %d outside any filter", idx)
	}
}

// podmanProfile writes a seccomp profile for podman with loopvisor's rules
// and listenerPath sock (from `loopvisor oci-config` on a minimal config).
func podmanProfile(t *testing.T, dir, sock string) string {
	t.Helper()
	cfg := filepath.Join(dir, "config.json")
	check(t, os.WriteFile(cfg, []byte(`{"ociVersion":"1.0.2","process":{"capabilities":{}},"linux":{"namespaces":[{"type":"user"}],"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}}`), 0o644))
	r := run(t, dir, loopvisor, "oci-config", "--listener", sock, "--no-cap-sys-admin", cfg)
	if r.Code != 0 {
		t.Fatalf("oci-config:\n%s", r)
	}
	var spec struct {
		Linux struct {
			Seccomp json.RawMessage `json:"seccomp"`
		} `json:"linux"`
	}
	b, err := os.ReadFile(cfg)
	check(t, err)
	check(t, json.Unmarshal(b, &spec))
	p := filepath.Join(dir, "profile.json")
	check(t, os.WriteFile(p, spec.Linux.Seccomp, 0o644))
	return p
}

// TestUnprivPodmanRootless: rootless podman (runc), run by a real
// unprivileged user in a stock Debian bookworm root file system, with a
// profile whose listenerPath is the agent's user socket: losetup, mount -o
// loop, write, umount; the host's fsck is clean. With podman's default
// profile instead, losetup fails.
func TestUnprivPodmanRootless(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	tarball, err := oci.StockImage("bookworm")
	check(t, err)
	u := newHostUser(t)
	a, sock := userAgent(t)
	dir := u.dir(t)
	work := filepath.Join(dir, "work")
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{work, rootfs} {
		check(t, os.Mkdir(d, 0o755))
		check(t, os.Chown(d, u.uid, u.gid))
	}
	img := userImage(t, u, work)
	profile := podmanProfile(t, dir, sock)
	// The user unpacks the image in its own user namespace, so the owners
	// are shifted as podman maps them. Device nodes cannot be made there;
	// podman provides /dev.
	if r := u.run(t, dir, "podman", "unshare", "tar", "-C", rootfs, "--exclude", "./dev/*", "-xf", tarball); r.Code != 0 {
		t.Fatalf("podman unshare tar:\n%s", r)
	}
	// runc: crun 1.8.1 refuses this machine's hybrid cgroup layout, and a
	// rootless user cannot unmount /sys/fs/cgroup/unified for it.
	podman := func(extra ...string) []string {
		args := []string{"podman", "run", "--rm", "--runtime", "runc", "--network", "none", "--cap-add", "SYS_ADMIN", "-v", work + ":/work"}
		return append(args, extra...)
	}
	without := u.run(t, dir, append(podman("--rootfs", rootfs), "sh", "-c", "cd /work && losetup -f --show disk.img")...)
	if without.Code == 0 || strings.Contains(without.Stdout, "/dev/loop") || !strings.Contains(without.Stderr, "losetup: ") {
		t.Fatalf("losetup worked in rootless podman without loopvisor, so this test proves nothing:\n%s", without)
	}
	r := u.run(t, dir, append(podman("--security-opt", "seccomp="+profile, "--rootfs", rootfs),
		"sh", "-c", "cd /work && cat /proc/self/uid_map && "+fmt.Sprintf(loopScript, "rootless-podman"))...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "done") {
		t.Fatalf("rootless podman with loopvisor:\n%s\nagent:\n%s", r, a.logText())
	}
	hostCheckImage(t, img, "rootless-podman")
	userServed(t, a, u)
}

// startAs starts argv as uid:gid (setpriv; uid 0: as is) and returns its
// pid once it runs sleep (after the exec chain), killed when t ends.
func startAs(t *testing.T, uid, gid int, argv ...string) int {
	t.Helper()
	args := argv
	if uid != 0 {
		args = append([]string{"setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(gid), "--clear-groups", "--"}, argv...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.WaitDelay = 10 * time.Second
	check(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(b)) == "sleep" {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not come up", argv)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeMaps writes pid's uid and gid maps as host root may.
func writeMaps(t *testing.T, pid int, m string) {
	t.Helper()
	for _, f := range []string{"uid_map", "gid_map"} {
		check(t, os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f), []byte(m), 0o644))
	}
}

// TestAttackUserSocket: a user's runtime is hostile. It names another
// user's container, a host process, a process that does not exist, a
// namespace it owns whose maps are not its ids, a namespace someone else
// owns whose maps are its ids, a namespace of its own that shares the
// host's mount namespace, and sends a listener that is not the named
// process's filter. Every one is refused with a log line saying why; the
// last is attached (nothing at connect time can tell) but every call from
// outside the container is refused.
func TestAttackUserSocket(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	alice, mallory := newHostUser(t), newHostUser(t)
	a, sock := userAgent(t)
	dir := mallory.dir(t)
	send := filepath.Join(binDir, "usersend")

	// Alice's container: her user and mount namespaces, root mapped to her.
	aliceCtr := startAs(t, alice.uid, alice.gid, "unshare", "--map-root-user", "--mount", "sleep", "600")
	hostProc := startAs(t, 0, 0, "sleep", "600")
	// Mallory's namespace with ids that are not hers (host root wrote the
	// maps): her sub range and the 100 ids just past it.
	foreignMap := startAs(t, mallory.uid, mallory.gid, "unshare", "--user", "--mount", "sleep", "600")
	past := mallory.sub + 65536
	writeMaps(t, foreignMap, fmt.Sprintf("0 %d 65536\n65536 %d 100\n", mallory.sub, past))
	// A namespace of root's whose maps are Mallory's sub ids.
	rootOwned := startAs(t, 0, 0, "unshare", "--user", "--mount", "sleep", "600")
	writeMaps(t, rootOwned, fmt.Sprintf("0 %d 100\n", mallory.sub))
	// Mallory's namespace that shares the host's mount namespace.
	hostMnt := startAs(t, mallory.uid, mallory.gid, "unshare", "--map-root-user", "sleep", "600")

	t.Run("requests that are no runtime message", func(t *testing.T) {
		// A status or info request on the user socket must neither crash
		// the agent nor list other users' containers.
		if r := mallory.run(t, dir, loopvisor, "status", "--socket", sock); r.Code == 0 {
			t.Errorf("status answered on the user socket:\n%s", r)
		}
		cfg := filepath.Join(dir, "config.json")
		check(t, os.WriteFile(cfg, []byte(`{"ociVersion":"1.0.2","process":{"capabilities":{}},"linux":{"namespaces":[{"type":"user"}],"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}}`), 0o644))
		check(t, os.Chown(cfg, mallory.uid, mallory.gid))
		if r := mallory.run(t, dir, loopvisor, "oci-config", "--listener", sock, cfg); r.Code != 0 {
			t.Errorf("oci-config asking the user socket:\n%s", r)
		}
		if a.cmd.ProcessState != nil {
			t.Fatalf("the agent died:\n%s", a.logText())
		}
	})

	for _, tc := range []struct {
		name          string
		statePid, pid string
		why           string
	}{
		{"another user's container", strconv.Itoa(aliceCtr), strconv.Itoa(aliceCtr), fmt.Sprintf("owned by uid %d", mallory.uid)},
		{"forged state: another user's init, own process", strconv.Itoa(aliceCtr), "child", fmt.Sprintf("owned by uid %d", mallory.uid)},
		{"a host process", strconv.Itoa(hostProc), strconv.Itoa(hostProc), "it is in the initial user namespace"},
		{"a pid that does not exist", "4194000", "4194000", "pidfd_open: no such process"},
		{"a map outside her ranges", strconv.Itoa(foreignMap), strconv.Itoa(foreignMap), fmt.Sprintf("maps host uids %d-%d, which are not user %s", past, past+99, mallory.name)},
		{"a user namespace owned by root", strconv.Itoa(rootOwned), strconv.Itoa(rootOwned), fmt.Sprintf("owned by uid %d", mallory.uid)},
		{"the host's mount namespace", strconv.Itoa(hostMnt), strconv.Itoa(hostMnt), "its mount namespace is not one of the user's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(a.logText(), "refused: not the connecting user's container")
			r := mallory.run(t, dir, send, sock, tc.statePid, tc.pid)
			if !strings.Contains(r.Stdout, `"served":false`) || !strings.Contains(r.Stdout, tc.why) {
				t.Errorf("want a refusal saying %q:\n%s", tc.why, r)
			}
			// Nothing serves the listener: the kernel answers ENOSYS.
			if !strings.Contains(r.Stdout, "call: errno 38") {
				t.Errorf("the trapped call was not left unserved:\n%s", r)
			}
			log := a.logText()
			if strings.Count(log, "refused: not the connecting user's container") != before+1 || !strings.Contains(log, tc.why) ||
				!strings.Contains(log, fmt.Sprintf("peer_uid=%d", mallory.uid)) {
				t.Errorf("no refusal log line with the reason %q:\n%s", tc.why, log)
			}
		})
	}

	t.Run("a listener that is not the process's filter", func(t *testing.T) {
		r := mallory.run(t, dir, send, sock, "child", "child")
		if !strings.Contains(r.Stdout, `"served":true`) {
			t.Fatalf("her own container was refused:\n%s\nagent:\n%s", r, a.logText())
		}
		if !strings.Contains(r.Stdout, "call: errno 1\n") {
			t.Errorf("a call from outside the container was not refused with EPERM:\n%s", r)
		}
		if log := a.logText(); !strings.Contains(log, "refused: trapped call from a process outside the container: EPERM") ||
			!strings.Contains(log, "is not in the container's user namespace") {
			t.Errorf("no refusal log line for the outside caller:\n%s", log)
		}
	})
	waitGone(t, a)
}
