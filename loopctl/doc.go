// Package loopctl knows loop devices: the host's loop driver, and the
// per-container loop-device instances loopvisor carves out of it.
//
// Design (loopfs semantics, done in user space):
//
//   - An Instance owns a set of host loop device indices. Indices are the
//     host's, so sysfs stays consistent. Every device of an instance was
//     created for it with LOOP_CTL_ADD (or, rarely, taken over the instant
//     after the kernel removed it for the instance: see below) and is
//     removed with LOOP_CTL_REMOVE when the instance ends. Devices of other
//     instances and of the host are never handed out.
//   - While an instance device is unbound the supervisor holds it open with
//     O_EXCL. The host's LOOP_CTL_GET_FREE may still name it, but nobody
//     outside the instance can bind it (LOOP_CONFIGURE claims the device
//     exclusively and fails with EBUSY), so a container can never read data
//     the host attached to a device whose node it holds. The claim is dropped
//     for the instant of the container's own LOOP_CONFIGURE/LOOP_SET_FD, and
//     taken again when the device becomes unbound (after autoclear or a
//     deferred LOOP_CLR_FD at the last close): on the kernel's uevent, with a
//     50 ms watcher as the fallback.
//   - Every loop ioctl on an instance device is executed by the supervisor on
//     the caller's own open file description (pidfd_getfd), with copies of
//     the caller's arguments. The kernel therefore decides flags, sizes and
//     errnos exactly as for host root; loopvisor only adds the loopfs rule
//     that the instance's root passes the CAP_SYS_ADMIN checks of
//     LOOP_SET_STATUS*, LOOP_SET_CAPACITY, LOOP_SET_DIRECT_IO and
//     LOOP_SET_BLOCK_SIZE, and an unprivileged caller does not.
//   - The instance's private /dev and sysfs block directories are a
//     view.View (package loopctl/view); the state directory is a
//     registry.Registry (loopctl/registry); GPT/MBR tables are read by
//     loopctl/parttable. loopctl itself holds the driver (host.go), the
//     instance and its partitions (instance.go, partitions.go, uevents.go)
//     and request serving (serve.go, which answers with notify.Reply).
//   - Device references die with the device's ownership. A loop node's
//     dev_t outlives the device: an O_PATH fd (reopened through
//     /proc/self/fd), a bind mount or a hard link of the node would open
//     whatever device gets that index next (another tenant's), or make the
//     kernel create it again (block legacy autoload) outside every journal
//     and limit. So every loop node inode is owned by host root (unmapped in
//     the sandbox: its root can neither chmod nor chown it) with the host
//     node's group and mode bits and an ACL entry giving the sandbox's root
//     the owner's bits; users of the sandbox get what the same users get on
//     the host. Each assignment of a device gets a fresh inode, made in a
//     directory the sandbox cannot reach and kept open (O_PATH) by the view.
//     Before a device may leave the sandbox's view (LOOP_CTL_REMOVE, a
//     partition dropped, the instance's end) every inode made for it is
//     revoked: chown 0:0, mode 000. Only then does the supervisor ask the
//     kernel to remove the device; if the kernel answers EBUSY (the sandbox
//     holds it open, exactly as on the host), the access is given back, so
//     an open device never leaves the instance while the instance lives.
//   - An index stays the instance's until the instance ends. After the
//     kernel removed a device the sandbox gave back, the supervisor creates
//     it again at once (LOOP_CTL_ADD of the same index, under the registry
//     lock so no other instance of the state directory takes the index in
//     between) and keeps it
//     hidden and claimed; a dropped partition device is only detached and
//     hidden. GET_FREE and ADD hand hidden devices out again (with fresh
//     nodes) before creating new ones, and limits count them. This closes
//     what revocation alone cannot: an open(2) of a kept node that passed
//     its permission check just before the revoke and was descheduled
//     until after the removal goes on to the block layer, where an absent
//     index is created again by the kernel's block legacy autoload, and an
//     existing one is opened. With the index kept, such an open reaches
//     the instance's own device; if it lands in the few instructions
//     between REMOVE and ADD (ADD then fails with EEXIST), the instance
//     takes the device that open created (unbound, claimable) instead of
//     leaving it to the host. The kernel's REMOVE is still needed to learn
//     whether the sandbox holds the device open (EBUSY as on the host); no
//     other interface tells.
//     Limits: a supervisor killed with SIGKILL revokes nothing; a reference
//     its sandbox passed to a process outside that runs as the sandbox's
//     host uid survives, and reaches the index's next device once gc has
//     released the dead supervisor's devices. At the instance's end the
//     sandbox is dead, but a process outside holding a passed reference
//     could still race the final removal as above. A loopvisor using
//     another state directory does not take the registry lock, so in that
//     REMOVE-ADD gap it could allocate the index and race the take-over.
//   - A device left at the instance's end because something outside still
//     holds it open stays journaled; if it is unbound it is bound to an
//     empty read-only memfd ("tombstone") so the host's LOOP_CTL_GET_FREE
//     never hands it to anyone while that opener lives. gc only ever
//     releases devices, it never gives them out.
//   - Partitions (partitions.go): a device attached with LO_FLAGS_PARTSCAN
//     gets its GPT/MBR read by loopvisor and one more instance device per
//     partition, backed by the whole device with the partition's offset
//     and size, shown as loopNpM (node, sysfs loopN/loopNpM directory,
//     /proc/partitions line; the serving device is not shown under its own
//     name); BLKRRPART, BLKPG and HDIO_GETGEO (the partition's start) are
//     served. This works on kernels without partition parsers.
//   - No lock shared between containers (the registry's flock) is held
//     across work that can block on a container: publishing nodes into its
//     /dev (the view's publisher goroutine), reading its backing files
//     (partition tables within ScanTimeout, without the instance's lock).
//     ReleaseDevice (used by Close and supervisor.GC) never touches a
//     device that is still mounted or claimed by someone else.
//
// When not to use this package: for loop devices the host itself manages;
// loopctl only ever acts on devices it created.
package loopctl
