package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/notify"
)

// ContainerProcessState is what an OCI runtime sends to
// linux.seccomp.listenerPath (runtime-spec, config-linux.md), with one
// SCM_RIGHTS fd per entry of Fds.
type ContainerProcessState struct {
	Version  string   `json:"ociVersion"`
	Fds      []string `json:"fds"`
	Pid      int      `json:"pid"`
	Metadata string   `json:"metadata"`
	State    struct {
		Version     string            `json:"ociVersion"`
		ID          string            `json:"id"`
		Status      string            `json:"status"`
		Pid         int               `json:"pid"`
		Bundle      string            `json:"bundle"`
		Annotations map[string]string `json:"annotations"`
	} `json:"state"`
}

// AgentConfig configures `loopvisor agent`.
type AgentConfig struct {
	Socket   string
	StateDir string
	Limits   loopctl.Limits
	Mounts   *mountproxy.Policy // nil: mount calls are answered CONTINUE
	Log      *logrus.Logger
}

// Agent serves the seccomp listeners OCI runtimes hand it, one instance per
// container.
type Agent struct {
	cfg  AgentConfig
	host *loopctl.Host
	reg  *loopctl.Registry
	log  *logrus.Entry

	mu         sync.Mutex
	containers map[string]*container
	closing    sync.WaitGroup // instances being released
	stop       chan struct{}
}

type container struct {
	id        string
	pid       int
	in        *loopctl.Instance
	mounts    *mountproxy.Proxy
	ns        *mountproxy.NS
	userNS    *os.File
	listeners int
	closing   bool
	started   time.Time
	log       *logrus.Entry
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
	reg, err := loopctl.OpenRegistry(cfg.StateDir)
	if err != nil {
		host.Close()
		return nil, err
	}
	a := &Agent{cfg: cfg, host: host, reg: reg, log: logrus.NewEntry(cfg.Log), containers: map[string]*container{}}
	if err := ensureLoopControlNode(reg.Dir); err != nil {
		host.Close()
		return nil, err
	}
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
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go a.handleConn(conn)
	}
}

// Listen creates the agent's socket (mode 0600; a stale socket is replaced).
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another agent is listening there", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// statusRequest is what `loopvisor status` sends instead of a runtime's
// ContainerProcessState.
const statusRequest = `{"loopvisor":"status"}`

func (a *Agent) handleConn(conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*16))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		a.log.WithError(err).Warn("agent: reading a runtime message")
		return
	}
	fds := parseFds(oob[:oobn])
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	msg := buf[:n]
	if strings.TrimSpace(string(msg)) == statusRequest {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_ = json.NewEncoder(conn).Encode(a.Status())
		return
	}
	// A runtime may write the state in more than one chunk; the fds come
	// with the first.
	for !json.Valid(msg) {
		m, err := conn.Read(buf)
		if err != nil || m == 0 {
			a.log.Warn("agent: truncated runtime message")
			return
		}
		msg = append(msg, buf[:m]...)
	}
	var st ContainerProcessState
	if err := json.Unmarshal(msg, &st); err != nil {
		a.log.WithError(err).Warn("agent: malformed runtime message")
		return
	}
	idx := -1
	for i, name := range st.Fds {
		if name == "seccompFd" && i < len(fds) {
			idx = i
		}
	}
	if idx < 0 {
		a.log.WithField("container", st.State.ID).Warn("agent: no seccompFd in the runtime message")
		return
	}
	lfd := fds[idx]
	fds[idx] = -1
	if err := a.attach(&st, lfd); err != nil {
		a.log.WithError(err).WithFields(logrus.Fields{"container": st.State.ID, "pid": st.Pid}).
			Error("agent: cannot serve this container; its loop and mount calls will fail with ENOSYS")
	}
}

func parseFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var out []int
	for i := range msgs {
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			out = append(out, fds...)
		}
	}
	for _, fd := range out {
		unix.CloseOnExec(fd)
	}
	return out
}

// attach serves listener fd lfd for the container st describes, creating the
// container's instance on its first process.
func (a *Agent) attach(st *ContainerProcessState, lfd int) error {
	// state.pid is the container's init; pid is the process that loaded
	// this filter (an exec'd process; crun sends 0 for exec).
	pid := st.State.Pid
	if pid <= 0 {
		pid = st.Pid
	}
	return a.Attach(st.State.ID, pid, st.Metadata, st.State.Status, lfd)
}

