#!/usr/bin/env bash
# Points an Incus container (Incus 6.0, unprivileged, none of
# security.syscalls.intercept.* set) at `loopvisor agent --lxc-socket`
# through raw.seccomp and raw.lxc. Run on the Incus host, as root, with the
# container stopped; tried with Incus 6.0.4 from bookworm-backports (see
# docs/incus.md for the run and what each line is for).
#
#   sudo examples/incus/configure.sh NAME [bin/loopvisor] [STATE_DIR] [COOKIE]
#
# STATE_DIR is the agent's --state-dir (default /run/loopvisor; its LXC
# socket is STATE_DIR/lxc.sock unless LXC_SOCKET says otherwise), COOKIE its
# policy for this container (default max-loop=4). Then:
#   incus start NAME && incus exec NAME -- losetup -f
set -euo pipefail
name=$1
bin=$(readlink -f "${2:-bin/loopvisor}"); state=${3:-/run/loopvisor}
cookie=${4:-max-loop=4}; sock=${LXC_SOCKET:-$state/lxc.sock}
[ "$(id -u)" -eq 0 ] || { echo "configure: run as root" >&2; exit 1; }
# One container has one proxy: Incus's interception and loopvisor's exclude
# each other (and raw.seccomp would drop Incus's notify rules anyway).
if incus config show "$name" | grep -Eq '^ *security\.syscalls\.intercept\.[a-z.]+: "?true'; then
  echo "configure: $name has security.syscalls.intercept.* on; unset it first" >&2; exit 1
fi
if [ "$(incus config get "$name" security.privileged)" = true ]; then
  echo "configure: $name is privileged; loopvisor serves unprivileged containers only" >&2; exit 1
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# raw.seccomp replaces Incus's whole profile: start from Incus 6.0's default
# (seccompHeader + defaultSeccompPolicy; what it writes to
# /var/lib/incus/security/seccomp/NAME for a container without raw.seccomp).
cat > "$tmp/base.seccomp" <<'PROFILE'
2
denylist
[all]
reject_force_umount  # comment this to allow umount -f;  not recommended
[all]
kexec_load errno 38
open_by_handle_at errno 38
init_module errno 38
finit_module errno 38
delete_module errno 38
PROFILE
: > "$tmp/scratch.conf"
"$bin" lxc-config --proxy "$sock" --state-dir "$state" --cookie "$cookie" \
  --base-profile "$tmp/base.seccomp" --profile "$tmp/profile.seccomp" "$tmp/scratch.conf"
incus config set "$name" raw.seccomp - < "$tmp/profile.seccomp"
# raw.lxc: what was there, minus an earlier run's block, plus the proxy,
# cookie, start-host hook and device lines (lxc.seccomp.profile comes from
# raw.seccomp: Incus sets it to its copy of raw.seccomp).
begin='# loopvisor incus: begin'; end='# loopvisor incus: end'
{ incus config get "$name" raw.lxc | sed "/^$begin\$/,/^$end\$/d" | sed '/^$/d'
  echo "$begin"
  grep -E '^lxc\.(seccomp\.notify|hook|cgroup2?\.devices)' "$tmp/scratch.conf"
  echo "$end"
} > "$tmp/raw.lxc"
incus config set "$name" raw.lxc - < "$tmp/raw.lxc"
echo "$name: raw.lxc is now"; incus config get "$name" raw.lxc
