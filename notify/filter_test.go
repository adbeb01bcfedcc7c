package notify

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Seccomp return values (include/uapi/linux/seccomp.h).
const (
	retKillThread = 0x00000000
	retUserNotif  = 0x7fc00000
	retAllow      = 0x7fff0000
)

// Audit arches and x86 syscall numbers.
const (
	archX86_64 = 0xc000003e
	archI386   = 0x40000003
	archARM64  = 0xc00000b7
	x32Bit     = x32SyscallBit

	nrRead64   = 0
	nrIoctl64  = 16
	nrMount64  = 165
	nrOpenat64 = 257
	nrIoctlX32 = x32Bit | 514 // 514 x32 ioctl compat_sys_ioctl
	nrIoctl32  = 54
	nrLchown32 = 16 // i386 16 is lchown16: same number as x86_64 ioctl
)

// seccompDataBytes builds struct seccomp_data as the kernel lays it out.
func seccompDataBytes(nr int32, arch uint32, ip uint64, args [6]uint64) [64]byte {
	var b [64]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(nr))
	le.PutUint32(b[4:], arch)
	le.PutUint64(b[8:], ip)
	for i, a := range args {
		le.PutUint64(b[16+8*i:], a)
	}
	return b
}

// Classic BPF opcode parts (include/uapi/linux/bpf_common.h, filter.h).
const (
	bpfLD   = 0x00
	bpfLDX  = 0x01
	bpfST   = 0x02
	bpfSTX  = 0x03
	bpfALU  = 0x04
	bpfJMP  = 0x05
	bpfRET  = 0x06
	bpfMISC = 0x07

	bpfW   = 0x00
	bpfIMM = 0x00
	bpfABS = 0x20
	bpfMEM = 0x60

	bpfAND = 0x50
	bpfOR  = 0x40

	bpfJA   = 0x00
	bpfJEQ  = 0x10
	bpfJGT  = 0x20
	bpfJGE  = 0x30
	bpfJSET = 0x40
	bpfK    = 0x00

	bpfTAX = 0x00
	bpfTXA = 0x80

	bpfMemWords = 16
)

// runBPF interprets prog over data as the kernel's seccomp would, for the
// instructions libseccomp emits. It returns an error for anything else, so
// a change in the generated code cannot go unnoticed.
func runBPF(prog []unix.SockFilter, data [64]byte) (uint32, error) {
	var a, x uint32
	var mem [bpfMemWords]uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		k := in.K
		switch in.Code {
		case bpfLD | bpfW | bpfABS:
			if k%4 != 0 || k+4 > uint32(len(data)) {
				return 0, fmt.Errorf("pc %d: load at offset %d outside seccomp_data", pc, k)
			}
			a = binary.LittleEndian.Uint32(data[k:])
		case bpfLD | bpfW | bpfIMM:
			a = k
		case bpfLDX | bpfW | bpfIMM:
			x = k
		case bpfLD | bpfW | bpfMEM:
			if k >= bpfMemWords {
				return 0, fmt.Errorf("pc %d: mem[%d]", pc, k)
			}
			a = mem[k]
		case bpfLDX | bpfW | bpfMEM:
			if k >= bpfMemWords {
				return 0, fmt.Errorf("pc %d: mem[%d]", pc, k)
			}
			x = mem[k]
		case bpfST:
			if k >= bpfMemWords {
				return 0, fmt.Errorf("pc %d: mem[%d]", pc, k)
			}
			mem[k] = a
		case bpfSTX:
			if k >= bpfMemWords {
				return 0, fmt.Errorf("pc %d: mem[%d]", pc, k)
			}
			mem[k] = x
		case bpfALU | bpfAND | bpfK:
			a &= k
		case bpfALU | bpfOR | bpfK:
			a |= k
		case bpfMISC | bpfTAX:
			x = a
		case bpfMISC | bpfTXA:
			a = x
		case bpfRET | bpfK:
			return k, nil
		case bpfJMP | bpfJA:
			if uint64(pc)+1+uint64(k) >= uint64(len(prog)) {
				return 0, fmt.Errorf("pc %d: ja %d out of the program", pc, k)
			}
			pc += int(k)
		case bpfJMP | bpfJEQ | bpfK, bpfJMP | bpfJGT | bpfK, bpfJMP | bpfJGE | bpfK, bpfJMP | bpfJSET | bpfK:
			var cond bool
			switch in.Code &^ (bpfJMP | bpfK) {
			case bpfJEQ:
				cond = a == k
			case bpfJGT:
				cond = a > k
			case bpfJGE:
				cond = a >= k
			case bpfJSET:
				cond = a&k != 0
			}
			off := int(in.Jf)
			if cond {
				off = int(in.Jt)
			}
			if pc+1+off >= len(prog) {
				return 0, fmt.Errorf("pc %d: jump %d out of the program", pc, off)
			}
			pc += off
		default:
			return 0, fmt.Errorf("pc %d: unknown opcode %#04x (jt %d jf %d k %#x)", pc, in.Code, in.Jt, in.Jf, in.K)
		}
	}
	return 0, fmt.Errorf("fell off the end of the program")
}