// Attach serves seccomp listener lfd (which it takes over) for container id
// whose init is pid. The first listener of a container creates its
// instance (policy narrowed by metadata, as listenerMetadata is); later
// ones (exec'd processes; pid may be 0 for them) join it. The instance is
// released when no
// process uses any of its listeners. This is the library entry point for a
// container manager that receives listener fds itself.
//
// Preconditions: the filter behind lfd traps what loopvisor serves (see
// RewriteOCIConfig or notify.Program); the container has a user namespace
// whose root is not host root.
func (a *Agent) Attach(id string, pid int, metadata, status string, lfd int) error {
	st := &ContainerProcessState{Metadata: metadata}
	st.State.Status = status
	if id == "" {
		unix.Close(lfd)
		return errors.New("attach: a container id is required")
	}
	l, err := notify.NewListener(lfd)
	if err != nil {
		return err
	}
	a.mu.Lock()
	c := a.containers[id]
	if c != nil && c.closing {
		a.mu.Unlock()
		l.Close()
		return fmt.Errorf("container %s is being released; a new process of it cannot join", id)
	}
	if c == nil && pid <= 0 {
		a.mu.Unlock()
		l.Close()
		return fmt.Errorf("attach: container %s is new, and the pid of its init is unknown", id)
	}
	if c == nil {
		c, err = a.newContainer(id, pid, st.Metadata)
		if err != nil {
			a.mu.Unlock()
			l.Close()
			return err
		}
		a.containers[id] = c
	}
	c.listeners++
	a.mu.Unlock()
	c.log.WithFields(logrus.Fields{"pid": pid, "status": st.State.Status, "sync_wakeup": l.SyncWake}).Info("serving a container process")
	go func() {
		sb := &Sandbox{Instance: c.in, Mounts: c.mounts, Log: c.log}
		if err := Serve(l, sb); err != nil {
			c.log.WithError(err).Warn("serving stopped with an error")
		}
		l.Close()
		a.release(c)
	}()
	return nil
}

// release ends a container's instance once no process uses any of its
// listeners.
func (a *Agent) release(c *container) {
	a.mu.Lock()
	c.listeners--
	last := c.listeners == 0
	if last {
		c.closing = true
		a.closing.Add(1)
		defer a.closing.Done()
	}
	a.mu.Unlock()
	if !last {
		return
	}
	// The instance stays listed (closing) until its devices are released.
	defer func() {
		a.mu.Lock()
		if a.containers[c.id] == c {
			delete(a.containers, c.id)
		}
		a.mu.Unlock()
	}()
	if c.mounts != nil {
		c.mounts.Close()
	}
	if err := c.in.Close(2 * time.Second); err != nil {
		c.log.WithError(err).Warn("cleanup incomplete")
	}
	c.ns.Close()
	c.userNS.Close()
	c.log.Info("container gone; instance released")
}

