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

// ErrNoV1 says the host has no cgroup v1 devices hierarchy (cgroup v2
// only); Open then does nothing and the runtime's device rules apply.
var ErrNoV1 = errors.New("no cgroup v1 devices hierarchy (cgroup v2 device programs are not handled)")

// ErrShared says the container is in the caller's own devices cgroup
// (a runtime run without cgroups): granting there would grant the caller
// and whatever else runs in it, so Open refuses.
var ErrShared = errors.New("the container is in the agent's own devices cgroup (runtime without cgroups?); nothing is granted there")

// Cgroup is the v1 devices cgroup of one container.
type Cgroup struct {
	Path string // in the devices hierarchy, as the host sees it

	mu      sync.Mutex
	dir     *os.File       // O_PATH|O_DIRECTORY; nil once closed
	granted map[Device]int // devices Grant added to devices.allow, with their counts
	covered map[Device]int // devices the runtime's rules already allowed, with their counts
}

// Open returns the devices cgroup of process pid, as the host sees it.
// alive reports whether pid is still the process the caller identified
// (its pidfd): what was read through /proc/PID counts only then.
//
// Preconditions: pid is a container's init the caller identified by
// kernel objects; the caller runs in the host's cgroup and mount
// namespaces (or in namespaces whose cgroupfs mount is its cgroup
// namespace's root).
func Open(pid int, alive func() bool) (*Cgroup, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	root, err := devicesMount(mi)
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
	unsafePath, err := devicesPath(pc)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if own, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if p, err := devicesPath(own); err == nil && p == unsafePath {
			return nil, ErrShared
		}
	}
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
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: root + "/" + rel, Err: err}
	}
	dir := os.NewFile(uintptr(fd), root+unsafePath)
	c := &Cgroup{Path: unsafePath, dir: dir, granted: map[Device]int{}, covered: map[Device]int{}}
	// The path came from text the kernel wrote but whose names a
	// container with a writable cgroupfs could choose; the kernel's
	// cgroup.procs of what we opened must list pid.
	procs, err := c.read("cgroup.procs")
	if err == nil && !alive() {
		err = fmt.Errorf("process %d exited", pid)
	}
	if err == nil && !listsPid(procs, pid) {
		err = fmt.Errorf("process %d is not in devices cgroup %s", pid, unsafePath)
	}
	if err != nil {
		_ = dir.Close()
		return nil, err
	}
	return c, nil
}

func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, path, how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// read reads a file of the cgroup directory.
func (c *Cgroup) read(name string) ([]byte, error) {
	fd, err := unix.Openat(int(c.dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: c.dir.Name() + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() { _ = f.Close() }()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// write writes one rule to devices.allow or devices.deny.
func (c *Cgroup) write(name, rule string) error {
	fd, err := unix.Openat(int(c.dir.Fd()), name, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: c.dir.Name() + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.WriteString(rule)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s/%s %q: %w", c.dir.Name(), name, rule, err)
	}
	return nil
}

// Grant lets the cgroup's processes read and write d. It reports whether
// it wrote a rule (false: the runtime's rules already allow it).
func (c *Cgroup) Grant(d Device) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == nil {
		return false, os.ErrClosed
	}
	if c.granted[d] > 0 {
		c.granted[d]++
		return false, nil
	}
	if c.covered[d] > 0 {
		c.covered[d]++
		return false, nil
	}
	list, err := c.read("devices.list")
	if err != nil {
		return false, err
	}
	if allows(parseList(list), d, access) {
		c.covered[d]++
		return false, nil
	}
	if err := c.write("devices.allow", d.String()+" "+access); err != nil {
		return false, err
	}
	c.granted[d]++
	return true, nil
}

// Revoke undoes one Grant of d. It reports whether it wrote a rule (only
// the last Revoke of a device Grant allowed does). After Close it does
// nothing: Close denied everything granted.
func (c *Cgroup) Revoke(d Device) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == nil {
		return false, nil
	}
	if c.covered[d] > 0 {
		c.covered[d]--
		if c.covered[d] == 0 {
			delete(c.covered, d)
		}
		return false, nil
	}
	if c.granted[d] == 0 {
		return false, nil
	}
	c.granted[d]--
	if c.granted[d] > 0 {
		return false, nil
	}
	delete(c.granted, d)
	return true, c.write("devices.deny", d.String()+" "+access)
}

// Close revokes every device still granted and closes the directory. A
// cgroup that is gone already (the runtime removed it) is not an error.
func (c *Cgroup) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == nil {
		return nil
	}
	var errs []error
	for d := range c.granted {
		if err := c.write("devices.deny", d.String()+" "+access); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	c.granted = nil
	c.covered = nil
	errs = append(errs, c.dir.Close())
	c.dir = nil
	return errors.Join(errs...)
}

// devicesMount returns the mount point of the v1 devices hierarchy's
// root in mountinfo.
func devicesMount(mountinfo []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
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
		if sep < 5 || len(f) < sep+4 || f[sep+1] != "cgroup" || f[3] != "/" {
			continue
		}
		for _, o := range strings.Split(f[sep+3], ",") {
			if o == "devices" {
				return unescapeMount(f[4]), nil
			}
		}
	}
	return "", ErrNoV1
}

// unescapeMount undoes mountinfo's octal escapes (\040 and friends).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
	switch {
	case n == 0:
		return "", errors.New("no devices cgroup in /proc/PID/cgroup")
	case n > 1:
		return "", errors.New("more than one devices line in /proc/PID/cgroup")
	case !strings.HasPrefix(path, "/"):
		return "", fmt.Errorf("devices cgroup path %q is not absolute (another cgroup namespace?)", path)
	}
	for _, el := range strings.Split(path, "/") {
		if el == ".." {
			return "", fmt.Errorf("devices cgroup path %q leaves the hierarchy", path)
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
