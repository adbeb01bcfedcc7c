// Command bench prints loopvisor's speed figures as ratios against baselines
// measured in the same run (`make bench`).
//
// It measures, with one small C probe (csrc/probe.c, compiled at run time) whose
// timed loops contain nothing but the system call:
//
//   - the floor of a trapped call: a C seccomp-notify ping-pong with sync
//     wake-up (csrc/pingfloor.c) under the filter a sandbox loads
//     (notify.Program); the probe calls ioctl(/dev/null, LOOP_CTL_GET_FREE)
//     and the C supervisor answers every notification at once with 0;
//   - the same with a Go supervisor on the project's notify package, its
//     listener served as `loopvisor run` serves one (the Go ping-pong);
//   - the same call as loopvisor serves it: the probe runs in `loopvisor run`
//     and calls ioctl(/dev/loop-control, LOOP_CTL_GET_FREE);
//   - non-trapped system calls (getppid, an ioctl the filter lets through) with
//     no filter, under the bare filter, and in the sandbox.
//
// and, with a second probe (csrc/mountprobe.c, see mount.go), the mount
// figures against host root doing the same:
//
//   - `mount -o loop IMG MNT` + `umount MNT` cycles of an ext4 image on the
//     host, in a sandbox with the FUSE default and in one with
//     --allow-kernel-mount ext4;
//   - a cold sequential read of a large file through each of those mounts,
//     the page cache dropped before each read;
//   - a sequential write and the unpacking of a 10,000-file tree, each
//     from mount to umount (data on the device);
//
// the partitioned image build of issue 5 (imagebuild.go), and, with a
// third probe (csrc/agentburst.c, see agent.go), the agent's cost
// with many containers: N (-agent-n, default 1,000) processes in their own
// user namespaces with a notify filter, handed to one `loopvisor agent` as
// runc hands them; the agent's peak OS threads and RSS while they attach,
// call and exit together, one container's trapped-call time with N-1 idle,
// and the aggregate calls/s of all N at once.
//
// Other work on the machine shifts absolute figures; every ratio compares
// set-ups measured in the same run, interleaved round by round. The whole
// run is bounded (-deadline, 9 minutes): past it the bench stops what it
// started, says which phase it was in and exits 1.
//
// Every measurement is repeated for several rounds, fresh processes each
// round, the set-ups in turn. Trapped calls run under the normal scheduler
// (scheduling is part of their cost) and the median of the batches is
// printed; plain system calls run under SCHED_FIFO (chrt -f 1) so that other
// work does not preempt them, and the 10th percentile is printed. Missing a
// target is reported, never an error: bench exits non-zero only when it
// cannot measure.
//
// Loop devices are global: bench takes /tmp/loopvisor-tests.lock like the
// acceptance tests and checks that the host's loop devices and mounts are as
// it found them.
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

//go:embed csrc/probe.c
var probeSource []byte

//go:embed csrc/pingfloor.c
var pingFloorSource []byte

// sandboxUID is the host uid the sandbox's root maps to.
const sandboxUID = 100000

// lockPath serializes users of the host's loop devices (the acceptance
// tests take it too).
const lockPath = "/tmp/loopvisor-tests.lock"

