package tests

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// engineScript runs in a stock Debian bookworm root file system under an
// engine: losetup, LOOP_CTL_REMOVE (the probe loopctl), then mount -o loop
// of an ext4 image made inside, a write and umount, in /work (a host
// directory the container's root owns). It prints what the container's v1
// device cgroup says of the loop device while the container holds it and
// after it gave it back: "allowed" (an exact rule), "all" (the cgroup
// allows every device), "denied", or "none" (no devices.list to read).
const engineScript = `set -e
cd /work
rm -f disk.img
truncate -s 32M disk.img
d=$(losetup -f --show disk.img)
n=${d#/dev/loop}
echo "attached $d"
losetup -a
list=/sys/fs/cgroup/devices/devices.list
cg() {
  if [ ! -r $list ]; then echo none
  elif grep -qx "b 7:$n rw" $list; then echo allowed
  elif grep -qx 'a \*:\* rwm' $list; then echo all
  else echo denied; fi
}
echo "cgroup holding: $(cg)"
losetup -d $d
/usr/local/bin/loopctl remove $n
i=0
while [ $i -lt 100 ] && [ "$(cg)" = allowed ]; do sleep 0.1; i=$((i+1)); done
echo "cgroup given back: $(cg)"
mkfs.ext4 -q disk.img
mkdir -p /mnt/m
mount -o loop disk.img /mnt/m
grep " /mnt/m " /proc/self/mountinfo | sed 's/.* - /fs /' | cut -d' ' -f1-3
echo written-by-engine > /mnt/m/hello.txt
umount /mnt/m
echo "left $(losetup -a | wc -l)"
`

// checkEngineRun checks engineScript's output and the image it left in
// work: a clean ext4 file system (host e2fsck -fn) holding what was written.
// cgroup is what the device cgroup should say while the container holds the
// device and after it gave it back.
func checkEngineRun(t *testing.T, res result, work, holding, givenBack string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^attached /dev/loop\d+\n/dev/loop\d+: .*\(/work/disk\.img\)\n`).MatchString(res.Stdout) {
		t.Errorf("losetup output:\n%s", res)
	}
	if !strings.Contains(res.Stdout, "\nOK 0\n") {
		t.Errorf("LOOP_CTL_REMOVE of the container's own device should succeed:\n%s", res)
	}
	if want := "cgroup holding: " + holding + "\n"; !strings.Contains(res.Stdout, want) {
		t.Errorf("device cgroup while the container holds the device: want %q\n%s", want, res)
	}
	if want := "cgroup given back: " + givenBack + "\n"; !strings.Contains(res.Stdout, want) {
		t.Errorf("device cgroup after the container gave the device back: want %q\n%s", want, res)
	}
	if !regexp.MustCompile(`(?m)^fs fuse\.ext4 /dev/loop\d+$`).MatchString(res.Stdout) {
		t.Errorf("the mount should be fuse.ext4 from its loop device:\n%s", res)
	}
	if !strings.HasSuffix(res.Stdout, "left 0\n") {
		t.Errorf("devices left after umount:\n%s", res)
	}
	img := filepath.Join(work, "disk.img")
	hostFsck(t, img)
	if got := debugfsCat(t, img, "/hello.txt"); got != "written-by-engine\n" {
		t.Errorf("host reads %q", got)
	}
}

// checkGrantLog checks that the agent says it allowed the loop device
// engineScript attached in the container's device cgroup and denied it
// again when the container gave it back.
func checkGrantLog(t *testing.T, a *agentProc, res result) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^attached /dev/loop(\d+)$`).FindStringSubmatch(res.Stdout)
	if m == nil {
		t.Errorf("no device attached:\n%s", res)
		return
	}
	log := a.logText()
	for _, what := range []string{"allowed", "denied again"} {
		if !regexp.MustCompile(`device cgroup: ` + what + `.*device="b 7:` + m[1] + `"`).MatchString(log) {
			t.Errorf("the agent should log that the device cgroup %s b 7:%s:\n%s", what, m[1], log)
		}
	}
}

