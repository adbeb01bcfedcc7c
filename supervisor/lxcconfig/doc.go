// Package lxcconfig merges what loopvisor needs into an LXC container's
// config (`loopvisor lxc-config`): a seccomp profile whose notify rules
// trap the loop ioctls and mount calls, the proxy socket of
// `loopvisor agent --lxc-socket` (lxc.seccomp.notify.proxy), the policy
// cookie, bind mounts of the agent's /dev/loop-control and /dev/fuse
// nodes, and device cgroup rules for them and for loop block devices.
//
// Design: the config gets one block between marker comments, rewritten
// whole by every run, so a second run with the same options changes
// nothing. The profile is a separate file (LXC takes one
// lxc.seccomp.profile): the base profile the container would otherwise
// load, with loopvisor's rules appended in a section of their own. Only
// denylist profiles (default allow) are merged; an allowlist profile, or
// one that already has a rule for a trapped call, is refused rather than
// merged into something whose meaning changed. The rules compare ioctl's
// command on its low 32 bits (SCMP_CMP_MASKED_EQ, mask 0xffffffff), as
// notify.Program does, and trap mount only when it is not a remount, bind
// or move, as `loopvisor run` does.
//
// When not to use this package: for OCI runtimes (ociconfig), or for an
// Incus instance (Incus builds the seccomp profile itself; see
// docs/incus.md).
package lxcconfig
