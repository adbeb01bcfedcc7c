package notify

import (
	"runtime"

	seccomp "github.com/seccomp/libseccomp-golang"

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
)

var sysNames = map[Syscall]string{
	SysIoctl: "ioctl", SysMount: "mount", SysUmount2: "umount2", SysUmount: "umount", SysFsopen: "fsopen",
	SysFsconfig: "fsconfig", SysFsmount: "fsmount",
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
	Args   [6]uint64
}

type sysKey struct {
	arch uint32
	nr   int32
}

type sysInfo struct {
	sys    Syscall
	compat bool
}

// syscalls maps every trapped (arch, nr) pair.
var syscalls = func() map[sysKey]sysInfo {
	m := map[sysKey]sysInfo{}
	add := func(arch seccomp.ScmpArch, audit uint32, compat bool) {
		for sys, name := range sysNames {
			nr, err := seccomp.GetSyscallFromNameByArch(name, arch)
			if err == nil && nr >= 0 {
				m[sysKey{audit, int32(nr)}] = sysInfo{sys, compat}
			}
		}
	}
	if runtime.GOARCH == "amd64" {
		add(seccomp.ArchAMD64, AuditArchX86_64, false)
		add(seccomp.ArchX32, AuditArchX86_64, true)
		add(seccomp.ArchX86, AuditArchI386, true)
	} else {
		add(seccomp.ArchNative, NativeArch, false)
	}
	return m
}()

// Decode resolves req's ABI. ok is false for a call the filter does not
// trap (a bug, or a kernel that numbers differently): answer it ENOSYS.
func Decode(req *Request) (c Call, ok bool) {
	info, ok := syscalls[sysKey{req.Arch, req.Nr}]
	if !ok {
		return Call{Request: req}, false
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
