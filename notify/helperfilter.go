package notify

import (
	"fmt"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// HelperAllowed are the system calls a FUSE helper may make, without
// argument checks. The list was measured (strace -f, and the filter in
// log mode under the acceptance tests) for the supported helpers, fuse2fs
// 1.47 (libfuse2), fusefat (libfuse2) and squashfuse (libfuse3), serving
// reads, writes, large files, directories, renames, links, symlinks,
// xattrs and umount, plus what the dynamic loader and glibc do at start and
// loopvisor does as fusermount inside the jail (see mountproxy/fusejail.c);
// then widened only by variants glibc may pick instead (the fstat family,
// dup3, pipe2, ppoll, readv, the sleeps and clocks the vDSO misses) and by
// what glibc does on paths the workload did not reach (rt_sigreturn and
// restart_syscall after a signal, abort's tgkill, sysconf's
// sched_getaffinity and sysinfo, close_range, waitid, getcwd, shutdown).
// Everything here acts on the helper's own memory, threads, signals and fds,
// or on files its jail holds. Calls with argument checks are in
// HelperProgram (ioctl, clone, socket, socketpair, prctl).
var HelperAllowed = []string{
	// files and fds
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
	"pwritev", "preadv2", "pwritev2", "lseek", "close", "openat", "open",
	"newfstatat", "fstat", "stat", "lstat", "getdents64", "access",
	"faccessat", "faccessat2", "readlink", "readlinkat", "statfs", "fstatfs",
	"fsync", "fdatasync", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2",
	"poll", "ppoll", "getcwd", "chdir", "umask", "close_range",
	// memory
	"brk", "mmap", "munmap", "mprotect", "mremap", "madvise",
	// threads and processes (clone is in HelperProgram)
	"futex", "set_robust_list", "get_robust_list", "set_tid_address",
	"rseq", "arch_prctl", "execve", "exit", "exit_group", "wait4",
	"waitid", "getpid", "gettid", "getppid", "tgkill", "sched_yield",
	"sched_getaffinity", "prlimit64", "getrlimit",
	// signals
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "restart_syscall",
	// ids
	"getuid", "geteuid", "getgid", "getegid", "setfsuid", "setfsgid",
	// information and time
	"uname", "getrandom", "sysinfo", "clock_gettime", "clock_getres",
	"gettimeofday", "nanosleep", "clock_nanosleep",
	// unix sockets: fusermount hands libfuse the FUSE fd (socket and
	// socketpair, AF_UNIX only, are in HelperProgram)
	"connect", "sendmsg", "recvmsg", "shutdown",
}

// HelperIoctls are the only ioctl commands a helper may issue: the
// block-device queries fuse2fs and squashfuse make on the device they
// serve (size, sector sizes, read-only, discard) and the discard and
// zero-out of its own blocks fuse2fs's unix I/O manager can issue,
// FUSE_DEV_IOC_CLONE (libfuse3's clone_fd) and TCGETS (isatty).
var HelperIoctls = []uint64{
	0x80081272, // BLKGETSIZE64
	0x1260,     // BLKGETSIZE
	0x1268,     // BLKSSZGET
	0x127b,     // BLKPBSZGET
	0x125e,     // BLKROGET
	0x127c,     // BLKDISCARDZEROES
	0x1277,     // BLKDISCARD
	0x127f,     // BLKZEROOUT
	0x8004e500, // FUSE_DEV_IOC_CLONE
	unix.TCGETS,
}

// HelperPrctls are the prctl operations a helper may use: e2fsprogs asks
// PR_GET_DUMPABLE; glibc and libfuse name threads. PR_SET_DUMPABLE in
// particular stays refused: it would undo the non-dumpable memory that
// keeps the container from ptracing its helper (mountproxy/execonly.go).
var HelperPrctls = []uint64{unix.PR_GET_DUMPABLE, unix.PR_SET_NAME, unix.PR_GET_NAME}

// helperENOSYS answer ENOSYS, which makes glibc fall back: clone3 to clone
// (whose flags the filter can see, clone3's are behind a pointer).
var helperENOSYS = []string{"clone3"}

// helperNewNS are the clone flags that make namespaces.
const helperNewNS = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// HelperProgram builds the seccomp program every FUSE helper runs under,
// an allow-list: HelperAllowed; ioctl only with a HelperIoctls command;
// clone only without namespace flags; socket and socketpair only AF_UNIX;
// prctl only HelperPrctls. clone3 answers ENOSYS (glibc then uses clone),
// every other call EPERM, not a kill: a helper's rare error path (an
// unusual call glibc makes on a full disk, a locale, a core-dump attempt)
// should fail that one operation and be reported on the mount, not take
// the container's file system down with SIGSYS. Only the native ABI is
// allowed: the helpers are x86_64 programs, so a call through the i386
// (int 0x80) or x32 ABI is always EPERM. That includes mount and every
// namespace call: libfuse then runs "fusermount", which is loopvisor.
func HelperProgram() ([]byte, error) {
	f, err := helperFilter()
	if err != nil {
		return nil, err
	}
	defer f.Release()
	prog, err := exportBPF(f)
	if err != nil {
		return nil, err
	}
	return progBytes(prog), nil
}

func helperFilter() (*seccomp.ScmpFilter, error) {
	eperm := seccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	f, err := seccomp.NewFilter(eperm)
	if err != nil {
		return nil, fmt.Errorf("seccomp: new filter: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Release()
		}
	}()
	// No other arch is added: libseccomp then answers the bad-arch
	// action for i386 and for x32 (native arch, nr with bit 30).
	if err := f.SetBadArchAction(eperm); err != nil {
		return nil, fmt.Errorf("seccomp: bad-arch action: %w", err)
	}
	rule := func(name string, act seccomp.ScmpAction, conds ...seccomp.ScmpCondition) error {
		nr, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			return fmt.Errorf("seccomp: %s: %w", name, err)
		}
		if len(conds) == 0 {
			err = f.AddRule(nr, act)
		} else {
			err = f.AddRuleConditional(nr, act, conds)
		}
		if err != nil {
			return fmt.Errorf("seccomp: rule %s: %w", name, err)
		}
		return nil
	}
	for _, name := range HelperAllowed {
		if err := rule(name, seccomp.ActAllow); err != nil {
			return nil, err
		}
	}
	for _, name := range helperENOSYS {
		if err := rule(name, seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))); err != nil {
			return nil, err
		}
	}
	// One rule per value: libseccomp ORs rules of the same call.
	eq := func(name string, arg uint, mask uint64, values ...uint64) error {
		for _, v := range values {
			c, err := seccomp.MakeCondition(arg, seccomp.CompareMaskedEqual, mask, v)
			if err != nil {
				return err
			}
			if err := rule(name, seccomp.ActAllow, c); err != nil {
				return err
			}
		}
		return nil
	}
	// ioctl's command is an unsigned int: the kernel ignores the high half.
	if err := eq("ioctl", 1, 0xffffffff, HelperIoctls...); err != nil {
		return nil, err
	}
	if err := eq("prctl", 0, 0xffffffff, HelperPrctls...); err != nil {
		return nil, err
	}
	if err := eq("clone", 0, helperNewNS, 0); err != nil {
		return nil, err
	}
	for _, name := range []string{"socket", "socketpair"} {
		if err := eq(name, 0, 0xffffffff, unix.AF_UNIX); err != nil {
			return nil, err
		}
	}
	ok = true
	return f, nil
}
