package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Differential tests of mount semantics: the same script runs as host
// root (in a private mount namespace of its own) and as the root of a
// sandbox, and must print the same, after normalizing what differs by
// nature (the directory, loop indices, FUSE's "fuse." type prefix and, for
// kernel mounts, their locked nosuid and nodev and their idmapping).

// mkImage makes dir/name (16 MiB) with cmd (the image path is its last
// argument) as host root, owned by the sandbox's root.
func mkImage(t *testing.T, dir, name string, cmd ...string) {
	t.Helper()
	p := image(t, dir, name, 16<<20)
	if out, err := exec.Command(cmd[0], append(cmd[1:], p)...).CombinedOutput(); err != nil {
		t.Fatalf("%v %s: %v\n%s", cmd, p, err, out)
	}
	check(t, os.Chown(p, SandboxUID, SandboxUID))
}

// squashImage makes dir/name, a squashfs image of tree, as host root,
// owned by the sandbox's root.
func squashImage(t *testing.T, dir, name, tree string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if out, err := exec.Command("mksquashfs", tree, p, "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	check(t, os.Chown(p, SandboxUID, SandboxUID))
}

// hostScript runs script as host root in a private mount namespace in dir
// and detaches, whatever happens, every loop device left bound to one of
// dir's files.
func hostScript(t *testing.T, dir, script string) string {
	t.Helper()
	t.Cleanup(func() {
		imgs, _ := filepath.Glob(filepath.Join(dir, "*"))
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
	r := run(t, dir, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	if r.Code != 0 {
		t.Fatalf("host script failed:\n%s", r)
	}
	return r.Stdout
}

var (
	loopDevName = regexp.MustCompile(`/dev/loop[0-9]+`)
	lockedOpt   = regexp.MustCompile(`,(nosuid|nodev)\b`)
	spaces      = regexp.MustCompile(` +`)
)

// normMount makes host and sandbox output comparable.
func normMount(out, dir string, kernel bool) string {
	out = strings.ReplaceAll(out, dir, "DIR")
	out = loopDevName.ReplaceAllString(out, "/dev/loopN")
	out = strings.ReplaceAll(out, "fuse.", "")
	if kernel {
		out = lockedOpt.ReplaceAllString(out, "")
		out = strings.ReplaceAll(out, ",idmapped", "")
	}
	return spaces.ReplaceAllString(out, " ")
}

// diffLines reports the lines of host and sandbox output that differ.
func diffLines(t *testing.T, host, sb string) {
	t.Helper()
	h, s := strings.Split(host, "\n"), strings.Split(sb, "\n")
	if len(h) != len(s) {
		t.Errorf("host printed %d lines, sandbox %d\n--- host\n%s--- sandbox\n%s", len(h), len(s), host, sb)
		return
	}
	for i := range h {
		if h[i] != s[i] {
			t.Errorf("host:    %s\nsandbox: %s", h[i], s[i])
		}
	}
}

// extImages makes the ext and squashfs images of the type tests in dir.
func extImages(t *testing.T, dir string) {
	t.Helper()
	mkImage(t, dir, "ext2.img", "mkfs.ext2", "-q", "-F")
	mkImage(t, dir, "ext3.img", "mkfs.ext3", "-q", "-F")
	mkImage(t, dir, "ext4.img", "mkfs.ext4", "-q", "-F")
	mkImage(t, dir, "ext4nj.img", "mkfs.ext4", "-q", "-F", "-O", "^has_journal")
	mkImage(t, dir, "ext2dn.img", "mkfs.ext2", "-q", "-F", "-O", "dir_nlink")
	mkImage(t, dir, "ext4q.img", "mkfs.ext4", "-q", "-F", "-O", "quota")
	image(t, dir, "zero.img", 16<<20)
	tree := filepath.Join(dir, "tree")
	check(t, os.MkdirAll(tree, 0o755))
	check(t, os.WriteFile(filepath.Join(tree, "f"), []byte("x\n"), 0o644))
	squashImage(t, dir, "sq.img", tree)
	sandboxMkdir(t, dir, "mnt")
}

// fsMnt makes in dir fs.img, a 32 MiB ext4 image, and mnt, both the
// sandbox's root's.
func fsMnt(t *testing.T, dir string) {
	t.Helper()
	fsImage(t, dir, "fs.img", "mkfs.ext4", 32<<20)
	sandboxMkdir(t, dir, "mnt")
}

// mountDiff is a differential mount test.
type mountDiff struct {
	script string
	// kernel normalizes both outputs as for a kernel mount (normMount).
	kernel bool
	// prepare fills each of the two work directories.
	prepare func(t *testing.T, dir string)
	// hostOK, if set, checks the host's output before the sandbox runs:
	// a host that does not answer as the test expects proves nothing.
	hostOK func(t *testing.T, host string)
}

// run runs m.script as host root and in a sandbox with flags, each in a
// work directory of its own, and reports the lines that differ. It
// returns the sandbox's work and state directories.
func (m mountDiff) run(t *testing.T, flags []string) (dir, state string) {
	t.Helper()
	hostGuard(t)
	hostDir, dir, state := workDir(t), workDir(t), stateDir(t)
	m.prepare(t, hostDir)
	m.prepare(t, dir)
	host := normMount(hostScript(t, hostDir, m.script), hostDir, m.kernel)
	if m.hostOK != nil {
		m.hostOK(t, host)
	}
	sb := normMount(sandboxOK(t, dir, state, flags, m.script), dir, m.kernel)
	diffLines(t, host, sb)
	return dir, state
}

// TestMountTypeChecks: mount(2) of ext2/3/4 images (with and without a
// journal, with ext4-only and unknown-to-ext2 features, with quota) and of
// squashfs and empty images as ext2, ext3, ext4 and squashfs, read-write
// and read-only, gives the host kernel's answer: fuse2fs would mount any
// ext image under any of the three names.
func TestMountTypeChecks(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mksquashfs", "fuse2fs", "squashfuse")
	script := `for img in ext2 ext3 ext4 ext4nj ext2dn ext4q sq zero; do
  d=$(losetup -f --show $img.img) || exit 1
  for t in ext2 ext3 ext4 squashfs; do for fl in 0 1; do echo "$img as $t flags $fl: $(mountcall $t $d mnt $fl)"; done; done
  losetup -d $d
done`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			dir, state := mountDiff{
				script:  script,
				prepare: extImages,
				hostOK: func(t *testing.T, host string) {
					if !strings.Contains(host, "ext4 as ext2 flags 0: EINVAL") || !strings.Contains(host, "ext2 as ext3 flags 0: EINVAL") {
						t.Fatalf("set-up: the host kernel should refuse ext4 as ext2 and ext2 as ext3:\n%s", host)
					}
				},
			}.run(t, p.flags)
			bareFails(t, dir, state, `d=$(losetup -f --show ext2.img)`)
		})
	}
}

// TestMountTypeLists: util-linux's type lists (`-t ext2,ext4`, and
// negated ones like `-t noext4`, which try every type of /proc/filesystems
// but those) end as on the host, with the same type or the same message.
func TestMountTypeLists(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs")
	script := `for img in ext2 ext3 ext4; do for t in nofoo,bar,ext2,ext4 noext4 noext2,ext4 ext2,ext4 ext3,ext4 bar,ext3; do
  out=$(mount -t $t -o loop $img.img mnt 2>&1); rc=$?
  echo "$img -t $t: rc=$rc type=$(findmnt -n -o FSTYPE mnt) $(echo "$out" | head -1)"
  [ $rc = 0 ] && umount mnt
done; done
echo "left $(losetup -a | wc -l)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			dir, state := mountDiff{script: script, prepare: extImages}.run(t, p.flags)
			bareFails(t, dir, state, `mount -t ext2,ext4 -o loop ext2.img mnt`)
		})
	}
}

// TestMountSecondMount: a second mount of a mounted device (util-linux
// reuses the loop device already attached to the file) shows the same
// files with its own flags; another type or read-only state gives EBUSY;
// umount of either leaves the other working, and after the last umount
// the device is released and the image complete.
func TestMountSecondMount(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs", "e2fsck", "debugfs")
	script := `mkdir -p a b c
mount -o loop fs.img a; echo "first $?"
echo one > a/f
mount -o loop,noexec fs.img b; echo "second $?"
echo "devices $(losetup -a | wc -l)"
cat b/f
echo "a: $(findmnt -n -o SOURCE,VFS-OPTIONS a)"
echo "b: $(findmnt -n -o SOURCE,VFS-OPTIONS b)"
d=$(findmnt -n -o SOURCE a)
mount -o ro $d c 2>&1 | head -1; echo "ro: $(findmnt -n -o TARGET c)"
mount -t ext3 $d c 2>&1 | head -1; echo "ext3: $(findmnt -n -o TARGET c)"
echo "EBUSY ro: $(mountcall ext4 $d c 1) ext3: $(mountcall ext3 $d c 0)"
umount a; echo "umount a $?"
cat b/f; echo two >> b/f; cat b/f
umount b; echo "umount b $?"
echo "devices $(losetup -a | wc -l)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			dir, state := mountDiff{
				script: script,
				kernel: p.name == "kernel",
				prepare: func(t *testing.T, dir string) {
					fsImage(t, dir, "fs.img", "mkfs.ext4", 32<<20)
				},
				hostOK: func(t *testing.T, host string) {
					if !strings.Contains(host, "second 0\ndevices 1\none\n") {
						t.Fatalf("set-up: the host should mount the device twice:\n%s", host)
					}
				},
			}.run(t, p.flags)
			img := filepath.Join(dir, "fs.img")
			hostFsck(t, img)
			if got := debugfsCat(t, img, "/f"); got != "one\ntwo\n" {
				t.Errorf("the image holds %q after the last umount, want both writes", got)
			}
			bareFails(t, dir, state, `mkdir -p a; mount -o loop fs.img a`)
		})
	}
}

