#!/usr/bin/env bash
# Writes loopvisor-profile.json: a default-allow seccomp profile with
# loopvisor's notify rules and listenerPath, for podman --security-opt
# seccomp=... (or a Kubernetes Localhost profile).
set -euo pipefail
socket=${1:-/run/loopvisor/agent.sock}
loopvisor=${LOOPVISOR:-$(command -v loopvisor || echo bin/loopvisor)}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<'JSON'
{"ociVersion": "1.0.2", "process": {"capabilities": {}},
 "linux": {"namespaces": [{"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}
JSON
"$loopvisor" oci-config --listener "$socket" --no-cap-sys-admin "$tmp"
jq '.linux.seccomp' "$tmp" > loopvisor-profile.json
echo "wrote loopvisor-profile.json (listenerPath $socket)"
