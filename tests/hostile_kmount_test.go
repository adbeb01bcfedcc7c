package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// kmcallSrc is a probe that makes one mount-related call and prints its
// errno by name, so the sandbox and the host can be compared exactly:
//
//	kmcall mount SOURCE TARGET FSTYPE FLAGS DATA   mount(2); "-" is NULL
//	kmcall setattr PATH CLEAR                      mount_setattr(PATH, attr_clr=CLEAR)
//	kmcall clone-setattr PATH CLEAR                the same on an open_tree clone
//	kmcall read PATH                               open and read 12 bytes
//
// It prints "OK" (read: "OK <bytes>") or "ERR <ERRNO>".
const kmcallSrc = `#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

static const char *arg(const char *s) { return strcmp(s, "-") ? s : NULL; }
static int fail(void) { printf("ERR %s\n", strerrorname_np(errno)); return 1; }

int main(int argc, char **argv) {
	if (argc == 7 && !strcmp(argv[1], "mount")) {
		if (mount(arg(argv[2]), argv[3], arg(argv[4]), strtoul(argv[5], NULL, 0), arg(argv[6])) < 0)
			return fail();
	} else if (argc == 4 && (!strcmp(argv[1], "setattr") || !strcmp(argv[1], "clone-setattr"))) {
		struct mount_attr a = {.attr_clr = strtoull(argv[3], NULL, 0)};
		int fd = AT_FDCWD;
		const char *p = argv[2];
		int flags = 0;
		if (!strcmp(argv[1], "clone-setattr")) {
			fd = syscall(SYS_open_tree, AT_FDCWD, argv[2], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
			if (fd < 0)
				return fail();
			p = "";
			flags = AT_EMPTY_PATH;
		}
		if (syscall(SYS_mount_setattr, fd, p, flags, &a, sizeof a) < 0)
			return fail();
	} else if (argc == 3 && !strcmp(argv[1], "read")) {
		char buf[13] = {0};
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0 || read(fd, buf, 12) < 0)
			return fail();
		printf("OK %s\n", buf);
		return 0;
	} else {
		fprintf(stderr, "usage\n");
		return 2;
	}
	puts("OK");
	return 0;
}
`

var kmcallOnce sync.Once

