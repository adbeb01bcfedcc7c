package mountproxy

import (
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
)

// fspick(2) of a mount loopvisor made: the new mount API's remount
// (util-linux >= 2.39: open_tree, fspick, fsconfig with the flags and the
// superblock's options, FSCONFIG_CMD_RECONFIGURE, then mount_setattr for
// the mount's own flags, which stays the kernel's).
//
// The caller gets a real reconfiguration context of its superblock (the
// token, opened by the supervisor, handed over with ADDFD, recognised
// later by the open file as fsopen's are) and the supervisor keeps a
// second one of the same superblock (the private context) that never
// leaves it. fsconfig on the token is checked as remount.go checks a
// mount(2) MS_REMOUNT: a kernel mount's options against the type's
// allow-list, a FUSE mount's file system options ignored as the kernel
// ignores them in a mount(2) remount (FUSE refuses them in a
// reconfiguration context: "No changes allowed in reconfigure"); what
// passes is parsed by the kernel on both contexts (errnos and messages are
// the kernel's, on the caller's descriptor). FSCONFIG_CMD_RECONFIGURE
// reconfigures the private context only: whatever the caller slips onto
// the token by racing its descriptor table past the trap (a descriptor
// number swapped between the supervisor's look and the kernel's) is never
// applied by the supervisor. The token itself gives its holder nothing:
// the kernel reconfigures a superblock only for a task with CAP_SYS_ADMIN
// in the superblock's user namespace (the sandbox's for FUSE, which the
// caller has anyway; the initial one for a kernel mount).
//
// A reconfiguration context keeps its superblock active: the supervisor
// drops both after the reconfiguration, at the umount of a mount of that
// superblock, and beyond maxContexts.

// pickState is what a context fspick handed out reconfigures.
type pickState struct {
	private *os.File   // the context the supervisor reconfigures
	dev     string     // the superblock's MAJOR:MINOR
	mntID   uint64     // the mount picked
	fm      *fuseMount // the helper of a FUSE mount; nil for a kernel mount
	idx     int        // a kernel mount's loop device
	roSet   bool       // "ro" or "rw" was given
	ro      bool       // the last of them was "ro"
}

const fspickValid = unix.FSPICK_CLOEXEC | unix.FSPICK_SYMLINK_NOFOLLOW | unix.FSPICK_NO_AUTOMOUNT | unix.FSPICK_EMPTY_PATH

// Fspick serves fspick(2) of a mount loopvisor made (a FUSE mount of one of
// its helpers, or a kernel mount of one of the instance's devices under
// --allow-kernel-mount); anything else is the kernel's.
func (p *Proxy) Fspick(c Caller, args [6]uint64) notify.Reply {
	dfd, flags := int32(args[0]), uint32(args[2])
	if _, ok := c.(fdCaller); !ok || !p.pol.NewAPI || flags&^fspickValid != 0 || !kcmpWorks() {
		return cont
	}
	p.mu.Lock()
	none := len(p.fuse) == 0 && len(p.pol.Kernel) == 0
	p.mu.Unlock()
	if none {
		return cont
	}
	// may_mount comes first in the kernel: without it, its EPERM.
	if ok, err := c.Privileged(); err != nil || !ok {
		return cont
	}
	path, err := c.ReadString(args[1], pathMax)
	if err != nil {
		return cont
	}
	follow := flags&unix.FSPICK_SYMLINK_NOFOLLOW == 0
	var t *os.File
	switch {
	case path == "" && flags&unix.FSPICK_EMPTY_PATH == 0:
		return cont // the kernel's ENOENT
	case path == "" && dfd == unix.AT_FDCWD:
		t, err = resolve(c.Pid(), ".", true)
	case path == "":
		// util-linux's form: the descriptor of an open_tree, an O_PATH
		// file, which pidfd_getfd does not copy. Its magic link gives the
		// same mount and dentry (the caller's, checked still waiting
		// below: the pid is still its).
		t, err = openFDPath(c.Pid(), dfd)
	case dfd == unix.AT_FDCWD || strings.HasPrefix(path, "/"):
		t, err = resolve(c.Pid(), path, follow)
	default:
		return cont // relative to another descriptor: the kernel's
	}
	if err != nil {
		return cont // the kernel looks it up and answers
	}
	defer func() { _ = t.Close() }()
	id, err := fdMountID(t)
	if err != nil {
		return cont
	}
	var e mountEntry
	found := false
	for _, m := range callerMounts(c.Pid()) {
		if m.id == id {
			e, found = m, true
		}
	}
	if !found {
		return cont
	}
	pk := &pickState{dev: e.dev, mntID: e.id, idx: -1}
	if pk.fm = p.helperFor(e); pk.fm == nil {
		pk.fm = p.adoptMount(c.Pid(), id) // made by the caller's fsmount
	}
	if pk.fm == nil {
		// A kernel mount: its superblock's device is the loop device.
		idx := devIndex(e.dev)
		if idx < 0 || !p.dev.Owns(idx) || !p.pol.Kernel[e.fstype] {
			return cont
		}
		pk.idx = idx
	}
	log := p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "fspick", "path": path, "dev": e.dev, "fstype": e.fstype})
	if path != "" {
		// The caller's own lookup decides its errno (host root's would
		// find paths the caller cannot search).
		ns, err := callerNS(c)
		if err != nil {
			return fail(err)
		}
		err = nsexec.Lookup(ns, c.Pid(), path, follow)
		ns.Close()
		if err != nil {
			return fail(err)
		}
	}
	token, err := pickContext(t)
	if err != nil {
		return fail(err) // EINVAL: not the root of its mount, as the kernel answers
	}
	if pk.private, err = pickContext(t); err != nil {
		_ = token.Close()
		return fail(err)
	}
	x := &fsContext{file: token, fstype: e.fstype, phase: phaseAwaitingReconf, pick: pk}
	dup, err := unix.FcntlInt(token.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		x.release()
		return fail(err)
	}
	if !c.Valid() {
		_ = unix.Close(dup)
		x.release()
		return fail(notify.ErrStale)
	}
	p.api.add(x)
	log.Debug("reconfiguration context handed out")
	return notify.Reply{FD: os.NewFile(uintptr(dup), "fscontext"), Cloexec: flags&unix.FSPICK_CLOEXEC != 0}
}

