package loopctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/loopvisor/loopvisor/internal/linux"
	"github.com/loopvisor/loopvisor/loopctl/parttable"
	"github.com/loopvisor/loopvisor/loopctl/view"
	"github.com/loopvisor/loopvisor/notify"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Partitions of an instance's loop devices.
//
// The kernels of many machines (this project's CI among them) are built
// without partition parsers, so `losetup -P` yields no loopNpM at all. The
// instance provides them itself: it reads the GPT or MBR of a device
// attached with LO_FLAGS_PARTSCAN (parttable.Read) and attaches one more
// loop device of the instance per partition, backed by the whole device
// with the partition's offset and size, and shows it in the sandbox as
// /dev/loopNpM. It refreshes them on BLKRRPART and follows BLKPG (partx,
// sfdisk), and releases them with their device.
//
// Coherence rule: a partition device reads and writes through the whole
// device, so both see each other's writes; do not write the same blocks
// through the whole device and a partition at once (as on any kernel).

// partDev is one partition loop device of a whole device.
type partDev struct {
	num   int
	idx   int // the loop device that serves it
	start int64
	size  int64
}

// Block ioctls the instance serves on its own devices.
const (
	blkRRPart  = linux.BlkRRPart
	blkPG      = linux.BlkPG
	hdioGetGeo = linux.HdioGetGeo

	blkpgAddPartition    = 1
	blkpgDelPartition    = 2
	blkpgResizePartition = 3

	loFlagsReadOnly = linux.LoFlagsReadOnly
	loFlagsPartscan = linux.LoFlagsPartscan
)

// partName is the node name of partition num of loop device idx.
func partName(idx, num int) string { return view.PartName(idx, num) }

func sysInt(idx int, attr string) int64 {
	b, err := os.ReadFile(loopSysDir(idx) + "/" + attr)
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// DevName is the name of loop device idx in the sandbox's /dev: loopN, or
// loopNpM if it serves partition M of loopN.
func (in *Instance) DevName(idx int) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	for parent, pds := range in.parts {
		for _, pd := range pds {
			if pd.idx == idx {
				return partName(parent, pd.num)
			}
		}
	}
	return "loop" + strconv.Itoa(idx)
}

// partscan reports whether loop device idx was attached with
// LO_FLAGS_PARTSCAN.
func partscan(idx int) bool { return sysInt(idx, "loop/partscan") == 1 }

// ScanTimeout bounds how long a partition-table read may take. The device's
// backing file is the container's: it may sit on a FUSE mount the
// container serves and never answers, and a read of a loop device cannot
// be interrupted. The read then goes on in the background until the
// container dies (its FUSE server with it), holding no lock.
const ScanTimeout = 2 * time.Second

// Rescan reads the partition table of the instance's device idx and makes
// its partition devices match it. Preconditions: in.mu not held (the read
// happens without it; only the update takes it).
//
// It returns once the partition nodes are in the container's /dev (an
// agent's container: published by the view, waited for without any lock,
// at most PublishWait each), as the kernel's nodes exist when
// LOOP_CONFIGURE or BLKRRPART returns: losetup -P callers use them at once.
func (in *Instance) Rescan(idx int) error {
	parts, err := in.readTable(idx)
	if err != nil {
		return fmt.Errorf("%w: %w", errTableRead, err)
	}
	in.mu.Lock()
	err = in.setPartitions(idx, parts)
	var names []string
	for _, pd := range in.parts[idx] {
		names = append(names, partName(idx, pd.num))
	}
	in.mu.Unlock()
	for _, n := range names {
		in.View.WaitPublished(n, PublishWait)
	}
	return err
}

// errTableRead marks a Rescan that could not read the partition table
// (read error, stalled backing file): the kernel's scan answers EIO then.
var errTableRead = errors.New("partition table not read")

