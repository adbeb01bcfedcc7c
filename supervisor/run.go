package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/loopvisor/loopvisor/loopctl/view"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/notify"
	"github.com/loopvisor/loopvisor/supervisor/sandboxinit"
)

// RunConfig is what `loopvisor run` needs.
type RunConfig struct {
	Argv     []string
	UIDMap   IDMap
	GIDMap   IDMap
	StateDir string
	Limits   loopctl.Limits
	Log      *logrus.Logger
	// Mounts is the mount policy; nil leaves mount calls untrapped.
	Mounts *mountproxy.Policy
	// Bare runs the same namespaces without loopvisor: no filter, no
	// private /dev. It exists to show that a command needs loopvisor.
	Bare bool
	// CleanupTimeout bounds how long Run waits for the sandbox's last
	// closes before it leaves devices to gc.
	CleanupTimeout time.Duration
}

// NewID returns a fresh instance id.
func NewID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run runs cfg.Argv in a new sandbox and returns its exit status.
func Run(cfg RunConfig) (int, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.UIDMap.Host == 0 || cfg.GIDMap.Host == 0 {
		return 0, errors.New("the sandbox's root must map to an unprivileged host uid/gid, not 0")
	}
	if cfg.CleanupTimeout == 0 {
		cfg.CleanupTimeout = 2 * time.Second
	}
	host, err := loopctl.OpenHost()
	if err != nil {
		return 0, err
	}
	defer func() { _ = host.Close() }()
	reg, err := registry.Open(cfg.StateDir)
	if err != nil {
		return 0, err
	}
	// Briefly: a device still in use (mounted on the host, say) must not
	// slow every start; loopvisor gc --wait is there for the patient.
	GC(host, reg, cfg.Log.WithField("phase", "start"), 200*time.Millisecond)
	if cfg.Mounts != nil && cfg.Mounts.CacheDir == "" {
		pol := *cfg.Mounts
		pol.CacheDir = reg.Dir // host root's only: helpers' file lists
		cfg.Mounts = &pol
	}
	if cfg.Bare {
		return runBare(cfg)
	}

	id := NewID()
	log := cfg.Log.WithField("instance", id)
	in, err := loopctl.NewInstance(host, reg, loopctl.Config{
		ID: id, HostUID: cfg.UIDMap.Host, HostGID: cfg.GIDMap.Host, Limits: cfg.Limits, Log: cfg.Log.WithFields(nil),
	})
	if err != nil {
		return 0, fmt.Errorf("create instance: %w", err)
	}
	code, err := runSandbox(cfg, in, log)
	// A cleanup error is logged whatever the sandbox's fate: it says
	// which devices gc still has to release.
	if cerr := in.Close(cfg.CleanupTimeout); cerr != nil {
		log.WithError(cerr).Warn("cleanup incomplete")
	}
	return code, err
}

func runSandbox(cfg RunConfig, in *loopctl.Instance, log *logrus.Entry) (int, error) {
	ours, theirs, err := initPair()
	if err != nil {
		return 0, err
	}
	defer func() { _ = ours.Close() }()

	extra := []*os.File{theirs}
	dirs := make([]string, 0, len(view.Mounts)+len(view.ProcFiles))
	for _, m := range view.Mounts {
		dirs = append(dirs, m.Dir)
	}
	for _, m := range view.ProcFiles {
		dirs = append(dirs, m.File)
	}
	for _, d := range dirs {
		f, err := in.View.Clone(d)
		if err != nil {
			_ = theirs.Close()
			closeAll(extra[1:])
			return 0, err
		}
		extra = append(extra, f)
	}
	initArgs := []string{sandboxinit.Arg}
	if cfg.Mounts != nil {
		initArgs = append(initArgs, "--mount")
	}
	cmd := initCommand(initArgs, cfg.Argv, extra, sandboxAttr(cfg))
	// Signals for the sandbox are forwarded to its init from the moment it
	// exists.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, sandboxinit.Forwarded...)
	defer signal.Stop(sigs)

	err = cmd.Start()
	closeAll(extra)
	if err != nil {
		return 0, fmt.Errorf("start sandbox: %w", err)
	}
	log = log.WithField("init_pid", cmd.Process.Pid)
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	// abort kills the sandbox's init after a failed set-up and reaps it.
	abort := func() {
		_ = cmd.Process.Kill()
		if werr := <-waitc; werr != nil {
			log.WithError(werr).Debug("sandbox init killed after a failed set-up")
		}
	}

	lfd, err := recvListener(ours, waitc)
	if err != nil {
		abort()
		return exitCode(cmd), fmt.Errorf("sandbox set-up failed: %w", err)
	}
	// One sandbox, one listener: served on a thread of its own.
	l, err := notify.NewBlockingListener(lfd)
	if err != nil {
		abort()
		return 0, err
	}
	defer func() { _ = l.Close() }()
	userNS, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		abort()
		return 0, err
	}
	defer func() { _ = userNS.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(userNS.Fd()), &st); err != nil {
		abort()
		return 0, err
	}
	in.UserNS = st.Ino
	sb := &Sandbox{Instance: in, Log: log}
	if cfg.Mounts != nil {
		pol := *cfg.Mounts
		pol.NewAPI = true // the filter run installs traps fsconfig and fsmount
		sb.Mounts = mountproxy.New(pol, in, userNS, log)
		defer sb.Mounts.Close()
		// One sandbox per process: its first FUSE mount need not pay for
		// what every mount of the process shares. Prepared in the
		// background from the sandbox's first trapped call (a loop
		// device comes before any mount of one), on the CPU the sandbox
		// leaves idle while it attaches and makes its file systems.
		sb.Warm = sb.Mounts.Prewarm
	}
	log.WithFields(logrus.Fields{"sync_wakeup": l.SyncWake, "uid_map": fmt.Sprintf("0:%d:%d", cfg.UIDMap.Host, cfg.UIDMap.Size)}).Info("sandbox started")

	servec := make(chan error, 1)
	go func() { servec <- Serve(l, sb) }()
	if _, err := ours.Write([]byte{'A'}); err != nil {
		_ = cmd.Process.Kill()
	}
	werr := forwardSignals(cmd, sigs, waitc)
	// The pid namespace died with its init; the listener hangs up once the
	// last task is reaped.
	select {
	case err := <-servec:
		if err != nil {
			log.WithError(err).Warn("serving stopped with an error")
		}
	case <-time.After(5 * time.Second):
		log.Warn("listener still in use 5s after the sandbox died")
	}
	code := exitCode(cmd)
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) {
		log.WithError(werr).Warn("waiting for the sandbox's init failed")
	}
	log.WithField("status", code).Info("sandbox exited")
	return code, nil
}

