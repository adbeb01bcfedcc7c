package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/loopvisor/loopvisor/loopctl/view"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
	"github.com/loopvisor/loopvisor/supervisor/ociproto"
)

// ContainerProcessState is the OCI runtime's message (see ociproto).
type ContainerProcessState = ociproto.ContainerProcessState

// AgentConfig configures `loopvisor agent`.
type AgentConfig struct {
	StateDir string
	Limits   loopctl.Limits
	Mounts   *mountproxy.Policy // nil: mount calls are answered CONTINUE
	Log      *logrus.Logger
	// MaxUserContainers bounds the live containers one unprivileged user
	// may have served through the user socket (0: DefaultMaxUserContainers).
	MaxUserContainers int
}

// Agent serves the seccomp listeners OCI runtimes hand it, one instance per
// container. A container is its id together with its init's user, pid and
// mount namespaces (nsKey): the id alone is only unique within one
// runtime's state root.
type Agent struct {
	cfg   AgentConfig
	host  *loopctl.Host
	reg   *registry.Registry
	log   *logrus.Entry
	work  *workPool // bounds setting up and releasing containers
	ident *workPool // bounds reading the namespaces of a runtime's processes

	// mu guards containers and each container's listeners and closing. It
	// is never held across work that touches a container (entering its
	// namespaces, publishing nodes, releasing devices): one container that
	// blocks must not stall the others.
	mu         sync.Mutex
	containers map[containerKey]*container
	proxied    map[proxyKey]*proxied // containers served through a manager's proxy (lxcproxy.go)
	closing    sync.WaitGroup        // instances being released
	stop       chan struct{}
	users      userGate // the user socket's connections in flight
}

type containerKey struct {
	id string
	ns nsKey
	// owner is rootOwner for containers the root socket handed over, else
	// the host uid of the user whose runtime did (user socket): the two
	// never share an instance, nor do two users.
	owner int
}

type container struct {
	key containerKey
	id  string
	pid int
	// ready is closed once setup has finished; err says how. Until then
	// only key, id, pid, started and the counters below are set.
	ready     chan struct{}
	err       error
	in        *loopctl.Instance
	mounts    *mountproxy.Proxy
	ns        *nsexec.NS
	userNS    *os.File
	mntNS     *os.File // pins the mount namespace's inode while the instance lives
	dev       *devGrants
	listeners int  // a.mu
	closing   bool // a.mu
	started   time.Time
	log       *logrus.Entry
}

func (c *container) isReady() bool {
	select {
	case <-c.ready:
		return c.err == nil
	default:
		return false
	}
}

// NewAgent opens the loop driver and the state directory and releases what
// a dead agent left behind.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	host, err := loopctl.OpenHost()
	if err != nil {
		return nil, err
	}
	reg, err := registry.Open(cfg.StateDir)
	if err != nil {
		_ = host.Close()
		return nil, err
	}
	a := &Agent{cfg: cfg, host: host, reg: reg, log: logrus.NewEntry(cfg.Log), containers: map[containerKey]*container{}, proxied: map[proxyKey]*proxied{}}
	a.work = newWorkPool(agentWorkers, a.log)
	a.ident = newWorkPool(agentWorkers, a.log)
	// See agentFDTable: grown now, the descriptor table does not grow
	// (and stall every thread that opens a descriptor) while containers
	// attach.
	if _, err := linux.ReserveFDTable(agentFDTable); err != nil {
		a.log.WithError(err).Warn("cannot reserve the descriptor table; the agent may gain threads while many containers attach")
	}
	ctl, err := ensureLoopControlNode(reg.Dir)
	if err != nil {
		_ = host.Close()
		return nil, err
	}
	host.AddControlNode(ctl)
	released, left := GC(host, reg, a.log.WithField("phase", "start"), 2*time.Second)
	if released+left > 0 {
		a.log.WithFields(logrus.Fields{"released": released, "left": left}).Info("reclaimed what a previous supervisor held")
	}
	// Containers a previous agent served keep their devices while they
	// run (their calls now fail with ENOSYS: the runtime gave their
	// listener to the dead agent); collect them once they are gone.
	a.stop = make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-t.C:
				GC(host, reg, a.log.WithField("phase", "periodic"), 0)
			}
		}
	}()
	return a, nil
}

