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

// kernelSuperblock creates the file system on loop device dev with the new
// mount API as host root and returns a detached mount, idmapped to the user
// namespace userNS if the file system supports it. devPath is the device's
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
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(mountAttrs(a.flags)))
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
