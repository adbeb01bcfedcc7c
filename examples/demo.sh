#!/usr/bin/env bash
# The main job of loopvisor, end to end: an unprivileged sandbox (root
# mapped to host uid 100000) makes a disk image, attaches it, shows
# losetup -a, writes a file system onto it, and detaches. Then the same
# command without loopvisor, which fails.
set -euo pipefail
bin=$(readlink -f "${1:-bin/loopvisor}")
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (sudo make demo): loopvisor maps the sandbox to an unprivileged uid itself" >&2; exit 1; }
work=$(mktemp -d /tmp/loopvisor-demo.XXXXXX)
state=$(mktemp -d /tmp/loopvisor-demo-state.XXXXXX)
trap 'rm -rf "$work" "$state"' EXIT
chmod 755 "$work"; chown 100000:100000 "$work"
cd "$work"

echo "== host before: losetup -a"; losetup -a; echo "(end)"
echo
echo "== inside: loopvisor run -- sh (root of a user namespace mapped to host uid 100000)"
"$bin" run --state-dir "$state" --uid-map 100000:65536 -- sh -c '
set -e
echo "id: $(id)"
truncate -s 64M disk.img
dev=$(losetup -f --show disk.img)
echo "attached $dev"
echo "-- losetup -a"; losetup -a
echo "-- lsblk"; lsblk -o NAME,SIZE,RO,TYPE "$dev"
mkfs.ext4 -q -L demo "$dev"
echo "-- blkid"; blkid "$dev"
losetup -d "$dev"
echo "detached; losetup -a now:"; losetup -a; echo "(end)"
echo "-- mount -o loop disk.img mnt (served by fuse2fs in the sandbox)"
mkdir -p mnt
mount -o loop disk.img mnt
grep " $PWD/mnt " /proc/self/mountinfo | sed "s/.* - /type: /"
echo "written inside the sandbox" > mnt/hello.txt
ls -l mnt
umount mnt
echo "unmounted; losetup -a now:"; losetup -a; echo "(end)"
'
echo
echo "== host: the image is an ext4 file system owned by uid $(stat -c %u disk.img)"
e2fsck -fn disk.img >/dev/null 2>&1 && echo "e2fsck -fn: clean"
echo "debugfs cat /hello.txt: $(debugfs -R 'cat /hello.txt' disk.img 2>/dev/null)"
echo "== host after: losetup -a"; losetup -a; echo "(end)"
echo
echo "== the same without loopvisor (run --bare): fails"
if "$bin" run --bare --state-dir "$state" --uid-map 100000:65536 -- sh -c 'losetup -f --show disk.img'; then
  echo "unexpected: it worked without loopvisor" >&2; exit 1
fi
echo "(failed, as expected)"
