#!/bin/sh
# A bootable disk image (BIOS and UEFI) built in an unprivileged sandbox
# with stock Debian tools only: sfdisk (GPT: BIOS boot partition, ESP,
# ext4 root), losetup -P, mkfs.vfat, mkfs.ext4, mount, grub-install for
# i386-pc and x86_64-efi, umount, losetup -d. The sandbox's root is host
# uid 100000; its tools come from a Debian bookworm root made by
# mmdebstrap (grub-install needs udevadm, from the udev package, to find a
# partition's start sector in sysfs). The guest is Debian's kernel with a
# busybox init on the ext4 root; the host then boots the image in QEMU
# (TCG) with SeaBIOS and with OVMF and waits for the guest's init to say
# hello on the serial console.
#
#   sudo examples/bootable-image.sh [bin/loopvisor]
#
# Inside the sandbox the same script runs with --inside (that part is what
# tests/bootable_test.go runs too):
#
#   bootable-image.sh --inside IMAGE VMLINUZ MODULES_DIR MARKER
set -eu

# inside builds IMAGE in the sandbox. MODULES_DIR holds the guest kernel's
# modules for virtio disks and ext4 (flat, NAME.ko).
inside() {
	out=$1 kernel=$2 moddir=$3 marker=$4
	rm -f "$out"
	truncate -s 160M "$out"
	sfdisk -q "$out" <<EOF
label: gpt
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
size=40MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
EOF
	dev=$(losetup -P -f --show "$out")
	echo "attached $dev: $(ls "$dev"p* | tr '\n' ' ')"
	mkfs.vfat -n ESP "${dev}p2" >/dev/null
	mkfs.ext4 -q -L root "${dev}p3"
	mnt=$(mktemp -d)
	mount "${dev}p3" "$mnt"
	mkdir -p "$mnt/boot/efi"
	mount "${dev}p2" "$mnt/boot/efi"

	# The guest's root: busybox, an init that reports where it runs.
	mkdir -p "$mnt/bin" "$mnt/sbin" "$mnt/etc" "$mnt/proc" "$mnt/sys" "$mnt/dev"
	cp /bin/busybox "$mnt/bin/busybox"
	printf '%s\n' "$marker" >"$mnt/etc/marker"
	cat >"$mnt/sbin/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
set -- $(/bin/busybox awk '$2 == "/" { d = $1; t = $3 } END { print d, t }' /proc/mounts)
echo "guest init on $1 ($2): $(/bin/busybox cat /etc/marker)"
/bin/busybox poweroff -f
EOF
	chmod 755 "$mnt/sbin/init"

	# An initramfs that loads the virtio and ext4 modules (Debian builds
	# them as modules), mounts the root by label and switches to it.
	ir=$(mktemp -d)
	mkdir -p "$ir/bin" "$ir/lib/modules" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/root"
	cp /bin/busybox "$ir/bin/busybox"
	for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
		crc16 mbcache jbd2 crc32c_generic ext4; do
		cp "$moddir/$m.ko" "$ir/lib/modules/"
		echo "$m" >>"$ir/lib/modules/order"
	done
	cat >"$ir/init" <<'EOF'
#!/bin/busybox sh
b=/bin/busybox
$b mount -t proc proc /proc; $b mount -t sysfs sys /sys; $b mount -t devtmpfs dev /dev
for m in $($b cat /lib/modules/order); do $b insmod /lib/modules/$m.ko; done
i=0
until root=$($b findfs LABEL=root 2>/dev/null); do
	i=$((i + 1)); [ $i -lt 300 ] || { echo "initramfs: no root"; $b poweroff -f; }
	$b sleep 0.1
done
$b mount -t ext4 -o ro "$root" /root || { echo "initramfs: cannot mount $root"; $b poweroff -f; }
$b umount /proc /sys; $b mount --move /dev /root/dev
exec $b switch_root /root /sbin/init
EOF
	chmod 755 "$ir/init"
	(cd "$ir" && find . | cpio -o -H newc --quiet) | gzip -1 >"$mnt/boot/initrd.img"
	rm -rf "$ir"
	cp "$kernel" "$mnt/boot/vmlinuz"

	# udevadm refuses loopvisor's sysfs entries for partitions (they are not
	# on sysfs) and says "Unknown device" for each; grub-install then asks
	# the partition's start with HDIO_GETGEO, which loopvisor answers.
	grub-install --target=i386-pc --boot-directory="$mnt/boot" "$dev"
	grub-install --target=x86_64-efi --efi-directory="$mnt/boot/efi" --boot-directory="$mnt/boot" \
		--removable --no-nvram "$dev"
	cat >"$mnt/boot/grub/grub.cfg" <<'EOF'
set timeout=0
linux /boot/vmlinuz console=ttyS0,115200 panic=-1 loglevel=4
initrd /boot/initrd.img
boot
EOF
	ls "$mnt/boot/efi/EFI/BOOT"
	umount "$mnt/boot/efi" "$mnt"
	rmdir "$mnt"
	losetup -d "$dev"
	echo "built $out"
}

