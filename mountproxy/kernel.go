package mountproxy

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
)

// sbFlagParams are MS_* flags that are superblock parameters in the new
// mount API.
var sbFlagParams = []struct {
	bit   uint64
	param string
}{
	{unix.MS_RDONLY, "ro"}, {unix.MS_SYNCHRONOUS, "sync"}, {unix.MS_DIRSYNC, "dirsync"},
	{unix.MS_LAZYTIME, "lazytime"}, {unix.MS_MANDLOCK, "mand"}, {unix.MS_POSIXACL, "acl"},
}

// unlockedAttrs are the MOUNT_ATTR_* bits of a kernel mount that the
// sandbox may clear again, as host root may on the host: they are set
// after the locked copy (nsexec.MoveLocked), so they are not locked.
const unlockedAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_NOSYMFOLLOW

// mountAttrs turns MS_* flags into MOUNT_ATTR_* mount attributes; nosuid
// and nodev are always set.
func mountAttrs(flags uint64) uint64 {
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if flags&unix.MS_RDONLY != 0 {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if flags&unix.MS_NOEXEC != 0 {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	if flags&unix.MS_NOSYMFOLLOW != 0 {
		attr |= unix.MOUNT_ATTR_NOSYMFOLLOW
	}
	switch {
	case flags&unix.MS_NOATIME != 0:
		attr |= unix.MOUNT_ATTR_NOATIME
	case flags&unix.MS_STRICTATIME != 0:
		attr |= unix.MOUNT_ATTR_STRICTATIME
	default:
		attr |= unix.MOUNT_ATTR_RELATIME
	}
	if flags&unix.MS_NODIRATIME != 0 {
		attr |= unix.MOUNT_ATTR_NODIRATIME
	}
	return attr
}

// lockedAttrs are the attributes a kernel mount is made with, to be locked
// by the copy into the sandbox's user namespace: nosuid, nodev and the
// atime flags (the kernel locks a copy's atime flags whatever they are,
// and a locked mount's atime flags cannot change at all, so they are
// chosen here); set are the caller's other flags, set on the locked
// copy before it is attached.
func lockedAttrs(flags uint64) (locked, set uint64) {
	a := mountAttrs(flags)
	return a &^ unlockedAttrs, a & unlockedAttrs
}

// kernelSuperblock creates the file system on loop device dev with the new
// mount API as host root and returns a detached mount with the attributes
// to lock (lockedAttrs: ro, noexec and nosymfollow are the caller's to set
// on the locked copy), idmapped to the user namespace userNS if the file
// system supports it. devPath is the device's
// node as the sandbox names it ("/dev/loopN", "/dev/loopNpM"): the kernel
// keeps the source string as the mount's name (mountinfo's source), so the
// superblock is created in a private mount namespace where that path is a
// node of dev (nsexec.CreateSuperblock), not from a node of the host's.
func kernelSuperblock(a mountArgs, devPath string, dev uint64, userNS *os.File) (*os.File, bool, error) {
	fsfd, err := unix.Fsopen(a.fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, false, err // ENODEV: the kernel has no such type
	}
	fsctx := os.NewFile(uintptr(fsfd), "fscontext")
	defer func() { _ = fsctx.Close() }()
	if err := unix.FsconfigSetString(fsfd, "source", devPath); err != nil {
		return nil, false, err
	}
	for _, f := range sbFlagParams {
		if a.flags&f.bit != 0 {
			if err := unix.FsconfigSetFlag(fsfd, f.param); err != nil {
				return nil, false, err
			}
		}
	}
	for _, o := range a.data {
		key, val, hasVal := strings.Cut(o, "=")
		switch {
		case key == "source":
			return nil, false, unix.EINVAL // the source is the instance's device, nothing else
		case hasVal:
			err = unix.FsconfigSetString(fsfd, key, val)
		default:
			err = unix.FsconfigSetFlag(fsfd, key)
		}
		if err != nil {
			return nil, false, err
		}
	}
	if err := nsexec.CreateSuperblock(fsctx, devPath, dev); err != nil {
		return nil, false, err
	}
	locked, _ := lockedAttrs(a.flags)
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(locked))
	if err != nil {
		return nil, false, err
	}
	mnt := os.NewFile(uintptr(mfd), "mount")
	idmapped := false
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userNS.Fd())}
	if err := unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH, &attr); err == nil {
		idmapped = true
	}
	return mnt, idmapped, nil
}
