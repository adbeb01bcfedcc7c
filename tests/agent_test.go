package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// agentProc is a running `loopvisor agent`.
type agentProc struct {
	cmd    *exec.Cmd
	state  string
	socket string
	log    *os.File
}

func startAgent(t *testing.T, state string, flags ...string) *agentProc {
	t.Helper()
	a := &agentProc{state: state, socket: filepath.Join(state, "agent.sock")}
	logf, err := os.CreateTemp("", "loopvisor-agent-log-")
	if err != nil {
		t.Fatal(err)
	}
	a.log = logf
	args := append([]string{"agent", "--socket", a.socket, "--state-dir", state, "--log-level", "info"}, flags...)
	a.cmd = exec.Command(loopvisor, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(a.socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not come up:\n%s", a.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		if err := a.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() || os.Getenv("LOOPVISOR_TEST_LOGS") != "" {
			t.Logf("agent log:\n%s", a.logText())
		}
		if err := errors.Join(logf.Close(), os.Remove(logf.Name())); err != nil {
			t.Error(err)
		}
	})
	return a
}

func (a *agentProc) logText() string {
	b, _ := os.ReadFile(a.log.Name())
	return string(b)
}

// stop ends the agent (SIGTERM, then SIGKILL after 5 s) and detaches the
// /dev it may have left mounted in its state directory.
func (a *agentProc) stop() error {
	if a.cmd.ProcessState == nil {
		// Its exit status says nothing its log does not.
		terminate(a.cmd, 5*time.Second)
	}
	err := syscall.Unmount(filepath.Join(a.state, "dev"), syscall.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount the agent's dev: %w", err)
	}
	return nil
}

// kill SIGKILLs the agent and reaps it (its exit status is the signal).
func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
}

// removeContainer kills c, waits up to 10 s for it to stop and
// force-deletes it, when the test is done with it. KillAll fails if the
// container already stopped and Wait if it will not, which is fine: delete
// -f ends what is left, and its error is reported.
func removeContainer(t *testing.T, c *oci.Container) {
	t.Helper()
	_ = c.KillAll("KILL")
	_ = c.Wait(10 * time.Second)
	if err := c.Delete(); err != nil {
		t.Error(err)
	}
}

// killContainer kills every process of the running container c.
func killContainer(t *testing.T, c *oci.Container) {
	t.Helper()
	if err := c.KillAll("KILL"); err != nil {
		t.Error(err)
	}
}

// tempBundleDir makes a bundle directory the container's root can reach,
// removed when t ends.
func tempBundleDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-bundle-")
	if err != nil {
		t.Fatal(err)
	}
	cleanupDir(t, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ociBundle makes a bundle from `runc spec` with a user namespace (root ->
// 100000) and then only `loopvisor oci-config` applied, whose root file
// system is built from the host's programs (fuse2fs included, for
// TestAgentMountLoop's image-provided helper). Tests that need nothing
// from the image but util-linux and the probes use stockOCIBundle (a
// stock Debian image) instead.
func ociBundle(t *testing.T, a *agentProc, args ...string) *oci.Bundle {
	t.Helper()
	dir := tempBundleDir(t)
	b, err := oci.NewBundle(dir, args, "fuse2fs", "truncate", "debugfs", "mkdir", "grep", "wc", "sed", "cut", "stat",
		filepath.Join(binDir, "loopctl"), filepath.Join(binDir, "loopstress"), filepath.Join(binDir, "fusehang"))
	if err != nil {
		t.Fatal(err)
	}
	ociConfig(t, a, b)
	return b
}

// ociConfig applies `loopvisor oci-config` for agent a to b's config.json
// and reloads b.Spec from it.
func ociConfig(t *testing.T, a *agentProc, b *oci.Bundle) {
	t.Helper()
	ociConfigFor(t, b, a.socket, a.state)
}

// ociConfigFor is ociConfig for the agent listening on listener with state
// directory state (an agent of the test's own, or none at all).
func ociConfigFor(t *testing.T, b *oci.Bundle, listener, state string) {
	t.Helper()
	config := filepath.Join(b.Dir, "config.json")
	r := run(t, b.Dir, loopvisor, "oci-config", "--listener", listener, "--state-dir", state, config)
	if r.Code != 0 {
		t.Fatalf("oci-config:\n%s", r)
	}
	spec, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if b.Spec, err = oci.ParseSpec(spec); err != nil {
		t.Fatal(err)
	}
}

func runtimes(t *testing.T, f func(t *testing.T, rt *oci.Runtime)) {
	for _, name := range oci.Runtimes {
		t.Run(name, func(t *testing.T) {
			rt, cleanup, err := oci.New(name)
			if err != nil {
				t.Fatal(err)
			}
			cleanupRuntime(t, cleanup)
			f(t, rt)
		})
	}
}

// TestAgentMountLoop: a stock bundle with only oci-config applied;
// losetup and mount -o loop of an ext4 image work inside (FUSE default,
// fuse2fs from the image), the host finds the data and a clean file system.
func TestAgentMountLoop(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		b := ociBundle(t, a, "sh", "-c", `set -e
cd /tmp
truncate -s 32M disk.img
mkfs.ext4 -q disk.img
d=$(losetup -f --show disk.img); echo "attached $d"
losetup -a | wc -l
losetup -d $d
mkdir -p /mnt/m
mount -o loop disk.img /mnt/m
echo written-in-container > /mnt/m/hello
umount /mnt/m
echo "left $(losetup -a | wc -l)"`)
		res, err := rt.Run(b, nil)
		if err != nil || res.Code != 0 {
			t.Fatalf("container: %v\n%s", err, res)
		}
		if !regexp.MustCompile(`attached /dev/loop\d+\n1\n`).MatchString(res.Stdout) || !strings.Contains(res.Stdout, "left 0") {
			t.Errorf("unexpected output:\n%s", res)
		}
		img := filepath.Join(b.Rootfs, "tmp", "disk.img")
		hostFsck(t, img)
		if got := debugfsCat(t, img, "/hello"); got != "written-in-container\n" {
			t.Errorf("host reads %q", got)
		}
		waitGone(t, a)
	})
}