func program(t *testing.T, opts Options) []unix.SockFilter {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the expected program is written for x86_64 with i386 and x32")
	}
	prog, err := Program(opts)
	if err != nil {
		t.Fatalf("Program: %v", err)
	}
	if len(prog) == 0 || len(prog) > 4096 {
		t.Fatalf("program has %d instructions", len(prog))
	}
	return prog
}

func run(t *testing.T, prog []unix.SockFilter, nr int32, arch uint32, args [6]uint64) uint32 {
	t.Helper()
	r, err := runBPF(prog, seccompDataBytes(nr, arch, 0x401000, args))
	if err != nil {
		for i, in := range prog {
			t.Logf("%3d: code %#04x jt %d jf %d k %#x", i, in.Code, in.Jt, in.Jf, in.K)
		}
		t.Fatalf("nr %#x arch %#x args %#x: %v", nr, arch, args, err)
	}
	return r
}

func retName(r uint32) string {
	switch r {
	case retAllow:
		return "ALLOW"
	case retUserNotif:
		return "USER_NOTIF"
	case retKillThread:
		return "KILL_THREAD"
	}
	return fmt.Sprintf("%#x", r)
}

func TestSeccompDataLayout(t *testing.T) {
	if unsafe.Sizeof(seccompData{}) != 64 {
		t.Fatalf("sizeof seccompData = %d, want 64", unsafe.Sizeof(seccompData{}))
	}
	d := seccompData{Nr: -2, Arch: archX86_64, InstructionPointer: 0x1122334455667788, Args: [6]uint64{1, 2, 3, 4, 5, 0xdeadbeef00004c00}}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&d)), 64)
	want := seccompDataBytes(d.Nr, d.Arch, d.InstructionPointer, d.Args)
	if string(raw) != string(want[:]) {
		t.Errorf("seccompData layout differs from the test's struct seccomp_data")
	}
	if unsafe.Sizeof(seccompNotif{}) != 80 || unsafe.Sizeof(seccompNotifResp{}) != 24 {
		t.Errorf("sizeof seccomp_notif %d (want 80), seccomp_notif_resp %d (want 24)",
			unsafe.Sizeof(seccompNotif{}), unsafe.Sizeof(seccompNotifResp{}))
	}
}

func TestLoopCommandsMatchConstants(t *testing.T) {
	want := []uint64{0x4C00, 0x4C01, 0x4C02, 0x4C03, 0x4C04, 0x4C05, 0x4C06, 0x4C07,
		0x4C08, 0x4C09, 0x4C0A, 0x4C80, 0x4C81, 0x4C82,
		0x125F, 0x1269, // BLKRRPART, BLKPG: partitions of an instance's devices
		0x0301} // HDIO_GETGEO: a partition's start sector
	if len(LoopCommands) != len(want) {
		t.Fatalf("LoopCommands has %d entries, want %d", len(LoopCommands), len(want))
	}
	for i := range want {
		if LoopCommands[i] != want[i] {
			t.Errorf("LoopCommands[%d] = %#x, want %#x", i, LoopCommands[i], want[i])
		}
	}
}

