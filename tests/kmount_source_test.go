package tests

import (
	"strings"
	"testing"
)

// kmountSourceReport mounts partition 3 of the partitioned device in $d on
// mnt and prints how tools name the mount's device, with the device's name
// replaced by DEV: mountinfo's source field, findmnt by target and by
// source, df, grub-probe (as grub-install resolves /boot), and whether the
// node of that name is the device mountinfo gives for the mount.
const kmountSourceReport = `n=${d#/dev/}
mkfs.ext4 -q ${d}p3
mount ${d}p3 mnt
{
mi=$(awk -v m="$PWD/mnt" '$5 == m' /proc/self/mountinfo)
echo "mountinfo source: $(echo "$mi" | sed 's/.* - [^ ]* \([^ ]*\) .*/\1/')"
node=$(printf '%d:%d' 0x$(stat -c %t ${d}p3) 0x$(stat -c %T ${d}p3))
echo "mountinfo device is the node's: $([ "$(echo "$mi" | cut -d' ' -f3)" = "$node" ] && echo yes || echo no)"
echo "findmnt target: $(findmnt -n -o SOURCE,FSTYPE mnt)"
echo "findmnt source: $(findmnt -n -o TARGET ${d}p3 | sed "s|$PWD|DIR|")"
echo "findmnt source (--source): $(findmnt -n -o TARGET --source ${d}p3 | sed "s|$PWD|DIR|")"
echo "df: $(df --output=source mnt | tail -n 1)"
echo "grub-probe: $(grub-probe --target=device mnt 2>&1)"
} | sed "s/$n/DEV/g"
umount mnt
`

// TestKernelMountPartitionSource: a kernel mount (--allow-kernel-mount) of
// a partition names the partition as the host's kernel does, /dev/loopNpM
// with the sandbox's N and M, in mountinfo and so for findmnt, df and
// grub-probe (grub-install maps /boot through it); it named the loop
// device that serves the partition (/dev/loopK, no node of the sandbox's)
// before. The host side is host root's mount of partition 3 of the same
// image (partitions added by partx: this kernel has no partition parsers).
// A whole device is named /dev/loopN, as on the host. Without loopvisor
// the mount fails.
func TestKernelMountPartitionSource(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "partx", "mkfs.ext4", "findmnt", "grub-probe")
	hostGuard(t)
	state, dir := stateDir(t), workDir(t)
	partImages(t, dir)
	fsImage(t, dir, "whole.img", "mkfs.ext4", 16<<20)
	sandboxMkdir(t, dir, "mnt")

	host := hostScript(t, dir, `set -e
d=$(losetup -P -f --show host.img)
partx -a $d
`+kmountSourceReport+`
losetup -d $d`)
	if !strings.Contains(host, "mountinfo source: /dev/DEVp3\n") {
		t.Fatalf("the host's mount of a partition:\n%s", host)
	}

	out := sandboxOK(t, dir, state, []string{"--allow-kernel-mount", "ext4"}, `set -e
d=$(losetup -P -f --show disk.img)
partx -a $d 2>/dev/null || true
`+kmountSourceReport+`
losetup -d $d
echo "== whole device"
w=$(losetup -f --show whole.img)
mount $w mnt
echo "whole: $(findmnt -n -o SOURCE mnt | sed "s|$w|WHOLE|") by source: $(findmnt -n -o TARGET $w | sed "s|$PWD|DIR|")"
umount mnt
losetup -d $w
echo "left $(losetup -a | wc -l)"`)
	sb, rest, _ := strings.Cut(out, "== whole device\n")
	diffLines(t, host, sb)
	for _, want := range []string{"whole: WHOLE by source: DIR/mnt\n", "left 0\n"} {
		if !strings.Contains(rest, want) {
			t.Errorf("sandbox: want %q in\n%s", want, rest)
		}
	}
	// The sandbox's partition has a node of its own name; the serving
	// device's name must be nowhere.
	if !strings.Contains(sb, "mountinfo source: /dev/DEVp3\n") {
		t.Errorf("the kernel mount's source is not the partition:\n%s", sb)
	}
	bareFails(t, dir, state, `d=$(losetup -P -f --show disk.img) && mount ${d}p3 mnt`)
}