// waitGone waits until the agent has released every instance.
func waitGone(t *testing.T, a *agentProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := run(t, "/", loopvisor, "status", "--socket", a.socket)
		if strings.Contains(r.Stdout, "no live instances") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("instances still live:\n%s", run(t, "/", loopvisor, "status", "--socket", a.socket))
}

// TestAgentNoAgent: without the agent the same bundle does not start, and
// without oci-config losetup fails inside.
func TestAgentWithoutLoopvisor(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		dir := tempBundleDir(t)
		b, err := oci.NewBundle(dir, []string{"sh", "-c", "cd /tmp && truncate -s 8M x.img && losetup -f --show x.img"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := rt.Run(b, nil)
		if err != nil || res.Code == 0 {
			t.Fatalf("losetup must fail in a plain userns container: %v\n%s", err, res)
		}
		// With oci-config applied but no agent listening, the runtime
		// refuses to start the container (as the docs say).
		state := stateDir(t)
		ociConfigFor(t, b, filepath.Join(state, "agent.sock"), state)
		res, _ = rt.Run(b, nil)
		if res.Code == 0 {
			t.Errorf("the container started without an agent:\n%s", res)
		}
	})
}

// TestAgentExecIsolationKill: exec shares the container's instance; two
// containers cannot touch each other's devices; status lists them; killing
// a container releases its devices.
func TestAgentExecIsolationKill(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		var cs []*oci.Container
		var devs []string
		for i := 0; i < 2; i++ {
			b := stockOCIBundle(t, a, "sh", "-c", "cd /tmp && truncate -s 8M a.img && sleep 1000")
			c, err := rt.Start(b)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { removeContainer(t, c) })
			cs = append(cs, c)
			var res oci.Result
			for try := 0; try < 50; try++ { // the init writes a.img
				res, err = c.Exec("losetup", "-f", "--show", "/tmp/a.img")
				if err == nil && res.Code == 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil || res.Code != 0 {
				t.Fatalf("exec losetup: %v\n%s", err, res)
			}
			devs = append(devs, strings.TrimSpace(res.Stdout))
		}
		// Exec'd processes share the instance: the device made by one exec
		// is seen and detached by another.
		res, _ := cs[0].Exec("losetup", "-a")
		if !strings.Contains(res.Stdout, devs[0]+":") || strings.Count(res.Stdout, "\n") != 1 {
			t.Errorf("container 0 should see exactly %s:\n%s", devs[0], res)
		}
		other := strings.TrimPrefix(devs[1], "/dev/loop")
		lc := filepath.Join(binDir, "loopctl") // copied into the image at the same path
		res, _ = cs[0].Exec("sh", "-c", fmt.Sprintf("%[1]s remove %[2]s; %[1]s remove64 %[2]s; %[1]s add %[2]s; %[1]s open /dev/loop%[2]s; ls /dev | grep -c '^loop[0-9]'", lc, other))
		for _, w := range []string{"ERR ENODEV\nERR ENODEV\nERR EEXIST\nERR ENOENT\n1\n"} {
			if res.Stdout != w {
				t.Errorf("isolation: got\n%s\nwant\n%s", res.Stdout, w)
			}
		}
		st := run(t, "/", loopvisor, "status", "--socket", a.socket)
		if st.Code != 0 || strings.Count(st.Stdout, "container ") != 2 || !strings.Contains(st.Stdout, "/tmp/a.img") {
			t.Errorf("status:\n%s", st)
		}
		for _, d := range devs {
			if !bound(d) {
				t.Errorf("%s no longer bound", d)
			}
		}
		// Kill the first container: its device goes, the other's stays.
		killContainer(t, cs[0])
		deadline := time.Now().Add(10 * time.Second)
		for bound(devs[0]) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if bound(devs[0]) || !bound(devs[1]) {
			t.Errorf("after kill: %s bound %v (want false), %s bound %v (want true)", devs[0], bound(devs[0]), devs[1], bound(devs[1]))
		}
		killContainer(t, cs[1])
		waitGone(t, a)
	})
}

