package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/notify"
)

// childArg is argv[1] of the re-executed bench binary that loads the filter
// for the bare ping-pong and then execs the probe.
const childArg = "__bench-pingpong-child"

// childSockFD is the socket to the parent in the child.
const childSockFD = 3

// pingPongChild runs in the re-executed bench binary: it loads the same
// filter a sandbox loads by default (notify.Program), hands the listener to the parent,
// waits until the parent serves it, and execs the probe (argv), which then
// runs under the filter with no Go runtime in its timed loop.
func pingPongChild(argv []string) error {
	if len(argv) == 0 {
		return errors.New("no probe to run")
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_SET_NO_NEW_PRIVS)", err)
	}
	// The filter a sandbox loads by default (mount calls trapped too).
	prog, err := notify.Program(notify.Options{Mount: true})
	if err != nil {
		return err
	}
	lfd, err := notify.Install(prog)
	if err != nil {
		return err
	}
	if err := unix.Sendmsg(childSockFD, []byte{'L'}, unix.UnixRights(lfd), nil, 0); err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	if err := unix.Close(lfd); err != nil {
		return os.NewSyscallError("close", err)
	}
	ack := make([]byte, 1)
	if n, err := unix.Read(childSockFD, ack); err != nil || n != 1 || ack[0] != 'A' {
		return errors.New("the bench did not take the listener")
	}
	if err := unix.Close(childSockFD); err != nil {
		return os.NewSyscallError("close", err)
	}
	return unix.Exec(argv[0], argv, os.Environ())
}

// pingPong is one run of the probe under the bare ping-pong supervisor: a Go
// supervisor on the project's notify package that answers every
// notification at once with 0, its listener served as `loopvisor run`
// serves one (NewBlockingListener, one goroutine).
type pingPong struct {
	Stdout   string
	SyncWake bool
	Served   int
}

// runPingPong runs the probe (probeArgv) under the bare ping-pong and
// returns what it printed. The child runs as prefix (a command such as
// chrt -f 1, or nothing) followed by the bench binary.
func runPingPong(prefix, probeArgv []string, timeout time.Duration) (*pingPong, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(pair[0]), "bench-child")
	theirs := os.NewFile(uintptr(pair[1]), "bench-parent")
	defer func() { _ = ours.Close() }() // the exchange is over by then

	argv := append(append(append([]string{}, prefix...), self, childArg), probeArgv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.ExtraFiles = []*os.File{theirs}
	err = start(cmd)
	_ = theirs.Close() // the child has its own copy, or failed to start
	if err != nil {
		return nil, fmt.Errorf("start ping-pong child: %w", err)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	fail := func(err error) (*pingPong, error) {
		_ = cmd.Process.Kill() // fails only if it has exited; Wait reports how
		return nil, fmt.Errorf("%w\n%s", errors.Join(err, <-waitc), stderr.String())
	}

	lfdc := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		fd, err := recvFD(ours)
		if err != nil {
			errc <- err
			return
		}
		lfdc <- fd
	}()
	var lfd int
	select {
	case lfd = <-lfdc:
	case err := <-errc:
		return fail(fmt.Errorf("ping-pong child: %w", err))
	case <-time.After(timeout):
		return fail(errors.New("ping-pong child sent no listener"))
	}
	// As `loopvisor run` serves its sandbox (supervisor.Serve).
	l, err := notify.NewBlockingListener(lfd)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = l.Close() }() // serving is over by then; Close is idempotent

	type served struct {
		n   int
		err error
	}
	servec := make(chan served, 1)
	go func() {
		n := 0
		for {
			req, err := l.Next()
			if errors.Is(err, notify.ErrGone) {
				servec <- served{n, nil}
				return
			}
			if err != nil {
				servec <- served{n, err}
				return
			}
			if err := l.Respond(req.ID, notify.Value(0)); err != nil {
				servec <- served{n, err}
				return
			}
			n++
		}
	}()
	if _, err := ours.Write([]byte{'A'}); err != nil {
		return fail(err)
	}

	var werr error
	select {
	case werr = <-waitc:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		err := errors.Join(fmt.Errorf("ping-pong probe timed out after %v", timeout), <-waitc)
		return nil, fmt.Errorf("%w\n%s", err, stderr.String())
	}
	if werr != nil {
		return nil, fmt.Errorf("ping-pong probe: %w\n%s", werr, stderr.String())
	}
	var s served
	select {
	case s = <-servec:
	case <-time.After(5 * time.Second):
		if err := l.Close(); err != nil {
			return nil, fmt.Errorf("ping-pong supervisor: close listener: %w", err)
		}
		s = <-servec
	}
	if s.err != nil {
		return nil, fmt.Errorf("ping-pong supervisor: %w", s.err)
	}
	return &pingPong{Stdout: stdout.String(), SyncWake: l.SyncWake, Served: s.n}, nil
}

// recvFD receives one fd sent with SCM_RIGHTS on sock.
func recvFD(sock *os.File) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("recvmsg", err)
	}
	if n == 0 {
		return -1, errors.New("exited before loading the filter")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, errors.New("no listener fd received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, errors.New("no listener fd received")
	}
	return fds[0], nil
}
