package notify

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenerChildEnv's values for fileChild and fileBenchChild.
const (
	fileCacheChild = "files"
	fileBenchMode  = "files-bench"
)

// The descriptor numbers fileChild uses: cacheFD (and cacheFD+1) for the
// calls, and its own copies of the files it moves there from fileFDs on.
// All are far above what the child inherits or the Go runtime opens, so
// that no dup2 of a step closes a file a later step needs.
const (
	cacheFD = 100
	fileFDs = 200
)

// fileChild loads the filter and, once told to go, makes trapped
// ioctl(fd, LOOP_CTL_GET_FREE, ino) calls, each with the inode number of
// the file it has at fd (0 for none): the test answers 1 when the file
// GetFDStat gave it has that inode, EBADF when it got none. Between calls
// the descriptor changes as an attacker would change it: the same file
// again, a dup, another file under the same number, a closed number, the
// first file back. It exits with the number of the first step whose
// answer was wrong (and says on stderr what it got), 0 if none, 100 on a
// set-up failure.
func fileChild() int {
	// The main thread stays this goroutine's: step 10's thread is another.
	runtime.LockOSThread()
	if !filteredChildReady() {
		return 100
	}
	// A regular file that is no device: the test binary itself.
	self, err := os.Executable()
	if err != nil {
		return 100
	}
	var fds [3]int
	for i, open := range []func() (int, error){
		func() (int, error) { return unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0) },
		func() (int, error) { return unix.Open("/dev/zero", unix.O_RDONLY|unix.O_CLOEXEC, 0) },
		func() (int, error) { return unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0) },
	} {
		fd, err := open()
		if err != nil || unix.Dup3(fd, fileFDs+i, unix.O_CLOEXEC) != nil || unix.Close(fd) != nil {
			return 100
		}
		fds[i] = fileFDs + i
	}
	null, zero, regular := fds[0], fds[1], fds[2]
	ino := func(fd int) uint64 {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			return 0
		}
		return st.Ino
	}
	step := 0
	// call makes the trapped call on fd; the answer must be 1, or EBADF
	// for a descriptor that is not open.
	call := func(fd int) bool {
		want := ino(fd)
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(LoopCtlGetFree), uintptr(want))
		ok := e == 0 && r == 1
		if want == 0 {
			ok = e == unix.EBADF
		}
		if !ok {
			fmt.Fprintf(os.Stderr, "fileChild step %d: ioctl(%d) with inode %d: %d, %v\n", step, fd, want, r, e)
		}
		return ok
	}
	dup := func(from, to int) bool {
		if err := unix.Dup3(from, to, unix.O_CLOEXEC); err != nil {
			fmt.Fprintf(os.Stderr, "fileChild step %d: dup3(%d, %d): %v\n", step, from, to, err)
			return false
		}
		return true
	}
	steps := []func() bool{
		func() bool { return dup(null, cacheFD) && call(cacheFD) },                           // 1: first call, kept
		func() bool { return call(cacheFD) },                                                 // 2: same file: kcmp
		func() bool { return dup(cacheFD, cacheFD+1) && call(cacheFD+1) && call(cacheFD+1) }, // 3: a dup
		func() bool { return dup(zero, cacheFD) && call(cacheFD) },                           // 4: another device, same number
		func() bool { return call(cacheFD) },                                                 // 5: and again: kcmp
		func() bool { return dup(regular, cacheFD) && call(cacheFD) },                        // 6: a regular file, same number
		func() bool { return unix.Close(cacheFD) == nil && call(cacheFD) },                   // 7: closed
		func() bool { return dup(null, cacheFD) && call(cacheFD) },                           // 8: the first file back
		func() bool { return call(cacheFD) },                                                 // 9: kcmp
		func() bool { // 10: another thread of the caller, same descriptor
			ok := make(chan bool)
			go func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				first := call(cacheFD) // pidfd_getfd: another thread id
				ok <- first && call(cacheFD)
			}()
			return <-ok
		},
	}
	for i, f := range steps {
		step = i + 1
		if !f() {
			return step
		}
	}
	return 0
}

