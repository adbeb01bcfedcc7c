// Command loopvisor gives unprivileged sandboxes private loop devices. See
// README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/mountproxy"
	"github.com/loopvisor/loopvisor/supervisor"
)

const usage = `loopvisor: private loop devices for unprivileged containers

Usage:
  loopvisor run [flags] -- CMD [ARGS...]   run CMD in an unprivileged sandbox
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
  --no-mount              do not serve mount calls at all
  --bare                  same namespaces without loopvisor (to show what fails without it)
`

func main() {
	supervisor.MaybeInit()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(cmdRun(os.Args[2:]))
	case "gc":
		os.Exit(cmdGC(os.Args[2:]))
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

type common struct {
	stateDir  string
	logLevel  string
	logFormat string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.stateDir, "state-dir", loopctl.DefaultStateDir, "state directory")
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
	var fuseFlags, kernelFlags multiFlag
	fs.Var(&fuseFlags, "fuse", "FSTYPE=HELPER (repeatable)")
	fs.Var(&kernelFlags, "allow-kernel-mount", "FSTYPE[,FSTYPE]")
	noMount := fs.Bool("no-mount", false, "do not serve mount calls")
	fuseTimeout := fs.Duration("fuse-timeout", 10*time.Second, "how long a FUSE helper may take to come up")
	maxUID := fs.Int("max-loop-per-uid", loopctl.DefaultLimits.MaxPerUID, "loop devices per host uid")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "loopvisor run: no command given: loopvisor run [flags] -- CMD [ARGS...]")
		return 2
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("run must be started as root (it maps the sandbox to an unprivileged uid itself)"))
	}
	log, err := c.logger()
	if err != nil {
		return fail(err)
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
	var pol *mountproxy.Policy
	if !*noMount {
		p := mountproxy.DefaultPolicy()
		p.Timeout = *fuseTimeout
		explicit := map[string]bool{}
		for _, f := range fuseFlags {
			if err := p.AddFuse(f); err != nil {
				return fail(err)
			}
			explicit[strings.SplitN(f, "=", 2)[0]] = true
		}
		for _, k := range kernelFlags {
			if err := p.AllowKernel(k); err != nil {
				return fail(err)
			}
		}
		if err := p.Resolve(explicit); err != nil {
			return fail(err)
		}
		pol = &p
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
	defer host.Close()
	reg, err := loopctl.OpenRegistry(c.stateDir)
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
