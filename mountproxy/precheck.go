package mountproxy

import (
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A FUSE helper decides by itself what it mounts: fuse2fs mounts any
// ext2/3/4 image under any of the three names, squashfuse and fusefat
// look at the image in their own way. The kernel refuses an image that
// does not fit the type asked for, with EINVAL; so must loopvisor, before
// any helper runs. checkImage holds the kernel's checks (fs/ext4/super.c
// ext4_check_feature_compatibility and ext4_feature_set_ok,
// fs/squashfs/super.c, fs/fat/inode.c), measured against this project's
// 6.18 kernel (tests/mount_semantics_test.go).

// ExtSuper is what the kernel's ext4 driver checks of a superblock before
// it mounts, and a FUSE helper may not.
type ExtSuper struct {
	Magic      uint16
	LogBlock   uint32
	Blocks     uint64
	BlockBytes uint64
	Compat     uint32
	Incompat   uint32
	ROCompat   uint32
}

const (
	extMagic       = 0xEF53
	extSuperOffset = 1024
	extSuperSize   = 1024

	extCompatJournal = 0x4

	extIncompatFiletype   = 0x2
	extIncompatRecover    = 0x4
	extIncompatMetaBG     = 0x10
	extIncompatExtents    = 0x40
	extIncompat64         = 0x80
	extIncompatMMP        = 0x100
	extIncompatFlexBG     = 0x200
	extIncompatEAInode    = 0x400
	extIncompatCsumSeed   = 0x2000
	extIncompatLargedir   = 0x4000
	extIncompatInlineData = 0x8000
	extIncompatEncrypt    = 0x10000
	extIncompatCasefold   = 0x20000

	extROSparseSuper  = 0x1
	extROLargeFile    = 0x2
	extROBtreeDir     = 0x4
	extROHugeFile     = 0x8
	extROGdtCsum      = 0x10
	extRODirNlink     = 0x20
	extROExtraIsize   = 0x40
	extROQuota        = 0x100
	extROBigalloc     = 0x200
	extROMetadataCsum = 0x400
	extROReadonly     = 0x1000
	extROProject      = 0x2000
	extROVerity       = 0x8000
	extROOrphan       = 0x10000

	// The feature sets the kernel knows per type (fs/ext4/ext4.h
	// EXT2_/EXT3_/EXT4_FEATURE_*_SUPP; ext2's own driver has ext2's).
	ext2IncompatSupp = extIncompatFiletype | extIncompatMetaBG
	ext2ROSupp       = extROSparseSuper | extROLargeFile | extROBtreeDir
	ext3IncompatSupp = ext2IncompatSupp | extIncompatRecover
	ext3ROSupp       = ext2ROSupp
	ext4IncompatSupp = extIncompatFiletype | extIncompatRecover | extIncompatMetaBG | extIncompatExtents |
		extIncompat64 | extIncompatFlexBG | extIncompatEAInode | extIncompatMMP | extIncompatInlineData |
		extIncompatEncrypt | extIncompatCasefold | extIncompatCsumSeed | extIncompatLargedir
	ext4ROSupp = extROSparseSuper | extROLargeFile | extROGdtCsum | extRODirNlink | extROExtraIsize |
		extROBtreeDir | extROHugeFile | extROBigalloc | extROMetadataCsum | extROQuota | extROProject |
		extROVerity | extROOrphan
)

// ParseExtSuper decodes the fields of an ext2/3/4 superblock (the 1024
// bytes at offset 1024 of the device). It is a decoder of untrusted image
// data: any input must be handled.
func ParseExtSuper(b []byte) (ExtSuper, error) {
	var s ExtSuper
	if len(b) < extSuperSize {
		return s, fmt.Errorf("short superblock")
	}
	le := binary.LittleEndian
	s.Magic = le.Uint16(b[0x38:])
	s.LogBlock = le.Uint32(b[0x18:])
	s.Blocks = uint64(le.Uint32(b[0x04:]))
	s.Compat = le.Uint32(b[0x5C:])
	s.Incompat = le.Uint32(b[0x60:])
	s.ROCompat = le.Uint32(b[0x64:])
	if s.Incompat&extIncompat64 != 0 {
		s.Blocks |= uint64(le.Uint32(b[0x150:])) << 32
	}
	if s.Magic != extMagic {
		return s, fmt.Errorf("no ext2/3/4 superblock (magic %#x)", s.Magic)
	}
	if s.LogBlock > 6 { // block sizes 1 KiB .. 64 KiB
		return s, fmt.Errorf("invalid block size 2^(10+%d)", s.LogBlock)
	}
	s.BlockBytes = 1024 << s.LogBlock
	return s, nil
}

// ExtKernel is what of the host kernel's configuration decides which ext4
// features it mounts.
type ExtKernel struct {
	Quota    bool // CONFIG_QUOTA and CONFIG_QFMT_V2: quota and project read-write
	Casefold bool // CONFIG_UNICODE
}

// CheckExtFeatures applies the kernel's feature checks for a mount of an
// ext2/3/4 superblock as fstype. It returns whether the kernel would make
// the mount read-only by itself (the read-only feature), or an error
// wrapping EINVAL.
func CheckExtFeatures(s ExtSuper, fstype string, readOnly bool, k ExtKernel) (forceRO bool, err error) {
	unknown := func(kind string, bits uint32) error {
		return fmt.Errorf("%w: cannot mount as %s: %s features %#x", unix.EINVAL, fstype, kind, bits)
	}
	switch fstype {
	case "ext2":
		if u := s.Incompat &^ ext2IncompatSupp; u != 0 {
			return false, unknown("incompatible", u)
		}
		if u := s.ROCompat &^ ext2ROSupp; u != 0 && !readOnly {
			return false, unknown("read-only compatible", u)
		}
	case "ext3":
		if u := s.Incompat &^ ext3IncompatSupp; u != 0 {
			return false, unknown("incompatible", u)
		}
		if s.Compat&extCompatJournal == 0 {
			return false, fmt.Errorf("%w: cannot mount as ext3: no journal", unix.EINVAL)
		}
		if u := s.ROCompat &^ ext3ROSupp; u != 0 && !readOnly {
			return false, unknown("read-only compatible", u)
		}
	}
	// ext4_feature_set_ok, for every type the ext4 driver serves.
	if u := s.Incompat &^ ext4IncompatSupp; u != 0 {
		return false, unknown("incompatible", u)
	}
	if s.Incompat&extIncompatCasefold != 0 && !k.Casefold {
		return false, fmt.Errorf("%w: casefold needs a kernel with CONFIG_UNICODE", unix.EINVAL)
	}
	if readOnly {
		return false, nil
	}
	if s.ROCompat&extROReadonly != 0 {
		return true, nil // the kernel mounts it read-only, silently
	}
	if u := s.ROCompat &^ ext4ROSupp; u != 0 {
		return false, unknown("read-only compatible", u)
	}
	if s.ROCompat&extROBigalloc != 0 && s.Incompat&extIncompatExtents == 0 {
		return false, fmt.Errorf("%w: bigalloc without extents", unix.EINVAL)
	}
	if s.ROCompat&(extROQuota|extROProject) != 0 && !k.Quota {
		return false, fmt.Errorf("%w: quota or project feature read-write needs CONFIG_QUOTA and CONFIG_QFMT_V2", unix.EINVAL)
	}
	return false, nil
}

var (
	extKernelOnce sync.Once
	extKernel     ExtKernel
)

// hostExtKernel reads the host kernel's configuration once:
// /proc/config.gz where the kernel has it (else a distro kernel is
// assumed: quota built), /sys/fs/ext4/features for casefold.
func hostExtKernel() ExtKernel {
	extKernelOnce.Do(func() {
		extKernel = ExtKernel{Quota: true}
		if cfg, err := readKernelConfig("/proc/config.gz"); err == nil {
			extKernel.Quota = cfg["CONFIG_QUOTA"] && cfg["CONFIG_QFMT_V2"]
		}
		_, err := os.Stat("/sys/fs/ext4/features/casefold")
		extKernel.Casefold = err == nil
	})
	return extKernel
}

// readKernelConfig returns the options set to y or m in a gzipped kernel
// config.
func readKernelConfig(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(z, 16<<20))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && (v == "y" || v == "m") {
			out[k] = true
		}
	}
	return out, nil
}

