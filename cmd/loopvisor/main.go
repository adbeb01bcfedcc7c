// Command loopvisor gives unprivileged sandboxes private loop devices. See
// README.md.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/supervisor"
	"github.com/loopvisor/loopvisor/supervisor/lxcconfig"
	"github.com/loopvisor/loopvisor/supervisor/ociconfig"
	"github.com/loopvisor/loopvisor/supervisor/sandboxinit"
)

const usage = `loopvisor: private loop devices for unprivileged containers

Usage:
  loopvisor run [flags] -- CMD [ARGS...]   run CMD in an unprivileged sandbox
  loopvisor agent --socket PATH [flags]    seccomp agent for runc/crun (listenerPath)
                                           and LXC (--lxc-socket, lxc.seccomp.notify.proxy)
  loopvisor oci-config --listener PATH [--metadata STR] CONFIG.json
                                           merge what loopvisor needs into a bundle's config
  loopvisor lxc-config --proxy PATH [--cookie STR] CONFIG
                                           merge what loopvisor needs into an LXC container's config
  loopvisor status [--socket PATH] [--json | --node-dir]
                                           list the agent's live instances, or print
                                           the directory of its loop-control and fuse nodes
  loopvisor gc [--wait D] [flags]          release what a killed supervisor left
  loopvisor help

Common flags:
  --state-dir DIR     journals and locks (default /run/loopvisor)
  --log-level LEVEL   panic|fatal|error|warn|info|debug|trace (default warn)
  --log-format FMT    text|json (default text)

run flags:
  --uid-map HOST[:COUNT]  host uids for the sandbox's 0..COUNT-1 (default: root's
                          first range in /etc/subuid, else 100000:65536; 0 refused)
  --gid-map HOST[:COUNT]  host gids likewise (default: /etc/subgid, else the uid map)
  --max-loop N            loop devices per sandbox (default 16); beyond: ENOSPC
  --max-loop-per-uid N    loop devices per host uid across all sandboxes (default 64)
  --fuse FSTYPE=HELPER    serve mounts of FSTYPE with a FUSE helper (repeatable; defaults:
                          ext2/ext3/ext4=fuse2fs, squashfs=squashfuse)
  --allow-kernel-mount FSTYPE[,FSTYPE]
                          mount FSTYPE with the kernel on the sandbox's behalf (nosuid,
                          nodev, idmapped where supported) instead of a FUSE helper
  --fuse-timeout D        how long a FUSE helper may take to come up (default 10s)
  --max-fuse N            FUSE mounts (helpers) running or starting per sandbox
                          (default 16); beyond: ENOSPC
  --no-mount              do not serve mount calls at all
  --bare                  same namespaces without loopvisor (to show what fails without it)
  --agent PATH            without root: the agent's --user-socket that serves the sandbox
                          (default /run/loopvisor-user/agent.sock); the sandbox's root is
                          the user's own uid, its ids 1..N the user's first /etc/subuid
                          range (newuidmap); only --uid-map/--gid-map (the sub range),
                          --bare and --no-mount apply, the agent's policy does the rest

agent flags: --socket PATH (default /run/loopvisor/agent.sock), --user-socket PATH
  (off by default: a mode-0666 socket for unprivileged users' runtimes and
  loopvisor run without root; its directory must be root's and not writable by
  others, e.g. /run/loopvisor-user/agent.sock), --max-user-containers N (live
  containers one user may have served through it, default 32), --max-loop,
  --max-loop-per-uid, --fuse, --allow-kernel-mount, --fuse-timeout, --max-fuse, --no-mount as
  for run; they are the defaults and the limits for every container. A container's
  listenerMetadata may narrow them: "max-loop=N;kernel-mount=no;mount=no".
  --lxc-socket PATH   also serve LXC's seccomp notify proxy protocol (SOCK_SEQPACKET) at
                      PATH, for lxc.seccomp.notify.proxy = unix:PATH (see lxc-config); the
                      container's lxc.seccomp.notify.cookie narrows the policy as
                      listenerMetadata does. Default: off.

oci-config flags:
  --listener PATH     the agent's socket (linux.seccomp.listenerPath), required
  --metadata STR      linux.seccomp.listenerMetadata (see agent)
  --flag NAME         add a seccomp flag the runtime knows (repeatable), e.g.
                      SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
  --no-mount          trap only loop ioctls (losetup), not mount calls
  --no-cap-sys-admin  do not add the user namespace's CAP_SYS_ADMIN (mount needs it)
  --state-dir DIR     the agent's state directory (its DIR/dev/loop-control and DIR/dev/fuse
                      are bind-mounted on the container's /dev); default: ask the running
                      agent at --listener, and refuse if none answers

lxc-config flags (CONFIG is the container's config file, rewritten in place; a second
run replaces what the first wrote):
  --proxy PATH        the agent's --lxc-socket (lxc.seccomp.notify.proxy = unix:PATH), required
  --cookie STR        lxc.seccomp.notify.cookie: the policy string (see agent's metadata)
  --profile PATH      where to write the merged seccomp profile (default CONFIG.seccomp)
  --base-profile PATH the profile to merge into (default: the lxc.seccomp.profile CONFIG
                      and the files it includes set last; none: a denylist of loopvisor's rules)
  --no-mount          trap only loop ioctls (losetup), not mount calls
  --state-dir DIR     the agent's state directory (its DIR/dev/loop-control and DIR/dev/fuse
                      are bind-mounted on the container's; default /run/loopvisor)
  The config gets lxc.hook.start-host = THIS-BINARY lxc-hook --state-dir DIR, which puts
  those nodes into the container's /dev before its init starts (LXC runs it as root).
`

