package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run make deps", tool)
		}
	}
}

// policies are the two ways loopvisor serves a mount.
var policies = []struct {
	name  string
	flags []string
}{
	{"fuse", nil},
	{"kernel", []string{"--allow-kernel-mount", "ext4,squashfs"}},
}

func hostFsck(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("host e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// TestMountLoopExt4: mkfs.ext4 inside, mount -o loop, write, umount; the
// host finds a clean file system holding the data, with both policies.
func TestMountLoopExt4(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs", "e2fsck", "debugfs")
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			state, dir := stateDir(t), workDir(t)
			img := image(t, dir, "fs.img", 64<<20)
			sandboxMkdir(t, dir, "mnt")
			script := `set -e
mkfs.ext4 -q -F fs.img
mount -o loop fs.img mnt
grep " $PWD/mnt " /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1
mkdir mnt/dir
head -c 1048576 /dev/urandom > mnt/dir/random.bin
echo written-inside > mnt/hello.txt
chown 1000:1000 mnt/hello.txt
stat -c '%u:%g %s' mnt/hello.txt
sha256sum mnt/dir/random.bin | cut -d' ' -f1 > random.sum
umount mnt
echo unmounted
losetup -a | wc -l`
			out := sandboxOK(t, dir, state, p.flags, script)
			if !strings.Contains(out, "1000:1000 15\n") || !strings.Contains(out, "unmounted\n0\n") {
				t.Fatalf("unexpected output:\n%s", out)
			}
			hostFsck(t, img)
			if got := debugfsCat(t, img, "/hello.txt"); got != "written-inside\n" {
				t.Errorf("host reads %q from /hello.txt", got)
			}
			out2, _ := exec.Command("debugfs", "-R", "stat /hello.txt", img).Output()
			if !strings.Contains(string(out2), "User:  1000   Group:  1000") {
				t.Errorf("owner on disk should be 1000:1000 (ids as the sandbox sees them):\n%s", out2)
			}
			sum, _ := os.ReadFile(filepath.Join(dir, "random.sum"))
			dump := filepath.Join(dir, "random.host")
			if o, err := exec.Command("debugfs", "-R", "dump /dir/random.bin "+dump, img).CombinedOutput(); err != nil {
				t.Fatalf("debugfs dump: %v %s", err, o)
			}
			hs, _ := exec.Command("sha256sum", dump).Output()
			if strings.Fields(string(hs))[0] != strings.TrimSpace(string(sum)) {
				t.Errorf("file content differs on the host")
			}
			bareFails(t, dir, state, `mount -o loop fs.img mnt`)
		})
	}
}

// TestMountSquashfs: mksquashfs on the host side of the sandbox, mounted
// read-only with -o loop and read back.
func TestMountSquashfs(t *testing.T) {
	needRoot(t)
	needTools(t, "mksquashfs", "squashfuse")
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			state, dir := stateDir(t), workDir(t)
			out := sandboxOK(t, dir, state, p.flags, `set -e
mkdir -p tree/sub mnt
echo squash-content > tree/sub/file.txt
mksquashfs tree x.sqfs -quiet -no-progress >/dev/null
mount -t squashfs -o loop,ro x.sqfs mnt
cat mnt/sub/file.txt
if touch mnt/new 2>/dev/null; then echo writable; else echo read-only; fi
umount mnt
losetup -a | wc -l`)
			if out != "squash-content\nread-only\n0\n" {
				t.Fatalf("got:\n%s", out)
			}
			bareFails(t, dir, state, `mount -t squashfs -o loop,ro x.sqfs mnt`)
		})
	}
}

// TestMountOptions: ro, noexec, nosuid and nodev are honoured (a FUSE
// mount has nosuid and nodev only when asked for, as on the host; a kernel
// mount always has them, locked); an option the FUSE helper cannot honour
// is refused, not dropped.
func TestMountOptions(t *testing.T) {
	needRoot(t)
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			state, dir := stateDir(t), workDir(t)
			image(t, dir, "fs.img", 32<<20)
			out := sandboxOK(t, dir, state, p.flags, `mkdir -p mnt
mkfs.ext4 -q -F fs.img
mount -o loop fs.img mnt && cp /bin/true mnt/true && umount mnt
mount -o loop,ro fs.img mnt
if touch mnt/x 2>/dev/null; then echo ro-ignored; else echo ro-honoured; fi
umount mnt
mount -o loop,noexec fs.img mnt
if mnt/true 2>/dev/null; then echo noexec-ignored; else echo noexec-honoured; fi
grep " $PWD/mnt " /proc/self/mountinfo | cut -d' ' -f6 | tr ',' '\n' | grep -E '^(nosuid|nodev|noexec)$' | sort | tr '\n' ' '; echo
umount mnt
mount -o loop,nosuid,nodev fs.img mnt
echo "asked: $(grep " $PWD/mnt " /proc/self/mountinfo | cut -d' ' -f6 | tr ',' '\n' | grep -E '^(nosuid|nodev|noexec)$' | sort | tr '\n' ' ')"
umount mnt
if mount -o loop,data=journal fs.img mnt 2>/dev/null; then echo data-accepted; umount mnt; else echo data-refused; fi
losetup -a | wc -l`)
			flagsWant := map[string]string{"fuse": "\nnoexec \n", "kernel": "\nnodev noexec nosuid \n"}[p.name]
			for _, w := range []string{"ro-honoured", "noexec-honoured", flagsWant, "asked: nodev nosuid \n", "0\n"} {
				if !strings.Contains(out, w) {
					t.Errorf("want %q in\n%s", w, out)
				}
			}
			// fuse2fs cannot honour data=journal; the kernel can.
			want := map[string]string{"fuse": "data-refused", "kernel": "data-accepted"}[p.name]
			if !strings.Contains(out, want) {
				t.Errorf("want %q in\n%s", want, out)
			}
		})
	}
}

