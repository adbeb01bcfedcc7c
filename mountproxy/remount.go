package mountproxy

import (
	"errors"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
)

// perMountFlags are the MS_* flags a remount sets on the mount itself.
const perMountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME |
	unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME | unix.MS_NOSYMFOLLOW

// remount serves mount(2) with MS_REMOUNT (without MS_BIND) of a mount
// loopvisor made; anything else is the kernel's.
//
// A FUSE superblock belongs to the container's user namespace, so the
// kernel remounts it for the container's root by itself, read-only and
// back (the helper stays read-write; the kernel refuses writes while the
// superblock is read-only). Only a helper started read-only cannot become
// writable: remounting its mount read-write gives EACCES when the device
// is read-only, as the kernel answers ("is write-protected"), else EROFS.
//
// A kernel superblock belongs to the initial user namespace: the
// container cannot reconfigure it (EPERM), and loopvisor does it on its
// behalf: the per-mount flags first, as the caller, so that the kernel
// enforces the mount's locked flags (nosuid, nodev, atime: EPERM and nothing
// changed), then the superblock's ro/rw and allow-listed options with
// fspick as host root on the caller's own mount.
func (p *Proxy) remount(c Caller, args [6]uint64, flags uint64) notify.Reply {
	if args[1] == 0 {
		return cont
	}
	target, err := c.ReadString(args[1], pathMax)
	if err != nil {
		return cont
	}
	e, found := mountAt(c.Pid(), target, true)
	if !found || e.root != "/" {
		return cont
	}
	// The kernel remounts the root of a mount only (EINVAL otherwise):
	// util-linux passes the mount point itself.
	abs, ok := absPath(c.Pid(), target)
	if !ok || abs != e.point {
		return cont
	}
	log := p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "mount", "target": target, "flags": FlagString(flags)})
	if fm := p.helperFor(e); fm != nil {
		return p.fuseRemount(c, fm, flags, log)
	}
	// A kernel mount: host root can look it up (no FUSE mount on the
	// way, or mountAt would not have found the path).
	t, err := resolve(c.Pid(), target, true)
	if err != nil {
		return cont
	}
	defer func() { _ = t.Close() }()
	if id, err := fdMountID(t); err != nil || id != e.id {
		return cont
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(t.Fd()), &st); err != nil {
		return cont
	}
	idx := loopctl.Index(st.Dev)
	if idx < 0 || !p.dev.Owns(idx) || !p.pol.Kernel[e.fstype] {
		return cont
	}
	return p.kernelRemount(c, t, e, idx, target, args, flags, log.WithField("loop", idx))
}

func (p *Proxy) fuseRemount(c Caller, fm *fuseMount, flags uint64, log *logrus.Entry) notify.Reply {
	if flags&unix.MS_RDONLY != 0 || !fm.readOnly {
		return cont // the kernel's: the superblock is the container's
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		return cont // the kernel's EPERM
	}
	node, err := p.dev.NodePath(fm.idx)
	if err != nil {
		return fail(err)
	}
	if ro, err := deviceReadOnly(node); err == nil && ro {
		log.Info("read-write remount of a read-only device: EACCES, as the kernel answers")
		return notify.Errno(unix.EACCES)
	}
	log.Warn("a FUSE mount made read-only cannot become writable (its helper runs read-only): EROFS; umount and mount it read-write")
	return notify.Errno(unix.EROFS)
}

func (p *Proxy) kernelRemount(c Caller, t *os.File, e mountEntry, idx int, target string, args [6]uint64, flags uint64, log *logrus.Entry) notify.Reply {
	if ok, err := c.Privileged(); err != nil || !ok {
		return notify.Errno(unix.EPERM)
	}
	var data []string
	if args[4] != 0 {
		s, err := c.ReadString(args[4], 4096)
		if err != nil && !errors.Is(err, unix.ENAMETOOLONG) {
			return fail(err)
		}
		data = ParseData(s)
	}
	// Options on the type's allow-list only; ro/rw are the flags'.
	var opts []string
	for _, o := range data {
		if o == "idmapped" {
			continue // mountinfo's, which libmount passes back: the mount is idmapped
		}
		if !allowedKernelOption(e.fstype, o) {
			log.WithField("option", o).Warn("file system option refused for a kernel mount: EINVAL")
			return notify.Errno(unix.EINVAL)
		}
		if o != "ro" && o != "rw" {
			opts = append(opts, o)
		}
	}
	// A read-only device cannot become writable: the kernel's EACCES.
	if flags&unix.MS_RDONLY == 0 && !strings.HasPrefix(e.superOpts, "rw") {
		if node, err := p.dev.NodePath(idx); err == nil {
			if ro, err := deviceReadOnly(node); err == nil && ro {
				log.Info("read-write remount of a read-only device: EACCES, as the kernel answers")
				return notify.Errno(unix.EACCES)
			}
		}
	}
	if !c.Valid() {
		return fail(notify.ErrStale)
	}
	ns, err := callerNS(c)
	if err != nil {
		return fail(err)
	}
	defer ns.Close()
	// Per-mount flags first, as the caller: the kernel refuses to clear a
	// locked flag (EPERM) before anything is changed.
	if err := nsexec.RemountBind(ns, target, flags&perMountFlags); err != nil {
		return fail(err)
	}
	fs, err := unix.Fspick(int(t.Fd()), "", unix.FSPICK_EMPTY_PATH|unix.FSPICK_CLOEXEC)
	if err == nil {
		defer func() { _ = unix.Close(fs) }()
		ro := "rw"
		if flags&unix.MS_RDONLY != 0 {
			ro = "ro"
		}
		err = unix.FsconfigSetFlag(fs, ro)
		for _, o := range opts {
			if err != nil {
				break
			}
			if k, v, ok := strings.Cut(o, "="); ok {
				err = unix.FsconfigSetString(fs, k, v)
			} else {
				err = unix.FsconfigSetFlag(fs, k)
			}
		}
		if err == nil {
			err = unix.FsconfigReconfigure(fs)
		}
	}
	if err != nil {
		// Put the mount's flags back as they were.
		if rerr := nsexec.RemountBind(ns, target, optsFlags(e.mountOpts)); rerr != nil {
			log.WithError(rerr).Warn("could not restore the mount's flags after a failed remount")
		}
		log.WithError(err).Info("superblock remount failed")
		return fail(err)
	}
	log.WithField("options", strings.Join(opts, ",")).Info("kernel mount remounted on the sandbox's behalf")
	return notify.Reply{}
}

// optsFlags turns mountinfo's per-mount options back into MS_* flags.
func optsFlags(opts string) uint64 {
	var f uint64
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "ro":
			f |= unix.MS_RDONLY
		case "nosuid":
			f |= unix.MS_NOSUID
		case "nodev":
			f |= unix.MS_NODEV
		case "noexec":
			f |= unix.MS_NOEXEC
		case "noatime":
			f |= unix.MS_NOATIME
		case "nodiratime":
			f |= unix.MS_NODIRATIME
		case "relatime":
			f |= unix.MS_RELATIME
		case "strictatime":
			f |= unix.MS_STRICTATIME
		case "nosymfollow":
			f |= unix.MS_NOSYMFOLLOW
		}
	}
	return f
}