// Targets for sandboxed LOOP_CTL_GET_FREE against the C floor.
const (
	targetRatio = 1.5
	goalRatio   = 1.25
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := pingPongChild(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
			os.Exit(1)
		}
		return
	}
	loopvisor := flag.String("loopvisor", "bin/loopvisor", "loopvisor binary to measure")
	var c config
	flag.IntVar(&c.rounds, "rounds", 9, "rounds; each starts fresh processes (placement on CPUs differs between processes)")
	flag.IntVar(&c.batches, "batches", 5, "timed batches per process and measurement")
	flag.IntVar(&c.nTrapped, "n", 5000, "trapped calls per batch")
	flag.IntVar(&c.nPlain, "plain-n", 20000, "non-trapped calls per batch")
	flag.IntVar(&c.plainBatches, "plain-batches", 25, "timed batches of non-trapped calls per process")
	flag.BoolVar(&c.syscalls, "syscalls", true, "measure the system call figures")
	flag.BoolVar(&c.mount, "mount", true, "measure the mount figures")
	flag.IntVar(&c.imageRounds, "image-rounds", 5, "rounds of the partitioned image build (0: skip)")
	flag.IntVar(&c.agent.n, "agent-n", 1000, "containers handed to one loopvisor agent (0: skip the agent figures)")
	flag.IntVar(&c.agent.single, "agent-single", 2000, "timed calls per batch of the lone caller among the agent's containers")
	flag.IntVar(&c.agent.batches, "agent-batches", 5, "batches of the lone caller")
	flag.IntVar(&c.agent.calls, "agent-calls", 20, "calls per container when all of the agent's containers call at once")
	flag.IntVar(&c.m.rounds, "mount-rounds", 5, "rounds of mount cycles")
	flag.IntVar(&c.m.cycles, "mount-cycles", 20, "mount + umount cycles per round and set-up")
	flag.IntVar(&c.m.imgMiB, "mount-image-mib", 64, "size of the ext4 image mounted in the cycles (MiB)")
	flag.IntVar(&c.m.readRounds, "read-rounds", 9, "cold reads per set-up and image placement (disk, tmpfs), after a warm-up read")
	flag.IntVar(&c.m.readMiB, "read-mib", 256, "size of the file read (MiB)")
	flag.IntVar(&c.m.writeRounds, "write-rounds", 5, "rounds of sequential writes and tree unpacks per set-up, after a warm-up (0: skip)")
	flag.IntVar(&c.m.writeMiB, "write-mib", 256, "size of the file written (MiB)")
	flag.IntVar(&c.m.treeFiles, "tree-files", 10000, "files in the tree unpacked")
	flag.DurationVar(&c.lockWait, "lock-wait", 30*time.Minute, "bound on waiting for "+lockPath+" (held by acceptance tests or another bench; 0: no bound)")
	flag.DurationVar(&c.deadline, "deadline", 9*time.Minute, "overall bound: past it the bench stops what it started, says what it was measuring and exits 1")
	flag.Parse()
	if err := run(*loopvisor, c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// config says how much to measure.
type config struct {
	rounds, batches  int
	nTrapped, nPlain int
	plainBatches     int
	syscalls, mount  bool
	m                mountConfig
	imageRounds      int
	agent            agentConfig
	deadline         time.Duration
	lockWait         time.Duration
}

func run(loopvisor string, c config) error {
	if os.Geteuid() != 0 {
		return errors.New("bench needs root (real loop devices, user namespaces, seccomp listeners)")
	}
	if c.rounds < 1 || c.batches < 1 || c.nTrapped < 1 || c.nPlain < 1 || c.plainBatches < 1 {
		return errors.New("-rounds, -batches, -n, -plain-n and -plain-batches must be at least 1")
	}
	if c.m.rounds < 1 || c.m.cycles < 1 || c.m.readRounds < 1 || c.m.readMiB < 1 || c.m.imgMiB < 8 {
		return errors.New("-mount-rounds, -mount-cycles, -read-rounds and -read-mib must be at least 1, -mount-image-mib at least 8")
	}
	if c.m.writeRounds > 0 && (c.m.writeMiB < 1 || c.m.treeFiles < 1) {
		return errors.New("-write-mib and -tree-files must be at least 1")
	}
	lv, err := filepath.Abs(loopvisor)
	if err != nil {
		return err
	}
	if _, err := os.Stat(lv); err != nil {
		return fmt.Errorf("loopvisor binary: %w (make build)", err)
	}

	unlock, err := lock(c.lockWait)
	if err != nil {
		return err
	}
	defer unlock()
	// The deadline counts from here: waiting for the lock is not the
	// bench's time.
	if c.deadline > 0 {
		watchdog(c.deadline)
	}

	dir, err := os.MkdirTemp("", "loopvisor-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}()
	// The probe must be reachable and executable by the sandbox's root
	// (host uid 100000).
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	probe, err := buildC(dir, "probe", probeSource)
	if err != nil {
		return err
	}
	floor, err := buildC(dir, "pingfloor", pingFloorSource)
	if err != nil {
		return err
	}
	filter, err := writeFilter(dir)
	if err != nil {
		return err
	}
	state := filepath.Join(dir, "state")
	// Journals of a supervisor that did not finish must not vanish with
	// the temporary state dir: let loopvisor gc release what they list.
	defer gcState(lv, state)
	atDeadline(func() { _ = os.RemoveAll(dir) })
	atDeadline(func() { gcState(lv, state) })

	before := snapshot()
	load0, cpu0 := loadAvg(), cpuTimes()
	fifo := fifoPrefix()
	var res *results
	var mres *mountResults
	if c.syscalls {
		setPhase("measuring trapped and plain system calls")
		res, err = measure(lv, probe, state, dir, fifo, c, floor, filter)
	}
	if err == nil && c.mount {
		setPhase("measuring mount cycles and FUSE reads")
		mres, err = measureMount(lv, dir, state, c.m)
	}
	var ires *imageResults
	if err == nil && c.imageRounds > 0 {
		var ierr error
		setPhase("measuring the partitioned image build")
		if ires, ierr = measureImageBuild(lv, dir, state, c.imageRounds); ierr != nil {
			fmt.Fprintf(os.Stderr, "bench: partitioned image build not measured: %v\n", ierr)
		}
	}
	var ares *agentResults
	if err == nil && c.agent.n > 0 {
		if c.agent.single < 1 || c.agent.batches < 1 || c.agent.calls < 1 {
			return errors.New("-agent-single, -agent-batches and -agent-calls must be at least 1")
		}
		setPhase(fmt.Sprintf("measuring the agent with %d containers", c.agent.n))
		ares, err = measureAgent(lv, dir, c.agent)
	}
	after := waitSnapshot(before, 5*time.Second)
	if err != nil {
		if after != before {
			warnHost(before, after)
		}
		return err
	}
	if res != nil {
		report(res, c, fifo != nil)
	}
	if mres != nil {
		reportMount(mres, c.m)
	}
	if ires != nil {
		reportImageBuild(ires)
	}
	if ares != nil {
		reportAgent(ares, c.agent)
	}
	fmt.Printf("load average before / after: %s / %s on %d CPUs (other work on the machine widens the spread)\n", load0, loadAvg(), runtime.NumCPU())
	if cpu1 := cpuTimes(); len(cpu0) > 7 && len(cpu1) > 7 {
		var total int64
		for i := range cpu1 {
			total += cpu1[i] - cpu0[i]
		}
		if total > 0 {
			fmt.Printf("CPU time stolen by the hypervisor during the bench: %.1f%% (likewise)\n", 100*float64(cpu1[7]-cpu0[7])/float64(total))
		}
	}
	if after != before {
		warnHost(before, after)
	} else {
		fmt.Println("host loop devices (losetup -a, /sys/devices/virtual/block/loop*) and mounts (/proc/self/mountinfo): unchanged")
	}
	return nil
}

// writeFilter writes the BPF program a sandbox loads (notify.Program, mount
// calls trapped too) as the kernel reads it, for the C floor.
func writeFilter(dir string) (string, error) {
	prog, err := notify.Program(notify.Options{Mount: true})
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, prog); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "filter.bpf")
	return p, os.WriteFile(p, b.Bytes(), 0o644)
}

