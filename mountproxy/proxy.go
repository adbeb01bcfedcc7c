package mountproxy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
	"github.com/loopvisor/loopvisor/internal/mountinfo"
	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
)

// Caller is the trapped task, as the supervisor reaches it.
type Caller interface {
	Read(unsafeAddr uint64, buf []byte) error
	ReadString(unsafeAddr uint64, max int) (string, error)
	Valid() bool
	Pid() int
	PidFD() int
	// Privileged reports whether the caller has CAP_SYS_ADMIN in the
	// sandbox's user namespace: mount and umount need it, as on the host.
	Privileged() (bool, error)
}

// Devices is what the proxy needs to know of the instance.
type Devices interface {
	// Owns reports whether loop device idx belongs to the instance.
	Owns(idx int) bool
	// NodePath returns a host path of a device node for idx that only
	// the supervisor can reach.
	NodePath(idx int) (string, error)
	// HelperNode returns an O_PATH fd of a node of idx that only a helper
	// running as the sandbox's root can open, and a func that revokes it.
	HelperNode(idx int, readOnly bool) (*os.File, func(), error)
	// FuseNode returns an O_PATH fd of a /dev/fuse node a helper opens.
	FuseNode() (*os.File, error)
	// DevName is the name of idx's node in the sandbox's /dev: loopN,
	// or loopNpM for a device that serves a partition.
	DevName(idx int) string
}

const (
	pathMax          = 4096
	umountWaitHelper = 30 * time.Second
)

// fuseMount is a live FUSE mount served by a helper.
type fuseMount struct {
	mntID     uint64
	target    string
	helper    string
	helperPid int       // in the host's pid namespace
	release   func()    // revokes the helper's device node
	cmd       *exec.Cmd // the jail's launcher; the helper dies with it
	done      chan struct{}
	idx       int    // the loop device it serves
	fstype    string // the type it was mounted as
	readOnly  bool   // the helper (and the superblock) is read-only
	dev       string // the FUSE superblock's MAJOR:MINOR, as in mountinfo
	source    string // the mount's source, as in mountinfo (/dev/loopN)
}

// Proxy serves the mount calls of one instance.
type Proxy struct {
	pol    Policy
	dev    Devices
	log    *logrus.Entry
	userNS *os.File // the sandbox's user namespace, for idmapped mounts

	mu      sync.Mutex
	fuse    map[uint64]*fuseMount
	helpers int // helpers running or starting (Policy.MaxHelpers)
	closed  bool

	api newAPI // contexts handed out by fsopen (newapi.go)

	// KeepHelpers lets FUSE helpers outlive the supervisor (the agent's
	// containers outlive the agent); they still die with the sandbox.
	KeepHelpers bool
}

// New returns a proxy for an instance. userNS is the sandbox's user
// namespace; the proxy borrows it.
func New(pol Policy, dev Devices, userNS *os.File, log *logrus.Entry) *Proxy {
	return &Proxy{pol: pol, dev: dev, log: log, userNS: userNS, fuse: map[uint64]*fuseMount{}}
}

var cont = notify.Continue // not loopvisor's: the kernel decides

// callerNS opens what nsexec needs to act as the caller, and checks that
// the call is still pending before anything is done on its behalf.
func callerNS(c Caller) (*nsexec.NS, error) {
	ns, err := nsexec.OpenNS(c.Pid(), c.PidFD())
	if err != nil {
		return nil, err
	}
	if !c.Valid() {
		ns.Close()
		return nil, notify.ErrStale
	}
	return ns, nil
}

func fail(err error) notify.Reply { return notify.Fail(err) }

// resolve opens path as the caller sees it (its root and cwd) with O_PATH.
//
// Absolute paths are resolved under the caller's root (RESOLVE_IN_ROOT).
// Relative paths start at the caller's cwd; when the caller's root is the
// supervisor's own (loopvisor run) that is exact. Under another root, ".."
// and absolute symlinks of a relative path stop at the cwd: a documented
// approximation that can only fail a lookup, never leave the caller's view.
func resolve(pid int, path string, follow bool) (*os.File, error) {
	if path == "" {
		return nil, unix.ENOENT
	}
	proc := "/proc/" + strconv.Itoa(pid)
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS}
	if !follow {
		how.Flags |= unix.O_NOFOLLOW
	}
	base := proc + "/root"
	if strings.HasPrefix(path, "/") {
		how.Resolve |= unix.RESOLVE_IN_ROOT
	} else {
		base = proc + "/cwd"
		if !sameRoot(proc + "/root") {
			how.Resolve |= unix.RESOLVE_IN_ROOT
		}
	}
	dir, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = unix.Close(dir) }()
	fd, err := unix.Openat2(dir, path, &how)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// sameRoot reports whether the root at procRoot is the supervisor's.
