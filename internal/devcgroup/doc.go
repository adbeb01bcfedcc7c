// Package devcgroup lets the agent grant a container's device cgroup
// access to exactly the devices of its loop instance, and take it back.
//
// Why: some engines drop the device rules loopvisor needs. podman drops
// --device-cgroup-rule when the container has a user namespace, so runc
// applies its default list (no loop-control, no fuse, no block devices)
// and the container's opens of /dev/loop-control and /dev/loopN fail with
// EPERM even though loopvisor put the nodes there.
//
// Open finds the container's cgroups from its init as the host sees them
// (the agent reads /proc/PID/cgroup from the host's cgroup namespace,
// checks that PID was still the process its pidfd names, opens each
// directory beneath its hierarchy without following symlinks or leaving
// the mount, and checks that the kernel's cgroup.procs there lists PID).
// A hierarchy in which the container shares the agent's own cgroup is
// skipped (a runtime run without cgroups). Grants are counted per device,
// so two names of one device (a partition's loopK and loopNpM) keep it
// allowed until both are gone.
//
// cgroup v1 (the devices controller; hybrid layouts included): Grant writes
// "TYPE MAJOR:MINOR rw" to devices.allow unless devices.list already
// allows that access (then the runtime's rule stands and Revoke leaves it
// alone); Revoke writes devices.deny for what Grant added; Close denies
// everything still granted. An allow does not reach child cgroups that
// already exist (the kernel copies a parent's rules only when a child is
// made), so a container that moved its processes into sub-cgroups of its
// own does not get the grant there.
//
// cgroup v2 (BPF_CGROUP_DEVICE programs; the kernel runs them on hybrid
// hosts too): every effective program must allow, so one more program
// cannot grant anything. At the first Grant the agent replaces the
// runtime's single program (attached with BPF_F_ALLOW_MULTI, as runc does)
// atomically (BPF_F_REPLACE) by its own, which allows what its hash map
// holds and otherwise tail-calls the runtime's program, whose rules thus
// decide everything else. Grant and Revoke are map updates; Close puts the
// runtime's program back. A cgroup with no program of its own needs
// nothing; one with several, or attached without BPF_F_ALLOW_MULTI, is
// left alone (Grant fails with a message). A runtime that later replaces
// or detaches the agent's program (runc update) takes the grants with it
// (fails closed); the next Grant installs the agent's program again with
// every device still granted. docs/cgroup-v2.md has
// the kernel's rules.
//
// When not to use this package: for devices that are not the instance's;
// and never with a path or pid the container chose.
package devcgroup
