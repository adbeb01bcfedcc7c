package tests

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// partLayout is the GPT of the partition tests: a BIOS boot partition, an
// ESP and a root partition, named.
const partLayout = `label: gpt
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
size=20MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
`

// partImages makes dir/disk.img, 64 MiB partitioned as partLayout, and
// a sparse copy of it, dir/host.img, for the host's half of a differential
// test, whose path it returns.
func partImages(t *testing.T, dir string) (hostImg string) {
	t.Helper()
	img := image(t, dir, "disk.img", 64<<20)
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader(partLayout)
	if o, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, o)
	}
	hostImg = filepath.Join(dir, "host.img")
	if o, err := exec.Command("cp", "--sparse=always", img, hostImg).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, o)
	}
	return hostImg
}

// partReport prints what tools see of the partitions of the device in
// $d, with its name replaced by DEV: each partition's sysfs attributes and
// uevent, where its class and dev links lead, lsblk's and partx's views.
// The host and a sandbox must print the same.
const partReport = `n=${d#/dev/}
{
for p in /sys/block/$n/${n}p*; do
	b=${p##*/}
	echo "$b: start=$(cat $p/start) size=$(cat $p/size) partition=$(cat $p/partition) ro=$(cat $p/ro) align=$(cat $p/alignment_offset) discard=$(cat $p/discard_alignment)"
	echo "$b uevent: $(grep -E '^(DEVNAME|DEVTYPE|PARTN)=' $p/uevent | tr '\n' ' ')"
	echo "$b class: $(readlink -f /sys/class/block/$b | awk -F/ '{print $(NF-1) "/" $NF}')"
	echo "$b by dev: $(cat /sys/dev/block/$(cat $p/dev)/start) $(cat /sys/dev/block/$(cat $p/dev)/partition)"
done
echo "lsblk:"; lsblk -P -o NAME,SIZE,TYPE,RO,PKNAME,START $d
echo "partx disk:"; partx --show -o NR,START,END,SECTORS,NAME,TYPE $d
echo "partx p3:"; partx --show -o NR,START,SECTORS,NAME ${d}p3
} 2>&1 | sed "s/$n/DEV/g"
`