func main() {
	sandboxinit.Maybe()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(cmdRun(os.Args[2:]))
	case "gc":
		os.Exit(cmdGC(os.Args[2:]))
	case "agent":
		os.Exit(cmdAgent(os.Args[2:]))
	case "oci-config":
		os.Exit(cmdOCIConfig(os.Args[2:]))
	case "lxc-config":
		os.Exit(cmdLXCConfig(os.Args[2:]))
	case "lxc-hook":
		os.Exit(cmdLXCHook(os.Args[2:]))
	case "status":
		os.Exit(cmdStatus(os.Args[2:]))
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "loopvisor: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// policyFlags are the mount policy flags of run and agent.
type policyFlags struct {
	fuse, kernel multiFlag
	noMount      *bool
	timeout      *time.Duration
	maxFuse      *int
}

func (pf *policyFlags) register(fs *flag.FlagSet) {
	fs.Var(&pf.fuse, "fuse", "FSTYPE=HELPER (repeatable)")
	fs.Var(&pf.kernel, "allow-kernel-mount", "FSTYPE[,FSTYPE]")
	pf.noMount = fs.Bool("no-mount", false, "do not serve mount calls")
	pf.timeout = fs.Duration("fuse-timeout", 10*time.Second, "how long a FUSE helper may take to come up")
	pf.maxFuse = fs.Int("max-fuse", mountproxy.DefaultMaxHelpers, "FUSE mounts (helpers) per sandbox; beyond: ENOSPC")
}

// policy returns the mount policy, or nil with --no-mount.
func (pf *policyFlags) policy() (*mountproxy.Policy, error) {
	if *pf.noMount {
		return nil, nil
	}
	p := mountproxy.DefaultPolicy()
	p.Timeout = *pf.timeout
	if *pf.maxFuse <= 0 {
		return nil, fmt.Errorf("--max-fuse %d: want at least 1", *pf.maxFuse)
	}
	p.MaxHelpers = *pf.maxFuse
	explicit := map[string]bool{}
	for _, f := range pf.fuse {
		if err := p.AddFuse(f); err != nil {
			return nil, err
		}
		explicit[strings.SplitN(f, "=", 2)[0]] = true
	}
	for _, k := range pf.kernel {
		if err := p.AllowKernel(k); err != nil {
			return nil, err
		}
	}
	if err := p.Resolve(explicit); err != nil {
		return nil, err
	}
	return &p, nil
}

type common struct {
	stateDir  string
	logLevel  string
	logFormat string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.stateDir, "state-dir", registry.DefaultStateDir, "state directory")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
}

