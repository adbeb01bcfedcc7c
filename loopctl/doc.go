// Package loopctl knows loop devices: the host's loop driver, and the
// per-container loop-device instances loopvisor carves out of it.
//
// Design (loopfs semantics, done in user space):
//
//   - An Instance owns a set of host loop device indices. Indices are the
//     host's, so sysfs stays consistent. Every device of an instance was
//     created for it with LOOP_CTL_ADD and is removed with LOOP_CTL_REMOVE
//     when the instance ends. Devices of other instances and of the host are
//     never handed out.
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
//   - A View is the instance's private /dev and sysfs block directories: a
//     tmpfs created by the supervisor in the initial user namespace (so its
//     device nodes open) and never attached to the host's mount table. The
//     sandbox receives detached clones (open_tree) of its subdirectories and
//     attaches them over /dev, /sys/block, /sys/class/block and
//     /sys/dev/block. Nodes and links appear and vanish as the instance gets
//     and gives back devices.
//   - Partitions (partitions.go): a device attached with LO_FLAGS_PARTSCAN
//     gets its GPT/MBR read by loopvisor and one more instance device per
//     partition, backed by the whole device with the partition's offset
//     and size, shown as loopNpM; BLKRRPART and BLKPG are served. This works
//     on kernels without partition parsers.
//   - A Registry is the state directory: one journal per instance (which
//     devices it owns, which supervisor holds it), a lock, and the per-host-uid
//     limit across all instances of all supervisors. GC releases what a dead
//     supervisor left behind, never touching a device that is still mounted
//     or claimed by someone else.
//
// When not to use this package: for loop devices the host itself manages;
// loopctl only ever acts on devices it created.
package loopctl