// TestAgentRestart: the agent is killed while a container holds a device;
// the container's calls fail (ENOSYS) but its device stays; a new agent
// leaves it alone while the container runs and releases it once the
// container is gone.
func TestAgentRestart(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		state := stateDir(t)
		a := startAgent(t, state)
		b := stockOCIBundle(t, a, "sh", "-c", "cd /tmp && truncate -s 8M a.img && losetup -f --show a.img > dev && sleep 1000")
		c, err := rt.Start(b)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeContainer(t, c) })
		dev := waitFile(t, filepath.Join(b.Rootfs, "tmp", "dev"), 30*time.Second)
		a.kill()
		res, _ := c.Exec(filepath.Join(binDir, "loopctl"), "getfree")
		if !strings.Contains(res.Stdout, "ERR ENOSYS") && res.Code == 0 {
			t.Errorf("with the agent gone, trapped calls should fail: %s", res)
		}
		a2 := startAgent(t, state)
		time.Sleep(300 * time.Millisecond)
		if !bound(dev) {
			t.Fatalf("the new agent released %s of a live container:\n%s", dev, a2.logText())
		}
		killContainer(t, c)
		if err := c.Wait(10 * time.Second); err != nil {
			t.Error(err)
		}
		// The container's processes die asynchronously: gc until released.
		var r result
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if r = run(t, "/", loopvisor, "gc", "--state-dir", state); r.Code == 0 && !bound(dev) {
				break
			}
		}
		if r.Code != 0 || bound(dev) {
			t.Fatalf("gc after the container died:\n%s", r)
		}
	})
}

// TestAgentFlood: one container floods the agent with trapped calls from
// many threads (and killed children); another container's loop calls still
// complete, because each process's listener is served by its own queue.
func TestAgentFlood(t *testing.T) {
	needRoot(t)
	rt, cleanup, err := oci.New("runc")
	if err != nil {
		t.Fatal(err)
	}
	cleanupRuntime(t, cleanup)
	hostGuard(t)
	a := startAgent(t, stateDir(t))
	stress := filepath.Join(binDir, "loopstress")
	flood := stockOCIBundle(t, a, "sh", "-c", "cd /tmp && truncate -s 8M a.img && d=$(losetup -f --show a.img) && echo started > flood && "+stress+" $d 60")
	f, err := rt.Start(flood)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, f) })
	waitFile(t, filepath.Join(flood.Rootfs, "tmp", "flood"), 30*time.Second)
	lc := filepath.Join(binDir, "loopctl")
	quiet := stockOCIBundle(t, a, "sh", "-c", "n=0; while [ $n -lt 200 ]; do "+lc+" getfree >/dev/null || exit 1; n=$((n+1)); done; echo done $n")
	res, err := rt.Run(quiet, nil)
	if err != nil || res.Code != 0 || !strings.Contains(res.Stdout, "done 200") {
		t.Fatalf("the quiet container's calls did not complete while the other floods: %v\n%s", err, res)
	}
	killContainer(t, f)
	waitGone(t, a)
}
