package supervisor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// A container that an unprivileged host user hands the agent (the user
// socket) is served only if kernel objects say it is that user's: this
// file holds those checks. Nothing in the runtime's message is believed:
// its pid only says where to look.

// Peer is who connected to the user socket, in the kernel's words
// (SO_PEERCRED at connect time; SO_PEERPIDFD names the same process without
// the pid's reuse race).
type Peer struct {
	UID, GID int
	Pid      int
	PidFD    int // -1 if the kernel has no SO_PEERPIDFD
	Name     string
	uids     []idRange // host uids the user may map: its own and /etc/subuid
	gids     []idRange
}

// idRange is [Start, Start+Count) of host ids.
type idRange struct{ Start, Count uint64 }

func (r idRange) contains(start, count uint64) bool {
	return start >= r.Start && count <= r.Count && start-r.Start <= r.Count-count
}

// SubIDFiles are where the users' subordinate id ranges are read from
// (tests point them elsewhere).
var SubIDFiles = struct{ UID, GID string }{"/etc/subuid", "/etc/subgid"}

// peerOf reads the credentials of conn's peer from the kernel and the
// ranges its user may map.
func peerOf(fd int) (*Peer, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_PEERCRED", err)
	}
	p := &Peer{UID: int(cred.Uid), GID: int(cred.Gid), Pid: int(cred.Pid), PidFD: -1}
	if pfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
		p.PidFD = pfd
		unix.CloseOnExec(pfd)
	}
	// A process in a user namespace shows as the host id its uid maps to,
	// one of its user's sub ids: the user is whoever created the
	// outermost of its namespaces, or each of 65536 sub ids would be a
	// user of its own with limits of its own.
	owner, err := outermostOwner(p.Pid, p.PidFD)
	if err != nil {
		p.Close()
		return nil, err
	}
	if owner >= 0 && owner != p.UID {
		if owner == 0 {
			p.Close()
			return nil, refuse("the peer (uid %d) is in a user namespace host root created; root's runtimes use the root socket", p.UID)
		}
		p.UID = owner
		if u, err := user.LookupId(strconv.Itoa(owner)); err == nil {
			if g, err := strconv.Atoi(u.Gid); err == nil {
				p.GID = g
			}
		}
	}
	p.Name = strconv.Itoa(p.UID)
	gids := []idRange{{uint64(p.GID), 1}}
	if u, err := user.LookupId(p.Name); err == nil {
		p.Name = u.Username
		if g, err := strconv.Atoi(u.Gid); err == nil && g != p.GID {
			gids = append(gids, idRange{uint64(g), 1})
		}
	}
	p.uids = append([]idRange{{uint64(p.UID), 1}}, subIDRanges(SubIDFiles.UID, p.Name, p.UID)...)
	p.gids = append(gids, subIDRanges(SubIDFiles.GID, p.Name, p.UID)...)
	return p, nil
}

// outermostOwner returns the host uid that created the outermost user
// namespace (below the initial one) of process pid, or -1 if pid is in the
// initial user namespace (its SO_PEERCRED uid is then its own).
func outermostOwner(pid, pidfd int) (int, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, refuse("peer %d: %v", pid, err)
	}
	defer func() { closeFD(fd) }()
	if pidfd >= 0 && !pidfdAlive(pidfd) {
		return -1, refuse("peer %d exited", pid)
	}
	initial, err := initialUserNS()
	if err != nil {
		return -1, err
	}
	owner := -1
	for depth := 0; depth <= maxUserNSDepth; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return -1, err
		}
		if st.Ino == initial.Ino && st.Dev == initial.Dev {
			return owner, nil
		}
		if owner, err = nsOwnerUID(fd); err != nil {
			return -1, err
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		if err != nil {
			return -1, refuse("peer %d: its user namespace is not below the agent's (%v)", pid, err)
		}
		unix.CloseOnExec(parent)
		closeFD(fd)
		fd = parent
	}
	return -1, refuse("peer %d: user namespaces nested deeper than the kernel allows", pid)
}

// Close releases the peer's pidfd.
func (p *Peer) Close() { closeFD(p.PidFD); p.PidFD = -1 }

