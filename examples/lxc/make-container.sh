#!/usr/bin/env bash
# An unprivileged LXC container (root mapped to 100000:65536, no network)
# in a private lxcpath, with only `loopvisor lxc-config` applied. The root
# file system is a Debian minbase made by mmdebstrap, owners shifted by
# 100000 (lxc-usernsexec does the shift).
#
#   sudo examples/lxc/make-container.sh LXCPATH NAME [bin/loopvisor] [STATE_DIR]
#
# Then, with the agent running (see README.md):
#   sudo lxc-start -P LXCPATH -n NAME && sudo lxc-attach -P LXCPATH -n NAME -- losetup -f
set -euo pipefail
lxcpath=$(readlink -f "$1"); name=$2
bin=$(readlink -f "${3:-bin/loopvisor}"); state=${4:-/run/loopvisor}
[ "$(id -u)" -eq 0 ] || { echo "make-container: run as root" >&2; exit 1; }
grep -qx 'root:100000:65536' /etc/subuid || echo 'root:100000:65536' >> /etc/subuid
grep -qx 'root:100000:65536' /etc/subgid || echo 'root:100000:65536' >> /etc/subgid
dir="$lxcpath/$name"
mkdir -p "$dir/rootfs"; chmod 755 "$lxcpath" "$dir"; chown 100000:100000 "$dir/rootfs"
# mmdebstrap inside the container's user namespace makes the owners 100000+N.
lxc-usernsexec -m b:0:100000:65536 -- env HOME=/ mmdebstrap --variant=minbase \
  --include=util-linux,mount,e2fsprogs,fdisk,dosfstools bookworm "$dir/rootfs"
cat > "$dir/config" <<CONF
lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
lxc.uts.name = $name
lxc.rootfs.path = dir:$dir/rootfs
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.net.0.type = empty
lxc.init.cmd = /bin/sleep infinity
CONF
"$bin" lxc-config --proxy "$state/lxc.sock" --state-dir "$state" --cookie max-loop=8 "$dir/config"
echo "container $name in $lxcpath; config:"; sed -n '/loopvisor lxc-config: begin/,$p' "$dir/config"