// openFDPath opens descriptor fd of pid through its magic link, O_PATH:
// the same mount and dentry, whatever the file's open mode.
func openFDPath(pid int, fd int32) (*os.File, error) {
	if fd < 0 {
		return nil, unix.EBADF
	}
	n, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd/"+strconv.Itoa(int(fd)), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(n), "fspick-target"), nil
}

// pickContext opens a reconfiguration context of the superblock of the
// mount whose root t is.
func pickContext(t *os.File) (*os.File, error) {
	fd, err := unix.Fspick(int(t.Fd()), "", unix.FSPICK_EMPTY_PATH|unix.FSPICK_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "fscontext"), nil
}

// devIndex returns the loop device index of a superblock device
// "MAJOR:MINOR", or -1.
func devIndex(dev string) int {
	ma, mi, ok := strings.Cut(dev, ":")
	if !ok {
		return -1
	}
	a, err1 := strconv.ParseUint(ma, 10, 32)
	b, err2 := strconv.ParseUint(mi, 10, 32)
	if err1 != nil || err2 != nil {
		return -1
	}
	return loopctl.Index(unix.Mkdev(uint32(a), uint32(b)))
}

// pickConfig serves fsconfig(2) on a context fspick handed out, the
// kernel's argument checks done and k and v copied. Preconditions: x.mu
// held, x.pick set.
func (p *Proxy) pickConfig(c Caller, x *fsContext, cmd uint32, k, v string, log *logrus.Entry) notify.Reply {
	pk := x.pick
	switch cmd {
	case unix.FSCONFIG_CMD_CREATE, fsconfigCmdCreateExcl:
		return notify.Errno(unix.EBUSY) // not a context for a new superblock
	case unix.FSCONFIG_CMD_RECONFIGURE:
		return p.pickReconfigure(c, x, log)
	}
	if x.phase != phaseReconfParams {
		return notify.Errno(unix.EBUSY)
	}
	if cmd != unix.FSCONFIG_SET_FLAG && cmd != unix.FSCONFIG_SET_STRING {
		log.Info("binary, path and fd parameters are not served on a remount: EINVAL")
		return notify.Errno(unix.EINVAL)
	}
	opt := k
	if cmd == unix.FSCONFIG_SET_STRING {
		opt = k + "=" + v
	}
	f, sbFlag := sbFlagKeys[k]
	switch {
	case pk.fm != nil && !sbFlag:
		// mount(2)'s remount of a FUSE mount ignores file system
		// options; libmount passes mountinfo's (user_id=0,...) back.
		log.WithField("option", opt).Debug("file system option of a FUSE remount ignored, as in a mount(2) remount")
		return notify.Reply{}
	case pk.fm == nil && opt == "idmapped":
		// mountinfo's, which libmount passes back: the mount is idmapped
		// (as remount.go skips it).
		return notify.Reply{}
	case pk.fm == nil && !allowedKernelOption(x.fstype, opt):
		log.WithField("option", opt).Warn("file system option refused for a kernel mount: EINVAL")
		return notify.Errno(unix.EINVAL)
	}
	for _, ctx := range []*os.File{x.file, pk.private} {
		var err error
		if cmd == unix.FSCONFIG_SET_FLAG {
			err = unix.FsconfigSetFlag(int(ctx.Fd()), k)
		} else {
			err = unix.FsconfigSetString(int(ctx.Fd()), k, v)
		}
		if err != nil {
			return fail(err)
		}
	}
	if sbFlag && f.bit == unix.MS_RDONLY {
		pk.roSet, pk.ro = true, f.set
	}
	return notify.Reply{}
}