// TestPartitionSysfsDifferential: a partitioned device inside a sandbox
// looks as a distro kernel shows one (here the host, which has no
// partition parsers, gets its partitions from partx's BLKPG): the same
// loopNpM directories with start, size, partition, uevent, the same
// lsblk and partx output; the devices that serve the partitions are not
// shown; /proc/partitions lists the sandbox's own devices, not the host's
// loop device that is attached at the same time. HDIO_GETGEO of a whole
// loop device is the kernel's ENOTTY; of a partition the host answers
// ENOTTY (the loop driver has no geometry) while the sandbox answers its
// start sector, which grub-install falls back to (see
// loopctl/partitions.go getgeo).
func TestPartitionSysfsDifferential(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "partx", "lsblk")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	hostImg := partImages(t, dir)

	// The host: a distro kernel would make the partitions at losetup -P;
	// this one has no parsers, so partx adds them with BLKPG.
	out, err := exec.Command("losetup", "-P", "-f", "--show", hostImg).Output()
	if err != nil {
		t.Fatalf("host losetup: %v", err)
	}
	hostDev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if o, err := exec.Command("losetup", "-d", hostDev).CombinedOutput(); err != nil {
			t.Errorf("host losetup -d %s: %v %s", hostDev, err, o)
		}
	})
	if o, err := exec.Command("partx", "-a", hostDev).CombinedOutput(); err != nil {
		t.Fatalf("host partx -a: %v %s", err, o)
	}
	host := run(t, dir, "sh", "-c", "d="+hostDev+"\n"+partReport)
	if host.Code != 0 || !strings.Contains(host.Stdout, "DEVp3: start=") {
		t.Fatalf("host report:\n%s", host)
	}
	hostGeo := run(t, dir, filepath.Join(binDir, "geoprobe"), hostDev, hostDev+"p3")
	hostParts, err := os.ReadFile("/proc/partitions")
	check(t, err)
	hostName := strings.TrimPrefix(hostDev, "/dev/")
	if !strings.Contains(string(hostParts), " "+hostName+"p3\n") {
		t.Fatalf("the host's /proc/partitions lacks %sp3:\n%s", hostName, hostParts)
	}

	script := `set -e
d=$(losetup -P -f --show disk.img)
partx -a $d 2>/dev/null || true
` + partReport + `
n=${d#/dev/}
echo "== sysfs loop devices: $(ls /sys/block | grep loop | sed "s/$n/DEV/g" | tr '\n' ' ')"
echo "== dev loop nodes: $(ls /dev | grep loop | sed "s/$n/DEV/g" | tr '\n' ' ')"
echo "== proc partitions:"; sed "s/$n/DEV/g" /proc/partitions
echo "== geo:"; geoprobe $d ${d}p3 | sed "s/$n/DEV/g"
losetup -d $d`
	r := sandbox(t, dir, state, nil, script)
	if r.Code != 0 {
		t.Fatalf("sandbox:\n%s", r)
	}
	sb, rest, _ := strings.Cut(r.Stdout, "== sysfs loop devices: ")
	rest = "== sysfs loop devices: " + rest
	if sb != host.Stdout {
		t.Errorf("the sandbox's view of its partitions differs from the host's\n--- host\n%s--- sandbox\n%s", host.Stdout, sb)
	}
	if l := lineWith(rest, "== sysfs loop devices"); l != "== sysfs loop devices: DEV " {
		t.Errorf("sysfs shows more loop devices than the sandbox's disk: %q", l)
	}
	if l := lineWith(rest, "== dev loop nodes"); l != "== dev loop nodes: loop-control DEV DEVp1 DEVp2 DEVp3 " {
		t.Errorf("/dev shows other loop nodes than the disk's and its partitions': %q", l)
	}

	// /proc/partitions: the sandbox's disk and partitions with their sizes
	// in KiB, as the kernel prints them, and not the host's loop device.
	procParts := lineRange(rest, "== proc partitions:", "== geo:")
	for _, w := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^major minor  #blocks  name$`),
		regexp.MustCompile(`(?m)^   7 +[0-9]+ +65536 DEV$`),
		regexp.MustCompile(`(?m)^   7 +[0-9]+ +1024 DEVp1$`),
		regexp.MustCompile(`(?m)^   7 +[0-9]+ +20480 DEVp2$`),
		regexp.MustCompile(`(?m)^   7 +[0-9]+ +[0-9]+ DEVp3$`),
	} {
		if !w.MatchString(procParts) {
			t.Errorf("/proc/partitions in the sandbox: want %v in\n%s", w, procParts)
		}
	}
	if regexp.MustCompile(`loop|DEV[0-9]`).MatchString(procParts) {
		t.Errorf("/proc/partitions in the sandbox shows other loop devices (the host has %s):\n%s", hostName, procParts)
	}

	// HDIO_GETGEO: the kernel's answers for the whole device; the start
	// sector for the partition where the host's loop partition has none.
	hg := strings.ReplaceAll(hostGeo.Stdout, hostName, "DEV")
	sg := lineRange(rest, "== geo:", "\x00")
	if want := "/dev/DEV: err=ENOTTY\n/dev/DEV null: err=EINVAL\n/dev/DEV bad: err=ENOTTY\n"; !strings.HasPrefix(hg, want) || !strings.HasPrefix(sg, want) {
		t.Errorf("HDIO_GETGEO of the whole device: host\n%ssandbox\n%s", hg, sg)
	}
	if !strings.Contains(hg, "/dev/DEVp3: err=ENOTTY\n") {
		t.Errorf("the host's loop partitions have no geometry on this kernel: %s", hg)
	}
	start := regexp.MustCompile(`(?m)^DEVp3: start=([0-9]+) size=([0-9]+)`).FindStringSubmatch(host.Stdout)
	if start == nil {
		t.Fatalf("no start of p3 in the host's report:\n%s", host.Stdout)
	}
	cyl := (64 << 20 / 512) >> 11
	if want := fmt.Sprintf("/dev/DEVp3: heads=64 sectors=32 cylinders=%d start=%s\n/dev/DEVp3 null: err=EINVAL\n/dev/DEVp3 bad: err=EFAULT\n", cyl, start[1]); !strings.Contains(sg, want) {
		t.Errorf("HDIO_GETGEO of a partition in the sandbox: want\n%sgot\n%s", want, sg)
	}
}

// lineRange returns the lines of s after the line from and before the line
// starting with to.
func lineRange(s, from, to string) string {
	_, after, ok := strings.Cut(s, from+"\n")
	if !ok {
		return ""
	}
	if i := strings.Index(after, to); i >= 0 {
		after = after[:i]
	}
	return after
}

