// Package view is an instance's private /dev and sysfs block directories:
// a tmpfs created by the supervisor in the initial user namespace (so its
// device nodes open) and never attached to the host's mount table. A
// sandbox receives detached clones (Clone, open_tree) of its directories
// (Mounts) and attaches them over /dev, /sys/block, /sys/class/block and
// /sys/dev/block; an OCI container gets each node bind-mounted into its
// own /dev through Publish.
//
// Design: loop nodes appear (AddLoop, AddPartition) and vanish
// (RemoveLoop, RemovePartition) as the instance gets and gives back
// devices; a partition is shown as the kernel shows one, /dev/loopNpM and
// a loopNpM directory inside loopN's sysfs directory (see sysfs.go). Every node
// inode belongs to host root (the container's root reaches it through an
// ACL entry, so it cannot chmod or chown it), each assignment gets a fresh
// inode, and Revoke makes every inode ever made for an index unopenable
// (owner 0:0, mode 000) before the device may leave the instance: a
// reference the container kept (O_PATH, fd, bind mount, hard link) never
// reaches another owner's device nor makes the kernel create one. Publish
// and Unpublish touch the container and run on the view's own goroutine,
// in order, never under a lock; WaitPublished bounds how long a caller
// waits for one.
//
// When not to use this package: for devices that are not an instance's;
// it never decides who owns an index (loopctl.Instance does).
package view
