#!/usr/bin/env bash
# make-profile.sh IMAGE [SOCKET [OUT]]
# Writes OUT (default loopvisor-profile.json): containerd's own default
# seccomp profile (what `ctr run --seccomp --cap-add CAP_SYS_ADMIN` gives a
# container of IMAGE; default deny, an allow-list) with what `loopvisor
# oci-config` merges in: the notify rules for loop ioctls and mount calls
# and listenerPath SOCKET (default /run/loopvisor/agent.sock). The agent must
# be running (oci-config asks it for its state directory), or set
# LOOPVISOR_STATE_DIR. ctr is run as is: CONTAINERD_ADDRESS and
# CONTAINERD_NAMESPACE choose the daemon and namespace.
set -euo pipefail
image=${1:?usage: make-profile.sh IMAGE [SOCKET [OUT]]}
socket=${2:-/run/loopvisor/agent.sock}
out=${3:-loopvisor-profile.json}
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
name=loopvisor-profile-$$
tmp=$(mktemp)
trap 'rm -f "$tmp"; ctr containers rm "$name" >/dev/null 2>&1 || true' EXIT
# containerd builds its default profile in code (for the container's
# capabilities); a container that is created, never started, shows it.
ctr containers create --seccomp --cap-add CAP_SYS_ADMIN "$image" "$name" >/dev/null
ctr containers info "$name" | jq '{ociVersion: "1.0.2", process: {capabilities: {}},
  linux: {namespaces: [{type: "user"}], uidMappings: [{containerID: 0, hostID: 100000, size: 65536}],
          seccomp: .Spec.linux.seccomp}}' > "$tmp"
[ "$(jq -r '.linux.seccomp.defaultAction // empty' "$tmp")" != "" ] ||
  { echo "make-profile: containerd gave $image no seccomp profile" >&2; exit 1; }
state=()
[ -z "${LOOPVISOR_STATE_DIR:-}" ] || state=(--state-dir "$LOOPVISOR_STATE_DIR")
"$loopvisor" oci-config --listener "$socket" "${state[@]}" --no-cap-sys-admin "$tmp"
jq '.linux.seccomp' "$tmp" > "$out"
echo "wrote $out: containerd's default profile + loopvisor's rules, listenerPath $socket"
