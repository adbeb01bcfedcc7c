package mountproxy

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/notify"
)

// The new mount API (fsopen, fsconfig, fsmount) for FUSE-served types.
//
// fsopen of a served type gives the caller a real file system context of
// that type (opened by the supervisor, handed over with
// SECCOMP_IOCTL_NOTIF_ADDFD): /proc shows anon_inode:[fscontext] and a read
// returns the kernel's messages, as libmount expects. The supervisor keeps
// a reference and recognises the context in later calls by the open file
// itself (kcmp(KCMP_FILE) of its reference and a pidfd_getfd copy of the
// caller's descriptor), never by number: descriptors can be dup'd, passed,
// closed and reused. fsconfig and fsmount on any other descriptor are the
// kernel's (CONTINUE), so a tmpfs context of the caller stays its own.
//
// fsconfig on a recognised context: the kernel's argument checks are
// repeated in its order; parameters are parsed by the kernel on the
// supervisor's reference with copies of the caller's key and value (so
// errnos and messages are the file system's own) and recorded;
// FSCONFIG_CMD_CREATE is never run on it (host root would mount the
// image). Instead the source must be one of the instance's loop devices
// and a FUSE helper is started as for mount(2), making a detached mount
// (no target) that the supervisor keeps. fsmount hands that mount to the
// caller (ADDFD), its attributes set by the sandbox's root. The caller
// attaches it with its own move_mount, or keeps it detached: the helper
// exits and the device is released when the last reference goes, as with
// the kernel. The context's phases (EBUSY for a second create, EINVAL for
// fsmount before create, ...) follow the kernel's.
//
// A context made by host root cannot be created by anyone without
// CAP_SYS_ADMIN in the initial user namespace (mount_capable), so one that
// leaves the sandbox, or outlives the supervisor's bookkeeping, is useless
// rather than dangerous.

// ctxPhase is where a context is, as the kernel's fs_context_phase.
type ctxPhase int

const (
	phaseCreateParams ctxPhase = iota
	phaseCreating
	phaseAwaitingMount
	phaseAwaitingReconf
	phaseReconfParams
	phaseFailed
)

// maxContexts bounds the contexts one instance holds: the supervisor
// cannot see the caller close its descriptor, so the oldest is dropped
// beyond this (its later calls are then the kernel's: EPERM at create).
const maxContexts = 16

// fsContext is a context handed out by fsopen.
type fsContext struct {
	file   *os.File // the supervisor's reference
	fstype string

	mu     sync.Mutex // held across one fsconfig or fsmount of this context, as the kernel's uapi_mutex
	phase  ctxPhase
	source string
	flags  uint64   // MS_* superblock flags (ro, sync, ...)
	data   []string // other parameters, "key" or "key=value"

	pick *pickState // set for a context fspick handed out (fspick.go)
}

func (x *fsContext) release() {
	x.mu.Lock()
	defer x.mu.Unlock()
	_ = x.file.Close()
	if x.pick != nil {
		_ = x.pick.private.Close()
	}
}

// newAPI is a proxy's table of contexts.
type newAPI struct {
	mu   sync.Mutex
	ctxs []*fsContext // oldest first
	seq  uint64       // keys of helpers without a mount yet (unattached)
}

// drop forgets x and releases the supervisor's reference.
func (n *newAPI) drop(x *fsContext) {
	n.forget(x)
	x.release()
}

func (n *newAPI) add(x *fsContext) {
	n.mu.Lock()
	n.ctxs = append(n.ctxs, x)
	var old []*fsContext
	for len(n.ctxs) > maxContexts {
		old = append(old, n.ctxs[0])
		n.ctxs = n.ctxs[1:]
	}
	n.mu.Unlock()
	for _, o := range old {
		o.release()
	}
}

func (n *newAPI) close() {
	n.mu.Lock()
	all := n.ctxs
	n.ctxs = nil
	n.mu.Unlock()
	for _, x := range all {
		x.release()
	}
}

// fdCaller is a Caller whose descriptors the supervisor can duplicate.
type fdCaller interface {
	Caller
	GetFD(unsafeFD uint32) (notify.FD, error)
}

