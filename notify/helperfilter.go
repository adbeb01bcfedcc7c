package notify

import (
	"fmt"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// helperDenied are the system calls a FUSE helper never needs and a
// container's default profile (Docker's, podman's) denies or reserves to
// CAP_SYS_ADMIN: mounting and namespace changes, other processes' memory,
// kernel modules and keyrings, BPF, perf, userfaultfd, io_uring, handles.
// The helper runs with no capabilities anyway; the filter is a second
// wall that does not depend on the kernel's capability checks.
var helperDenied = []string{
	"mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick",
	"move_mount", "open_tree", "mount_setattr", "pivot_root", "chroot",
	"setns", "unshare", "ptrace", "process_vm_readv", "process_vm_writev",
	"pidfd_getfd", "kcmp", "kexec_load", "kexec_file_load", "init_module",
	"finit_module", "delete_module", "bpf", "perf_event_open", "keyctl",
	"add_key", "request_key", "userfaultfd", "io_uring_setup",
	"io_uring_enter", "io_uring_register", "open_by_handle_at",
	"name_to_handle_at", "mknod", "mknodat", "swapon", "swapoff", "reboot",
	"syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
	"personality", "clone3", "vm86", "vm86old", "uselib", "iopl", "ioperm",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
	"setdomainname", "fanotify_init", "nfsservctl", "create_module",
	"get_kernel_syms", "query_module", "sysfs", "_sysctl", "ustat",
	"lsm_set_self_attr", "move_pages", "migrate_pages", "mbind",
	"set_mempolicy", "set_mempolicy_home_node",
}

// HelperProgram builds the seccomp program every FUSE helper runs under:
// everything a file system server does is allowed; the loop driver (every
// LOOP_* and LOOP_CTL_* command, BLKRRPART, BLKPG), every mount and
// namespace call, clone with namespace flags and the calls in helperDenied
// answer EPERM (clone3 ENOSYS, so libc falls back to clone, whose flags
// the filter can see). It is stricter than the container's own filter for
// everything loopvisor serves: the helper cannot even ask loopvisor.
func HelperProgram() ([]byte, error) {
	f, err := newFilter()
	if err != nil {
		return nil, err
	}
	defer f.Release()
	eperm := seccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	for _, name := range helperDenied {
		nr, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			continue // not a system call of this architecture
		}
		act := eperm
		if name == "clone3" {
			act = seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))
		}
		if err := f.AddRule(nr, act); err != nil {
			return nil, fmt.Errorf("seccomp: rule %s: %w", name, err)
		}
	}
	ioctl, err := seccomp.GetSyscallFromName("ioctl")
	if err != nil {
		return nil, err
	}
	// Every loop command: 0x4C00-0x4CFF on the low 32 bits.
	loop, err := seccomp.MakeCondition(1, seccomp.CompareMaskedEqual, 0xffffff00, 0x4C00)
	if err != nil {
		return nil, err
	}
	if err := f.AddRuleConditional(ioctl, eperm, []seccomp.ScmpCondition{loop}); err != nil {
		return nil, fmt.Errorf("seccomp: rule ioctl(loop): %w", err)
	}
	for _, cmd := range []uint64{BlkRRPart, BlkPG} {
		c, err := seccomp.MakeCondition(1, seccomp.CompareMaskedEqual, 0xffffffff, cmd)
		if err != nil {
			return nil, err
		}
		if err := f.AddRuleConditional(ioctl, eperm, []seccomp.ScmpCondition{c}); err != nil {
			return nil, fmt.Errorf("seccomp: rule ioctl(%#x): %w", cmd, err)
		}
	}
	clone, err := seccomp.GetSyscallFromName("clone")
	if err != nil {
		return nil, err
	}
	const newNS = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
		unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME
	// A rule per bit: libseccomp cannot test "any of these bits" in one
	// comparison.
	for bit := uint64(1); bit != 0; bit <<= 1 {
		if newNS&bit == 0 {
			continue
		}
		c, err := seccomp.MakeCondition(0, seccomp.CompareMaskedEqual, bit, bit)
		if err != nil {
			return nil, err
		}
		if err := f.AddRuleConditional(clone, eperm, []seccomp.ScmpCondition{c}); err != nil {
			return nil, fmt.Errorf("seccomp: rule clone: %w", err)
		}
	}
	prog, err := exportBPF(f)
	if err != nil {
		return nil, err
	}
	return progBytes(prog), nil
}