// initPair makes the socket pair between the supervisor and the sandbox's
// init: ours stays here, theirs is the init's.
func initPair() (ours, theirs *os.File, err error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(pair[0]), "sandbox"), os.NewFile(uintptr(pair[1]), "supervisor"), nil
}

// initCommand is the sandbox's init: this program again, as
// loopvisor-init with args, to run argv on the supervisor's stdio, with
// extra as its fds from 3 and attr's namespaces.
func initCommand(args, argv []string, extra []*os.File, attr *syscall.SysProcAttr) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", append(append(args, "--"), argv...)...)
	cmd.Args[0] = "loopvisor-init"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = attr
	return cmd
}

// forwardSignals forwards the signals from sigs to cmd's process until
// waitc delivers the end of its wait, and returns that. With a terminal
// on stdin, SIGINT and SIGQUIT are not forwarded: the terminal told the
// sandbox itself.
func forwardSignals(cmd *exec.Cmd, sigs <-chan os.Signal, waitc <-chan error) error {
	_, ttyErr := unix.IoctlGetTermios(0, unix.TCGETS)
	for {
		select {
		case s := <-sigs:
			if ttyErr == nil && (s == unix.SIGINT || s == unix.SIGQUIT) {
				continue
			}
			_ = cmd.Process.Signal(s)
		case werr := <-waitc:
			return werr
		}
	}
}

func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return 125
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// recvListener waits for the sandbox init's listener fd.
func recvListener(sock *os.File, waitc chan error) (int, error) {
	type res struct {
		fd  int
		err error
	}
	rc := make(chan res, 1)
	go func() {
		buf := make([]byte, 1)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			rc <- res{-1, err}
			return
		}
		if n == 0 {
			rc <- res{-1, errors.New("sandbox init exited before loading the filter")}
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			rc <- res{-1, errors.New("no listener fd from sandbox init")}
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			rc <- res{-1, errors.New("no listener fd from sandbox init")}
			return
		}
		rc <- res{fds[0], nil}
	}()
	select {
	case r := <-rc:
		return r.fd, r.err
	case err := <-waitc:
		waitc <- err
		return -1, errors.New("sandbox init exited before loading the filter")
	case <-time.After(30 * time.Second):
		return -1, errors.New("sandbox init did not load the filter within 30s")
	}
}

// runBare runs cfg.Argv in the sandbox's namespaces with no supervision.
func runBare(cfg RunConfig) (int, error) {
	cmd := exec.Command("/proc/self/exe", append([]string{sandboxinit.Arg, "--bare", "--"}, cfg.Argv...)...)
	cmd.Args[0] = "loopvisor-init"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer func() { _ = devnull.Close() }()
	cmd.ExtraFiles = []*os.File{devnull}
	cmd.SysProcAttr = sandboxAttr(cfg)
	err = cmd.Run()
	if cmd.ProcessState == nil {
		return 0, err
	}
	return exitCode(cmd), nil
}

func sandboxAttr(cfg RunConfig) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: cfg.UIDMap.Host, Size: cfg.UIDMap.Size}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: cfg.GIDMap.Host, Size: cfg.GIDMap.Size}},
		GidMappingsEnableSetgroups: true,
		// Without setuid(0) after the maps are written the child would keep
		// the unmapped host uid 0 (shown as nobody), whose file accesses
		// still pass owner checks as host root.
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:  unix.SIGKILL,
	}
}