// guestKernel returns a directory holding Debian's kernel (vmlinuz) and
// the modules the guest needs for a virtio disk and ext4 (mods/NAME.ko),
// from the package linux-image-amd64 depends on, downloaded with apt-get
// once and cached in oci.CacheDir().
func guestKernel(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("apt-cache depends linux-image-amd64: %v", err)
	}
	m := regexp.MustCompile(`Depends: (linux-image-[0-9][a-z0-9.+-]*)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no kernel package in\n%s", out)
	}
	pkg := string(m[1])
	cache := filepath.Join(oci.CacheDir(), "guest-"+pkg)
	if _, err := os.Stat(filepath.Join(cache, "vmlinuz")); err == nil {
		return cache
	}
	check(t, os.MkdirAll(oci.CacheDir(), 0o755))
	lock, err := os.OpenFile(filepath.Join(oci.CacheDir(), ".guest-lock"), os.O_CREATE|os.O_RDWR, 0o600)
	check(t, err)
	defer func() { _ = lock.Close() }()
	check(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX))
	if _, err := os.Stat(filepath.Join(cache, "vmlinuz")); err == nil {
		return cache
	}
	tmp, err := os.MkdirTemp(oci.CacheDir(), ".guest-")
	check(t, err)
	defer func() { _ = os.RemoveAll(tmp) }()
	check(t, os.Chmod(tmp, 0o755)) // apt's _apt user writes the download here
	dl := exec.Command("apt-get", "download", "-q", pkg)
	dl.Dir = tmp
	if o, err := dl.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download %s: %v\n%s", pkg, err, o)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download %s left %v", pkg, debs)
	}
	x := filepath.Join(tmp, "x")
	if o, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, o)
	}
	dst := filepath.Join(tmp, "out")
	check(t, os.MkdirAll(filepath.Join(dst, "mods"), 0o755))
	kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("kernels in %s: %v", pkg, kernels)
	}
	if o, err := exec.Command("cp", kernels[0], filepath.Join(dst, "vmlinuz")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, o)
	}
	want := map[string]bool{}
	for _, m := range guestModules {
		want[m+".ko"] = true
	}
	check(t, filepath.Walk(filepath.Join(x, "lib", "modules"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !want[fi.Name()] {
			return err
		}
		delete(want, fi.Name())
		return exec.Command("cp", p, filepath.Join(dst, "mods", fi.Name())).Run()
	}))
	if len(want) > 0 {
		t.Fatalf("%s lacks modules %v", pkg, want)
	}
	check(t, os.Rename(dst, cache))
	return cache
}

// guestModules are what examples/bootable-image.sh loads in the guest's
// initramfs (Debian builds virtio and ext4 as modules).
var guestModules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "virtio_blk", "crc16", "mbcache", "jbd2", "crc32c_generic", "ext4"}

// TestBootableImage builds a bootable disk image in an unprivileged
// sandbox with stock Debian tools (examples/bootable-image.sh --inside, in
// a Debian bookworm root with grub, udev, dosfstools, fdisk, cpio and
// busybox-static, chrooted into from `loopvisor run`): sfdisk GPT with a
// BIOS boot partition, an ESP and an ext4 root, losetup -P, mkfs.vfat,
// mkfs.ext4, mount, grub-install for i386-pc and x86_64-efi, umount,
// losetup -d. The host then boots it in QEMU (TCG) with SeaBIOS and with
// OVMF, and the guest's init, on the ext4 root the sandbox wrote, prints
// the test's marker. Without loopvisor the build fails at losetup.
func TestBootableImage(t *testing.T) {
	needRoot(t)
	needTools(t, "qemu-system-x86_64", "apt-cache", "apt-get", "dpkg-deb", "mmdebstrap")
	ovmf := "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars := "/usr/share/OVMF/OVMF_VARS_4M.fd"
	for _, f := range []string{ovmf, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("OVMF is not installed (run make deps): %v", err)
		}
	}
	hostGuard(t)
	kernel := guestKernel(t)
	root, err := oci.StockRootfsWith("bookworm", oci.BootPackages...)
	check(t, err)
	cleanupDir(t, root)
	state := stateDir(t)
	work := filepath.Join(root, "work")
	check(t, os.MkdirAll(filepath.Join(work, "mods"), 0o755))
	for _, c := range [][2]string{
		{filepath.Join(kernel, "vmlinuz"), filepath.Join(work, "vmlinuz")},
		{"../examples/bootable-image.sh", filepath.Join(work, "bootable-image.sh")},
	} {
		if o, err := exec.Command("cp", c[0], c[1]).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, o)
		}
	}
	for _, m := range guestModules {
		if o, err := exec.Command("cp", filepath.Join(kernel, "mods", m+".ko"), filepath.Join(work, "mods")).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, o)
		}
	}
	if o, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", SandboxUID, SandboxUID), work).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, o)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	marker := "made-in-a-sandbox-" + hex.EncodeToString(b)
	script := `set -e
r=` + root + `
mount --rbind /dev $r/dev; mount --rbind /sys $r/sys; mount --rbind /proc $r/proc
chroot $r sh /work/bootable-image.sh --inside /work/disk.img /work/vmlinuz /work/mods ` + marker
	args := []string{"run", "--state-dir", state, "--uid-map", fmt.Sprintf("%d:65536", SandboxUID), "--", "sh", "-c", script}
	r := longCommand(t, root, 10*time.Minute, loopvisor, args...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "built /work/disk.img") {
		t.Fatalf("building the image in the sandbox failed:\n%s", r)
	}
	img := filepath.Join(work, "disk.img")
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil || st.Uid != SandboxUID {
		t.Fatalf("image: owner %d, %v", st.Uid, err)
	}

	want := "guest init on /dev/vda3 (ext4): " + marker
	common := []string{"-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-serial", "stdio", "-monitor", "none",
		"-drive", "file=" + img + ",format=raw,if=virtio,snapshot=on"}
	t.Run("bios", func(t *testing.T) {
		bootAndWait(t, want, common...)
	})
	t.Run("uefi", func(t *testing.T) {
		vars := filepath.Join(t.TempDir(), "vars.fd")
		if o, err := exec.Command("cp", ovmfVars, vars).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, o)
		}
		bootAndWait(t, want, append(common, "-drive", "if=pflash,format=raw,readonly=on,file="+ovmf,
			"-drive", "if=pflash,format=raw,file="+vars)...)
	})

	b2 := bare(t, root, state, script)
	if b2.Code == 0 || !strings.Contains(b2.Stderr, "losetup") {
		t.Errorf("without loopvisor the build should fail at losetup:\n%s", b2)
	}
}

// bootAndWait runs QEMU with args and fails t unless its serial console
// shows want. It stops QEMU as soon as the console shows want, or shows
// that the boot went wrong (no bootable device, GRUB's rescue prompt or an
// error, a kernel panic, the initramfs giving up); the guest powers off
// after want. TCG on
// a busy machine is slow: the time bound is generous and only stops a
// guest that hangs silently.
func bootAndWait(t *testing.T, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 10 * time.Second
	pr, pw, err := os.Pipe()
	check(t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		t.Fatal(err)
	}
	bad := regexp.MustCompile(`(?m)grub rescue>|^error: |Kernel panic|initramfs: |No bootable device`)
	var console strings.Builder
	ok := false
	buf := make([]byte, 4096)
	for {
		n, rerr := pr.Read(buf)
		console.WriteString(strings.ReplaceAll(string(buf[:n]), "\r", ""))
		if strings.Contains(console.String(), want+"\n") {
			ok = true
			break
		}
		if bad.MatchString(console.String()) || rerr != nil {
			break
		}
	}
	_ = cmd.Process.Kill()
	_ = pr.Close()
	werr := cmd.Wait()
	if !ok {
		tail := console.String()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		t.Fatalf("the guest did not print %q (qemu: %v, ctx: %v); console tail:\n%s", want, werr, ctx.Err(), tail)
	}
}

// longCommand is run with a bound of its own, for builds that take longer
// than run's two minutes.
func longCommand(t *testing.T, dir string, d time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = testEnv()
	cmd.WaitDelay = 10 * time.Second
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out after %v\n%s%s", name, args, d, so.String(), se.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return result{Stdout: so.String(), Stderr: se.String(), Code: cmd.ProcessState.ExitCode()}
}

// TestStockPartitions: in a stock Debian bookworm container under runc and
// crun with only oci-config applied, losetup -P gives the container
// loopNpM nodes, their sysfs directories (start) and lsblk's tree, and the
// container's /proc/partitions lists its disk and partitions by the names
// it knows, not the host's view of them (the loop devices that serve the
// partitions). Without loopvisor losetup fails.
func TestStockPartitions(t *testing.T) {
	needRoot(t)
	runtimes(t, func(t *testing.T, rt *oci.Runtime) {
		hostGuard(t)
		a := startAgent(t, stateDir(t))
		res, _ := stockCase(t, "bookworm", rt, a, `set -e
cd /tmp
rm -f disk.img
truncate -s 64M disk.img
printf 'label: gpt\nsize=1MiB\nsize=20MiB\n,\n' | sfdisk -q disk.img
d=$(losetup -P -f --show disk.img); n=${d#/dev/}
echo "nodes $(ls /dev | grep "^$n" | sed "s/$n/DEV/" | tr '\n' ' ')"
echo "start $(cat /sys/block/$n/${n}p3/start)"
echo "proc $(grep -c ' loop' /proc/partitions) $(grep -c " ${n}p3$" /proc/partitions)"
lsblk -P -o NAME,TYPE,PKNAME $d | sed "s/$n/DEV/g"
losetup -d $d`, regexp.MustCompile(`losetup: `), nil)
		want := `nodes DEV DEVp1 DEVp2 DEVp3 
start 45056
proc 4 1
NAME="DEV" TYPE="loop" PKNAME=""
NAME="DEVp1" TYPE="part" PKNAME="DEV"
NAME="DEVp2" TYPE="part" PKNAME="DEV"
NAME="DEVp3" TYPE="part" PKNAME="DEV"
`
		if res.Stdout != want {
			t.Errorf("want\n%s\ngot\n%s", want, res)
		}
		waitGone(t, a)
	})
}
