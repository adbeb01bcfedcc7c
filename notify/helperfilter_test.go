package notify

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

const (
	retErrnoEPERM  = 0x00050000 | uint32(unix.EPERM)
	retErrnoENOSYS = 0x00050000 | uint32(unix.ENOSYS)
)

func helperProg(t *testing.T) []unix.SockFilter {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the helper filter is checked for x86_64")
	}
	raw, err := HelperProgram()
	if err != nil {
		t.Fatalf("HelperProgram: %v", err)
	}
	prog, err := progFromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkOpcodes(t, prog, retErrnoEPERM, retErrnoENOSYS)
	return prog
}

func nr(t *testing.T, name string) int32 {
	t.Helper()
	n, err := seccomp.GetSyscallFromName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return int32(n)
}

// helperDangerous are calls no FUSE helper may ever make: they reach
// beyond the helper's own process and files (mounts, namespaces, other
// processes, the kernel, keyrings, devices, the clock) or are large attack
// surface it does not need (bpf, perf, io_uring, userfaultfd).
var helperDangerous = []string{
	"mount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
	"open_tree", "mount_setattr", "pivot_root", "chroot", "setns", "unshare",
	"clone3", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open",
	"pidfd_getfd", "pidfd_send_signal", "kcmp", "kill", "tkill",
	"kexec_load", "kexec_file_load", "init_module", "finit_module",
	"delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
	"request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "open_by_handle_at", "name_to_handle_at", "mknod",
	"mknodat", "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl",
	"quotactl_fd", "personality", "iopl", "ioperm", "settimeofday",
	"clock_settime", "clock_adjtime", "adjtimex", "sethostname",
	"setdomainname", "fanotify_init", "inotify_init1", "move_pages",
	"migrate_pages", "mbind", "set_mempolicy", "setuid", "setgid",
	"setreuid", "setresuid", "setresgid", "setgroups", "capset", "seccomp",
	"vmsplice", "memfd_create", "memfd_secret", "landlock_create_ruleset",
	"lookup_dcookie", "uselib", "ustat", "sysfs", "_sysctl",
	"socketcall", "vhangup", "modify_ldt", "lsm_set_self_attr",
}

func TestHelperAllowListHasNoDangerousCall(t *testing.T) {
	for _, name := range HelperAllowed {
		if slices.Contains(helperDangerous, name) {
			t.Errorf("%s is in the helper's allow-list", name)
		}
	}
	if slices.Contains(HelperPrctls, unix.PR_SET_DUMPABLE) {
		t.Error("PR_SET_DUMPABLE is allowed: the container could ptrace its helper")
	}
	for _, cmd := range HelperIoctls {
		if cmd&0xff00 == 0x4c00 || cmd == BlkRRPart || cmd == BlkPG {
			t.Errorf("ioctl %#x (loop, BLKRRPART or BLKPG) is allowed", cmd)
		}
	}
	prog := helperProg(t)
	for _, name := range helperDangerous {
		n, err := seccomp.GetSyscallFromName(name)
		if err != nil || n < 0 {
			continue // not an x86_64 call (i386 only)
		}
		want := retErrnoEPERM
		if name == "clone3" {
			want = retErrnoENOSYS
		}
		for _, a := range [][6]uint64{{}, {1, 2, 3, 4, 5, 6}, {^uint64(0), ^uint64(0)}} {
			if got := run(t, prog, int32(n), archX86_64, a); got != want {
				t.Errorf("%s%v: %s, want %#x", name, a, retName(got), want)
			}
		}
	}
}

func TestHelperFilterAllowed(t *testing.T) {
	prog := helperProg(t)
	for _, name := range HelperAllowed {
		if got := run(t, prog, nr(t, name), archX86_64, [6]uint64{1, 2, 3}); got != retAllow {
			t.Errorf("%s: %s, want ALLOW", name, retName(got))
		}
	}
}

