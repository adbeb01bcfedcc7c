package supervisor

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/mountproxy/nsexec"
	"github.com/loopvisor/loopvisor/notify"
	"github.com/loopvisor/loopvisor/supervisor/lxcproto"
)

// Proxied is one seccomp notification that a container manager received
// from its own listener and hands to the agent (LXC's monitor through
// `loopvisor agent --lxc-socket`, or a manager such as Incus that runs its
// own proxy, through Agent.HandleProxied).
type Proxied struct {
	// Container names the container in logs and status (the manager's
	// name for it). With InitPid's namespaces it names the instance.
	Container string
	// InitPid is the container's init, in the agent's pid namespace. The
	// first notification of a container creates its instance from this
	// process's namespaces and credentials; the instance is released when
	// this process exits (or ReleaseProxied is called).
	InitPid int
	// Policy narrows the agent's policy as listenerMetadata does
	// (max-loop=N; kernel-mount=no; mount=no). Only the first
	// notification's policy counts.
	Policy string
	// Request is the notification as the manager received it (its pid in
	// the agent's pid namespace), with Request.Mem and Request.Proc set to
	// the caller's /proc/PID/mem and /proc/PID if the manager has them.
	Request notify.Request
	// Listener is the seccomp listener the notification came from. The
	// agent only checks IDs on it (NOTIF_ID_VALID); the manager keeps
	// receiving and answering. Borrowed: the agent duplicates it.
	Listener int
}

// proxyKey names a container served through a proxy.
type proxyKey struct {
	id   string
	init int
}

// proxied is the agent's hold on a proxied container's instance: one
// listener count of c, released when the init's pidfd says it exited or
// when released is closed.
type proxied struct {
	c        *container
	pidfd    *os.File // PIDFD_NONBLOCK, on the netpoller
	released chan struct{}
	gone     bool // a.mu: release begun
}

