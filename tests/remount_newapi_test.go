package tests

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/loopvisor/loopvisor/tests/oci"
)

// stockRemountScript runs in a Debian trixie root (util-linux 2.41) as a
// container and, chrooted, as host root: `mount -o loop` of an ext4 image,
// then superblock remounts (fspick, fsconfig, FSCONFIG_CMD_RECONFIGURE and
// mount_setattr), bind remounts (mount_setattr alone) and a read-write
// remount of a read-only loop mount; after each, the mount's flags (those
// in $KEEP), the superblock's ro/rw and whether a write works. Last, a
// mount through a symlinked target and libmount's messages about it.
const stockRemountScript = `cd /tmp
rm -f ext4.img; truncate -s 32M ext4.img; mkfs.ext4 -q ext4.img
mkdir -p /mnt/m; rm -f /tmp/lnk; ln -s /mnt/m /tmp/lnk
st() { echo "$1 rc=$2 mnt=$(findmnt -n -o VFS-OPTIONS /mnt/m | tr , '\n' | grep -x "$KEEP" | paste -sd,) sb=$(findmnt -n -o FS-OPTIONS /mnt/m | cut -d, -f1) write=$(touch /mnt/m/t 2>/dev/null && echo ok || echo refused)"; }
mount -o loop ext4.img /mnt/m || exit 32
echo "mount $?"
mount -o remount,ro /mnt/m; st remount-ro $?
mount -o remount,rw /mnt/m; st remount-rw $?
mount -o remount,bind,noexec /mnt/m; st bind-noexec $?
mount -o remount,nosuid /mnt/m; st remount-nosuid $?
mount -o remount,bind,ro /mnt/m; st bind-ro $?
mount -o remount,rw,exec /mnt/m; st remount-rw-exec $?
umount /mnt/m; echo "umount $?"
mount -o loop,ro ext4.img /mnt/m; echo "mount-ro $?"
mount -o remount,rw /mnt/m 2>/dev/null; st remount-rw-of-ro $?
umount /mnt/m; echo "umount $?"
mount -o loop ext4.img /tmp/lnk 2>err; echo "symlink rc=$? stderr=$(cat err) at=$(findmnt -n -o TARGET /mnt/m)"
umount /tmp/lnk; echo "umount-symlink $?"
echo "left $(losetup -a | wc -l)"`

// hostRoot unpacks the stock image of dist as it is (owned by host root)
// into a new directory, for hostChroot.
func hostRoot(t *testing.T, dist string) string {
	t.Helper()
	img, err := oci.StockImage(dist)
	if err != nil {
		t.Fatal(err)
	}
	dir := tempBundleDir(t)
	if r := run(t, "/", "tar", "-C", dir, "--exclude", "./dev/*", "-xf", img); r.Code != 0 {
		t.Fatalf("unpack %s:\n%s", img, r)
	}
	return dir
}

// hostChroot runs script as host root chrooted into rootfs (the same
// stock image), in a private mount namespace with the host's /dev, /sys
// and a new /proc: the host's answers from the same util-linux. Loop
// devices left on rootfs's files are detached at cleanup (the mount
// namespace, and with it every mount, ends with the script).
func hostChroot(t *testing.T, rootfs, env, script string) string {
	t.Helper()
	t.Cleanup(func() {
		imgs, _ := filepath.Glob(filepath.Join(rootfs, "tmp", "*.img"))
		for _, img := range imgs {
			out, _ := exec.Command("losetup", "-j", img).Output()
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if d, _, ok := strings.Cut(l, ":"); ok {
					if o, err := exec.Command("losetup", "-d", d).CombinedOutput(); err != nil {
						t.Errorf("losetup -d %s: %v %s", d, err, o)
					}
				}
			}
		}
	})
	wrap := `set -e; R="$1"; mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin ` + env + ` sh -c "$2"`
	r := run(t, "/", "unshare", "-m", "--propagation", "private", "sh", "-c", wrap, "sh", rootfs, script)
	if r.Code != 0 {
		t.Fatalf("host script failed:\n%s", r)
	}
	return r.Stdout
}

