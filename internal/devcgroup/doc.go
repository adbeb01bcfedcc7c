// Package devcgroup lets the agent grant a container's device cgroup
// access to exactly the devices of its loop instance, and take it back.
//
// Why: some engines drop the device rules loopvisor needs. podman drops
// --device-cgroup-rule when the container has a user namespace, so runc
// applies its default list (no loop-control, no fuse, no block devices)
// and the container's opens of /dev/loop-control and /dev/loopN fail with
// EPERM even though loopvisor put the nodes there.
//
// cgroup v1 (the devices controller; hybrid layouts included): Open finds
// the devices cgroup of a container's init as the host sees it (the
// agent reads /proc/PID/cgroup from the host's cgroup namespace, checks
// that PID was still the process its pidfd names, opens the directory
// beneath the devices hierarchy without following symlinks or leaving the
// mount, and checks that the kernel's cgroup.procs of that directory lists
// PID). Grant writes "TYPE MAJOR:MINOR rw" to devices.allow unless
// devices.list already allows that access (then the runtime's rule stands
// and Revoke leaves it alone); Revoke writes devices.deny for what Grant
// added; Close revokes everything still granted. Grants are counted per
// device, so two names of one device (a partition's loopK and loopNpM)
// keep it allowed until both are gone.
//
// Limits (v1): an allow on a cgroup does not reach child cgroups that
// already exist (the kernel copies a parent's rules only when a child is
// made), so a container that moved its processes into sub-cgroups of its
// own does not get the grant there. A container whose cgroup already
// allows everything (crun under podman: "a *:* rwm") needs nothing.
//
// cgroup v2 is not implemented (Open returns ErrNoV1): a cgroup's device
// programs are ANDed, so one more program cannot grant anything; the
// runtime's program would have to be replaced (BPF_F_REPLACE) by one that
// allows the instance's devices and tail-calls the runtime's for the rest.
// docs/cgroup-v2.md has the design and the kernel's rules.
//
// When not to use this package: for devices that are not the instance's;
// and never with a path or pid the container chose.
package devcgroup
