package tests

import (
	"strings"
	"testing"
)

// TestStress: many threads, signals that interrupt or restart trapped calls,
// and children killed in the middle of them must neither crash nor wedge
// the supervisor, and the sandbox keeps working afterwards.
func TestStress(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	r := sandbox(t, dir, state, nil, `set -e
d=$(losetup -f --show a.img)
loopstress "$d" 3
losetup -d "$d"
e=$(losetup -f --show a.img) && losetup -d "$e" && echo still-works`)
	if r.Code != 0 || !strings.Contains(r.Stdout, "stress ok") || !strings.Contains(r.Stdout, "still-works") {
		t.Fatalf("stress:\n%s", r)
	}
	for _, bad := range []string{"panic", "level=error", "level=fatal"} {
		if strings.Contains(r.Stderr, bad) {
			t.Errorf("supervisor logged %q:\n%s", bad, r.Stderr)
		}
	}
	t.Log(strings.TrimSpace(r.Stdout))
}

// TestDyingSandbox: the command dies by SIGKILL while holding devices and
// with trapped calls in flight; run reports 128+9 and releases everything
// (hostGuard).
func TestDyingSandbox(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "a.img", 8<<20)
	r := sandbox(t, dir, state, nil, `d=$(losetup -f --show a.img); loopstress "$d" 30 & sleep 0.5; kill -9 $$`)
	if r.Code != 128+9 {
		t.Fatalf("want exit 137:\n%s", r)
	}
}