// TestMountBlockSize: while an ext4 file system with 1024-byte blocks
// (mke2fs's choice below 512 MiB) is mounted, its device's block size
// (BLKBSZGET) is the file system's, as the kernel's mount sets it, not
// the 4096 the kernel chose when the device was first opened; and
// whatever the sandbox wrote is in the image after the umount.
func TestMountBlockSize(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs", "e2fsck", "debugfs", "blockdev")
	script := `mkdir -p a
mount -o loop fs.img a; echo "mount $?"
d=$(findmnt -n -o SOURCE a)
echo "block size: $(blockdev --getbsz $d)"
dd if=/dev/zero of=a/f bs=1k count=300 status=none; echo "write $?"
echo end >> a/f
umount a; echo "umount $?"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			hostGuard(t)
			hostDir, dir, state := ext4Dirs(t)
			host := normMount(hostScript(t, hostDir, script), hostDir, false)
			if !strings.Contains(host, "block size: 1024\n") {
				t.Fatalf("set-up: the host's mount should set the device's block size to 1024:\n%s", host)
			}
			out := sandboxOK(t, dir, state, p.flags, script)
			diffLines(t, host, normMount(out, dir, p.name == "kernel"))
			img := filepath.Join(dir, "fs.img")
			hostFsck(t, img)
			if got := debugfsCat(t, img, "/f"); len(got) != 300<<10+4 || !strings.HasSuffix(got, "end\n") {
				t.Errorf("the image holds %d bytes in /f after the umount, want %d ending in \"end\"", len(got), 300<<10+4)
			}
			bareFails(t, dir, state, `mkdir -p a; mount -o loop fs.img a`)
		})
	}
}

// TestMountFlagsPropagation: per-mount flags with a propagation type
// (util-linux makes the mount, then changes its propagation) show as on
// the host: a FUSE mount is not nosuid or nodev unless asked for. (A
// kernel mount is always nosuid and nodev, locked, and idmapped: compared
// without those.)
func TestMountFlagsPropagation(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs")
	script := `for o in ro,private nosuid,shared noexec,slave nodev,unbindable ro,noatime,private nosymfollow,nodiratime; do
  mount -o loop,$o fs.img mnt; echo "$o: $? $(findmnt -n -o VFS-OPTIONS,PROPAGATION mnt)"; umount mnt
done
echo "left $(losetup -a | wc -l)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			// A kernel mount is always nosuid and nodev (locked): compare
			// without them.
			dir, state := mountDiff{script: script, kernel: p.name == "kernel", prepare: fsMnt}.run(t, p.flags)
			bareFails(t, dir, state, `mount -o loop,ro,private fs.img mnt`)
		})
	}
}

