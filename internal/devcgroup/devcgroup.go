package devcgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/mountinfo"
)

// Device is one device as the device cgroup names it.
type Device struct {
	Type         byte // 'b' or 'c'
	Major, Minor uint32
}

func (d Device) String() string { return fmt.Sprintf("%c %d:%d", d.Type, d.Major, d.Minor) }

// FromStat returns the device a node's stat describes.
func FromStat(st *unix.Stat_t) (Device, error) {
	var t byte
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		t = 'b'
	case unix.S_IFCHR:
		t = 'c'
	default:
		return Device{}, fmt.Errorf("not a device node (mode %#o)", st.Mode)
	}
	return Device{Type: t, Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev))}, nil
}

// access is what Grant allows: read and write. Never "m": mknod in a
// user namespace fails anyway, and nothing of loopvisor needs it.
const access = "rw"

// ErrNoCgroup says the host has neither a cgroup v1 devices hierarchy nor a
// cgroup v2 one the agent can see; Open then does nothing and the
// runtime's device rules apply.
var ErrNoCgroup = errors.New("no cgroup v1 devices hierarchy and no cgroup v2 hierarchy")

// ErrShared says the container is in the caller's own cgroups (a runtime
// run without cgroups): granting there would grant the caller and
// whatever else runs in it, so Open refuses.
var ErrShared = errors.New("the container is in the agent's own device cgroups (runtime without cgroups?); nothing is granted there")

// Cgroup is the device cgroup of one container: its v1 devices cgroup,
// its v2 cgroup, or both (hybrid hosts check both).
type Cgroup struct {
	Path string // as the host sees it: "v1:/x" and/or "v2:/x"

	mu        sync.Mutex
	closed    bool
	v1        *os.File        // O_PATH|O_DIRECTORY in the devices hierarchy, or nil
	v2        *bpfGrant       // or nil
	refs      map[Device]int  // grants per device
	v1Granted map[Device]bool // written to devices.allow (not already allowed)
	v2Granted map[Device]bool // in the agent's BPF map
}

// Open returns the device cgroups of process pid, as the host sees them.
// alive reports whether pid is still the process the caller identified
// (its pidfd): what was read through /proc/PID counts only then.
//
// Preconditions: pid is a container's init the caller identified by
// kernel objects; the caller runs in the host's cgroup and mount
// namespaces (or in namespaces whose cgroupfs mounts are its cgroup
// namespace's root).
func Open(pid int, alive func() bool) (*Cgroup, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	pc, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	if !alive() {
		return nil, fmt.Errorf("process %d exited", pid)
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	c := &Cgroup{refs: map[Device]int{}, v1Granted: map[Device]bool{}, v2Granted: map[Device]bool{}}
	var paths []string
	shared := false
	if root, err := devicesMount(mi); err == nil {
		unsafePath, err := devicesPath(pc)
		if err != nil {
			return nil, fmt.Errorf("process %d: %w", pid, err)
		}
		if p, err := devicesPath(own); err == nil && p == unsafePath {
			shared = true
		} else {
			dir, err := openBeneath(root, unsafePath, unix.O_PATH, pid, alive)
			if err != nil {
				return nil, err
			}
			c.v1 = dir
			paths = append(paths, "v1:"+unsafePath)
		}
	}
	if root, err := unifiedMount(mi); err == nil {
		unsafePath, err := unifiedPath(pc)
		if err != nil {
			c.closeFiles()
			return nil, fmt.Errorf("process %d: %w", pid, err)
		}
		if p, err := unifiedPath(own); err == nil && p == unsafePath {
			shared = true
		} else {
			dir, err := openBeneath(root, unsafePath, unix.O_RDONLY, pid, alive)
			if err != nil {
				c.closeFiles()
				return nil, err
			}
			c.v2 = &bpfGrant{dir: dir}
			paths = append(paths, "v2:"+unsafePath)
		}
	}
	if c.v1 == nil && c.v2 == nil {
		if shared {
			return nil, ErrShared
		}
		return nil, ErrNoCgroup
	}
	c.Path = strings.Join(paths, " ")
	return c, nil
}

// openBeneath opens the cgroup directory unsafePath below the hierarchy
// mounted at root, without following symlinks or leaving the mount, and
// checks that the kernel's cgroup.procs there lists pid: the path came
// from text the kernel wrote but whose names a container with a writable
// cgroupfs could choose.
func openBeneath(root, unsafePath string, flags, pid int, alive func() bool) (*os.File, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer func() { _ = unix.Close(rfd) }()
	rel := strings.TrimPrefix(unsafePath, "/")
	if rel == "" {
		rel = "."
	}
	fd, err := openat2(rfd, rel, &unix.OpenHow{
		Flags:   uint64(flags) | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: root + "/" + rel, Err: err}
	}
	dir := os.NewFile(uintptr(fd), root+unsafePath)
	procs, err := readAt(dir, "cgroup.procs")
	if err == nil && !alive() {
		err = fmt.Errorf("process %d exited", pid)
	}
	if err == nil && !listsPid(procs, pid) {
		err = fmt.Errorf("process %d is not in cgroup %s", pid, dir.Name())
	}
	if err != nil {
		_ = dir.Close()
		return nil, err
	}
	return dir, nil
}

func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, path, how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// readAt reads a file of a cgroup directory.
func readAt(dir *os.File, name string) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir.Name() + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() { _ = f.Close() }()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// writeAt writes one rule to devices.allow or devices.deny of dir.
func writeAt(dir *os.File, name, rule string) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir.Name() + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.WriteString(rule)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s/%s %q: %w", dir.Name(), name, rule, err)
	}
	return nil
}