const (
	squashfsMagic = 0x73717368
	squashfsMajor = 4
)

// CheckSquashfsSuper applies the kernel's squashfs superblock checks
// (squashfs_fill_super): magic, major version 4, a block size of 4 KiB to
// 1 MiB that matches its log.
func CheckSquashfsSuper(b []byte) error {
	if len(b) < 96 {
		return fmt.Errorf("%w: short squashfs superblock", unix.EIO)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != squashfsMagic {
		return fmt.Errorf("%w: no squashfs superblock (magic %#x)", unix.EINVAL, m)
	}
	if major := le.Uint16(b[28:]); major != squashfsMajor {
		return fmt.Errorf("%w: squashfs version %d, the kernel reads 4", unix.EINVAL, major)
	}
	bs, blog := le.Uint32(b[12:]), le.Uint16(b[22:])
	if bs < 4096 || bs > 1<<20 || blog > 20 || bs != 1<<blog {
		return fmt.Errorf("%w: invalid squashfs block size %d (log %d)", unix.EINVAL, bs, blog)
	}
	return nil
}

// CheckFatBoot applies the kernel's FAT boot sector checks
// (fat_read_bpb): media byte, sector size, cluster size, reserved sectors
// and FAT count.
func CheckFatBoot(b []byte) error {
	if len(b) < 512 {
		return fmt.Errorf("%w: short boot sector", unix.EIO)
	}
	le := binary.LittleEndian
	sector, perClus, reserved, fats, media := le.Uint16(b[0x0B:]), b[0x0D], le.Uint16(b[0x0E:]), b[0x10], b[0x15]
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	switch {
	case media != 0xf0 && media < 0xf8:
		return fmt.Errorf("%w: no FAT file system (media %#x)", unix.EINVAL, media)
	case !pow2(uint32(sector)) || sector < 512 || sector > 4096:
		return fmt.Errorf("%w: no FAT file system (sector size %d)", unix.EINVAL, sector)
	case !pow2(uint32(perClus)):
		return fmt.Errorf("%w: no FAT file system (sectors per cluster %d)", unix.EINVAL, perClus)
	case reserved == 0:
		return fmt.Errorf("%w: no FAT file system (no reserved sectors)", unix.EINVAL)
	case fats == 0:
		return fmt.Errorf("%w: no FAT file system (no FATs)", unix.EINVAL)
	}
	return nil
}

// imageCheck is what checkImage found.
type imageCheck struct {
	forceRO   bool // the kernel would mount read-only by itself
	blockSize int  // the file system's block size, where the kernel's mount sets the device's to it (ext2/3/4); 0 otherwise
}

// checkImage applies the kernel's checks of fstype's superblock on the
// device at node: what a FUSE helper does not check, or checks
// otherwise. Errors wrap the kernel's errno: EINVAL for an image that is
// not of the type, EIO when the superblock cannot be read.
func checkImage(fstype, node string, readOnly bool) (imageCheck, error) {
	switch fstype {
	case "ext2", "ext3", "ext4", "squashfs", "vfat", "msdos":
	default:
		return imageCheck{}, nil
	}
	type result struct {
		ic  imageCheck
		err error
	}
	r, ok := boundedRead(func() result {
		ic, err := readImage(fstype, node, readOnly)
		return result{ic, err}
	})
	if !ok {
		return imageCheck{}, errStalled
	}
	return r.ic, r.err
}

// boundedRead runs read, which reads the container's device, and returns
// its result, or false after CheckTimeout. The backing file is the
// container's and may stall for ever (a FUSE mount it serves); a loop read
// cannot be interrupted, so the read is abandoned and finishes when the
// container dies.
func boundedRead[T any](read func() T) (T, bool) {
	c := make(chan T, 1)
	go func() { c <- read() }()
	t := time.NewTimer(CheckTimeout)
	defer t.Stop()
	select {
	case v := <-c:
		return v, true
	case <-t.C:
		var zero T
		return zero, false
	}
}

// errStalled is a superblock read that boundedRead abandoned.
var errStalled = fmt.Errorf("%w: superblock read did not return within %v (the backing file stalls)", unix.EIO, CheckTimeout)

// checkJournal refuses, for a kernel mount, an ext3/ext4 image whose
// journal is not inside it: the driver would open the device the
// superblock names (s_journal_dev, a device number the image chooses) as
// host root during the create. nsexec.CreateSuperblock confines that
// open with a cgroup v2 device program or a v1 devices cgroup; this check
// is the layer in front of it, and the only one on a host with neither,
// up to the image changing between the check and the create (the sandbox
// owns the backing file). The host's kernel
// answers EINVAL for an external journal it cannot find; loopvisor does
// for every external journal.
func checkJournal(fstype, node string) error {
	switch fstype {
	case "ext3", "ext4":
	default:
		return nil // ext2 never loads a journal; other types name no device
	}
	err, ok := boundedRead(func() error {
		f, err := os.Open(node)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		buf := make([]byte, extSuperSize)
		if err := readAtFull(f, buf, extSuperOffset); err != nil {
			return nil // the kernel's own read answers
		}
		return CheckExtJournal(buf)
	})
	if !ok {
		return errStalled
	}
	return err
}

// CheckExtJournal returns an error wrapping EINVAL if the ext2/3/4
// superblock b has a journal that is not an inode of its own (an external
// journal device, or a journal inode of 0). Anything that is not an ext
// superblock is left to the kernel.
func CheckExtJournal(b []byte) error {
	s, err := ParseExtSuper(b)
	if err != nil || s.Compat&extCompatJournal == 0 {
		return nil
	}
	le := binary.LittleEndian
	inum, dev := le.Uint32(b[0xE0:]), le.Uint32(b[0xE4:])
	if inum == 0 {
		return fmt.Errorf("%w: external journal (device %d:%d) is not served: journals must be inside the image", unix.EINVAL, unix.Major(uint64(dev)), unix.Minor(uint64(dev)))
	}
	return nil
}

// CheckTimeout bounds the superblock read of checkImage.
const CheckTimeout = 5 * time.Second

// readAtFull reads len(buf) bytes at off; a device too short for them is
// the kernel's EIO (sb_bread past the end).
func readAtFull(f *os.File, buf []byte, off int64) error {
	if _, err := f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: cannot read the superblock: the device ends before it", unix.EIO)
		}
		return fmt.Errorf("%w: cannot read the superblock: %w", unix.EIO, err)
	}
	return nil
}