// HandleProxied answers one notification a manager received itself: the
// manager sends the returned reply to the kernel (SECCOMP_IOCTL_NOTIF_SEND
// on its listener, for LXC: in the reply packet). It is the library entry
// point for managers that keep the listener and proxy each notification
// (Incus); `loopvisor agent --lxc-socket` uses it for LXC's monitor.
//
// Every request goes the one way of Serve (handle: notify.Decode, then
// loopctl or mountproxy); a reply that hands the caller a descriptor is
// installed with SECCOMP_IOCTL_NOTIF_ADDFD on p.Listener and returned as
// its number. The notification ID is checked on p.Listener
// before anything is read and after every read of the caller. A
// notification the agent cannot serve is answered ENOSYS, as LXC answers
// when no proxy is there.
//
// Preconditions: the agent runs in the pid namespace of p.Request.Pid and
// p.InitPid; the filter traps what loopvisor serves (see lxc-config); the
// container has a user namespace whose root is not host root.
func (a *Agent) HandleProxied(p Proxied) notify.Reply {
	log := a.log.WithFields(logrus.Fields{"container": p.Container, "init": p.InitPid, "pid": p.Request.Pid})
	if p.Container == "" || p.InitPid <= 0 {
		log.Warn("proxied notification without a container name or init pid: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	lfd, err := unix.FcntlInt(uintptr(p.Listener), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		log.WithError(err).Warn("proxied notification: cannot duplicate the listener: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	l, err := notify.Observe(lfd)
	if err != nil {
		log.WithError(err).Warn("proxied notification: not a listener: ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	defer func() { _ = l.Close() }() // our duplicate; the manager keeps its own
	if !l.Valid(p.Request.ID) {
		return notify.Errno(unix.ENOENT) // not pending: the kernel discards any answer
	}
	c, err := a.proxiedContainer(p, log)
	if err != nil {
		log.WithError(err).Warn("cannot serve this container; its loop and mount calls fail with ENOSYS")
		return notify.Errno(unix.ENOSYS)
	}
	req := p.Request
	// A reply that hands the caller a descriptor (the new mount API's
	// contexts) is installed here; the manager's answer carries its number.
	return l.Resolve(req.ID, handle(l, &Sandbox{Instance: c.in, Mounts: c.mounts, Log: c.log}, &req))
}

// proxiedContainer returns the ready container of p, creating its instance
// and the watch on its init for the first notification.
func (a *Agent) proxiedContainer(p Proxied, log *logrus.Entry) (*container, error) {
	k := proxyKey{p.Container, p.InitPid}
	a.mu.Lock()
	if h := a.proxied[k]; h != nil && !h.gone {
		a.mu.Unlock()
		<-h.c.ready
		if h.c.err != nil {
			return nil, h.c.err
		}
		return h.c, nil
	}
	a.mu.Unlock()
	c, err := a.join(p.Container, p.InitPid, p.InitPid, p.Policy, nil)
	if err != nil {
		return nil, err
	}
	<-c.ready
	if c.err != nil {
		return nil, c.err
	}
	// Watch the init: a pidfd opened after join names the same process
	// only if the init is still in the instance's namespaces and alive.
	pidfd, err := unix.PidfdOpen(p.InitPid, unix.PIDFD_NONBLOCK)
	if err == nil {
		var k2 nsKey
		if k2, err = readNS(p.InitPid); err == nil && (k2 != c.key.ns || !pidfdAlive(pidfd)) {
			err = errGone
		}
		if err != nil {
			_ = unix.Close(pidfd)
		}
	}
	if err != nil {
		a.release(c)
		return nil, fmt.Errorf("the container's init %d: %w", p.InitPid, err)
	}
	h := &proxied{c: c, pidfd: os.NewFile(uintptr(pidfd), "pidfd"), released: make(chan struct{})}
	a.mu.Lock()
	if o := a.proxied[k]; o != nil && !o.gone && o.c == c {
		// Another notification of the same container got there first: its
		// hold and watch serve both.
		a.mu.Unlock()
		_ = h.pidfd.Close()
		a.release(c)
		return c, nil
	}
	a.proxied[k] = h
	a.mu.Unlock()
	log.WithField("instance", c.in.ID).Info("serving a proxied container (released when its init exits or its proxy hangs up)")
	go a.watchInit(k, h)
	return c, nil
}

// watchInit releases h's instance once the init exits or ReleaseProxied
// is called. It waits on the Go netpoller: no OS thread per container.
func (a *Agent) watchInit(k proxyKey, h *proxied) {
	rc, err := h.pidfd.SyscallConn()
	if err == nil {
		done := make(chan struct{})
		go func() {
			select {
			case <-h.released:
			case <-done:
			}
			_ = h.pidfd.Close() // wakes the Read below
		}()
		_ = rc.Read(func(fd uintptr) bool { return !pidfdAlive(int(fd)) })
		close(done)
	}
	_ = h.pidfd.Close() // idempotent; ends the pidfd's life
	a.mu.Lock()
	h.gone = true
	if a.proxied[k] == h {
		delete(a.proxied, k)
	}
	a.mu.Unlock()
	a.release(h.c)
}

// ReleaseProxied releases the instance of a container served through
// HandleProxied (the manager stopped it or its proxy went away); a later
// notification of it creates a new one. The init's exit releases it too.
func (a *Agent) ReleaseProxied(container string, initPid int) {
	a.mu.Lock()
	h := a.proxied[proxyKey{container, initPid}]
	if h != nil && !h.gone {
		h.gone = true
		close(h.released)
	}
	a.mu.Unlock()
}

// ServeLXC accepts LXC monitors (lxc.seccomp.notify.proxy) on ln, a
// SOCK_SEQPACKET socket from lxcproto.Listen, until ln is closed.
func (a *Agent) ServeLXC(ln *net.UnixListener) error {
	return acceptLoop(ln, a.serveLXCConn)
}

// ListenLXC creates the LXC proxy socket (SOCK_SEQPACKET, mode 0600).
func ListenLXC(path string) (*net.UnixListener, error) { return lxcproto.Listen(path) }

// serveLXCConn serves one monitor: one packet per notification, answered
// in order (the monitor waits for each answer). When the monitor hangs up,
// the instances it used are released.
func (a *Agent) serveLXCConn(conn *net.UnixConn) {
	defer func() { _ = conn.Close() }()
	name := lxcName(conn)
	log := a.log.WithField("lxc", name)
	used := map[int]bool{} // init pids this monitor sent
	defer func() {
		for init := range used {
			a.ReleaseProxied(name, init)
		}
	}()
	for {
		m, err := lxcproto.Read(conn)
		if err != nil {
			if !lxcproto.IsHangup(err) {
				// A monitor that sends garbage gets no more service: it
				// reconnects once and its calls then fail with ENOSYS.
				log.WithError(err).Warn("LXC proxy: unreadable packet; closing the connection")
			}
			return
		}
		used[m.InitPid] = true
		reply := a.HandleProxied(Proxied{
			Container: name, InitPid: m.InitPid, Policy: m.Cookie,
			Request: m.Request, Listener: int(m.Listener.Fd()),
		})
		m.Close()
		if _, err := conn.Write(m.Reply(reply)); err != nil {
			log.WithError(err).Warn("LXC proxy: cannot answer the monitor")
			return
		}
	}
}

// lxcName names the container of a monitor connection: "lxc/NAME" from
// the monitor's title ("[lxc monitor] LXCPATH NAME"), read through the
// peer's pid the kernel gives (SO_PEERCRED), or "lxc/monitor-PID".
func lxcName(conn *net.UnixConn) string {
	rc, err := conn.SyscallConn()
	if err != nil {
		return "lxc/unknown"
	}
	var cred *unix.Ucred
	_ = rc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil || cred.Pid <= 0 {
		return "lxc/unknown"
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(cred.Pid)) + "/cmdline")
	title := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
	if f := strings.Fields(title); err == nil && strings.HasPrefix(title, "[lxc monitor]") && len(f) == 4 {
		return "lxc/" + f[3]
	}
	return "lxc/monitor-" + strconv.Itoa(int(cred.Pid))
}

// PublishLXCNodes puts the agent's /dev/loop-control and /dev/fuse nodes
// (those oci-config binds into OCI containers) into the /dev of the LXC
// container whose init-to-be is pid. It is LXC's start-host hook
// (`loopvisor lxc-hook`, written by lxc-config): LXC runs it as host root
// after the container's root is set up and before its init starts, so the
// nodes are there before the container's first instruction. An
// lxc.mount.entry cannot do this: LXC 5 opens bind sources as the
// container's root, which cannot reach the agent's root-only directory.
func PublishLXCNodes(stateDir string, pid int) error {
	if _, err := ensureLoopControlNode(stateDir); err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("container init %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer closeFD(pidfd)
	ns, err := nsexec.OpenNS(pid, pidfd)
	if err != nil {
		return fmt.Errorf("container init %d: %w", pid, err)
	}
	defer ns.Close()
	if !pidfdAlive(pidfd) {
		return errGone
	}
	for _, name := range []string{"loop-control", "fuse"} {
		fd, err := unix.OpenTree(unix.AT_FDCWD, filepath.Join(stateDir, "dev", name), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return os.NewSyscallError("open_tree", err)
		}
		node := os.NewFile(uintptr(fd), name)
		err = nsexec.Bind(ns, node, "/dev/"+name)
		_ = node.Close() // the detached clone; the bind holds what it needs
		if err != nil {
			return fmt.Errorf("put /dev/%s into the container: %w", name, err)
		}
	}
	return nil
}