func TestNativeArch(t *testing.T) {
	switch runtime.GOARCH {
	case "amd64":
		if NativeArch != archX86_64 {
			t.Errorf("NativeArch = %#x", NativeArch)
		}
	case "arm64":
		if NativeArch != archARM64 {
			t.Errorf("NativeArch = %#x", NativeArch)
		}
	}
}

func TestProgramOpcodes(t *testing.T) {
	for _, opts := range []Options{{}, {Mount: true}} {
		checkOpcodes(t, program(t, opts))
	}
}

func checkOpcodes(t *testing.T, prog []unix.SockFilter, rets ...uint32) {
	t.Helper()
	last := prog[len(prog)-1]
	if last.Code != bpfRET|bpfK {
		t.Errorf("program does not end with a return: %#04x", last.Code)
	}
	// Every instruction is one the interpreter knows: run each reachable
	// path below; here, make sure no unknown opcode hides on a path the
	// other tests might miss.
	for i, in := range prog {
		switch in.Code {
		case bpfLD | bpfW | bpfABS, bpfLD | bpfW | bpfIMM, bpfLDX | bpfW | bpfIMM,
			bpfLD | bpfW | bpfMEM, bpfLDX | bpfW | bpfMEM, bpfST, bpfSTX,
			bpfALU | bpfAND | bpfK, bpfALU | bpfOR | bpfK, bpfMISC | bpfTAX, bpfMISC | bpfTXA,
			bpfRET | bpfK, bpfJMP | bpfJA,
			bpfJMP | bpfJEQ | bpfK, bpfJMP | bpfJGT | bpfK, bpfJMP | bpfJGE | bpfK, bpfJMP | bpfJSET | bpfK:
		default:
			t.Errorf("pc %d: unexpected opcode %#04x", i, in.Code)
		}
		if in.Code == bpfRET|bpfK {
			switch in.K {
			case retAllow, retUserNotif, retKillThread:
			default:
				if slices.Contains(rets, in.K) {
					continue
				}
				t.Errorf("pc %d: unexpected return %#x", i, in.K)
			}
		}
	}
}

func TestFilterNativeIoctl(t *testing.T) {
	prog := program(t, Options{})
	for _, cmd := range LoopCommands {
		for _, hi := range []uint64{0, 0xdeadbeef00000000, 0xffffffff00000000, 1 << 32, 1 << 63} {
			c := hi | cmd
			if r := run(t, prog, nrIoctl64, archX86_64, [6]uint64{3, c, 0x7ffd0000}); r != retUserNotif {
				t.Errorf("x86_64 ioctl(3, %#x): %s, want USER_NOTIF", c, retName(r))
			}
		}
		// Other arguments do not matter.
		if r := run(t, prog, nrIoctl64, archX86_64, [6]uint64{^uint64(0), cmd, ^uint64(0), 7, 8, 9}); r != retUserNotif {
			t.Errorf("x86_64 ioctl(-1, %#x, -1): %s, want USER_NOTIF", cmd, retName(r))
		}
	}
	for _, c := range []uint64{
		0x4C0B, 0x4C82 + 1, 0x4C7F, 0x4BFF, 0x5401, 0, 0xffffffff,
		0x4C00 << 32, // a loop command in the high half only
		0xdeadbeef00005401,
		0x80044C00, // loop command with direction/size bits: another ioctl
		0x14C00,
		unix.TCGETS, 0x541B /* FIONREAD */, unix.BLKGETSIZE64,
	} {
		if r := run(t, prog, nrIoctl64, archX86_64, [6]uint64{3, c, 0}); r != retAllow {
			t.Errorf("x86_64 ioctl(3, %#x): %s, want ALLOW", c, retName(r))
		}
	}
}

