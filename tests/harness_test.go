package tests

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
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

// noRoot is why the suite cannot run here, or "" when it runs as root.
var noRoot string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// No set-up: every test skips itself, visibly, in needRoot.
		noRoot = "real loop devices, mounts and user namespaces; run as root"
		os.Exit(m.Run())
	}
	os.Exit(runAsRoot(m))
}

// runAsRoot builds loopvisor and the probes, runs the tests holding the
// suite's lock and checks that they left the host as they found it.
func runAsRoot(m *testing.M) int {
	// Loop devices are global to the machine: concurrent runs of the suite
	// (or the benchmarks) would see each other's devices.
	lock, err := os.OpenFile("/tmp/loopvisor-tests.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Println("tests:", err)
		return 1
	}
	// Closing the file drops the lock, so close it only at the end: the
	// deferred close also keeps it reachable, else its finalizer would
	// close it and drop the lock in the middle of the run.
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		fmt.Println("tests: flock /tmp/loopvisor-tests.lock:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "loopvisor-bin-")
	if err != nil {
		fmt.Println("tests:", err)
		return 1
	}
	code := func() int {
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Println("tests:", err)
			return 1
		}
		binDir = dir
		loopvisor = filepath.Join(dir, "loopvisor")
		if out, err := exec.Command("go", "build", "-o", loopvisor, "../cmd/loopvisor").CombinedOutput(); err != nil {
			fmt.Printf("build loopvisor: %v\n%s", err, out)
			return 1
		}
		srcs, err := filepath.Glob("testdata/*.c")
		if err != nil {
			fmt.Println("tests:", err)
			return 1
		}
		for _, src := range srcs {
			out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c"))
			if o, err := exec.Command("gcc", "-O2", "-Wall", "-pthread", "-o", out, src).CombinedOutput(); err != nil {
				fmt.Printf("compile %s: %v\n%s", src, err, o)
				return 1
			}
		}
		before := snapshot()
		code := m.Run()
		after := waitSnapshot(before, 5*time.Second)
		if after != before {
			fmt.Printf("FAIL: the suite changed the host's loop devices, mounts or device nodes\n--- before\n%s\n--- after\n%s\n", before, after)
			code = 1
		}
		return code
	}()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Println("tests: removing the build directory:", err)
		code = 1
	}
	return code
}

// needRoot skips t, saying why, when the suite does not run as root. Every
// test calls it first: without root there is nothing to test, and a bare
// "ok" would read as a pass.
func needRoot(t *testing.T) {
	t.Helper()
	if noRoot != "" {
		t.Skip("requires root: " + noRoot)
	}
}

// check fails t at once if err is set: for set-up steps the test cannot
// go on without.
func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// removeIfExists removes p; a p that does not exist is not an error.
func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// pids lists the processes in /proc, as they are when it reads it.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
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
	// The host's own device nodes keep their owners and modes: an engine
	// that chowns a node it bind-mounts into a container (crun 1.8.1
	// chowns the container's standard streams, and podman gives it the
	// host's /dev/null as stdin) hands the node to the container's root.
	for _, n := range hostNodes {
		var st syscall.Stat_t
		if err := syscall.Lstat(n, &st); err == nil {
			fmt.Fprintf(&b, "%s %d:%d %o\n", n, st.Uid, st.Gid, st.Mode)
		}
	}
	return b.String()
}

// hostNodes are the host's device nodes a container is most often given.
var hostNodes = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/loop-control", "/dev/fuse"}

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

// hostGuard fails t if the host's loop devices, mounts or device nodes'
// owners and modes differ after the test from before it.
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
	check(t, os.Chmod(dir, 0o755))
	check(t, os.Chown(dir, SandboxUID, SandboxUID))
	cleanupDir(t, dir)
	return dir
}

// sandboxMkdir makes dir/name, a directory the sandbox's root owns.
func sandboxMkdir(t *testing.T, dir, name string) {
	t.Helper()
	p := filepath.Join(dir, name)
	check(t, os.Mkdir(p, 0o755))
	check(t, os.Chown(p, SandboxUID, SandboxUID))
}

// stateDir returns a private state directory for one test.
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-state-")
	if err != nil {
		t.Fatal(err)
	}
	cleanupDir(t, dir)
	return dir
}

