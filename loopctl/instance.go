package loopctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loopvisor/loopvisor/internal/linux"
	"github.com/loopvisor/loopvisor/loopctl/registry"
	"github.com/loopvisor/loopvisor/loopctl/view"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Limits bound what an instance may hold.
type Limits struct {
	MaxLoop   int // devices per instance (--max-loop)
	MaxPerUID int // devices per host uid across all instances (--max-loop-per-uid)
}

// DefaultLimits are the limits when no flag says otherwise.
var DefaultLimits = Limits{MaxLoop: 16, MaxPerUID: 64}

// Config describes a new instance.
type Config struct {
	ID           string
	Container    string // OCI container id, for the journal and status
	ContainerPid int    // the container's init: its devices outlive the supervisor while it runs
	HostUID      int    // host uid of the sandbox's root
	HostGID      int
	// ChargeUID is the host uid whose MaxPerUID the instance's devices
	// count against; 0 means HostUID. The agent charges a user's
	// containers to that user, whichever of its ids their root maps to.
	ChargeUID int
	Limits    Limits
	Log       *logrus.Entry
}

// Instance is one container's private set of loop devices.
type Instance struct {
	ID           string
	Container    string
	containerPid int
	containerSt  uint64
	HostUID      int
	chargeUID    int
	limits       Limits
	host         *Host
	reg          *registry.Registry
	View         *view.View
	log          *logrus.Entry

	mu      sync.Mutex
	devs    map[int]*os.File  // owned index -> O_EXCL claim while unbound (nil when bound or in rundown)
	order   []int             // the indices of devs, ascending (addDev, dropDev): GET_FREE's scan without a map iteration
	binding map[int]int       // indices whose claim is dropped for a caller's command in flight
	parts   map[int][]partDev // whole device -> its partition devices
	// Devices the sandbox gave back (LOOP_CTL_REMOVE, a dropped
	// partition): kept by the instance until it ends, claimed and without
	// nodes, so no kept reference can ever reach the index's next device.
	// GET_FREE and ADD hand them out again first; limits count them.
	hidden map[int]bool
	// Indices whose backing file is on FUSE: their size-computing
	// commands run as the caller (asCaller).
	fuseBacked map[int]bool
	closed     bool
	stop       chan struct{}
	done       chan struct{}

	// UserNS is the inode of the sandbox's user namespace; callers in it
	// with CAP_SYS_ADMIN pass the loop driver's CAP_SYS_ADMIN checks.
	UserNS uint64
}