var (
	kcmpOnce sync.Once
	kcmpOK   bool
)

const kcmpFile = 0 // KCMP_FILE

// sameFile reports whether descriptors a and b of the supervisor name the
// same open file.
func sameFile(a, b int) bool {
	pid := uintptr(os.Getpid())
	r, _, e := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(a), uintptr(b), 0)
	return e == 0 && r == 0
}

// kcmpWorks reports whether the kernel has kcmp (CONFIG_KCMP): without it
// contexts cannot be recognised, and fsopen answers ENOSYS as before.
func kcmpWorks() bool {
	kcmpOnce.Do(func() {
		r, w, err := os.Pipe()
		if err != nil {
			return
		}
		kcmpOK = sameFile(int(r.Fd()), int(r.Fd())) && !sameFile(int(r.Fd()), int(w.Fd()))
		_ = r.Close()
		_ = w.Close()
	})
	return kcmpOK
}

// fsopenServed serves fsopen(2) of a served type by a privileged caller
// (flags already checked): a new context, or ENOSYS where the new API
// cannot be served (kernel-mount policy, a type the host kernel lacks, no
// kcmp), so that libmount falls back to mount(2).
func (p *Proxy) fsopenServed(c Caller, fstype string, flags uint64) notify.Reply {
	log := p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "fsopen", "fstype": fstype})
	if _, ok := c.(fdCaller); !ok || !p.pol.NewAPI || p.pol.Kernel[fstype] || !kcmpWorks() {
		log.Debug("ENOSYS: served through mount(2)")
		return notify.Errno(unix.ENOSYS)
	}
	fd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		log.WithError(err).Debug("the host kernel has no such context: ENOSYS, served through mount(2)")
		return notify.Errno(unix.ENOSYS)
	}
	x := &fsContext{file: os.NewFile(uintptr(fd), "fscontext"), fstype: fstype}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = x.file.Close()
		return fail(err)
	}
	if !c.Valid() {
		_ = unix.Close(dup)
		_ = x.file.Close()
		return fail(notify.ErrStale)
	}
	p.api.add(x)
	log.Debug("file system context handed out")
	return notify.Reply{FD: os.NewFile(uintptr(dup), "fscontext"), Cloexec: flags&unix.FSOPEN_CLOEXEC != 0}
}

// contextOf returns the context the caller's descriptor unsafeFD names, or
// nil if it names none of the proxy's.
func (p *Proxy) contextOf(c Caller, unsafeFD uint64) *fsContext {
	p.api.mu.Lock()
	n := len(p.api.ctxs)
	p.api.mu.Unlock()
	fc, ok := c.(fdCaller)
	if n == 0 || !ok || int32(unsafeFD) < 0 {
		return nil
	}
	theirs, err := fc.GetFD(uint32(int32(unsafeFD)))
	if err != nil {
		return nil
	}
	defer func() { _ = theirs.Close() }() // our duplicate
	p.api.mu.Lock()
	defer p.api.mu.Unlock()
	for _, x := range p.api.ctxs {
		if sameFile(int(x.file.Fd()), theirs.N) {
			return x
		}
	}
	return nil
}

// readParam copies a key or string value as strndup_user(p, 256) does.
func readParam(c Caller, addr uint64) (string, error) {
	s, err := c.ReadString(addr, 256)
	if errors.Is(err, unix.ENAMETOOLONG) {
		return "", unix.EINVAL
	}
	return s, err
}

// sbFlagKeys are the parameters the VFS itself takes as superblock flags
// (vfs_parse_sb_flag): the bit they set or clear.
var sbFlagKeys = map[string]struct {
	bit uint64
	set bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync": {unix.MS_DIRSYNC, true}, "lazytime": {unix.MS_LAZYTIME, true},
	"nolazytime": {unix.MS_LAZYTIME, false}, "mand": {unix.MS_MANDLOCK, true},
	"nomand": {unix.MS_MANDLOCK, false},
}

// lookupKeys are parameters whose parsing resolves a path as the calling
// task: parsed by the supervisor they would look at the host's tree.
var lookupKeys = map[string]bool{"journal_path": true}

