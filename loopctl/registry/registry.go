package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/loopvisor/loopvisor/internal/linux"

	"golang.org/x/sys/unix"
)

// DefaultStateDir is where journals live unless --state-dir says otherwise.
const DefaultStateDir = "/run/loopvisor"

// Journal is what the state directory records of one instance.
type Journal struct {
	ID        string `json:"id"`
	Container string `json:"container,omitempty"` // OCI container id (agent)
	Pid       int    `json:"pid"`                 // supervisor pid
	StartTime uint64 `json:"start_time"`          // supervisor start time (clock ticks since boot), against pid reuse
	HostUID   int    `json:"host_uid"`            // the uid its devices count against (--max-loop-per-uid)
	// The container's init (agent instances): while it lives, its devices
	// are its own even if the supervisor that journaled them is gone.
	ContainerPid   int    `json:"container_pid,omitempty"`
	ContainerStart uint64 `json:"container_start,omitempty"`
	Devices        []int  `json:"devices"` // loop indices created for the instance
}

// Registry is a state directory shared by every loopvisor process that uses
// it.
type Registry struct {
	Dir string
}

// Open creates dir (mode 0700) if needed.
func Open(dir string) (*Registry, error) {
	if dir == "" {
		dir = DefaultStateDir
	}
	if err := os.MkdirAll(filepath.Join(dir, "instances"), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return &Registry{Dir: dir}, nil
}

// Lock takes the registry's exclusive lock; call the returned func to
// release it.
func (r *Registry) Lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.Dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, os.NewSyscallError("flock", err)
	}
	return func() { _ = f.Close() }, nil
}

func (r *Registry) path(id string) string {
	return filepath.Join(r.Dir, "instances", id+".json")
}

// Write records j atomically. Preconditions: the registry lock is held.
//
// A journal must outlive its supervisor, not the host: the rename makes it
// whole for every process at once, and the loop devices it names do not
// survive a crash or reboot of the host, so it is not synced to the disk
// (an fsync cost up to a millisecond per device on a disk state dir, three
// of them for `losetup -P` of a two-partition image).
func (r *Registry) Write(j *Journal) error {
	sort.Ints(j.Devices)
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.path(j.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.path(j.ID))
}

// Delete removes the journal of id. Preconditions: the registry lock is held.
func (r *Registry) Delete(id string) error {
	err := os.Remove(r.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Journals reads every journal. Unreadable ones are returned as errors so
// gc can report them; they are never guessed at.
func (r *Registry) Journals() ([]*Journal, []error) {
	ents, err := os.ReadDir(filepath.Join(r.Dir, "instances"))
	if err != nil {
		return nil, []error{err}
	}
	var js []*Journal
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.Dir, "instances", e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		j := new(Journal)
		if err := json.Unmarshal(b, j); err != nil {
			errs = append(errs, fmt.Errorf("journal %s: %w", e.Name(), err))
			continue
		}
		js = append(js, j)
	}
	return js, errs
}

// UIDUse counts the loop devices held by all instances of host uid.
// Preconditions: the registry lock is held.
func (r *Registry) UIDUse(uid int) int {
	js, _ := r.Journals()
	n := 0
	for _, j := range js {
		if j.HostUID == uid {
			n += len(j.Devices)
		}
	}
	return n
}

// ProcStartTime returns the start time of pid (field 22 of /proc/PID/stat).
func ProcStartTime(pid int) (uint64, error) {
	st, err := linux.ReadPidStat(pid)
	return st.StartTime, err
}

// Alive reports whether the supervisor that wrote j, or the container it
// served, still runs.
func (j *Journal) Alive() bool {
	if st, err := ProcStartTime(j.Pid); err == nil && st == j.StartTime {
		return true
	}
	if j.ContainerPid > 0 {
		if st, err := ProcStartTime(j.ContainerPid); err == nil && st == j.ContainerStart {
			return true
		}
	}
	return false
}

// NodePath returns the path of a node for loop device idx in the state
// directory, which only root can reach, creating it if needed.
func (r *Registry) NodePath(idx int) (string, error) {
	dir := filepath.Join(r.Dir, "nodes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "loop"+strconv.Itoa(idx))
	want := unix.Mkdev(linux.LoopMajor, uint32(idx))
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != want {
		_ = os.Remove(p)
		if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(want)); err != nil && err != unix.EEXIST {
			return "", os.NewSyscallError("mknod "+p, err)
		}
	}
	return p, nil
}

// OpenLoop opens loop device idx through NodePath, so a node the sandbox
// controls is never followed.
func (r *Registry) OpenLoop(idx int, flags int) (*os.File, error) {
	p, err := r.NodePath(idx)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "loop"+strconv.Itoa(idx)), nil
}

// DropNode removes the state directory's node for idx.
func (r *Registry) DropNode(idx int) {
	_ = os.Remove(filepath.Join(r.Dir, "nodes", "loop"+strconv.Itoa(idx)))
}
