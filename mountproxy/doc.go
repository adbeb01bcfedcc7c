// Package mountproxy makes `mount -o loop` work inside unprivileged
// sandboxes: it serves the trapped mount(2), umount2(2), fsopen(2),
// fsconfig(2) and fsmount(2) calls whose source is one of the instance's
// own loop devices.
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
//   - A kernel mount is made by host root (fsopen in the supervisor, the
//     create in nsexec's kcreate, where the source path, which the kernel
//     keeps as the mount's name, is a node named as in the sandbox's /dev:
//     /dev/loopN or /dev/loopNpM), so two things keep it from being more
//     than the sandbox could have had.
//     Its nosuid, nodev and atime flags are locked as those of a mount the
//     sandbox inherited (nsexec's lockmove: the kernel sets MNT_LOCK_* only
//     when it copies a mount into a namespace of a less privileged user
//     namespace, so the mount is copied there and a clone of the copy
//     attached); a remount that clears nosuid or nodev, or changes the
//     atime flags, fails with EPERM. ro, noexec and nosymfollow are set on
//     the clone before it is attached, after the copy, so they are not
//     locked: the sandbox may clear them, as host root may. And its file
//     system options come from an allow-list per type (KernelOptions):
//     nothing that names a host object, reads a host id, or can take the
//     host down (errors=panic); ext2/3/4 always get an errors= setting,
//     since their default is in the superblock the sandbox writes.
//   - The host kernel's answers come first (precheck.go): before a helper
//     runs, the image is checked as the kernel checks it for the type asked
//     for (ext2/3/4 feature sets, squashfs and FAT superblocks, geometry,
//     block size), in mount(2)'s order (data, target, privilege, device).
//     A second mount of a device a helper serves is another mount of its
//     superblock (second.go), as get_tree_bdev shares it; EBUSY for another
//     type or read-only state. A superblock remount (MS_REMOUNT without
//     MS_BIND) of a kernel mount is done on the caller's behalf, after its
//     per-mount flags are set as the caller so that the locks hold
//     (remount.go); a FUSE superblock is the container's to remount.
//   - Anything else (bind mounts, tmpfs, proc, bind remounts, propagation
//     changes, sources that are not the instance's loop devices) is answered
//     CONTINUE: the kernel decides with the caller's own credentials, exactly
//     as without loopvisor. The BPF filter only traps mount(2) calls without
//     MS_REMOUNT, MS_BIND or MS_MOVE (bits that MS_MGC_VAL does not share)
//     and those with MS_REMOUNT but not MS_BIND.
//   - Paths are resolved as the caller sees them. The supervisor looks at
//     them through /proc/PID/root and /proc/PID/cwd with openat2
//     (RESOLVE_IN_ROOT), on its own copies of the arguments. Anything that
//     must happen inside the sandbox's mount namespace (attaching a kernel
//     mount, unmounting) is done by nsexec: a re-execution of loopvisor
//     whose C constructor joins the sandbox's user and mount namespaces
//     before the Go runtime starts, becomes the sandbox's root (never host
//     root), chroots to the caller's root and changes to its working
//     directory. A symlink swapped in by another thread can therefore only
//     redirect a mount within the sandbox's own view.
//   - A FUSE helper has the container's confinement or less, never the
//     supervisor's (fuse.go, fusejail.c). The binary is the host's, chosen
//     by the supervisor (nothing is looked up in the container's view, so
//     binding another program over fuse2fs inside changes nothing, and
//     images without helpers work). A launcher, still host root, builds a
//     jail: a mount namespace owned by the initial user namespace (the
//     container can neither enter nor remount it) that holds only the
//     helper's own files (its binary, loopvisor as fusermount, the
//     libraries ldd names for them and libgcc_s, which glibc loads for
//     pthread_cancel; read-only, nosuid, nodev), /etc/ld.so.cache, null/zero/full/random/urandom, /dev/fuse
//     and the one device node it serves (a view node: host root's, an ACL
//     entry for the container's root, read-only for a read-only mount,
//     revoked when the helper exits). It then joins the caller's user, pid,
//     net, ipc, uts, cgroup and time namespaces and its cgroups and becomes
//     its root with no supplementary groups. A child in the caller's mount
//     namespace makes the FUSE superblock from the container's user
//     namespace (so device nodes in the image never open, whatever flags a
//     later remount sets) with the device as its source. The helper starts
//     with the /dev/fuse fd, no capability (SECBIT_NOROOT locked),
//     no_new_privs, an empty environment and the helper seccomp filter
//     (notify.HelperProgram, an allow-list: no loop ioctls, no mount or
//     namespace calls).
//     libfuse cannot mount and runs "fusermount", which in the jail is
//     loopvisor: it hands back the fd it was given, so libfuse2 helpers
//     (fuse2fs 1.47.0, fusefat) and libfuse3 helpers (squashfuse) work
//     alike. The mount is attached at the caller's target only once the
//     helper has answered (fstatfs on the detached mount), so a helper that
//     fails on an image leaves nothing behind. The helper dies with its
//     launcher, the launcher with the supervisor (not in the agent:
//     containers outlive it) and both with the container's pid namespace.
//     A live helper costs no OS thread: the supervisor waits on the
//     launcher's status pipe. umount2 of a FUSE mount is served and
//     answered only after the helper has exited when it was the last mount
//     of the superblock, so every byte written is in the image.
//   - The new mount API (newapi.go): fsopen(2) of a FUSE-served type hands
//     the caller a real context of that type (SECCOMP_IOCTL_NOTIF_ADDFD),
//     recognised later by the open file (kcmp), not by number; fsconfig(2)
//     parameters are parsed by the kernel on the supervisor's copy;
//     FSCONFIG_CMD_CREATE starts the helper as mount(2) does but stops at
//     the created FUSE context, which replaces the caller's descriptor, so
//     fsmount, move_mount and the detached mount's lifetime are the
//     kernel's. Types under --allow-kernel-mount, types the host kernel
//     lacks and filters that do not trap fsconfig and fsmount
//     (Policy.NewAPI) get ENOSYS from fsopen, and libmount falls back to
//     mount(2).
//   - The new mount API's remount (fspick.go): fspick(2) of a mount
//     loopvisor made (FUSE or kernel) hands the caller a reconfiguration
//     context; fsconfig on it is checked as a mount(2) remount is, and
//     FSCONFIG_CMD_RECONFIGURE reconfigures a second context the
//     supervisor keeps, never the caller's.
//
// When not to use this package: for mounts that do not involve an
// instance's loop device; they are none of loopvisor's business.
package mountproxy