// NewInstance creates an instance with its view and journal.
func NewInstance(h *Host, reg *registry.Registry, c Config) (*Instance, error) {
	if c.Limits.MaxLoop <= 0 {
		c.Limits.MaxLoop = DefaultLimits.MaxLoop
	}
	if c.Limits.MaxPerUID <= 0 {
		c.Limits.MaxPerUID = DefaultLimits.MaxPerUID
	}
	if c.Log == nil {
		c.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if c.ChargeUID == 0 {
		c.ChargeUID = c.HostUID
	}
	v, err := view.New(c.HostUID, c.HostGID)
	if err != nil {
		return nil, err
	}
	in := &Instance{
		ID: c.ID, Container: c.Container, containerPid: c.ContainerPid, HostUID: c.HostUID, chargeUID: c.ChargeUID, limits: c.Limits, host: h, reg: reg, View: v,
		log: c.Log.WithField("instance", c.ID), devs: map[int]*os.File{}, binding: map[int]int{}, parts: map[int][]partDev{}, hidden: map[int]bool{}, fuseBacked: map[int]bool{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if c.ContainerPid > 0 {
		if in.containerSt, err = registry.ProcStartTime(c.ContainerPid); err != nil {
			_ = v.Close()
			return nil, err
		}
	}
	if err := in.writeJournal(true); err != nil {
		_ = v.Close()
		return nil, err
	}
	// A supervisor killed with SIGKILL revokes nothing itself: the next
	// gc reaches the view here (see gc, view.RevokePersisted). After the
	// journal: a view whose journal is gone is an orphan gc may revoke.
	if err := persistView(reg, v, c.ID); err != nil {
		_ = v.Close()
		ReleaseViews(reg)
		if unlock, lerr := reg.Lock(); lerr == nil {
			_ = reg.Delete(c.ID)
			unlock()
		}
		return nil, fmt.Errorf("persist the view: %w", err)
	}
	subscribe(in)
	go in.watch()
	return in, nil
}

// ViewDir is where instance id's view is attached while its supervisor
// lives (a directory only root can reach, in the state directory).
func ViewDir(reg *registry.Registry, id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("instance id %q cannot name a directory", id)
	}
	dir := filepath.Join(reg.Dir, "views")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(dir, id), nil
}

// persistView attaches v at ViewDir(reg, id) (view.Persist), under the
// registry lock, on STATE/views made a private tmpfs of its own first, so
// the views attached there do not propagate into other mount namespaces
// (a shared /run would copy each into every peer). The lock keeps two
// supervisors from stacking two tmpfs there, and ReleaseViews from
// detaching it under a view being attached.
func persistView(reg *registry.Registry, v *view.View, id string) error {
	dir, err := ViewDir(reg, id)
	if err != nil {
		return err
	}
	unlock, err := reg.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	views := filepath.Dir(dir)
	if !isMountpoint(views, reg.Dir) {
		if err := unix.Mount("loopvisor-views", views, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64k"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", views, err)
		}
		if err := unix.Mount("", views, "", unix.MS_PRIVATE, ""); err != nil {
			_ = unix.Unmount(views, unix.MNT_DETACH)
			return fmt.Errorf("make %s private: %w", views, err)
		}
	}
	return v.Persist(dir)
}

// RevokeOrphanViews revokes and detaches the views in STATE/views that
// no journal names (a supervisor killed after it deleted its journal and
// before it detached its view), under the registry lock, where views are
// attached only after their journal is written.
func RevokeOrphanViews(reg *registry.Registry) (revoked int, err error) {
	views := filepath.Join(reg.Dir, "views")
	unlock, err := reg.Lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	ents, err := os.ReadDir(views)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	js, _ := reg.Journals()
	named := map[string]bool{}
	for _, j := range js {
		named[j.ID] = true
	}
	for _, e := range ents {
		if named[e.Name()] {
			continue
		}
		n, rerr := view.RevokePersisted(filepath.Join(views, e.Name()))
		revoked += n
		if rerr != nil && err == nil {
			err = rerr
		}
	}
	return revoked, err
}

// ReleaseViews detaches STATE/views once no view is attached there.
func ReleaseViews(reg *registry.Registry) {
	views := filepath.Join(reg.Dir, "views")
	unlock, err := reg.Lock()
	if err != nil {
		return
	}
	defer unlock()
	if !isMountpoint(views, reg.Dir) {
		return
	}
	if ents, err := os.ReadDir(views); err == nil && len(ents) == 0 {
		_ = unix.Unmount(views, unix.MNT_DETACH)
	}
}

func isMountpoint(dir, parent string) bool {
	var st, pst unix.Stat_t
	return unix.Stat(dir, &st) == nil && unix.Stat(parent, &pst) == nil && st.Dev != pst.Dev
}

func (in *Instance) writeJournal(lock bool) error {
	if lock {
		unlock, err := in.reg.Lock()
		if err != nil {
			return err
		}
		defer unlock()
	}
	st, err := registry.ProcStartTime(os.Getpid())
	if err != nil {
		return err
	}
	j := &registry.Journal{ID: in.ID, Container: in.Container, Pid: os.Getpid(), StartTime: st, HostUID: in.chargeUID,
		ContainerPid: in.containerPid, ContainerStart: in.containerSt}
	for idx := range in.devs {
		j.Devices = append(j.Devices, idx)
	}
	return in.reg.Write(j)
}

// Owns reports whether loop device idx belongs to the instance and is
// shown in it (a device kept hidden after the sandbox gave it back looks
// absent, as it would on the host).
func (in *Instance) Owns(idx int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.devs[idx]
	return ok && !in.hidden[idx]
}

// MaxLoop returns the instance's device limit.
func (in *Instance) MaxLoop() int { return in.limits.MaxLoop }

// NodePath returns a supervisor-only node of loop device idx.
func (in *Instance) NodePath(idx int) (string, error) { return in.reg.NodePath(idx) }

// HelperNode makes a node of idx that only a FUSE helper running as the
// sandbox's root can open (see view.View.HelperNode), for a device the
// instance owns.
func (in *Instance) HelperNode(idx int, readOnly bool) (*os.File, func(), error) {
	if !in.Owns(idx) {
		return nil, nil, unix.EPERM
	}
	return in.View.HelperNode(idx, readOnly)
}

// FuseNode returns the view's /dev/fuse node for FUSE helpers.
func (in *Instance) FuseNode() (*os.File, error) { return in.View.FuseNode() }

// Devices returns the owned indices.
func (in *Instance) Devices() []int {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []int
	for idx := range in.devs {
		out = append(out, idx)
	}
	return out
}

// claim takes the O_EXCL hold on an unbound device. Preconditions: in.mu
// held.
func (in *Instance) claim(idx int) {
	// Opening a node of a loop device that does not exist creates it
	// (the driver's autoload): never do that for a device that is gone.
	// Only an owned index is claimed (addDev makes it owned).
	if f, owned := in.devs[idx]; !owned || f != nil || in.binding[idx] > 0 || !Exists(idx) || Bound(idx) {
		return
	}
	f, err := in.reg.OpenLoop(idx, unix.O_RDONLY|unix.O_EXCL|unix.O_NONBLOCK)
	if err != nil {
		// ENXIO: in rundown until its last opener closes; EBUSY: the
		// sandbox holds it exclusively or it is being bound. The watcher
		// tries again.
		return
	}
	if Bound(idx) {
		_ = f.Close()
		return
	}
	in.devs[idx] = f
}

// unclaim drops the hold. Preconditions: in.mu held.
func (in *Instance) unclaim(idx int) {
	if f := in.devs[idx]; f != nil {
		_ = f.Close()
		in.devs[idx] = nil
	}
}

// watch re-claims devices that became unbound outside a served ioctl:
// autoclear and deferred LOOP_CLR_FD happen at the last close.
func (in *Instance) watch() {
	defer close(in.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
		}
		in.mu.Lock()
		claimed := false
		for idx, f := range in.devs {
			if f == nil {
				in.claim(idx)
				claimed = claimed || in.devs[idx] != nil
			}
		}
		in.mu.Unlock()
		if claimed {
			// Detached at its last close (autoclear): no size any more.
			in.View.RefreshPartitions()
		}
	}
}

