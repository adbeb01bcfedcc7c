package supervisor

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/loopvisor/loopvisor/loopctl"
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
func GC(h *loopctl.Host, reg *loopctl.Registry, log *logrus.Entry, wait time.Duration) (released, left int) {
	unlock, err := reg.Lock()
	if err != nil {
		log.WithError(err).Warn("gc: cannot lock the state dir")
		return 0, 0
	}
	defer unlock()
	js, errs := reg.Journals()
	for _, err := range errs {
		log.WithError(err).Warn("gc: unreadable journal left alone")
	}
	for _, j := range js {
		if j.Alive() {
			continue
		}
		jl := log.WithFields(logrus.Fields{"instance": j.ID, "dead_pid": j.Pid})
		// Release in rounds: a partition device holds its whole device
		// open, so the whole device goes only after its partitions.
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
		left += len(keep)
		if len(keep) == 0 {
			_ = reg.Delete(j.ID)
		} else {
			j.Devices = keep
			_ = reg.Write(j)
		}
	}
	return released, left
}