// cgroupGuard removes, when t ends, the cgroup name (a parent an engine
// makes for its containers, e.g. podman's libpod_parent) in every mounted
// hierarchy where it did not exist before t; an engine leaves them behind.
func cgroupGuard(t *testing.T, name string) {
	t.Helper()
	roots, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		t.Fatal(err)
	}
	var fresh []string
	for _, r := range roots {
		p := filepath.Join(r, name)
		if _, err := os.Stat(filepath.Join(r, "cgroup.procs")); err != nil {
			continue // not a hierarchy
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			fresh = append(fresh, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range fresh {
			if err := rmdirCgroup(p); err != nil {
				t.Errorf("cgroup %s left behind: %v", p, err)
			}
		}
	})
}

// rmdirCgroup removes cgroup p and its child cgroups (podman keeps conmon
// in libpod_parent/conmon), deepest first; a cgroup that still has
// processes stays, and is an error.
func rmdirCgroup(p string) error {
	ents, err := os.ReadDir(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := rmdirCgroup(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	return nil
}

// podmanUlimits are the limits the tests give podman containers. podman
// 4.3.1 asks for nofile 1048576 by default; a process in a user namespace
// cannot raise its hard limits, and this machine's hard nofile is lower
// (20000), so both runtimes fail with "setrlimit RLIMIT_NOFILE: Operation
// not permitted" unless the limits are at most the caller's.
func podmanUlimits(t *testing.T) []string {
	t.Helper()
	var nofile syscall.Rlimit
	check(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile))
	n := strconv.FormatUint(nofile.Max, 10)
	return []string{"--ulimit", "nofile=" + n + ":" + n, "--ulimit", "nproc=4096:4096"}
}

// withEnv runs name with extra environment variables.
func withEnv(dir string, env []string, name string, args ...string) (result, error) {
	return command(dir, "env", append(append(env, name), args...)...)
}

// TestPodmanRootful: rootful podman 4.3.1 with crun and with runc runs
// engineScript in the stock Debian bookworm root file system (podman run
// --rootfs, owners shifted to 100000) through examples/podman: a profile
// made by make-profile.sh (podman's own default profile + oci-config) and
// run.sh. Without loopvisor (podman's default profile, the same user
// namespace) losetup fails. podman drops --device-cgroup-rule under a user
// namespace: runc then denies loop devices unless the agent grants them,
// and the agent denies them again once the container gave the device back;
// crun leaves the container's device cgroup open ("a *:* rwm").
func TestPodmanRootful(t *testing.T) {
	needRoot(t)
	needTools(t, "podman", "jq", "e2fsck", "debugfs")
	rootfs, err := oci.StockRootfs("bookworm")
	if err != nil {
		t.Fatal(err)
	}
	cleanupDir(t, rootfs)
	cgroupGuard(t, "libpod_parent")
	podman := privatePodman(t)
	for _, rt := range []struct{ name, holding, givenBack string }{
		{"crun", "all", "all"},
		{"runc", "allowed", "denied"},
	} {
		t.Run(rt.name, func(t *testing.T) {
			hostGuard(t)
			a := startAgent(t, stateDir(t))
			work := workDir(t)
			tmp := t.TempDir()
			profile := filepath.Join(tmp, "profile.json")
			env := []string{"LOOPVISOR=" + loopvisor, "LOOPVISOR_SOCKET=" + a.socket, "LOOPVISOR_PROFILE=" + profile,
				"PODMAN=" + strings.Join(podman, " ")}
			mk, err := filepath.Abs("../examples/podman/make-profile.sh")
			check(t, err)
			r, err := withEnv(tmp, env, mk, a.socket, profile)
			if err != nil || r.Code != 0 {
				t.Fatalf("make-profile.sh: %v\n%s", err, r)
			}
			checkMergedProfile(t, profile, "/usr/share/containers/seccomp.json", a.socket)

			common := append([]string{"--runtime", rt.name, "--rm", "--network", "none",
				"--mount", "type=bind,src=" + work + ",dst=/work",
				"--mount", "type=bind,src=" + filepath.Join(binDir, "loopctl") + ",dst=/usr/local/bin/loopctl,ro",
			}, podmanUlimits(t)...)
			opts := common
			common = append(append([]string{}, opts...), "--rootfs", rootfs, "sh", "-c", engineScript)
			suffix := fmt.Sprintf("%s-%d", rt.name, os.Getpid())

			// Without loopvisor: podman's default profile, same user namespace.
			bareArgs := append(append(append([]string{}, podman[1:]...), "run", "--name", "lv-test-bare-"+suffix,
				"--uidmap", fmt.Sprintf("0:%d:65536", SandboxUID), "--gidmap", fmt.Sprintf("0:%d:65536", SandboxUID)), common...)
			if rt.name == "crun" {
				// As run.sh does: crun 1.8.1 would give the host's
				// /dev/null (podman's stdin) to the container's root.
				bareArgs = append(bareArgs[:len(bareArgs)-len(common)], append([]string{"--interactive"}, common...)...)
			}
			var bare result
			if rt.name == "crun" && oci.HybridCgroups() {
				bare, err = command("/", "unshare", append([]string{"-m", "sh", "-c", `umount /sys/fs/cgroup/unified && exec "$@"`, "sh", podman[0]}, bareArgs...)...)
			} else {
				bare, err = command("/", podman[0], bareArgs...)
			}
			if err != nil {
				t.Fatal(err)
			}
			if bare.Code == 0 || !strings.Contains(bare.Stderr, "losetup: ") {
				t.Errorf("without loopvisor losetup should fail:\n%s", bare)
			}

			runSh, err := filepath.Abs("../examples/podman/run.sh")
			check(t, err)
			res, err := withEnv(tmp, env, runSh, append([]string{"--name", "lv-test-" + suffix}, common...)...)
			if err != nil || res.Code != 0 {
				t.Fatalf("examples/podman/run.sh: %v\n%s", err, res)
			}
			checkEngineRun(t, res, work, rt.holding, rt.givenBack)
			if rt.name == "runc" {
				checkGrantLog(t, a, res)
			}
			// The container's /dev/null is the host's: through run.sh
			// its root must not own it (crun 1.8.1 chowns the standard
			// streams, and podman's stdin without --interactive is
			// the host's /dev/null), so chmod fails and the host's
			// node keeps its owner and mode (hostGuard).
			chmodArgs := append(append([]string{"--name", "lv-test-chmod-" + suffix}, opts...),
				"--rootfs", rootfs, "sh", "-c", "chmod 0600 /dev/null && echo CHMODDED; ls -ln /dev/null")
			cr, err := withEnv(tmp, env, runSh, chmodArgs...)
			if err != nil || cr.Code != 0 {
				t.Fatalf("run.sh chmod: %v\n%s", err, cr)
			}
			if strings.Contains(cr.Stdout, "CHMODDED") || !strings.Contains(cr.Stderr, "Operation not permitted") {
				t.Errorf("the container's root could chmod the host's /dev/null:\n%s", cr)
			}
			waitGone(t, a)
		})
	}
}

// privatePodman returns the podman command line with storage, run and
// temporary directories of the test's own (so the host's containers and
// storage mounts stay as they are), removed when t ends.
func privatePodman(t *testing.T) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-podman-")
	check(t, err)
	check(t, os.Chmod(dir, 0o711))
	cmd := []string{"podman", "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", filepath.Join(dir, "tmp")}
	t.Cleanup(func() {
		// podman leaves its storage driver's mounts (and nothing else,
		// with --rm containers) under its root.
		unmountBelow(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cmd
}

// unmountBelow detaches every mount below dir, deepest first.
func unmountBelow(dir string) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var below []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			below = append(below, f[4])
		}
	}
	for i := len(below) - 1; i >= 0; i-- {
		_ = syscall.Unmount(below[i], syscall.MNT_DETACH)
	}
}