// serveFiles answers fileChild's calls on l until it exits: 1 if
// GetFDStat gave the file whose inode the caller passed, EBADF if it gave
// none (EBADF from GetFDStat), ENOTTY if it gave another file. With kept
// set it asks KeptStat first, as supervisor.Serve does for
// LOOP_CTL_GET_FREE, and answers from its stat on a hit.
func serveFiles(l *Listener, kept bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Reused from call to call, as supervisor.Serve does.
	var tg Target
	req := new(Request)
	for {
		var err error
		*req, err = l.Next()
		if errors.Is(err, ErrGone) {
			return nil
		}
		if err != nil {
			return err
		}
		var reply Reply
		var kst unix.Stat_t
		if kept && l.KeptStat(req, uint32(req.Args[0]), &kst) {
			reply = Errno(unix.ENOTTY)
			if kst.Ino == req.Args[2] && l.Valid(req.ID) {
				reply = Value(1)
			}
		} else {
			l.Open(&tg, req)
			f, st, err := tg.GetFDStat(uint32(req.Args[0]))
			switch {
			case errors.Is(err, unix.EBADF):
				reply = Errno(unix.EBADF)
			case err != nil:
				reply = Errno(unix.EIO)
			case st.Ino == req.Args[2] && tg.Valid():
				reply = Value(1)
				_ = f.Close()
			default:
				reply = Errno(unix.ENOTTY)
				_ = f.Close()
			}
			tg.Close()
		}
		if err := l.Respond(req.ID, reply); err != nil {
			return err
		}
	}
}

// TestFileCache: a kept file is recognised by kcmp only while the caller
// still has that very file under that number; another file under the same
// number (a device, a regular file), a closed number, a dup and another
// thread get the file they have, as pidfd_getfd would give it; likewise
// when KeptStat is asked first (the serve loop's LOOP_CTL_GET_FREE).
func TestFileCache(t *testing.T) {
	for _, kept := range []bool{false, true} {
		t.Run("KeptStat="+strconv.FormatBool(kept), func(t *testing.T) { testFileCache(t, kept) })
	}
}

func testFileCache(t *testing.T, kept bool) {
	noSweep(t)
	l := runFileChild(t, kept)
	// Steps 2, 3 (second call), 5, 9 and 10 (second call) are kcmp hits.
	if got := l.hits.Load(); got != 5 {
		t.Errorf("%d calls recognised by kcmp, want 5", got)
	}
	entries := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.files)
	}
	if entries() == 0 {
		t.Error("no file kept")
	}
	// DropFiles (before an umount) drops every entry at once (TestMain
	// checks that their descriptors were closed).
	l.DropFiles()
	if n := entries(); n != 0 {
		t.Errorf("%d files kept after DropFiles", n)
	}
	// Two sweeps without a call in between drop every entry.
	l.sweep()
	l.sweep()
	if n := entries(); n != 0 {
		t.Errorf("%d files kept after two sweeps without calls", n)
	}
}

// TestFileCacheSweepRace is TestFileCache with the sweeper running every
// 20 µs, so that entries are dropped (and their descriptors closed)
// between a lookup and its kcmp, during a use and between calls: every
// call must still get the caller's own file or EBADF, and nothing used
// may be closed under it (run with -race; TestMain checks that every
// kept descriptor is closed in the end). The second round asks KeptStat
// first, as the serve loop does for LOOP_CTL_GET_FREE.
func TestFileCacheSweepRace(t *testing.T) {
	old := fileSweep
	fileSweep = 20 * time.Microsecond
	t.Cleanup(func() { fileSweep = old })
	for i := 0; i < 2; i++ {
		_ = runFileChild(t, i == 1).Close()
	}
}

// runFileChild runs fileChild against a blocking listener that keeps
// character devices, served by serveFiles (kept: KeptStat first) until
// the child exits, and fails t if a call got a wrong answer. It returns
// the listener, which t's cleanup closes (callers may close it sooner).
func runFileChild(t *testing.T, kept bool) *Listener {
	t.Helper()
	cmd, lfd, sock := startChild(t, fileCacheChild)
	defer func() { _ = sock.Close() }()
	l, err := NewBlockingListener(lfd)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	l.KeepFiles(func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFCHR })
	done := make(chan error, 1)
	go func() { done <- serveFiles(l, kept) }()
	if _, err := sock.Write([]byte{'G'}); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("child: %v (the exit status is the step that got a wrong answer, see fileChild)", werr)
	}
	return l
}

// noSweep keeps the file cache's sweeper from running during a test.
func noSweep(t testing.TB) {
	old := fileSweep
	fileSweep = time.Hour
	t.Cleanup(func() { fileSweep = old })
}

