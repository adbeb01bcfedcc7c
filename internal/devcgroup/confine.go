package devcgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ConfinedPrefix starts the names of the cgroups NewConfined makes.
const ConfinedPrefix = "loopvisor-confined-"

var confinedSeq atomic.Uint64

// Confined is a new cgroup v2 directory below the calling process's own
// whose device program allows exactly the devices it was made for. A
// process started into it (clone3 with CLONE_INTO_CGROUP: exec.Cmd's
// SysProcAttr.UseCgroupFD with Dir's descriptor) can open, create or
// mknod no other device from its first instruction on, whatever the data
// it acts on names: for short-lived helpers that act as host root on
// what a container gave (a kernel superblock's create reads the
// container's image, which may name block devices by number). The kernel
// runs the program on hybrid hosts too, beside the v1 devices
// controller; no process has to move between cgroups (a v1 migration
// waits for an RCU grace period, some 13 ms here, when none happened
// just before).
type Confined struct {
	Dir    *os.File // the cgroup's directory (O_RDONLY: what clone3 wants)
	path   string
	detach func() error
}

// NewConfined makes the cgroup and attaches its program. It fails where
// there is no cgroup v2 hierarchy, the calling process's cgroup is not
// reachable in it (another cgroup namespace) or not writable, or BPF
// device programs cannot be loaded; callers then confine some other way.
func NewConfined(devs []Device) (*Confined, error) {
	mi, own, err := readSelf()
	if err != nil {
		return nil, err
	}
	parent, err := ownDir(mi, own, unifiedMount, unifiedPath)
	if err != nil {
		return nil, err
	}
	name := ConfinedPrefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(confinedSeq.Add(1), 10)
	path := filepath.Join(parent, name)
	if err := os.Mkdir(path, 0o700); err != nil {
		return nil, err
	}
	c := &Confined{path: path}
	if c.detach, err = AttachFilter(path, devs); err != nil {
		_ = os.Remove(path) // empty and ours: nothing else can be in it
		return nil, fmt.Errorf("cgroup %s: device program: %w", path, err)
	}
	if c.Dir, err = os.OpenFile(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		_ = c.detach()
		_ = os.Remove(path)
		return nil, err
	}
	return c, nil
}

// Close removes the cgroup once every process started into it has been
// waited for (the kernel refuses to remove a cgroup with a task, a zombie
// included, for a moment after the last exit: Close retries for up to a
// second).
func (c *Confined) Close() error {
	err := errors.Join(c.detach(), c.Dir.Close())
	for i := 0; ; i++ {
		rerr := os.Remove(c.path)
		if rerr == nil || errors.Is(rerr, os.ErrNotExist) {
			return err
		}
		if !errors.Is(rerr, unix.EBUSY) || i == 100 {
			return errors.Join(err, rerr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// V1KcreatePrefix starts the names of the v1 devices cgroups nsexec's
// kcreate makes where NewConfined cannot be used ("loopvisor-kcreate-PID").
const V1KcreatePrefix = "loopvisor-kcreate-"

// RemoveStaleConfined removes the empty cgroups NewConfined made below
// the calling process's own cgroup v2, and the v1 devices cgroups of
// nsexec's kcreate below its own v1 devices cgroup, for processes that
// are gone (a supervisor or op killed between making one and removing
// it). It returns how many it removed.
func RemoveStaleConfined() (int, error) {
	mi, own, err := readSelf()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	if dir, err := ownDir(mi, own, unifiedMount, unifiedPath); err == nil {
		k, err := removeStale(dir, ConfinedPrefix)
		n += k
		errs = append(errs, err)
	}
	if dir, err := ownDir(mi, own, devicesMount, devicesPath); err == nil {
		k, err := removeStale(dir, V1KcreatePrefix)
		n += k
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// readSelf reads the calling process's mountinfo and /proc/self/cgroup.
func readSelf() (mountinfo, cgroups []byte, err error) {
	if mountinfo, err = os.ReadFile("/proc/self/mountinfo"); err != nil {
		return nil, nil, err
	}
	if cgroups, err = os.ReadFile("/proc/self/cgroup"); err != nil {
		return nil, nil, err
	}
	return mountinfo, cgroups, nil
}

// ownDir returns the directory of the calling process's own cgroup in
// one hierarchy: mount finds the hierarchy's root in mountinfo
// (unifiedMount, devicesMount), path its line in cgroups (unifiedPath,
// devicesPath).
func ownDir(mountinfo, cgroups []byte, mount, path func([]byte) (string, error)) (string, error) {
	root, err := mount(mountinfo)
	if err != nil {
		return "", err
	}
	p, err := path(cgroups)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, p), nil
}

// removeStale removes the directories in dir named prefix+PID[-...] whose
// PID is not a live process. rmdir removes only an empty cgroup: one that
// still holds a process stays.
func removeStale(dir, prefix string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.IsDir() {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if p, err := strconv.Atoi(pid); err != nil || p <= 0 || unix.Kill(p, 0) == nil {
			continue // a live maker's (or not ours)
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}