// checkMergedProfile checks that profile is base with loopvisor's rules:
// base's default action, listenerPath socket, and every syscall base allows
// unconditionally still allowed or trapped (never an allow-everything
// profile, never a lost rule).
func checkMergedProfile(t *testing.T, profile, base, socket string) {
	t.Helper()
	type rule struct {
		Names  []string        `json:"names"`
		Action string          `json:"action"`
		Args   json.RawMessage `json:"args"`
	}
	type prof struct {
		DefaultAction string `json:"defaultAction"`
		ListenerPath  string `json:"listenerPath"`
		Syscalls      []rule `json:"syscalls"`
	}
	read := func(p string) prof {
		b, err := os.ReadFile(p)
		check(t, err)
		var out prof
		check(t, json.Unmarshal(b, &out))
		return out
	}
	m, b := read(profile), read(base)
	if m.DefaultAction != b.DefaultAction || m.DefaultAction == "SCMP_ACT_ALLOW" {
		t.Errorf("default action %q, base's %q", m.DefaultAction, b.DefaultAction)
	}
	if m.ListenerPath != socket {
		t.Errorf("listenerPath %q, want %q", m.ListenerPath, socket)
	}
	covered := map[string]bool{}
	for _, r := range m.Syscalls {
		if r.Action == "SCMP_ACT_ALLOW" || r.Action == "SCMP_ACT_NOTIFY" {
			for _, n := range r.Names {
				covered[n] = true
			}
		}
	}
	for _, r := range b.Syscalls {
		if r.Action != "SCMP_ACT_ALLOW" {
			continue
		}
		for _, n := range r.Names {
			if !covered[n] {
				t.Errorf("base allows %s; the merged profile does not", n)
			}
		}
	}
}