// pickReconfigure serves FSCONFIG_CMD_RECONFIGURE as remount.go serves a
// mount(2) remount: the caller needs CAP_SYS_ADMIN in the sandbox's user
// namespace; a FUSE mount made read-only stays so (EACCES for a read-only
// device, as the kernel answers, else EROFS), a kernel mount of a
// read-only device too (EACCES); the private context is reconfigured.
// Preconditions: x.mu held, x.pick set.
func (p *Proxy) pickReconfigure(c Caller, x *fsContext, log *logrus.Entry) notify.Reply {
	pk := x.pick
	if x.phase != phaseReconfParams {
		return notify.Errno(unix.EBUSY)
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		x.phase = phaseFailed
		return notify.Errno(unix.EPERM)
	}
	wantRW := pk.roSet && !pk.ro
	switch {
	case wantRW && pk.fm != nil && pk.fm.readOnly:
		x.phase = phaseFailed
		if node, err := p.dev.NodePath(pk.fm.idx); err == nil {
			if ro, err := deviceReadOnly(node); err == nil && ro {
				log.Info("read-write remount of a read-only device: EACCES, as the kernel answers")
				return notify.Errno(unix.EACCES)
			}
		}
		log.Warn("a FUSE mount made read-only cannot become writable (its helper runs read-only): EROFS; umount and mount it read-write")
		return notify.Errno(unix.EROFS)
	case wantRW && pk.fm == nil && !p.superRW(c.Pid(), pk.dev):
		// The mount's own flags are not the reconfiguration's: a mount
		// made read-only stays so until the caller clears it
		// (util-linux does with mount_setattr next), as on the host.
		if node, err := p.dev.NodePath(pk.idx); err == nil {
			if ro, err := deviceReadOnly(node); err == nil && ro {
				x.phase = phaseFailed
				log.Info("read-write remount of a read-only device: EACCES, as the kernel answers")
				return notify.Errno(unix.EACCES)
			}
		}
	}
	if !c.Valid() {
		return fail(notify.ErrStale)
	}
	if err := unix.FsconfigReconfigure(int(pk.private.Fd())); err != nil {
		x.phase = phaseFailed
		log.WithError(err).Info("reconfiguration failed")
		return fail(err)
	}
	// Done: the caller closes its context now (util-linux does). Its
	// later calls on it are the kernel's.
	x.phase = phaseAwaitingReconf
	p.api.forget(x)
	_ = x.file.Close() // x.mu is held: release's work, done here
	_ = pk.private.Close()
	log.WithField("ro", pk.ro).Info("superblock reconfigured on the sandbox's behalf")
	return notify.Reply{}
}

// superRW reports whether the superblock dev is read-write now, as a mount
// of it in pid's mount table shows (true when none does).
func (p *Proxy) superRW(pid int, dev string) bool {
	for _, m := range callerMounts(pid) {
		if m.dev == dev {
			return strings.HasPrefix(m.superOpts, "rw")
		}
	}
	return true
}

// dropPicks forgets the fspick contexts of superblock dev: they keep it
// active, and its last umount must end it (the helper exits, the loop
// device is released).
func (n *newAPI) dropPicks(dev string) {
	n.mu.Lock()
	var gone []*fsContext
	kept := n.ctxs[:0:0]
	for _, x := range n.ctxs {
		if x.pick != nil && x.pick.dev == dev {
			gone = append(gone, x)
		} else {
			kept = append(kept, x)
		}
	}
	n.ctxs = kept
	n.mu.Unlock()
	for _, x := range gone {
		x.release()
	}
}

// dropPicksUnder forgets the fspick contexts of superblocks whose mounts
// in ms all lie at or below point (and one at least): a lazy umount of
// point detaches them, and the superblock must then end as on the host
// (a kernel mount's loop device is freed, a helper exits).
func (n *newAPI) dropPicksUnder(ms []mountEntry, point string) {
	in, out := map[string]bool{}, map[string]bool{}
	for _, m := range ms {
		if point == "/" || m.point == point || strings.HasPrefix(m.point, point+"/") {
			in[m.dev] = true
		} else {
			out[m.dev] = true
		}
	}
	for dev := range in {
		if !out[dev] {
			n.dropPicks(dev)
		}
	}
}

// forget removes x from the table without releasing it.
func (n *newAPI) forget(x *fsContext) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, y := range n.ctxs {
		if y == x {
			n.ctxs = append(n.ctxs[:i:i], n.ctxs[i+1:]...)
			return
		}
	}
}

// hasPicks reports whether any fspick context is held.
func (n *newAPI) hasPicks() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range n.ctxs {
		if x.pick != nil {
			return true
		}
	}
	return false
}