// kmcallBin compiles kmcall into binDir (on the sandboxes' PATH).
func kmcallBin(t *testing.T) {
	t.Helper()
	var err error
	var out []byte
	kmcallOnce.Do(func() {
		src := filepath.Join(binDir, "kmcall.c")
		if err = os.WriteFile(src, []byte(kmcallSrc), 0o644); err != nil {
			return
		}
		out, err = exec.Command("gcc", "-O2", "-Wall", "-o", filepath.Join(binDir, "kmcall"), src).CombinedOutput()
	})
	if err != nil {
		t.Fatalf("compile kmcall: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(binDir, "kmcall")); err != nil {
		t.Fatal("kmcall did not build")
	}
}

// Mount flags for kmcall (include/uapi/linux/mount.h).
const (
	msRdonly  = unix.MS_RDONLY
	msNosuid  = unix.MS_NOSUID
	msNodev   = unix.MS_NODEV
	msRemount = unix.MS_REMOUNT
	msBind    = unix.MS_BIND
)

// TestAttack5KernelMountUnlocked: with --allow-kernel-mount ext4 the
// container puts a block node of a host loop device (7:N, bound by the
// host to a file only host root can read) into its own image, mounts the
// image with -o loop and tries to clear nosuid and nodev with a bind
// remount (not trapped), a superblock remount (trapped: loopvisor sets the
// mount's flags as the caller first) or mount_setattr. A kernel mount made
// on its behalf must be locked like a mount it inherited: the reference is
// a host tmpfs mounted nosuid,nodev before the sandbox starts, which the
// kernel locks when it copies the mount namespace. Every call must give
// the same result on both (but `mount -o remount,ro`, which keeps the
// locked flags and is served for the kernel mount as on the host), and the
// node must never open. A kernel mount asked for ro and noexec may lose
// those again (as on the host), never nosuid or nodev, nor change its
// atime flags.
func TestAttack5KernelMountUnlocked(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "debugfs", "losetup")
	hostGuard(t)
	kmcallBin(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "fs.img", 32<<20)

	// The host's device, with content the sandbox must never read.
	secret := filepath.Join(t.TempDir(), "secret.bin")
	check(t, os.WriteFile(secret, bytes.Repeat([]byte("HOST-SECRET-"), 4096), 0o600))
	n := unboundHostLoop(t)
	dev := fmt.Sprintf("/dev/loop%d", n)
	if r := run(t, dir, "losetup", "-r", dev, secret); r.Code != 0 {
		t.Fatalf("losetup %s: %s", dev, r)
	}
	t.Cleanup(func() {
		if r := run(t, dir, "losetup", "-d", dev); r.Code != 0 {
			t.Errorf("losetup -d %s: %s", dev, r)
		}
	})

	// The reference: a mount the sandbox inherits, locked by the kernel.
	ref := filepath.Join(dir, "ref")
	check(t, os.Mkdir(ref, 0o755))
	if err := unix.Mount("ref", ref, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(ref, 0); err != nil {
			t.Errorf("umount %s: %v", ref, err)
		}
	})

	calls := []struct{ name, call string }{
		{"clear-nosuid-nodev", fmt.Sprintf("mount - %%s - %#x -", msRemount|msBind)},
		{"clear-nodev", fmt.Sprintf("mount - %%s - %#x -", msRemount|msBind|msNosuid)},
		{"clear-nosuid", fmt.Sprintf("mount - %%s - %#x -", msRemount|msBind|msNodev)},
		{"setattr-clear-nodev", fmt.Sprintf("setattr %%s %#x", unix.MOUNT_ATTR_NODEV)},
		{"clone-setattr-clear-nodev", fmt.Sprintf("clone-setattr %%s %#x", unix.MOUNT_ATTR_NODEV)},
		{"add-ro", fmt.Sprintf("mount - %%s - %#x -", msRemount|msBind|msNosuid|msNodev|msRdonly)},
		{"back-to-rw", fmt.Sprintf("mount - %%s - %#x -", msRemount|msBind|msNosuid|msNodev)},
		{"superblock-ro", fmt.Sprintf("mount - %%s - %#x -", msRemount|msRdonly)},
	}
	var script strings.Builder
	fmt.Fprintf(&script, `mkdir -p mnt
mkfs.ext4 -q -F fs.img || exit 1
debugfs -w -R "mknod node b 7 %d" fs.img || exit 1
debugfs -w -R "sif node mode 060666" fs.img || exit 1
mount -o loop fs.img mnt || exit 1
grep " $PWD/mnt " /proc/self/mountinfo
if mount -o remount,bind,dev,suid mnt 2>/dev/null; then echo "attack remount succeeded"; else echo "attack remount refused"; fi
echo "attack read $(kmcall read mnt/node)"
`, n)
	for _, m := range []string{"ref", "mnt"} {
		for _, c := range calls {
			fmt.Fprintf(&script, "echo \"%s %s $(kmcall %s)\"\n", m, c.name, fmt.Sprintf(c.call, m))
		}
		// util-linux, as a user would type it.
		fmt.Fprintf(&script, "if mount -o remount,bind,ro %[1]s 2>/dev/null; then echo '%[1]s mount-remount-bind-ro ok'; else echo '%[1]s mount-remount-bind-ro refused'; fi\n", m)
		fmt.Fprintf(&script, "if mount -o remount,ro %[1]s 2>/dev/null; then echo '%[1]s mount-remount-ro ok'; else echo '%[1]s mount-remount-ro refused'; fi\n", m)
		fmt.Fprintf(&script, "echo \"%[1]s flags $(grep \" $PWD/%[1]s \" /proc/self/mountinfo | cut -d' ' -f6)\"\n", m)
	}
	// A bind mount of it is locked too (the kernel copies the lock flags).
	fmt.Fprintf(&script, `mkdir -p b; mount --bind mnt b || exit 1
echo "bind clear-nosuid-nodev $(kmcall mount - b - %#x -)"
echo "bind read $(kmcall read b/node)"
umount b
`, msRemount|msBind)
	script.WriteString(`echo "final read $(kmcall read mnt/node)"
umount mnt && echo unmounted
`)
	// A mount asked for ro and noexec: those are the caller's to clear, as
	// on the host, but nosuid and nodev stay locked whatever else changes,
	// the atime flags too, and the node still does not open.
	script.WriteString("mount -o loop,ro,noexec fs.img mnt || exit 1\n")
	for _, c := range []struct {
		name  string
		flags uint64
	}{
		{"clear-nodev-too", msRemount | msBind | msNosuid},
		{"clear-nosuid-too", msRemount | msBind | msNodev},
		{"change-atime", msRemount | msBind | msNosuid | msNodev | msRdonly | unix.MS_NOEXEC | unix.MS_NOATIME},
		{"keep-all", msRemount | msBind | msNosuid | msNodev | msRdonly | unix.MS_NOEXEC},
		{"clear-ro", msRemount | msBind | msNosuid | msNodev | unix.MS_NOEXEC},
		{"clear-noexec", msRemount | msBind | msNosuid | msNodev | msRdonly},
		{"clear-ro-noexec", msRemount | msBind | msNosuid | msNodev},
		{"then-clear-nodev", msRemount | msBind | msNosuid},
	} {
		fmt.Fprintf(&script, "echo \"rox %s $(kmcall mount - mnt - %#x -)\"\n", c.name, c.flags)
	}
	script.WriteString(`echo "rox setattr-clear-nodev $(kmcall setattr mnt ` + fmt.Sprintf("%#x", unix.MOUNT_ATTR_NODEV) + `)"
echo "rox flags $(grep " $PWD/mnt " /proc/self/mountinfo | cut -d' ' -f6)"
echo "rox read $(kmcall read mnt/node)"
`)
	script.WriteString(`umount mnt && echo unmounted-rox
losetup -a | wc -l
`)
	r := sandbox(t, dir, state, []string{"--allow-kernel-mount", "ext4"}, script.String())
	out := r.Stdout
	t.Logf("sandbox:\n%s", out)
	if r.Code != 0 && !strings.Contains(out, "unmounted-rox") {
		t.Fatalf("sandbox script failed:\n%s", r)
	}
	if !strings.Contains(out, "attack remount refused") {
		t.Errorf("mount -o remount,bind,dev,suid of the kernel mount succeeded: its flags are not locked")
	}
	for _, w := range []string{"attack read ERR ", "bind read ERR ", "final read ERR "} {
		if !strings.Contains(out, w) {
			t.Errorf("the block node of host loop%d opened on the kernel mount (want %q)", n, w)
		}
	}
	if strings.Contains(out, "HOST-SECRET") {
		t.Errorf("the sandbox read the host device's data")
	}
	// A superblock remount that keeps the locked flags is served, as on the
	// host (mount -o remount,ro: util-linux passes nosuid,nodev back); the
	// inherited tmpfs's superblock is not the sandbox's to remount.
	for _, w := range []string{"ref mount-remount-ro refused", "mnt mount-remount-ro ok"} {
		if !strings.Contains(out, w) {
			t.Errorf("want %q", w)
		}
	}
	for _, c := range append(calls, struct{ name, call string }{"mount-remount-bind-ro", ""}) {
		rl, ml := lineWith(out, "ref "+c.name+" "), lineWith(out, "mnt "+c.name+" ")
		if rl == "" || ml == "" || strings.TrimPrefix(rl, "ref ") != strings.TrimPrefix(ml, "mnt ") {
			t.Errorf("%s: inherited locked mount %q, kernel mount %q: want the same", c.name, rl, ml)
		}
	}
	for _, w := range []string{"ref clear-nosuid-nodev ERR EPERM", "mnt add-ro OK", "mnt back-to-rw OK",
		"bind clear-nosuid-nodev ERR EPERM", "rox clear-nodev-too ERR EPERM", "rox clear-nosuid-too ERR EPERM",
		"rox change-atime ERR EPERM", "rox keep-all OK", "rox clear-ro OK", "rox clear-noexec OK", "rox clear-ro-noexec OK",
		"rox then-clear-nodev ERR EPERM", "rox setattr-clear-nodev ERR EPERM", "rox flags rw,nosuid,nodev,relatime,idmapped\n",
		"rox read ERR ", "unmounted-rox\n0\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("want %q", w)
		}
	}
}

