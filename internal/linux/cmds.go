package linux

// Loop ioctl command numbers (include/uapi/linux/loop.h).
const (
	LoopSetFD        = 0x4C00
	LoopClrFD        = 0x4C01
	LoopSetStatus    = 0x4C02
	LoopGetStatus    = 0x4C03
	LoopSetStatus64  = 0x4C04
	LoopGetStatus64  = 0x4C05
	LoopChangeFD     = 0x4C06
	LoopSetCapacity  = 0x4C07
	LoopSetDirectIO  = 0x4C08
	LoopSetBlockSize = 0x4C09
	LoopConfigure    = 0x4C0A
	LoopCtlAdd       = 0x4C80
	LoopCtlRemove    = 0x4C81
	LoopCtlGetFree   = 0x4C82
)

// Block ioctls served for partitions (include/uapi/linux/fs.h,
// include/uapi/linux/hdreg.h).
const (
	BlkRRPart  = 0x125F
	BlkPG      = 0x1269
	HdioGetGeo = 0x0301
)

// SizeofHdGeometry is sizeof(struct hd_geometry) in the 64-bit ABI: u8
// heads, u8 sectors, u16 cylinders, unsigned long start (at offset 8).
const SizeofHdGeometry = 16

// Loop device flags (enum in include/uapi/linux/loop.h).
const (
	LoFlagsReadOnly  = 1
	LoFlagsAutoclear = 4
	LoFlagsPartscan  = 8
	LoFlagsDirectIO  = 16
)

// Audit arches of the ABIs loopvisor traps (include/uapi/linux/audit.h).
const (
	AuditArchX86_64  = 0xc000003e
	AuditArchI386    = 0x40000003
	AuditArchAArch64 = 0xc00000b7
)