// Procs lists the processes in the cgroup (v1 and v2 directories) now.
// Every process there gets what Grant allows: a caller granting for less
// than all of them checks who they are.
func (c *Cgroup) Procs() ([]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dirs []*os.File
	if c.v1 != nil {
		dirs = append(dirs, c.v1)
	}
	if c.v2 != nil && c.v2.dir != nil {
		dirs = append(dirs, c.v2.dir)
	}
	var pids []int
	for _, dir := range dirs {
		b, err := readAt(dir, "cgroup.procs")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Fields(string(b)) {
			p, err := strconv.Atoi(l)
			if err != nil {
				return nil, fmt.Errorf("%s/cgroup.procs: %q", dir.Name(), l)
			}
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Grant lets the cgroup's processes read and write d. It reports whether
// it changed anything (false: the runtime's rules already allow it, or a
// previous Grant of d stands).
func (c *Cgroup) Grant(d Device) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, os.ErrClosed
	}
	c.refs[d]++
	if c.refs[d] > 1 {
		return false, nil
	}
	wrote := false
	var errs []error
	if c.v1 != nil {
		list, err := readAt(c.v1, "devices.list")
		switch {
		case err != nil:
			errs = append(errs, err)
		case allows(parseList(list), d, access):
		default:
			if err := writeAt(c.v1, "devices.allow", d.String()+" "+access); err != nil {
				errs = append(errs, err)
			} else {
				c.v1Granted[d] = true
				wrote = true
			}
		}
	}
	if c.v2 != nil {
		ok, err := c.v2.grant(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroup v2 %s: %w", c.v2.dir.Name(), err))
		} else if ok {
			c.v2Granted[d] = true
			wrote = true
		}
	}
	return wrote, errors.Join(errs...)
}

// Revoke undoes one Grant of d. It reports whether it changed anything
// (only the last Revoke of a device a Grant allowed does). After Close it
// does nothing: Close took everything back.
func (c *Cgroup) Revoke(d Device) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.refs[d] == 0 {
		return false, nil
	}
	c.refs[d]--
	if c.refs[d] > 0 {
		return false, nil
	}
	delete(c.refs, d)
	return c.undo(d)
}

// undo takes back what Grant did for d. Preconditions: c.mu held.
func (c *Cgroup) undo(d Device) (bool, error) {
	wrote := false
	var errs []error
	if c.v1Granted[d] {
		delete(c.v1Granted, d)
		wrote = true
		if err := writeAt(c.v1, "devices.deny", d.String()+" "+access); err != nil {
			errs = append(errs, err)
		}
	}
	if c.v2Granted[d] {
		delete(c.v2Granted, d)
		wrote = true
		if err := c.v2.revoke(d); err != nil {
			errs = append(errs, err)
		}
	}
	return wrote, errors.Join(errs...)
}

// Close takes back everything still granted (v1: devices.deny; v2: the
// runtime's program goes back in place of the agent's) and closes the
// directories. A cgroup that is gone already (the runtime removed it) is
// not an error.
func (c *Cgroup) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for d := range c.v1Granted {
		if err := writeAt(c.v1, "devices.deny", d.String()+" "+access); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	if c.v2 != nil {
		if err := c.v2.restore(); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	c.closeFiles()
	return errors.Join(errs...)
}

func gone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func (c *Cgroup) closeFiles() {
	if c.v1 != nil {
		_ = c.v1.Close()
		c.v1 = nil
	}
	if c.v2 != nil && c.v2.dir != nil && !c.closed {
		_ = c.v2.dir.Close()
	}
	c.v2 = nil
}

// unifiedMount returns where the cgroup v2 hierarchy's root is mounted
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).
func unifiedMount(mountinfo []byte) (string, error) {
	for _, f := range mountFields(mountinfo) {
		if f.fstype == "cgroup2" && f.root == "/" {
			return f.point, nil
		}
	}
	return "", ErrNoCgroup
}