func TestFilterOtherSyscalls(t *testing.T) {
	prog := program(t, Options{})
	for _, nr := range []int32{nrRead64, nrOpenat64, nrMount64, 1, 54, 59, 435, 514, -1, 0x3fffffff} {
		for _, cmd := range []uint64{0, 0x4C00, 0x4C82} {
			if r := run(t, prog, nr, archX86_64, [6]uint64{3, cmd, 0}); r != retAllow {
				t.Errorf("x86_64 nr %d with arg1 %#x: %s, want ALLOW", nr, cmd, retName(r))
			}
		}
	}
	// i386 syscalls other than ioctl, including 16 (lchown16).
	for _, nr := range []int32{3, nrLchown32, 5, 21, 295} {
		if r := run(t, prog, nr, archI386, [6]uint64{3, 0x4C00, 0}); r != retAllow {
			t.Errorf("i386 nr %d: %s, want ALLOW", nr, retName(r))
		}
	}
	// x32 syscalls other than ioctl; x32 | 16 is not ioctl on x32 (the
	// kernel's x32 table has no entry 16: ENOSYS).
	for _, nr := range []int32{x32Bit /* read */, x32Bit | 257, x32Bit | nrIoctl64, x32Bit | 515} {
		if r := run(t, prog, nr, archX86_64, [6]uint64{3, 0x4C00, 0}); r != retAllow {
			t.Errorf("x32 nr %#x: %s, want ALLOW", nr, retName(r))
		}
	}
}

func TestFilterCompatIoctl(t *testing.T) {
	prog := program(t, Options{})
	for _, cmd := range LoopCommands {
		// i386: the kernel passes 32-bit arguments zero-extended; the
		// filter must not depend on the high half either way.
		for _, hi := range []uint64{0, 0xdeadbeef00000000} {
			if r := run(t, prog, nrIoctl32, archI386, [6]uint64{3, hi | cmd, 0xffff0000}); r != retUserNotif {
				t.Errorf("i386 ioctl(3, %#x): %s, want USER_NOTIF", hi|cmd, retName(r))
			}
			if r := run(t, prog, nrIoctlX32, archX86_64, [6]uint64{3, hi | cmd, 0xffff0000}); r != retUserNotif {
				t.Errorf("x32 ioctl(3, %#x): %s, want USER_NOTIF", hi|cmd, retName(r))
			}
		}
	}
	for _, c := range []uint64{0x4C0B, 0x5401, 0, 0x4C83} {
		if r := run(t, prog, nrIoctl32, archI386, [6]uint64{3, c, 0}); r != retAllow {
			t.Errorf("i386 ioctl(3, %#x): %s, want ALLOW", c, retName(r))
		}
		if r := run(t, prog, nrIoctlX32, archX86_64, [6]uint64{3, c, 0}); r != retAllow {
			t.Errorf("x32 ioctl(3, %#x): %s, want ALLOW", c, retName(r))
		}
	}
}

// An arch the filter was not built for hits libseccomp's default bad-arch
// action (kill). The kernel never presents one on an x86_64 host: x86_64,
// i386 and x32 are its only syscall ABIs, and all three are in the filter.
func TestFilterForeignArch(t *testing.T) {
	prog := program(t, Options{})
	for _, arch := range []uint32{archARM64, 0, 0x40000028 /* ARM */} {
		if r := run(t, prog, nrIoctl64, arch, [6]uint64{3, 0x4C00, 0}); r != retKillThread {
			t.Errorf("arch %#x: %s, want KILL_THREAD", arch, retName(r))
		}
	}
}

// Syscall numbers of the mount calls (arch/x86/entry/syscalls).
const (
	nrMount32     = 21
	nrOldUmount32 = 22 // i386 umount(2): sys_oldumount, umount2(path, 0)
	nrUmount2_32  = 52
	nrUmount2_64  = 166
	nrFsopen      = 430 // same number on all three ABIs
	nrOpenTree    = 428
	nrMoveMount   = 429
	nrFsconfig    = 431
	nrFsmount     = 432
	nrFspick      = 433

	msRdonly  = 0x1
	msNosuid  = 0x2
	msRemount = 0x20
	msBind    = 0x1000
	msMove    = 0x2000
	msRec     = 0x4000
	msPrivate = 1 << 18
	msMgcVal  = 0xC0ED0000
)