// allocate creates a new device for the instance (idx < 0: any free
// index), shown as /dev/loopN unless it is to serve a partition (show
// false). Preconditions: in.mu held.
func (in *Instance) allocate(idx int, show bool) (int, error) {
	if len(in.devs) >= in.limits.MaxLoop {
		in.log.WithFields(logrus.Fields{"limit": in.limits.MaxLoop}).Warn("loop device limit of the instance reached: ENOSPC")
		return -1, unix.ENOSPC
	}
	unlock, err := in.reg.Lock()
	if err != nil {
		return -1, unix.EIO
	}
	defer unlock()
	if use := in.reg.UIDUse(in.chargeUID); use >= in.limits.MaxPerUID {
		in.log.WithFields(logrus.Fields{"host_uid": in.chargeUID, "limit": in.limits.MaxPerUID}).Warn("loop device limit of the host uid reached: ENOSPC")
		return -1, unix.ENOSPC
	}
	got, err := in.host.Add(idx)
	if err != nil {
		return -1, err
	}
	in.addDev(got)
	if err := in.writeJournal(false); err != nil {
		in.log.WithError(err).Error("cannot journal a new device; giving it back")
		in.dropDev(got)
		_ = in.host.Remove(got)
		return -1, unix.EIO
	}
	in.claim(got)
	if show {
		if err := in.View.AddLoop(got); err != nil {
			in.log.WithError(err).Error("cannot add device node")
		}
	}
	in.log.WithField("loop", got).Info("device added to instance")
	return got, nil
}

// PublishWait bounds how long LOOP_CTL_GET_FREE and LOOP_CTL_ADD wait for
// a new node to appear in the container's own /dev (agent): a container
// whose /dev does not answer delays only its own call.
const PublishWait = 5 * time.Second

// GetFree serves LOOP_CTL_GET_FREE: the lowest unbound device of the
// instance (one it kept hidden is shown again), or a new one. The reply
// waits (without any lock) until the node is in the container's /dev, as
// the kernel's node exists when the ioctl returns.
func (in *Instance) GetFree() (int, error) {
	idx, err := in.getFree()
	if err == nil {
		in.View.WaitPublished("loop"+strconv.Itoa(idx), PublishWait)
	}
	return idx, err
}

// heldFree returns the lowest device the instance holds unbound and
// shown (what getFree returns first) if there is one, and the wait
// GetFree makes for its nodes; it changes nothing.
func (in *Instance) heldFree() (int, bool) {
	in.mu.Lock()
	best := in.lowestHeldFree()
	ok := best >= 0 && !in.hidden[best]
	in.mu.Unlock()
	if ok && in.View.Publishing() {
		in.View.WaitPublished("loop"+strconv.Itoa(best), PublishWait)
	}
	return best, ok
}