func (c *common) logger() (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(c.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	switch c.logFormat {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	return log, nil
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "loopvisor: %v\n", err)
	return 125
}

func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var c common
	c.register(fs)
	uidMap := fs.String("uid-map", "", "HOST[:COUNT]")
	gidMap := fs.String("gid-map", "", "HOST[:COUNT]")
	maxLoop := fs.Int("max-loop", loopctl.DefaultLimits.MaxLoop, "loop devices per sandbox")
	bare := fs.Bool("bare", false, "no loopvisor: same namespaces, no filter (shows what fails without it)")
	var pf policyFlags
	pf.register(fs)
	maxUID := fs.Int("max-loop-per-uid", loopctl.DefaultLimits.MaxPerUID, "loop devices per host uid")
	agentSocket := fs.String("agent", supervisor.DefaultUserSocket, "without root: the agent's --user-socket that serves the sandbox")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "loopvisor run: no command given: loopvisor run [flags] -- CMD [ARGS...]")
		return 2
	}
	log, err := c.logger()
	if err != nil {
		return fail(err)
	}
	if os.Geteuid() != 0 {
		return runAsUser(fs, log, argv, *uidMap, *gidMap, *agentSocket, *bare, *pf.noMount)
	}
	uid, gid := supervisor.DefaultMaps()
	if *uidMap != "" {
		if uid, err = supervisor.ParseIDMap(*uidMap); err != nil {
			return fail(err)
		}
		if *gidMap == "" {
			gid = uid
		}
	}
	if *gidMap != "" {
		if gid, err = supervisor.ParseIDMap(*gidMap); err != nil {
			return fail(err)
		}
	}
	if *maxLoop < 1 || *maxUID < 1 {
		return fail(fmt.Errorf("--max-loop and --max-loop-per-uid must be at least 1"))
	}
	pol, err := pf.policy()
	if err != nil {
		return fail(err)
	}
	code, err := supervisor.Run(supervisor.RunConfig{
		Mounts: pol,
		Argv:   argv, UIDMap: uid, GIDMap: gid, StateDir: c.stateDir, Log: log, Bare: *bare,
		Limits: loopctl.Limits{MaxLoop: *maxLoop, MaxPerUID: *maxUID},
	})
	if err != nil {
		fail(err)
		if code == 0 {
			code = 125
		}
	}
	return code
}

// runAsUser is `loopvisor run` started by an unprivileged user: the
// sandbox's ids come from the user's subordinate ranges and the system
// agent's user socket serves it, under the agent's policy and limits.
func runAsUser(fs *flag.FlagSet, log *logrus.Logger, argv []string, uidMap, gidMap, socket string, bare, noMount bool) int {
	var bad []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "uid-map", "gid-map", "agent", "bare", "no-mount", "log-level", "log-format":
		default:
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return fail(fmt.Errorf("%s: without root the agent's policy and limits apply; only --uid-map, --gid-map, --agent, --bare and --no-mount can be given", strings.Join(bad, ", ")))
	}
	cfg := supervisor.UserRunConfig{Argv: argv, Socket: socket, Mount: !noMount, Bare: bare, Log: log}
	var err error
	if uidMap != "" {
		if cfg.UIDMap, err = supervisor.ParseIDMap(uidMap); err != nil {
			return fail(err)
		}
	}
	if gidMap != "" {
		if cfg.GIDMap, err = supervisor.ParseIDMap(gidMap); err != nil {
			return fail(err)
		}
	}
	code, err := supervisor.RunAsUser(cfg)
	if err != nil {
		fail(err)
		if code == 0 {
			code = 125
		}
	}
	return code
}

func cmdGC(args []string) int {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	var c common
	c.register(fs)
	wait := fs.Duration("wait", 3*time.Second, "how long to wait for a busy device of a dead sandbox")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := c.logger()
	if err != nil {
		return fail(err)
	}
	host, err := loopctl.OpenHost()
	if err != nil {
		return fail(err)
	}
	defer func() { _ = host.Close() }()
	reg, err := registry.Open(c.stateDir)
	if err != nil {
		return fail(err)
	}
	released, left := supervisor.GC(host, reg, logrus.NewEntry(log), *wait)
	fmt.Printf("gc: released %d loop devices, %d still in use\n", released, left)
	if left > 0 {
		return 1
	}
	return 0
}

const defaultSocket = "/run/loopvisor/agent.sock"