func readImage(fstype, node string, readOnly bool) (imageCheck, error) {
	f, err := os.Open(node)
	if err != nil {
		return imageCheck{}, err
	}
	defer func() { _ = f.Close() }()
	// sb_min_blocksize: every one of these drivers refuses a device whose
	// logical blocks are larger than a page (LOOP_SET_BLOCK_SIZE allows
	// up to 64 KiB), before it reads anything.
	lbs, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return imageCheck{}, err
	}
	if lbs > os.Getpagesize() {
		return imageCheck{}, fmt.Errorf("%w: logical block size %d is larger than a page", unix.EINVAL, lbs)
	}
	switch fstype {
	case "squashfs":
		buf := make([]byte, 96)
		if err := readAtFull(f, buf, 0); err != nil {
			return imageCheck{}, err
		}
		return imageCheck{}, CheckSquashfsSuper(buf)
	case "vfat", "msdos":
		buf := make([]byte, 512)
		if err := readAtFull(f, buf, 0); err != nil {
			return imageCheck{}, err
		}
		return imageCheck{}, CheckFatBoot(buf)
	}
	buf := make([]byte, extSuperSize)
	if err := readAtFull(f, buf, extSuperOffset); err != nil {
		return imageCheck{}, err
	}
	sb, err := ParseExtSuper(buf)
	if err != nil {
		return imageCheck{}, fmt.Errorf("%w: %w", unix.EINVAL, err)
	}
	end, err := f.Seek(0, io.SeekEnd) // a block device's size
	if err != nil {
		return imageCheck{}, err
	}
	size := uint64(end)
	if sb.BlockBytes < uint64(lbs) {
		return imageCheck{}, fmt.Errorf("%w: bad block size %d (the device's logical blocks are %d bytes)", unix.EINVAL, sb.BlockBytes, lbs)
	}
	forceRO, err := CheckExtFeatures(sb, fstype, readOnly, hostExtKernel())
	if err != nil {
		return imageCheck{}, err
	}
	if sb.Blocks > size/sb.BlockBytes {
		return imageCheck{}, fmt.Errorf("%w: bad geometry: block count %d exceeds size of device (%d blocks)", unix.EINVAL, sb.Blocks, size/sb.BlockBytes)
	}
	return imageCheck{forceRO: forceRO, blockSize: int(sb.BlockBytes)}, nil
}

