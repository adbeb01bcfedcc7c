package notify

import (
	"runtime"
	"sync"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// Syscall names a system call the filter traps, whatever its number in
// the caller's ABI.
type Syscall int

// The trapped system calls.
const (
	SysUnknown Syscall = iota
	SysIoctl
	SysMount
	SysUmount2
	SysUmount // i386 only: umount(target) is umount2(target, 0)
	SysFsopen
	SysFsconfig
	SysFsmount
	SysFspick
)

var sysNames = map[Syscall]string{
	SysIoctl: "ioctl", SysMount: "mount", SysUmount2: "umount2", SysUmount: "umount", SysFsopen: "fsopen",
	SysFsconfig: "fsconfig", SysFsmount: "fsmount", SysFspick: "fspick",
}

func (s Syscall) String() string {
	if n, ok := sysNames[s]; ok {
		return n
	}
	return "unknown"
}

// Audit arches of the ABIs the filter traps, from internal/linux.
const (
	AuditArchX86_64  = linux.AuditArchX86_64
	AuditArchI386    = linux.AuditArchI386
	AuditArchAArch64 = linux.AuditArchAArch64
)

// Call is a trapped system call, decoded: which call it is in any ABI, and
// its arguments as the kernel will read them (32-bit ABIs: the low 32 bits
// only, so pointers and fds are never taken from garbage upper halves).
type Call struct {
	*Request
	Syscall Syscall
	// Compat is true for the 32-bit ABIs (i386, x32): their structures
	// differ from the native ones where they hold pointers or longs.
	Compat bool
	// NoABI is set, with Decode's ok false, for a call of an ABI the
	// running kernel lacks (x32 without CONFIG_X86_X32_ABI): the host's
	// answer is ENOSYS, and nothing runs.
	NoABI bool
	Args  [6]uint64
}

type sysKey struct {
	arch uint32
	nr   int32
}

type sysInfo struct {
	sys    Syscall
	compat bool
	x32    bool
}

// syscalls maps every trapped (arch, nr) pair.
var syscalls = func() map[sysKey]sysInfo {
	m := map[sysKey]sysInfo{}
	add := func(arch seccomp.ScmpArch, audit uint32, compat, x32 bool) {
		for sys, name := range sysNames {
			nr, err := seccomp.GetSyscallFromNameByArch(name, arch)
			if err == nil && nr >= 0 {
				m[sysKey{audit, int32(nr)}] = sysInfo{sys, compat, x32}
			}
		}
	}
	if runtime.GOARCH == "amd64" {
		add(seccomp.ArchAMD64, AuditArchX86_64, false, false)
		add(seccomp.ArchX32, AuditArchX86_64, true, true)
		add(seccomp.ArchX86, AuditArchI386, true, false)
	} else {
		add(seccomp.ArchNative, NativeArch, false, false)
	}
	return m
}()

// nativeIoctl is ioctl's number in the native ABI (-1 if syscalls has
// none): Decode's fast path.
var nativeIoctl = func() int32 {
	for k, info := range syscalls {
		if k.arch == NativeArch && info.sys == SysIoctl && !info.compat && !info.x32 {
			return k.nr
		}
	}
	return -1
}()

// x32SyscallBit marks the x32 ABI's system call numbers (__X32_SYSCALL_BIT).
const x32SyscallBit = 0x40000000

// kernelHasX32 reports whether the running kernel serves the x32 ABI
// (CONFIG_X86_X32_ABI, and not disabled by syscall.x32=n): an x32 getpid,
// harmless either way, answers ENOSYS without it. Probed once.
var kernelHasX32 = sync.OnceValue(func() bool {
	if runtime.GOARCH != "amd64" {
		return false
	}
	_, _, errno := unix.RawSyscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
	return errno != unix.ENOSYS
})

// KernelHasX32 reports whether the running kernel serves the x32 ABI.
func KernelHasX32() bool { return kernelHasX32() }

// Decode resolves req's ABI. ok is false for a call the filter does not
// trap (a bug, or a kernel that numbers differently): answer it ENOSYS.
// An x32 call on a kernel without the x32 ABI is not decoded either
// (NoABI is set): the kernel would answer it ENOSYS without running
// anything, and so must the supervisor.
func Decode(req *Request) (c Call, ok bool) {
	if req.Arch == NativeArch && req.Nr == nativeIoctl && nativeIoctl >= 0 {
		// The hot call, without the map lookup: what syscalls holds
		// for it (native ABI, no compat truncation).
		return Call{Request: req, Syscall: SysIoctl, Args: req.Args}, true
	}
	info, ok := syscalls[sysKey{req.Arch, req.Nr}]
	if !ok {
		return Call{Request: req}, false
	}
	if info.x32 && !kernelHasX32() {
		return Call{Request: req, NoABI: true}, false
	}
	c = Call{Request: req, Syscall: info.sys, Compat: info.compat, Args: req.Args}
	if info.compat {
		for i := range c.Args {
			c.Args[i] &= 0xffffffff
		}
	}
	if c.Syscall == SysUmount {
		c.Syscall, c.Args[1] = SysUmount2, 0
	}
	return c, true
}