// cleanupDir removes dir when t ends. Failing to is an error: it means a
// mount or a busy file was left inside.
func cleanupDir(t *testing.T, dir string) {
	t.Helper()
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// image creates a sparse file of size bytes owned by the sandbox's root.
func image(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	check(t, f.Truncate(size))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check(t, os.Chown(p, SandboxUID, SandboxUID))
	return p
}

// ext4Dirs returns the directories of a differential test: one for the
// host's run of a script and one for the sandbox's, each with a 32 MiB
// ext4 fs.img and the named directories owned by the sandbox's root, and
// a state directory.
func ext4Dirs(t *testing.T, subdirs ...string) (hostDir, dir, state string) {
	t.Helper()
	hostDir, dir, state = workDir(t), workDir(t), stateDir(t)
	for _, d := range []string{hostDir, dir} {
		fsImage(t, d, "fs.img", "mkfs.ext4", 32<<20)
		for _, m := range subdirs {
			sandboxMkdir(t, d, m)
		}
	}
	return hostDir, dir, state
}

// fsImage makes a file system of size bytes at dir/name with mkfs
// (mkfs.ext4, mkfs.ext3), owned by the sandbox's root.
func fsImage(t *testing.T, dir, name, mkfs string, size int64) {
	t.Helper()
	p := image(t, dir, name, size)
	if out, err := exec.Command(mkfs, "-q", "-F", p).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", mkfs, err, out)
	}
	check(t, os.Chown(p, SandboxUID, SandboxUID))
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
	r, err := sandboxCommand(dir, state, flags, script)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sandboxCommand is sandbox for goroutines other than the test's.
func sandboxCommand(dir, state string, flags []string, script string) (result, error) {
	args := append([]string{"run", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--log-level", "info"}, flags...)
	args = append(args, "--", "sh", "-c", script)
	return command(dir, loopvisor, args...)
}

// sandboxCmd is `loopvisor run` of script in dir, not started, for a test
// that holds the sandbox in the background (to signal or kill it).
func sandboxCmd(dir, state, script string) *exec.Cmd {
	cmd := exec.Command(loopvisor, "run", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = testEnv()
	return cmd
}

// terminate sends cmd's process SIGTERM, waits for it to end and
// SIGKILLs it after grace; it reports whether SIGTERM was enough. The exit
// status is the caller's to read in cmd.ProcessState. (Signal and Kill
// fail only once the process has ended, which Wait then reports.)
func terminate(cmd *exec.Cmd, grace time.Duration) bool {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// testEnv is the environment of the commands the tests run: the probes and
// loopvisor first on PATH.
func testEnv() []string {
	return append(os.Environ(), "PATH="+binDir+":/usr/sbin:/usr/bin:/sbin:/bin")
}

// bare runs script in the same namespaces without loopvisor.
func bare(t *testing.T, dir, state, script string) result {
	t.Helper()
	return run(t, dir, loopvisor, "run", "--bare", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--", "sh", "-c", script)
}

// run runs name in dir with the test PATH and fails t if it cannot be
// started or does not end within two minutes. Call it from the test's
// goroutine only; other goroutines use command.
func run(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	r, err := command(dir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// command is run for any goroutine: it reports failures to start or to end
// in time as an error and never touches a testing.T.
func command(dir, name string, args ...string) (result, error) {
	return commandFor(2*time.Minute, dir, name, args...)
}

// commandFor is command with a timeout of its own. The error for a
// command that timed out holds the last 40 lines of its stdout and
// stderr.
func commandFor(timeout time.Duration, dir, name string, args ...string) (result, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = testEnv()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	done := make(chan struct{})
	go func() {
		// A non-zero exit is in ProcessState; other errors (copying
		// output) leave nothing to report beyond the output itself.
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		// Kill fails only if the process already ended: Wait says so.
		_ = cmd.Process.Kill()
		<-done
		return result{}, fmt.Errorf("%s %v: timed out after %v\n%s%s", name, args, timeout, tail(so.String(), 40), tail(se.String(), 40))
	}
	return result{Stdout: so.String(), Stderr: se.String(), Code: cmd.ProcessState.ExitCode()}, nil
}

// outcome is what sandboxAsync delivers.
type outcome struct {
	r   result
	err error
}

// sandboxAsync runs sandboxCommand in a goroutine of its own. Only the
// test's goroutine may fail the test: it receives the outcome and checks it.
func sandboxAsync(dir, state string, flags []string, script string) <-chan outcome {
	c := make(chan outcome, 1)
	go func() {
		r, err := sandboxCommand(dir, state, flags, script)
		c <- outcome{r, err}
	}()
	return c
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

// TestEveryTestNeedsRoot keeps the rule that makes a run without root
// visibly skip rather than pass: every test of the package calls needRoot
// first.
func TestEveryTestNeedsRoot(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") ||
				fn.Name.Name == "TestMain" || fn.Name.Name == "TestEveryTestNeedsRoot" {
				continue
			}
			if !callsNeedRootFirst(fn) {
				t.Errorf("%s: %s must call needRoot(t) first", fset.Position(fn.Pos()), fn.Name.Name)
			}
		}
	}
}

func callsNeedRootFirst(fn *ast.FuncDecl) bool {
	if fn.Body == nil || len(fn.Body.List) == 0 {
		return false
	}
	es, ok := fn.Body.List[0].(*ast.ExprStmt)
	if !ok {
		return false
	}
	call, ok := es.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	id, ok := call.Fun.(*ast.Ident)
	return ok && id.Name == "needRoot"
}

// cleanupRuntime runs an oci.New cleanup when t ends and reports its error:
// a container it could not delete is a leak.
func cleanupRuntime(t *testing.T, cleanup func() error) {
	t.Helper()
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
}
