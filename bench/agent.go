package main

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/loopvisor/loopvisor/internal/procstat"
)

// The agent figures: N containers handed to one `loopvisor agent` the way
// runc hands them (ContainerProcessState JSON + the listener as SCM_RIGHTS,
// one connection per process), each a process in its own user and mount
// namespace with a notify filter loaded (csrc/agentburst.c). Measured:
//
//   - the agent's peak OS threads and RSS while N containers attach and
//     call, and through their exit all at once (/proc/AGENTPID/status,
//     sampled every 5 ms), against the targets 64 threads, 100 MiB;
//   - one container's trapped call (ioctl(/dev/null, LOOP_CTL_GET_FREE),
//     served by the agent) with N-1 others attached and idle, against the
//     same call when it is the only container;
//   - aggregate trapped calls per second with all N calling at once.

//go:embed csrc/agentburst.c
var agentBurstSource []byte

// Targets of issue 8 ("many containers stay cheap").
const (
	agentMaxThreads = 64
	agentMaxRSSMiB  = 100
)

type agentConfig struct {
	n       int // containers
	single  int // timed calls per batch of the lone caller
	batches int // batches of the lone caller
	calls   int // calls per container when all call at once
}

type agentResults struct {
	n                    int
	alone, crowd         []float64 // ns per call: only container; N-1 idle
	attach               time.Duration
	attachPeak           procstat.Stat
	allCalls             int64
	allTime              time.Duration
	attached, burst, end procstat.Stat
}

// burstProc drives csrc/agentburst.
type burstProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func (b *burstProc) do(command string) ([]string, error) {
	if _, err := fmt.Fprintln(b.in, command); err != nil {
		return nil, err
	}
	line, err := b.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("agentburst %s: %w", command, err)
	}
	return strings.Fields(line), nil
}

func measureAgent(lv, dir string, c agentConfig) (*agentResults, error) {
	prog, err := buildC(dir, "agentburst", agentBurstSource)
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "agent-state")
	defer gcState(lv, state)
	sock := filepath.Join(dir, "agent.sock")
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }() // the agent writes through its own copy
	agent := exec.Command(lv, "agent", "--socket", sock, "--state-dir", state, "--log-level", "warn")
	agent.Stdout, agent.Stderr = logf, logf
	atDeadline(func() {
		gcState(lv, state)
		_ = syscall.Unmount(filepath.Join(state, "dev"), syscall.MNT_DETACH)
	})
	if err := start(agent); err != nil {
		return nil, err
	}
	agentDone := make(chan struct{})
	// Its exit status after SIGTERM is not what the bench measures.
	go func() { _ = agent.Wait(); close(agentDone) }()
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-agentDone:
		case <-time.After(15 * time.Second):
			_ = agent.Process.Kill()
			<-agentDone
		}
		_ = syscall.Unmount(filepath.Join(state, "dev"), syscall.MNT_DETACH)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the agent did not come up")
		}
	}
	agentLog := func() string { b, _ := os.ReadFile(logf.Name()); return lastLines(string(b), 20) }

	s := procstat.Sample(agent.Process.Pid, 5*time.Millisecond)
	defer s.Stop()
	cmd := exec.Command(prog, sock)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := start(cmd); err != nil {
		return nil, err
	}
	defer func() { _ = in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	b := &burstProc{cmd: cmd, in: in, out: bufio.NewReader(out)}
	r := &agentResults{n: c.n}

	single := func(into *[]float64) error {
		for i := 0; i < c.batches; i++ {
			f, err := b.do("single " + strconv.Itoa(c.single))
			if err != nil {
				return err
			}
			if len(f) != 4 || f[2] != "0" {
				return fmt.Errorf("agentburst single: %v: calls not served\n%s", f, agentLog())
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return err
			}
			*into = append(*into, v)
		}
		return nil
	}
	all := func(calls int) (int64, time.Duration, error) {
		f, err := b.do("all " + strconv.Itoa(calls))
		if err != nil {
			return 0, 0, err
		}
		if len(f) != 4 || f[3] != "0" {
			return 0, 0, fmt.Errorf("agentburst all: %v: calls not served\n%s", f, agentLog())
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		return n, time.Duration(ns), nil
	}

	if _, err := b.do("spawn 1"); err != nil {
		return nil, err
	}
	if err := single(&r.alone); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if _, err := b.do("spawn " + strconv.Itoa(c.n-1)); err != nil {
		return nil, err
	}
	// Every container's first call waits until the agent serves it.
	if _, _, err := all(1); err != nil {
		return nil, err
	}
	r.attach = time.Since(t0)
	r.attachPeak = s.Peak()
	if err := single(&r.crowd); err != nil {
		return nil, err
	}
	if r.allCalls, r.allTime, err = all(c.calls); err != nil {
		return nil, err
	}
	r.attached = s.Peak()
	if _, err := b.do("exit"); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		o, _ := exec.Command(lv, "status", "--socket", sock).Output()
		if strings.Contains(string(o), "no live instances") {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("instances still live 2 minutes after the containers exited\n%s", agentLog())
		}
	}
	r.burst = s.Peak()
	time.Sleep(time.Second)
	r.end = procstat.Read(agent.Process.Pid)
	return r, nil
}

func reportAgent(r *agentResults, c agentConfig) {
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Println()
	fmt.Printf("loopvisor agent with %d containers (each a process in its own user and mount namespace, handed over as runc does)\n", r.n)
	fmt.Printf("  all %d attached and served (first trapped call of each answered): %.1f s\n", r.n, r.attach.Seconds())
	fmt.Printf("  %-58s %5d threads  %5.1f MiB\n", "agent peak while they attach", r.attachPeak.Threads, float64(r.attachPeak.RSSKiB)/1024)
	fmt.Printf("  %-58s %5d threads  %5.1f MiB\n", "agent peak after all of them called at once", r.attached.Threads, float64(r.attached.RSSKiB)/1024)
	fmt.Printf("  %-58s %5d threads  %5.1f MiB\n", "agent peak through their exit, all at once", r.burst.Threads, float64(r.burst.RSSKiB)/1024)
	fmt.Printf("  %-58s %5d threads  %5.1f MiB\n", "agent 1 s after the last instance was released", r.end.Threads, float64(r.end.RSSKiB)/1024)
	fmt.Printf("  target <= %d threads: %s; target < %d MiB RSS: %s\n", agentMaxThreads, met(r.burst.Threads <= agentMaxThreads && r.end.Threads <= agentMaxThreads),
		agentMaxRSSMiB, met(r.burst.RSSKiB < agentMaxRSSMiB<<10))
	alone, crowd := median(r.alone), median(r.crowd)
	fmt.Printf("  trapped ioctl(/dev/null, LOOP_CTL_GET_FREE), ns/op, median of %d batches x %d calls:\n", c.batches, c.single)
	fmt.Printf("    the only container                 %8.0f\n", alone)
	fmt.Printf("    with %d others attached, idle   %8.0f   ratio %.2f\n", r.n-1, crowd, crowd/alone)
	fmt.Printf("  all %d calling at once (%d calls each): %.0f calls/s aggregate\n", r.n, c.calls, float64(r.allCalls)/r.allTime.Seconds())
}