// Fsconfig serves fsconfig(2) on a context fsopen handed out; anything
// else is the kernel's.
func (p *Proxy) Fsconfig(c Caller, args [6]uint64) notify.Reply {
	fc, ok := c.(fdCaller)
	if !ok {
		return cont
	}
	x := p.contextOf(c, args[0])
	if x == nil {
		return cont
	}
	cmd, key, val, aux := uint32(args[1]), args[2], args[3], int32(args[4])
	// The kernel's argument checks, in its order.
	bad := false
	switch cmd {
	case unix.FSCONFIG_SET_FLAG:
		bad = key == 0 || val != 0 || aux != 0
	case unix.FSCONFIG_SET_STRING:
		bad = key == 0 || val == 0 || aux != 0
	case unix.FSCONFIG_SET_BINARY:
		bad = key == 0 || val == 0 || aux <= 0 || aux > 1<<20
	case unix.FSCONFIG_SET_PATH, unix.FSCONFIG_SET_PATH_EMPTY:
		bad = key == 0 || val == 0 || (aux != unix.AT_FDCWD && aux < 0)
	case unix.FSCONFIG_SET_FD:
		bad = key == 0 || val != 0 || aux < 0
	case unix.FSCONFIG_CMD_CREATE, fsconfigCmdCreateExcl, unix.FSCONFIG_CMD_RECONFIGURE:
		bad = key != 0 || val != 0 || aux != 0
	default:
		return notify.Errno(unix.EOPNOTSUPP)
	}
	if bad {
		return notify.Errno(unix.EINVAL)
	}
	var k, v string
	var err error
	if key != 0 {
		if k, err = readParam(c, key); err != nil {
			return fail(err)
		}
	}
	switch cmd {
	case unix.FSCONFIG_SET_STRING:
		v, err = readParam(c, val)
	case unix.FSCONFIG_SET_BINARY:
		err = c.Read(val, make([]byte, aux))
	case unix.FSCONFIG_SET_PATH, unix.FSCONFIG_SET_PATH_EMPTY:
		v, err = c.ReadString(val, pathMax)
		if err == nil && v == "" && cmd == unix.FSCONFIG_SET_PATH {
			err = unix.ENOENT
		}
	case unix.FSCONFIG_SET_FD:
		var f notify.FD
		if f, err = fc.GetFD(uint32(aux)); err == nil {
			_ = f.Close() // only its existence matters
		}
	}
	if err != nil {
		return fail(err)
	}
	if !c.Valid() {
		return fail(notify.ErrStale)
	}
	log := p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "fsconfig", "fstype": x.fstype, "key": k})
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.phase == phaseAwaitingReconf {
		x.phase = phaseReconfParams // finish_clean_context
	}
	if x.pick != nil {
		return p.pickConfig(c, x, cmd, k, v, log)
	}
	switch cmd {
	case unix.FSCONFIG_CMD_CREATE, fsconfigCmdCreateExcl:
		return p.ctxCreate(c, x, int32(args[0]), log)
	case unix.FSCONFIG_CMD_RECONFIGURE:
		if x.phase != phaseReconfParams {
			return notify.Errno(unix.EBUSY)
		}
		log.Warn("reconfiguring a FUSE-served superblock is not supported: EOPNOTSUPP")
		return notify.Errno(unix.EOPNOTSUPP)
	}
	if x.phase != phaseCreateParams && x.phase != phaseReconfParams {
		return notify.Errno(unix.EBUSY)
	}
	switch {
	case cmd == unix.FSCONFIG_SET_FLAG:
		err = unix.FsconfigSetFlag(int(x.file.Fd()), k)
	case cmd == unix.FSCONFIG_SET_STRING && !lookupKeys[k]:
		err = unix.FsconfigSetString(int(x.file.Fd()), k, v)
	default:
		log.Info("binary, path and fd parameters are not taken by FUSE helpers: EINVAL")
		return notify.Errno(unix.EINVAL)
	}
	if err != nil {
		return fail(err)
	}
	switch f, ok := sbFlagKeys[k]; {
	case ok && f.set:
		x.flags |= f.bit
	case ok:
		x.flags &^= f.bit
	case k == "source":
		x.source = v
	case cmd == unix.FSCONFIG_SET_STRING:
		x.data = append(x.data, k+"="+v)
	default:
		x.data = append(x.data, k)
	}
	return notify.Reply{}
}