func sameRoot(procRoot string) bool {
	var a, b unix.Stat_t
	if unix.Stat(procRoot, &a) != nil || unix.Stat("/", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Fsopen serves fsopen(2) of a type loopvisor serves: a context of the
// new mount API (newapi.go), or ENOSYS where that is not served, so that
// libmount falls back to mount(2).
func (p *Proxy) Fsopen(c Caller, args [6]uint64) notify.Reply {
	// The kernel checks the flags first (EINVAL); so must loopvisor,
	// before it answers ENOSYS for a served type.
	if args[1]&^uint64(unix.FSOPEN_CLOEXEC) != 0 {
		return cont
	}
	fstype, err := c.ReadString(args[0], pathMax)
	if err != nil {
		return cont
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		return cont // the kernel's EPERM, as without loopvisor
	}
	if p.pol.Serves(fstype) {
		return p.fsopenServed(c, fstype, args[1])
	}
	return cont
}

// mountArgs is a copy of a trapped mount(2)'s arguments.
type mountArgs struct {
	source, target, fstype string
	flags                  uint64
	data                   []string
	// mntSock, if set, stops at the created FUSE context (target ""),
	// sent over this socket (the new mount API).
	mntSock *os.File
}

// Mount serves mount(2) for the instance's loop devices.
func (p *Proxy) Mount(c Caller, args [6]uint64) notify.Reply {
	// MS_NOUSER is the kernel's own: path_mount refuses it (EINVAL) once
	// it has dropped MS_MGC_VAL (whose top bit is MS_NOUSER's).
	flags := CleanFlags(args[3])
	if flags&(1<<31) != 0 {
		return cont
	}
	if flags&(unix.MS_REMOUNT|unix.MS_BIND) == unix.MS_REMOUNT {
		p.mu.Lock()
		none := len(p.fuse) == 0 && len(p.pol.Kernel) == 0
		p.mu.Unlock()
		if none {
			return cont
		}
		return p.remount(c, args, flags)
	}
	if !isNewMount(flags) || args[2] == 0 || args[0] == 0 {
		return cont
	}
	fstype, err := c.ReadString(args[2], pathMax)
	if err != nil {
		return cont
	}
	served := p.pol.Serves(fstype)
	if !served && !blockType(fstype) {
		return cont
	}
	source, err := c.ReadString(args[0], pathMax)
	if err != nil {
		return cont
	}
	src, err := resolve(c.Pid(), source, true)
	if err != nil {
		return cont
	}
	var st unix.Stat_t
	err = unix.Fstat(int(src.Fd()), &st)
	_ = src.Close()
	if err != nil || !loopctl.IsLoopDevice(&st) {
		return cont
	}
	idx := loopctl.Index(st.Rdev)
	if !p.dev.Owns(idx) {
		return cont // not ours: the kernel refuses it as without loopvisor
	}
	// From here on the call is loopvisor's: errors are the caller's, in
	// the kernel's order. The syscall copies the type, the source and the
	// data page (EFAULT), path_mount looks the target up (ENOENT,
	// ENOTDIR, ENAMETOOLONG, ELOOP), and only then comes may_mount()
	// (EPERM).
	a := mountArgs{source: source, fstype: fstype, flags: flags}
	if args[4] != 0 {
		data, err := c.ReadString(args[4], 4096)
		if err != nil && !errors.Is(err, unix.ENAMETOOLONG) {
			return fail(err)
		}
		a.data = ParseData(data)
	}
	target, err := c.ReadString(args[1], pathMax)
	if err != nil {
		return fail(err)
	}
	a.target = target
	// The target is looked up as the caller: host root would find paths
	// the caller cannot search (its errno would tell whether they exist),
	// and cannot look into a FUSE mount of the container (allow_other
	// stops at its user namespace), e.g. an ESP on the root's /boot/efi.
	ns, err := callerNS(c)
	if err != nil {
		return fail(err)
	}
	err = nsexec.Lookup(ns, c.Pid(), target, true)
	ns.Close()
	if err != nil {
		return fail(err)
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "mount", "loop": idx}).Info("caller lacks CAP_SYS_ADMIN: EPERM")
		return notify.Errno(unix.EPERM)
	}
	if !c.Valid() {
		return fail(notify.ErrStale)
	}
	if !served {
		return p.foreignType(idx, a)
	}
	log := p.log.WithFields(logrus.Fields{
		"pid": c.Pid(), "syscall": "mount", "loop": idx, "source": source, "target": target,
		"fstype": fstype, "flags": FlagString(flags), "data": strings.Join(a.data, ","),
	})
	var r notify.Reply
	if p.pol.Kernel[fstype] {
		r = p.kernelMount(c, idx, a, log)
	} else {
		r = p.fuseMount(c, idx, a, log)
	}
	if r.Errno != 0 {
		log.WithField("errno", r.Errno.Error()).Warn("mount failed")
	}
	return r
}

