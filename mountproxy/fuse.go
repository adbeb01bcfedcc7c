package mountproxy

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/mountinfo"
	"github.com/loopvisor/loopvisor/notify"
)

// jailDirs are the host directories a helper's jail shows (read-only); a
// helper binary must live under one of them.
var jailDirs = []string{"/usr/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"}

var (
	helperProgOnce sync.Once
	helperProg     []byte
	helperProgErr  error
)

// helperProgram is the seccomp program of every FUSE helper, built once.
func helperProgram() ([]byte, error) {
	helperProgOnce.Do(func() { helperProg, helperProgErr = notify.HelperProgram() })
	return helperProg, helperProgErr
}

// jailHelper checks that the host's helper binary is one the jail shows,
// resolving symlinks the way exec would.
func jailHelper(helper string) (string, error) {
	path, err := HelperPath(helper)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	for _, d := range jailDirs {
		if strings.HasPrefix(real, d) {
			return real, nil
		}
	}
	return "", fmt.Errorf("FUSE helper %s (%s) is outside %s: a helper must be one of the host's installed programs", helper, real, strings.Join(jailDirs, " "))
}

var (
	jailFilesMu    sync.Mutex
	jailFilesCache = map[string][]string{}
)

// dlopened are libraries a helper loads at run time, which ldd does not
// name: glibc loads libgcc_s for pthread_cancel (libfuse's multi-threaded
// loop cancels its workers at unmount; without it the helper aborts before
// it has written its data back).
var dlopened = []string{"libgcc_s.so.1"}

// jailFiles lists what a helper's jail holds of the host: the helper and
// loopvisor (fusermount in the jail), the shared libraries ldd names for
// them and the dlopened ones, each under the path it is asked for by and
// the path it resolves to. Nothing else of the host is in the jail.
//
// Lists are cached in the process and in cacheDir (see jailcache.go).
func jailFiles(helper, cacheDir string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	key := jailCacheKey(helper, exe)
	jailFilesMu.Lock()
	defer jailFilesMu.Unlock()
	if fs, ok := jailFilesCache[key]; ok {
		return fs, nil
	}
	if fs, ok := loadJailCache(cacheDir, helper, exe); ok {
		jailFilesCache[key] = fs
		return fs, nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		for _, q := range []string{p, evalOrSelf(p)} {
			if !seen[q] {
				seen[q] = true
				out = append(out, q)
			}
		}
	}
	add(helper)
	var dirs []string
	for _, bin := range []string{helper, exe} {
		libs, err := lddPaths(bin)
		if err != nil {
			return nil, fmt.Errorf("libraries of %s: %w", bin, err)
		}
		for _, l := range libs {
			add(l)
			dirs = append(dirs, filepath.Dir(l), filepath.Dir(evalOrSelf(l)))
		}
	}
	for _, name := range dlopened {
		for _, d := range dirs {
			if p := filepath.Join(d, name); fileExists(p) {
				add(p)
			}
		}
	}
	jailFilesCache[key] = out
	storeJailCache(cacheDir, helper, exe, out)
	return out, nil
}

// Prewarm makes, in the background, what the first FUSE mount of a
// process would otherwise make on its caller's time: the helpers' seccomp
// filter, execute-only copies of loopvisor and of the policy's helpers, and
// the helpers' jail file lists where the state dir's cache has them (a miss
// is left to the mount: listing runs ldd). `run` calls it at its sandbox's
// first trapped call: the sandbox's first mount then starts its helper
// about 5 ms sooner (most of it the copy of loopvisor). The copies take
// their size in memory (loopvisor's about 7 MB) for the life of the
// process, mounted or not.
func (p *Proxy) Prewarm() {
	helpers := make([]string, 0, len(p.pol.Fuse))
	for _, h := range p.pol.Fuse {
		helpers = append(helpers, h)
	}
	sort.Strings(helpers)
	go prewarm(helpers, p.pol.CacheDir)
}