// subIDRanges returns every range of file (/etc/subuid format) that names
// user by name or by uid, as newuidmap accepts them.
func subIDRanges(file, name string, uid int) []idRange {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []idRange
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != name && parts[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		n, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil || n == 0 || start+n > 1<<32-1 {
			continue
		}
		out = append(out, idRange{start, n})
	}
	return out
}

// parseIDMap parses a uid_map or gid_map text as the initial user
// namespace reads it: "inside outside count" lines, outside being host ids.
func parseIDMap(text string) ([]idRange, error) {
	var out []idRange
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("malformed id map line %q", line)
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		n, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed id map line %q", line)
		}
		out = append(out, idRange{start, n})
	}
	return out, nil
}

// within reports the first range of m not inside one of allowed, or ok.
func within(m, allowed []idRange) (idRange, bool) {
	for _, r := range m {
		ok := false
		for _, a := range allowed {
			// Host root is never the user's, whatever a sub-id file says.
			if a.contains(r.Start, r.Count) && r.Start != 0 {
				ok = true
				break
			}
		}
		if !ok {
			return r, false
		}
	}
	return idRange{}, true
}

// ErrNotYours is the class of every refusal of a user's container: it is
// not in a user namespace that user owns, or maps ids that are not the
// user's.
var ErrNotYours = errors.New("not the connecting user's container")

// refusal is an ErrNotYours with the reason a log line shows.
type refusal struct{ why string }

