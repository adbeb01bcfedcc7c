package notify

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenerChildEnv makes the test binary the child of TestBlockingListener.
const listenerChildEnv = "_NOTIFY_TEST_LISTENER_CHILD"

// childCalls is how many trapped calls the child makes.
const childCalls = 3

// filteredChildReady is a test child's start: it loads the sandbox's
// filter (no_new_privs, no privilege needed), passes the listener to the
// test over fd 3 and waits for the test's go byte. False: any step failed.
func filteredChildReady() bool {
	const sock = 3
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return false
	}
	prog, err := Program(Options{})
	if err != nil {
		return false
	}
	lfd, err := Install(prog)
	if err != nil {
		return false
	}
	if unix.Sendmsg(sock, []byte{'L'}, unix.UnixRights(lfd), nil, 0) != nil || unix.Close(lfd) != nil {
		return false
	}
	b := make([]byte, 1)
	n, err := unix.Read(sock, b)
	return n == 1 && err == nil
}

// listenerChild loads the sandbox's filter (no_new_privs, no privilege
// needed), passes the listener to the test over fd 3, waits for its go
// byte, makes childCalls trapped ioctl(/dev/null, LOOP_CTL_GET_FREE) that
// must return the test's answer (7), and exits 0; any other outcome
// exits 1.
func listenerChild() int {
	if !filteredChildReady() {
		return 1
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	for i := 0; i < childCalls; i++ {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(null), uintptr(LoopCtlGetFree), 0)
		if e != 0 || r != 7 {
			return 1
		}
	}
	return 0
}

// startListenerChild starts listenerChild and returns its listener fd.
func startListenerChild(t *testing.T) (*exec.Cmd, int, *os.File) {
	t.Helper()
	return startChild(t, "1")
}

// startChild starts the test binary with listenerChildEnv set to mode and
// returns its listener fd.
func startChild(t testing.TB, mode string) (*exec.Cmd, int, *os.File) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "test"), os.NewFile(uintptr(pair[1]), "child")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), listenerChildEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	_ = theirs.Close()
	if err != nil {
		_ = ours.Close()
		t.Fatal(err)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(ours.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	var fds []int
	if err == nil {
		var msgs []unix.SocketControlMessage
		if msgs, err = unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
			fds, err = unix.ParseUnixRights(&msgs[0])
		}
	}
	if err != nil || len(fds) != 1 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = ours.Close()
		t.Fatalf("no listener from the child: %v", err)
	}
	return cmd, fds[0], ours
}

// TestBlockingListener: a blocking listener receives the child's trapped
// calls on one goroutine's thread, answers them, and reports ErrGone once the
// child has exited (the kernel ends a blocking receive then); Close while
// a receive blocks returns at once.
func TestBlockingListener(t *testing.T) {
	for _, closeEarly := range []bool{false, true} {
		t.Run(fmt.Sprintf("close-while-blocked=%v", closeEarly), func(t *testing.T) {
			cmd, lfd, sock := startListenerChild(t)
			defer func() { _ = sock.Close() }()
			l, err := NewBlockingListener(lfd)
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			if l.Blocking() != l.SyncWake {
				t.Errorf("Blocking() = %v with sync wake-up %v", l.Blocking(), l.SyncWake)
			}
			type result struct {
				served int
				err    error
			}
			done := make(chan result, 1)
			go func() {
				n := 0
				for {
					req, err := l.Next()
					if err != nil {
						done <- result{n, err}
						return
					}
					if err := l.Respond(req.ID, Value(7)); err != nil {
						done <- result{n, err}
						return
					}
					n++
				}
			}()
			if closeEarly {
				// The receive is blocked (the child waits for its go
				// byte): Close must not wait for it.
				time.Sleep(100 * time.Millisecond)
				closed := make(chan error, 1)
				go func() { closed <- l.Close() }()
				select {
				case err := <-closed:
					if err != nil {
						t.Errorf("Close: %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Close waited for a blocked receive")
				}
			}
			if _, err := sock.Write([]byte{'G'}); err != nil {
				t.Fatal(err)
			}
			werr := cmd.Wait()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Next did not return after the child exited")
			}
			if closeEarly {
				// The receive in progress still takes the child's first
				// call; the fd is released once it returns, so the
				// answer cannot be sent (use of closed file) and the
				// child's call fails with ENOSYS.
				if r.err == nil || werr == nil {
					t.Errorf("after Close: serving ended with %v, child with %v; want both to fail", r.err, werr)
				}
				return
			}
			if !errors.Is(r.err, ErrGone) {
				t.Errorf("Next after the child exited: %v, want ErrGone", r.err)
			}
			if werr != nil || r.served != childCalls {
				t.Errorf("child: %v, served %d calls, want %d answered 7", werr, r.served, childCalls)
			}
		})
	}
}

// TestBlockingListenerYields: a blocking listener's Next passes through the
// Go scheduler at least every yieldAfter plus yieldCheck calls of steady
// serving, so that the runtime's sysmon, which preempts a goroutine that
// has not been scheduled for 10 ms, never does so to the serving loop: at
// the rate of a tight loop of trapped calls and at slower ones, down to
// about 800 calls a second. The clock is simulated.
func TestBlockingListenerYields(t *testing.T) {
	const sysmon = 10 * time.Millisecond
	defer func() { timeNow, gosched = time.Now, runtime.Gosched }()
	for _, step := range []time.Duration{20 * time.Microsecond, 300 * time.Microsecond, 1200 * time.Microsecond} {
		start := time.Now()
		now := start
		var yields []time.Duration
		timeNow = func() time.Time { return now }
		gosched = func() { yields = append(yields, now.Sub(start)) }

		l := &Listener{lastYield: start}
		const serve = 100 * time.Millisecond
		for now.Sub(start) < serve {
			l.maybeYield()
			now = now.Add(step)
		}
		if len(yields) == 0 {
			t.Fatalf("one call every %v: no yield in %v of serving", step, serve)
		}
		prev := time.Duration(0)
		bound := yieldAfter + yieldCheck*step
		for _, y := range append(yields, serve) {
			if gap := y - prev; gap > bound || gap >= sysmon {
				t.Errorf("one call every %v: %v without a yield (at %v), want at most %v and below sysmon's %v", step, gap, y, bound, sysmon)
			}
			prev = y
		}
		// Not more often than needed either: each yield costs a pass
		// through the scheduler.
		if max := int(serve / yieldAfter); len(yields) > max {
			t.Errorf("one call every %v: %d yields in %v, want at most %d", step, len(yields), serve, max)
		}
	}
}