// TestMountErrors: a corrupt or truncated image gives the errno the host
// kernel gives root; a device that is not the instance's gives EPERM as
// without loopvisor.
func TestMountErrors(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			state, dir := stateDir(t), workDir(t)
			img := image(t, dir, "bad.img", 16<<20)
			if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
				t.Fatal(err, string(out))
			}
			// Corrupt the superblock magic, and make a truncated copy. Set-up
			// must not fail silently: with intact images host and sandbox
			// would mount alike and the comparison below would pass.
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			check(t, err)
			if _, err := f.WriteAt([]byte{0, 0}, 1024+0x38); err != nil {
				t.Fatal(errors.Join(err, f.Close()))
			}
			check(t, f.Close())
			good := image(t, dir, "good.img", 16<<20)
			check(t, exec.Command("mkfs.ext4", "-q", "-F", good).Run())
			check(t, exec.Command("truncate", "-s", "1M", good).Run())
			check(t, os.Rename(good, filepath.Join(dir, "trunc.img")))
			check(t, os.Mkdir(filepath.Join(dir, "mnt"), 0o755))
			script := `for i in bad trunc; do d=$(losetup -f --show $i.img); echo "$i $(newapimount ext4 $d mnt | tail -1)"; losetup -d $d; done
echo "zero $(newapimount ext4 /dev/zero mnt | tail -1)"`
			host := run(t, dir, "sh", "-c", script)
			for _, img := range []string{"bad", "trunc"} {
				if h := lineWith(host.Stdout, img+" "); !strings.Contains(h, " ERR E") {
					t.Fatalf("set-up: the host (root) should fail to mount the %s image with an errno, got %q\n%s", img, h, host)
				}
			}
			sb := sandbox(t, dir, state, p.flags, script)
			if sb.Code != 0 && sb.Stdout == "" {
				t.Fatal(sb)
			}
			// The host (root) gets the kernel's errno for each broken image.
			for _, img := range []string{"bad", "trunc"} {
				h := lineWith(host.Stdout, img+" ")
				s := lineWith(sb.Stdout, img+" ")
				if h == "" || h != s {
					t.Errorf("%s image: host %q, sandbox %q", img, h, s)
				}
			}
			if s := lineWith(sb.Stdout, "zero "); s != "zero ERR EPERM" {
				t.Errorf("/dev/zero (not the instance's device): got %q, want EPERM as without loopvisor", s)
			}
		})
	}
}

func lineWith(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestMountNewAPIClient: a client that tries fsopen first (util-linux >=
// 2.39) mounts with the new API under the FUSE policy, and falls back to
// mount(2) under the kernel-mount policy (whose new API is not served).
func TestMountNewAPIClient(t *testing.T) {
	needRoot(t)
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			state, dir := stateDir(t), workDir(t)
			image(t, dir, "fs.img", 32<<20)
			out := sandboxOK(t, dir, state, p.flags, `set -e
mkdir -p mnt; mkfs.ext4 -q -F fs.img
d=$(losetup -f --show fs.img)
newapimount ext4 $d mnt
echo hi > mnt/f; cat mnt/f
umount mnt; losetup -d $d
echo "tmpfs $(newapimount tmpfs none mnt | head -1)"; umount mnt`)
			want := map[string]string{"fuse": "new-api\nOK\nhi\n", "kernel": "mount2-fallback\nOK\nhi\n"}[p.name]
			if !strings.Contains(out, want) {
				t.Errorf("fsopen-first client: want %q in\n%s", want, out)
			}
			// Types loopvisor does not serve keep the new API.
			if !strings.Contains(out, "tmpfs new-api") {
				t.Errorf("tmpfs should still use the new API:\n%s", out)
			}
			bareFails(t, dir, state, `d=$(losetup -f --show fs.img) && newapimount ext4 $d mnt`)
		})
	}
}