// Serve accepts runtime connections on the agent's socket until the
// listener is closed.
func (a *Agent) Serve(ln *net.UnixListener) error {
	return acceptLoop(ln, a.handleConn)
}

// acceptLoop hands every connection accepted on ln to its own goroutine of
// handle until ln is closed (nil), or returns accept's error. The agent's
// three sockets (runtimes, LXC monitors, users) are served this way.
func acceptLoop(ln *net.UnixListener, handle func(*net.UnixConn)) error {
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go handle(conn)
	}
}

// Listen creates the agent's socket (mode 0600; a stale socket is replaced).
func Listen(path string) (*net.UnixListener, error) { return ociproto.Listen(path) }

func (a *Agent) handleConn(conn *net.UnixConn) {
	defer func() { _ = conn.Close() }()
	m, err := ociproto.Read(conn)
	if err != nil {
		m.Close()
		a.log.WithError(err).Warn("agent: reading a runtime message")
		return
	}
	defer m.Close()
	if m.Status || m.Info {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if m.Info {
			_ = json.NewEncoder(conn).Encode(a.Info())
		} else {
			_ = json.NewEncoder(conn).Encode(a.Status())
		}
		return
	}
	st := m.State
	lfd := m.TakeFD("seccompFd")
	if lfd < 0 {
		a.log.WithField("container", st.State.ID).Warn("agent: no seccompFd in the runtime message")
		return
	}
	if err := a.attach(st, lfd); err != nil {
		log := a.log.WithError(err).WithFields(logrus.Fields{"container": st.State.ID, "pid": st.Pid})
		if errors.Is(err, errGone) {
			log.Info("agent: the process exited before the agent could serve it")
			return
		}
		log.Error("agent: cannot serve this container process; its loop and mount calls will fail with ENOSYS")
	}
}

// attach serves listener fd lfd for the container st describes: state.pid
// is the container's init, pid the process that loaded this filter (runc:
// the exec'd process; crun sends 0 for both on exec).
func (a *Agent) attach(st *ContainerProcessState, lfd int) error {
	return a.attachProcess(st.State.ID, st.State.Pid, st.Pid, st.Metadata, st.State.Status, lfd, nil)
}

// Attach serves seccomp listener lfd (which it takes over) for container id
// whose init is pid. The first listener of a container creates its
// instance (policy narrowed by metadata, as listenerMetadata is); later
// ones (exec'd processes) join it. The instance is released when no
// process uses any of its listeners. This is the library entry point for a
// container manager that receives listener fds itself.
//
// A container is its id and its init's user, pid and mount namespaces,
// read from the kernel: a listener joins an instance only if pid is in the
// same three namespaces as that instance's init; another container with
// the same id gets an instance of its own. pid may be 0 for an exec'd
// process (crun sends 0): the listener then joins the instance of id whose
// namespaces are those of the process that makes the first trapped call,
// and is refused if there is none.
//
// Preconditions: the filter behind lfd traps what loopvisor serves (see
// ociconfig.Rewrite or notify.Program); the container has a user namespace
// whose root is not host root.
func (a *Agent) Attach(id string, pid int, metadata, status string, lfd int) error {
	return a.attachProcess(id, pid, pid, metadata, status, lfd, nil)
}

// attachProcess serves lfd for a container; o is nil for root's runtimes,
// else the verified owner of a user's container (useragent.go).
func (a *Agent) attachProcess(id string, initPid, procPid int, metadata, status string, lfd int, o *owner) error {
	if id == "" {
		_ = unix.Close(lfd)
		return errors.New("attach: a container id is required")
	}
	l, err := notify.NewListener(lfd)
	if err != nil {
		return err
	}
	if initPid <= 0 && procPid <= 0 {
		if !a.knows(id) {
			_ = l.Close()
			return fmt.Errorf("container %s is not served here, and the runtime sent no pid to create it from", id)
		}
		go a.serveUnidentified(l, id, status, o.uid())
		return nil
	}
	c, err := a.join(id, initPid, procPid, metadata, o)
	if err != nil {
		_ = l.Close()
		return err
	}
	<-c.ready
	if c.err != nil {
		_ = l.Close()
		return c.err
	}
	a.serve(c, l, nil, procPid, status)
	return nil
}

