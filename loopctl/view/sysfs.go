package view

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/loopvisor/loopvisor/internal/linux"

	"golang.org/x/sys/unix"
)

// Partitions in the sandbox's sysfs.
//
// The kernel shows a partition of loopN as a directory loopNpM inside
// loopN's device directory, with the attributes start, size, partition,
// dev, ro, stat, inflight, alignment_offset, discard_alignment and uevent
// (DEVTYPE=partition, PARTN=M), and links /sys/class/block/loopNpM and
// /sys/dev/block/MAJ:MIN to it. Tools find a partition's start sector and
// number there: grub-install (through `udevadm info --query path`), lsblk,
// partx, libblkid's whole-disk lookup.
//
// An instance's partition is served by a loop device of its own (loopK),
// whose real sysfs directory says it is a disk. While loopN has
// partitions, the view shows /sys/block/loopN as a directory of its own:
// every entry of the real device directory as a symlink to it (so the
// values stay live), plus one directory per partition with the kernel's
// attributes. The values that are the same for loopK (size, ro, stat,
// inflight, dev, alignment and discard offsets) are symlinks to loopK's
// real attributes; start, partition and uevent are written by the view.
// /sys/class/block/loopN and /sys/dev/block/7:N then point at the view's
// directory, and the partition's own links at its subdirectory; loopK
// itself is not shown. Once the last partition goes, loopN is a symlink to
// its real directory again, as for every other device.

// Part is one partition as the sandbox's /dev and sysfs show it.
type Part struct {
	Num   int   // the partition number: the node is loopNpNum
	Dev   int   // the loop device that serves it
	Start int64 // first sector, in 512-byte units
}

// PartName is the name of partition num of loop device idx.
func PartName(idx, num int) string {
	return "loop" + strconv.Itoa(idx) + "p" + strconv.Itoa(num)
}

// realBlockDir is the device directory of loop device idx, as a path the
// sandbox resolves (its /sys/devices is the host's sysfs).
func realBlockDir(idx int) string { return "/sys/devices/virtual/block/loop" + strconv.Itoa(idx) }

// partLinks are a partition's attributes that equal those of the loop
// device serving it, as symlinks to that device's real attributes.
var partLinks = []string{"alignment_offset", "dev", "discard_alignment", "holders", "inflight", "power", "ro", "size", "stat", "trace"}

// AddPartition shows partition p of loop device parent: /dev/loopNpM (a
// node of p.Dev) and its sysfs directory and links.
func (v *View) AddPartition(parent int, p Part) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.addNode(PartName(parent, p.Num), p.Dev); err != nil {
		return err
	}
	if v.parts == nil {
		v.parts = map[int]map[int]Part{}
	}
	if v.parts[parent] == nil {
		v.parts[parent] = map[int]Part{}
	}
	if old, ok := v.parts[parent][p.Num]; ok {
		v.removePartSys(parent, old)
	}
	v.parts[parent][p.Num] = p
	defer v.refreshPartitions()
	if err := v.diskDir(parent); err != nil {
		return err
	}
	return v.addPartSys(parent, p)
}

// RemovePartition hides partition p of parent from /dev and sysfs (its
// node inodes are revoked with p.Dev, see Revoke).
func (v *View) RemovePartition(parent int, p Part) {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := PartName(parent, p.Num)
	if v.Unpublish != nil {
		v.enqueue(name, nil)
	}
	v.removeIfOurs(name, p.Dev)
	if cur, ok := v.parts[parent][p.Num]; ok && cur.Dev == p.Dev {
		v.removePartSys(parent, cur)
		delete(v.parts[parent], p.Num)
	}
	if len(v.parts[parent]) == 0 {
		delete(v.parts, parent)
		v.diskLinks(parent)
	}
	v.refreshPartitions()
}

// diskDir makes SysBlock/loopN a directory of the view (see the comment
// at the top), atomically replacing the symlink the sandbox may be
// reading through, and points the class and dev links at it.
// Preconditions: v.mu held.
func (v *View) diskDir(idx int) error {
	name := "loop" + strconv.Itoa(idx)
	path := SysBlock + "/" + name
	var st unix.Stat_t
	if unix.Fstatat(v.fd(), path, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	tmp := SysBlock + "/.new-" + name
	v.removeAll(tmp)
	if err := unix.Mkdirat(v.fd(), tmp, 0o755); err != nil {
		return os.NewSyscallError("mkdir "+tmp, err)
	}
	ents, err := os.ReadDir(filepath.Join(linux.SysRoot, "devices/virtual/block", name))
	if err != nil {
		v.removeAll(tmp)
		return err
	}
	for _, e := range ents {
		if err := v.symlink(realBlockDir(idx)+"/"+e.Name(), tmp+"/"+e.Name()); err != nil {
			v.removeAll(tmp)
			return err
		}
	}
	if err := v.replace(tmp, path); err != nil {
		v.removeAll(tmp)
		return err
	}
	for _, l := range []string{SysClass + "/" + name, fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, idx)} {
		if err := v.relink("../../block/"+name, l); err != nil {
			return err
		}
	}
	return nil
}

// diskLinks makes loopN's sysfs entries plain symlinks to its real
// directory again. Preconditions: v.mu held.
func (v *View) diskLinks(idx int) {
	name := "loop" + strconv.Itoa(idx)
	target := "devices/virtual/block/" + name
	for _, l := range []struct{ path, target string }{
		{SysBlock + "/" + name, "../" + target},
		{SysClass + "/" + name, "../../" + target},
		{fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, idx), "../../" + target},
	} {
		_ = v.relink(l.target, l.path)
	}
}

