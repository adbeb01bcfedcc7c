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

// stockDists are the Debian releases whose stock images (mmdebstrap
// minbase + util-linux, mount, e2fsprogs, squashfs-tools, dosfstools,
// fdisk; no FUSE helper) the stock-image tests run: bookworm (util-linux
// 2.38, mount(2)) and trixie (2.41, fsopen and friends), or the list in
// $LOOPVISOR_STOCK_DISTS (space or comma separated).
var stockDists = func() []string {
	if d := os.Getenv("LOOPVISOR_STOCK_DISTS"); d != "" {
		return strings.Fields(strings.ReplaceAll(d, ",", " "))
	}
	return []string{"bookworm", "trixie"}
}()

// forStockDists runs f for each of stockDists as a subtest named after it.
func forStockDists(t *testing.T, f func(t *testing.T, dist string)) {
	for _, dist := range stockDists {
		t.Run(dist, func(t *testing.T) { f(t, dist) })
	}
}

// stockBundle makes a bundle in a new directory whose root file system is
// a fresh copy of the stock image of dist (owners shifted to the
// container's root), with programs (host paths) copied in, and nothing of
// loopvisor applied: a plain userns container as `runc spec` writes it.
func stockBundle(t *testing.T, dist string, args []string, programs ...string) *oci.Bundle {
	t.Helper()
	dir := tempBundleDir(t)
	b, err := oci.NewStockBundle(dir, dist, args, programs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stockOCIBundle is ociBundle on the stock image of the first of
// stockDists: the probes loopctl and loopstress (C, glibc only) are copied
// in at their host paths.
func stockOCIBundle(t *testing.T, a *agentProc, args ...string) *oci.Bundle {
	t.Helper()
	b := stockBundle(t, stockDists[0], args, filepath.Join(binDir, "loopctl"), filepath.Join(binDir, "loopstress"))
	ociConfig(t, a, b)
	return b
}

// TestStockImage: the stock images hold what the tests run inside and no
// FUSE helper, and the unpacked copy has its owners shifted, not
// flattened: setuid programs and shadow-group files survive.
func TestStockImage(t *testing.T) {
	needRoot(t)
	for _, dist := range []string{"bookworm", "trixie"} {
		t.Run(dist, func(t *testing.T) {
			img, err := oci.StockImage(dist)
			if err != nil {
				t.Fatal(err)
			}
			if err := oci.CheckStockImage(img); err != nil {
				t.Fatal(err)
			}
			dir, err := oci.StockRootfs(dist)
			if err != nil {
				t.Fatal(err)
			}
			cleanupDir(t, dir)
			for _, msg := range oci.CheckShifted(dir, []oci.Owner{
				{Path: ".", UID: 0, GID: 0, Mode: os.ModeDir | 0o755},
				{Path: "usr/bin/mount", UID: 0, GID: 0, Mode: os.ModeSetuid | 0o755},
				{Path: "usr/bin/su", UID: 0, GID: 0, Mode: os.ModeSetuid | 0o755},
				{Path: "etc/shadow", UID: 0, GID: 42, Mode: 0o640},
				{Path: "usr/bin/chage", UID: 0, GID: 42, Mode: os.ModeSetgid | 0o755},
				{Path: "tmp", UID: 0, GID: 0, Mode: os.ModeDir | os.ModeSticky | 0o777},
				{Path: "root", UID: 0, GID: 0, Mode: os.ModeDir | 0o700},
			}) {
				t.Error(msg)
			}
			if fi, err := os.Lstat(filepath.Join(dir, "bin")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("/bin should be a symlink (merged /usr): %v %v", fi, err)
			}
			for _, p := range []string{"usr/bin/fuse2fs", "usr/sbin/fuse2fs", "usr/bin/squashfuse", "usr/bin/fusefat", "usr/bin/fusermount3", "usr/bin/fusermount"} {
				if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
					t.Errorf("the stock image has %s", p)
				}
			}
		})
	}
}

// stockCase runs script (sh -c) in one bundle of dist's stock image under
// rt twice. First
// without loopvisor (runc spec with a user namespace, nothing else), where
// it must fail with stderr matching bareErr; then with `loopvisor
// oci-config` applied for agent a, where it must exit 0. prep, if not nil,
// runs on the bundle before both. It returns the second run's result.
func stockCase(t *testing.T, dist string, rt *oci.Runtime, a *agentProc, script string, bareErr *regexp.Regexp, prep func(b *oci.Bundle)) (oci.Result, *oci.Bundle) {
	t.Helper()
	b := stockBundle(t, dist, []string{"sh", "-c", script})
	if prep != nil {
		prep(b)
	}
	res, err := rt.Run(b, nil)
	if err != nil {
		t.Fatalf("container without loopvisor: %v\n%s", err, res)
	}
	if res.Code == 0 || !bareErr.MatchString(res.Stderr) {
		t.Errorf("without loopvisor the script should fail with %q:\n%s", bareErr, res)
	}
	ociConfig(t, a, b)
	res, err = rt.Run(b, nil)
	if err != nil || res.Code != 0 {
		t.Fatalf("container with loopvisor: %v\n%s", err, res)
	}
	return res, b
}

// TestStockLosetup: each stock image's own losetup (util-linux 2.38 in
// bookworm, 2.41 in trixie) under runc and crun with only oci-config
// applied: -f, --show, -a, -d. Without loopvisor losetup fails.
func TestStockLosetup(t *testing.T) {
	needRoot(t)
	forStockDists(t, func(t *testing.T, dist string) {
		runtimes(t, func(t *testing.T, rt *oci.Runtime) {
			hostGuard(t)
			a := startAgent(t, stateDir(t))
			res, _ := stockCase(t, dist, rt, a, `set -e
cd /tmp
rm -f disk.img
truncate -s 32M disk.img
echo "free $(losetup -f)"
d=$(losetup -f --show disk.img)
echo "attached $d"
losetup -a
echo "count $(losetup -a | wc -l)"
losetup -d $d
echo "left $(losetup -a | wc -l)"`, regexp.MustCompile(`losetup: `), nil)
			if !regexp.MustCompile(`^free /dev/loop\d+\nattached (/dev/loop\d+)\n/dev/loop\d+: .*\(/tmp/disk\.img\)\ncount 1\nleft 0\n$`).MatchString(res.Stdout) {
				t.Errorf("unexpected output:\n%s", res)
			}
			waitGone(t, a)
		})
	})
}

// fsLine is shell that prints "fs TYPE SOURCE" for the mount at $1.
const fsLine = `fsline() { grep " $1 " /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1,2 | sed 's/^/fs /'; }`

// stockMountCase is one file system type of TestStockMount.
type stockMountCase struct {
	name   string
	script string
	prep   func(t *testing.T, b *oci.Bundle)
	check  func(t *testing.T, b *oci.Bundle, stdout string)
}

// TestStockMount: `mount -o loop` in each stock image, which has
// no FUSE helper, under runc and crun with only oci-config applied and the
// agent's default policy (FUSE helpers, the host's): ext4 (mkfs.ext4
// inside, write, host e2fsck -fn and debugfs), squashfs (made on the host
// with mksquashfs, read inside) and vfat (mkfs.vfat inside, write, host
// fsck.vfat -n and mtools). Each mount names its loop device as source.
// Without loopvisor each fails.
func TestStockMount(t *testing.T) {
	needRoot(t)
	needTools(t, "e2fsck", "debugfs", "mksquashfs", "fsck.vfat", "mtype")
	cases := []stockMountCase{
		{
			name: "ext4",
			script: `set -e
cd /tmp
rm -f ext4.img
truncate -s 32M ext4.img
mkfs.ext4 -q ext4.img
mkdir -p /mnt/m
mount -o loop ext4.img /mnt/m
fsline /mnt/m
mkdir /mnt/m/dir
echo written-in-stock > /mnt/m/dir/hello.txt
cat /mnt/m/dir/hello.txt
` + stockWorkload("/mnt/m", "ext4.img", true) + `
if mount -o remount,ro /mnt/m 2>/dev/null; then
  if touch /mnt/m/x 2>/dev/null; then echo remount-ro-ignored; else echo remount-ro-honoured; fi
  mount -o remount,rw /mnt/m
  touch /mnt/m/y && echo remount-rw-honoured
else echo remount-ro-failed; fi
umount /mnt/m
echo "left $(losetup -a | wc -l)"`,
			check: func(t *testing.T, b *oci.Bundle, stdout string) {
				img := filepath.Join(b.Rootfs, "tmp", "ext4.img")
				hostFsck(t, img)
				if got := debugfsCat(t, img, "/dir/hello.txt"); got != "written-in-stock\n" {
					t.Errorf("host reads %q", got)
				}
				checkStockWorkload(t, stdout, true)
				// A stock image has no mount.fuse: util-linux 2.38 remounts
				// the FUSE mount with mount(2), as it remounts ext4 on the
				// host; 2.41 with fspick and fsconfig, which loopvisor
				// serves (mountproxy/fspick.go).
				if !strings.Contains(stdout, "remount-ro-honoured\nremount-rw-honoured\n") {
					t.Errorf("mount -o remount,ro and back in a stock image:\n%s", stdout)
				}
			},
		},
		{
			name: "squashfs",
			script: `set -e
mkdir -p /mnt/s
mount -o loop,ro /tmp/x.sqfs /mnt/s
fsline /mnt/s
cat /mnt/s/sub/file.txt
if touch /mnt/s/new 2>/dev/null; then echo writable; else echo read-only; fi
umount /mnt/s
echo "left $(losetup -a | wc -l)"`,
			prep: func(t *testing.T, b *oci.Bundle) {
				tree := filepath.Join(b.Dir, "tree")
				check(t, os.MkdirAll(filepath.Join(tree, "sub"), 0o755))
				check(t, os.WriteFile(filepath.Join(tree, "sub", "file.txt"), []byte("squash-content\n"), 0o644))
				img := filepath.Join(b.Rootfs, "tmp", "x.sqfs")
				if out, err := exec.Command("mksquashfs", tree, img, "-quiet", "-no-progress", "-all-root").CombinedOutput(); err != nil {
					t.Fatalf("mksquashfs: %v\n%s", err, out)
				}
				check(t, os.Chown(img, SandboxUID, SandboxUID))
				check(t, os.Chmod(img, 0o644))
			},
			check: func(t *testing.T, b *oci.Bundle, stdout string) {
				if !strings.Contains(stdout, "squash-content\nread-only\n") {
					t.Errorf("squashfs content or mode wrong:\n%s", stdout)
				}
			},
		},
		{
			name: "vfat",
			script: `set -e
cd /tmp
rm -f fat.img
truncate -s 32M fat.img
mkfs.vfat -n STOCK fat.img >/dev/null
mkdir -p /mnt/f
mount -o loop fat.img /mnt/f
fsline /mnt/f
mkdir /mnt/f/dir
echo written-in-stock > /mnt/f/dir/hello.txt
cat /mnt/f/dir/hello.txt
` + stockWorkload("/mnt/f", "fat.img", false) + `
umount /mnt/f
echo "left $(losetup -a | wc -l)"`,
			check: func(t *testing.T, b *oci.Bundle, stdout string) {
				img := filepath.Join(b.Rootfs, "tmp", "fat.img")
				if out, err := exec.Command("fsck.vfat", "-n", img).CombinedOutput(); err != nil {
					t.Errorf("host fsck.vfat -n: %v\n%s", err, out)
				}
				cmd := exec.Command("mtype", "-i", img, "::dir/hello.txt")
				cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
				if out, err := cmd.CombinedOutput(); err != nil || string(out) != "written-in-stock\n" {
					t.Errorf("host mtype reads %q (%v)", out, err)
				}
				checkStockWorkload(t, stdout, false)
			},
		},
	}
	forStockDists(t, func(t *testing.T, dist string) {
		runtimes(t, func(t *testing.T, rt *oci.Runtime) {
			hostGuard(t)
			a := startAgent(t, stateDir(t))
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					hostGuard(t)
					var prep func(*oci.Bundle)
					if c.prep != nil {
						prep = func(b *oci.Bundle) { c.prep(t, b) }
					}
					res, b := stockCase(t, dist, rt, a, fsLine+"\n"+c.script, regexp.MustCompile(`mount: `), prep)
					src := regexp.MustCompile(`(?m)^fs (\S+) (\S+)$`).FindStringSubmatch(res.Stdout)
					if src == nil || !regexp.MustCompile(`^/dev/loop\d+$`).MatchString(src[2]) {
						t.Errorf("the mount should name its loop device as source (fs TYPE SOURCE):\n%s", res.Stdout)
					}
					if !strings.HasSuffix(res.Stdout, "left 0\n") {
						t.Errorf("devices left after umount:\n%s", res)
					}
					c.check(t, b, res.Stdout)
				})
			}
			waitGone(t, a)
		})
	})
}