// knows reports whether some live instance has container id.
func (a *Agent) knows(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, c := range a.containers {
		if k.id == id && !c.closing {
			return true
		}
	}
	return false
}

// join identifies the container of a listener whose process the runtime
// named and returns its container, creating it for the first listener. The
// returned container counts the listener; wait for c.ready.
//
// The namespaces are read on a pool of their own (a few /proc reads per
// listener, never blocked by a container): a pool busy setting up others
// must not leave the container's init time to leave them first. Only the
// setup of a new container waits for a worker of a.work.
func (a *Agent) join(id string, initPid, procPid int, metadata string, o *owner) (*container, error) {
	cpid := initPid // the container's init: whose namespaces name it
	if cpid <= 0 {
		cpid = procPid
	}
	log := a.log.WithFields(logrus.Fields{"container": id, "pid": procPid})
	var key, pk nsKey
	pidfd, ppidfd := -1, -1
	var err, perr error
	a.ident.do("identify", log, func() {
		key, pidfd, err = procNS(cpid)
		if err == nil && procPid > 0 && procPid != cpid {
			pk, ppidfd, perr = procNS(procPid)
			closeFD(ppidfd)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("container %s, process %d: %w", id, cpid, err)
	}
	defer closeFD(pidfd)
	if perr != nil {
		return nil, fmt.Errorf("container %s, process %d: %w", id, procPid, perr)
	}
	if procPid > 0 && procPid != cpid && pk != key {
		log.WithFields(logrus.Fields{"init": cpid, "init_ns": key.String(), "process_ns": pk.String()}).
			Warn("refused: the process is not in the user, pid and mount namespaces of the container's init")
		return nil, fmt.Errorf("process %d is not in the namespaces of container %s (init %d)", procPid, id, cpid)
	}
	if o != nil && key.User != o.userNS {
		log.WithFields(logrus.Fields{"peer_uid": o.peer, "ns": key.String()}).Warn("refused: the process is no longer in the user namespace verified as the user's")
		return nil, refuse("process %d left the user namespace verified as user %d's", cpid, o.peer)
	}
	ck := containerKey{id, key, o.uid()}
	a.mu.Lock()
	if c := a.containers[ck]; c != nil {
		if c.closing {
			a.mu.Unlock()
			return nil, fmt.Errorf("container %s is being released; a new process of it cannot join", id)
		}
		c.listeners++
		a.mu.Unlock()
		return c, nil
	}
	var others []int
	for k, o := range a.containers {
		if k.id == id {
			others = append(others, o.pid)
		}
	}
	c := &container{key: ck, id: id, pid: cpid, ready: make(chan struct{}), listeners: 1, started: time.Now()}
	a.containers[ck] = c
	a.mu.Unlock()
	if len(others) > 0 {
		log.WithFields(logrus.Fields{"init": cpid, "ns": key.String(), "other_inits": others}).
			Warn("container id already served for another container (other user, pid or mount namespace): this one gets an instance of its own")
	}
	a.work.do("setup", log, func() { c.err = a.setup(c, pidfd, metadata) })
	if c.err != nil {
		a.mu.Lock()
		if a.containers[ck] == c {
			delete(a.containers, ck)
		}
		a.mu.Unlock()
	}
	close(c.ready)
	return c, nil
}

// serveUnidentified serves a listener the runtime named no process for
// (crun exec): the first trapped call's caller decides which container it
// belongs to, and it joins that container's instance only.
func (a *Agent) serveUnidentified(l *notify.Listener, id, status string, ownerUID int) {
	log := a.log.WithFields(logrus.Fields{"container": id, "status": status})
	for {
		req, err := l.Next()
		if err != nil { // every process of it is gone without a trapped call
			_ = l.Close()
			return
		}
		key, err := identifyCaller(l, &req)
		if errors.Is(err, errStale) || errors.Is(err, errGone) {
			continue
		}
		refuse := func(why string, f logrus.Fields) {
			log.WithFields(f).WithField("caller", req.Pid).Warn("refused: " + why + "; its calls fail with ENOSYS")
			_ = l.Respond(req.ID, notify.Errno(unix.ENOSYS))
			_ = l.Close()
		}
		if err != nil {
			refuse("cannot read the namespaces of the process making the first trapped call", logrus.Fields{"error": err.Error()})
			return
		}
		a.mu.Lock()
		c := a.containers[containerKey{id, key, ownerUID}]
		if c != nil && !c.closing {
			c.listeners++
		}
		a.mu.Unlock()
		if c == nil || c.closing {
			refuse("the runtime sent no pid and the process making the first trapped call is in the namespaces of no live container of this id",
				logrus.Fields{"caller_ns": key.String()})
			return
		}
		<-c.ready
		if c.err != nil {
			refuse("its container could not be set up", logrus.Fields{"error": c.err.Error()})
			return
		}
		a.serve(c, l, &req, 0, status)
		return
	}
}

// serve answers l's notifications for container c (which counts l), first
// the already received one if first is not nil, and releases c's instance
// once no process uses any of its listeners.
func (a *Agent) serve(c *container, l *notify.Listener, first *notify.Request, pid int, status string) {
	c.log.WithFields(logrus.Fields{"pid": pid, "status": status, "sync_wakeup": l.SyncWake}).Info("serving a container process")
	go func() {
		sb := &Sandbox{Instance: c.in, Mounts: c.mounts, Log: c.log}
		if c.key.owner != rootOwner {
			sb.Check = callerInUserNS(c.key.ns.User)
		}
		if first != nil {
			if err := l.Respond(first.ID, answer(l, sb, first)); err != nil {
				c.log.WithError(err).WithField("pid", first.Pid).Warn("cannot answer notification")
			}
		}
		if err := Serve(l, sb); err != nil {
			c.log.WithError(err).Warn("serving stopped with an error")
		}
		_ = l.Close()
		a.release(c)
	}()
}

// release ends a container's instance once no process uses any of its
// listeners. The work runs on the agent's worker pool: an exit burst of
// many containers must not become one blocked OS thread per container.
func (a *Agent) release(c *container) {
	a.mu.Lock()
	c.listeners--
	last := c.listeners == 0
	if last {
		c.closing = true
		a.closing.Add(1)
	}
	a.mu.Unlock()
	if !last {
		return
	}
	defer a.closing.Done()
	// The instance stays listed (closing) until its devices are released.
	a.work.do("release", c.log, c.teardown)
	a.mu.Lock()
	if a.containers[c.key] == c {
		delete(a.containers, c.key)
	}
	a.mu.Unlock()
	c.log.Info("container gone; instance released")
}

// teardown releases what setup acquired.
func (c *container) teardown() {
	if c.mounts != nil {
		c.mounts.Close()
	}
	if c.in != nil {
		if err := c.in.Close(2 * time.Second); err != nil {
			c.log.WithError(err).Warn("cleanup incomplete")
		}
	}
	if c.ns != nil {
		c.ns.Close()
	}
	c.dev.close()
	for _, f := range []*os.File{c.userNS, c.mntNS} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// hostRoot returns the host uid and gid that uid 0 of pid's user namespace
// maps to.
func hostRoot(pid int) (uid, gid int, err error) {
	get := func(file string) (int, error) {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/" + file)
		if err != nil {
			return -1, err
		}
		defer func() { _ = f.Close() }()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) == 3 && fl[0] == "0" {
				return strconv.Atoi(fl[1])
			}
		}
		return -1, fmt.Errorf("%s: uid 0 is not mapped", file)
	}
	if uid, err = get("uid_map"); err != nil {
		return
	}
	gid, err = get("gid_map")
	return
}

// setup creates c's instance from its init c.pid, whose namespaces are
// c.key.ns and which pidfd names, and puts the instance's nodes into the
// container. It runs on a worker of the pool, without a.mu. On error
// everything it acquired is released.
func (a *Agent) setup(c *container, pidfd int, metadata string) (err error) {
	pid := c.pid
	uid, gid, err := hostRoot(pid)
	if err != nil {
		return err
	}
	if uid == 0 {
		return errors.New("the container's root is host root: loopvisor serves only containers with a user namespace mapping root to an unprivileged uid")
	}
	limits, pol, err := a.policyFor(metadata)
	if err != nil {
		return err
	}
	chargeUID := uid
	if c.key.owner != rootOwner {
		// A user's containers: FUSE only whatever the policy, and limits
		// charged to the user, not to the uid its container's root maps
		// to (which it picks from its ranges).
		chargeUID = c.key.owner
		if pol != nil {
			fuseOnly(pol)
		}
	}
	defer func() {
		if err != nil {
			c.teardown()
			c.in, c.mounts, c.ns, c.userNS, c.mntNS, c.dev = nil, nil, nil, nil, nil, nil
		}
	}()
	if c.ns, err = nsexec.OpenNS(pid, pidfd); err != nil {
		return err
	}
	if c.userNS, err = os.Open("/proc/" + strconv.Itoa(pid) + "/ns/user"); err != nil {
		return err
	}
	if c.mntNS, err = os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt"); err != nil {
		return err
	}
	// What was opened through /proc/PID is pid's only if pid is still the
	// process pidfd names, and its namespaces are still the key's.
	var ust, mst unix.Stat_t
	if err := unix.Fstat(int(c.userNS.Fd()), &ust); err != nil {
		return err
	}
	if err := unix.Fstat(int(c.mntNS.Fd()), &mst); err != nil {
		return err
	}
	if !pidfdAlive(pidfd) {
		return errGone
	}
	if ust.Ino != c.key.ns.User || mst.Ino != c.key.ns.Mnt {
		return fmt.Errorf("process %d changed namespaces while the agent set it up", pid)
	}
	log := a.log.WithField("container", c.id)
	in, err := loopctl.NewInstance(a.host, a.reg, loopctl.Config{
		ID: NewID(), Container: c.id, ContainerPid: pid, HostUID: uid, HostGID: gid, ChargeUID: chargeUID, Limits: limits, Log: log,
	})
	if err != nil {
		return err
	}
	c.in = in
	in.UserNS = ust.Ino
	c.log = log.WithField("instance", in.ID)
	if c.key.owner != rootOwner {
		c.dev = openUserDevGrants(pid, pidfd, &owner{peer: c.key.owner, userNS: c.key.ns.User}, c.log)
	} else {
		c.dev = openDevGrants(pid, pidfd, c.log)
	}
	c.dev.grantStatic(pol != nil)
	in.View.Publish = func(name string, node *os.File) error {
		c.dev.grantNode(name, node)
		err := nsexec.Bind(c.ns, node, "/dev/"+name)
		if err != nil {
			c.log.WithError(err).WithField("node", name).Warn("cannot put the node into the container's /dev")
		}
		return err
	}
	in.View.Unpublish = func(name string) {
		if err := nsexec.Unbind(c.ns, "/dev/"+name); err != nil {
			c.log.WithError(err).WithField("node", name).Debug("cannot remove node from the container's /dev")
		}
		c.dev.revoke(name)
	}
	if err := c.publishStatic(); err != nil {
		return err
	}
	if pol != nil {
		c.mounts = mountproxy.New(*pol, in, c.userNS, c.log)
		c.mounts.KeepHelpers = true
	}
	c.log.WithFields(logrus.Fields{"host_uid": uid, "owner": ownerName(c.key.owner), "max_loop": limits.MaxLoop, "mounts": pol != nil, "ns": c.key.ns.String()}).Info("container instance created")
	return nil
}