// prewarm is Prewarm's background work for helpers.
func prewarm(helpers []string, cacheDir string) {
	_, _ = helperProgram()
	if f, err := execOnlyCopy("/proc/self/exe"); err == nil {
		_ = f.Close()
	}
	seen := map[string]bool{}
	for _, h := range helpers {
		path, err := jailHelper(h)
		if err != nil || seen[path] {
			continue
		}
		seen[path] = true
		warmJailFiles(path, cacheDir)
		if f, err := execOnlyCopy(path); err == nil {
			_ = f.Close()
		}
	}
}

// warmJailFiles loads helper's jail file list from cacheDir's cache into the
// process's, if the cache holds a valid one.
func warmJailFiles(helper, cacheDir string) {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	key := jailCacheKey(helper, exe)
	jailFilesMu.Lock()
	defer jailFilesMu.Unlock()
	if _, ok := jailFilesCache[key]; ok {
		return
	}
	if fs, ok := loadJailCache(cacheDir, helper, exe); ok {
		jailFilesCache[key] = fs
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func evalOrSelf(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// lddPaths returns the absolute paths of the shared objects ldd lists for
// bin (the dynamic loader included).
func lddPaths(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil, nil // static: nothing to add
		}
		return nil, err
	}
	var paths []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("%s: %s not found", bin, f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			paths = append(paths, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			paths = append(paths, f[0])
		}
	}
	return paths, nil
}

// hostRootIDs returns the host uid and gid that root of pid's user
// namespace maps to. It fails if root is not an unprivileged host id, or
// if the namespace maps host uid or gid 0 anywhere: the helper's programs
// are owned by host root, and a namespace that maps host root would own
// the helper's memory again (execonly.go).
func hostRootIDs(pid int) (int, int, error) {
	var ids [2]int
	for i, f := range []string{"uid_map", "gid_map"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + f)
		if err != nil {
			return 0, 0, err
		}
		ids[i] = -1
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) != 3 {
				continue
			}
			inside, err1 := strconv.ParseUint(fs[0], 10, 32)
			host, err2 := strconv.ParseUint(fs[1], 10, 32)
			n, err3 := strconv.ParseUint(fs[2], 10, 32)
			if err1 != nil || err2 != nil || err3 != nil {
				return 0, 0, fmt.Errorf("unreadable %s line %q", f, line)
			}
			if host == 0 && n > 0 {
				return 0, 0, fmt.Errorf("the caller's user namespace maps host id 0 (%s)", f)
			}
			if inside == 0 && n > 0 {
				ids[i] = int(host)
			}
		}
		if ids[i] <= 0 {
			return 0, 0, fmt.Errorf("root of the caller's user namespace is not an unprivileged host id (%s)", f)
		}
	}
	return ids[0], ids[1], nil
}

// nsToJoin returns the CLONE_NEW* bits of pid's namespaces (other than user
// and mount) that differ from the supervisor's: a helper joins exactly
// those (setns into a namespace one is already in is refused from inside
// a user namespace that does not own it).
func nsToJoin(pid int) (int, error) {
	var flags int
	for _, n := range []struct {
		name string
		flag int
	}{{"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS},
		{"cgroup", unix.CLONE_NEWCGROUP}, {"pid", unix.CLONE_NEWPID}, {"time", unix.CLONE_NEWTIME}} {
		var self, other unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+n.name, &self); err != nil {
			if err == unix.ENOENT {
				continue // the kernel has no such namespace
			}
			return 0, err
		}
		if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/"+n.name, &other); err != nil {
			return 0, err
		}
		if self.Ino != other.Ino || self.Dev != other.Dev {
			flags |= n.flag
		}
	}
	return flags, nil
}