// readTable reads idx's partition table within ScanTimeout.
func (in *Instance) readTable(idx int) ([]parttable.Partition, error) {
	type res struct {
		parts []parttable.Partition
		err   error
	}
	c := make(chan res, 1)
	go func() {
		f, err := in.reg.OpenLoop(idx, unix.O_RDONLY)
		if err != nil {
			c <- res{err: err}
			return
		}
		defer func() { _ = f.Close() }()
		size, err := f.Seek(0, 2)
		if err != nil {
			c <- res{err: err}
			return
		}
		sector, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
		if err != nil {
			sector = 512
		}
		var r io.ReaderAt = f
		if sector > os.Getpagesize() {
			// Logical blocks larger than a page: a buffered read
			// fails with EIO when the device's page cache was set up
			// for a smaller block size (opened before
			// LOOP_SET_BLOCK_SIZE); read whole blocks directly.
			df, err := in.reg.OpenLoop(idx, unix.O_RDONLY|unix.O_DIRECT)
			if err != nil {
				c <- res{err: err}
				return
			}
			defer func() { _ = df.Close() }()
			r = directReader{f: df, block: int64(sector)}
		}
		parts, err := parttable.Read(r, size, int64(sector))
		if errors.Is(err, parttable.ErrNoTable) {
			err = nil
		}
		c <- res{parts, err}
	}()
	t := time.NewTimer(ScanTimeout)
	defer t.Stop()
	select {
	case r := <-c:
		return r.parts, r.err
	case <-t.C:
		in.log.WithField("loop", idx).Warn("partition table read did not return in time (backing file stalled); partitions left as they were")
		return nil, unix.EIO
	}
}

// directReader reads a block device opened O_DIRECT in whole aligned
// blocks into page-aligned memory.
type directReader struct {
	f     *os.File
	block int64
}