// publishStatic puts the instance's /dev/loop-control, sysfs views and
// /proc/partitions into the container.
func (c *container) publishStatic() error {
	node, err := c.in.View.Clone(view.Dev + "/loop-control")
	if err != nil {
		return err
	}
	defer func() { _ = node.Close() }()
	if err := nsexec.Bind(c.ns, node, "/dev/loop-control"); err != nil {
		return fmt.Errorf("put /dev/loop-control into the container: %w", err)
	}
	if c.key.owner != rootOwner {
		if err := c.publishFuse(); err != nil {
			return err
		}
	}
	for _, m := range view.Mounts[1:] { // /sys/...: /dev is the container's own
		v, err := c.in.View.Clone(m.Dir)
		if err != nil {
			return err
		}
		err = nsexec.Move(c.ns, v, m.Target)
		_ = v.Close()
		if err != nil {
			c.log.WithError(err).WithField("target", m.Target).Warn("cannot filter the container's sysfs view; it shows every loop device (names only)")
		}
	}
	for _, m := range view.ProcFiles { // over the container's own /proc
		v, err := c.in.View.Clone(m.File)
		if err != nil {
			return err
		}
		err = nsexec.Bind(c.ns, v, m.Target)
		_ = v.Close()
		if err != nil {
			c.log.WithError(err).WithField("target", m.Target).Warn("cannot give the container its own view; it shows every loop device")
		}
	}
	return nil
}