// joinCgroups moves process child into every cgroup pid is in (v1
// hierarchies and the v2 one), unless pid's cgroups are the supervisor's.
func joinCgroups(pid, child int) error {
	theirs, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return err
	}
	ours, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	if string(theirs) == string(ours) {
		return nil
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(theirs)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || strings.Contains(parts[2], "..") {
			continue
		}
		key := parts[1]
		if parts[0] == "0" && key == "" {
			key = "cgroup2"
		}
		root, ok := mounts[key]
		if !ok {
			continue // a hierarchy without a mount (e.g. name=systemd elsewhere)
		}
		procs := filepath.Join(root, parts[2], "cgroup.procs")
		if err := os.WriteFile(procs, []byte(strconv.Itoa(child)), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", procs, err)
		}
	}
	return nil
}

// cgroupMounts maps each v1 hierarchy's controller list ("cpu,cpuacct",
// "name=systemd") and "cgroup2" to where the supervisor sees it mounted.
func cgroupMounts() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		_, rest, ok := strings.Cut(line, " - ")
		if len(f) < 5 || !ok || f[3] != "/" {
			continue
		}
		rf := strings.Fields(rest)
		if len(rf) < 3 {
			continue
		}
		switch rf[0] {
		case "cgroup2":
			if _, dup := out["cgroup2"]; !dup {
				out["cgroup2"] = mountinfo.Unescape(f[4])
			}
		case "cgroup":
			var ctl []string
			for _, o := range strings.Split(rf[2], ",") {
				switch o {
				case "rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime", "xattr", "clone_children":
				default:
					if !strings.HasPrefix(o, "release_agent=") {
						ctl = append(ctl, o)
					}
				}
			}
			key := strings.Join(ctl, ",")
			if _, dup := out[key]; !dup {
				out[key] = mountinfo.Unescape(f[4])
			}
		}
	}
	return out, nil
}

