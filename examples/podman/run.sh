#!/usr/bin/env bash
# run.sh [PODMAN RUN FLAGS...] IMAGE [CMD [ARGS...]]
# `podman run` (rootful) with what loopvisor needs, for a container whose
# root is an unprivileged host uid:
#   --uidmap/--gidmap  0 -> $LOOPVISOR_IDMAP (default 100000:65536)
#   --security-opt seccomp=$LOOPVISOR_PROFILE (default loopvisor-profile.json,
#                      made by make-profile.sh: podman's profile + loopvisor)
#   --cap-add SYS_ADMIN  the user namespace's, for mount
#   the agent's loop-control and fuse nodes on /dev (the agent at
#   $LOOPVISOR_SOCKET, default /run/loopvisor/agent.sock, says where they are)
# Give each container its own --name. Device cgroup rules are not passed:
# podman drops --device-cgroup-rule under a user namespace; the agent grants
# the container's device cgroup its instance's devices itself.
#
# Hybrid cgroups (v1 controllers plus a cgroup2 mount with controllers at
# /sys/fs/cgroup/unified): crun 1.8 refuses to run there, so when the
# runtime is crun the command runs in a private mount namespace with that
# hierarchy unmounted. podman commands run later from the host's mount
# namespace do not see mounts made in there, so use it with a foreground
# --rm container (runc needs no workaround: --runtime runc).
set -euo pipefail
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
socket=${LOOPVISOR_SOCKET:-/run/loopvisor/agent.sock}
profile=${LOOPVISOR_PROFILE:-loopvisor-profile.json}
idmap=${LOOPVISOR_IDMAP:-100000:65536}
# $PODMAN: the podman command with its global flags (e.g. "podman --root DIR").
read -ra podman <<< "${PODMAN:-podman}"
nodes=$("$loopvisor" status --socket "$socket" --node-dir)
[ -r "$profile" ] || { echo "run.sh: no profile $profile; run make-profile.sh first" >&2; exit 1; }
runtime=$("${podman[@]}" info --format '{{.Host.OCIRuntime.Name}}')
for a in "$@"; do
  case $a in --runtime=*) runtime=${a#--runtime=} ;; esac
done
prev=
for a in "$@"; do
  [ "$prev" = --runtime ] && runtime=$a
  prev=$a
done
cmd=("${podman[@]}" run --uidmap "0:$idmap" --gidmap "0:$idmap"
     --security-opt "seccomp=$(realpath "$profile")" --cap-add SYS_ADMIN
     --mount "type=bind,src=$nodes/loop-control,dst=/dev/loop-control"
     --mount "type=bind,src=$nodes/fuse,dst=/dev/fuse")
# crun before August 2025 (bookworm's 1.8.1; containers/crun#1845) chowns
# the container's standard streams to its root, and without --interactive
# podman gives the container the host's /dev/null as stdin: the host's
# /dev/null would then belong to the container's root, which could chmod
# it for everyone. --interactive makes stdin a pipe.
if [ "$(basename "$runtime")" = crun ]; then
  cmd+=(--interactive)
fi
cmd+=("$@")
hybrid=no
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] &&
   [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] &&
   [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  hybrid=yes
fi
if [ "$hybrid" = yes ] && [ "$(basename "$runtime")" = crun ]; then
  exec unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh "${cmd[@]}"
fi
exec "${cmd[@]}"