if [ "${1:-}" = --inside ]; then
	shift
	inside "$@"
	exit 0
fi

# On the host, as root.
self=$(readlink -f "$0")
bin=$(readlink -f "${1:-bin/loopvisor}")
[ "$(id -u)" -eq 0 ] || { echo "bootable-image: run as root" >&2; exit 1; }
for t in mmdebstrap qemu-system-x86_64 apt-get dpkg-deb; do
	command -v $t >/dev/null || { echo "bootable-image: $t is missing" >&2; exit 1; }
done
[ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] || { echo "bootable-image: install ovmf" >&2; exit 1; }
work=$(mktemp -d /tmp/loopvisor-boot.XXXXXX)
state=$(mktemp -d /tmp/loopvisor-boot-state.XXXXXX)
trap 'rm -rf "$work" "$state"' EXIT
chmod 755 "$work"
cd "$work"

echo "== the sandbox's root: Debian bookworm with grub, udev, dosfstools, fdisk, cpio, busybox"
mmdebstrap --quiet --variant=minbase \
	--include=util-linux,mount,e2fsprogs,dosfstools,fdisk,grub-pc-bin,grub-efi-amd64-bin,grub2-common,udev,cpio,busybox-static \
	bookworm root
# A flat chown keeps this short; a real engine shifts every owner instead.
chown -R 100000:100000 root

echo "== the guest kernel and its disk and ext4 modules, from Debian's package"
mkdir -p root/work/mods k
(cd k && apt-get download -q "$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')" >/dev/null)
dpkg-deb -x k/*.deb k/x
cp k/x/boot/vmlinuz-* root/work/vmlinuz
find k/x/lib/modules -name '*.ko' | grep -E '/(virtio_ring|virtio|virtio_pci_legacy_dev|virtio_pci_modern_dev|virtio_pci|virtio_blk|crc16|mbcache|jbd2|crc32c_generic|ext4)\.ko$' |
	xargs -I{} cp {} root/work/mods/
cp "$self" root/work/bootable-image.sh
chown -R 100000:100000 root/work

echo "== building the image in the sandbox (root = host uid 100000)"
"$bin" run --state-dir "$state" --uid-map 100000:65536 -- sh -c '
set -e
mount --rbind /dev root/dev; mount --rbind /sys root/sys; mount --rbind /proc root/proc
chroot root sh /work/bootable-image.sh --inside /work/disk.img /work/vmlinuz /work/mods hello-from-a-sandbox'

echo "== booting it (TCG: slow, but GRUB and OVMF do not run under kvm_pvm)"
boot() {
	timeout 900 qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -serial stdio -monitor none \
		-drive file=root/work/disk.img,format=raw,if=virtio,snapshot=on "$@" </dev/null |
		tr -d '\r' | grep -m1 'guest init on' || { echo "no greeting from the guest" >&2; return 1; }
}
echo "-- SeaBIOS:"; boot
cp /usr/share/OVMF/OVMF_VARS_4M.fd vars.fd
echo "-- OVMF:"; boot -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
	-drive if=pflash,format=raw,file=vars.fd
