package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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

	// A directory only host root may search.
	secret, err := os.MkdirTemp("", "loopvisor-secret-")
	check(t, err)
	cleanupDir(t, secret)
	check(t, os.Chmod(secret, 0o700))
	present, absent := filepath.Join(secret, "present"), filepath.Join(secret, "absent")
	check(t, os.Mkdir(present, 0o700))

	r := mallory.run(t, dir, filepath.Join(binDir, "usersetns"), sock, present, absent)
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
