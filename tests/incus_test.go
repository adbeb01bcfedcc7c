package tests

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// TestIncus: an unprivileged Incus container (Incus's default id range,
// the stock bookworm image imported as a split image) configured by
// examples/incus/configure.sh (raw.seccomp and raw.lxc pointing at
// `loopvisor agent --lxc-socket`) runs lxcScenario through `incus exec`;
// the same container before configure.sh cannot get a loop device.
//
// Incus is not installed by scripts/install-deps.sh (Debian has it only in
// bookworm-backports, and it brings a daemon, lxcfs and binfmt handlers):
// the test skips unless the incus client is installed, incusd answers and
// the default profile has a root disk. It leaves no container or image
// behind.
func TestIncus(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("incus"); err != nil {
		t.Skip("incus is not installed (Incus 6.0 is in bookworm-backports; see docs/incus.md)")
	}
	if r := run(t, "/", "incus", "info"); r.Code != 0 {
		t.Skipf("incusd does not answer (`incus info`): %s", strings.TrimSpace(r.Stderr))
	}
	if r := run(t, "/", "incus", "profile", "device", "get", "default", "root", "pool"); r.Code != 0 {
		t.Skipf("Incus's default profile has no root disk (incus admin init): %s", strings.TrimSpace(r.Stderr))
	}
	hostGuard(t)
	state := stateDir(t)
	sock := filepath.Join(state, "lxc.sock")
	agent := startAgent(t, state, "--lxc-socket", sock)

	tarball, err := oci.StockImage("bookworm")
	check(t, err)
	work := stateDir(t)
	meta := filepath.Join(work, "meta.tar")
	check(t, os.WriteFile(meta, incusMetadata(t), 0o644))
	alias := fmt.Sprintf("lvt-incus-%d", os.Getpid())
	if r := run(t, "/", "incus", "image", "import", meta, tarball, "--alias", alias); r.Code != 0 {
		t.Fatalf("incus image import:\n%s", r)
	}
	t.Cleanup(func() {
		if r := run(t, "/", "incus", "image", "delete", alias); r.Code != 0 {
			t.Errorf("incus image delete:\n%s", r)
		}
	})
	name := alias
	// The stock minbase has no /sbin/init.
	if r := run(t, "/", "incus", "init", alias, name, "-c", "raw.lxc=lxc.init.cmd = /bin/sleep infinity"); r.Code != 0 {
		t.Fatalf("incus init:\n%s", r)
	}
	t.Cleanup(func() {
		if r := run(t, "/", "incus", "delete", "-f", name); r.Code != 0 {
			t.Errorf("incus delete:\n%s", r)
		}
	})
	if r := run(t, "/", "incus", "config", "get", name, "volatile.idmap.next"); !strings.Contains(r.Stdout, `"Nsid":0`) || strings.Contains(r.Stdout, `"Hostid":0,`) {
		t.Fatalf("the container's root must be an unprivileged host uid: %s", r.Stdout)
	}
	incusExec := func(script string) result {
		t.Helper()
		return run(t, "/", "incus", "exec", name, "--", "sh", "-c", script)
	}
	start := func() {
		t.Helper()
		if r := run(t, "/", "incus", "start", name); r.Code != 0 {
			info := run(t, "/", "incus", "info", "--show-log", name)
			t.Fatalf("incus start:\n%s\n%s\nagent log:\n%s", r, info.Stdout, agent.logText())
		}
	}
	stop := func() {
		t.Helper()
		if r := run(t, "/", "incus", "stop", "-f", name); r.Code != 0 {
			t.Fatalf("incus stop:\n%s", r)
		}
	}

	// Without loopvisor: Incus's own profile, no proxy.
	start()
	if r := incusExec("truncate -s 16M /root/a.img && losetup -f --show /root/a.img"); r.Code == 0 || strings.Contains(r.Stdout, "/dev/loop") {
		t.Errorf("losetup worked without loopvisor:\n%s", r)
	}
	stop()

	script, err := filepath.Abs("../examples/incus/configure.sh")
	check(t, err)
	if r := run(t, "/", "env", "LXC_SOCKET="+sock, script, name, loopvisor, state, "max-loop=4"); r.Code != 0 {
		t.Fatalf("configure.sh:\n%s", r)
	}
	start()
	r := incusExec(lxcScenario("incus"))
	if r.Code != 0 {
		t.Fatalf("scenario in the Incus container:\n%s\nagent log:\n%s", r, agent.logText())
	}
	pool := strings.TrimSpace(run(t, "/", "incus", "profile", "device", "get", "default", "root", "pool").Stdout)
	src := strings.TrimSpace(run(t, "/", "incus", "storage", "get", pool, "source").Stdout)
	checkScenario(t, r.Stdout, filepath.Join(src, "containers", name, "rootfs", "lv", "incus"), "incus")
	if !strings.Contains(agent.logText(), "container=lxc/"+name) {
		t.Errorf("the agent did not serve lxc/%s:\n%s", name, agent.logText())
	}
	// A device still attached when the container stops is released.
	if r := incusExec("losetup -f --show /lv/incus/ext.img"); !strings.Contains(r.Stdout, "/dev/loop") {
		t.Fatalf("losetup before stop:\n%s", r)
	}
	stop()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(agent.logText(), "container gone; instance released") {
		if time.Now().After(deadline) {
			t.Fatalf("the instance was not released after incus stop:\n%s", agent.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// incusMetadata is the metadata tarball of a split Incus image.
func incusMetadata(t *testing.T) []byte {
	t.Helper()
	y := fmt.Sprintf("architecture: x86_64\ncreation_date: %d\nproperties:\n  os: debian\n  release: bookworm\n", time.Now().Unix())
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	check(t, w.WriteHeader(&tar.Header{Name: "metadata.yaml", Mode: 0o644, Size: int64(len(y)), ModTime: time.Now()}))
	_, err := w.Write([]byte(y))
	check(t, err)
	check(t, w.Close())
	return b.Bytes()
}
