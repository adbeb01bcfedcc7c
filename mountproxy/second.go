package mountproxy

import (
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
)

// sbReadOnly reports whether a mountinfo line's superblock options say
// "ro" (its first super option is ro or rw).
func sbReadOnly(m mountEntry) bool {
	o, _, _ := strings.Cut(m.superOpts, ",")
	return o == "ro"
}

// attrsAll are the MOUNT_ATTR_* bits a mount(2) call sets or clears.
const attrsAll = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV |
	unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_NODIRATIME | unix.MOUNT_ATTR_NOSYMFOLLOW | unix.MOUNT_ATTR__ATIME

// secondMount serves a mount of a loop device whose superblock a helper
// already serves, as the kernel's get_tree_bdev does for a device that
// has one: another mount of the same superblock (the same files), with
// its own per-mount flags; EBUSY for another type (the device is held by
// the first type's superblock) or another read-only state ("would change
// RO state"). ok is false when no helper serves idx.
func (p *Proxy) secondMount(c Caller, idx int, a mountArgs, log *logrus.Entry) (notify.Reply, bool) {
	fm := p.helperOf(idx)
	if fm == nil {
		return notify.Reply{}, false
	}
	p.learnDevOf(c.Pid(), fm) // a new-API mount's superblock (newapi.go)
	log = log.WithFields(logrus.Fields{"helper": fm.helper, "helper_pid": fm.helperPid, "first": fm.target})
	if fm.fstype != a.fstype {
		log.WithField("mounted_as", fm.fstype).Info("device already mounted as another type: EBUSY, as the kernel answers")
		return notify.Errno(unix.EBUSY), true
	}
	// A mount of the superblock the caller can reach: the first one if
	// it is still there, else any (a bind, an earlier second mount).
	var src mountEntry
	found := false
	for _, m := range callerMounts(c.Pid()) {
		if fm.serves(m) && m.root == "/" && (!found || m.id == fm.mntID) {
			src, found = m, true
		}
	}
	if !found {
		log.Warn("device mounted, but no mount of its superblock is in the caller's mount namespace: EBUSY")
		return notify.Errno(unix.EBUSY), true
	}
	if sbReadOnly(src) != (a.flags&unix.MS_RDONLY != 0) {
		log.Info("second mount would change the superblock's read-only state: EBUSY, as the kernel answers")
		return notify.Errno(unix.EBUSY), true
	}
	ns, err := callerNS(c)
	if err != nil {
		return fail(err), true
	}
	defer ns.Close()
	if err := nsexec.CloneMount(ns, src.point, src.id, a.target, fuseAttrs(a.flags), attrsAll); err != nil {
		log.WithError(err).Warn("second mount of a FUSE superblock failed")
		return fail(err), true
	}
	log.WithField("from", src.point).Info("second mount: another mount of the helper's superblock")
	return notify.Reply{}, true
}

// blockType reports whether the host kernel has fstype as a file system
// on a block device (a /proc/filesystems line without "nodev").
func blockType(fstype string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 1 && f[0] == fstype {
			return true
		}
	}
	return false
}

// foreignType answers a mount of an instance device as a block file system
// type loopvisor does not serve. When the device holds an image of a
// served type, the host kernel's driver for the other type would not find
// its superblock and answer EINVAL: so does loopvisor (libmount's type
// lists, `mount -t noext4`, try every type of /proc/filesystems and report
// the last errno). Anything else is the kernel's to refuse (EPERM: the
// type cannot be mounted in a user namespace).
func (p *Proxy) foreignType(idx int, a mountArgs) notify.Reply {
	node, err := p.dev.NodePath(idx)
	if err != nil {
		return cont
	}
	kind := recognize(node)
	if kind == "" {
		return cont
	}
	p.log.WithFields(logrus.Fields{"syscall": "mount", "loop": idx, "fstype": a.fstype, "image": kind}).
		Info("device holds an image of another type: EINVAL, as the host's driver answers")
	return notify.Errno(unix.EINVAL)
}