// TestAttack6KernelMountOptions: with --allow-kernel-mount, file system
// options are an allow-list per type. errors=panic (the container owns the
// backing file and can corrupt it under the mount), options that name host
// objects (journal_path=, journal_dev=) and dax get EINVAL and a log line;
// harmless options still mount. An image whose superblock asks for
// errors=panic by default does not get it either.
func TestAttack6KernelMountOptions(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "tune2fs", "mksquashfs")
	hostGuard(t)
	kmcallBin(t)
	state, dir := stateDir(t), workDir(t)
	image(t, dir, "fs.img", 32<<20)
	bad := []string{"errors=panic", "journal_path=/x", "journal_dev=1", "dax", "dax=always", "errors=continue,journal_path=/dev/loop0"}
	good := []string{"errors=remount-ro", "errors=continue", "data=ordered", "commit=30", "barrier", "acl", "user_xattr", "discard", "noload", "ro", "errors=continue,commit=10,nodiscard"}
	var script strings.Builder
	script.WriteString(`mkdir -p mnt tree
mkfs.ext4 -q -F fs.img || exit 1
d=$(losetup -f --show fs.img) || exit 1
`)
	for _, o := range bad {
		fmt.Fprintf(&script, "echo \"bad %[1]s $(kmcall mount $d mnt ext4 0 %[1]s)\"; umount mnt 2>/dev/null\n", o)
	}
	for _, o := range good {
		fmt.Fprintf(&script, "echo \"good %[1]s $(kmcall mount $d mnt ext4 0 %[1]s)\"; umount mnt 2>/dev/null\n", o)
	}
	script.WriteString(`losetup -d $d
tune2fs -e panic fs.img >/dev/null
mount -o loop fs.img mnt || exit 1
echo "sb-panic $(grep " $PWD/mnt " /proc/self/mountinfo | sed 's/.* - //')"
umount mnt
echo squash > tree/f
mksquashfs tree sq.img -quiet -no-progress >/dev/null
d=$(losetup -f --show sq.img) || exit 1
echo "squashfs-bad errors=panic $(kmcall mount $d mnt squashfs 1 errors=panic)"; umount mnt 2>/dev/null
echo "squashfs-good errors=continue $(kmcall mount $d mnt squashfs 1 errors=continue)"; umount mnt 2>/dev/null
losetup -d $d
losetup -a | wc -l
`)
	r := sandbox(t, dir, state, []string{"--allow-kernel-mount", "ext4,squashfs"}, script.String())
	t.Logf("sandbox:\n%s", r.Stdout)
	if r.Code != 0 {
		t.Fatalf("sandbox script failed:\n%s", r)
	}
	for _, o := range bad {
		if l := lineWith(r.Stdout, "bad "+o+" "); l != "bad "+o+" ERR EINVAL" {
			t.Errorf("%s: got %q, want EINVAL", o, l)
		}
	}
	// The host, where the kernel defines the behaviour: host root mounts a
	// fresh ext4 image with each allowed option in a private mount
	// namespace; the sandbox must get what the host gets.
	host := hostOptionMounts(t, append(append([]string{}, good...), bad...))
	for _, o := range good {
		l := lineWith(r.Stdout, "good "+o+" ")
		if l != "good "+o+" OK" || host[o] != "OK" {
			t.Errorf("%s: sandbox %q, host %q; want OK on both", o, l, host[o])
		}
	}
	for _, o := range bad {
		t.Logf("refused in the sandbox, on the host: %s %s", o, host[o])
	}
	if l := lineWith(r.Stdout, "squashfs-bad "); !strings.HasSuffix(l, "ERR EINVAL") {
		t.Errorf("squashfs errors=panic: got %q, want EINVAL", l)
	}
	if l := lineWith(r.Stdout, "squashfs-good "); !strings.HasSuffix(l, " OK") {
		t.Errorf("squashfs errors=continue: got %q, want OK", l)
	}
	// ext4 shows errors= when it differs from the superblock's default.
	if l := lineWith(r.Stdout, "sb-panic "); !strings.Contains(l, "errors=remount-ro") {
		t.Errorf("an image whose superblock says errors=panic must be mounted errors=remount-ro: %q", l)
	}
	// The refusal is logged, naming the option.
	var missing []string
	for _, o := range []string{"errors=panic", "journal_path=/x", "journal_dev=1", "dax"} {
		found := false
		for _, l := range strings.Split(r.Stderr, "\n") {
			if strings.Contains(l, "level=warning") && (strings.Contains(l, " option="+o+" ") || strings.Contains(l, " option=\""+o+"\"")) {
				found = true
			}
		}
		if !found {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 {
		t.Errorf("no warning naming option %s in the log:\n%s", strings.Join(missing, ", "), r.Stderr)
	}
}

// hostOptionMounts mounts a fresh ext4 image as host root with each of
// opts (through a host loop device, in a private mount namespace) and
// returns kmcall's answer for each.
func hostOptionMounts(t *testing.T, opts []string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "host.img")
	check(t, os.WriteFile(img, nil, 0o600))
	check(t, os.Truncate(img, 32<<20))
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	n := unboundHostLoop(t)
	dev := fmt.Sprintf("/dev/loop%d", n)
	if r := run(t, dir, "losetup", dev, img); r.Code != 0 {
		t.Fatalf("losetup %s: %s", dev, r)
	}
	defer func() {
		if r := run(t, dir, "losetup", "-d", dev); r.Code != 0 {
			t.Errorf("losetup -d %s: %s", dev, r)
		}
	}()
	var script strings.Builder
	script.WriteString("mount --make-rprivate / || exit 1\nmkdir -p mnt\n")
	for _, o := range opts {
		fmt.Fprintf(&script, "echo \"%[1]s $(kmcall mount %[2]s mnt ext4 0 %[1]s)\"; umount mnt 2>/dev/null\n", o, dev)
	}
	script.WriteString("exit 0\n")
	r := run(t, dir, "unshare", "-m", "sh", "-c", script.String())
	if r.Code != 0 {
		t.Fatalf("host mounts: %s", r)
	}
	got := map[string]string{}
	for _, o := range opts {
		got[o] = strings.TrimPrefix(lineWith(r.Stdout, o+" "), o+" ")
	}
	return got
}