// hostRoot returns the host uid and gid that uid 0 of pid's user namespace
// maps to.
func hostRoot(pid int) (uid, gid int, err error) {
	get := func(file string) (int, error) {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/" + file)
		if err != nil {
			return -1, err
		}
		defer f.Close()
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

func (a *Agent) newContainer(id string, pid int, metadata string) (*container, error) {
	uid, gid, err := hostRoot(pid)
	if err != nil {
		return nil, err
	}
	if uid == 0 {
		return nil, errors.New("the container's root is host root: loopvisor serves only containers with a user namespace mapping root to an unprivileged uid")
	}
	limits, pol, err := a.policyFor(metadata)
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	ns, err := mountproxy.OpenNS(pid, pidfd)
	unix.Close(pidfd)
	if err != nil {
		return nil, err
	}
	userNS, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/user")
	if err != nil {
		ns.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(userNS.Fd()), &st); err != nil {
		ns.Close()
		userNS.Close()
		return nil, err
	}
	log := a.log.WithField("container", id)
	in, err := loopctl.NewInstance(a.host, a.reg, loopctl.Config{
		ID: NewID(), Container: id, ContainerPid: pid, HostUID: uid, HostGID: gid, Limits: limits, Log: log,
	})
	if err != nil {
		ns.Close()
		userNS.Close()
		return nil, err
	}
	in.UserNS = st.Ino
	c := &container{id: id, pid: pid, in: in, ns: ns, userNS: userNS, started: time.Now(), log: log.WithField("instance", in.ID)}
	in.View.Publish = func(name string, node *os.File) error {
		return mountproxy.Bind(c.ns, node, "/dev/"+name)
	}
	in.View.Unpublish = func(name string) {
		if err := mountproxy.Unbind(c.ns, "/dev/"+name); err != nil {
			c.log.WithError(err).WithField("node", name).Debug("cannot remove node from the container's /dev")
		}
	}
	if err := c.publishStatic(); err != nil {
		_ = in.Close(time.Second)
		ns.Close()
		userNS.Close()
		return nil, err
	}
	if pol != nil {
		c.mounts = mountproxy.New(*pol, in, userNS, c.log)
		c.mounts.KeepHelpers = true
	}
	c.log.WithFields(logrus.Fields{"host_uid": uid, "max_loop": limits.MaxLoop, "mounts": pol != nil}).Info("container instance created")
	return c, nil
}

// publishStatic puts the instance's /dev/loop-control and sysfs views into
// the container.
func (c *container) publishStatic() error {
	node, err := c.in.View.Clone(loopctl.ViewDev + "/loop-control")
	if err != nil {
		return err
	}
	defer node.Close()
	if err := mountproxy.Bind(c.ns, node, "/dev/loop-control"); err != nil {
		return fmt.Errorf("put /dev/loop-control into the container: %w", err)
	}
	for _, m := range loopctl.ViewMounts[1:] { // /sys/...: /dev is the container's own
		v, err := c.in.View.Clone(m.Dir)
		if err != nil {
			return err
		}
		err = mountproxy.Move(c.ns, v, m.Target)
		v.Close()
		if err != nil {
			c.log.WithError(err).WithField("target", m.Target).Warn("cannot filter the container's sysfs view; it shows every loop device (names only)")
		}
	}
	return nil
}

// policyFor applies a container's listenerMetadata to the agent's policy.
// Metadata is "key=value" pairs separated by ';': max-loop=N (at most the
// agent's --max-loop), kernel-mount=no (serve every type with FUSE helpers
// or not at all), mount=no (leave mount calls to the kernel).
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
		case "mount":
			if v != "no" {
				return limits, nil, fmt.Errorf("listenerMetadata %q: only mount=no can be asked for", kv)
			}
			pol = nil
		default:
			return limits, nil, fmt.Errorf("listenerMetadata %q: unknown key (known: max-loop, kernel-mount, mount)", kv)
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
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []InstanceStatus
	for _, c := range a.containers {
		s := InstanceStatus{Container: c.id, Instance: c.in.ID, Pid: c.pid, Processes: c.listeners, Since: c.started, MaxLoop: c.in.MaxLoop(), Closing: c.closing}
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
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out
}

// QueryStatus asks the agent at socket for its status.
func QueryStatus(socket string) ([]InstanceStatus, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no agent at %s: %w (is loopvisor agent running?)", socket, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(statusRequest)); err != nil {
		return nil, err
	}
	var out []InstanceStatus
	if err := json.NewDecoder(conn).Decode(&out); err != nil {
		return nil, fmt.Errorf("agent status: %w", err)
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
	a.host.Close()
}

// ensureLoopControlNode makes the nodes oci-config bind-mounts on a
// container's /dev/loop-control and /dev/fuse (the host's /dev/fuse may be
// 0600, which a runtime's bind of it keeps): nodes on a tmpfs of the
// agent's own (the state directory may sit on a nodev file system), mode
// 0666 so any container root can open it, in a directory only root can
// reach. Every loop-control command from a container is trapped and served
// by its instance; the agent replaces the node with the instance's own
// (0600, owned by the container's root) as soon as it gets the container.
func ensureLoopControlNode(stateDir string) error {
	dir := filepath.Join(stateDir, "dev")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var sfs, parent unix.Stat_t
	if err := unix.Stat(dir, &sfs); err != nil {
		return err
	}
	if err := unix.Stat(stateDir, &parent); err != nil {
		return err
	}
	if sfs.Dev == parent.Dev { // not mounted yet
		if err := unix.Mount("loopvisor-dev", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0700,size=64k"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"loop-control", loopctl.MiscMajor, loopctl.LoopCtlMinor}, {"fuse", 10, 229}} {
		node := filepath.Join(dir, n.name)
		var st unix.Stat_t
		if unix.Lstat(node, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(n.major, n.minor) {
			_ = os.Remove(node)
			if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
				return fmt.Errorf("mknod %s: %w", node, err)
			}
		}
		if err := os.Chmod(node, 0o666); err != nil {
			return err
		}
	}
	return nil
}
