// Package mountproxy makes `mount -o loop` work inside unprivileged
// sandboxes: it serves the trapped mount(2), umount2(2) and fsopen(2) calls
// whose source is one of the instance's own loop devices.
//
// Design:
//
//   - Policy says how a file system type is served. By default a FUSE helper
//     does it (ext2/3/4 with fuse2fs, squashfs with squashfuse; more with
//     --fuse TYPE=HELPER), so the kernel never parses the untrusted image.
//     Types named in --allow-kernel-mount are mounted by the kernel on the
//     sandbox's behalf, always nosuid and nodev, and idmapped to the
//     sandbox's user namespace where the file system supports it. A type may
//     not be in both lists.
//   - A kernel mount is made by host root (fsopen in the supervisor), so
//     two things keep it from being more than the sandbox could have had.
//     Its flags are locked as those of a mount the sandbox inherited
//     (nsexec's lockmove: the kernel sets MNT_LOCK_* only when it copies a
//     mount into a namespace of a less privileged user namespace, so the
//     mount is copied there and a clone of the copy attached); a remount
//     that clears nosuid, nodev, ro or noexec fails with EPERM. And its file
//     system options come from an allow-list per type (KernelOptions):
//     nothing that names a host object, reads a host id, or can take the
//     host down (errors=panic); ext2/3/4 always get an errors= setting,
//     since their default is in the superblock the sandbox writes.
//   - Anything else (bind mounts, tmpfs, proc, remounts, propagation
//     changes, sources that are not the instance's loop devices) is answered
//     CONTINUE: the kernel decides with the caller's own credentials, exactly
//     as without loopvisor. The BPF filter only traps mount(2) calls without
//     MS_REMOUNT, MS_BIND or MS_MOVE (bits that MS_MGC_VAL does not share).
//   - Paths are resolved as the caller sees them. The supervisor looks at
//     them through /proc/PID/root and /proc/PID/cwd with openat2
//     (RESOLVE_IN_ROOT), on its own copies of the arguments. Anything that
//     must happen inside the sandbox's mount namespace (attaching a kernel
//     mount, running the FUSE helper, unmounting) is done by nsexec: a
//     re-execution of loopvisor whose C constructor joins the sandbox's
//     user, mount and pid namespaces before the Go runtime starts, becomes
//     the sandbox's root (never host root), chroots to the caller's root
//     and changes to its working directory. A symlink swapped in by another
//     thread can therefore only redirect a mount within the sandbox's own
//     view, which the sandbox could do itself.
//   - A FUSE helper runs in the foreground as a child of nsexec, in the
//     sandbox's pid namespace: it dies with the sandbox, with its nsexec
//     parent, and with the supervisor. umount2 of a FUSE mount is served too,
//     and answered only after the helper has exited, so every byte written is
//     in the image when umount returns.
//   - fsopen(2) of a served type answers ENOSYS, so util-linux >= 2.39 falls
//     back to mount(2) as libmount does on kernels without the new API.
//
// When not to use this package: for mounts that do not involve an
// instance's loop device; they are none of loopvisor's business.
package mountproxy