// deviceHeld reports whether the block device at node is held
// exclusively, as a kernel superblock holds its device: the kernel then
// refuses a mount of it as another type (EBUSY). An empty device holds no
// file system (loopctl's own claim on unbound devices is exclusive too).
func deviceHeld(node string) bool {
	f, err := os.Open(node)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	if size, err := f.Seek(0, io.SeekEnd); err != nil || size == 0 {
		return false
	}
	fd, err := unix.Open(node, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Is(err, unix.EBUSY)
	}
	_ = unix.Close(fd)
	return false
}

// deviceReadOnly reports whether the block device at node is read-only
// (BLKROGET): the kernel opens it for writing for a mount without
// MS_RDONLY, and that fails with EACCES.
func deviceReadOnly(node string) (bool, error) {
	f, err := os.Open(node)
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	v, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET)
	if err != nil {
		return false, err
	}
	return v != 0, nil
}

// recognize names the served type whose superblock the device at node
// holds ("ext", "squashfs", "vfat"), or "". The read is bounded as
// checkImage's.
func recognize(node string) string {
	kind, _ := boundedRead(func() string {
		f, err := os.Open(node)
		if err != nil {
			return ""
		}
		defer func() { _ = f.Close() }()
		buf := make([]byte, extSuperOffset+extSuperSize)
		if _, err := f.ReadAt(buf, 0); err != nil {
			return ""
		}
		switch {
		case func() bool { _, err := ParseExtSuper(buf[extSuperOffset:]); return err == nil }():
			return "ext"
		case CheckSquashfsSuper(buf) == nil:
			return "squashfs"
		case CheckFatBoot(buf) == nil:
			return "vfat"
		}
		return ""
	})
	return kind
}