// TestMountRemount: `mount -o remount,ro` of a served mount and back,
// per-mount flags with a remount, and a read-write remount of a read-only
// loop mount (EACCES, "is write-protected") give the host's answers, with
// both policies. (-i: with fuse3 installed, as on this host's root, mount(8)
// would hand a fuse.* remount to mount.fuse; a stock image has no helper.)
func TestMountRemount(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "fuse2fs", "e2fsck")
	script := `st() { echo "$1: rc=$2 $(findmnt -n -o VFS-OPTIONS mnt) sb=$(findmnt -n -o FS-OPTIONS mnt | cut -d, -f1) write=$(touch mnt/t 2>/dev/null && echo ok || echo refused)"; }
mount -o loop fs.img mnt; echo "mount $?"
echo hi > mnt/a
mount -i -o remount,ro mnt; st remount-ro $?
mount -i -o remount,rw mnt; st remount-rw $?
mount -i -o remount,noexec mnt; st remount-noexec $?
mount -i -o remount,exec mnt; st remount-exec $?
mount -i -o remount,bind,ro mnt; st bind-ro $?
mount -i -o remount,bind,rw mnt; st bind-rw $?
umount mnt; echo "umount $?"
mount -o loop,ro fs.img mnt; echo "mount ro $?"
mount -i -o remount,rw mnt 2>&1 | head -1; st remount-rw-of-ro x
umount mnt; echo "umount $?"
echo "left $(losetup -a | wc -l)"`
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			dir, state := mountDiff{
				script:  script,
				kernel:  p.name == "kernel",
				prepare: fsMnt,
				hostOK: func(t *testing.T, host string) {
					if !strings.Contains(host, "remount-ro: rc=0 ro,relatime sb=ro write=refused") {
						t.Fatalf("set-up: the host should remount read-only:\n%s", host)
					}
				},
			}.run(t, p.flags)
			hostFsck(t, filepath.Join(dir, "fs.img"))
			bareFails(t, dir, state, `mount -o loop fs.img mnt`)
		})
	}
}