// unifiedPath returns the v2 path ("0::PATH") in /proc/PID/cgroup.
func unifiedPath(procCgroup []byte) (string, error) {
	var path string
	n := 0
	for _, l := range strings.Split(string(procCgroup), "\n") {
		if strings.HasPrefix(l, "0::") {
			path = l[3:]
			n++
		}
	}
	return checkPath(path, n, "cgroup v2")
}

// devicesMount returns the mount point of the v1 devices hierarchy's
// root in mountinfo.
func devicesMount(mountinfo []byte) (string, error) {
	for _, f := range mountFields(mountinfo) {
		if f.fstype != "cgroup" || f.root != "/" {
			continue
		}
		for _, o := range strings.Split(f.super, ",") {
			if o == "devices" {
				return f.point, nil
			}
		}
	}
	return "", ErrNoCgroup
}

// mountEntry is what this package reads of one mountinfo line.
type mountEntry struct{ root, point, fstype, super string }

func mountFields(text []byte) []mountEntry {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(f) < sep+4 {
			continue
		}
		out = append(out, mountEntry{root: mountinfo.Unescape(f[3]), point: mountinfo.Unescape(f[4]), fstype: f[sep+1], super: f[sep+3]})
	}
	return out
}

// devicesPath returns the devices hierarchy's path in /proc/PID/cgroup.
// More than one devices line (a cgroup name with a newline in it) is
// refused rather than guessed at.
func devicesPath(procCgroup []byte) (string, error) {
	var path string
	n := 0
	for _, l := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			if ctl == "devices" {
				path = parts[2]
				n++
			}
		}
	}
	return checkPath(path, n, "devices")
}

// checkPath accepts the one absolute path without ".." found n times.
func checkPath(path string, n int, what string) (string, error) {
	switch {
	case n == 0:
		return "", fmt.Errorf("no %s cgroup in /proc/PID/cgroup", what)
	case n > 1:
		return "", fmt.Errorf("more than one %s line in /proc/PID/cgroup", what)
	case !strings.HasPrefix(path, "/"):
		return "", fmt.Errorf("%s cgroup path %q is not absolute (another cgroup namespace?)", what, path)
	}
	for _, el := range strings.Split(path, "/") {
		if el == ".." {
			return "", fmt.Errorf("%s cgroup path %q leaves the hierarchy", what, path)
		}
	}
	return path, nil
}

// rule is one line of devices.list: "TYPE MAJOR:MINOR ACCESS", '*' for
// any major or minor (-1 here), type 'a' for any type.
type rule struct {
	typ          byte
	major, minor int64
	access       string
}

func parseList(list []byte) []rule {
	var out []rule
	for _, l := range strings.Split(string(list), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || len(f[0]) != 1 {
			continue
		}
		mm := strings.SplitN(f[1], ":", 2)
		if len(mm) != 2 {
			continue
		}
		num := func(s string) (int64, bool) {
			if s == "*" {
				return -1, true
			}
			n, err := strconv.ParseInt(s, 10, 64)
			return n, err == nil && n >= 0
		}
		ma, ok1 := num(mm[0])
		mi, ok2 := num(mm[1])
		if !ok1 || !ok2 {
			continue
		}
		out = append(out, rule{typ: f[0][0], major: ma, minor: mi, access: f[2]})
	}
	return out
}

// allows reports whether one rule of a whitelist allows every access in
// want to d. (devices.list of a cgroup whose default is allow shows
// exactly "a *:* rwm".)
func allows(rules []rule, d Device, want string) bool {
	for _, r := range rules {
		if r.typ != 'a' && r.typ != d.Type {
			continue
		}
		if (r.major != -1 && r.major != int64(d.Major)) || (r.minor != -1 && r.minor != int64(d.Minor)) {
			continue
		}
		ok := true
		for _, a := range want {
			if !strings.ContainsRune(r.access, a) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// listsPid reports whether cgroup.procs lists pid.
func listsPid(procs []byte, pid int) bool {
	p := strconv.Itoa(pid)
	for _, l := range strings.Split(string(procs), "\n") {
		if strings.TrimSpace(l) == p {
			return true
		}
	}
	return false
}