func TestMountFlagConstants(t *testing.T) {
	if MsRemount != unix.MS_REMOUNT || MsBind != unix.MS_BIND || MsMove != unix.MS_MOVE {
		t.Errorf("mount flag constants differ from x/sys")
	}
	if msMgcVal&(MsRemount|MsBind|MsMove) != 0 {
		t.Errorf("MS_MGC_VAL shares a bit with the filter's mask")
	}
}

// Without Options.Mount, the mount calls run at kernel speed.
func TestFilterMountNotTrappedByDefault(t *testing.T) {
	prog := program(t, Options{})
	abis := []struct {
		arch uint32
		nrs  []int32
	}{
		{archX86_64, []int32{nrMount64, nrUmount2_64, nrFsopen}},
		{archX86_64, []int32{x32Bit | nrMount64, x32Bit | nrUmount2_64, x32Bit | nrFsopen}},
		{archI386, []int32{nrMount32, nrUmount2_32, nrOldUmount32, nrFsopen}},
	}
	for _, abi := range abis {
		for _, nr := range abi.nrs {
			if r := run(t, prog, nr, abi.arch, [6]uint64{0x1000, 0x2000, 0x3000, 0}); r != retAllow {
				t.Errorf("arch %#x nr %#x: %s, want ALLOW", abi.arch, nr, retName(r))
			}
		}
	}
}

func TestFilterMount(t *testing.T) {
	prog := program(t, Options{Mount: true})
	// Loop ioctls are still trapped, other ioctls are not.
	for _, cmd := range LoopCommands {
		if r := run(t, prog, nrIoctl64, archX86_64, [6]uint64{3, 0xdeadbeef00000000 | cmd}); r != retUserNotif {
			t.Errorf("Mount: ioctl(3, %#x): %s, want USER_NOTIF", cmd, retName(r))
		}
		if r := run(t, prog, nrIoctl32, archI386, [6]uint64{3, cmd}); r != retUserNotif {
			t.Errorf("Mount: i386 ioctl(3, %#x): %s, want USER_NOTIF", cmd, retName(r))
		}
		if r := run(t, prog, nrIoctlX32, archX86_64, [6]uint64{3, cmd}); r != retUserNotif {
			t.Errorf("Mount: x32 ioctl(3, %#x): %s, want USER_NOTIF", cmd, retName(r))
		}
	}
	if r := run(t, prog, nrIoctl64, archX86_64, [6]uint64{3, unix.TCGETS}); r != retAllow {
		t.Errorf("Mount: ioctl(TCGETS): %s, want ALLOW", retName(r))
	}
	mounts := []struct {
		nr   int32
		arch uint32
	}{{nrMount64, archX86_64}, {x32Bit | nrMount64, archX86_64}, {nrMount32, archI386}}
	flags := []struct {
		flags uint64
		trap  bool
	}{
		{0, true},
		{msRdonly | msNosuid, true},
		{msMgcVal, true},
		{msMgcVal | msRdonly, true},
		{msPrivate, true}, // propagation changes reach the supervisor, which CONTINUEs them
		{msPrivate | msRec, true},
		{1 << 32, true},   // the kernel ignores the high half: a new mount
		{msRemount, true}, // a superblock remount: a kernel mount's needs the supervisor
		{msRemount | msRdonly, true},
		{msMgcVal | msRemount, true},
		{msRemount | msBind, false}, // a bind remount: per-mount flags only, the kernel's
		{msRemount | msBind | msRdonly, false},
		{msBind, false},
		{msBind | msRec, false},
		{msMove, false},
		{msMgcVal | msBind, false},
		{0xffffffff, false},
		{0xdeadbeef00000000 | msBind, false},
	}
	for _, m := range mounts {
		for _, f := range flags {
			want := uint32(retAllow)
			if f.trap {
				want = retUserNotif
			}
			if m.arch == archI386 || m.nr&x32Bit != 0 {
				// Compat ABIs pass 32-bit flags.
				if f.flags>>32 != 0 {
					continue
				}
			}
			if r := run(t, prog, m.nr, m.arch, [6]uint64{0x1000, 0x2000, 0x3000, f.flags, 0x4000}); r != want {
				t.Errorf("arch %#x mount nr %#x flags %#x: %s, want %s", m.arch, m.nr, f.flags, retName(r), retName(want))
			}
		}
	}
	trapped := []struct {
		nr   int32
		arch uint32
	}{
		{nrUmount2_64, archX86_64}, {nrFsopen, archX86_64},
		{x32Bit | nrUmount2_64, archX86_64}, {x32Bit | nrFsopen, archX86_64},
		{nrUmount2_32, archI386}, {nrFsopen, archI386},
		{nrFsconfig, archX86_64}, {nrFsmount, archX86_64},
		{x32Bit | nrFsconfig, archX86_64}, {x32Bit | nrFsmount, archX86_64},
		{nrFsconfig, archI386}, {nrFsmount, archI386},
		{nrFspick, archX86_64}, {x32Bit | nrFspick, archX86_64}, {nrFspick, archI386},
	}
	for _, c := range trapped {
		for _, a := range [][6]uint64{{}, {0x1000, 0x2}, {^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}} {
			if r := run(t, prog, c.nr, c.arch, a); r != retUserNotif {
				t.Errorf("arch %#x nr %#x: %s, want USER_NOTIF", c.arch, c.nr, retName(r))
			}
		}
	}
	allowed := []struct {
		nr   int32
		arch uint32
	}{
		{nrRead64, archX86_64}, {nrOpenat64, archX86_64},
		{nrOpenTree, archX86_64}, {nrMoveMount, archX86_64},
		{x32Bit | nrOpenTree, archX86_64}, {nrOpenTree, archI386},
		{nrUmount2_32, archX86_64}, // 52 on x86_64 is getpeername
		{nrMount32, archX86_64},    // 21 on x86_64 is access
		{nrMount64, archI386},      // 165 on i386 is getresuid16
	}
	for _, c := range allowed {
		if r := run(t, prog, c.nr, c.arch, [6]uint64{}); r != retAllow {
			t.Errorf("arch %#x nr %#x: %s, want ALLOW", c.arch, c.nr, retName(r))
		}
	}
	// i386 umount(2) (sys_oldumount, nr 22) is umount2 with flags 0: it
	// must not reach the kernel without the supervisor.
	if r := run(t, prog, nrOldUmount32, archI386, [6]uint64{0x1000}); r != retUserNotif {
		t.Errorf("i386 umount (nr 22, sys_oldumount) is %s, want USER_NOTIF", retName(r))
	}
}

