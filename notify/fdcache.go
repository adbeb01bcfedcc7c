package notify

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// The file cache: a listener keeps its own reference to caller files that
// its keep policy accepts (loop-control nodes), so that a later call on
// the same descriptor is recognised with one kcmp(KCMP_FILE) instead of
// pidfd_getfd, F_GETFL, fstat and close.
//
// Why a hit is the caller's file: kcmp compares the open file behind
// descriptor fd of thread tid, as kcmp finds that thread when it runs,
// with our reference. The reference keeps the file alive, so no other
// file can take its place in memory. Thread ids are looked up, not held:
// the kcmp looked at the trapped task only if that task still had its tid
// then, and it did if the notification is still pending after the kcmp
// (the trapped task was then alive from the receive on, and no other task
// could take its tid). Notification IDs are never reused, so either a
// notification ID check after the kcmp (Valid) or the reply itself (the
// kernel takes it only for a pending call) proves it: an answer computed
// from a hit reaches the caller only if the hit was the caller's file, and
// anything done with the file before the reply must be preceded by Valid
// (FD.Recognised). Even then the file is one this listener took from one
// of its callers and its policy accepted. A different file under the same
// number, a closed descriptor and a thread id used by another task with
// another file fail the kcmp, and the call is served as a first one
// (pidfd_getfd). A dup of the file, or the same file passed in with
// SCM_RIGHTS, is the same open file, and so is what the kernel itself
// would act on.
//
// What a reference costs the container: a file held open keeps its mount
// busy after the container closed its last descriptor of it. Only files
// whose being held changes nothing else are kept (the policy's choice:
// loop-control nodes, character devices without open counts), entries
// not used for fileSweep are dropped, and Close drops all of them.

// fileKey names one descriptor of one caller thread.
type fileKey struct{ tid, fd int }

// cachedFile is a caller's file the listener holds a reference to.
type cachedFile struct {
	l     *Listener
	fd    int // our reference (a pidfd_getfd duplicate)
	flags int
	st    unix.Stat_t
	// users counts the FDs handed out and not yet closed; it grows only
	// under l.mu while c is in the cache. Once dropped (out of the
	// cache), whoever sees users at 0 closes fd, once (closed).
	users   atomic.Int32
	dropped atomic.Bool
	closed  atomic.Bool
	used    bool // handed out since the last sweep (l.mu)
}

// maxCachedFiles bounds one listener's file cache.
const maxCachedFiles = 64

// fileSweep is how often a listener's file cache drops the entries not
// used since the last sweep (a variable for tests).
var fileSweep = 250 * time.Millisecond

// selfPid is this process's pid, for kcmp.
var selfPid = os.Getpid()

// KeepFiles makes l keep a reference to every caller file keep accepts
// (GetFDStat), so that later calls on the same descriptor are recognised
// with one kcmp. keep must accept only files whose being held open
// changes nothing the container can see but its mount being busy, and
// must not depend on state that changes: a kept file's stat is reused.
// Call it before serving.
func (l *Listener) KeepFiles(keep func(*unix.Stat_t) bool) {
	l.mu.Lock()
	l.keep = keep
	l.mu.Unlock()
}

// lookupFile returns the kept file of key, counted as in use, or nil.
func (l *Listener) lookupFile(key fileKey) *cachedFile {
	l.mu.Lock()
	c := l.files[key]
	if c != nil {
		c.users.Add(1)
		c.used = true
	}
	l.mu.Unlock()
	return c
}

// keepFile adds f (a fresh duplicate of key's file, with stat st) to the
// cache if the policy accepts it, and returns its entry, counted as in use:
// f's descriptor then belongs to the entry. It returns nil if f is not
// kept.
func (l *Listener) keepFile(key fileKey, f FD, st *unix.Stat_t) *cachedFile {
	// The policy gets a copy: a pointer handed to a function value
	// escapes, and GetFDStat's callers keep st on their stack.
	cp := *st
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.keep == nil || !l.keep(&cp) || len(l.files) >= maxCachedFiles || l.files[key] != nil {
		return nil
	}
	c := &cachedFile{l: l, fd: f.N, flags: f.Flags, st: *st, used: true}
	c.users.Store(1)
	if l.files == nil {
		l.files = map[fileKey]*cachedFile{}
	}
	l.files[key] = c
	if l.sweeper == nil {
		l.sweeper = time.AfterFunc(fileSweep, l.sweep)
	} else if len(l.files) == 1 {
		l.sweeper.Reset(fileSweep)
	}
	return c
}

// forget removes c (key's entry) from the cache and drops the use taken
// by lookupFile.
func (l *Listener) forget(key fileKey, c *cachedFile) {
	l.mu.Lock()
	if l.files[key] == c {
		delete(l.files, key)
		c.dropped.Store(true)
	}
	l.mu.Unlock()
	c.release()
}