// limitedBuffer keeps the first max bytes written to it: a helper's stderr
// goes to the log, and a hostile image must not make it grow without end.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		b.buf = append(b.buf, p[:room]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// filledPipe returns the read end of a pipe that holds data and whose write
// end is closed: the launcher reads it to EOF. data is written before the
// launcher runs, so it must fit the pipe's buffer (E2BIG otherwise).
func filledPipe(data []byte) (*os.File, error) {
	if len(data) > 60<<10 {
		return nil, unix.E2BIG
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	_, err = w.Write(data)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// fuseAttrs maps mount(2) flags to fsmount's MOUNT_ATTR_* bits.
//
// nosuid and nodev only when asked for, as on the host: the superblock
// belongs to the container's user namespace, so device nodes in the image
// never open (SB_I_NODEV) and set-id bits count only inside that user
// namespace, whatever the mount's flags; and the container could clear
// them with a bind remount anyway (the mount is not locked: it is made in
// the container's own mount namespace).
func fuseAttrs(flags uint64) uint64 {
	var a uint64
	for _, m := range []struct{ ms, attr uint64 }{
		{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID}, {unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME}, {unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
		{unix.MS_NOSYMFOLLOW, unix.MOUNT_ATTR_NOSYMFOLLOW},
		{unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
	} {
		if flags&m.ms != 0 {
			a |= m.attr
		}
	}
	return a
}

var dumpableOnce sync.Once

// warnDumpable says once that fs.suid_dumpable=1 leaves helpers traceable:
// the kernel then lets a process that runs a program it cannot read stay
// dumpable, and the container's root could ptrace its helper again.
func warnDumpable(log *logrus.Entry) {
	dumpableOnce.Do(func() {
		if b, err := os.ReadFile("/proc/sys/fs/suid_dumpable"); err == nil && strings.TrimSpace(string(b)) == "1" {
			log.Warn("fs.suid_dumpable is 1: FUSE helpers stay traceable by their container's root; set it to 0 or 2")
		}
	})
}

// fuseMount serves a mount through a FUSE helper in a jail (fusejail.c):
// the host's helper binary, the container's namespaces and cgroups, its
// root's ids, no capabilities, the helper seccomp filter, and a mount
// made by loopvisor from the container's user namespace.
func (p *Proxy) fuseMount(c Caller, idx int, a mountArgs, log *logrus.Entry) notify.Reply {
	if !p.reserveHelper() {
		log.WithField("max_fuse", p.maxHelpers()).Warn("too many FUSE helpers in the instance: ENOSPC")
		return notify.Errno(unix.ENOSPC)
	}
	// The slot is the helper's until it exits (track), or freed here.
	reserved := true
	defer func() {
		if reserved {
			p.releaseHelper()
		}
	}()
	helper := p.pol.Fuse[a.fstype]
	path, err := jailHelper(helper)
	if err != nil {
		log.WithError(err).Error("no usable FUSE helper on the host: ENODEV")
		return notify.Errno(unix.ENODEV)
	}
	opts, err := fuseOptions(helper, a.flags, a.data)
	if err != nil {
		log.WithError(err).Warn("option not supported by the FUSE helper: EINVAL")
		return notify.Errno(unix.EINVAL)
	}
	// The kernel's get_tree_bdev: a device that already has a superblock
	// of this type gets another mount of it; otherwise the device is
	// opened (EACCES for a read-only device without MS_RDONLY) and the
	// superblock read and checked.
	if r, ok := p.secondMount(c, idx, a, log); ok {
		return r
	}
	devNode, err := p.dev.NodePath(idx)
	if err != nil {
		return fail(err)
	}
	if deviceHeld(devNode) {
		log.Info("device held by another superblock (a kernel mount): EBUSY, as the kernel answers")
		return notify.Errno(unix.EBUSY)
	} else if ro, err := deviceReadOnly(devNode); err != nil {
		return fail(err)
	} else if ro && a.flags&unix.MS_RDONLY == 0 {
		log.Info("read-only device mounted without MS_RDONLY: EACCES, as the kernel answers")
		return notify.Errno(unix.EACCES)
	}
	ic, err := checkImage(a.fstype, devNode, a.flags&unix.MS_RDONLY != 0)
	if err != nil {
		log.WithError(err).Warn("image refused as the kernel would refuse it")
		return fail(err)
	}
	if ic.forceRO {
		log.Info("image has the read-only feature: mounted read-only, as the kernel does")
		a.flags |= unix.MS_RDONLY
		if opts, err = fuseOptions(helper, a.flags, a.data); err != nil {
			return notify.Errno(unix.EINVAL)
		}
	}
	if ic.blockSize > 0 {
		// Held until the helper has the device open (or failed).
		defer matchBlockSize(devNode, ic.blockSize, log)()
	}
	files, err := jailFiles(path, p.pol.CacheDir)
	if err != nil {
		log.WithError(err).Error("cannot list the helper's files: ENODEV")
		return notify.Errno(unix.ENODEV)
	}
	prog, err := helperProgram()
	if err != nil {
		log.WithError(err).Error("cannot build the helper's seccomp filter")
		return notify.Errno(unix.EIO)
	}
	warnDumpable(log)
	if _, _, err := hostRootIDs(c.Pid()); err != nil {
		log.WithError(err).Warn("caller's user namespace unusable for a helper: EPERM")
		return notify.Errno(unix.EPERM)
	}
	nsflags, err := nsToJoin(c.Pid())
	if err != nil {
		return fail(err)
	}
	readOnly := a.flags&unix.MS_RDONLY != 0
	// The helper's node is the instance's, revoked when the helper exits
	// and, like every node of idx, before the device leaves the instance:
	// the sandbox can reach it through /proc/HELPER/root while the helper
	// runs, and must not keep it.
	node, release, err := p.dev.HelperNode(idx, readOnly)
	if err != nil {
		log.WithError(err).Error("cannot make the helper's device node")
		return notify.Errno(unix.EIO)
	}
	tracked := false
	defer func() {
		if !tracked {
			release()
		}
	}()
	defer func() { _ = node.Close() }()
	fuseNode, err := p.dev.FuseNode()
	if err != nil {
		log.WithError(err).Error("cannot make the helper's /dev/fuse node")
		return notify.Errno(unix.EIO)
	}
	defer func() { _ = fuseNode.Close() }()
	// Execute-only copies: the helper and fusermount are then the
	// host's, not the container's (execonly.go).
	helperX, err := execOnlyCopy(path)
	if err != nil {
		log.WithError(err).Error("cannot copy the FUSE helper: ENODEV")
		return notify.Errno(unix.ENODEV)
	}
	defer func() { _ = helperX.Close() }()
	// By /proc/self/exe: it opens even when the binary was replaced on
	// disk (an upgrade) while the supervisor runs.
	selfX, err := execOnlyCopy("/proc/self/exe")
	if err != nil {
		log.WithError(err).Error("cannot copy loopvisor for the helper's fusermount: EIO")
		return notify.Errno(unix.EIO)
	}
	defer func() { _ = selfX.Close() }()
	ns, err := callerNS(c)
	if err != nil {
		return fail(err)
	}
	defer ns.Close()

	devName := "loop" + strconv.Itoa(idx)
	hargv := []string{path, "/dev/" + devName, "/mnt", "-f"}
	if baseName(helper) == "fuse2fs" && readOnly {
		// Single-threaded fuse2fs uses 20-28% less CPU per read (make
		// bench); it writes 10-14% slower, so only for read-only mounts.
		hargv = append(hargv, "-s")
	}
	// The mount's source is the device as the sandbox names it (a
	// partition's node is loopNpM), as the kernel shows a block device.
	source := "/dev/" + p.dev.DevName(idx)
	hargv = append(hargv, "-o", opts+",fsname="+source)
	ro := "0"
	if readOnly {
		ro = "1"
	}
	args := append([]string{strconv.Itoa(nsflags), a.target, devName, a.fstype, source,
		strconv.FormatUint(fuseAttrs(a.flags), 10), ro, "--"}, hargv...)

	progR, err := filledPipe(prog)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = progR.Close() }()
	filesR, err := filledPipe([]byte(strings.Join(files, "\n") + "\n"))
	if err != nil {
		return fail(err)
	}
	defer func() { _ = filesR.Close() }()
	statR, statW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		_ = statR.Close()
		_ = statW.Close()
		return fail(err)
	}
	defer func() { _ = ctlW.Close() }()

	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args = append([]string{"loopvisor-fusejail"}, args...)
	cmd.Env = []string{"_LOOPVISOR_FUSEJAIL=1"}
	cmd.ExtraFiles = []*os.File{ns.PidFD, ns.Root, ns.Cwd, node, fuseNode, progR, statW, ctlR, filesR, helperX, selfX}
	if a.mntSock != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, a.mntSock) // fd 14
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if p.KeepHelpers {
		cmd.Env = append(cmd.Env, "_LOOPVISOR_NSEXEC_KEEP=1")
		cmd.SysProcAttr.Pdeathsig = 0
	}
	stderr := &limitedBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	// A helper inherits the stderr pipe (for its messages); a container
	// may take it (pidfd_getfd) and hold it open: Wait must not wait for
	// that.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		_ = statR.Close()
		_ = statW.Close()
		_ = ctlR.Close()
		return fail(err)
	}
	_ = statW.Close()
	_ = ctlR.Close()
	fm := &fuseMount{target: a.target, helper: helper, cmd: cmd, done: make(chan struct{}),
		idx: idx, source: source, fstype: a.fstype, readOnly: readOnly}
	type status struct {
		line string
		err  error
	}
	lines := make(chan status, 1)
	// The launcher keeps its status pipe open as long as it (and so the
	// helper) lives. Reading it to EOF parks a goroutine in the netpoller;
	// only then is the launcher reaped, so a live helper costs no OS
	// thread (a Wait per helper would hold one each).
	go func() {
		r := bufio.NewReader(statR)
		l, err := r.ReadString('\n')
		lines <- status{strings.TrimSpace(l), err}
		_, _ = io.Copy(io.Discard, r)
		_ = statR.Close()
		_ = cmd.Wait()
		close(fm.done)
	}()
	abort := func() {
		_ = cmd.Process.Kill()
		<-fm.done
	}
	if err := joinCgroups(c.Pid(), cmd.Process.Pid); err != nil {
		abort()
		if !c.Valid() {
			return fail(notify.ErrStale) // the caller died: nobody to answer
		}
		log.WithError(err).Error("cannot move the FUSE helper into the container's cgroups: EIO")
		return notify.Errno(unix.EIO)
	}
	if _, err := ctlW.Write([]byte{1}); err != nil {
		abort()
		return fail(err)
	}
	var st status
	select {
	case st = <-lines:
	case <-time.After(p.pol.Timeout):
		abort()
		log.WithFields(logrus.Fields{"timeout": p.pol.Timeout, "stderr": stderr.String()}).Error("FUSE helper did not come up in time; killed: ETIMEDOUT")
		return notify.Errno(unix.ETIMEDOUT)
	}
	f := strings.Fields(st.line)
	if len(f) == 4 && f[0] == "mounted" {
		id, err1 := strconv.ParseUint(f[1], 10, 64)
		hpid, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil {
			if a.mntSock != nil {
				id = p.api.unattached(idx) // no mount yet: the caller's fsmount makes it
			}
			fm.mntID, fm.helperPid, fm.release, fm.dev = id, hpid, release, f[3]
			tracked, reserved = true, false
			return p.track(fm, log.WithFields(logrus.Fields{"helper": helper, "options": opts, "helper_pid": hpid}))
		}
	}
	abort()
	e := unix.Errno(unix.EIO)
	step := st.line
	if len(f) >= 3 && f[0] == "error" {
		if n, err := strconv.Atoi(f[1]); err == nil && n > 0 {
			e = unix.Errno(n)
		}
		step = strings.Join(f[2:], " ")
		if step == "helper did not serve the mount" || step == "exec helper" {
			e = helperErrno(stderr.String())
		}
	}
	if !c.Valid() {
		return fail(notify.ErrStale) // the caller died mid-mount (its namespaces went with it)
	}
	log.WithFields(logrus.Fields{"helper": helper, "step": step, "stderr": stderr.String(), "errno": e.Error()}).Warn("FUSE mount failed")
	return notify.Errno(e)
}