// TestMountUnprivilegedCaller: a process in the sandbox without
// CAP_SYS_ADMIN cannot mount the instance's devices, as on the host.
func TestMountUnprivilegedCaller(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "fs.img", 32<<20)
	out := sandboxOK(t, dir, state, nil, `mkdir -p mnt; mkfs.ext4 -q -F fs.img
d=$(losetup -f --show fs.img); chmod 666 $d
setpriv --reuid 1000 --regid 1000 --clear-groups newapimount ext4 $d mnt | tr '\n' ' '; echo
LIBMOUNT_FORCE_MOUNT2=always setpriv --reuid 1000 --regid 1000 --clear-groups newapimount ext4 $d mnt | tr '\n' ' '; echo
grep -c " - fuse" /proc/self/mountinfo
losetup -d $d`)
	if !strings.Contains(out, "new-api ERR EPERM") {
		t.Errorf("an unprivileged caller must get EPERM from the kernel's fsopen:\n%s", out)
	}
	if !strings.Contains(out, "mount2 ERR EPERM \n0\n") {
		t.Errorf("an unprivileged caller's mount(2) of the instance's device must fail with EPERM:\n%s", out)
	}
}

// TestMountSymlinkRace: another thread swaps the target between a
// directory and a symlink to elsewhere; loopvisor mounts only where the
// caller's own view points, never in the host's mount table.
func TestMountSymlinkRace(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "fs.img", 32<<20)
	out := sandboxOK(t, dir, state, nil, `mkdir -p a b; mkfs.ext4 -q -F fs.img
(while :; do ln -sfn a t.new; mv -T t.new t; ln -sfn b t.new; mv -T t.new t; done) 2>/dev/null &
swapper=$!
n=0; ok=0; while [ $n -lt 20 ]; do
  if mount -o loop fs.img t 2>/dev/null; then
    ok=$((ok+1))
    grep " - fuse" /proc/self/mountinfo | cut -d' ' -f5 | sed "s|$PWD/||"
    umount a 2>/dev/null || umount b
  fi
  n=$((n+1))
done
kill $swapper
echo "mounted $ok"
echo "left $(grep -c ' - fuse' /proc/self/mountinfo) $(losetup -a | wc -l)"`)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "a" && l != "b" && !strings.HasPrefix(l, "mounted ") && !strings.HasPrefix(l, "left ") {
			t.Errorf("mount landed outside a and b: %q\n%s", l, out)
		}
	}
	if !strings.Contains(out, "left 0 0\n") || strings.Contains(out, "mounted 0\n") {
		t.Errorf("want some mounts and nothing left:\n%s", out)
	}
}

// TestMountKilledSandbox: a sandbox killed while mounted and writing leaves
// no helper, no mount and no device, and an image e2fsck can repair.
func TestMountKilledSandbox(t *testing.T) {
	needRoot(t)
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	img := image(t, dir, "fs.img", 64<<20)
	cmd := sandboxCmd(dir, state, `mkdir -p mnt; mkfs.ext4 -q -F fs.img; mount -o loop fs.img mnt || exit 1; touch ready
while :; do head -c 65536 /dev/urandom > mnt/f.$((n=n+1)); done`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFileExists(t, filepath.Join(dir, "ready"))
	time.Sleep(300 * time.Millisecond)
	check(t, cmd.Process.Signal(os.Interrupt)) // SIGINT is forwarded: the sandbox dies mid-write
	_ = cmd.Process.Kill()                     // fails only if SIGINT already ended it
	_ = cmd.Wait()                             // killed, as intended
	// The supervisor was SIGKILLed too: the next run (or gc) releases.
	r := run(t, dir, loopvisor, "gc", "--state-dir", state)
	if r.Code != 0 {
		t.Fatalf("gc:\n%s", r)
	}
	// Only this test's helpers: other work on the machine may run fuse2fs.
	if out, _ := exec.Command("pgrep", "-af", "fuse2fs.*"+dir).Output(); len(out) > 0 {
		t.Errorf("orphan fuse2fs left: %s", out)
	}
	if out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput(); err != nil {
		// exit 1: errors corrected is fine; anything above is not.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck could not repair the image: %v\n%s", err, out)
		}
	}
	hostFsck(t, img)
}

// waitFileExists waits up to a minute for p to exist.
func waitFileExists(t *testing.T, p string) {
	t.Helper()
	waitFileWithin(t, p, time.Minute)
}

// waitFileWithin waits up to d for p to exist (a socket a process listens
// on, a file a script makes), or fails the test.
func waitFileWithin(t *testing.T, p string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", p)
}