// The filter's decision is exactly the model: trap an ioctl of any of the
// three x86 ABIs whose cmd's low 32 bits are a loop command.
func TestFilterModel(t *testing.T) {
	for _, opts := range []Options{{}, {Mount: true}} {
		t.Run(fmt.Sprintf("Mount=%v", opts.Mount), func(t *testing.T) { testFilterModel(t, opts) })
	}
}

// filterModel is what the filter should decide for opts.
func filterModel(opts Options, nr int32, arch uint32, args [6]uint64) uint32 {
	isIoctl := (arch == archX86_64 && (nr == nrIoctl64 || nr == nrIoctlX32)) ||
		(arch == archI386 && nr == nrIoctl32)
	if isIoctl {
		for _, c := range LoopCommands {
			if uint32(args[1]) == uint32(c) {
				return retUserNotif
			}
		}
		return retAllow
	}
	if !opts.Mount {
		return retAllow
	}
	isMount := (arch == archX86_64 && (nr == nrMount64 || nr == x32Bit|nrMount64)) ||
		(arch == archI386 && nr == nrMount32)
	if isMount && (uint32(args[3])&(msRemount|msBind|msMove) == 0 || uint32(args[3])&(msRemount|msBind) == msRemount) {
		return retUserNotif
	}
	switch {
	case arch == archX86_64 && (nr == nrUmount2_64 || nr == x32Bit|nrUmount2_64 || nr == nrFsopen || nr == x32Bit|nrFsopen),
		arch == archI386 && (nr == nrUmount2_32 || nr == nrOldUmount32 || nr == nrFsopen):
		return retUserNotif
	}
	return retAllow
}

