package notify

import (
	"fmt"
	"io"
	"os"
	"runtime"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/loopvisor/loopvisor/internal/linux"
)

// Loop and block ioctl command numbers, from internal/linux.
const (
	LoopSetFD        = linux.LoopSetFD
	LoopClrFD        = linux.LoopClrFD
	LoopSetStatus    = linux.LoopSetStatus
	LoopGetStatus    = linux.LoopGetStatus
	LoopSetStatus64  = linux.LoopSetStatus64
	LoopGetStatus64  = linux.LoopGetStatus64
	LoopChangeFD     = linux.LoopChangeFD
	LoopSetCapacity  = linux.LoopSetCapacity
	LoopSetDirectIO  = linux.LoopSetDirectIO
	LoopSetBlockSize = linux.LoopSetBlockSize
	LoopConfigure    = linux.LoopConfigure
	LoopCtlAdd       = linux.LoopCtlAdd
	LoopCtlRemove    = linux.LoopCtlRemove
	LoopCtlGetFree   = linux.LoopCtlGetFree
	BlkRRPart        = linux.BlkRRPart
	BlkPG            = linux.BlkPG
	HdioGetGeo       = linux.HdioGetGeo
)

// LoopCommands is every ioctl command the filter traps.
var LoopCommands = []uint64{
	LoopSetFD, LoopClrFD, LoopSetStatus, LoopGetStatus, LoopSetStatus64,
	LoopGetStatus64, LoopChangeFD, LoopSetCapacity, LoopSetDirectIO,
	LoopSetBlockSize, LoopConfigure, LoopCtlAdd, LoopCtlRemove, LoopCtlGetFree,
	BlkRRPart, BlkPG, HdioGetGeo,
}

// Seccomp filter flags (include/uapi/linux/seccomp.h).
const (
	filterFlagTSync            = 1 << 0
	filterFlagNewListener      = 1 << 3
	filterFlagTSyncESRCH       = 1 << 4
	filterFlagWaitKillableRecv = 1 << 5
)

// NativeArch is the audit arch of this build (AUDIT_ARCH_X86_64 on amd64).
var NativeArch = func() uint32 {
	switch runtime.GOARCH {
	case "amd64":
		return AuditArchX86_64
	case "arm64":
		return AuditArchAArch64
	default:
		return 0
	}
}()

// Mount flags the mount(2) pre-filter looks at (include/uapi/linux/mount.h).
const (
	MsRemount = 0x20
	MsBind    = 0x1000
	MsMove    = 0x2000
)

// Options selects what a filter traps besides the loop ioctls.
type Options struct {
	// Mount traps mount(2) calls that may create a new mount (no
	// MS_REMOUNT, MS_BIND or MS_MOVE; these bits are not part of
	// MS_MGC_VAL, unlike MS_PRIVATE and MS_SLAVE) or remount a
	// superblock (MS_REMOUNT without MS_BIND), umount2(2) (and the i386
	// umount(2)), fsopen(2), and fsconfig(2), fsmount(2) and fspick(2)
	// (the new mount API on contexts loopvisor handed out, and its
	// remount).
	Mount bool
}

// Program builds the BPF program that traps the loop ioctls of LoopCommands
// (and, with opts.Mount, the mount calls) with SCMP_ACT_NOTIFY and allows
// everything else.
func Program(opts Options) ([]unix.SockFilter, error) {
	f, err := newFilter()
	if err != nil {
		return nil, err
	}
	defer f.Release()
	ioctl, err := seccomp.GetSyscallFromName("ioctl")
	if err != nil {
		return nil, err
	}
	for _, cmd := range LoopCommands {
		cond, err := seccomp.MakeCondition(1, seccomp.CompareMaskedEqual, 0xffffffff, cmd)
		if err != nil {
			return nil, err
		}
		if err := f.AddRuleConditional(ioctl, seccomp.ActNotify, []seccomp.ScmpCondition{cond}); err != nil {
			return nil, fmt.Errorf("seccomp: rule ioctl(%#x): %w", cmd, err)
		}
	}
	if opts.Mount {
		if err := addMountRules(f); err != nil {
			return nil, err
		}
	}
	return exportBPF(f)
}

// newFilter returns an allow-by-default filter for the native ABI and, on
// amd64, the compat ABIs: they must be filtered too, or a 32-bit call walks
// around the rules; refusing them (the default bad-arch action) would kill
// every 32-bit program.
func newFilter() (*seccomp.ScmpFilter, error) {
	f, err := seccomp.NewFilter(seccomp.ActAllow)
	if err != nil {
		return nil, fmt.Errorf("seccomp: new filter: %w", err)
	}
	if runtime.GOARCH == "amd64" {
		for _, a := range []seccomp.ScmpArch{seccomp.ArchX86, seccomp.ArchX32} {
			if err := f.AddArch(a); err != nil {
				f.Release()
				return nil, fmt.Errorf("seccomp: add arch %v: %w", a, err)
			}
		}
	}
	return f, nil
}

func addMountRules(f *seccomp.ScmpFilter) error {
	mount, err := seccomp.GetSyscallFromName("mount")
	if err != nil {
		return err
	}
	cond, err := seccomp.MakeCondition(3, seccomp.CompareMaskedEqual, MsRemount|MsBind|MsMove, 0)
	if err != nil {
		return err
	}
	if err := f.AddRuleConditional(mount, seccomp.ActNotify, []seccomp.ScmpCondition{cond}); err != nil {
		return fmt.Errorf("seccomp: rule mount: %w", err)
	}
	// A remount of a superblock (MS_REMOUNT without MS_BIND): a kernel
	// mount's needs host root; a bind remount changes only the mount's
	// own flags and stays the kernel's alone.
	remount, err := seccomp.MakeCondition(3, seccomp.CompareMaskedEqual, MsRemount|MsBind, MsRemount)
	if err != nil {
		return err
	}
	if err := f.AddRuleConditional(mount, seccomp.ActNotify, []seccomp.ScmpCondition{remount}); err != nil {
		return fmt.Errorf("seccomp: rule mount remount: %w", err)
	}
	// "umount" exists only in the i386 ABI; libseccomp adds it there.
	for _, name := range []string{"umount2", "umount", "fsopen", "fsconfig", "fsmount", "fspick"} {
		nr, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			return err
		}
		if err := f.AddRule(nr, seccomp.ActNotify); err != nil {
			return fmt.Errorf("seccomp: rule %s: %w", name, err)
		}
	}
	return nil
}

func exportBPF(f *seccomp.ScmpFilter) ([]unix.SockFilter, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }() // read end, drained or abandoned
	errc := make(chan error, 1)
	go func() {
		err := f.ExportBPF(w)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("seccomp: export bpf: %w", err)
	}
	return progFromBytes(raw)
}
