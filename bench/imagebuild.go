package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The image build of issue 5, timed whole: GPT with sfdisk, partitions
// attached, mkfs.vfat + mkfs.ext4, both mounted, a tree copied in, umount,
// detach. In the sandbox the partitions come from `losetup -P` (served by
// loopvisor); on the host, whose kernel has no partition parsers, from
// `losetup --offset --sizelimit` per partition, which is what the host can
// do. The root is mounted (sandbox: fuse2fs, loopvisor's default; host: the
// kernel), so the ratio includes FUSE's cost; the ESP is filled with mcopy
// in both (as mkosi does), since this kernel has no vfat and fusefat aborts
// under cp -a.
const imageBuildSandbox = `set -e
truncate -s 256M disk.img
printf 'label: gpt\n,64M,U\n,,L\n' | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
mkfs.vfat ${dev}p1 >/dev/null; mkfs.ext4 -q ${dev}p2
mkdir -p mnt; mount ${dev}p2 mnt
cp -a tree/. mnt; MTOOLS_SKIP_CHECK=1 mcopy -s -i ${dev}p1 tree/usr ::
umount mnt; losetup -d $dev; rm -f disk.img`

const imageBuildHost = `set -e
exec 2>>host-build.err
cleanup() { umount mnt/boot 2>/dev/null; umount mnt 2>/dev/null; [ -n "${p1:-}" ] && losetup -d $p1 2>/dev/null; [ -n "${p2:-}" ] && losetup -d $p2 2>/dev/null; rm -f disk.img; true; }
trap cleanup EXIT
trap 'exit 1' TERM INT
truncate -s 256M disk.img
printf 'label: gpt\n,64M,U\n,,L\n' | sfdisk -q disk.img
p1=$(losetup -f --show --offset $((2048*512)) --sizelimit $((131072*512)) disk.img)
p2=$(losetup -f --show --offset $((133120*512)) disk.img)
mkfs.vfat $p1 >/dev/null; mkfs.ext4 -q $p2
mkdir -p mnt; mount $p2 mnt
cp -a tree/. mnt; MTOOLS_SKIP_CHECK=1 mcopy -s -i $p1 tree/usr ::
umount mnt; losetup -d $p1 $p2; rm -f disk.img; trap - EXIT`

// targetImageRatio is the target for the sandbox's build against the host's.
const targetImageRatio = 1.25

type imageResults struct{ host, sandbox []time.Duration }

// measureImageBuild runs the build rounds times on the host and in a
// sandbox, alternating.
func measureImageBuild(lv, dir, state string, rounds int) (*imageResults, error) {
	for _, tool := range []string{"sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("image build: %s not installed (make deps)", tool)
		}
	}
	work := filepath.Join(dir, "image")
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "usr", "bin"), 0o755); err != nil {
		return nil, err
	}
	// A small tree: a few binaries of the host.
	for _, b := range []string{"/bin/sh", "/usr/bin/ls", "/usr/bin/cp", "/usr/sbin/sfdisk", "/usr/bin/busybox"} {
		if data, err := os.ReadFile(b); err == nil {
			_ = os.WriteFile(filepath.Join(tree, "usr", "bin", filepath.Base(b)), data, 0o755)
		}
	}
	if out, err := exec.Command("chown", "-R", "100000:100000", work).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown: %w %s", err, out)
	}
	_ = os.Chmod(work, 0o755)
	r := &imageResults{}
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		if _, _, err := command(3*time.Minute, work, []string{"sh", "-c", imageBuildHost}); err != nil {
			msg, _ := os.ReadFile(filepath.Join(work, "host-build.err"))
			return nil, fmt.Errorf("host image build: %w\n%s", err, lastLines(string(msg), 40))
		}
		r.host = append(r.host, time.Since(t0))
		t0 = time.Now()
		argv := []string{lv, "run", "--state-dir", state, "--uid-map", "100000:65536", "--", "sh", "-c", imageBuildSandbox}
		if _, serr, err := command(3*time.Minute, work, argv); err != nil {
			return nil, fmt.Errorf("sandbox image build: %w\n%s", err, serr)
		}
		r.sandbox = append(r.sandbox, time.Since(t0))
	}
	return r, nil
}

func medianDuration(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func reportImageBuild(r *imageResults) {
	h, s := medianDuration(r.host), medianDuration(r.sandbox)
	fmt.Println()
	fmt.Println("partitioned image build (GPT, ESP vfat + root ext4, mkfs, mount root, copy, mcopy to ESP, umount, detach), median of", len(r.host), "rounds")
	fmt.Printf("  host (losetup --offset per partition; kernel ext4 mount)         %8.0f ms\n", float64(h.Microseconds())/1000)
	fmt.Printf("  sandbox (losetup -P served by loopvisor; fuse2fs mount)          %8.0f ms  (includes sandbox start)\n", float64(s.Microseconds())/1000)
	ratio := float64(s) / float64(h)
	fmt.Printf("  ratio sandbox / host: %.2f   target <= %.2f: %s\n", ratio, targetImageRatio, metIf(ratio <= targetImageRatio))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