// gcState runs `loopvisor gc` on the bench's state dir if a journal is
// left in it.
func gcState(lv, state string) {
	left, _ := filepath.Glob(filepath.Join(state, "instances", "*.json"))
	if len(left) == 0 {
		return
	}
	out, err := exec.Command(lv, "gc", "--state-dir", state).CombinedOutput()
	fmt.Printf("WARNING: %d loopvisor journals left behind; loopvisor gc: %s", len(left), out)
	if err != nil {
		fmt.Printf("loopvisor gc: %v\n", err)
	}
}

// cpuTimes returns the machine's CPU times from the "cpu" line of
// /proc/stat (user nice system idle iowait irq softirq steal ...).
func cpuTimes() []int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return nil
	}
	var v []int64
	for _, x := range f[1:] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return nil
		}
		v = append(v, n)
	}
	return v
}

// loadAvg returns the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func warnHost(before, after string) {
	fmt.Printf("WARNING: the host's loop devices or mounts differ after the bench\n--- before\n%s--- after\n%s", before, after)
}

// lock takes lockPath exclusively. Waiting for it is bounded by
// lockWait (0: no bound), and the message names who holds it.
func lock(lockWait time.Duration) (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	// Closing the file drops the lock; nothing is written to it, so a
	// close error loses nothing.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(os.Stderr, "bench: waiting for %s, held by %s (acceptance tests running?)\n", lockPath, lockHolders(f))
		t0 := time.Now()
		for errors.Is(err, syscall.EWOULDBLOCK) && (lockWait == 0 || time.Since(t0) < lockWait) {
			time.Sleep(200 * time.Millisecond)
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			err = fmt.Errorf("%s still held by %s after %v (-lock-wait)", lockPath, lockHolders(f), lockWait)
			_ = f.Close()
			return nil, err
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("flock %s: %w", lockPath, err)
	}
	return func() { _ = f.Close() }, nil
}

