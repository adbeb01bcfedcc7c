package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// secretPaths makes a directory only host root may search and returns
// present, a directory in it, and absent, a path in it that does not
// exist: whether a user can tell them apart is the oracle the tests close.
func secretPaths(t *testing.T) (present, absent string) {
	t.Helper()
	secret, err := os.MkdirTemp("", "loopvisor-secret-")
	check(t, err)
	cleanupDir(t, secret)
	check(t, os.Chmod(secret, 0o700))
	present, absent = filepath.Join(secret, "present"), filepath.Join(secret, "absent")
	check(t, os.Mkdir(present, 0o700))
	return present, absent
}

// TestAttackUserSocketOutsideMountNS: the owner of a container's user
// namespace may join that namespace from the host (it holds every
// capability there) without leaving the host's mount namespace. A process
// that does so after handing the agent its own listener for its container
// passes a check of the caller's user namespace only, and its trapped
// mount(2) was served with paths resolved, as host root, in the host's
// root: whether a path under a directory the user cannot search exists
// showed in the errno (ENOENT against EPERM). The kernel answers EACCES for
// both, and the agent must refuse the caller outright (it is not in a
// mount namespace of the container's).
func TestAttackUserSocketOutsideMountNS(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	mallory := newHostUser(t)
	a, sock := userAgent(t)
	dir := mallory.dir(t)

	present, absent := secretPaths(t)

	r := mallory.run(t, dir, filepath.Join(binDir, "usersend"), "--setns", sock, present, absent)
	if !strings.Contains(r.Stdout, `"served":true`) || !strings.Contains(r.Stdout, "joined the container's user namespace") {
		t.Fatalf("setup failed:\n%s\nagent:\n%s", r, a.logText())
	}
	errnoOf := func(what, path string) string {
		m := regexp.MustCompile(regexp.QuoteMeta(what+" "+path+": errno ") + `(\d+)`).FindStringSubmatch(r.Stdout)
		if m == nil {
			t.Fatalf("no %q line for %s:\n%s", what, path, r)
		}
		return m[1]
	}
	eacces, eperm := fmt.Sprint(int(unix.EACCES)), fmt.Sprint(int(unix.EPERM))
	// The kernel's answer, without loopvisor: the lookup fails for both.
	for _, p := range []string{present, absent} {
		if got := errnoOf("stat", p); got != eacces {
			t.Fatalf("stat %s as the caller: errno %s, want EACCES (%s)", p, got, eacces)
		}
	}
	// With loopvisor: the same answer for both (refused), never a
	// difference that tells whether the path exists.
	mp, ma := errnoOf("mount", present), errnoOf("mount", absent)
	if mp != ma {
		t.Errorf("mount(2) from outside the container's mount namespace tells whether a path the user cannot reach exists: errno %s for %s, errno %s for %s\nagent:\n%s",
			mp, present, ma, absent, a.logText())
	}
	for _, p := range []string{present, absent} {
		if got := errnoOf("mount", p); got != eperm {
			t.Errorf("mount on %s from outside the container's mount namespace: errno %s, want EPERM (%s), refused", p, got, eperm)
		}
	}
	if !strings.Contains(a.logText(), "refused: trapped call from a process outside the container") {
		t.Errorf("no refusal log line:\n%s", a.logText())
	}
	waitGone(t, a)
}

