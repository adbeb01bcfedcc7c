#!/usr/bin/env bash
# Installs what loopvisor needs to build, test and demo on a fresh Debian or
# Ubuntu machine. Run as root. Safe to run again.
set -euo pipefail
pkgs=(libseccomp-dev pkg-config gcc make util-linux mount e2fsprogs busybox
      fuse3 fuse2fs squashfuse squashfs-tools runc crun fusefat dosfstools mtools fdisk
      mmdebstrap debian-archive-keyring gpg distro-info-data podman containerd jq
      uidmap passwd qemu-system-x86 ovmf lxc)
# lxc (lxc-start, lxc-attach, lxc-stop) runs tests/lxc_test.go; uidmap is
# what LXC uses for id maps when not run by root.
# mmdebstrap, the keyring, gpg (signed-by) and distro-info-data (which
# suites get updates and security) build the stock Debian images the acceptance
# tests run (tests/oci/stock.go; cached in $LOOPVISOR_CACHE, else
# /var/cache/loopvisor-test). podman, containerd (with ctr) and jq: the engine
# acceptance tests (tests/engines_test.go) and examples/podman, examples/containerd.
# uidmap (newuidmap/newgidmap) and passwd (useradd/userdel) are for the tests of
# unprivileged users (tests/unpriv_test.go: rootless podman, loopvisor run without root).
# qemu-system-x86 and ovmf boot the image tests/bootable_test.go builds (grub
# itself runs inside the test's image).
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root (sudo make deps)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go is not on PATH (want 1.22 or newer)" >&2; exit 1; }
go mod download
# golangci-lint for `make lint` (part of `make test`), from the Go module
# proxy, pinned; installed once into $(go env GOPATH)/bin.
LINT_VERSION=v2.15.0
lint="$(go env GOPATH)/bin/golangci-lint"
if ! { [ -x "$lint" ] && "$lint" version 2>/dev/null | grep -q "version ${LINT_VERSION#v} "; }; then
  echo "install-deps: installing golangci-lint $LINT_VERSION"
  go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$LINT_VERSION"
fi
[ -e /dev/loop-control ] || modprobe loop || { echo "install-deps: no /dev/loop-control: load the loop module" >&2; exit 1; }