// lowestHeldFree returns the lowest device the supervisor holds O_EXCL
// and nobody binds, or -1. Such a device is known to exist and be unbound
// (nobody else can bind it, nor remove it while it is open).
// Preconditions: in.mu held.
func (in *Instance) lowestHeldFree() int {
	for _, idx := range in.order {
		if in.devs[idx] != nil && in.binding[idx] == 0 {
			return idx
		}
	}
	return -1
}

// addDev makes idx the instance's, not yet claimed. Preconditions: in.mu
// held.
func (in *Instance) addDev(idx int) {
	if _, owned := in.devs[idx]; owned {
		return
	}
	in.devs[idx] = nil
	i, _ := slices.BinarySearch(in.order, idx)
	in.order = slices.Insert(in.order, i, idx)
}

// dropDev forgets idx (its claim, if any, is the caller's to close).
// Preconditions: in.mu held.
func (in *Instance) dropDev(idx int) {
	delete(in.devs, idx)
	if i, ok := slices.BinarySearch(in.order, idx); ok {
		in.order = slices.Delete(in.order, i, i+1)
	}
}

func (in *Instance) getFree() (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	best := in.lowestHeldFree()
	if best < 0 {
		for idx := range in.devs {
			if Exists(idx) && !Bound(idx) && (best < 0 || idx < best) {
				in.claim(idx)
				if in.devs[idx] != nil { // not in rundown
					best = idx
				}
			}
		}
	}
	if best >= 0 {
		in.unhide(best, true)
		return best, nil
	}
	return in.allocate(-1, true)
}

// unhide shows a device the instance kept hidden again, with fresh nodes
// (none if it is to serve a partition: show false). Preconditions: in.mu
// held.
func (in *Instance) unhide(idx int, show bool) {
	if !in.hidden[idx] {
		return
	}
	delete(in.hidden, idx)
	if !show {
		return
	}
	if err := in.View.AddLoop(idx); err != nil {
		in.log.WithError(err).Error("cannot add device node")
	}
	in.log.WithField("loop", idx).Info("kept device shown again")
}

// Add serves LOOP_CTL_ADD (see GetFree for the wait). A device the
// instance kept hidden is handed out again before a new one is created.
func (in *Instance) Add(idx int32) (int, error) {
	got, err := in.add(idx)
	if err == nil {
		in.View.WaitPublished("loop"+strconv.Itoa(got), PublishWait)
	}
	return got, err
}

func (in *Instance) add(idx int32) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if idx >= 0 {
		if in.hidden[int(idx)] {
			in.unhide(int(idx), true)
			return int(idx), nil
		}
		if _, ok := in.devs[int(idx)]; ok || Exists(int(idx)) {
			return -1, unix.EEXIST
		}
		return in.allocate(int(idx), true)
	}
	return in.take(true)
}

// take hands out the lowest hidden device of the instance that is ready
// (claimed, so unbound), or allocates a new one; show as in allocate.
// Preconditions: in.mu held.
func (in *Instance) take(show bool) (int, error) {
	best := -1
	for h := range in.hidden {
		// A device the instance unbound may still be bound in the kernel:
		// LOOP_CLR_FD while someone (a helper that is exiting, a node
		// reference) holds it open only marks it to be cleared at the
		// last close, and LOOP_CONFIGURE on it answers EBUSY till then.
		if in.devs[h] != nil && in.binding[h] == 0 && !Bound(h) && (best < 0 || h < best) {
			best = h
		}
	}
	if best >= 0 {
		in.unhide(best, show)
		return best, nil
	}
	return in.allocate(-1, show)
}

