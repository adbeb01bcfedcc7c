// Package ociconfig rewrites an OCI runtime-spec config.json so that the
// container's loop and mount calls reach `loopvisor agent`: the notify
// rules of its seccomp profile, listenerPath and listenerMetadata, the
// agent's /dev/loop-control and /dev/fuse nodes, device cgroup rules and,
// for mount, the user namespace's CAP_SYS_ADMIN. It is what `loopvisor
// oci-config` runs.
//
// Design: the merge keeps the profile's default action and every rule it
// has; it refuses, with a message, what it cannot merge safely (a profile
// that denies ioctl, filters mount on its arguments or names a loop
// command, a config without a user namespace). Applying it to its own
// output changes nothing.
//
// When not to use this package: for containers that do not use the agent;
// and it must not decide policy: limits and mount policy are the agent's
// (listenerMetadata can only narrow them).
package ociconfig