// release ends one use of c, without a lock: the serve loop's path.
func (c *cachedFile) release() {
	if c.users.Add(-1) <= 0 && c.dropped.Load() {
		c.close()
	}
}

// close closes our reference once, when c is dropped and unused.
func (c *cachedFile) close() {
	if c.closed.CompareAndSwap(false, true) {
		_ = unix.Close(c.fd) // our reference; kept files are character devices
	}
}

// sweep drops the entries not used since the last sweep.
func (l *Listener) sweep() {
	l.mu.Lock()
	drop := l.dropFilesLocked(false)
	if len(l.files) > 0 && !l.closed {
		l.sweeper.Reset(fileSweep)
	}
	l.mu.Unlock()
	closeFiles(drop)
}

// DropFiles drops every kept file (their descriptors are closed once no
// call uses them). A kept file keeps its mount busy: the serve loop drops
// them before an umount, which must find the caller's mounts as the
// caller left them.
func (l *Listener) DropFiles() {
	l.mu.Lock()
	if len(l.files) == 0 {
		l.mu.Unlock()
		return
	}
	drop := l.dropFilesLocked(true)
	l.mu.Unlock()
	closeFiles(drop)
}

// dropFilesLocked removes the entries not used since the last sweep (all
// of them if all is set) and returns them, to be closed (closeFiles) once
// l.mu is released. Preconditions: l.mu held.
func (l *Listener) dropFilesLocked(all bool) []*cachedFile {
	var drop []*cachedFile
	for key, c := range l.files {
		if !all && c.used {
			c.used = false
			continue
		}
		delete(l.files, key)
		c.dropped.Store(true)
		drop = append(drop, c)
	}
	if all && l.sweeper != nil {
		l.sweeper.Stop()
	}
	return drop
}

// closeFiles closes the dropped entries nobody uses; a user's release
// closes the others.
func closeFiles(cs []*cachedFile) {
	for _, c := range cs {
		if c.users.Load() <= 0 {
			c.close()
		}
	}
}

// GetFDStat is GetFD that also returns the file's fstat. A file the
// listener keeps (KeepFiles) is recognised with one kcmp (see fdcache.go)
// and without a notification ID check: such an FD reports Recognised,
// and whatever has an effect before the reply must check Valid first. It
// shares the listener's reference; Close ends the use. The stat is
// returned by value: a pointer passed through an interface would put the
// caller's copy on the heap on every call.
func (t *Target) GetFDStat(unsafeFD uint32) (FD, unix.Stat_t, error) {
	var st unix.Stat_t
	if unsafeFD > 0x7fffffff {
		return FD{N: -1}, st, unix.EBADF
	}
	l := t.l
	key := fileKey{t.req.Pid, int(unsafeFD)}
	if c := l.recognise(key); c != nil {
		return FD{N: c.fd, Flags: c.flags, c: c, recog: true}, c.st, nil
	}
	f, err := t.GetFD(unsafeFD)
	if err != nil {
		return f, st, err
	}
	if err := unix.Fstat(f.N, &st); err != nil {
		_ = f.Close() // our duplicate, refused before any use
		return FD{N: -1}, st, err
	}
	f.c = l.keepFile(key, f, &st)
	return f, st, nil
}

// KeptStat reports whether descriptor unsafeFD of req's caller is a file
// the listener keeps (KeepFiles), recognised with one kcmp as GetFDStat
// recognises it, and if so copies the file's stat into st. It is the
// serve loop's shortcut for an answer that needs nothing of the file but
// its stat: no Target, no FD to close. The same rule as for
// FD.Recognised holds: the file is the caller's only if the call is still
// pending, so the answer must have no side effect (the reply proves it)
// or be preceded by Valid. A miss drops the entry (recognise): GetFDStat
// then serves the call as a first one.
func (l *Listener) KeptStat(req *Request, unsafeFD uint32, st *unix.Stat_t) bool {
	if unsafeFD > 0x7fffffff {
		return false
	}
	c := l.recognise(fileKey{req.Pid, int(unsafeFD)})
	if c == nil {
		return false
	}
	*st = c.st
	c.release()
	return true
}

// recognise returns key's kept file, counted as in use, if one kcmp shows
// that the caller's descriptor is still that file (see the top of this
// file), or nil. A miss (another file under that number, none, or the
// thread is gone) drops the entry, so the call is served as a first one
// and a later lookup does not repeat the kcmp.
func (l *Listener) recognise(key fileKey) *cachedFile {
	c := l.lookupFile(key)
	if c == nil {
		return nil
	}
	same, err := linux.SameFile(selfPid, key.tid, c.fd, key.fd)
	if err == nil && same {
		l.hits.Add(1)
		return c
	}
	l.forget(key, c)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		// No kcmp (CONFIG_KCMP), or no ptrace access to the caller
		// (Yama): keeping files would only cost.
		l.KeepFiles(nil)
	}
	return nil
}