// ctxCreate serves FSCONFIG_CMD_CREATE on descriptor fd of the caller: a
// FUSE helper for the instance's device named by source, whose created
// FUSE context (made by the sandbox's root in its namespaces) replaces the
// caller's descriptor. Preconditions: x.mu held.
func (p *Proxy) ctxCreate(c Caller, x *fsContext, fd int32, log *logrus.Entry) notify.Reply {
	if x.phase != phaseCreateParams {
		return notify.Errno(unix.EBUSY)
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		return notify.Errno(unix.EPERM) // mount_capable
	}
	if x.source == "" {
		x.phase = phaseFailed
		return notify.Errno(unix.EINVAL) // "No source specified"
	}
	idx, ok := p.instanceDevice(c, x.source)
	if !ok {
		// Without loopvisor the kernel refuses the create at
		// mount_capable, before it looks at the source.
		log.WithField("source", x.source).Info("source is not one of the instance's loop devices: EPERM")
		return notify.Errno(unix.EPERM)
	}
	if p.helperOf(idx) != nil {
		// The kernel would hand out its superblock again; a FUSE context
		// cannot be made for a helper that already serves one.
		x.phase = phaseFailed
		log.Warn("device already mounted: a second mount through the new mount API is not served (EBUSY); mount(2) gives one")
		return notify.Errno(unix.EBUSY)
	}
	cloexec, err := fdCloexec(c.Pid(), fd)
	if err != nil {
		return fail(err)
	}
	x.phase = phaseCreating
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		x.phase = phaseFailed
		return fail(err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "context-socket"), os.NewFile(uintptr(pair[1]), "context-socket")
	defer func() { _ = ours.Close() }()
	a := mountArgs{source: x.source, fstype: x.fstype, flags: x.flags, data: x.data, mntSock: theirs}
	log = log.WithFields(logrus.Fields{"loop": idx, "source": x.source, "flags": FlagString(x.flags)})
	r := p.fuseMount(c, idx, a, log)
	_ = theirs.Close()
	if r.Errno != 0 {
		x.phase = phaseFailed
		log.WithField("errno", r.Errno.Error()).Warn("create failed")
		return r
	}
	fuseCtx, err := recvContext(ours)
	if err != nil {
		x.phase = phaseFailed
		log.WithError(err).Error("no FUSE context from the helper's jail: EIO")
		return notify.Errno(unix.EIO)
	}
	// The caller's descriptor becomes the created FUSE context: from here
	// on fsmount, mount_setattr and move_mount are the kernel's, with the
	// caller's credentials, and the superblock lives as long as the
	// caller keeps the context or a mount of it.
	x.phase = phaseAwaitingMount
	go p.api.drop(x)
	log.Info("created: the caller's context is now the FUSE helper's")
	return notify.Reply{FD: fuseCtx, SetFD: true, NewFD: int(fd), Cloexec: cloexec}
}

// fdCloexec reads whether descriptor fd of pid has FD_CLOEXEC.
func fdCloexec(pid int, fd int32) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(int(fd)))
	if err != nil {
		return false, unix.EBADF
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			fl, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && fl&unix.O_CLOEXEC != 0, nil
		}
	}
	return false, nil
}

// instanceDevice resolves source as the caller sees it and reports the
// index of the instance's loop device it names.
func (p *Proxy) instanceDevice(c Caller, source string) (int, bool) {
	src, err := resolve(c.Pid(), source, true)
	if err != nil {
		return 0, false
	}
	var st unix.Stat_t
	err = unix.Fstat(int(src.Fd()), &st)
	_ = src.Close()
	if err != nil || !loopctl.IsLoopDevice(&st) {
		return 0, false
	}
	idx := loopctl.Index(st.Rdev)
	return idx, p.dev.Owns(idx)
}