// Remove serves LOOP_CTL_REMOVE. Indices the instance does not own look
// absent.
func (in *Instance) Remove(idx int32) error {
	if idx < 0 {
		return unix.EINVAL
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.devs[int(idx)]; !ok || in.hidden[int(idx)] {
		in.log.WithField("loop", idx).Info("LOOP_CTL_REMOVE of a device outside the instance: ENODEV")
		return unix.ENODEV
	}
	i := int(idx)
	// Revoke the sandbox's nodes before the kernel may remove the device:
	// a reference it kept must never open whatever gets index i next, nor
	// make the kernel create it again. An fd it already has open makes the
	// kernel answer EBUSY, and the nodes open again.
	if err := in.View.Revoke(i); err != nil {
		in.log.WithError(err).WithField("loop", i).Error("cannot revoke the device's nodes; device kept: EIO")
		in.regrant(i)
		return unix.EIO
	}
	if err := in.removeAndKeep(i); err != nil {
		in.regrant(i)
		return err
	}
	return nil
}

// removeAndKeep removes device idx, whose nodes are revoked, and keeps its
// index for the instance: the kernel's REMOVE says whether anyone holds the
// device open (EBUSY: the nodes are granted back), and the device is then
// created again at once, hidden and claimed, until the instance ends. An
// open(2) of a kept node that passed its permission check just before the
// revoke can still be on its way to the block layer; it must find the
// instance's own device there, never an absent index (which the kernel's
// block legacy autoload would create as a host device) nor the next
// tenant's. The registry lock keeps other instances from taking the index
// in between; if something else created it all the same (the host, or
// that open's autoload), the instance takes it if it is unbound. On an
// error the device stays as it was, its nodes still revoked.
// Preconditions: in.mu held, the nodes of idx revoked.
func (in *Instance) removeAndKeep(idx int) error {
	kept, err := in.removeAndAdd(idx)
	if err != nil {
		return err
	}
	// Unpublishing may wait on the container: not under the registry lock.
	if !kept {
		in.View.RemoveLoop(idx)
		return nil
	}
	in.hide(idx)
	in.log.WithField("loop", idx).Info("device given back by the sandbox; hidden and kept until the instance ends")
	return nil
}

// removeAndAdd is the part of removeAndKeep under the registry lock. kept
// is false if the index could not be kept (it is then dropped from the
// instance and its journal).
func (in *Instance) removeAndAdd(idx int) (kept bool, err error) {
	unlock, err := in.reg.Lock()
	if err != nil {
		return false, unix.EIO
	}
	defer unlock()
	in.unclaim(idx)
	if err := in.host.Remove(idx); err != nil && !errors.Is(err, unix.ENODEV) {
		in.claim(idx)
		return false, err
	}
	got, err := in.host.Add(idx) // at once: the gap is what a stalled open could hit
	if errors.Is(err, unix.EEXIST) && !Bound(idx) {
		// Taken only if nobody else claims it: then nobody can bind it.
		in.claim(idx)
		if in.devs[idx] != nil {
			in.log.WithField("loop", idx).Warn("device created again by someone else right after its removal; kept by the instance")
			got, err = idx, nil
		}
	}
	if err != nil || got != idx {
		in.log.WithError(err).WithField("loop", idx).Warn("cannot keep the index of a removed device")
		in.dropDev(idx)
		delete(in.hidden, idx)
		in.reg.DropNode(idx)
		if err := in.writeJournal(false); err != nil {
			in.log.WithError(err).Error("cannot journal a removed device")
		}
		return false, nil
	}
	return true, nil
}

// hide takes device idx out of the sandbox's view (its nodes revoked) and
// keeps it for the instance, claimed once it is unbound, until GET_FREE or
// ADD hands it out again or the instance ends. Preconditions: in.mu held.
func (in *Instance) hide(idx int) {
	in.View.RemoveLoop(idx)
	in.hidden[idx] = true
	in.claim(idx)
}

// regrant gives the sandbox its nodes of idx back after a revoke, when the
// device stays in the instance after all.
func (in *Instance) regrant(idx int) {
	if err := in.View.Grant(idx); err != nil {
		in.log.WithError(err).WithField("loop", idx).Error("cannot give the device's nodes back")
	}
}

// BeginBind drops the claim on idx so the caller's LOOP_CONFIGURE or
// LOOP_SET_FD can bind it; EndBind re-takes it if the bind failed.
func (in *Instance) BeginBind(idx int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.binding[idx]++
	in.unclaim(idx)
}

// EndBind: see BeginBind.
func (in *Instance) EndBind(idx int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.binding[idx]--; in.binding[idx] <= 0 {
		delete(in.binding, idx)
	}
	if _, ok := in.devs[idx]; ok {
		in.claim(idx)
	}
}

// Close releases every device of the instance: revoke its nodes, detach,
// remove. Devices still in use outside the instance (mounted, claimed, open)
// are left bound (an unbound one to a tombstone) and stay in the journal for
// a later gc. It waits up to timeout for the sandbox's last closes to take
// effect.
func (in *Instance) Close(timeout time.Duration) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	in.mu.Unlock()
	unsubscribe(in)
	close(in.stop)
	<-in.done

	in.mu.Lock()
	defer in.mu.Unlock()
	// No node of the instance opens again, whatever is left below.
	for idx := range in.devs {
		if err := in.View.Revoke(idx); err != nil {
			in.log.WithError(err).WithField("loop", idx).Error("cannot revoke a node")
		}
	}
	deadline := time.Now().Add(timeout)
	var left []int
	for {
		left = left[:0]
		// Devices are released a few at a time: LOOP_CTL_REMOVE waits
		// tens of milliseconds in the kernel (del_gendisk) and mostly not
		// on a global lock, so an instance with partitions (three devices
		// and more) ends in the time of one. Every release blocks an OS
		// thread: releaseParallel bounds what one instance takes (the
		// agent releases a few instances at once).
		idxs := make([]int, 0, len(in.devs))
		for idx := range in.devs {
			in.unclaim(idx)
			idxs = append(idxs, idx)
		}
		errs := make([]error, len(idxs))
		var wg sync.WaitGroup
		sem := make(chan struct{}, releaseParallel)
		for i, idx := range idxs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				errs[i] = ReleaseDevice(in.host, in.reg, idx)
			}()
		}
		wg.Wait()
		for i, idx := range idxs {
			if errs[i] != nil {
				left = append(left, idx)
				continue
			}
			in.dropDev(idx)
			in.reg.DropNode(idx)
			in.View.RemoveLoop(idx)
			in.log.WithField("loop", idx).Info("device released")
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var err error
	unlock, lerr := in.reg.Lock()
	if lerr == nil {
		if len(in.devs) == 0 {
			err = in.reg.Delete(in.ID)
		} else {
			err = in.writeJournal(false)
		}
		unlock()
	}
	for _, idx := range left {
		Tombstone(in.reg, idx)
	}
	_ = in.View.Close()
	ReleaseViews(in.reg)
	if len(left) > 0 {
		in.log.WithField("loops", left).Warn("devices still in use outside the instance; left for loopvisor gc")
		return fmt.Errorf("%d loop devices still in use; run loopvisor gc later", len(left))
	}
	return err
}