// unlockedScript mounts a writable loop device read-only, noexec and
// nosymfollow in turn and clears those flags again with superblock and
// bind remounts; after each step, the mount's flags, the superblock's
// ro/rw and whether a write and an exec work.
const unlockedScript = `st() { echo "$1: rc=$2 $(findmnt -n -o VFS-OPTIONS mnt) sb=$(findmnt -n -o FS-OPTIONS mnt | cut -d, -f1) write=$(touch mnt/t 2>/dev/null && echo ok || echo refused) exec=$(mnt/x 2>/dev/null || echo refused)"; }
d=$(losetup -f --show fs.img) || exit 1
mount -o ro $d mnt; st mount-ro $?
mount -i -o remount,rw mnt; st remount-rw $?
printf '#!/bin/sh\necho ran\n' > mnt/x; chmod 755 mnt/x; echo "write $?"
mount -i -o remount,ro mnt; st remount-ro $?
mount -i -o remount,rw mnt; st remount-rw-again $?
mount -i -o remount,bind,noexec mnt; st bind-noexec $?
mount -i -o remount,bind,exec mnt; st bind-exec $?
umount mnt; echo "umount $?"
mount -o noexec $d mnt; st mount-noexec $?
mount -i -o remount,exec mnt; st remount-exec $?
umount mnt; echo "umount $?"
mount -o ro,noexec,nosymfollow $d mnt; st mount-ro-noexec-nosymfollow $?
mount -i -o remount,bind,rw mnt; st bind-rw $?
mount -i -o remount,rw,exec mnt; st remount-rw-exec $?
umount mnt; echo "umount $?"
losetup -d $d; echo "left $(losetup -a | wc -l)"`

