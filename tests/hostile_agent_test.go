package tests

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/internal/procstat"
	"github.com/loopvisor/loopvisor/tests/oci"
)

// Hostile suite, issue 8, attacks 8 and 9: `loopvisor agent`.

// TestAttack8SameIDTwoRuntimes: runc and crun each run a container called
// "demo" at once (each runtime has its own state root, so nothing stops
// that) against one agent. The agent must not take the id for the
// container: each gets its own instance, a device attached in one never
// shows in the other's /dev or losetup -a, and killing one releases only
// its own device. The devices are attached from exec'd processes, so both
// ways a runtime names an exec'd process are covered: runc sends its pid,
// crun sends pid 0.
func TestAttack8SameIDTwoRuntimes(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	a := startAgent(t, stateDir(t))
	const id = "demo"
	type ctr struct {
		name string
		c    *oci.Container
		dev  string
	}
	var cs []*ctr
	for _, name := range oci.Runtimes {
		rt, cleanup, err := oci.New(name)
		if err != nil {
			t.Fatal(err)
		}
		cleanupRuntime(t, cleanup)
		b := ociBundle(t, a, "sh", "-c", "cd /tmp && truncate -s 8M a.img && sleep 1000")
		// Both runtimes derive the default cgroup from the id: /demo for
		// both, and `kill --all` would kill the other runtime's demo too.
		b.Spec.Set("linux.cgroupsPath", fmt.Sprintf("/loopvisor-attack8-%s-%d", name, os.Getpid()))
		if err := b.Save(); err != nil {
			t.Fatal(err)
		}
		c, err := rt.StartID(b, id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeContainer(t, c) })
		cs = append(cs, &ctr{name: name, c: c})
	}
	for _, x := range cs {
		var res oci.Result
		var err error
		for try := 0; try < 50; try++ { // the init writes a.img
			res, err = x.c.Exec("losetup", "-f", "--show", "/tmp/a.img")
			if err == nil && res.Code == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil || res.Code != 0 {
			t.Errorf("%s %s: exec losetup: %v\n%s", x.name, id, err, res)
			continue
		}
		x.dev = strings.TrimSpace(res.Stdout)
	}
	st := run(t, "/", loopvisor, "status", "--socket", a.socket)
	if n := strings.Count(st.Stdout, "container "+id+" "); n != 2 {
		t.Errorf("want two instances for container id %s (one per runtime), got %d:\n%s", id, n, st)
	}
	for _, x := range cs {
		res, _ := x.c.Exec("sh", "-c", "losetup -a | cut -d: -f1; echo --; ls /dev | grep '^loop[0-9]'")
		want := "--\n"
		if x.dev != "" {
			want = x.dev + "\n--\n" + strings.TrimPrefix(x.dev, "/dev/") + "\n"
		}
		if res.Stdout != want {
			t.Errorf("%s %s sees other devices (losetup -a, then /dev):\n%s\nwant only its own %q:\n%s", x.name, id, res.Stdout, x.dev, want)
		}
	}
	if t.Failed() {
		t.Fatalf("status:\n%s", run(t, "/", loopvisor, "status", "--socket", a.socket))
	}
	// Each keeps its own instance: killing runc's demo releases its device
	// and leaves crun's.
	killContainer(t, cs[0].c)
	deadline := time.Now().Add(10 * time.Second)
	for bound(cs[0].dev) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if bound(cs[0].dev) || !bound(cs[1].dev) {
		t.Errorf("after killing %s's %s: %s bound %v (want false), %s bound %v (want true)",
			cs[0].name, id, cs[0].dev, bound(cs[0].dev), cs[1].dev, bound(cs[1].dev))
	}
	res, _ := cs[1].c.Exec("sh", "-c", "losetup -a | cut -d: -f1")
	if res.Stdout != cs[1].dev+"\n" {
		t.Errorf("%s %s after the other one died: losetup -a %q, want %q", cs[1].name, id, res.Stdout, cs[1].dev)
	}
	killContainer(t, cs[1].c)
	waitGone(t, a)
	if log := a.logText(); !strings.Contains(log, "another container") {
		t.Errorf("the agent did not log that two containers share the id:\n%s", log)
	}
}

// burstContainers is how many containers TestAttack9ExitBurst hands the
// agent; `make bench` uses the same program (bench/csrc/agentburst.c).
const burstContainers = 1000