// TestAttackUserDevCgroupShared: a user's runtime runs in a device cgroup
// it shares with a process that is not the user's (here a root service
// confined by a device allow-list, running the user's job). The agent
// granted the user's container's devices to that cgroup, so the root
// process could open /dev/loop-control, which its device cgroup denies.
// A user's container must get no grant in a cgroup holding processes that
// are neither in its user namespace nor the user's own.
func TestAttackUserDevCgroupShared(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	if _, err := os.Stat("/sys/fs/cgroup/devices/devices.allow"); err != nil {
		t.Skip("no cgroup v1 devices hierarchy here")
	}
	u := newHostUser(t)
	a, sock := userAgent(t)
	dir := u.dir(t)

	cg := fmt.Sprintf("/sys/fs/cgroup/devices/loopvisor-attack-%d", os.Getpid())
	check(t, os.Mkdir(cg, 0o755))
	t.Cleanup(func() {
		for _, p := range strings.Fields(readFile(cg + "/cgroup.procs")) {
			_ = os.WriteFile("/sys/fs/cgroup/devices/cgroup.procs", []byte(p), 0o644)
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("removing %s: %v", cg, err)
		}
	})
	check(t, os.WriteFile(cg+"/devices.deny", []byte("a"), 0o644))
	for _, rule := range []string{"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"} {
		check(t, os.WriteFile(cg+"/devices.allow", []byte(rule), 0o644))
	}
	join := "echo $$ > " + cg + "/cgroup.procs && "
	// The root service (its confined process) in that cgroup.
	startAs(t, 0, 0, "sh", "-c", join+"exec sleep 600")
	tryControl := func() result {
		out, err := exec.Command("sh", "-c", join+"exec 3<>/dev/loop-control && echo opened").CombinedOutput()
		return result{Stdout: string(out), Code: exitCode(err)}
	}
	if r := tryControl(); strings.Contains(r.Stdout, "opened") {
		t.Fatalf("the cgroup does not deny /dev/loop-control, so this test proves nothing:\n%s", r)
	}

	// The user's job, started by the service in its cgroup.
	cmd := exec.Command("sh", "-c", join+"exec setpriv --reuid "+fmt.Sprint(u.uid)+" --regid "+fmt.Sprint(u.gid)+" --clear-groups -- "+
		loopvisor+" run --agent "+sock+" -- sh -c 'while [ ! -e release ]; do sleep 0.1; done'")
	cmd.Dir = dir
	cmd.Env = u.command(dir).Env
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	check(t, cmd.Start())
	done := false
	release := func() {
		if done {
			return
		}
		done = true
		check(t, os.WriteFile(filepath.Join(dir, "release"), nil, 0o644))
		_ = cmd.Wait()
	}
	t.Cleanup(release)
	// Until the agent has set the container up (its instance exists).
	for deadline := time.Now().Add(time.Minute); !strings.Contains(a.logText(), "container instance created"); {
		if time.Now().After(deadline) {
			t.Fatalf("the user's container was not set up:\n%s\nagent:\n%s", out.String(), a.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := tryControl(); strings.Contains(r.Stdout, "opened") {
		t.Errorf("a root process sharing the user's device cgroup opened /dev/loop-control once the user's container was served (devices.list: %q)\nagent:\n%s",
			readFile(cg+"/devices.list"), a.logText())
	}
	release()
	waitGone(t, a)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestAttackUnprivRunPathOracle: `loopvisor run` without root gives the
// user's sandbox the host's root directory; its root is the user's own uid.
// The agent looks a mount(2) target up as host root before anything else,
// so whether a path under a directory only host root may search exists
// shows in the errno (ENOENT for a missing one, the image's EIO or the
// attach's EACCES for one that exists). The kernel answers EACCES to both.
func TestAttackUnprivRunPathOracle(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	u := newHostUser(t)
	a, sock := userAgent(t)
	dir := u.dir(t)
	present, absent := secretPaths(t)

	script := fmt.Sprintf(`d=$(losetup -f) || exit 1
for p in %s %s; do
  echo "stat $p: $(stat -c %%n $p 2>&1 | grep -o 'Permission denied\|No such file')"
  echo "mount $p: $(mountcall ext4 $d $p 0)"
done`, present, absent)
	r := u.run(t, dir, loopvisor, "run", "--agent", sock, "--", "sh", "-c", script)
	if r.Code != 0 || !strings.Contains(r.Stdout, "mount "+absent+":") {
		t.Fatalf("loopvisor run:\n%s\nagent:\n%s", r, a.logText())
	}
	for _, p := range []string{present, absent} {
		if !strings.Contains(r.Stdout, "stat "+p+": Permission denied") {
			t.Fatalf("the sandbox can look %s up itself, so this test proves nothing:\n%s", p, r)
		}
		if !strings.Contains(r.Stdout, "mount "+p+": EACCES") {
			t.Errorf("mount(2) on %s: want the kernel's EACCES (the lookup as the caller fails):\n%s\nagent:\n%s", p, r, a.logText())
		}
	}
	waitGone(t, a)
}

// TestAttackUserSocketSubIDPeer: a process in a user namespace of the
// user's, running as one of its sub ids, connects to the user socket. The
// kernel gives the agent that sub id as the peer's uid: each of the
// user's 65536 sub ids was a user of its own, with its own
// --max-user-containers, --max-loop-per-uid and connection limits. The
// agent must count it as the user who created the outermost namespace.
func TestAttackUserSocketSubIDPeer(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	mallory := newHostUser(t)
	a, sock := userAgent(t)
	// Her namespace, mapped to her sub ids (as newuidmap would).
	ns := startAs(t, mallory.uid, mallory.gid, "unshare", "--user", "--mount", "sleep", "600")
	writeMaps(t, ns, fmt.Sprintf("0 %d 65536\n", mallory.sub))

	cmd := exec.Command("nsenter", "-t", fmt.Sprint(ns), "-U", "-m", "--", filepath.Join(binDir, "usersend"), sock, "child", "child")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reply:") {
		t.Fatalf("usersend as her sub id: %v\n%s\nagent:\n%s", err, out, a.logText())
	}
	log := a.logText()
	if strings.Contains(log, fmt.Sprintf("peer_uid=%d ", mallory.sub)) || strings.Contains(log, fmt.Sprintf(`owner="uid %d"`, mallory.sub)) {
		t.Errorf("her sub id %d was taken for a user of its own:\n%s\n%s", mallory.sub, out, log)
	}
	if !strings.Contains(log, fmt.Sprintf("peer_uid=%d ", mallory.uid)) || !strings.Contains(string(out), `"served":true`) {
		t.Errorf("the connection was not served as hers (uid %d):\n%s\n%s", mallory.uid, out, log)
	}
	waitGone(t, a)
}