// TestKernelMountRemountUnlocked: a kernel mount (--allow-kernel-mount
// ext4) made read-only, noexec or nosymfollow on a writable device can be
// remounted read-write, exec and symfollow, with superblock and bind
// remounts (util-linux 2.38's mount(2) path), as host root can: only
// nosuid and nodev (and the atime flags) are locked, not what the caller
// asked for; a bare fspick reconfiguration to read-write leaves the
// mount's own ro as it is. (The locked nosuid and nodev are left out of
// the comparison; TestAttack5KernelMountUnlocked checks that they hold.)
func TestKernelMountRemountUnlocked(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "e2fsck")
	// A bare superblock reconfiguration (fspick) leaves the mount's own
	// read-only flag as it is, as on the host.
	script := strings.Replace(unlockedScript, "\nlosetup -d $d;", `
mount -o ro $d mnt; st mount-ro-again $?
fspickrw mnt rw; st fspick-rw x
fspickrw mnt ro; st fspick-ro x
umount mnt; echo "umount $?"
losetup -d $d;`, 1)
	dir, state := mountDiff{
		script:  script,
		kernel:  true,
		prepare: fsMnt,
		hostOK: func(t *testing.T, host string) {
			if !strings.Contains(host, "remount-rw: rc=0 rw,relatime sb=rw write=ok") ||
				!strings.Contains(host, "bind-exec: rc=0 rw,relatime sb=rw write=ok exec=ran") {
				t.Fatalf("set-up: the host should remount read-write and exec:\n%s", host)
			}
		},
	}.run(t, []string{"--allow-kernel-mount", "ext4"})
	hostFsck(t, filepath.Join(dir, "fs.img"))
	bareFails(t, dir, state, `d=$(losetup -f --show fs.img)`)
}

// TestMountTableSource: every helper's mount shows the device as its
// source in mountinfo, as a kernel mount does, and util-linux finds the
// mount it made when the target is a symlink (no "failed to update
// userspace mount table"); umount through the symlink works too.
func TestMountTableSource(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mksquashfs", "mkfs.vfat", "fuse2fs", "squashfuse", "fusefat")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	fsImage(t, dir, "ext4.img", "mkfs.ext4", 16<<20)
	mkImage(t, dir, "vfat.img", "mkfs.vfat")
	tree := filepath.Join(dir, "tree")
	check(t, os.MkdirAll(tree, 0o755))
	squashImage(t, dir, "sq.img", tree)
	out := sandboxOK(t, dir, state, nil, `mkdir -p mnt; ln -s mnt lnk
for img in ext4 sq vfat; do
  mount -o loop $img.img lnk 2>err; rc=$?
  echo "$img rc=$rc source=$(findmnt -n -o SOURCE mnt) stderr=$(cat err)"
  umount lnk; echo "$img umount $?"
done
echo "left $(losetup -a | wc -l)"`)
	for _, img := range []string{"ext4", "sq", "vfat"} {
		l := lineWith(out, img+" rc=")
		if !regexp.MustCompile(`^\S+ rc=0 source=/dev/loop[0-9]+ stderr=$`).MatchString(l) {
			t.Errorf("%s: %q, want rc=0, the device as source and nothing on stderr\n%s", img, l, out)
		}
		if !strings.Contains(out, img+" umount 0\n") {
			t.Errorf("%s: umount through the symlink failed\n%s", img, out)
		}
	}
	if !strings.Contains(out, "left 0\n") {
		t.Errorf("devices left:\n%s", out)
	}
	bareFails(t, dir, state, `mount -o loop ext4.img lnk`)
}