// TestAttack9ExitBurst: 1,000 containers, each a process in its own user
// and mount namespace with a notify filter, are handed to one agent as
// runc hands them (ContainerProcessState + SCM_RIGHTS); they all make
// trapped calls at once, then all exit at once. The agent must stay under
// 64 OS threads and 100 MiB RSS throughout and afterwards (resource
// bounds, not timings).
func TestAttack9ExitBurst(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	prog := filepath.Join(binDir, "agentburst")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-o", prog, "../bench/csrc/agentburst.c").CombinedOutput(); err != nil {
		t.Fatalf("compile agentburst: %v\n%s", err, out)
	}
	a := startAgent(t, stateDir(t), "--log-level", "warn") // 1,000 containers: 4,000 info lines
	s := procstat.Sample(a.cmd.Process.Pid, 5*time.Millisecond)
	b := startBurst(t, prog, a.socket)
	b.do(t, fmt.Sprintf("spawn %d", burstContainers))
	// Every container's first call waits until the agent serves it.
	if f := b.do(t, "all 1"); f[3] != "0" {
		t.Fatalf("calls not served: %v\n%s", f, a.logText())
	}
	if f := b.do(t, "all 20"); f[3] != "0" {
		t.Fatalf("calls not served: %v", f)
	}
	attached := s.Peak()
	b.do(t, "exit")
	waitGoneFor(t, a, 60*time.Second)
	burst := s.Peak()
	time.Sleep(500 * time.Millisecond)
	s.Stop()
	after := procstat.Read(a.cmd.Process.Pid)
	t.Logf("%d containers: peak while attached and calling %d threads %d MiB; through the exit burst %d threads %d MiB; after %d threads %d MiB",
		burstContainers, attached.Threads, attached.RSSKiB>>10, burst.Threads, burst.RSSKiB>>10, after.Threads, after.RSSKiB>>10)
	if burst.Threads > 64 || after.Threads > 64 {
		t.Errorf("agent threads: peak %d, after the burst %d; want <= 64", burst.Threads, after.Threads)
	}
	if burst.RSSKiB >= 100<<10 {
		t.Errorf("agent RSS peak %d KiB, want < 100 MiB", burst.RSSKiB)
	}
}

// waitGoneFor is waitGone with a longer deadline.
func waitGoneFor(t *testing.T, a *agentProc, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		r := run(t, "/", loopvisor, "status", "--socket", a.socket)
		if strings.Contains(r.Stdout, "no live instances") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := run(t, "/", loopvisor, "status", "--socket", a.socket)
	t.Errorf("%d instances still live after %v", strings.Count(r.Stdout, "container "), d)
}

// burst drives bench/csrc/agentburst.
type burst struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startBurst(t *testing.T, prog, socket string) *burst {
	t.Helper()
	cmd := exec.Command(prog, socket)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &burst{cmd: cmd, in: in, out: bufio.NewReader(out)}
	// The prober is killed: neither the pipe's close nor its exit status
	// can tell anything.
	t.Cleanup(func() { _ = in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return b
}

// do sends one command and returns the fields of its answer.
func (b *burst) do(t *testing.T, command string) []string {
	t.Helper()
	if _, err := fmt.Fprintln(b.in, command); err != nil {
		t.Fatal(err)
	}
	line, err := b.out.ReadString('\n')
	if err != nil {
		t.Fatalf("agentburst %s: %v", command, err)
	}
	return strings.Fields(line)
}

// TestAttack8ForgedListeners: listeners that name an existing container's
// id but come from processes outside it never join its instance. A
// process in namespaces of its own claims container c1's init as its init
// (runc exec's message), and another names no pid at all (crun exec's
// message): both are refused, their trapped calls fail with ENOSYS, and
// c1's own process is still served by the one instance of c1.
func TestAttack8ForgedListeners(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	prog := filepath.Join(binDir, "agentburst")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-o", prog, "../bench/csrc/agentburst.c").CombinedOutput(); err != nil {
		t.Fatalf("compile agentburst: %v\n%s", err, out)
	}
	a := startAgent(t, stateDir(t))
	b := startBurst(t, prog, a.socket)
	f := b.do(t, "spawnid c1 -1 -1") // c1's init
	if f[0] != "spawned" || len(f) != 3 {
		t.Fatalf("spawnid: %v", f)
	}
	init := f[2]
	if f := b.do(t, "single 10 0"); f[2] != "0" {
		t.Fatalf("c1's own process is not served: %v\n%s", f, a.logText())
	}
	b.do(t, "spawnid c1 "+init+" -1") // "I am an exec'd process of c1, whose init is INIT"
	b.do(t, "spawnid c1 0 0")         // "I am an exec'd process of c1" (no pid)
	for i, who := range []string{"names c1's init", "names no pid"} {
		if f := b.do(t, fmt.Sprintf("single 10 %d", i+1)); f[3] != "ENOSYS" {
			t.Errorf("a process in other namespaces that %s: its calls got %v, want ENOSYS (not served)", who, f)
		}
	}
	if f := b.do(t, "single 10 0"); f[2] != "0" {
		t.Errorf("c1's own process is no longer served: %v", f)
	}
	st := run(t, "/", loopvisor, "status", "--socket", a.socket)
	if strings.Count(st.Stdout, "container c1 ") != 1 || !strings.Contains(st.Stdout, "pid "+init+"  processes 1 ") {
		t.Errorf("want one instance of c1 with init %s and one process:\n%s", init, st)
	}
	log := a.logText()
	for _, want := range []string{"refused: the process is not in the user, pid and mount namespaces of the container's init",
		"refused: the runtime sent no pid and the process making the first trapped call is in the namespaces of no live container of this id"} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q", want)
		}
	}
	b.do(t, "exit")
	waitGone(t, a)
}