// lockHolders names the processes /proc/locks lists as holding a lock on
// f's file ("pid 123 (go test)"), or says it does not know.
func lockHolders(f *os.File) string {
	var st unix.Stat_t
	data, err := os.ReadFile("/proc/locks")
	if err != nil || unix.Fstat(int(f.Fd()), &st) != nil {
		return "another process"
	}
	// "1: FLOCK  ADVISORY  WRITE 4321 fd:01:1234 0 EOF"
	key := fmt.Sprintf(":%d", st.Ino)
	var who []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], key) {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + fields[4] + "/cmdline")
		name := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		if len(name) > 60 {
			name = name[:60] + "..."
		}
		who = append(who, fmt.Sprintf("pid %s (%s)", fields[4], name))
	}
	if len(who) == 0 {
		return "another process"
	}
	return strings.Join(who, ", ")
}

// buildC compiles source into dir/name.
func buildC(dir, name string, source []byte) (string, error) {
	src := filepath.Join(dir, name+".c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	if o, err := exec.Command("gcc", "-O2", "-Wall", "-o", out, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("compile %s: %w\n%s", name, err, o)
	}
	if err := os.Chmod(out, 0o755); err != nil {
		return "", err
	}
	return out, nil
}

// samples collects ns/op figures per measurement key.
type samples map[string][]float64

// quantile returns the q-quantile of the figures under key (linear
// interpolation between the nearest ranks).
func (s samples) quantile(key string, q float64) float64 {
	v := append([]float64(nil), s[key]...)
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	pos := q * float64(len(v)-1)
	lo := int(pos)
	if lo+1 >= len(v) {
		return v[lo]
	}
	return v[lo] + (pos-float64(lo))*(v[lo+1]-v[lo])
}

type results struct {
	s            samples
	floorSync    bool
	pingSync     bool
	sandboxSync  string // as loopvisor logged it
	nullResults  map[string]string
	getFreeIndex string
}

// Measurement keys: where/mode.
const (
	where0 = "host"    // no filter
	where1 = "bare"    // bare ping-pong filter and supervisor
	whereC = "floor"   // the same in C (csrc/pingfloor.c)
	where2 = "sandbox" // loopvisor run
)

var syncRe = regexp.MustCompile(`sync_wakeup=(\w+)`)