// policyFor applies a container's listenerMetadata to the agent's policy.
// Metadata is "key=value" pairs separated by ';': max-loop=N (at most the
// agent's --max-loop), kernel-mount=no (serve every type with FUSE helpers
// or not at all), mount=no (leave mount calls to the kernel), mount-api=new
// (the filter traps fsconfig and fsmount: serve the new mount API).
func (a *Agent) policyFor(metadata string) (loopctl.Limits, *mountproxy.Policy, error) {
	limits := a.cfg.Limits
	var pol *mountproxy.Policy
	if a.cfg.Mounts != nil {
		p := *a.cfg.Mounts
		p.Fuse = copyMap(p.Fuse)
		p.Kernel = copyBoolMap(p.Kernel)
		pol = &p
	}
	for _, kv := range strings.Split(metadata, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "max-loop":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return limits, nil, fmt.Errorf("listenerMetadata %q: max-loop wants a positive number", kv)
			}
			if n > limits.MaxLoop {
				return limits, nil, fmt.Errorf("listenerMetadata %q: the agent allows at most max-loop=%d", kv, limits.MaxLoop)
			}
			limits.MaxLoop = n
		case "kernel-mount":
			if v != "no" {
				return limits, nil, fmt.Errorf("listenerMetadata %q: only kernel-mount=no can be asked for; the agent's --allow-kernel-mount decides the rest", kv)
			}
			if pol != nil {
				pol.Kernel = map[string]bool{}
			}
		case "mount-api":
			// oci-config's word that the filter traps fsconfig and
			// fsmount too (mountproxy.Policy.NewAPI).
			if v != "new" {
				return limits, nil, fmt.Errorf("listenerMetadata %q: only mount-api=new can be given", kv)
			}
			if pol != nil {
				pol.NewAPI = true
			}
		case "mount":
			if v != "no" {
				return limits, nil, fmt.Errorf("listenerMetadata %q: only mount=no can be asked for", kv)
			}
			pol = nil
		default:
			return limits, nil, fmt.Errorf("listenerMetadata %q: unknown key (known: max-loop, kernel-mount, mount, mount-api)", kv)
		}
	}
	return limits, pol, nil
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyBoolMap(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// InstanceStatus is one live instance, as `loopvisor status` shows it.
type InstanceStatus struct {
	Container string                   `json:"container"`
	Instance  string                   `json:"instance"`
	Pid       int                      `json:"pid"`
	Processes int                      `json:"processes"`
	Since     time.Time                `json:"since"`
	Devices   []DeviceStatus           `json:"devices"`
	Mounts    []mountproxy.MountStatus `json:"mounts"`
	MaxLoop   int                      `json:"max_loop"`
	Closing   bool                     `json:"closing,omitempty"` // its processes are gone; devices being released
}

// DeviceStatus is one loop device of an instance.
type DeviceStatus struct {
	Name    string `json:"name"`
	Backing string `json:"backing,omitempty"`
}

// Status lists the live instances.
func (a *Agent) Status() []InstanceStatus {
	// Copy under the lock, look at the instances without it: a device's
	// sysfs attributes and an instance's own lock are no business of the
	// agent-wide one.
	type entry struct {
		c         *container
		listeners int
		closing   bool
	}
	var cs []entry
	a.mu.Lock()
	for _, c := range a.containers {
		if c.isReady() {
			cs = append(cs, entry{c, c.listeners, c.closing})
		}
	}
	a.mu.Unlock()
	var out []InstanceStatus
	for _, e := range cs {
		c := e.c
		s := InstanceStatus{Container: c.id, Instance: c.in.ID, Pid: c.pid, Processes: e.listeners, Since: c.started, MaxLoop: c.in.MaxLoop(), Closing: e.closing}
		devs := c.in.Devices()
		sort.Ints(devs)
		for _, idx := range devs {
			s.Devices = append(s.Devices, DeviceStatus{Name: "loop" + strconv.Itoa(idx), Backing: loopctl.BackingFile(idx)})
		}
		if c.mounts != nil {
			s.Mounts = c.mounts.Status()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Container != out[j].Container {
			return out[i].Container < out[j].Container
		}
		return out[i].Pid < out[j].Pid
	})
	return out
}

// QueryStatus asks the agent at socket for its status.
func QueryStatus(socket string) ([]InstanceStatus, error) {
	var out []InstanceStatus
	if err := ociproto.Query(socket, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Close waits (up to 10s) for instances being released, then releases the
// agent's hold on the loop driver and its node tmpfs (containers keep their
// own binds of it). Live instances stay in the journal for the next agent.
func (a *Agent) Close() {
	close(a.stop)
	done := make(chan struct{})
	go func() { a.closing.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		a.log.Warn("instances still being released; the next agent or loopvisor gc will finish")
	}
	_ = unix.Unmount(filepath.Join(a.reg.Dir, "dev"), unix.MNT_DETACH)
	_ = a.host.Close()
}

// ensureLoopControlNode makes the nodes oci-config bind-mounts on a
// container's /dev/loop-control and /dev/fuse (the host's /dev/fuse may be
// 0600, which a runtime's bind of it keeps): nodes on a tmpfs of the
// agent's own (the state directory may sit on a nodev file system), mode
// 0666 so any container root can open it, in a directory only root can
// reach. loop-control is a /dev/null node, as every container's is: an fd
// of it outside a filter is worth nothing; the agent knows it by the inode
// it returns, and every loop-control command from a container is trapped
// and served by its instance. The agent replaces the node with the
// instance's own (0600, owned by the container's root) as soon as it gets
// the container.
func ensureLoopControlNode(stateDir string) (loopctl.NodeID, error) {
	dir := filepath.Join(stateDir, "dev")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return loopctl.NodeID{}, err
	}
	var sfs, parent unix.Stat_t
	if err := unix.Stat(dir, &sfs); err != nil {
		return loopctl.NodeID{}, err
	}
	if err := unix.Stat(stateDir, &parent); err != nil {
		return loopctl.NodeID{}, err
	}
	if sfs.Dev == parent.Dev { // not mounted yet
		if err := unix.Mount("loopvisor-dev", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0700,size=64k"); err != nil {
			return loopctl.NodeID{}, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"loop-control", linux.NullMajor, linux.NullMinor}, {"fuse", linux.FuseMajor, linux.FuseMinor}} {
		node := filepath.Join(dir, n.name)
		var st unix.Stat_t
		if unix.Lstat(node, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(n.major, n.minor) {
			_ = os.Remove(node)
			if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
				return loopctl.NodeID{}, fmt.Errorf("mknod %s: %w", node, err)
			}
		}
		if err := os.Chmod(node, 0o666); err != nil {
			return loopctl.NodeID{}, err
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "loop-control"), &st); err != nil {
		return loopctl.NodeID{}, err
	}
	return loopctl.NodeIDOf(&st), nil
}