func (d directReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || len(p) == 0 {
		return 0, unix.EINVAL
	}
	start := off &^ (d.block - 1)
	end := (off + int64(len(p)) + d.block - 1) &^ (d.block - 1)
	buf, err := unix.Mmap(-1, 0, int(end-start), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Munmap(buf) }()
	got := 0
	for got < len(buf) {
		n, err := unix.Pread(int(d.f.Fd()), buf[got:], start+int64(got))
		if err != nil {
			return 0, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	avail := int64(got) - (off - start)
	if avail <= 0 {
		return 0, io.EOF
	}
	n := copy(p, buf[off-start:off-start+min(avail, int64(len(p)))])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// setPartitions makes idx's partition devices exactly parts.
// Preconditions: in.mu held.
func (in *Instance) setPartitions(idx int, parts []parttable.Partition) error {
	want := map[int]parttable.Partition{}
	for _, p := range parts {
		want[p.Number] = p
	}
	var keep []partDev
	for _, pd := range in.parts[idx] {
		if p, ok := want[pd.num]; ok && p.Start == pd.start && p.Size == pd.size && Bound(pd.idx) {
			keep = append(keep, pd)
			delete(want, pd.num)
			continue
		}
		if err := in.dropPartition(idx, pd); err != nil {
			keep = append(keep, pd)
			delete(want, pd.num)
			in.log.WithError(err).WithField("partition", partName(idx, pd.num)).Warn("partition in use; kept as it was")
		}
	}
	in.parts[idx] = keep
	nums := make([]int, 0, len(want))
	for n := range want {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	var firstErr error
	for _, n := range nums {
		if err := in.addPartition(idx, want[n]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	sort.Slice(in.parts[idx], func(i, j int) bool { return in.parts[idx][i].num < in.parts[idx][j].num })
	return firstErr
}

// addPartition attaches a loop device of the instance for partition p of
// idx. Preconditions: in.mu held.
func (in *Instance) addPartition(idx int, p parttable.Partition) error {
	// take skips devices still bound in the kernel, but one may be bound
	// between that check and LOOP_CONFIGURE (a deferred clear is not
	// done yet): EBUSY then means "try another device", a few times.
	var err error
	for try := 0; try < 3; try++ {
		if err = in.addPartitionOnce(idx, p); !errors.Is(err, unix.EBUSY) {
			return err
		}
		in.log.WithField("partition", partName(idx, p.Number)).Info("partition device still being cleared (EBUSY); taking another")
	}
	return err
}

func (in *Instance) addPartitionOnce(idx int, p parttable.Partition) error {
	child, err := in.take(false)
	if err != nil {
		in.log.WithError(err).WithField("partition", partName(idx, p.Number)).Warn("no loop device for a partition")
		return err
	}
	flags := uint32(0)
	mode := unix.O_RDWR
	if sysInt(idx, "ro") == 1 {
		flags |= loFlagsReadOnly
		mode = unix.O_RDONLY
	}
	parent, err := in.reg.OpenLoop(idx, mode)
	if err != nil {
		in.freeChild(child)
		return err
	}
	defer func() { _ = parent.Close() }()
	dev, err := in.reg.OpenLoop(child, unix.O_RDWR)
	if err != nil {
		in.freeChild(child)
		return err
	}
	in.unclaim(child)
	cfg := make([]byte, linux.SizeofLoopConfig)
	le := binary.LittleEndian
	le.PutUint32(cfg[0:], uint32(parent.Fd()))
	le.PutUint64(cfg[8+24:], uint64(p.Start)) // lo_offset
	le.PutUint64(cfg[8+32:], uint64(p.Size))  // lo_sizelimit
	le.PutUint32(cfg[8+52:], flags)           // lo_flags
	copy(cfg[8+56:8+56+63], fmt.Sprintf("%s (partition %d)", BackingFile(idx), p.Number))
	_, err = IoctlBuf(dev.Fd(), cmdConfigure, cfg)
	_ = dev.Close()
	if err != nil {
		in.freeChild(child)
		return err
	}
	pd := partDev{num: p.Number, idx: child, start: p.Start, size: p.Size}
	in.parts[idx] = append(in.parts[idx], pd)
	if err := in.View.AddPartition(idx, view.Part{Num: p.Number, Dev: child, Start: p.Start / 512}); err != nil {
		in.log.WithError(err).Warn("cannot add partition node or sysfs entries")
	}
	in.log.WithFields(logrus.Fields{"loop": idx, "partition": partName(idx, p.Number), "served_by": "loop" + strconv.Itoa(child),
		"offset": p.Start, "size": p.Size}).Info("partition attached")
	return nil
}

// freeChild gives back a device allocated for a partition that could not
// be attached: the instance keeps it, hidden. Preconditions: in.mu held.
func (in *Instance) freeChild(child int) {
	if err := in.View.Revoke(child); err != nil {
		in.regrant(child)
		return
	}
	in.hide(child)
}

// dropPartition detaches a partition device; the instance keeps it,
// hidden, until it ends (the kernel never removes it, so no kept node of it
// can reach another device). Preconditions: in.mu held.
func (in *Instance) dropPartition(idx int, pd partDev) error {
	// As Remove: the sandbox's nodes of the device go dead before the
	// device may leave the instance.
	if err := in.View.Revoke(pd.idx); err != nil {
		in.regrant(pd.idx)
		return err
	}
	if err := DetachDevice(in.reg, pd.idx); err != nil {
		in.regrant(pd.idx)
		return err
	}
	in.View.RemovePartition(idx, view.Part{Num: pd.num, Dev: pd.idx, Start: pd.start / 512})
	in.hide(pd.idx)
	in.log.WithFields(logrus.Fields{"loop": idx, "partition": partName(idx, pd.num)}).Info("partition detached")
	return nil
}

// DropPartitions releases every partition device of idx (before idx is
// detached). It returns once their nodes are gone from the container's
// /dev (waited for without any lock, at most PublishWait each), as the
// kernel's are when LOOP_CLR_FD returns. Preconditions: in.mu not held.
func (in *Instance) DropPartitions(idx int) error {
	in.mu.Lock()
	var names []string
	for _, pd := range in.parts[idx] {
		names = append(names, partName(idx, pd.num))
	}
	err := in.setPartitions(idx, nil)
	in.mu.Unlock()
	for _, n := range names {
		in.View.WaitPublished(n, PublishWait)
	}
	return err
}

// sizeofBlkpgPartition is sizeof(struct blkpg_partition)
// (include/uapi/linux/blkpg.h): start, length, pno, devname, volname and
// the padding to 8 bytes; the kernel copies all of it.
const sizeofBlkpgPartition = 8 + 8 + 4 + 64 + 64 + 4

// blkpg serves BLKPG on device idx: arg points at struct blkpg_ioctl_arg
// (compat: struct compat_blkpg_ioctl_arg, its data pointer 32 bits at
// offset 12). It answers as block/ioctl.c blkpg_do_ioctl does, in its
// order: datalen and flags are ignored; the partition is copied whole
// (EFAULT); a partition device has no partitions and pno must be
// positive (EINVAL); a delete looks at nothing else; start
// and length must be non-negative, aligned to the logical block size
// and within the disk (EINVAL), before the partition is looked up.
func (in *Instance) blkpg(c Caller, idx int, arg uint64, compat bool) notify.Reply {
	le := binary.LittleEndian
	var op int32
	var data uint64
	if compat {
		hdr := make([]byte, 16) // int op, int flags, int datalen, compat_caddr_t data
		if err := c.Read(arg, hdr); err != nil {
			return fail(err)
		}
		op, data = int32(le.Uint32(hdr[0:])), uint64(le.Uint32(hdr[12:]))
	} else {
		hdr := make([]byte, 24) // int op, int flags, int datalen, (pad), void *data
		if err := c.Read(arg, hdr); err != nil {
			return fail(err)
		}
		op, data = int32(le.Uint32(hdr[0:])), le.Uint64(hdr[16:])
	}
	p := make([]byte, sizeofBlkpgPartition)
	if err := c.Read(data, p); err != nil {
		return fail(err)
	}
	start, length := int64(le.Uint64(p[0:])), int64(le.Uint64(p[8:]))
	pno := int(int32(le.Uint32(p[16:])))
	if _, _, isPart := in.partitionOf(idx); isPart || pno <= 0 {
		return notify.Errno(unix.EINVAL)
	}
	if op != blkpgDelPartition {
		if start < 0 || length <= 0 || start+length < 0 {
			return notify.Errno(unix.EINVAL)
		}
		lbs := sysInt(idx, "queue/logical_block_size")
		if lbs <= 0 {
			lbs = 512
		}
		if (start|length)%lbs != 0 {
			return notify.Errno(unix.EINVAL)
		}
		// In 512-byte sectors, as the kernel compares them (start and
		// length are multiples of lbs, itself a multiple of 512).
		capacity := sysInt(idx, "size")
		if start>>9 >= capacity || (start>>9)+(length>>9) > capacity {
			return notify.Errno(unix.EINVAL)
		}
		if op != blkpgAddPartition && op != blkpgResizePartition {
			return notify.Errno(unix.EINVAL)
		}
	}
	if !c.Valid() {
		return fail(ErrStale)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var cur *partDev
	for i := range in.parts[idx] {
		if in.parts[idx][i].num == pno {
			cur = &in.parts[idx][i]
		}
	}
	// partition_overlaps: any other partition sharing a byte is EBUSY.
	overlaps := func(skip int) bool {
		for _, pd := range in.parts[idx] {
			if pd.num != skip && start < pd.start+pd.size && start+length > pd.start {
				return true
			}
		}
		return false
	}
	switch op {
	case blkpgAddPartition:
		// bdev_add_partition, then add_partition's own checks.
		if overlaps(-1) {
			return notify.Errno(unix.EBUSY)
		}
		if pno >= parttable.MaxPartitions { // DISK_MAX_PARTS
			return notify.Errno(unix.EINVAL)
		}
		if cur != nil {
			return notify.Errno(unix.EBUSY)
		}
		if err := in.addPartition(idx, parttable.Partition{Number: pno, Start: start, Size: length}); err != nil {
			return fail(err)
		}
	case blkpgDelPartition:
		if cur == nil {
			return notify.Errno(unix.ENXIO)
		}
		if err := in.dropPartition(idx, *cur); err != nil {
			return notify.Errno(unix.EBUSY)
		}
		in.removePartEntry(idx, pno)
	case blkpgResizePartition:
		if cur == nil {
			return notify.Errno(unix.ENXIO)
		}
		if start != cur.start {
			return notify.Errno(unix.EINVAL)
		}
		if overlaps(pno) {
			return notify.Errno(unix.EBUSY)
		}
		old := *cur
		if err := in.dropPartition(idx, old); err != nil {
			return notify.Errno(unix.EBUSY)
		}
		in.removePartEntry(idx, pno)
		if err := in.addPartition(idx, parttable.Partition{Number: pno, Start: start, Size: length}); err != nil {
			return fail(err)
		}
	}
	return notify.Reply{}
}

func (in *Instance) removePartEntry(idx, pno int) {
	var keep []partDev
	for _, pd := range in.parts[idx] {
		if pd.num != pno {
			keep = append(keep, pd)
		}
	}
	in.parts[idx] = keep
}

// getgeo serves HDIO_GETGEO on device idx. A loop device has no geometry
// (the driver has no getgeo: ENOTTY; a NULL argument EINVAL, checked
// first), and neither have the partitions a kernel makes of one. But
// tools that cannot read a partition's start sector in sysfs fall back to
// this ioctl (grub-install, when libudev refuses sysfs entries that are
// not on sysfs, as the view's are), so a partition the instance serves
// answers as a partition of a disk driver with made-up geometry does
// (virtio_blk, sd): 64 heads, 32 sectors, the disk's capacity/2048
// cylinders (truncated to 16 bits), and its first sector as start.
func (in *Instance) getgeo(c Caller, idx int, arg uint64) notify.Reply {
	if arg == 0 {
		return notify.Errno(unix.EINVAL)
	}
	parent, start, ok := in.partitionOf(idx)
	if !ok {
		return notify.Errno(unix.ENOTTY)
	}
	geo := make([]byte, linux.SizeofHdGeometry)
	geo[0], geo[1] = 64, 32
	binary.LittleEndian.PutUint16(geo[2:], uint16(max(sysInt(parent, "size"), 0)>>11))
	binary.LittleEndian.PutUint64(geo[8:], uint64(start/512))
	if err := c.Write(arg, geo); err != nil {
		return fail(err)
	}
	return notify.Reply{}
}

// partitionOf returns the device and first byte of the partition that
// device idx serves, if it serves one.
func (in *Instance) partitionOf(idx int) (parent int, start int64, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for p, pds := range in.parts {
		for _, pd := range pds {
			if pd.idx == idx {
				return p, pd.start, true
			}
		}
	}
	return -1, 0, false
}

// rrpart serves BLKRRPART on device idx.
func (in *Instance) rrpart(c Caller, idx int) notify.Reply {
	ok, err := c.Privileged()
	if err != nil {
		return fail(err)
	}
	if !ok {
		return notify.Errno(unix.EACCES)
	}
	if !partscan(idx) {
		return notify.Errno(unix.EINVAL) // the kernel: no partition scanning on this disk
	}
	if !c.Valid() {
		return fail(ErrStale)
	}
	if err := in.Rescan(idx); err != nil {
		if errors.Is(err, errTableRead) {
			// The kernel's scan: a read error is EIO (blk_add_partitions).
			in.log.WithError(err).WithField("loop", idx).Warn("BLKRRPART: partition table not read: EIO")
			return notify.Errno(unix.EIO)
		}
		in.log.WithError(err).WithField("loop", idx).Warn("BLKRRPART: partitions in use or no devices left")
		return notify.Errno(unix.EBUSY)
	}
	return notify.Reply{}
}
