package linux

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sizes of the structures loop ioctls copy from and to user memory.
var (
	SizeofLoopInfo64 = int(unsafe.Sizeof(unix.LoopInfo64{})) // struct loop_info64: 232 on every ABI
	SizeofLoopConfig = int(unsafe.Sizeof(unix.LoopConfig{})) // struct loop_config: 304
	SizeofLoopInfo   = int(unsafe.Sizeof(unix.LoopInfo{}))   // struct loop_info (native ABI)
)

func init() {
	// The kernel ABI is little-endian on every architecture this builds for
	// (amd64, arm64); the decoders above rely on it.
	var x uint16 = 1
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("linux: big-endian hosts are not supported")
	}
}
