#!/usr/bin/env bash
# make-profile.sh [SOCKET [OUT]]
# Writes OUT (default loopvisor-profile.json): podman's own default seccomp
# profile ($PODMAN_SECCOMP, default /usr/share/containers/seccomp.json;
# default deny, an allow-list) with what `loopvisor oci-config` merges in:
# the notify rules for loop ioctls and mount calls and listenerPath SOCKET
# (default /run/loopvisor/agent.sock). Every other rule and the default
# action stay as podman ships them; oci-config refuses, with a message, a
# profile it cannot merge safely. The agent must be running (oci-config
# asks it for its state directory), or set LOOPVISOR_STATE_DIR.
set -euo pipefail
socket=${1:-/run/loopvisor/agent.sock}
out=${2:-loopvisor-profile.json}
base=${PODMAN_SECCOMP:-/usr/share/containers/seccomp.json}
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
[ -r "$base" ] || { echo "make-profile: no podman seccomp profile at $base (set PODMAN_SECCOMP)" >&2; exit 1; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# oci-config rewrites a runtime config; give it one that holds the profile.
jq -n --slurpfile p "$base" '{ociVersion: "1.0.2", process: {capabilities: {}},
  linux: {namespaces: [{type: "user"}], uidMappings: [{containerID: 0, hostID: 100000, size: 65536}],
          seccomp: $p[0]}}' > "$tmp"
state=()
[ -z "${LOOPVISOR_STATE_DIR:-}" ] || state=(--state-dir "$LOOPVISOR_STATE_DIR")
"$loopvisor" oci-config --listener "$socket" "${state[@]}" --no-cap-sys-admin "$tmp"
jq '.linux.seccomp' "$tmp" > "$out"
echo "wrote $out: $base + loopvisor's rules, listenerPath $socket"