func testFilterModel(t *testing.T, opts Options) {
	prog := program(t, opts)
	// Every cmd with a 0x4C type byte, under each ABI.
	for c := uint64(0x4C00); c <= 0x4CFF; c++ {
		for _, abi := range []struct {
			nr   int32
			arch uint32
		}{{nrIoctl64, archX86_64}, {nrIoctlX32, archX86_64}, {nrIoctl32, archI386}, {nrRead64, archX86_64}} {
			args := [6]uint64{3, c, 0}
			if got, want := run(t, prog, abi.nr, abi.arch, args), filterModel(opts, abi.nr, abi.arch, args); got != want {
				t.Errorf("nr %#x arch %#x cmd %#x: %s, want %s", abi.nr, abi.arch, c, retName(got), retName(want))
			}
		}
	}
	rng := rand.New(rand.NewSource(1))
	nrs := []int32{
		nrIoctl64, nrIoctlX32, nrIoctl32, nrRead64, nrOpenat64, x32Bit | nrIoctl64,
		nrMount64, x32Bit | nrMount64, nrMount32, nrUmount2_64, x32Bit | nrUmount2_64, nrUmount2_32,
		nrOldUmount32, nrFsopen, x32Bit | nrFsopen, nrOpenTree, nrMoveMount,
	}
	arches := []uint32{archX86_64, archI386}
	for i := 0; i < 200000; i++ {
		nr := nrs[rng.Intn(len(nrs))]
		if rng.Intn(8) == 0 {
			nr = int32(rng.Uint32())
		}
		arch := arches[rng.Intn(len(arches))]
		var args [6]uint64
		for j := range args {
			args[j] = rng.Uint64()
			if rng.Intn(2) == 0 {
				args[j] &= 0xffffffff
			}
		}
		if rng.Intn(2) == 0 {
			args[1] = args[1]&^0xffffffff | LoopCommands[rng.Intn(len(LoopCommands))]
		}
		if rng.Intn(2) == 0 {
			args[3] &^= msRemount | msBind | msMove
		}
		got, err := runBPF(prog, seccompDataBytes(nr, arch, rng.Uint64(), args))
		if err != nil {
			t.Fatal(err)
		}
		if want := filterModel(opts, nr, arch, args); got != want {
			t.Fatalf("nr %#x arch %#x args %#x: %s, want %s", nr, arch, args, retName(got), retName(want))
		}
	}
}

// The interpreter itself refuses what it does not know.
func TestRunBPFRejects(t *testing.T) {
	var d [64]byte
	bad := [][]unix.SockFilter{
		{{Code: 0x1c /* ALU|SUB|X */}},
		{{Code: bpfLD | bpfW | bpfABS, K: 64}, {Code: bpfRET | bpfK}},
		{{Code: bpfLD | bpfW | bpfABS, K: 2}, {Code: bpfRET | bpfK}},
		{{Code: bpfJMP | bpfJEQ | bpfK, Jt: 5}, {Code: bpfRET | bpfK}},
		{{Code: bpfLD | bpfW | bpfIMM}},
	}
	for i, p := range bad {
		if r, err := runBPF(p, d); err == nil {
			t.Errorf("program %d: ran to %#x, want an error", i, r)
		}
	}
	ok := []unix.SockFilter{
		{Code: bpfLD | bpfW | bpfABS, K: 4},
		{Code: bpfST, K: 3},
		{Code: bpfLD | bpfW | bpfIMM, K: 0},
		{Code: bpfLDX | bpfW | bpfMEM, K: 3},
		{Code: bpfMISC | bpfTXA},
		{Code: bpfALU | bpfOR | bpfK, K: 0x1},
		{Code: bpfJMP | bpfJSET | bpfK, Jt: 0, Jf: 1, K: 0x1},
		{Code: bpfRET | bpfK, K: retAllow},
		{Code: bpfRET | bpfK, K: retKillThread},
	}
	d = seccompDataBytes(0, archX86_64, 0, [6]uint64{})
	if r, err := runBPF(ok, d); err != nil || r != retAllow {
		t.Errorf("valid program: %#x, %v", r, err)
	}
}
