// Package nsexec does the few things that must happen inside a container's
// mount namespace: attach a detached mount (Move, MoveLocked), bind a
// device node into its /dev and take it away again (Bind, Unbind), and
// unmount (Umount); and one that must happen in a mount namespace of its
// own: create a kernel mount's superblock from a node that has the name
// the sandbox knows the device by (CreateSuperblock), which the kernel
// keeps as the mount's source.
//
// Design: setns(2) into a mount namespace fails in a multithreaded process,
// and every Go process is one. So each op re-executes loopvisor with
// _LOOPVISOR_NSEXEC=OP; nsexec.c's constructor runs before the Go runtime,
// drops host root's groups, joins the container's user and mount
// namespaces through a pidfd of the caller, becomes the container's root
// (never host root), chroots to the caller's root and changes to its cwd,
// does the one op and exits. A path the container controls is therefore
// resolved in the container's own view, with its own privileges. Every op
// is killed after OpTimeout (a path may cross a FUSE mount the container
// never answers). Failures are *Error with the step and the errno, which
// unwraps to the errno the container should see.
//
// The create is the one op that acts as host root on what the container
// chose (the image, whose superblock may name other block devices), so it
// is confined to the serving device: started into a new cgroup v2 with a
// device program allowing that device only (devcgroup.NewConfined), or
// where that cannot be made, run in a child v1 devices cgroup.
//
// When not to use this package: for FUSE helpers (mountproxy's fusejail
// starts those in a jail of their own), or for anything that can be done
// from the supervisor with file descriptors alone.
package nsexec
