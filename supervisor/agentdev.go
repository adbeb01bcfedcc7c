package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/devcgroup"
	"github.com/loopvisor/loopvisor/internal/linux"
)

// devGrants gives a container's device cgroup access to exactly the
// devices the agent puts into it, and takes it back when they go (see
// internal/devcgroup): engines such as podman drop the device rules
// loopvisor needs when the container has a user namespace. A nil
// *devGrants (no v1 devices hierarchy, or it could not be found) does
// nothing: the runtime's rules apply.
type devGrants struct {
	cg  *devcgroup.Cgroup
	log *logrus.Entry

	mu    sync.Mutex
	names map[string]devcgroup.Device // published node name -> its device
}

// openDevGrants finds the devices cgroup of the container's init pid, which
// pidfd names. Failure is logged, not fatal: the container then has what
// its runtime gave it.
func openDevGrants(pid, pidfd int, log *logrus.Entry) *devGrants {
	cg, err := devcgroup.Open(pid, func() bool { return pidfdAlive(pidfd) })
	if err != nil {
		if errors.Is(err, devcgroup.ErrNoCgroup) || errors.Is(err, devcgroup.ErrShared) {
			log.WithError(err).Debug("device cgroup: nothing to grant; the runtime's device rules apply")
		} else {
			log.WithError(err).Warn("device cgroup: cannot find the container's; if its runtime denies loop devices, its opens of them fail with EPERM")
		}
		return nil
	}
	return &devGrants{cg: cg, log: log.WithField("cgroup", cg.Path), names: map[string]devcgroup.Device{}}
}

// openUserDevGrants is openDevGrants for a user's container (o): its
// cgroup is wherever the user's runtime ran, which may be shared with
// processes that are not the user's (a root service confined by a device
// allow-list that runs the user's job). Every process in it would get
// what is granted, so nothing is granted unless each is in the
// container's user namespace (or below) or is the user's own (every uid
// the peer's, in the initial user namespace).
func openUserDevGrants(pid, pidfd int, o *owner, log *logrus.Entry) *devGrants {
	g := openDevGrants(pid, pidfd, log)
	if g == nil {
		return nil
	}
	pids, err := g.cg.Procs()
	if err == nil {
		for _, p := range pids {
			if err = userOwnsProc(p, o); err != nil {
				break
			}
		}
	}
	if err != nil {
		g.log.WithError(err).Warn("device cgroup: shared with processes that are not the user's; nothing is granted there (the runtime's device rules apply)")
		g.close()
		return nil
	}
	return g
}

// userOwnsProc checks that process pid is in user namespace o.userNS (or
// below) or runs with every uid o.peer's in the initial user namespace. A
// process that exited in the meantime is no one's and passes.
func userOwnsProc(pid int, o *owner) error {
	in, err := inUserNS(pid, o.userNS)
	if errors.Is(err, errGone) || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if in {
		return nil
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	own, err := initialUserNS()
	if err != nil {
		return err
	}
	var ns unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/user", &ns); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	}
	if ns.Ino == own.Ino && ns.Dev == own.Dev && allUIDs(st, o.peer) {
		return nil
	}
	return fmt.Errorf("process %d is neither in the container's user namespace nor uid %d's", pid, o.peer)
}

// allUIDs reports whether the Uid: line of a /proc/PID/status text names
// uid four times (real, effective, saved, fs).
func allUIDs(status []byte, uid int) bool {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) != 4 {
				return false
			}
			for _, x := range f {
				if x != strconv.Itoa(uid) {
					return false
				}
			}
			return true
		}
	}
	return false
}

// grant allows d under name (a node name in the container's /dev).
func (g *devGrants) grant(name string, d devcgroup.Device) {
	if g == nil {
		return
	}
	g.mu.Lock()
	if old, ok := g.names[name]; ok {
		g.mu.Unlock()
		if old == d {
			return
		}
		g.revoke(name)
		g.mu.Lock()
	}
	g.names[name] = d
	g.mu.Unlock()
	wrote, err := g.cg.Grant(d)
	log := g.log.WithFields(logrus.Fields{"node": name, "device": d.String()})
	switch {
	case err != nil:
		log.WithError(err).Warn("device cgroup: cannot allow the device; the container's opens of it fail with EPERM")
	case wrote:
		log.Info("device cgroup: allowed")
	}
}

// grantNode allows the device of node, a detached mount of a device node
// the agent is about to publish as name.
func (g *devGrants) grantNode(name string, node *os.File) {
	if g == nil {
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(node.Fd()), &st); err != nil {
		g.log.WithError(err).WithField("node", name).Warn("device cgroup: cannot stat the node")
		return
	}
	d, err := devcgroup.FromStat(&st)
	if err != nil {
		return
	}
	g.grant(name, d)
}

// revoke takes back what grant allowed under name, once no other name
// holds the same device.
func (g *devGrants) revoke(name string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	d, ok := g.names[name]
	delete(g.names, name)
	g.mu.Unlock()
	if !ok {
		return
	}
	wrote, err := g.cg.Revoke(d)
	log := g.log.WithFields(logrus.Fields{"node": name, "device": d.String()})
	switch {
	case err != nil:
		log.WithError(err).Warn("device cgroup: cannot deny the device again")
	case wrote:
		log.Info("device cgroup: denied again")
	}
}

// grantStatic allows the nodes every container of the agent gets: its
// /dev/loop-control and, when it may mount, /dev/fuse (the FUSE helpers
// run in the container's cgroups and open it there).
func (g *devGrants) grantStatic(mounts bool) {
	g.grant("loop-control", devcgroup.Device{Type: 'c', Major: linux.MiscMajor, Minor: linux.LoopCtlMinor})
	if mounts {
		g.grant("fuse", devcgroup.Device{Type: 'c', Major: linux.FuseMajor, Minor: linux.FuseMinor})
	}
}

// close denies everything still granted (the container is gone).
func (g *devGrants) close() {
	if g == nil {
		return
	}
	if err := g.cg.Close(); err != nil {
		g.log.WithError(err).Warn("device cgroup: cannot deny every granted device")
	}
}
