package notify

import (
	"fmt"
	"runtime"
	"testing"
)

// Decode knows the trapped calls by their real x86 numbers in every ABI
// the filter traps, masks compat arguments to 32 bits, and turns i386
// umount into umount2(target, 0).
func TestDecode(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x86 numbers")
	}
	high := uint64(0xdeadbeef00000000)
	tests := []struct {
		name   string
		arch   uint32
		nr     int32
		ok     bool
		sys    Syscall
		compat bool
	}{
		{"ioctl", AuditArchX86_64, 16, true, SysIoctl, false},
		{"mount", AuditArchX86_64, 165, true, SysMount, false},
		{"umount2", AuditArchX86_64, 166, true, SysUmount2, false},
		{"fsopen", AuditArchX86_64, 430, true, SysFsopen, false},
		{"x32 ioctl is compat_sys_ioctl", AuditArchX86_64, x32Bit | 514, true, SysIoctl, true},
		{"x32 mount", AuditArchX86_64, x32Bit | 165, true, SysMount, true},
		{"x32 umount2", AuditArchX86_64, x32Bit | 166, true, SysUmount2, true},
		{"x32 fsopen", AuditArchX86_64, x32Bit | 430, true, SysFsopen, true},
		{"i386 ioctl", AuditArchI386, 54, true, SysIoctl, true},
		{"i386 mount", AuditArchI386, 21, true, SysMount, true},
		{"i386 umount2", AuditArchI386, 52, true, SysUmount2, true},
		{"i386 umount", AuditArchI386, 22, true, SysUmount2, true},
		{"i386 fsopen", AuditArchI386, 430, true, SysFsopen, true},
		{"fsconfig", AuditArchX86_64, 431, true, SysFsconfig, false},
		{"x32 fsmount", AuditArchX86_64, x32Bit | 432, true, SysFsmount, true},
		{"i386 fsconfig", AuditArchI386, 431, true, SysFsconfig, true},
		{"fspick", AuditArchX86_64, 433, true, SysFspick, false},
		{"x32 fspick", AuditArchX86_64, x32Bit | 433, true, SysFspick, true},
		{"i386 fspick", AuditArchI386, 433, true, SysFspick, true},
		{"read", AuditArchX86_64, 0, false, SysUnknown, false},
		{"x32 bit with native ioctl nr", AuditArchX86_64, x32Bit | 16, false, SysUnknown, false},
		{"i386 with native nr 16", AuditArchI386, 16, false, SysUnknown, false},
		{"native with i386 nr 54", AuditArchX86_64, 54, false, SysUnknown, false},
		{"unknown arch", AuditArchAArch64, 29, false, SysUnknown, false},
	}
	probed := kernelHasX32
	t.Cleanup(func() { kernelHasX32 = probed })
	for _, hasX32 := range []bool{true, false} {
		kernelHasX32 = func() bool { return hasX32 }
		for _, tt := range tests {
			decodeCase(t, tt.name, hasX32, tt.arch, tt.nr, tt.ok, tt.sys, tt.compat, high)
		}
	}
	// Every trapped pair is one of the above.
	if n := len(syscalls); n != 22 {
		t.Errorf("%d trapped (arch, nr) pairs, want 22", n)
	}
}

// decodeCase checks Decode of one (arch, nr) pair. Without the x32 ABI in
// the kernel, x32 numbers are not decoded and marked NoABI: the kernel's
// answer is ENOSYS.
func decodeCase(t *testing.T, name string, hasX32 bool, arch uint32, nr int32, wantOK bool, sys Syscall, compat bool, high uint64) {
	t.Helper()
	noABI := false
	if !hasX32 && arch == AuditArchX86_64 && nr&x32Bit != 0 && wantOK {
		wantOK, sys, compat, noABI = false, SysUnknown, false, true
	}
	tt := struct {
		nr     int32
		ok     bool
		sys    Syscall
		compat bool
	}{nr, wantOK, sys, compat}
	t.Run(fmt.Sprintf("%s/x32=%v", name, hasX32), func(t *testing.T) {
		{
			req := Request{Arch: arch, Nr: tt.nr, Args: [6]uint64{high | 3, high | 0x4C00, high | 0x1000, 1, 2, 3}}
			c, ok := Decode(&req)
			if ok != tt.ok || c.Syscall != tt.sys || c.Compat != tt.compat || c.NoABI != noABI {
				t.Fatalf("Decode = %v %v compat %v noABI %v, want %v %v compat %v noABI %v", c.Syscall, ok, c.Compat, c.NoABI, tt.sys, tt.ok, tt.compat, noABI)
			}
			if !ok {
				return
			}
			wantArg0 := req.Args[0]
			if tt.compat {
				wantArg0 &= 0xffffffff
			}
			if c.Args[0] != wantArg0 {
				t.Errorf("arg0 %#x, want %#x", c.Args[0], wantArg0)
			}
			if tt.nr == 22 && c.Args[1] != 0 {
				t.Errorf("i386 umount flags %#x, want 0", c.Args[1])
			}
		}
	})
}

// Decode's fast path for the native ioctl gives what the table gives:
// the number is the table's, and the call is native, untruncated.
func TestDecodeNativeIoctlFastPath(t *testing.T) {
	info, ok := syscalls[sysKey{NativeArch, nativeIoctl}]
	if nativeIoctl < 0 || !ok || info.sys != SysIoctl || info.compat || info.x32 {
		t.Fatalf("nativeIoctl %d: table entry %+v, %v", nativeIoctl, info, ok)
	}
	req := &Request{Arch: NativeArch, Nr: nativeIoctl, Args: [6]uint64{1 << 40, 0x4c82, 1 << 63}}
	c, ok := Decode(req)
	if !ok || c.Syscall != SysIoctl || c.Compat || c.NoABI || c.Args != req.Args || c.Request != req {
		t.Fatalf("Decode = %+v, %v", c, ok)
	}
	// Another arch with the same number is not the native ioctl.
	req.Arch = AuditArchI386
	if c, ok := Decode(req); ok && c.Syscall == SysIoctl && !c.Compat {
		t.Fatalf("i386 nr %d decoded as native ioctl: %+v", nativeIoctl, c)
	}
}