func cmdAgent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var c common
	c.register(fs)
	socket := fs.String("socket", defaultSocket, "unix socket the runtimes connect to")
	userSocket := fs.String("user-socket", "", "unix socket (mode 0666) unprivileged users' runtimes connect to")
	maxUserCtr := fs.Int("max-user-containers", supervisor.DefaultMaxUserContainers, "live containers one user may have served through --user-socket")
	lxcSocket := fs.String("lxc-socket", "", "SOCK_SEQPACKET socket for LXC's seccomp notify proxy (off if empty)")
	maxLoop := fs.Int("max-loop", loopctl.DefaultLimits.MaxLoop, "loop devices per container (and the most metadata may ask for)")
	maxUID := fs.Int("max-loop-per-uid", loopctl.DefaultLimits.MaxPerUID, "loop devices per host uid")
	var pf policyFlags
	pf.register(fs)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("agent must run as root"))
	}
	log, err := c.logger()
	if err != nil {
		return fail(err)
	}
	pol, err := pf.policy()
	if err != nil {
		return fail(err)
	}
	if *maxLoop < 1 || *maxUID < 1 {
		return fail(fmt.Errorf("--max-loop and --max-loop-per-uid must be at least 1"))
	}
	a, err := supervisor.NewAgent(supervisor.AgentConfig{
		StateDir: c.stateDir, Log: log, Mounts: pol, MaxUserContainers: *maxUserCtr,
		Limits: loopctl.Limits{MaxLoop: *maxLoop, MaxPerUID: *maxUID},
	})
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	ln, activated, err := agentListener(*socket)
	if err != nil {
		return fail(err)
	}
	var lxcLn *net.UnixListener
	if *lxcSocket != "" {
		if lxcLn, err = supervisor.ListenLXC(*lxcSocket); err != nil {
			_ = ln.Close()
			return fail(err)
		}
		defer func() { _ = os.Remove(*lxcSocket) }()
		go func() {
			if err := a.ServeLXC(lxcLn); err != nil {
				log.WithError(err).Error("LXC proxy socket failed")
			}
		}()
		log.WithField("lxc_socket", *lxcSocket).Info("serving LXC's seccomp notify proxy")
	}
	stopUsers := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.WithField("signal", s.String()).Info("agent stopping; live containers keep their devices until the next agent reclaims them")
		_ = ln.Close()
		if lxcLn != nil {
			_ = lxcLn.Close()
		}
	}()
	if *userSocket != "" {
		uln, err := supervisor.ListenUsers(*userSocket)
		if err != nil {
			_ = ln.Close()
			return fail(err)
		}
		defer func() { _ = os.Remove(*userSocket) }()
		go func() {
			if err := a.ServeUsers(uln); err != nil {
				log.WithError(err).Error("user socket failed")
			}
		}()
		go func() {
			// The root socket's end ends the user socket too.
			<-stopUsers
			_ = uln.Close()
		}()
		log.WithField("socket", *userSocket).Info("agent listening for unprivileged users")
	}
	log.WithField("socket", *socket).Info("agent listening")
	err = a.Serve(ln)
	close(stopUsers)
	if err != nil {
		return fail(err)
	}
	if !activated {
		_ = os.Remove(*socket)
	}
	return 0
}

// agentListener returns the socket systemd passed (socket activation,
// LISTEN_FDS=1) or a new one at path.
func agentListener(path string) (*net.UnixListener, bool, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") == "1" {
		_ = os.Unsetenv("LISTEN_PID")
		_ = os.Unsetenv("LISTEN_FDS")
		_ = os.Unsetenv("LISTEN_FDNAMES")
		l, err := net.FileListener(os.NewFile(3, "systemd-socket"))
		if err != nil {
			return nil, false, fmt.Errorf("socket from systemd: %w", err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			return nil, false, fmt.Errorf("socket from systemd is not a unix stream socket")
		}
		return ul, true, nil
	}
	ln, err := supervisor.Listen(path)
	return ln, false, err
}

func cmdOCIConfig(args []string) int {
	fs := flag.NewFlagSet("oci-config", flag.ContinueOnError)
	listener := fs.String("listener", "", "agent socket (listenerPath)")
	metadata := fs.String("metadata", "", "listenerMetadata")
	var flags multiFlag
	fs.Var(&flags, "flag", "seccomp flag to add (repeatable)")
	noMount := fs.Bool("no-mount", false, "trap loop ioctls only")
	noCap := fs.Bool("no-cap-sys-admin", false, "do not add CAP_SYS_ADMIN")
	stateDir := fs.String("state-dir", "", "the agent's state directory (default: ask the agent at --listener)")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *listener == "" {
		fmt.Fprintln(os.Stderr, "usage: loopvisor oci-config --listener PATH [--state-dir DIR] [--metadata STR] CONFIG.json")
		return 2
	}
	dir, err := agentStateDir(*listener, *stateDir)
	if err != nil {
		return fail(err)
	}
	notes, err := ociconfig.RewriteFile(fs.Arg(0), ociconfig.Options{
		Listener: *listener, StateDir: dir, Metadata: *metadata, Flags: flags, NoMount: *noMount, NoCapSysAdmin: *noCap,
	})
	if err != nil {
		return fail(err)
	}
	for _, n := range notes {
		fmt.Fprintf(os.Stderr, "loopvisor oci-config: note: %s\n", n)
	}
	return 0
}