// stockWorkload is the rest of what a FUSE helper serves in TestStockMount,
// so that the system calls it makes meet its seccomp allow-list: a large
// file written, renamed and read back after a remount, directories made
// and removed, a file truncated and unlinked, and with links (ext4) a
// symlink and a hard link. Any step failing stops the script (set -e).
func stockWorkload(mnt, img string, links bool) string {
	s := `dd if=/dev/urandom of=@M@/big bs=1M count=12 status=none
sum=$(md5sum < @M@/big)
mv @M@/big @M@/dir/big2
mkdir @M@/gone @M@/gone/sub
echo x > @M@/gone/sub/f
truncate -s 1 @M@/gone/sub/f
rm @M@/gone/sub/f
rmdir @M@/gone/sub @M@/gone
`
	if links {
		s += `ln -s hello.txt @M@/dir/link
ln @M@/dir/hello.txt @M@/dir/hard
chmod 600 @M@/dir/hard
echo "link $(readlink @M@/dir/link) $(cat @M@/dir/link)"
echo "hard $(stat -c %h @M@/dir/hello.txt)"
`
	}
	s += `umount @M@
mount -o loop @I@ @M@
if [ "$(md5sum < @M@/dir/big2)" = "$sum" ]; then echo big-same; else echo big-differs; fi
rm @M@/dir/big2
`
	return strings.NewReplacer("@M@", mnt, "@I@", img).Replace(s)
}

func checkStockWorkload(t *testing.T, stdout string, links bool) {
	t.Helper()
	want := []string{"big-same\n"}
	if links {
		want = append(want, "link hello.txt written-in-stock\n", "hard 2\n")
	}
	for _, w := range want {
		if !strings.Contains(stdout, w) {
			t.Errorf("workload: no %q in\n%s", w, stdout)
		}
	}
}
