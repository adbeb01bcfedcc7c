#!/usr/bin/env bash
# Builds a runc/crun bundle whose root is mapped to host uid 100000, from a
# stock `runc spec`, with a small rootfs made of this host's own binaries
# (losetup, mount, mkfs.ext4, ...), then applies `loopvisor
# oci-config` and nothing else.
#
#   examples/runc/make-bundle.sh BUNDLE_DIR [SOCKET] [STATE_DIR]
#
# Without STATE_DIR, oci-config asks the running agent at SOCKET where its
# nodes are (and refuses if no agent answers).
set -euo pipefail
bundle=${1:?usage: make-bundle.sh BUNDLE_DIR [SOCKET] [STATE_DIR]}
socket=${2:-/run/loopvisor/agent.sock}
state=()
[ -z "${3:-}" ] || state=(--state-dir "$3")
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
command -v jq >/dev/null || { echo "make-bundle: needs jq (apt-get install jq)" >&2; exit 1; }

mkdir -p "$bundle/rootfs"
chmod 755 "$bundle"
cd "$bundle"
# Every parent of the bundle must be searchable by uid 100000 (runc).
rootfs=$PWD/rootfs
copy() { # copy a program and its libraries into the rootfs, at the same paths
  local p; p=$(command -v "$1")
  install -D "$p" "$rootfs$p"
  ldd "$p" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do install -D "$lib" "$rootfs$lib"; done
}
for prog in sh busybox losetup mount umount mkfs.ext4 e2fsck truncate ls cat sleep mkdir; do copy "$prog"; done
mkdir -p rootfs/{dev,proc,sys,tmp,mnt,etc}
chown 100000:100000 rootfs/tmp rootfs/mnt

rm -f config.json
runc spec
# The user namespace: container root is host uid 100000.
jq '.process.terminal = false
  | .root.readonly = false
  | .process.args = ["sh", "-c", "cd /tmp && truncate -s 64M disk.img && mkfs.ext4 -q disk.img && losetup -f --show disk.img && losetup -a && losetup -D && mount -o loop disk.img /mnt && echo hello > /mnt/hello && ls -l /mnt && umount /mnt && echo done"]
  | .linux.namespaces += [{"type": "user"}]
  | .linux.uidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]
  | .linux.gidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]' config.json > config.json.new
mv config.json.new config.json
"$loopvisor" oci-config --listener "$socket" "${state[@]}" config.json
echo "bundle ready in $PWD; run it with: runc run --bundle $PWD lv-demo-runc (crun: lv-demo-crun)"
