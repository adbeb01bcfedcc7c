package linux

import (
	"encoding/binary"
	"errors"
)

// Device numbers of the loop driver.
const (
	LoopMajor    = 7         // block major of /dev/loopN
	MiscMajor    = 10        // char major of misc devices
	LoopCtlMinor = 237       // minor of /dev/loop-control
	MaxLoopMinor = 1<<20 - 1 // the block layer's 20-bit minors
	FuseMajor    = 10        // char major of /dev/fuse
	FuseMinor    = 229       // char minor of /dev/fuse
	// A container's /dev/loop-control is a node of /dev/null (1:3): an fd
	// of it passed out of the container is worth nothing, and only the
	// supervisor, which knows the node's inode, serves loop-control
	// commands on it.
	NullMajor = 1
	NullMinor = 3
)

// ErrShort is returned by decoders given fewer bytes than the structure.
var ErrShort = errors.New("linux: short structure")

// LoopConfig is the part of struct loop_config loopvisor needs to look at.
// The rest is passed to the kernel untouched.
type LoopConfig struct {
	FD        uint32
	BlockSize uint32
	Info      LoopInfo64
}

// LoopInfo64 is the decoded struct loop_info64.
type LoopInfo64 struct {
	Device, Inode, Rdevice, Offset, SizeLimit  uint64
	Number, EncryptType, EncryptKeySize, Flags uint32
	FileName                                   [64]byte
}

// DecodeLoopInfo64 decodes a struct loop_info64 copied from a container.
func DecodeLoopInfo64(b []byte) (LoopInfo64, error) {
	var i LoopInfo64
	if len(b) < SizeofLoopInfo64 {
		return i, ErrShort
	}
	le := binary.LittleEndian
	i.Device = le.Uint64(b[0:])
	i.Inode = le.Uint64(b[8:])
	i.Rdevice = le.Uint64(b[16:])
	i.Offset = le.Uint64(b[24:])
	i.SizeLimit = le.Uint64(b[32:])
	i.Number = le.Uint32(b[40:])
	i.EncryptType = le.Uint32(b[44:])
	i.EncryptKeySize = le.Uint32(b[48:])
	i.Flags = le.Uint32(b[52:])
	copy(i.FileName[:], b[56:120])
	return i, nil
}

// DecodeLoopConfig decodes a struct loop_config copied from a container.
func DecodeLoopConfig(b []byte) (LoopConfig, error) {
	var c LoopConfig
	if len(b) < SizeofLoopConfig {
		return c, ErrShort
	}
	c.FD = binary.LittleEndian.Uint32(b[0:])
	c.BlockSize = binary.LittleEndian.Uint32(b[4:])
	info, err := DecodeLoopInfo64(b[8:])
	c.Info = info
	return c, err
}

// SetConfigFD rewrites the fd field of a raw struct loop_config in place.
func SetConfigFD(b []byte, fd uint32) error {
	if len(b) < SizeofLoopConfig {
		return ErrShort
	}
	binary.LittleEndian.PutUint32(b[0:], fd)
	return nil
}

// CString returns the NUL-terminated prefix of b.
func CString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