// releaseParallel is how many devices of one instance are released at once.
const releaseParallel = 4

// ErrInUse means a device is mounted or claimed outside the instance.
var ErrInUse = errors.New("loop device in use outside the instance")

// ReleaseDevice detaches and removes loop device idx, unless something else
// still uses it.
func ReleaseDevice(h *Host, reg *registry.Registry, idx int) error {
	if err := DetachDevice(reg, idx); err != nil || !Exists(idx) {
		return err
	}
	if err := h.Remove(idx); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// DetachDevice detaches loop device idx (if it exists and is bound), unless
// something else still uses it: mounted or claimed (ErrInUse), or in
// rundown (EAGAIN).
func DetachDevice(reg *registry.Registry, idx int) error {
	if !Exists(idx) {
		return nil
	}
	f, err := reg.OpenLoop(idx, unix.O_RDONLY|unix.O_EXCL|unix.O_NONBLOCK)
	switch {
	case errors.Is(err, unix.EBUSY):
		return ErrInUse // mounted or held O_EXCL by someone else
	case errors.Is(err, unix.ENXIO):
		return unix.EAGAIN // rundown: an opener still has to close it
	case err != nil:
		if !Exists(idx) {
			return nil
		}
		return err
	}
	defer func() { _ = f.Close() }()
	if Bound(idx) {
		if _, err := Ioctl(f.Fd(), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
			return err
		}
	}
	return nil
}

// Tombstone is for a device left behind because something outside still
// holds it open: if it is unbound, the host's LOOP_CTL_GET_FREE would hand
// it out next and its opener would read what the host attaches. Tombstone
// binds it to an empty, read-only memfd so the kernel skips it while the
// opener lives; the journal keeps it for gc. Best effort: if it fails the
// device stays as it was (and in its journal).
func Tombstone(reg *registry.Registry, idx int) {
	if !Exists(idx) || Bound(idx) {
		return
	}
	mfd, err := unix.MemfdCreate("loopvisor-tombstone", unix.MFD_CLOEXEC)
	if err != nil {
		return
	}
	defer func() { _ = unix.Close(mfd) }()
	f, err := reg.OpenLoop(idx, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	cfg := make([]byte, linux.SizeofLoopConfig)
	binary.LittleEndian.PutUint32(cfg[0:], uint32(mfd))
	binary.LittleEndian.PutUint32(cfg[8+52:], loFlagsReadOnly) // lo_flags
	copy(cfg[8+56:8+56+63], "loopvisor-tombstone")
	_, _ = IoctlBuf(f.Fd(), cmdConfigure, cfg)
}
