/* helperprobe: makes system calls a FUSE helper must not make and a few
 * it may, and prints "NAME ERRNO" (0: success) for each. With argument
 * "filter" it first installs the seccomp program read from stdin, as
 * fusejail.c does for a helper (no_new_privs, then the filter). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long r) {
	printf("%s %d\n", name, r < 0 ? errno : 0);
}

/* i386 getpid through int 0x80: the kernel returns -errno in eax. */
static long int80_getpid(void) {
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

int main(int argc, char **argv) {
	if (argc > 1 && !strcmp(argv[1], "filter")) {
		static char buf[65536];
		size_t n = 0;
		ssize_t r;
		while ((r = read(0, buf + n, sizeof(buf) - n)) > 0)
			n += (size_t)r;
		struct sock_fprog prog = {.len = (unsigned short)(n / sizeof(struct sock_filter)),
					  .filter = (struct sock_filter *)buf};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
			perror("seccomp");
			return 1;
		}
	}
	/* refused */
	report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -2L, 0L));
	report("bpf", syscall(SYS_bpf, 1000L, 0L, 0L));
	report("perf_event_open", syscall(SYS_perf_event_open, 0L, 0L, -1L, -1L, 0L));
	report("io_uring_setup", syscall(SYS_io_uring_setup, 0L, 0L));
	report("unshare", syscall(SYS_unshare, 0L));
	report("setns", syscall(SYS_setns, -1L, 0L));
	report("ptrace", syscall(SYS_ptrace, 2L /* PEEKDATA */, 0x3ffffffeL, 0L, 0L));
	report("socket_inet", syscall(SYS_socket, (long)AF_INET, (long)SOCK_DGRAM, 0L));
	report("ioctl_loop_ctl_get_free", syscall(SYS_ioctl, 0L, 0x4C82L));
	report("prctl_set_dumpable", syscall(SYS_prctl, (long)PR_SET_DUMPABLE, 1L, 0L, 0L, 0L));
	report("userfaultfd", syscall(SYS_userfaultfd, 0x7fffffffL));
	report("i386_getpid", int80_getpid());
	report("x32_getpid", syscall(0x40000000L | SYS_getpid));
	report("clone3", syscall(SYS_clone3, 0L, 0L));
	/* allowed */
	report("getpid", syscall(SYS_getpid));
	report("socket_unix", syscall(SYS_socket, (long)AF_UNIX, (long)SOCK_STREAM, 0L));
	report("ioctl_blkgetsize64", syscall(SYS_ioctl, 0L, 0x80081272L, 0L));
	report("prctl_get_dumpable", syscall(SYS_prctl, (long)PR_GET_DUMPABLE, 0L, 0L, 0L, 0L));
	return 0;
}