// mountEntry is one line of /proc/PID/mountinfo.
type mountEntry struct {
	id        uint64
	dev       string // MAJOR:MINOR of the superblock
	root      string // the directory of the file system mounted here
	point     string
	mountOpts string // the mount's own options (ro, nosuid, ...)
	fstype    string
	source    string
	superOpts string
}

// parseMountinfo decodes a mountinfo text (the kernel's, for the caller's
// mount namespace).
func parseMountinfo(text string) []mountEntry {
	var out []mountEntry
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		id, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		rf := strings.Fields(rest)
		if len(rf) == 0 {
			continue
		}
		e := mountEntry{id: id, dev: f[2], root: mountinfo.Unescape(f[3]), point: mountinfo.Unescape(f[4]), mountOpts: f[5], fstype: rf[0]}
		if len(rf) >= 2 {
			e.source = mountinfo.Unescape(rf[1])
		}
		if len(rf) >= 3 {
			e.superOpts = rf[2]
		}
		out = append(out, e)
	}
	return out
}

func callerMounts(pid int) []mountEntry {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return nil
	}
	return parseMountinfo(string(b))
}

// mountAt returns the mount at target in pid's view: the one the path
// resolves to (fdinfo's mnt_id), or, when host root cannot look the path
// up (a FUSE mount of the container on the way answers it EACCES), the
// topmost mount whose mount point is the path itself.
func mountAt(pid int, target string, follow bool) (mountEntry, bool) {
	ms := callerMounts(pid)
	t, err := resolve(pid, target, follow)
	if err == nil {
		id, err := fdMountID(t)
		_ = t.Close()
		if err != nil {
			return mountEntry{}, false
		}
		for _, m := range ms {
			if m.id == id {
				return m, true
			}
		}
		return mountEntry{}, false
	}
	if !errors.Is(err, unix.EACCES) {
		return mountEntry{}, false
	}
	abs, ok := absPath(pid, target)
	if !ok {
		return mountEntry{}, false
	}
	var top mountEntry
	found := false
	for _, m := range ms {
		if m.point == abs {
			top, found = m, true // later lines are mounted on top
		}
	}
	return top, found
}

// absPath makes target absolute against pid's working directory.
func absPath(pid int, target string) (string, bool) {
	if strings.HasPrefix(target, "/") {
		return filepath.Clean(target), true
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return "", false
	}
	return filepath.Join(cwd, target), true
}

// fdMountID returns the id of the mount f is on, from /proc/self/fdinfo,
// without a request to its file system.
func fdMountID(f *os.File) (uint64, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "mnt_id:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, unix.ENOENT
}

// helperFor returns the live helper whose superblock mount m is, or nil.
//
// The device number alone does not say it: a superblock's anonymous
// device number goes to the next superblock made once it is gone, and a
// helper outlives its superblock for as long as the container wants (it
// can stop it, and then unmount). So the mount must also be a FUSE mount
// with the helper's source. What can still match then is a FUSE mount of
// the container's own that took the number and names the same device: a
// superblock of the container's user namespace, which the container may
// reconfigure itself.
func (p *Proxy) helperFor(m mountEntry) *fuseMount {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fm := range p.fuse {
		if fm.serves(m) && fm.live() {
			return fm
		}
	}
	return nil
}