// containerd is a containerd daemon of the test's own: root, state and
// socket in a temporary directory, the CRI plugin off.
type containerd struct {
	dir, sock, ns string
	cmd           *exec.Cmd
	log           string
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopvisor-containerd-")
	check(t, err)
	// The shim's bundles and the snapshots live below: the container's
	// root must be able to reach its root file system.
	check(t, os.Chmod(dir, 0o711))
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), ns: fmt.Sprintf("loopvisor-test-%d", os.Getpid()), log: filepath.Join(dir, "containerd.log")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	check(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600))
	logf, err := os.Create(c.log)
	check(t, err)
	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatal(err)
	}
	_ = logf.Close()
	cgroupGuard(t, c.ns)
	t.Cleanup(func() {
		terminate(c.cmd, 20*time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(c.log)
			t.Logf("containerd log (tail):\n%s", tail(string(b), 60))
		}
		// Snapshots the daemon still had mounted (none after a clean run).
		unmountBelow(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.ctr("version")
		if err == nil && r.Code == 0 {
			return c
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("containerd did not come up: %v %s\n%s", err, r, tail(string(b), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// env is what ctr needs to talk to this daemon and namespace.
func (c *containerd) env() []string {
	return []string{"CONTAINERD_ADDRESS=" + c.sock, "CONTAINERD_NAMESPACE=" + c.ns}
}

func (c *containerd) ctr(args ...string) (result, error) {
	return withEnv("/", c.env(), "ctr", args...)
}

// writeOCIArchive writes an OCI image layout archive (what `ctr images
// import` reads) whose one layer is the root file system tarball layer,
// named ref.
func writeOCIArchive(out, layer, ref string) error {
	lf, err := os.Open(layer)
	if err != nil {
		return err
	}
	defer func() { _ = lf.Close() }()
	h := sha256.New()
	size, err := io.Copy(h, lf)
	if err != nil {
		return err
	}
	layerDigest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	blob := func(v any) ([]byte, string) {
		b, _ := json.Marshal(v)
		s := sha256.Sum256(b)
		return b, "sha256:" + hex.EncodeToString(s[:])
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	config, configDigest := blob(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"config": map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	manifest, manifestDigest := blob(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: configDigest, Size: int64(len(config))},
		"layers": []desc{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: size}},
	})
	index, _ := blob(map[string]any{"schemaVersion": 2, "manifests": []desc{{
		MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: manifestDigest, Size: int64(len(manifest)),
		Annotations: map[string]string{"io.containerd.image.name": ref},
	}}})
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	add := func(name string, r io.Reader, n int64) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	blobPath := func(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
	err = add("oci-layout", strings.NewReader(`{"imageLayoutVersion":"1.0.0"}`), 30)
	if err == nil {
		err = add("index.json", bytes.NewReader(index), int64(len(index)))
	}
	if err == nil {
		err = add(blobPath(manifestDigest), bytes.NewReader(manifest), int64(len(manifest)))
	}
	if err == nil {
		err = add(blobPath(configDigest), bytes.NewReader(config), int64(len(config)))
	}
	if err == nil {
		if _, err = lf.Seek(0, io.SeekStart); err == nil {
			err = add(blobPath(layerDigest), lf, size)
		}
	}
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestContainerdCtr: Debian's containerd 1.6 and ctr (the engine of
// Kubernetes nodes), a daemon of the test's own. The stock Debian bookworm
// image is imported from a local OCI archive made from its root file
// system tarball; `ctr run --uidmap/--gidmap` (a snapshot with owners
// shifted to 100000) with a profile made by examples/containerd/
// make-profile.sh (containerd's own default profile + oci-config) and
// examples/containerd/run.sh runs engineScript. Without loopvisor
// (containerd's default profile, the same user namespace) losetup fails.
// ctr's default spec denies loop devices in the device cgroup: the agent
// grants them and denies them again once given back.
func TestContainerdCtr(t *testing.T) {
	needRoot(t)
	needTools(t, "containerd", "ctr", "jq", "e2fsck", "debugfs")
	hostGuard(t)
	c := startContainerd(t)
	img, err := oci.StockImage("bookworm")
	check(t, err)
	archive := filepath.Join(c.dir, "bookworm-oci.tar")
	check(t, writeOCIArchive(archive, img, "localhost/loopvisor-stock:bookworm"))
	const ref = "localhost/loopvisor-stock:bookworm"
	if r, err := c.ctr("images", "import", archive); err != nil || r.Code != 0 {
		t.Fatalf("ctr images import: %v\n%s", err, r)
	}
	check(t, os.Remove(archive))
	t.Cleanup(func() {
		if r, err := c.ctr("images", "rm", "--sync", ref); err != nil || r.Code != 0 {
			t.Errorf("ctr images rm: %v\n%s", err, r)
		}
	})

	a := startAgent(t, stateDir(t))
	work := workDir(t)
	tmp := t.TempDir()
	profile := filepath.Join(tmp, "profile.json")
	env := append(c.env(), "LOOPVISOR="+loopvisor, "LOOPVISOR_SOCKET="+a.socket, "LOOPVISOR_PROFILE="+profile)
	mk, err := filepath.Abs("../examples/containerd/make-profile.sh")
	check(t, err)
	if r, err := withEnv(tmp, env, mk, ref, a.socket, profile); err != nil || r.Code != 0 {
		t.Fatalf("make-profile.sh: %v\n%s", err, r)
	}
	// The base: containerd's default for a container with CAP_SYS_ADMIN.
	base := filepath.Join(tmp, "base.json")
	if r, err := c.ctr("containers", "create", "--seccomp", "--cap-add", "CAP_SYS_ADMIN", ref, "lv-test-base"); err != nil || r.Code != 0 {
		t.Fatalf("ctr containers create: %v\n%s", err, r)
	}
	info, err := c.ctr("containers", "info", "lv-test-base")
	check(t, err)
	if r, err := c.ctr("containers", "rm", "lv-test-base"); err != nil || r.Code != 0 {
		t.Errorf("ctr containers rm: %v\n%s", err, r)
	}
	var spec struct {
		Spec struct {
			Linux struct {
				Seccomp json.RawMessage `json:"seccomp"`
			} `json:"linux"`
		} `json:"Spec"`
	}
	check(t, json.Unmarshal([]byte(info.Stdout), &spec))
	check(t, os.WriteFile(base, spec.Spec.Linux.Seccomp, 0o600))
	checkMergedProfile(t, profile, base, a.socket)

	mounts := []string{
		"--mount", "type=bind,src=" + work + ",dst=/work,options=rbind:rw",
		"--mount", "type=bind,src=" + filepath.Join(binDir, "loopctl") + ",dst=/usr/local/bin/loopctl,options=rbind:ro",
	}
	idmap := fmt.Sprintf("0:%d:65536", SandboxUID)
	bareArgs := append([]string{"run", "--rm", "--uidmap", idmap, "--gidmap", idmap, "--seccomp", "--cap-add", "CAP_SYS_ADMIN"}, mounts...)
	bareArgs = append(bareArgs, ref, fmt.Sprintf("lv-test-bare-%d", os.Getpid()), "sh", "-c", engineScript)
	bare, err := c.ctr(bareArgs...)
	check(t, err)
	if bare.Code == 0 || !strings.Contains(bare.Stderr+bare.Stdout, "losetup: ") {
		t.Errorf("without loopvisor losetup should fail:\n%s", bare)
	}

	runSh, err := filepath.Abs("../examples/containerd/run.sh")
	check(t, err)
	args := append(append([]string{"--rm"}, mounts...), ref, fmt.Sprintf("lv-test-%d", os.Getpid()), "sh", "-c", engineScript)
	res, err := withEnv(tmp, env, runSh, args...)
	if err != nil || res.Code != 0 {
		t.Fatalf("examples/containerd/run.sh: %v\n%s", err, res)
	}
	// ctr's default spec gives the container no cgroupfs to read: the
	// agent's log says what it did.
	checkEngineRun(t, res, work, "none", "none")
	checkGrantLog(t, a, res)
	waitGone(t, a)
}

// TestOCIConfigAsksAgent: oci-config takes the agent's node directory from
// the running agent (a non-default state directory), and without an agent
// refuses unless --state-dir is given, naming the flag, instead of
// assuming /run/loopvisor.
func TestOCIConfigAsksAgent(t *testing.T) {
	needRoot(t)
	a := startAgent(t, stateDir(t))
	dir := t.TempDir()
	config := filepath.Join(dir, "config.json")
	spec := `{"ociVersion": "1.0.2", "process": {"capabilities": {}}, "mounts": [],
 "linux": {"namespaces": [{"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}`
	sources := func() map[string]string {
		b, err := os.ReadFile(config)
		check(t, err)
		var cfg struct {
			Mounts []struct{ Destination, Source string } `json:"mounts"`
		}
		check(t, json.Unmarshal(b, &cfg))
		out := map[string]string{}
		for _, m := range cfg.Mounts {
			out[m.Destination] = m.Source
		}
		return out
	}

	check(t, os.WriteFile(config, []byte(spec), 0o600))
	r := run(t, dir, loopvisor, "oci-config", "--listener", a.socket, config)
	if r.Code != 0 {
		t.Fatalf("oci-config with a running agent:\n%s", r)
	}
	got := sources()
	for _, n := range []string{"loop-control", "fuse"} {
		if want := filepath.Join(a.state, "dev", n); got["/dev/"+n] != want {
			t.Errorf("/dev/%s bound from %q, want the agent's %q", n, got["/dev/"+n], want)
		}
	}
	if r := run(t, dir, loopvisor, "status", "--socket", a.socket, "--node-dir"); r.Code != 0 || r.Stdout != filepath.Join(a.state, "dev")+"\n" {
		t.Errorf("status --node-dir:\n%s", r)
	}

	check(t, os.WriteFile(config, []byte(spec), 0o600))
	gone := filepath.Join(dir, "no-agent.sock")
	r = run(t, dir, loopvisor, "oci-config", "--listener", gone, config)
	if r.Code == 0 || !strings.Contains(r.Stderr, "--state-dir") {
		t.Errorf("oci-config without an agent and without --state-dir should fail naming --state-dir:\n%s", r)
	}
	b, err := os.ReadFile(config)
	check(t, err)
	if string(b) != spec {
		t.Errorf("a refused oci-config changed the config:\n%s", b)
	}
	r = run(t, dir, loopvisor, "oci-config", "--listener", gone, "--state-dir", a.state, config)
	if r.Code != 0 || sources()["/dev/loop-control"] != filepath.Join(a.state, "dev", "loop-control") {
		t.Errorf("oci-config with --state-dir and no agent:\n%s", r)
	}
}