// recvContext receives the one descriptor the jail sent on sock: a file
// system context. It is the sandbox's (made by its root in its
// namespaces), so the supervisor only ever hands it back to the sandbox.
func recvContext(sock *os.File) (*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), make([]byte, 1), oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) == 1 {
		if l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fds[0])); err == nil && l == "anon_inode:[fscontext]" {
			return os.NewFile(uintptr(fds[0]), "fscontext"), nil
		}
	}
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
	return nil, unix.EBADMSG
}

// fsconfigCmdCreateExcl is FSCONFIG_CMD_CREATE_EXCL (Linux 6.6).
const fsconfigCmdCreateExcl = 8

// fsmountValid is FSMOUNT_VALID_FLAGS.
const fsmountValid = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV |
	unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR__ATIME | unix.MOUNT_ATTR_NODIRATIME | unix.MOUNT_ATTR_NOSYMFOLLOW

// Fsmount serves fsmount(2) of a context fsopen handed out that was not
// created (once created, the caller holds the FUSE context and its fsmount
// is the kernel's): the kernel's errnos; anything else is the kernel's.
func (p *Proxy) Fsmount(c Caller, args [6]uint64) notify.Reply {
	x := p.contextOf(c, args[0])
	if x == nil {
		return cont
	}
	flags, attrs := uint32(args[1]), uint32(args[2])
	if ok, err := c.Privileged(); err != nil || !ok {
		return notify.Errno(unix.EPERM) // may_mount
	}
	if flags&^unix.FSMOUNT_CLOEXEC != 0 || attrs&^fsmountValid != 0 {
		return notify.Errno(unix.EINVAL)
	}
	switch attrs & unix.MOUNT_ATTR__ATIME {
	case unix.MOUNT_ATTR_RELATIME, unix.MOUNT_ATTR_NOATIME, unix.MOUNT_ATTR_STRICTATIME:
	default:
		return notify.Errno(unix.EINVAL)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pick != nil {
		return notify.Errno(unix.EBUSY) // a reconfiguration context
	}
	if x.phase != phaseAwaitingMount {
		return notify.Errno(unix.EINVAL) // no superblock
	}
	// Created: the superblock went to the descriptor of the create, and
	// x is being forgotten (a copy made before is then the kernel's).
	return notify.Errno(unix.EBUSY)
}

// unattached returns a key (in Proxy.fuse) for a FUSE helper whose mount
// the caller's own fsmount will make, of loop device idx: its superblock's
// device is learnt from the first mount of it seen (learnDev).
func (n *newAPI) unattached(int) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	return 1<<62 | n.seq
}

// noDev is the superblock device of a helper whose context went to the
// caller and whose mount has not been seen yet.
const noDev = "0:0"

// adoptMount returns the helper of mount id of pid's mount table if that
// mount is one the caller's fsmount made of a context loopvisor created (a
// FUSE mount whose source is the instance's /dev/loopN, of a helper whose
// superblock is not known yet), and records its superblock: from then on
// umount and second mounts find it as they find mount(2)'s.
func (p *Proxy) adoptMount(pid int, id uint64) *fuseMount {
	for _, m := range callerMounts(pid) {
		if m.id == id {
			return p.learnDev(m)
		}
	}
	return nil
}

// learnDev gives mount m's superblock to the live helper of its device
// whose superblock is not known yet.
func (p *Proxy) learnDev(m mountEntry) *fuseMount {
	n, ok := strings.CutPrefix(m.source, "/dev/loop")
	idx, err := strconv.Atoi(n)
	if !ok || err != nil || !strings.HasPrefix(m.fstype, "fuse.") {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fm := range p.fuse {
		if fm.idx == idx && fm.dev == noDev && fm.live() {
			fm.dev = m.dev
			return fm
		}
	}
	return nil
}

// learnDevOf finds, for helper fm whose superblock is not known yet, a
// mount of it in pid's mount table.
func (p *Proxy) learnDevOf(pid int, fm *fuseMount) {
	p.mu.Lock()
	unknown := fm.dev == noDev
	p.mu.Unlock()
	if !unknown {
		return
	}
	for _, m := range callerMounts(pid) {
		if p.learnDev(m) == fm {
			return
		}
	}
}
