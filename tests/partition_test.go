package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// extract copies partition n of img (as sfdisk -d reports it) to a file.
func extract(t *testing.T, img string, n int) string {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -d: %v", err)
	}
	var start, size int64
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, img+strconv.Itoa(n)+" ") {
			continue
		}
		for _, f := range strings.Split(l, ",") {
			k, v, _ := strings.Cut(f, "=")
			x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch {
			case strings.HasSuffix(strings.TrimSpace(k), "start"):
				start = x
			case strings.TrimSpace(k) == "size":
				size = x
			}
		}
	}
	if size == 0 {
		t.Fatalf("no partition %d in\n%s", n, out)
	}
	dst := filepath.Join(filepath.Dir(img), "part"+strconv.Itoa(n)+".img")
	if o, err := exec.Command("dd", "if="+img, "of="+dst, "bs=512", "skip="+strconv.FormatInt(start, 10),
		"count="+strconv.FormatInt(size, 10), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, o)
	}
	return dst
}

// TestPartitionedImageBuild builds a GPT disk image (ESP vfat + root ext4)
// the way image builders do, in an unprivileged sandbox on a kernel without
// partition parsers; the host then finds a valid table, clean file systems
// and the copied tree.
func TestPartitionedImageBuild(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "mkfs.vfat", "fsck.vfat", "fusefat", "mtype")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	check(t, os.MkdirAll(filepath.Join(dir, "tree", "etc"), 0o755))
	check(t, os.MkdirAll(filepath.Join(dir, "tree", "usr", "bin"), 0o755))
	check(t, os.WriteFile(filepath.Join(dir, "tree", "etc", "hostname"), []byte("built-in-a-sandbox\n"), 0o644))
	for _, b := range []string{"/bin/sh", "/usr/bin/ls", "/usr/sbin/sfdisk"} {
		data, _ := os.ReadFile(b)
		check(t, os.WriteFile(filepath.Join(dir, "tree", "usr", "bin", filepath.Base(b)), data, 0o755))
	}
	check(t, exec.Command("chown", "-R", "100000:100000", filepath.Join(dir, "tree")).Run())
	script := `set -e
truncate -s 128M disk.img
printf 'label: gpt\n,32M,U\n,,L\n' | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
ls ${dev}p1 ${dev}p2
mkfs.vfat ${dev}p1 >/dev/null; mkfs.ext4 -q ${dev}p2
mkdir -p mnt; mount ${dev}p2 mnt; mkdir -p mnt/boot; mount ${dev}p1 mnt/boot
cp -a tree/. mnt; echo efi-content > mnt/boot/efi.txt
umount mnt/boot; umount mnt; losetup -d $dev
echo "left $(losetup -a | wc -l) $(ls /dev | grep -c 'loop[0-9]*p[0-9]')"`
	out := sandboxOK(t, dir, state, nil, script)
	if !strings.Contains(out, "left 0 0") {
		t.Errorf("devices or partition nodes left:\n%s", out)
	}
	img := filepath.Join(dir, "disk.img")
	d, _ := exec.Command("sfdisk", "-d", img).Output()
	if !strings.Contains(string(d), "label: gpt") || strings.Count(string(d), img+"1 :")+strings.Count(string(d), img+"2 :") != 2 {
		t.Fatalf("host partition table:\n%s", d)
	}
	esp, root := extract(t, img, 1), extract(t, img, 2)
	if o, err := exec.Command("fsck.vfat", "-n", esp).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n: %v\n%s", err, o)
	}
	hostFsck(t, root)
	// The copied tree, byte for byte, read back by debugfs without mounting.
	back := filepath.Join(dir, "back")
	check(t, os.Mkdir(back, 0o755))
	for _, d := range []string{"/etc", "/usr"} {
		if o, err := exec.Command("debugfs", "-R", "rdump "+d+" "+back, root).CombinedOutput(); err != nil {
			t.Fatalf("debugfs rdump %s: %v %s", d, err, o)
		}
	}
	if o, err := exec.Command("diff", "-r", filepath.Join(dir, "tree"), back).CombinedOutput(); err != nil {
		t.Errorf("the tree on the root partition differs from the source:\n%s", o)
	}
	cmd := exec.Command("mtype", "-i", esp, "::efi.txt")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if o, err := cmd.Output(); err != nil || string(o) != "efi-content\n" {
		t.Errorf("ESP efi.txt: %q %v", o, err)
	}
	image(t, dir, "disk.img", 0)
	bareFails(t, dir, state, `truncate -s 64M disk.img && printf 'label: gpt\n,,L\n' | sfdisk -q disk.img && losetup -P -f --show disk.img`)
}

// TestRepartitionAttached: partitions added to and removed from an attached
// device appear and vanish in /dev (sfdisk's BLKRRPART, partx's BLKPG).
func TestRepartitionAttached(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "partx")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	out := sandboxOK(t, dir, state, nil, `set -e
truncate -s 64M disk.img
printf 'label: dos\n,16M,83\n' | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
echo "one: $(ls ${dev}p* | tr '\n' ' ')"
printf 'label: dos\n,16M,83\n,16M,83\n,,83\n' | sfdisk -q --no-reread $dev
blockdev --rereadpt $dev
echo "three: $(ls ${dev}p* | tr '\n' ' ')"
echo "size3: $(blockdev --getsize64 ${dev}p3)"
printf 'label: dos\n,16M,83\n' | sfdisk -q --no-reread $dev
partx -d --nr 2:3 $dev
echo "partx-d: $(ls ${dev}p* | tr '\n' ' ')"
partx -a --nr 2 $dev 2>/dev/null || true
losetup -d $dev
echo "after: $(ls /dev | grep -c 'loop[0-9]*p[0-9]')"`)
	for _, w := range []string{"one: /dev/loop", "p1 \n", "three: ", "p3 \n", "size3: 32505856", "after: 0"} {
		if !strings.Contains(out, w) {
			t.Errorf("want %q in\n%s", w, out)
		}
	}
	if l := lineWith(out, "partx-d:") + " "; strings.Contains(l, "p2 ") || strings.Contains(l, "p3 ") {
		t.Errorf("partx -d did not remove p2/p3:\n%s", out)
	}
}

// TestPartitionsKilled: partitions go with their device when the
// supervisor is killed (gc), and are never visible to another sandbox.
func TestPartitionsKilled(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	img := image(t, dir, "disk.img", 64<<20)
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader("label: gpt\n,16M,L\n,,L\n")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, o)
	}
	check(t, removeIfExists(filepath.Join(dir, "dev")))
	held := sandboxCmd(dir, state, "losetup -P -f --show disk.img > dev.tmp && ls /dev/*p[0-9] >> dev.tmp && mv dev.tmp dev; sleep 1000")
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	got := waitFile(t, filepath.Join(dir, "dev"), time.Minute)
	if strings.Count(got, "p") < 2 {
		t.Fatalf("partitions not attached: %q", got)
	}
	// Another sandbox sees none of them.
	other := sandboxOK(t, dir, stateDir(t), nil, `ls /dev | grep -c '^loop[0-9]' || true; losetup -a | wc -l`)
	if other != "0\n0\n" {
		t.Errorf("another sandbox sees devices:\n%s", other)
	}
	check(t, held.Process.Kill())
	_ = held.Wait() // "signal: killed", as intended
	r := run(t, dir, loopvisor, "gc", "--state-dir", state)
	if r.Code != 0 || !strings.Contains(r.Stdout, "released 3") {
		t.Fatalf("gc should release the device and its two partitions:\n%s", r)
	}
}
