package supervisor

import (
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/loopvisor/loopvisor/internal/devcgroup"
	"github.com/loopvisor/loopvisor/loopctl"
	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/loopctl/view"
)

// GC releases what supervisors that died left behind in reg: for every
// journal whose supervisor no longer runs, each device is detached and
// removed unless something outside still uses it (then it stays in the
// journal for the next gc). It returns how many devices it released and how
// many it left.
//
// A sandbox dies asynchronously after its supervisor: its FUSE helpers and
// last openers may still hold a device for a moment. GC retries a busy
// device for up to wait before it leaves it.
func GC(h *loopctl.Host, reg *registry.Registry, log *logrus.Entry, wait time.Duration) (released, left int) {
	// The registry lock is held only to read journals and to claim or
	// update one, never while devices are released: a release may wait for
	// a dying sandbox (up to wait) or for its backing file, and every other
	// supervisor's allocations take the same lock. A claimed journal names
	// this process, so a concurrent gc leaves it alone; if this gc dies
	// half-way, the next one takes it over.
	unlock, err := reg.Lock()
	if err != nil {
		log.WithError(err).Warn("gc: cannot lock the state dir")
		return 0, 0
	}
	js, errs := reg.Journals()
	for _, err := range errs {
		log.WithError(err).Warn("gc: unreadable journal left alone")
	}
	self, serr := registry.ProcStartTime(os.Getpid())
	var mine []*registry.Journal
	for _, j := range js {
		if j.Alive() || serr != nil {
			continue
		}
		dead := j.Pid
		j.Pid, j.StartTime = os.Getpid(), self
		if err := reg.Write(j); err != nil {
			log.WithError(err).WithField("instance", j.ID).Warn("gc: cannot claim a dead journal")
			continue
		}
		j.Pid = dead // for the log
		mine = append(mine, j)
	}
	unlock()
	for _, j := range mine {
		r, l := gcJournal(h, reg, j, log, wait)
		released += r
		left += l
	}
	if n, err := loopctl.RevokeOrphanViews(reg); err != nil {
		log.WithError(err).Warn("gc: revoking views without a journal")
	} else if n > 0 {
		log.WithField("nodes", n).Info("gc: revoked the nodes of views without a journal")
	}
	loopctl.ReleaseViews(reg)
	// The cgroups a kernel mount's create ran in (mountproxy/nsexec) are
	// removed after the create; a supervisor killed in between leaves an
	// empty one below its own cgroup.
	if n, err := devcgroup.RemoveStaleConfined(); err != nil {
		log.WithError(err).Warn("gc: removing the cgroups of dead supervisors' creates")
	} else if n > 0 {
		log.WithField("cgroups", n).Info("gc: removed the cgroups of dead supervisors' creates")
	}
	return released, left
}

// gcJournal releases the devices of one claimed journal and then deletes or
// rewrites it. Preconditions: j is claimed by this process; the registry
// lock is not held.
func gcJournal(h *loopctl.Host, reg *registry.Registry, j *registry.Journal, log *logrus.Entry, wait time.Duration) (released, left int) {
	jl := log.WithFields(logrus.Fields{"instance": j.ID, "dead_pid": j.Pid})
	// First, before any device leaves: every node the dead supervisor's
	// view made is revoked, whatever references the sandbox passed out.
	if dir, err := loopctl.ViewDir(reg, j.ID); err == nil {
		n, err := view.RevokePersisted(dir)
		if err != nil {
			jl.WithError(err).Warn("gc: revoking the dead instance's nodes")
		} else if n > 0 {
			jl.WithField("nodes", n).Info("gc: revoked the dead instance's device nodes")
		}
		loopctl.ReleaseViews(reg)
	}
	// Release in rounds: a partition device holds its whole device open,
	// so the whole device goes only after its partitions.
	keep := append([]int(nil), j.Devices...)
	errs := map[int]error{}
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		var next []int
		for _, idx := range keep {
			if err := loopctl.ReleaseDevice(h, reg, idx); err != nil {
				errs[idx] = err
				next = append(next, idx)
				continue
			}
			reg.DropNode(idx)
			released++
			jl.WithField("loop", idx).Info("gc: released device of a dead supervisor")
		}
		progress := len(next) < len(keep)
		keep = next
		if len(keep) == 0 || (!progress && time.Now().After(deadline)) {
			break
		}
	}
	for _, idx := range keep {
		loopctl.Tombstone(reg, idx)
		jl.WithError(errs[idx]).WithField("loop", idx).Warn("gc: device left in place")
	}
	unlock, err := reg.Lock()
	if err != nil {
		return released, len(keep)
	}
	defer unlock()
	if len(keep) == 0 {
		_ = reg.Delete(j.ID)
	} else {
		// Unclaimed again: the next gc retries it.
		j.Devices, j.Pid, j.StartTime = keep, 0, 0
		_ = reg.Write(j)
	}
	return released, len(keep)
}