// agentStateDir returns the state directory of the agent at socket, whose
// nodes oci-config bind-mounts: flagDir when given (the agent may not run
// yet, or socket may be a manager's of its own that serves listeners with
// the library: it is not asked then), else the agent's own word. No
// answer without flagDir is an error: guessing /run/loopvisor would only
// fail later, in the runtime ("failed to open mount source").
func agentStateDir(socket, flagDir string) (string, error) {
	if flagDir != "" {
		return flagDir, nil
	}
	info, err := supervisor.QueryInfo(socket)
	if err != nil {
		return "", fmt.Errorf("oci-config: cannot ask the agent at %s for its state directory (%w); start the agent first, or give --state-dir DIR (the agent's --state-dir, default %s)", socket, err, registry.DefaultStateDir)
	}
	return info.StateDir, nil
}

func cmdLXCConfig(args []string) int {
	fs := flag.NewFlagSet("lxc-config", flag.ContinueOnError)
	proxy := fs.String("proxy", "", "the agent's --lxc-socket")
	cookie := fs.String("cookie", "", "lxc.seccomp.notify.cookie (policy)")
	profile := fs.String("profile", "", "where to write the seccomp profile (default CONFIG.seccomp)")
	base := fs.String("base-profile", "", "profile to merge into (default: the config's lxc.seccomp.profile)")
	noMount := fs.Bool("no-mount", false, "trap loop ioctls only")
	stateDir := fs.String("state-dir", registry.DefaultStateDir, "the agent's state directory")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *proxy == "" {
		fmt.Fprintln(os.Stderr, "usage: loopvisor lxc-config --proxy PATH [--cookie STR] CONFIG")
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	notes, err := lxcconfig.RewriteFile(fs.Arg(0), lxcconfig.Options{
		Loopvisor: self, Proxy: *proxy, Cookie: *cookie, Profile: *profile, BaseProfile: *base, NoMount: *noMount, StateDir: *stateDir,
	})
	if err != nil {
		return fail(err)
	}
	for _, n := range notes {
		fmt.Fprintf(os.Stderr, "loopvisor lxc-config: note: %s\n", n)
	}
	return 0
}

// cmdLXCHook is LXC's lxc.hook.start-host (written by lxc-config): it puts
// the agent's /dev/loop-control and /dev/fuse into the container LXC_PID.
// LXC appends the container name, "lxc" and the hook type as arguments.
func cmdLXCHook(args []string) int {
	fs := flag.NewFlagSet("lxc-hook", flag.ContinueOnError)
	stateDir := fs.String("state-dir", registry.DefaultStateDir, "the agent's state directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Hook version 0 (LXC's default) passes the type as the last argument,
	// version 1 in LXC_HOOK_TYPE.
	typ := os.Getenv("LXC_HOOK_TYPE")
	if fs.NArg() > 0 && typ == "" {
		typ = fs.Arg(fs.NArg() - 1)
	}
	pid, err := strconv.Atoi(os.Getenv("LXC_PID"))
	if err != nil || pid <= 0 || typ != "start-host" {
		return fail(fmt.Errorf("lxc-hook runs as LXC's lxc.hook.start-host (LXC_PID %q, hook type %q)", os.Getenv("LXC_PID"), typ))
	}
	if err := supervisor.PublishLXCNodes(*stateDir, pid); err != nil {
		return fail(fmt.Errorf("lxc-hook: %w", err))
	}
	return 0
}

func cmdStatus(args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket, "agent socket")
	asJSON := fs.Bool("json", false, "print JSON")
	nodeDir := fs.Bool("node-dir", false, "print the agent's node directory (for bind mounts)")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *nodeDir {
		info, err := supervisor.QueryInfo(*socket)
		if err != nil {
			return fail(err)
		}
		fmt.Println(info.NodeDir)
		return 0
	}
	st, err := supervisor.QueryStatus(*socket)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	if len(st) == 0 {
		fmt.Println("no live instances")
		return 0
	}
	for _, s := range st {
		fmt.Printf("container %s  instance %s  pid %d  processes %d  devices %d/%d  since %s\n",
			s.Container, s.Instance, s.Pid, s.Processes, len(s.Devices), s.MaxLoop, s.Since.Format(time.RFC3339))
		for _, d := range s.Devices {
			b := d.Backing
			if b == "" {
				b = "(unbound)"
			}
			fmt.Printf("  /dev/%s  %s\n", d.Name, b)
		}
		for _, m := range s.Mounts {
			fmt.Printf("  mount %s  helper %s (pid %d)\n", m.Target, m.Helper, m.HelperPid)
		}
	}
	return 0
}
