#!/usr/bin/env bash
# Image building in an unprivileged sandbox: a GPT disk image with an ESP
# (vfat) and a root (ext4) partition, made with unmodified sfdisk, losetup -P,
# mkfs and mount, as mkosi or debos would. Then the host checks the result
# without mounting anything.
#
#   sudo examples/image-build.sh [bin/loopvisor]
set -euo pipefail
bin=$(readlink -f "${1:-bin/loopvisor}")
[ "$(id -u)" -eq 0 ] || { echo "image-build: run as root" >&2; exit 1; }
work=$(mktemp -d /tmp/loopvisor-image.XXXXXX); state=$(mktemp -d /tmp/loopvisor-image-state.XXXXXX)
trap 'rm -rf "$work" "$state"' EXIT
chmod 755 "$work"; mkdir -p "$work/tree/etc"; echo "built-in-a-sandbox" > "$work/tree/etc/hostname"
chown -R 100000:100000 "$work"; cd "$work"

"$bin" run --state-dir "$state" --uid-map 100000:65536 -- sh -c '
set -e
truncate -s 256M disk.img
printf "label: gpt\n,64M,U\n,,L\n" | sfdisk -q disk.img
dev=$(losetup -P -f --show disk.img)
echo "attached $dev with partitions: $(ls ${dev}p* | tr "\n" " ")"
mkfs.vfat -n ESP ${dev}p1 >/dev/null
mkfs.ext4 -q -L root ${dev}p2
mkdir -p mnt; mount ${dev}p2 mnt; mkdir -p mnt/boot; mount ${dev}p1 mnt/boot
cp -a tree/. mnt; echo "efi" > mnt/boot/loader.conf
df -h mnt mnt/boot | sed 1d
umount mnt/boot mnt; losetup -d $dev
echo "detached; losetup -a: $(losetup -a | wc -l) devices"'

echo "== host: the partition table"; sfdisk -l disk.img | tail -3
start() { sfdisk -d disk.img | awk -v p="disk.img$1" '$1==p {gsub(/[ ,]/,""); split($0,a,"start="); split(a[2],b,"size="); print b[1]}'; }
size() { sfdisk -d disk.img | awk -v p="disk.img$1" '$1==p {gsub(/[ ,]/,""); split($0,a,"size="); split(a[2],b,"type="); print b[1]}'; }
dd if=disk.img of=p1.img bs=512 skip="$(start 1)" count="$(size 1)" status=none
dd if=disk.img of=p2.img bs=512 skip="$(start 2)" count="$(size 2)" status=none
fsck.vfat -n p1.img | tail -1
e2fsck -fn p2.img >/dev/null 2>&1 && echo "e2fsck -fn root: clean"
echo "root /etc/hostname: $(debugfs -R 'cat /etc/hostname' p2.img 2>/dev/null)"
echo "ESP loader.conf: $(MTOOLS_SKIP_CHECK=1 mtype -i p1.img ::loader.conf)"