// serves reports whether m is a mount of fm's superblock (see helperFor).
func (fm *fuseMount) serves(m mountEntry) bool {
	return m.dev == fm.dev && m.source == fm.source && (m.fstype == "fuse" || strings.HasPrefix(m.fstype, "fuse."))
}

// live reports whether the helper still runs.
func (fm *fuseMount) live() bool {
	select {
	case <-fm.done:
		return false
	default:
		return true
	}
}

// helperOf returns the live helper that serves loop device idx, or nil.
// A helper whose process has already exited (its superblock went with
// the last fd or mount of it) is waited for, briefly and without p.mu:
// its launcher reports the exit a moment later, and the device must not
// look busy in that moment (a detached mount's fd closed, then the
// device mounted again).
func (p *Proxy) helperOf(idx int) *fuseMount {
	p.mu.Lock()
	var found *fuseMount
	for _, fm := range p.fuse {
		if fm.idx == idx && fm.live() {
			found = fm
			break
		}
	}
	p.mu.Unlock()
	if found == nil || !helperExited(found.helperPid) {
		return found
	}
	select {
	case <-found.done:
		return nil
	case <-time.After(helperExitWait):
		return found
	}
}

// helperExitWait bounds how long helperOf waits for an exited helper's
// launcher to report.
const helperExitWait = 5 * time.Second

// helperExited tells whether the helper process pid (host pid namespace)
// is gone or a zombie. pid 0 (not yet known) is not exited.
func helperExited(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := linux.ReadPidStat(pid)
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
	}
	return st.State == 'Z' || st.State == 'X'
}

// helperErrno maps what a FUSE helper printed to the errno the kernel would
// have given for the same image.
func helperErrno(msg string) unix.Errno {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "permission denied"):
		return unix.EACCES
	case strings.Contains(m, "read-only file system"):
		return unix.EROFS
	case strings.Contains(m, "no such file"), strings.Contains(m, "not found"):
		return unix.ENOENT
	case strings.Contains(m, "not a directory"):
		return unix.ENOTDIR
	case strings.Contains(m, "device or resource busy"):
		return unix.EBUSY
	}
	return unix.EINVAL // bad superblock, wrong type: what mount(2) says
}

// kernelMount mounts with the kernel on the sandbox's behalf: nosuid,
// nodev, idmapped to the sandbox's user namespace where supported, with
// file system options from the type's allow-list, nosuid, nodev and the
// atime flags locked as those of a mount the sandbox inherited, and the
// caller's ro, noexec and nosymfollow set but not locked (as on the host).
func (p *Proxy) kernelMount(c Caller, idx int, a mountArgs, log *logrus.Entry) notify.Reply {
	opts, err := KernelOptions(a.fstype, a.data)
	if err != nil {
		var oe *OptionError
		if errors.As(err, &oe) {
			log = log.WithField("option", oe.Option)
		}
		log.WithError(err).Warn("file system option refused for a kernel mount: EINVAL")
		return notify.Errno(unix.EINVAL)
	}
	a.data = opts
	if p.helperOf(idx) != nil {
		// The kernel holds a device whose superblock is another type's.
		log.Info("device served by a FUSE helper: EBUSY, as the kernel answers for a device another superblock holds")
		return notify.Errno(unix.EBUSY)
	}
	node, err := p.dev.NodePath(idx)
	if err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		return fail(err)
	}
	if !loopctl.IsLoopDevice(&st) || loopctl.Index(st.Rdev) != idx {
		return fail(unix.ENXIO)
	}
	if err := checkJournal(a.fstype, node); err != nil {
		log.WithError(err).Warn("image refused before the create")
		return fail(err) // EINVAL for an external journal, EIO for a stalled read
	}
	// The mount's source is the device as the sandbox names it, as on the
	// host: /dev/loopNpM for a partition (served by another loop device),
	// whatever the host's /dev holds.
	mnt, idmapped, err := kernelSuperblock(a, "/dev/"+p.dev.DevName(idx), st.Rdev, p.userNS)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = mnt.Close() }()
	ns, err := callerNS(c)
	if err != nil {
		return fail(err)
	}
	defer ns.Close()
	// nosuid, nodev and the atime flags locked; ro, noexec and
	// nosymfollow set before the mount is attached, not locked.
	_, set := lockedAttrs(a.flags)
	if err := nsexec.MoveLocked(ns, mnt, a.target, set); err != nil {
		return fail(err)
	}
	l := log.WithFields(logrus.Fields{"idmapped": idmapped, "options": strings.Join(a.data, ",")})
	if !idmapped {
		l = l.WithField("note", a.fstype+" cannot be idmapped: files keep their host owners (root-owned files show as nobody)")
	}
	l.Info("mounted by the kernel on the sandbox's behalf")
	return notify.Reply{}
}