// addPartSys makes partition p's directory under SysBlock/loopN and its
// class and dev links. Preconditions: v.mu held, diskDir(parent) done.
func (v *View) addPartSys(parent int, p Part) error {
	name := PartName(parent, p.Num)
	dir := SysBlock + "/loop" + strconv.Itoa(parent) + "/" + name
	tmp := SysBlock + "/loop" + strconv.Itoa(parent) + "/.new-" + name
	v.removeAll(tmp)
	if err := unix.Mkdirat(v.fd(), tmp, 0o755); err != nil {
		return os.NewSyscallError("mkdir "+tmp, err)
	}
	for _, a := range partLinks {
		if err := v.symlink(realBlockDir(p.Dev)+"/"+a, tmp+"/"+a); err != nil {
			v.removeAll(tmp)
			return err
		}
	}
	if err := v.symlink("/sys/class/block", tmp+"/subsystem"); err != nil {
		v.removeAll(tmp)
		return err
	}
	uevent := fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=partition\n", linux.LoopMajor, p.Dev, name)
	if seq := sysAttr(parent, "diskseq"); seq != "" {
		uevent += "DISKSEQ=" + seq + "\n"
	}
	uevent += "PARTN=" + strconv.Itoa(p.Num) + "\n"
	for _, f := range []struct {
		name, data string
		mode       uint32
	}{
		{"start", strconv.FormatInt(p.Start, 10) + "\n", 0o444},
		{"partition", strconv.Itoa(p.Num) + "\n", 0o444},
		{"uevent", uevent, 0o644},
	} {
		if err := v.writeFile(tmp+"/"+f.name, f.data, f.mode); err != nil {
			v.removeAll(tmp)
			return err
		}
	}
	v.removeAll(dir)
	if err := unix.Renameat(v.fd(), tmp, v.fd(), dir); err != nil {
		v.removeAll(tmp)
		return os.NewSyscallError("rename "+dir, err)
	}
	target := "../../block/loop" + strconv.Itoa(parent) + "/" + name
	if err := v.relink(target, SysClass+"/"+name); err != nil {
		return err
	}
	return v.relink(target, fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, p.Dev))
}

// removePartSys removes what addPartSys made. Preconditions: v.mu held.
func (v *View) removePartSys(parent int, p Part) {
	name := PartName(parent, p.Num)
	v.remove(SysClass + "/" + name)
	v.remove(fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, p.Dev))
	v.removeAll(SysBlock + "/loop" + strconv.Itoa(parent) + "/" + name)
}

// removeDisk removes every partition of idx (nodes and sysfs) and idx's
// own sysfs entries. Preconditions: v.mu held.
func (v *View) removeDisk(idx int) {
	for _, p := range v.parts[idx] {
		name := PartName(idx, p.Num)
		if v.Unpublish != nil {
			v.enqueue(name, nil)
		}
		v.removeIfOurs(name, p.Dev)
		v.removePartSys(idx, p)
	}
	delete(v.parts, idx)
	name := "loop" + strconv.Itoa(idx)
	v.removeAll(SysBlock + "/" + name)
	v.remove(SysClass + "/" + name)
	v.remove(fmt.Sprintf("%s/%d:%d", SysDev, linux.LoopMajor, idx))
}

// sysAttr reads attribute attr of loop device idx from the real sysfs.
func sysAttr(idx int, attr string) string {
	b, err := os.ReadFile(filepath.Join(linux.SysRoot, "devices/virtual/block", "loop"+strconv.Itoa(idx), attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeFile creates path in the view with data, owned by host root.
func (v *View) writeFile(path, data string, mode uint32) error {
	fd, err := unix.Openat(v.fd(), path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return os.NewSyscallError("create "+path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return unix.Fchmodat(v.fd(), path, mode, 0)
}

// relink points the symlink path at target, replacing whatever path was
// in one step (a reader never finds it missing).
func (v *View) relink(target, path string) error {
	tmp := filepath.Dir(path) + "/.new-" + filepath.Base(path)
	v.remove(tmp)
	if err := unix.Symlinkat(target, v.fd(), tmp); err != nil {
		return os.NewSyscallError("symlink "+tmp, err)
	}
	if err := v.replace(tmp, path); err != nil {
		v.remove(tmp)
		return err
	}
	return nil
}

// replace moves tmp to path in one step whatever path is (absent, a
// symlink or a directory); what path was is removed.
func (v *View) replace(tmp, path string) error {
	err := unix.Renameat2(v.fd(), tmp, v.fd(), path, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Renameat(v.fd(), tmp, v.fd(), path)
		if err != nil {
			return os.NewSyscallError("rename "+path, err)
		}
		return nil
	}
	if err != nil {
		return os.NewSyscallError("renameat2 "+path, err)
	}
	v.removeAll(tmp) // now the old entry
	return nil
}

// removeAll removes path in the view and, if it is a directory the view
// made, everything below it. The view's sysfs directories hold only
// symlinks, small files and directories of them.
func (v *View) removeAll(path string) {
	if unix.Unlinkat(v.fd(), path, 0) == nil {
		return
	}
	fd, err := unix.Openat(v.fd(), path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	d := os.NewFile(uintptr(fd), path)
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	for _, n := range names {
		v.removeAll(path + "/" + n)
	}
	_ = unix.Unlinkat(v.fd(), path, unix.AT_REMOVEDIR)
}