func TestHelperFilterArguments(t *testing.T) {
	prog := helperProg(t)
	const (
		blkGetSize64    = 0x80081272
		fuseDevIocClone = 0x8004e500
		cloneThread     = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
			unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID |
			unix.CLONE_CHILD_CLEARTID
		fork = unix.CLONE_CHILD_CLEARTID | unix.CLONE_CHILD_SETTID | uint64(unix.SIGCHLD)
	)
	cases := []struct {
		name string
		args [6]uint64
		want uint32
	}{
		{"ioctl", [6]uint64{3, blkGetSize64}, retAllow},
		{"ioctl", [6]uint64{3, 0xffffffff00000000 | blkGetSize64}, retAllow}, // the kernel reads 32 bits
		{"ioctl", [6]uint64{3, fuseDevIocClone}, retAllow},
		{"ioctl", [6]uint64{3, unix.TCGETS}, retAllow},
		{"ioctl", [6]uint64{3, LoopCtlAdd}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, LoopCtlRemove}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, LoopCtlGetFree}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, LoopSetFD}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, LoopConfigure}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, BlkRRPart}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, BlkPG}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, unix.TIOCSTI}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, unix.FS_IOC_SETFLAGS}, retErrnoEPERM},
		{"ioctl", [6]uint64{3, 0}, retErrnoEPERM},
		{"clone", [6]uint64{cloneThread}, retAllow},
		{"clone", [6]uint64{fork}, retAllow},
		{"clone", [6]uint64{fork | unix.CLONE_NEWUSER}, retErrnoEPERM},
		{"clone", [6]uint64{fork | unix.CLONE_NEWNS}, retErrnoEPERM},
		{"clone", [6]uint64{cloneThread | unix.CLONE_NEWNET}, retErrnoEPERM},
		{"clone", [6]uint64{unix.CLONE_NEWTIME}, retErrnoEPERM},
		{"clone", [6]uint64{unix.CLONE_NEWCGROUP}, retErrnoEPERM},
		{"clone3", [6]uint64{}, retErrnoENOSYS},
		{"socket", [6]uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_STREAM}, retErrnoEPERM},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW}, retErrnoEPERM},
		{"socket", [6]uint64{0x100000000 | unix.AF_UNIX}, retAllow}, // int domain
		{"socketpair", [6]uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		{"socketpair", [6]uint64{unix.AF_INET, unix.SOCK_STREAM}, retErrnoEPERM},
		{"prctl", [6]uint64{unix.PR_GET_DUMPABLE}, retAllow},
		{"prctl", [6]uint64{unix.PR_SET_DUMPABLE, 1}, retErrnoEPERM},
		{"prctl", [6]uint64{unix.PR_SET_NO_NEW_PRIVS, 0}, retErrnoEPERM},
		{"prctl", [6]uint64{unix.PR_CAP_AMBIENT}, retErrnoEPERM},
		{"prctl", [6]uint64{unix.PR_SET_SECCOMP}, retErrnoEPERM},
		{"mount", [6]uint64{}, retErrnoEPERM},
	}
	for _, c := range cases {
		if got := run(t, prog, nr(t, c.name), archX86_64, c.args); got != c.want {
			t.Errorf("%s(%#x): %s, want %#x", c.name, c.args[:2], retName(got), c.want)
		}
	}
}

// Only the native ABI: a helper's call through int 0x80 (i386) or the
// x32 ABI is refused whatever it is, even a call the native list allows.
func TestHelperFilterForeignABI(t *testing.T) {
	prog := helperProg(t)
	for _, n := range []int32{0, 1, 3, 20, nrIoctl32, nrLchown32, 120, 0x40000000 | 39, 0x7fffffff} {
		for _, arch := range []uint32{archI386, archARM64, 0} {
			if got := run(t, prog, n, arch, [6]uint64{}); got != retErrnoEPERM {
				t.Errorf("arch %#x nr %d: %s, want EPERM", arch, n, retName(got))
			}
		}
	}
	// x32: AUDIT_ARCH_X86_64 with bit 30 in the number.
	for _, n := range []int32{x32Bit | 39, x32Bit, x32Bit | 1, nrIoctlX32, x32Bit | 165} {
		if got := run(t, prog, n, archX86_64, [6]uint64{3, 0x80081272}); got != retErrnoEPERM {
			t.Errorf("x32 nr %#x: %s, want EPERM", n, retName(got))
		}
	}
	// Unknown native numbers (past the table) are refused too.
	for _, n := range []int32{999, 0x3fffffff, -1} {
		if got := run(t, prog, n, archX86_64, [6]uint64{}); got != retErrnoEPERM {
			t.Errorf("nr %d: %s, want EPERM", n, retName(got))
		}
	}
}

// A program under the helper filter on the real kernel (testdata/
// helperprobe.c, installed as fusejail.c installs it) makes calls outside
// the list and gets EPERM (clone3 ENOSYS) where, without the filter, the
// same calls succeed or fail otherwise; the calls the list allows give the
// answers they give without it.
func TestHelperFilterProbe(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probe is x86_64 (int 0x80, x32)")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	raw, err := HelperProgram()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "helperprobe")
	if out, err := exec.Command(cc, "-O2", "-o", bin, "testdata/helperprobe.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	probe := func(args ...string) map[string]int {
		cmd := exec.Command(bin, args...)
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helperprobe %v: %v\n%s", args, err, out)
		}
		res := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, e, ok := strings.Cut(l, " ")
			n, err := strconv.Atoi(e)
			if !ok || err != nil {
				t.Fatalf("helperprobe: %q", l)
			}
			res[name] = n
		}
		return res
	}
	free, filtered := probe(), probe("filter")
	allowed := []string{"getpid", "socket_unix", "ioctl_blkgetsize64", "prctl_get_dumpable"}
	if len(free) != len(filtered) || len(free) < 10 {
		t.Fatalf("unfiltered %v, filtered %v", free, filtered)
	}
	for name, got := range filtered {
		want := int(unix.EPERM)
		switch {
		case slices.Contains(allowed, name):
			want = free[name]
		case name == "clone3":
			want = int(unix.ENOSYS)
		}
		if got != want {
			t.Errorf("%s under the filter: errno %d, want %d (without the filter: %d)", name, got, want, free[name])
		}
		if !slices.Contains(allowed, name) && free[name] == want {
			t.Logf("%s gives errno %d without the filter too: this host cannot tell", name, want)
		}
	}
}
