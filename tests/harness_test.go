package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SandboxUID is the host uid the sandboxes' root maps to.
const SandboxUID = 100000

var (
	binDir    string // loopvisor and compiled probes, world-readable
	loopvisor string
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("tests: skipped: acceptance tests need root (real loop devices, user namespaces)")
		os.Exit(0)
	}
	// Loop devices are global to the machine: concurrent runs of the suite
	// (or the benchmarks) would see each other's devices.
	lock, err := os.OpenFile("/tmp/loopvisor-tests.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		panic(err)
	}
	must(syscall.Flock(int(lock.Fd()), syscall.LOCK_EX))
	dir, err := os.MkdirTemp("", "loopvisor-bin-")
	if err != nil {
		panic(err)
	}
	must(os.Chmod(dir, 0o755))
	binDir = dir
	loopvisor = filepath.Join(dir, "loopvisor")
	if out, err := exec.Command("go", "build", "-o", loopvisor, "../cmd/loopvisor").CombinedOutput(); err != nil {
		fmt.Printf("build loopvisor: %v\n%s", err, out)
		os.Exit(1)
	}
	srcs, _ := filepath.Glob("testdata/*.c")
	for _, src := range srcs {
		out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c"))
		if o, err := exec.Command("gcc", "-O2", "-Wall", "-pthread", "-o", out, src).CombinedOutput(); err != nil {
			fmt.Printf("compile %s: %v\n%s", src, err, o)
			os.Exit(1)
		}
	}
	before := snapshot()
	code := m.Run()
	after := waitSnapshot(before, 5*time.Second)
	if after != before {
		fmt.Printf("FAIL: the suite changed the host's loop devices or mounts\n--- before\n%s\n--- after\n%s\n", before, after)
		code = 1
	}
	os.RemoveAll(dir)
	// Without this the lock file is garbage once flocked: its finalizer
	// closes the fd and drops the lock in the middle of the run.
	runtime.KeepAlive(lock)
	os.Exit(code)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// snapshot describes the host state tests must not change: bound loop
// devices, existing loop devices and the mount table.
func snapshot() string {
	var b strings.Builder
	out, _ := exec.Command("losetup", "-a").Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	fmt.Fprintf(&b, "losetup -a:\n%s\n", strings.Join(lines, "\n"))
	devs, _ := filepath.Glob("/sys/devices/virtual/block/loop*")
	sort.Strings(devs)
	fmt.Fprintf(&b, "loop devices: %s\n", strings.Join(devs, " "))
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			mounts = append(mounts, f[4]+" "+strings.Join(f[len(f)-3:len(f)-1], " "))
		}
	}
	sort.Strings(mounts)
	fmt.Fprintf(&b, "mounts:\n%s\n", strings.Join(mounts, "\n"))
	return b.String()
}

// waitSnapshot gives asynchronous teardown (autoclear at last close) a
// moment to finish.
func waitSnapshot(want string, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		s := snapshot()
		if s == want || time.Now().After(deadline) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostGuard fails t if the host's loop devices or mounts differ after the
// test from before it.
func hostGuard(t *testing.T) {
	t.Helper()
	before := snapshot()
	t.Cleanup(func() {
		if after := waitSnapshot(before, 3*time.Second); after != before {
			t.Errorf("host state changed by the test\n--- before\n%s\n--- after\n%s", before, after)
		}
	})
}

// workDir returns a directory the sandbox's root owns, reachable from inside.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-work-")
	if err != nil {
		t.Fatal(err)
	}
	must(os.Chmod(dir, 0o755))
	must(os.Chown(dir, SandboxUID, SandboxUID))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stateDir returns a private state directory for one test.
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// image creates a sparse file of size bytes owned by the sandbox's root.
func image(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	must(f.Truncate(size))
	f.Close()
	must(os.Chown(p, SandboxUID, SandboxUID))
	return p
}

type result struct {
	Stdout, Stderr string
	Code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.Code, r.Stdout, r.Stderr)
}

// sandbox runs script with sh -c inside `loopvisor run` in dir.
func sandbox(t *testing.T, dir, state string, flags []string, script string) result {
	t.Helper()
	args := append([]string{"run", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--log-level", "info"}, flags...)
	args = append(args, "--", "sh", "-c", script)
	return run(t, dir, loopvisor, args...)
}

// bare runs script in the same namespaces without loopvisor.
func bare(t *testing.T, dir, state, script string) result {
	t.Helper()
	return run(t, dir, loopvisor, "run", "--bare", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--", "sh", "-c", script)
}

func run(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+":/usr/sbin:/usr/bin:/sbin:/bin")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v: timed out\n%s%s", name, args, so.String(), se.String())
	}
	return result{Stdout: so.String(), Stderr: se.String(), Code: cmd.ProcessState.ExitCode()}
}

// sandboxOK runs script in a sandbox and fails t unless it exits 0.
func sandboxOK(t *testing.T, dir, state string, flags []string, script string) string {
	t.Helper()
	r := sandbox(t, dir, state, flags, script)
	if r.Code != 0 {
		t.Fatalf("sandbox script failed:\n%s\n%s", script, r)
	}
	return r.Stdout
}

// bareFails checks that script fails without loopvisor.
func bareFails(t *testing.T, dir, state, script string) {
	t.Helper()
	r := bare(t, dir, state, script)
	if r.Code == 0 {
		t.Fatalf("without loopvisor the script should fail but exited 0:\n%s\n%s", script, r)
	}
}
