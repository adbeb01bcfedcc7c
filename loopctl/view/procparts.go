package view

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/loopvisor/loopvisor/internal/linux"

	"golang.org/x/sys/unix"
)

// /proc/partitions of a sandbox.
//
// The kernel's /proc/partitions lists every block device of the host with
// a non-zero size, whatever namespace reads it: a sandbox would see the
// loop devices (and partitions) of every other tenant. The view keeps its
// own copy, ProcPartitions, in the kernel's format: the host's lines for
// block devices that are not loop devices (what the view's sysfs shows of
// them too), then the instance's own loop devices and partitions that
// have a size, under the device numbers of the sandbox's nodes (a
// partition is served by a loop device, so it is 7:K where the kernel
// would show 259:M). A `run` sandbox gets it mounted over /proc/partitions
// (ProcFiles).

// ProcPartitions is the view's file for /proc/partitions.
const ProcPartitions = "proc-partitions"

// ProcFiles are the view's files a sandbox attaches over files of its own
// /proc once that is mounted.
var ProcFiles = []struct{ File, Target string }{
	{ProcPartitions, "/proc/partitions"},
}

// ProcRoot is where the host's procfs is; tests may point it elsewhere.
var ProcRoot = "/proc"

// loopPartName matches the kernel's names of loop partitions (loopNpM).
var loopPartName = regexp.MustCompile(`^loop[0-9]+p[0-9]+$`)

// procPartitionsUsed is set once some view's ProcPartitions was cloned:
// only then is it worth keeping up to date.
var procPartitionsUsed atomic.Bool

// RefreshPartitions rewrites the view's /proc/partitions if what it
// shows changed (a device was bound, detached, resized). Cheap when no
// sandbox attached the file.
func (v *View) RefreshPartitions() {
	if !procPartitionsUsed.Load() {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshPartitions()
}

// refreshPartitions: see RefreshPartitions. Preconditions: v.mu held.
func (v *View) refreshPartitions() {
	if v.procParts == nil || !procPartitionsUsed.Load() {
		return
	}
	data := v.renderPartitions()
	if bytes.Equal(data, v.procPartsData) {
		return
	}
	// The file is mounted in the sandbox: it must stay the same inode.
	// Written whole at offset 0, then cut: a reader sees the old or the
	// new text, at worst a mix for one instant, never an empty file.
	if _, err := v.procParts.WriteAt(data, 0); err != nil {
		return
	}
	if err := v.procParts.Truncate(int64(len(data))); err != nil {
		return
	}
	v.procPartsData = data
}

// renderPartitions builds the view's /proc/partitions. Preconditions:
// v.mu held.
func (v *View) renderPartitions() []byte {
	var b bytes.Buffer
	b.WriteString("major minor  #blocks  name\n\n")
	if host, err := os.ReadFile(ProcRoot + "/partitions"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(host))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] == "major" {
				continue
			}
			if f[0] == strconv.Itoa(linux.LoopMajor) || loopPartName.MatchString(f[3]) {
				continue
			}
			b.WriteString(sc.Text())
			b.WriteByte('\n')
		}
	}
	loops := make([]int, 0, len(v.loops))
	for idx := range v.loops {
		loops = append(loops, idx)
	}
	sort.Ints(loops)
	line := func(minor int, name string) {
		sectors, err := strconv.ParseUint(sysAttr(minor, "size"), 10, 64)
		if err != nil || sectors == 0 {
			return
		}
		fmt.Fprintf(&b, "%4d  %7d %10d %s\n", linux.LoopMajor, minor, sectors>>1, name)
	}
	for _, idx := range loops {
		if sysAttr(idx, "size") == "0" {
			continue // the kernel lists neither a disk without size nor its partitions
		}
		line(idx, "loop"+strconv.Itoa(idx))
		nums := make([]int, 0, len(v.parts[idx]))
		for n := range v.parts[idx] {
			nums = append(nums, n)
		}
		sort.Ints(nums)
		for _, n := range nums {
			line(v.parts[idx][n].Dev, PartName(idx, n))
		}
	}
	return b.Bytes()
}

// makeProcFiles creates the view's /proc files. Preconditions: populate.
func (v *View) makeProcFiles() error {
	fd, err := unix.Openat(v.fd(), ProcPartitions, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return os.NewSyscallError("create "+ProcPartitions, err)
	}
	if err := unix.Fchmod(fd, 0o444); err != nil {
		_ = unix.Close(fd)
		return os.NewSyscallError("chmod "+ProcPartitions, err)
	}
	v.procParts = os.NewFile(uintptr(fd), ProcPartitions)
	data := v.renderPartitions()
	if _, err := v.procParts.WriteAt(data, 0); err != nil {
		return err
	}
	v.procPartsData = data
	return nil
}