func (p *Proxy) maxHelpers() int {
	if p.pol.MaxHelpers > 0 {
		return p.pol.MaxHelpers
	}
	return DefaultMaxHelpers
}

// reserveHelper takes a helper slot of the instance, if one is free.
func (p *Proxy) reserveHelper() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.helpers >= p.maxHelpers() {
		return false
	}
	p.helpers++
	return true
}

func (p *Proxy) releaseHelper() {
	p.mu.Lock()
	p.helpers--
	p.mu.Unlock()
}

// track records a live FUSE mount until its helper exits; the helper's
// slot is freed then.
func (p *Proxy) track(fm *fuseMount, log *logrus.Entry) notify.Reply {
	p.mu.Lock()
	if p.closed {
		p.helpers--
		p.mu.Unlock()
		_ = fm.cmd.Process.Kill()
		<-fm.done
		fm.release()
		return notify.Errno(unix.ENODEV)
	}
	p.fuse[fm.mntID] = fm
	p.mu.Unlock()
	go func() {
		<-fm.done
		fm.release()
		p.mu.Lock()
		delete(p.fuse, fm.mntID)
		p.helpers--
		p.mu.Unlock()
		log.Info("FUSE helper exited")
	}()
	log.Info("mounted through a jailed FUSE helper")
	return notify.Reply{}
}