// TestFileCacheForeignTask: a kept entry for a thread id is checked
// against the task that has the tid when the call is served. If that
// task has another file under the number (the tid's former owner had
// the kept one), the call gets its own file. If it has the very file
// kept but the notification is no longer pending (the trapped task died
// and a task holding the same file took its tid), kcmp matches: the FD
// says it was only recognised, Valid says the call is gone, and the
// reply goes nowhere.
func TestFileCacheForeignTask(t *testing.T) {
	noSweep(t)
	cmd, lfd, sock := startListenerChild(t)
	defer func() { _ = sock.Close() }()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	l, err := NewBlockingListener(lfd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	l.KeepFiles(func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFCHR })
	if _, err := sock.Write([]byte{'G'}); err != nil {
		t.Fatal(err)
	}
	// The child's first trapped call, left pending during the test.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	req, err := l.Next()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Respond(req.ID, Value(7)) }()
	ours, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ours.Close() }()
	var ourSt unix.Stat_t
	if err := unix.Fstat(int(ours.Fd()), &ourSt); err != nil {
		t.Fatal(err)
	}
	plant := func(key fileKey) {
		fd, err := unix.FcntlInt(ours.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		l.mu.Lock()
		if l.files == nil {
			l.files = map[fileKey]*cachedFile{}
		}
		l.files[key] = &cachedFile{l: l, fd: fd, st: ourSt}
		l.mu.Unlock()
	}

	// The child's descriptor under the planted number is its own
	// /dev/null open, a different open file from ours.
	childFD := int(req.Args[0])
	plant(fileKey{req.Pid, childFD})
	var tg Target
	l.Open(&tg, &req)
	f, _, err := tg.GetFDStat(uint32(childFD))
	if err != nil {
		t.Fatalf("GetFDStat after a planted entry of another file: %v", err)
	}
	same, err := sameOpenFile(f.N, int(ours.Fd()))
	if f.Recognised() {
		t.Error("a file pidfd_getfd duplicated says it was recognised")
	}
	_ = f.Close()
	tg.Close()
	if err != nil || same {
		t.Errorf("the call got the planted file (same %v, %v), not the caller's own", same, err)
	}
	if got := l.hits.Load(); got != 0 {
		t.Errorf("%d kcmp hits, want 0", got)
	}

	// A task that has the kept file under the number (this test process),
	// for a notification that is not pending.
	key := fileKey{selfPid, int(ours.Fd())}
	plant(key)
	stale := req
	stale.ID = req.ID + 1<<32
	stale.Pid = selfPid
	l.Open(&tg, &stale)
	f, _, err = tg.GetFDStat(uint32(ours.Fd()))
	if err != nil {
		t.Fatalf("GetFDStat of a task with the kept file: %v", err)
	}
	_ = f.Close()
	if !f.Recognised() {
		t.Error("a kcmp hit does not say it was only recognised")
	}
	if tg.Valid() {
		t.Error("Valid reports the stale notification pending")
	}
	if got := l.hits.Load(); got != 1 {
		t.Errorf("%d kcmp hits, want 1", got)
	}
}

// benchCallsEnv tells fileChild in benchmark mode how many calls to make.
const benchCallsEnv = "_NOTIFY_TEST_CALLS"

// fileBenchChild makes the calls of BenchmarkServeKeptFile: trapped
// ioctl(/dev/null, LOOP_CTL_GET_FREE, ino) on one descriptor.
func fileBenchChild() int {
	runtime.LockOSThread()
	n, err := strconv.Atoi(os.Getenv(benchCallsEnv))
	if err != nil || unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != nil {
		return 100
	}
	prog, err := Program(Options{})
	if err != nil {
		return 100
	}
	lfd, err := Install(prog)
	if err != nil || unix.Sendmsg(3, []byte{'L'}, unix.UnixRights(lfd), nil, 0) != nil || unix.Close(lfd) != nil {
		return 100
	}
	b := make([]byte, 1)
	if n, err := unix.Read(3, b); n != 1 || err != nil {
		return 100
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	var st unix.Stat_t
	if err != nil || unix.Fstat(null, &st) != nil {
		return 100
	}
	for i := 0; i < n; i++ {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(null), uintptr(LoopCtlGetFree), uintptr(st.Ino))
		if e != 0 || r != 1 {
			return 1
		}
	}
	return 0
}

// BenchmarkServeKeptFile: one trapped call on a kept file as a serve loop
// answers it (receive, Open, GetFDStat: kcmp, Valid, reply), with the
// caller's side included, on a blocking listener (`run`) and on one
// driven by the netpoller (the agent). allocs/op is the serving side's:
// it must stay 0.
func BenchmarkServeKeptFile(b *testing.B) {
	for _, mode := range []struct {
		name string
		new  func(int) (*Listener, error)
	}{{"blocking", NewBlockingListener}, {"netpoller", NewListener}} {
		b.Run(mode.name, func(b *testing.B) {
			b.Setenv(benchCallsEnv, strconv.Itoa(b.N))
			cmd, lfd, sock := startChild(b, fileBenchMode)
			defer func() { _ = sock.Close() }()
			l, err := mode.new(lfd)
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				b.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			l.KeepFiles(func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFCHR })
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan error, 1)
			go func() { done <- serveFiles(l, false) }()
			if _, err := sock.Write([]byte{'G'}); err != nil {
				b.Fatal(err)
			}
			werr := cmd.Wait()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if werr != nil {
				b.Fatalf("child: %v", werr)
			}
		})
	}
}

// sameOpenFile reports whether two of our descriptors are one open file.
func sameOpenFile(a, b int) (bool, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_KCMP, uintptr(selfPid), uintptr(selfPid), 0, uintptr(a), uintptr(b), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
