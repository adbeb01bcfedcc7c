package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl/view"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
	"github.com/loopvisor/loopvisor/supervisor/ociproto"
)

// The user socket: unprivileged host users' runtimes (rootless podman,
// `loopvisor run` without root) hand the agent their containers' listeners
// here, as systemd-mountfsd and nsresourced serve users. Who connected is
// the kernel's word (SO_PEERCRED, SO_PEERPIDFD); the message only says
// where to look, and verifyOwned checks what is there.
//
// What is proven before a listener is served:
//   - the container's user namespace (of the pid the message names, read
//     through a pidfd) is owned by the connecting uid, or descends from one
//     that is, and is not the initial one;
//   - every host uid and gid it maps is the user's own or in its
//     /etc/subuid, /etc/subgid ranges (never host root);
//   - the fd sent is a seccomp listener and the named process has a filter.
//
// What is not, and how it is made harmless: the kernel offers no way to ask
// which processes a listener belongs to. So every trapped call on a user's
// listener is checked (Sandbox.Check): its caller must be in the verified
// user namespace or one below it, confirmed by NOTIF_ID_VALID after the
// read. A listener of some other filter (a process outside the container)
// gets every call refused with EPERM and a log line; the agent never acts
// for such a caller.
//
// A user's containers then get FUSE mounts only (never a kernel mount,
// whatever the policy), backing files only through fds they hold (as every
// container: loopctl takes them with pidfd_getfd), limits charged to the
// user, and the agent's own nodes.

// DefaultMaxUserContainers is AgentConfig.MaxUserContainers unless set.
const DefaultMaxUserContainers = 32

// maxUserConns bounds one user's connections being read and verified at
// once (each may take ociproto.ReadTimeout), so that no user can tie up
// the agent's fds and goroutines.
const maxUserConns = 8

// userGate counts the user socket's connections in flight per uid.
type userGate struct {
	mu    sync.Mutex
	conns map[int]int
}

func (g *userGate) enter(uid int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns == nil {
		g.conns = map[int]int{}
	}
	if g.conns[uid] >= maxUserConns {
		return false
	}
	g.conns[uid]++
	return true
}

func (g *userGate) leave(uid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[uid]--; g.conns[uid] <= 0 {
		delete(g.conns, uid)
	}
}

// rootOwner is containerKey.owner for containers of root's runtimes.
const rootOwner = -1

// owner is the verified owner of a user's container.
type owner struct {
	peer   int    // host uid that connected
	userNS uint64 // inode of the user namespace verified to be its
}

func (o *owner) uid() int {
	if o == nil {
		return rootOwner
	}
	return o.peer
}

func ownerName(uid int) string {
	if uid == rootOwner {
		return "root"
	}
	return "uid " + strconv.Itoa(uid)
}

// UserReply is the agent's one-line JSON answer on the user socket, after
// the listener is served or refused (runtimes do not read it; `loopvisor
// run` does).
type UserReply struct {
	Served bool   `json:"served"`
	Error  string `json:"error,omitempty"`
}

// ServeUsers accepts connections of unprivileged users' runtimes on ln (see
// ListenUsers) until it is closed.
func (a *Agent) ServeUsers(ln *net.UnixListener) error {
	return acceptLoop(ln, a.handleUserConn)
}

func (a *Agent) handleUserConn(conn *net.UnixConn) {
	defer func() { _ = conn.Close() }()
	var peer *Peer
	var perr error
	raw, err := conn.SyscallConn()
	if err == nil {
		err = raw.Control(func(fd uintptr) { peer, perr = peerOf(int(fd)) })
	}
	if err = errors.Join(err, perr); err != nil {
		a.log.WithError(err).Warn("user socket: cannot read the peer's credentials; connection dropped")
		return
	}
	defer peer.Close()
	log := a.log.WithFields(logrus.Fields{"socket": "user", "peer_uid": peer.UID, "peer_user": peer.Name, "peer_pid": peer.Pid})
	if !a.users.enter(peer.UID) {
		log.WithField("limit", maxUserConns).Warn("refused: too many connections of this user at once")
		return
	}
	defer a.users.leave(peer.UID)
	m, err := ociproto.Read(conn)
	if err != nil {
		m.Close()
		log.WithError(err).Warn("user socket: reading a runtime message")
		return
	}
	defer m.Close()
	reply := func(err error) {
		r := UserReply{Served: err == nil}
		if err != nil {
			r.Error = err.Error()
		}
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = json.NewEncoder(conn).Encode(r)
	}
	if m.Info {
		// Where the agent keeps its nodes: what the user's oci-config
		// asks before it writes a bundle's config.
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = json.NewEncoder(conn).Encode(a.Info())
		return
	}
	if m.Status {
		reply(errors.New("status is answered on the root socket only"))
		return
	}
	st := m.State
	if st == nil {
		reply(errors.New("no container process state in the message"))
		return
	}
	log = log.WithFields(logrus.Fields{"container": st.State.ID, "pid": st.Pid, "init": st.State.Pid})
	lfd := m.TakeFD("seccompFd")
	if lfd < 0 {
		log.Warn("refused: no seccompFd in the message")
		reply(errors.New("no seccompFd in the message"))
		return
	}
	err = a.attachUser(peer, st, lfd, log)
	reply(err)
	switch {
	case err == nil:
	case errors.Is(err, errGone):
		log.Info("user socket: the process exited before the agent could serve it")
	case errors.Is(err, ErrNotYours):
		log.WithError(err).Warn("refused: not the connecting user's container; its loop and mount calls will fail with ENOSYS")
	default:
		log.WithError(err).Error("user socket: cannot serve this container process; its loop and mount calls will fail with ENOSYS")
	}
}