// Umount serves umount2(2) of a FUSE mount, answering only after its
// helper has written everything back and exited.
func (p *Proxy) Umount(c Caller, args [6]uint64) notify.Reply {
	p.mu.Lock()
	none := len(p.fuse) == 0
	p.mu.Unlock()
	picks := p.api.hasPicks()
	if none && !picks {
		return cont
	}
	target, err := c.ReadString(args[0], pathMax)
	if err != nil {
		return cont
	}
	flags := int(int32(args[1]))
	// The mount umount2 would find: the target as the caller sees it
	// (symlinks followed unless UMOUNT_NOFOLLOW). Its mount id comes from
	// fdinfo: statx would ask the file system, and a FUSE mount of the
	// container answers EACCES to host root (allow_other stops at its
	// user namespace).
	m, ok := mountAt(c.Pid(), target, flags&unix.UMOUNT_NOFOLLOW == 0)
	if !ok {
		return cont
	}
	if picks {
		// fspick contexts loopvisor holds keep the superblock active
		// (fspick.go): they go before its mounts do, also those a lazy
		// umount of a mount above detaches with it.
		p.api.dropPicks(m.dev)
		if flags&unix.MNT_DETACH != 0 {
			p.api.dropPicksUnder(callerMounts(c.Pid()), m.point)
		}
	}
	if none {
		return cont
	}
	// Any mount of a helper's superblock: the first, a second mount of
	// the device, a bind the container made.
	fm := p.helperFor(m)
	if fm == nil {
		fm = p.adoptMount(c.Pid(), m.id) // made by the caller's fsmount (newapi.go)
	}
	if fm == nil {
		return cont
	}
	if ok, err := c.Privileged(); err != nil || !ok {
		return notify.Errno(unix.EPERM)
	}
	ns, err := callerNS(c)
	if err != nil {
		return fail(err)
	}
	defer ns.Close()
	log := p.log.WithFields(logrus.Fields{"pid": c.Pid(), "syscall": "umount2", "target": target, "helper": fm.helper})
	if err := nsexec.Umount(ns, target, flags); err != nil {
		return fail(err)
	}
	// The helper exits when its superblock goes, with the last mount of
	// it (as the kernel's superblock does): wait for it only then. A copy
	// in another mount namespace (unshare -m in the container) keeps it,
	// and the wait ends after umountWaitHelper.
	last := true
	for _, m := range callerMounts(c.Pid()) {
		if fm.serves(m) {
			last = false
		}
	}
	if !last {
		log.Info("unmounted one mount of a FUSE superblock; others remain")
		return notify.Reply{}
	}
	if flags&unix.MNT_DETACH == 0 {
		select {
		case <-fm.done:
			// Before the caller hears back: its node is dead by then.
			fm.release()
		case <-time.After(umountWaitHelper):
			log.Warn("FUSE helper still running 30s after umount")
		}
	}
	log.Info("unmounted FUSE mount; helper finished")
	return notify.Reply{}
}

// Close kills every helper of the instance and waits for them.
func (p *Proxy) Close() {
	p.api.close()
	p.mu.Lock()
	p.closed = true
	var all []*fuseMount
	for _, fm := range p.fuse {
		all = append(all, fm)
	}
	p.mu.Unlock()
	for _, fm := range all {
		_ = fm.cmd.Process.Kill()
		<-fm.done
	}
}

// MountStatus is one live FUSE mount, for `loopvisor status`.
type MountStatus struct {
	Target    string `json:"target"`
	Helper    string `json:"helper"`
	HelperPid int    `json:"helper_pid"`
}

// Status lists the live FUSE mounts and their helpers.
func (p *Proxy) Status() []MountStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []MountStatus
	for _, fm := range p.fuse {
		out = append(out, MountStatus{Target: fm.target, Helper: fm.helper, HelperPid: fm.helperPid})
	}
	return out
}
