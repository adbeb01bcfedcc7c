package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// helloImage makes an ext4 image at dir/name owned by the sandbox's root
// whose root holds a file "hello" with "new-api-hello".
func helloImage(t *testing.T, dir, name string) {
	t.Helper()
	fsImage(t, dir, name, "mkfs.ext4", 32<<20)
	src := filepath.Join(dir, "hello.src")
	check(t, os.WriteFile(src, []byte("new-api-hello\n"), 0o644))
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" hello", filepath.Join(dir, name)).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	check(t, os.Remove(src))
}

// TestNewAPIErrnos: misuses of fsopen, fsconfig and fsmount on a context
// of a served type (bad keys and commands, a second source, create
// without a source and after a failed one, create twice, fsmount before
// create and twice, bad fsmount flags) give host root's errnos, and the
// same context then mounts through the new API (fsmount, openat through
// the detached mount, move_mount, umount) as on the host. A descriptor
// number of a closed context, reused by a tmpfs context, is the kernel's
// tmpfs context; so are tmpfs contexts throughout. Without loopvisor the
// create fails with EPERM.
func TestNewAPIErrnos(t *testing.T) {
	needRoot(t)
	needTools(t, "debugfs")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	helloImage(t, dir, "fs.img")
	sandboxMkdir(t, dir, "mnt")
	script := `d=$(losetup -f --show fs.img) || exit 1; newapierrs ext4 $d mnt; losetup -d $d`
	host := run(t, dir, "sh", "-c", script)
	for _, want := range []string{"create OK\n", "fsmount OK\n", "hello new-api-hello\n", "umount OK\n"} {
		if !strings.Contains(host.Stdout, want) {
			t.Fatalf("set-up: the host (root) should give %q:\n%s", want, host)
		}
	}
	sb := sandbox(t, dir, state, nil, script)
	hl, sl := strings.Split(host.Stdout, "\n"), strings.Split(sb.Stdout, "\n")
	for i := range hl {
		if i >= len(sl) || hl[i] != sl[i] {
			t.Errorf("line %d: host %q, sandbox %q", i, hl[i], at(sl, i))
		}
	}
	if len(sl) != len(hl) {
		t.Errorf("host printed %d lines, the sandbox %d:\n%s", len(hl), len(sl), sb)
	}
	// Without loopvisor there is no loop device; the create fails first.
	if b := bare(t, dir, state, "newapierrs ext4 fs.img mnt"); !strings.Contains(b.Stdout, "\ncreate EPERM\n") {
		t.Errorf("without loopvisor the create should fail with EPERM:\n%s", b)
	}
	// Contexts loopvisor did not hand out stay the kernel's: a tmpfs
	// context is configured, created, mounted and attached by the kernel,
	// with the host's errnos.
	tmpfs := `newapierrs tmpfs none mnt | grep -v '^hello'; umount mnt 2>/dev/null; true`
	host = run(t, dir, "sh", "-c", tmpfs)
	if out := sandboxOK(t, dir, state, nil, tmpfs); out != host.Stdout || !strings.Contains(out, "\ncreate OK\n") {
		t.Errorf("tmpfs contexts must be the kernel's:\n--- host\n%s--- sandbox\n%s", host.Stdout, out)
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// TestNewAPIDetached: a detached mount made with fsopen, fsconfig and
// fsmount and never attached serves its files through the mount fd
// (openat), as on the host; when the fd is closed the FUSE helper exits
// and the loop device is free: losetup -d then leaves nothing attached.
// Attached with move_mount and bound elsewhere, the bind unmounts alone;
// a second mount(2) of the device shares the superblock; the umount of the
// mount waits for its helper, so the image is complete. Without loopvisor
// the create fails.
func TestNewAPIDetached(t *testing.T) {
	needRoot(t)
	needTools(t, "debugfs")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	helloImage(t, dir, "fs.img")
	script := `d=$(losetup -f --show fs.img) || exit 1
newapidetach ext4 $d hello fuse2fs
losetup -d $d
echo "left $(losetup -a | grep -c fs.img)"`
	host := run(t, dir, "sh", "-c", script)
	if !strings.Contains(host.Stdout, "read new-api-hello\n") {
		t.Fatalf("set-up: the host (root) should read the file through the detached mount:\n%s", host)
	}
	// Attached, bound elsewhere: unmounting the bind leaves the helper to
	// the first mount; a second mount(2) of the device is another mount of
	// its superblock; unmounting the last waits for the helper (umount(8)
	// then finds none), as for mount(2).
	sandboxMkdir(t, dir, "mnt")
	sandboxMkdir(t, dir, "bind")
	attached := `
d=$(losetup -f --show fs.img) || exit 1
newapimount ext4 $d mnt | tr '\n' ' '; echo
mount --bind mnt bind && umount bind
mount $d bind && cat bind/hello && umount bind
cat mnt/hello
echo written > mnt/x
umount mnt
echo "helpers-umount $(grep -lx fuse2fs /proc/[0-9]*/comm 2>/dev/null | wc -l)"
losetup -d $d`
	r := sandbox(t, dir, state, nil, script+attached)
	if r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	out := r.Stdout
	if !strings.Contains(out, "read new-api-hello\nhelpers 1\nhelpers-after 0\nleft 0\n") {
		t.Errorf("want the file read through the detached mount, one helper while the fd is open, none after, and the device free:\n%s", out)
	}
	if !strings.Contains(out, "new-api OK \nnew-api-hello\nnew-api-hello\nhelpers-umount 0\n") || strings.Contains(r.Stderr, "still running") {
		t.Errorf("want the attached mount served, its bind unmounted alone, a second mount(2) of the device sharing its superblock, and umount to wait for the helper:\n%s", r)
	}
	if got := debugfsCat(t, filepath.Join(dir, "fs.img"), "/x"); got != "written\n" {
		t.Errorf("host reads %q", got)
	}
	if b := bare(t, dir, state, "newapidetach ext4 fs.img hello fuse2fs"); !strings.Contains(b.Stdout, "ERR fsconfig-create EPERM") {
		t.Errorf("without loopvisor the create should fail with EPERM:\n%s", b)
	}
}

// TestStockNewAPIMount: Debian trixie's util-linux 2.41 (runc and crun with
// only oci-config applied) mounts with the new API and does not fall back
// to mount(2): `mount -o loop`, `mount /dev/loopN` and `mount -o
// loop,ro,noexec` (flags set by libmount's mount_setattr) of an ext4 image,
// as libmount's debug output shows (fsopen, a created superblock,
// move_mount; no mount(2) call); files written through the mount reach
// the image, which the host's e2fsck finds clean. Without loopvisor the
// mount fails.
func TestStockNewAPIMount(t *testing.T) {
	needRoot(t)
	needTools(t, "e2fsck", "debugfs")
	script := `set -e
cd /tmp
rm -f ext4.img
truncate -s 32M ext4.img
mkfs.ext4 -q ext4.img
mkdir -p /mnt/m
LIBMOUNT_DEBUG=hook mount -o loop ext4.img /mnt/m 2>/tmp/debug1 || { grep -v libmount: /tmp/debug1 >&2; exit 32; }
grep -o 'fsopen(ext4)\|create FS done \[rc=0\|move_mount(to=\|mount(2) \[source' /tmp/debug1 | sort -u | sed 's/^/one /'
grep " /mnt/m " /proc/self/mountinfo | sed 's/.* - /fs /' | cut -d' ' -f1-3
echo new-api-written > /mnt/m/file.txt
umount /mnt/m
d=$(losetup -f --show ext4.img)
LIBMOUNT_DEBUG=hook mount $d /mnt/m 2>/tmp/debug2 || { grep -v libmount: /tmp/debug2 >&2; exit 32; }
grep -o 'fsopen(ext4)\|create FS done \[rc=0\|move_mount(to=\|mount(2) \[source' /tmp/debug2 | sort -u | sed 's/^/two /'
cat /mnt/m/file.txt
umount /mnt/m
losetup -d $d
LIBMOUNT_DEBUG=hook mount -o loop,ro,noexec ext4.img /mnt/m 2>/tmp/debug3 || { grep -v libmount: /tmp/debug3 >&2; exit 32; }
grep -o 'fsopen(ext4)\|create FS done \[rc=0\|move_mount(to=\|mount(2) \[source\|mount_setattr(' /tmp/debug3 | sort -u | sed 's/^/three /'
grep " /mnt/m " /proc/self/mountinfo | cut -d' ' -f6 | tr ',' '\n' | grep -x 'ro\|noexec' | sed 's/^/flag /'
if touch /mnt/m/new 2>/dev/null; then echo writable; else echo read-only; fi
umount /mnt/m
echo "left $(losetup -a | wc -l)"`
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		res, b := stockCase(t, "trixie", rt, a, script, regexp.MustCompile(`mount: `), nil)
		for _, n := range []string{"one", "two", "three"} {
			for _, want := range []string{n + " fsopen(ext4)\n", n + " create FS done [rc=0\n", n + " move_mount(to=\n"} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("libmount should use the new API (want %q):\n%s", want, res)
				}
			}
			if strings.Contains(res.Stdout, n+" mount(2) [source") {
				t.Errorf("libmount fell back to mount(2):\n%s", res)
			}
		}
		if !regexp.MustCompile(`(?m)^fs fuse\.ext4 /dev/loop\d+$`).MatchString(res.Stdout) {
			t.Errorf("the mount should be served by fuse2fs with its loop device as source:\n%s", res.Stdout)
		}
		// Per-mount flags are set by libmount's own mount_setattr on the
		// detached mount, before move_mount: the kernel's.
		if !strings.Contains(res.Stdout, "three mount_setattr(\n") || !strings.Contains(res.Stdout, "flag ro\nflag noexec\nread-only\n") {
			t.Errorf("mount -o loop,ro,noexec: want mount_setattr, ro and noexec on the mount and no writes:\n%s", res)
		}
		if !strings.Contains(res.Stdout, "new-api-written\n") || !strings.HasSuffix(res.Stdout, "left 0\n") {
			t.Errorf("unexpected output:\n%s", res)
		}
		img := filepath.Join(b.Rootfs, "tmp", "ext4.img")
		hostFsck(t, img)
		if got := debugfsCat(t, img, "/file.txt"); got != "new-api-written\n" {
			t.Errorf("host reads %q", got)
		}
		waitGone(t, a)
	})
}