// TestStockNewAPIRemount: in a stock Debian trixie container (runc and
// crun, oci-config only) util-linux 2.41 remounts a served ext4 mount as
// host root does with the same binaries (chrooted into the same image, on
// a host loop device): `mount -o remount,ro` and back (fspick, fsconfig
// "ro"/"rw" and the superblock's options from mountinfo, then
// FSCONFIG_CMD_RECONFIGURE and mount_setattr), per-mount flags with a
// superblock remount (nosuid) and with bind remounts (noexec, ro), and a
// read-write remount of a read-only loop mount (refused), for the default
// FUSE policy and for kernel mounts (--allow-kernel-mount ext4, whose
// locked nosuid is left out of the comparison). A mount through a
// symlinked target updates libmount's view without a message, as on the
// host. For kernel mounts, unlockedStockScript too: ro, noexec and
// nosymfollow asked at the mount are not locked, as on the host
// (unlockedNewAPI). Without loopvisor the first mount fails.
func TestStockNewAPIRemount(t *testing.T) {
	needRoot(t)
	cases := []struct {
		name  string
		flags []string
		keep  string
	}{
		{"fuse", nil, `ro\|rw\|noexec\|nosuid`},
		{"kernel", []string{"--allow-kernel-mount", "ext4"}, `ro\|rw\|noexec`},
	}
	for _, p := range cases {
		t.Run(p.name, func(t *testing.T) {
			env := "KEEP='" + p.keep + "'"
			rootfs := hostRoot(t, "trixie")
			host := loopDevName.ReplaceAllString(hostChroot(t, rootfs, env, stockRemountScript), "/dev/loopN")
			if !strings.Contains(host, "remount-ro rc=0 mnt=ro sb=ro write=refused\n") || !strings.Contains(host, "\nsymlink rc=0 stderr= at=/mnt/m\n") ||
				!strings.Contains(host, "\nleft 0") {
				t.Fatalf("set-up: the host should remount read-only:\n%s", host)
			}
			unlocked := ""
			if p.name == "kernel" {
				unlocked = normKernel(hostChroot(t, rootfs, "", unlockedStockScript))
				if !strings.Contains(unlocked, "remount-rw: rc=0 rw,relatime sb=rw write=ok") {
					t.Fatalf("set-up: the host should remount read-write:\n%s", unlocked)
				}
			}
			runtimes(t, func(t *testing.T, rt *oci.Runtime) {
				hostGuard(t)
				a := startAgent(t, stateDir(t), p.flags...)
				res, _ := stockCase(t, "trixie", rt, a, "export "+env+"\n"+stockRemountScript, regexp.MustCompile(`mount: `), nil)
				diffLines(t, host, loopDevName.ReplaceAllString(res.Stdout, "/dev/loopN"))
				if t.Failed() {
					t.Logf("sandbox stderr:\n%s", res.Stderr)
				}
				if p.name == "kernel" {
					unlockedNewAPI(t, rt, a, unlocked)
				}
				waitGone(t, a)
			})
		})
	}
}

// unlockedStockScript is unlockedScript (mount_semantics_test.go) in a
// stock root's /tmp, with its own image.
const unlockedStockScript = `cd /tmp; rm -rf fs.img mnt; truncate -s 32M fs.img; mkfs.ext4 -q fs.img; mkdir mnt
` + unlockedScript

// normKernel makes the output of a kernel mount's script comparable with
// the host's: loop indices, the locked nosuid and nodev, the idmapping.
func normKernel(out string) string {
	out = loopDevName.ReplaceAllString(out, "/dev/loopN")
	out = lockedOpt.ReplaceAllString(out, "")
	return strings.ReplaceAll(out, ",idmapped", "")
}

// unlockedNewAPI: a kernel mount made read-only, noexec or nosymfollow on
// a writable device is remounted read-write, exec and symfollow by
// util-linux 2.41 (fspick and mount_setattr) as host root's run of the
// same binaries does (host): only nosuid and nodev are locked.
func unlockedNewAPI(t *testing.T, rt *oci.Runtime, a *agentProc, host string) {
	t.Helper()
	b := stockBundle(t, "trixie", []string{"sh", "-c", unlockedStockScript})
	ociConfig(t, a, b)
	res, err := rt.Run(b, nil)
	if err != nil || res.Code != 0 {
		t.Fatalf("container with loopvisor: %v\n%s", err, res)
	}
	diffLines(t, host, normKernel(res.Stdout))
	if t.Failed() {
		t.Logf("sandbox stderr:\n%s", res.Stderr)
	}
}

// TestFspickErrnos: fspick and fsconfig on reconfiguration contexts, as
// host root answers them on a kernel ext4 mount, for a served mount with
// both policies (fspickerrs): bad flags, missing paths, a bad descriptor,
// a directory that is not a mount root, a symlinked target followed or
// not; a context duplicated and its first descriptor closed is still the
// context (fsmount and create EBUSY, the kernel's argument errnos, the
// option errors=remount-ro taken as the host's ext4 takes it, which a FUSE
// reconfiguration context refuses by itself, ro applied: writes then fail
// with EROFS); its number, reused by a tmpfs
// context, is the kernel's tmpfs context; util-linux's form (an O_PATH
// descriptor, FSPICK_EMPTY_PATH) makes the mount writable again; a holder
// without CAP_SYS_ADMIN (uid 1000) sets parameters but cannot reconfigure
// (EPERM, then EBUSY: the context has failed); fspick of a tmpfs the
// caller mounted is the kernel's. Then umount ends the mount
// (its contexts are gone) and the device is free. Without loopvisor the
// device is not there.
func TestFspickErrnos(t *testing.T) {
	needRoot(t)
	script := `d=$(losetup -f --show fs.img) || exit 1
mount $d mnt || exit 1
mount -t tmpfs none tmp || exit 1
fspickerrs mnt tmp
umount tmp; umount mnt; echo "umount $?"
losetup -d $d
echo "left $(losetup -a | grep -c fs.img)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			hostDir, dir, state := ext4Dirs(t, "mnt", "tmp")
			host := hostScript(t, hostDir, script)
			for _, want := range []string{"reconfigure-ro OK\nafter-ro sb=ro write=EROFS\n", "after-rw sb=rw write=OK\n", "unprivileged-reconfigure EPERM\n", "after-unprivileged sb=rw write=OK\n", "tmpfs-reconfigure OK\n", "umount 0\n"} {
				if !strings.Contains(host, want) {
					t.Fatalf("set-up: the host should give %q:\n%s", want, host)
				}
			}
			sb := sandboxOK(t, dir, state, p.flags, script)
			diffLines(t, host, sb)
			if !strings.HasSuffix(sb, "left 0\n") {
				t.Errorf("device left attached:\n%s", sb)
			}
			bareFails(t, dir, state, script)
		})
	}
}