func (r *refusal) Error() string        { return r.why }
func (r *refusal) Is(target error) bool { return target == ErrNotYours }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// verifyOwned checks that process pid belongs to peer: its user namespace
// is, or descends from, one owned by peer.UID (NS_GET_OWNER_UID, walking
// NS_GET_PARENT, never past the initial namespace), so is the user
// namespace that owns its mount namespace (never the host's mount
// namespace, where the agent would otherwise mount for it), and every host
// uid and gid its namespace maps is peer's own or in its /etc/subuid or
// /etc/subgid ranges. It returns an fd of the verified user namespace (the
// caller closes it; holding it keeps the namespace, and so its inode
// number, alive) and the inode.
//
// What it proves: the pidfd is taken first and checked alive after every
// /proc read, so the namespace and maps read are those of the process the
// pidfd names, not of a process that reused the pid.
func verifyOwned(peer *Peer, pid int) (*os.File, uint64, error) {
	if pid <= 0 {
		return nil, 0, refuse("the message names no process (pid %d)", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, 0, refuse("process %d: pidfd_open: %v", pid, err)
	}
	defer closeFD(pidfd)
	ns, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/user")
	if err != nil {
		return nil, 0, refuse("process %d: %v", pid, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = ns.Close()
		}
	}()
	mnt, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err != nil {
		return nil, 0, refuse("process %d: %v", pid, err)
	}
	defer func() { _ = mnt.Close() }()
	uidMap, err1 := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/uid_map")
	gidMap, err2 := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/gid_map")
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, refuse("process %d: %v", pid, err)
	}
	if !pidfdAlive(pidfd) {
		return nil, 0, errGone
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return nil, 0, err
	}
	if err := ownedBy(ns, peer.UID); err != nil {
		return nil, 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// The agent mounts in the container's mount namespace (nodes, FUSE
	// mounts): it must be one the user could change itself, never the
	// host's.
	mntOwner, err := unix.IoctlRetInt(int(mnt.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return nil, 0, os.NewSyscallError("ioctl NS_GET_USERNS", err)
	}
	mo := os.NewFile(uintptr(mntOwner), "mnt-owner")
	err = ownedBy(mo, peer.UID)
	_ = mo.Close()
	if err != nil {
		return nil, 0, refuse("process %d: its mount namespace is not one of the user's: %v", pid, err)
	}
	for _, m := range []struct {
		what    string
		text    []byte
		allowed []idRange
	}{{"uid", uidMap, peer.uids}, {"gid", gidMap, peer.gids}} {
		ranges, err := parseIDMap(string(m.text))
		if err != nil {
			return nil, 0, refuse("process %d: %v", pid, err)
		}
		if len(ranges) == 0 {
			return nil, 0, refuse("process %d: its user namespace has no %s map yet", pid, m.what)
		}
		if r, fine := within(ranges, m.allowed); !fine {
			return nil, 0, refuse("process %d: its user namespace maps host %ss %d-%d, which are not user %s's own %s nor in its sub%s ranges",
				pid, m.what, r.Start, r.Start+r.Count-1, peer.Name, m.what, m.what)
		}
	}
	ok = true
	return ns, st.Ino, nil
}

// maxUserNSDepth is the kernel's nesting limit of user namespaces.
const maxUserNSDepth = 33

// ownedBy checks that user namespace ns, or one of its ancestors below the
// initial one, is owned by host uid uid. ns itself is not closed.
func ownedBy(ns *os.File, uid int) error {
	initial, err := initialUserNS()
	if err != nil {
		return err
	}
	fd := int(ns.Fd())
	own := false // whether fd is ours to close
	defer func() {
		if own {
			closeFD(fd)
		}
	}()
	for depth := 0; depth < maxUserNSDepth; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Ino == initial.Ino && st.Dev == initial.Dev {
			if depth == 0 {
				return refuse("it is in the initial user namespace, not in a container's")
			}
			return refuse("no user namespace between it and the initial one is owned by uid %d", uid)
		}
		owner, err := nsOwnerUID(fd)
		if err != nil {
			return err
		}
		if owner == uid {
			return nil
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		if err != nil {
			// EPERM: the parent is outside the agent's own namespace.
			return refuse("no user namespace above it that the agent can see is owned by uid %d (%v)", uid, err)
		}
		unix.CloseOnExec(parent)
		if own {
			closeFD(fd)
		}
		fd, own = parent, true
	}
	return refuse("user namespaces nested deeper than the kernel allows")
}

// nsOwnerUID is ioctl(NS_GET_OWNER_UID): the host uid that created the
// user namespace fd refers to.
func nsOwnerUID(fd int) (int, error) {
	var buf [4]byte
	if _, err := linux.IoctlBuf(uintptr(fd), unix.NS_GET_OWNER_UID, buf[:]); err != nil {
		return -1, os.NewSyscallError("ioctl NS_GET_OWNER_UID", err)
	}
	return int(binary.NativeEndian.Uint32(buf[:])), nil
}

func initialUserNS() (unix.Stat_t, error) {
	var st unix.Stat_t
	// The agent runs in the initial user namespace (it must, to serve
	// loop devices); its own is the one no container may be in.
	err := unix.Stat("/proc/self/ns/user", &st)
	return st, err
}

// inUserNS reports whether task tid's user namespace is the one with inode
// ino or descends from it, and so is the user namespace that owns tid's
// mount namespace. The second matters as much: the owner of a container's
// user namespace may join it from the host (setns needs only the
// capabilities it holds there) without leaving the host's mount namespace,
// and the agent resolves such a caller's paths in the host's root as host
// root.
func inUserNS(tid int, ino uint64) (bool, error) {
	open := func(name string) (int, error) {
		fd, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/ns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT || err == unix.ESRCH {
			return -1, errGone
		}
		return fd, err
	}
	fd, err := open("user")
	if err != nil {
		return false, err
	}
	if ok, err := userNSBelow(fd, ino); err != nil || !ok {
		return false, err
	}
	mnt, err := open("mnt")
	if err != nil {
		return false, err
	}
	owner, err := unix.IoctlRetInt(mnt, unix.NS_GET_USERNS)
	closeFD(mnt)
	if err != nil {
		return false, os.NewSyscallError("ioctl NS_GET_USERNS", err)
	}
	unix.CloseOnExec(owner)
	return userNSBelow(owner, ino)
}

// userNSBelow reports whether user namespace fd (which it closes) is the
// one with inode ino or descends from it.
func userNSBelow(fd int, ino uint64) (bool, error) {
	defer func() { closeFD(fd) }()
	for depth := 0; depth < maxUserNSDepth; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return false, err
		}
		if st.Ino == ino {
			return true, nil
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		if err != nil {
			return false, nil // reached the top without meeting it
		}
		unix.CloseOnExec(parent)
		closeFD(fd)
		fd = parent
	}
	return false, nil
}
