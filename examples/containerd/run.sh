#!/usr/bin/env bash
# run.sh [CTR RUN FLAGS...] IMAGE ID [CMD [ARGS...]]
# `ctr run` with what loopvisor needs, for a container whose root is an
# unprivileged host uid:
#   --uidmap/--gidmap  0 -> $LOOPVISOR_IDMAP (default 100000:65536; ctr
#                      makes a snapshot whose owners are shifted)
#   --seccomp --seccomp-profile $LOOPVISOR_PROFILE (default
#                      loopvisor-profile.json, made by make-profile.sh)
#   --cap-add CAP_SYS_ADMIN  the user namespace's, for mount
#   the agent's loop-control and fuse nodes on /dev (the agent at
#   $LOOPVISOR_SOCKET, default /run/loopvisor/agent.sock, says where they are)
# The default spec's device cgroup has no loop devices; the agent grants the
# container's device cgroup its instance's devices itself.
set -euo pipefail
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
socket=${LOOPVISOR_SOCKET:-/run/loopvisor/agent.sock}
profile=${LOOPVISOR_PROFILE:-loopvisor-profile.json}
idmap=${LOOPVISOR_IDMAP:-100000:65536}
nodes=$("$loopvisor" status --socket "$socket" --node-dir)
[ -r "$profile" ] || { echo "run.sh: no profile $profile; run make-profile.sh first" >&2; exit 1; }
exec ctr run --uidmap "0:$idmap" --gidmap "0:$idmap" \
  --seccomp --seccomp-profile "$(realpath "$profile")" --cap-add CAP_SYS_ADMIN \
  --mount "type=bind,src=$nodes/loop-control,dst=/dev/loop-control,options=rbind:rw" \
  --mount "type=bind,src=$nodes/fuse,dst=/dev/fuse,options=rbind:rw" \
  "$@"