// measure runs the three set-ups in turn, round after round, so that a
// slow phase of the machine hits all of them alike. Trapped calls run under
// the normal scheduler, since scheduling is part of their cost; batches of
// plain system calls run under fifo (SCHED_FIFO where it works), so that
// other work on the machine does not preempt them.
func measure(lv, probe, state, dir string, fifo []string, c config, floor, filter string) (*results, error) {
	r := &results{s: samples{}, nullResults: map[string]string{}}
	const timeout = 60 * time.Second
	trapped := []string{probe, strconv.Itoa(c.batches), "nullgetfree:" + strconv.Itoa(c.nTrapped)}
	plain := []string{probe, strconv.Itoa(c.plainBatches), "getppid:" + strconv.Itoa(c.nPlain), "tcgets:" + strconv.Itoa(c.nPlain)}
	sandbox := func(argv ...string) []string {
		return append([]string{lv, "run", "--uid-map", fmt.Sprintf("%d:65536", sandboxUID),
			"--state-dir", state, "--log-level", "info", "--"}, argv...)
	}
	for i := 0; i < c.rounds; i++ {
		// No filter at all.
		out, _, err := command(timeout, dir, append(fifo, plain...))
		if err != nil {
			return nil, fmt.Errorf("probe without filter: %w", err)
		}
		if err := parse(r, where0, out); err != nil {
			return nil, err
		}

		// The C floor.
		out, errOut, err := command(timeout, dir, append([]string{floor, filter}, trapped...))
		if err != nil {
			return nil, fmt.Errorf("pingfloor: %w", err)
		}
		if err := parse(r, whereC, out); err != nil {
			return nil, err
		}
		if got := r.nullResults[whereC+"/nullgetfree"]; got != "0" {
			return nil, fmt.Errorf("pingfloor: ioctl(/dev/null, LOOP_CTL_GET_FREE) returned %s, not the supervisor's 0: the filter did not trap it", got)
		}
		r.floorSync = strings.Contains(errOut, "sync_wakeup 1")

		// Bare ping-pong.
		pp, err := runPingPong(nil, trapped, timeout)
		if err != nil {
			return nil, err
		}
		if err := parse(r, where1, pp.Stdout); err != nil {
			return nil, err
		}
		if got := r.nullResults[where1+"/nullgetfree"]; got != "0" {
			return nil, fmt.Errorf("bare ping-pong: ioctl(/dev/null, LOOP_CTL_GET_FREE) returned %s, not the supervisor's 0: the filter did not trap it", got)
		}
		if pp.Served < c.batches*c.nTrapped {
			return nil, fmt.Errorf("bare ping-pong: supervisor served %d notifications, want at least %d", pp.Served, c.batches*c.nTrapped)
		}
		r.pingSync = pp.SyncWake
		pp, err = runPingPong(fifo, plain, timeout)
		if err != nil {
			return nil, err
		}
		if err := parse(r, where1, pp.Stdout); err != nil {
			return nil, err
		}

		// loopvisor.
		argv := append(append([]string{}, trapped...), "getfree:"+strconv.Itoa(c.nTrapped))
		out, errOut, err = command(timeout, dir, sandbox(argv...))
		if err != nil {
			return nil, fmt.Errorf("loopvisor run probe: %w", err)
		}
		if err := parse(r, where2, out); err != nil {
			return nil, err
		}
		if m := syncRe.FindStringSubmatch(errOut); m != nil {
			r.sandboxSync = m[1]
		}
		r.getFreeIndex = r.nullResults[where2+"/getfree"]
		out, _, err = command(timeout, dir, append(fifo, sandbox(plain...)...))
		if err != nil {
			return nil, fmt.Errorf("loopvisor run probe: %w", err)
		}
		if err := parse(r, where2, out); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// parse reads the probe's output lines into r under where.
func parse(r *results, where, out string) error {
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "result":
			r.nullResults[where+"/"+f[1]] = f[2]
		case len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return fmt.Errorf("probe output %q: %w", line, err)
			}
			r.s[where+"/"+f[0]] = append(r.s[where+"/"+f[0]], v)
		default:
			return fmt.Errorf("unexpected probe output %q", line)
		}
	}
	return nil
}

// command runs argv in dir and returns its stdout and stderr; a failure
// carries the stderr along.
func command(timeout time.Duration, dir string, argv []string) (string, string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := start(cmd); err != nil {
		return "", "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		// loopvisor forwards SIGTERM to the sandbox and then releases its
		// devices; kill only if it does not exit.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		var exit error
		select {
		case exit = <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			exit = <-done
		}
		err = errors.Join(fmt.Errorf("%s timed out after %v", filepath.Base(argv[0]), timeout), exit)
	}
	if err != nil {
		return so.String(), se.String(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, se.String())
	}
	return so.String(), se.String(), nil
}

// fifoPrefix returns the command prefix that runs a program with SCHED_FIFO
// priority 1, or nil where that does not work here.
func fifoPrefix() []string {
	p := []string{"chrt", "-f", "1"}
	if err := exec.Command(p[0], append(p[1:], "true")...).Run(); err != nil {
		return nil
	}
	return p
}

