package loopctl

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device numbers of the loop driver.
const (
	LoopMajor        = 7   // block major of /dev/loopN
	MiscMajor        = 10  // char major of misc devices
	LoopCtlMinor     = 237 // minor of /dev/loop-control
	maxLoopMinor     = 1<<20 - 1
	loFlagsAutoclear = 4
)

// Sizes of the structures loop ioctls copy from and to user memory.
var (
	SizeofLoopInfo64 = int(unsafe.Sizeof(unix.LoopInfo64{})) // struct loop_info64: 232 on every ABI
	SizeofLoopConfig = int(unsafe.Sizeof(unix.LoopConfig{})) // struct loop_config: 304
	SizeofLoopInfo   = int(unsafe.Sizeof(unix.LoopInfo{}))   // struct loop_info (native ABI)
)

// ErrShort is returned by decoders given fewer bytes than the structure.
var ErrShort = errors.New("loopctl: short structure")

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

func init() {
	// The kernel ABI is little-endian on every architecture this builds for
	// (amd64, arm64); the decoders above rely on it.
	var x uint16 = 1
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("loopctl: big-endian hosts are not supported")
	}
}