// attachUser verifies that st names a container of peer's and serves lfd
// (which it takes over) for it.
func (a *Agent) attachUser(peer *Peer, st *ContainerProcessState, lfd int, log *logrus.Entry) error {
	if err := isSeccompListener(lfd); err != nil {
		_ = unix.Close(lfd)
		return err
	}
	initPid, procPid := st.State.Pid, st.Pid
	if initPid <= 0 && procPid <= 0 {
		// crun exec: the first trapped call places the listener, only
		// into one of this user's containers, and every call is checked.
		return a.attachProcess(st.State.ID, 0, 0, st.Metadata, st.State.Status, lfd, &owner{peer: peer.UID})
	}
	cpid := initPid
	if cpid <= 0 {
		cpid = procPid
	}
	ns, ino, err := verifyOwned(peer, cpid)
	if err != nil {
		_ = unix.Close(lfd)
		return err
	}
	// Held until the listener is attached: the inode cannot name another
	// namespace meanwhile.
	defer func() { _ = ns.Close() }()
	filtered := cpid
	if procPid > 0 && procPid != cpid {
		pns, _, err := verifyOwned(peer, procPid)
		if err != nil {
			_ = unix.Close(lfd)
			return err
		}
		_ = pns.Close()
		filtered = procPid
	}
	if err := hasSeccompFilter(filtered); err != nil {
		_ = unix.Close(lfd)
		return err
	}
	if err := a.userContainerRoom(peer.UID, ino); err != nil {
		_ = unix.Close(lfd)
		return err
	}
	log.WithField("userns", ino).Info("user socket: the container's user namespace and id maps are the user's")
	return a.attachProcess(st.State.ID, initPid, procPid, st.Metadata, st.State.Status, lfd, &owner{peer: peer.UID, userNS: ino})
}

// userContainerRoom refuses a new container of uid beyond
// MaxUserContainers; a process joining a live container of uid (same user
// namespace) is let through.
func (a *Agent) userContainerRoom(uid int, userNS uint64) error {
	limit := a.cfg.MaxUserContainers
	if limit <= 0 {
		limit = DefaultMaxUserContainers
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k, c := range a.containers {
		if k.owner != uid || c.closing {
			continue
		}
		if k.ns.User == userNS {
			return nil
		}
		n++
	}
	if n >= limit {
		return refuse("user %d already has %d live containers served (--max-user-containers %d)", uid, n, limit)
	}
	return nil
}

// isSeccompListener checks that fd is a seccomp notification listener.
func isSeccompListener(fd int) error {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return err
	}
	if link != "anon_inode:seccomp notify" {
		return refuse("the seccompFd sent is %q, not a seccomp listener", link)
	}
	return nil
}

// hasSeccompFilter checks that process pid runs under a seccomp filter.
// (Which filter cannot be asked; see the file comment.)
func hasSeccompFilter(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return refuse("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			if strings.TrimSpace(v) != "2" {
				return refuse("process %d has no seccomp filter, so the listener sent cannot be its", pid)
			}
			return nil
		}
	}
	return refuse("process %d: no Seccomp line in its status", pid)
}

// callerInUserNS returns a Sandbox.Check that lets through only callers in
// user namespace ino or below it whose mount namespace that user namespace
// (or one below it) owns.
func callerInUserNS(ino uint64) func(*notify.Listener, *notify.Request) error {
	return func(l *notify.Listener, req *notify.Request) error {
		ok, err := inUserNS(int(req.Pid), ino)
		// The caller is blocked in the filter while its call is pending:
		// valid after the read, the tid named that caller throughout.
		if !l.Valid(req.ID) {
			return errStale
		}
		if err != nil {
			return err
		}
		if !ok {
			return refuse("caller %d is not in the container's user namespace, or its mount namespace is not one of the container's (the listener is not only that container's filter)", req.Pid)
		}
		return nil
	}
}

// ListenUsers creates the user socket at path, mode 0666, in a directory
// every user can search and only root can write. Containers of users need
// no node from the host: the agent binds the instance's /dev/loop-control
// and /dev/fuse into them itself (a mount made on the host would not reach
// a rootless engine's long-lived mount namespace anyway).
func ListenUsers(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
			return nil, err
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, err
	}
	if st.Mode&0o001 == 0 || st.Mode&0o022 != 0 || st.Uid != 0 {
		return nil, fmt.Errorf("--user-socket %s: its directory must belong to root and be searchable but not writable by others (is %o, uid %d)", path, st.Mode&0o7777, st.Uid)
	}
	ln, err := ociproto.Listen(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// publishFuse binds the view's /dev/fuse (0666) on the container's: a user's
// container gets loopvisor's node, not a host node from its engine (the
// host's may be 0600).
func (c *container) publishFuse() error {
	node, err := c.in.View.Clone(view.Dev + "/fuse")
	if errors.Is(err, unix.ENOENT) {
		return nil // the host has no /dev/fuse
	}
	if err != nil {
		return err
	}
	defer func() { _ = node.Close() }()
	if err := nsexec.Bind(c.ns, node, "/dev/fuse"); err != nil {
		return fmt.Errorf("put /dev/fuse into the container: %w", err)
	}
	return nil
}

// fuseOnly turns pol into FUSE only: the types the agent mounts with the
// kernel go back to their default helpers (or are not served at all).
func fuseOnly(pol *mountproxy.Policy) {
	defaults := mountproxy.DefaultPolicy().Fuse
	for t := range pol.Kernel {
		if h, ok := defaults[t]; ok {
			if _, set := pol.Fuse[t]; !set {
				pol.Fuse[t] = h
			}
		}
	}
	pol.Kernel = map[string]bool{}
}