// retString renders a probe result: a value, or -errno by name.
func retString(v string) string {
	n, err := strconv.Atoi(v)
	if err != nil || n >= 0 {
		return v
	}
	if name := unix.ErrnoName(syscall.Errno(-n)); name != "" {
		return "-" + name
	}
	return v
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func report(r *results, c config, fifo bool) {
	s := r.s
	fmt.Printf("loopvisor bench: %d rounds (fresh processes each); per round and set-up %d batches x %d trapped calls, %d batches x %d non-trapped calls, after warm-up\n",
		c.rounds, c.batches, c.nTrapped, c.plainBatches, c.nPlain)
	sandboxSync := map[string]string{"": "unknown (not logged)", "true": "yes", "false": "no"}[r.sandboxSync]
	if sandboxSync == "" {
		sandboxSync = r.sandboxSync
	}
	fmt.Printf("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP in effect: C floor %s, Go ping-pong %s, loopvisor %s\n\n", yesNo(r.floorSync), yesNo(r.pingSync), sandboxSync)

	row := func(label, key string) float64 {
		m := s.quantile(key, 0.5)
		fmt.Printf("  %-68s %8.0f  [%.0f..%.0f]\n", label, m, s.quantile(key, 0.25), s.quantile(key, 0.75))
		return m
	}
	fmt.Printf("%-70s %8s  %s\n", "trapped ioctl (one seccomp user-notification round trip)", "ns/op", "median [p25..p75] of batches")
	cfloor := row("C floor (pingfloor.c, blocking RECV/SEND): ioctl(/dev/null, ...) answered 0", whereC+"/nullgetfree")
	base := row("Go ping-pong (notify.Listener): ioctl(/dev/null, LOOP_CTL_GET_FREE) answered 0", where1+"/nullgetfree")
	sb := row("loopvisor sandbox: ioctl(/dev/loop-control, LOOP_CTL_GET_FREE) = "+r.getFreeIndex, where2+"/getfree")
	sbNull := row("loopvisor sandbox: ioctl(/dev/null, LOOP_CTL_GET_FREE) = "+retString(r.nullResults[where2+"/nullgetfree"]), where2+"/nullgetfree")
	ratio := sb / cfloor
	verdict := metIf(ratio <= targetRatio)
	if ratio <= goalRatio {
		verdict += fmt.Sprintf(", goal <= %.2f met", goalRatio)
	}
	fmt.Printf("\n  ratio sandbox LOOP_CTL_GET_FREE / C floor:        %5.2f   target <= %.1f: %s\n", ratio, targetRatio, verdict)
	fmt.Printf("  ratio sandbox LOOP_CTL_GET_FREE / Go ping-pong:   %5.2f\n", sb/base)
	fmt.Printf("  ratio Go ping-pong / C floor:                     %5.2f   (notify.Listener's own cost)\n", base/cfloor)
	fmt.Printf("  ratio sandbox ioctl(/dev/null) / C floor:         %5.2f   (supervisor path without loop-control work)\n", sbNull/cfloor)
	fmt.Printf("  supervisor cost per call beyond the C floor: %.0f ns (LOOP_CTL_GET_FREE), %.0f ns (/dev/null)\n\n", sb-cfloor, sbNull-cfloor)

	// Interference from other work only ever adds time to a batch of
	// plain system calls: a low quantile shows their own cost.
	how := "SCHED_FIFO"
	if !fifo {
		how = "normal scheduling: chrt -f 1 failed, expect noise"
	}
	fmt.Printf("non-trapped system calls (%s), ns/op: 10th percentile of batches\n", how)
	fmt.Printf("%-30s %10s %12s %18s %18s\n", "", "no filter", "bare filter", "loopvisor sandbox", "extra in sandbox")
	for _, m := range []struct{ label, mode string }{
		{"getppid()", "getppid"},
		{"ioctl(/dev/null, TCGETS)", "tcgets"},
	} {
		const q = 0.1
		h, b, x := s.quantile(where0+"/"+m.mode, q), s.quantile(where1+"/"+m.mode, q), s.quantile(where2+"/"+m.mode, q)
		fmt.Printf("  %-28s %10.1f %12.1f %18.1f %+15.1f ns\n", m.label, h, b, x, x-h)
	}
	fmt.Println()
}

// snapshot describes the host's loop devices and mounts: what losetup -a
// lists, which loop devices exist, and the mounts of the bench's mount
// namespace (mount point, type, source).
func snapshot() string {
	var b strings.Builder
	out, _ := exec.Command("losetup", "-a").Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	fmt.Fprintf(&b, "losetup -a:\n%s\n", strings.Join(lines, "\n"))
	devs, _ := filepath.Glob("/sys/devices/virtual/block/loop*")
	sort.Strings(devs)
	fmt.Fprintf(&b, "loop devices: %s\n", strings.Join(devs, " "))
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, l := range strings.Split(string(mi), "\n") {
		if pre, post, ok := strings.Cut(l, " - "); ok {
			f, g := strings.Fields(pre), strings.Fields(post)
			if len(f) > 4 && len(g) > 1 {
				mounts = append(mounts, f[4]+" "+g[0]+" "+g[1])
			}
		}
	}
	sort.Strings(mounts)
	fmt.Fprintf(&b, "mounts:\n%s\n", strings.Join(mounts, "\n"))
	return b.String()
}

// waitSnapshot gives asynchronous teardown a moment to finish.
func waitSnapshot(want string, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		s := snapshot()
		if s == want || time.Now().After(deadline) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}
