package mountproxy

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ExtSuper is what the kernel's ext4 driver checks of a superblock before
// it mounts, and a FUSE helper may not.
type ExtSuper struct {
	Magic      uint16
	LogBlock   uint32
	Blocks     uint64
	BlockBytes uint64
}

const (
	extMagic       = 0xEF53
	extIncompat64  = 0x80
	extSuperOffset = 1024
	extSuperSize   = 1024
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
	if le.Uint32(b[0x60:])&extIncompat64 != 0 {
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

// checkGeometry applies the kernel's "block count exceeds size of device"
// check, which fuse2fs does not make, so a truncated image fails with
// EINVAL as it does on the host.
func checkGeometry(fstype, node string) error {
	switch fstype {
	case "ext2", "ext3", "ext4":
	default:
		return nil
	}
	// The backing file is the container's and may stall for ever (a FUSE
	// mount it serves); a loop read cannot be interrupted, so the read is
	// abandoned after CheckTimeout and finishes when the container dies.
	c := make(chan error, 1)
	go func() { c <- readGeometry(node) }()
	t := time.NewTimer(CheckTimeout)
	defer t.Stop()
	select {
	case err := <-c:
		return err
	case <-t.C:
		return fmt.Errorf("%w: superblock read did not return within %v (the backing file stalls)", unix.EIO, CheckTimeout)
	}
}

// CheckTimeout bounds the superblock read of checkGeometry.
const CheckTimeout = 5 * time.Second

func readGeometry(node string) error {
	f, err := os.Open(node)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, extSuperSize)
	if _, err := f.ReadAt(buf, extSuperOffset); err != nil {
		return fmt.Errorf("%w: cannot read superblock: %w", unix.EINVAL, err)
	}
	sb, err := ParseExtSuper(buf)
	if err != nil {
		return fmt.Errorf("%w: %w", unix.EINVAL, err)
	}
	end, err := f.Seek(0, 2) // a block device's size
	if err != nil {
		return err
	}
	size := uint64(end)
	if sb.Blocks > size/sb.BlockBytes {
		return fmt.Errorf("%w: bad geometry: block count %d exceeds size of device (%d blocks)", unix.EINVAL, sb.Blocks, size/sb.BlockBytes)
	}
	return nil
}
