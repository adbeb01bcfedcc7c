/* helperprobe: try every way a process has into another process of the
 * same uid, for the hostile helper tests (issue 8: the container must not
 * take over its FUSE helper).
 *
 *   helperprobe PID
 *
 * Prints one line per attempt, "NAME OK" or "NAME ERR <errno>":
 *   attach    PTRACE_ATTACH (then detaches)
 *   seize     PTRACE_SEIZE (then detaches)
 *   vmread    process_vm_readv of one byte at the target's stack pointer
 *             page (read from /proc/PID/stat fails without access, so the
 *             address is the probe's own stack: the kernel checks access
 *             before it looks at the address)
 *   mem       open /proc/PID/mem for reading
 *   root      open /proc/PID/root/ as a directory
 *   fddir     open /proc/PID/fd/ as a directory
 *   fdlink    readlink /proc/PID/fd/0
 *   environ   read /proc/PID/environ
 *   ns        open /proc/PID/ns/mnt (what setns would take)
 *   cwd       open /proc/PID/cwd/ as a directory
 *   getfd     pidfd_getfd of the target's fd 0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, int ok) {
	if (ok)
		printf("%s OK\n", name);
	else
		printf("%s ERR %s\n", name, strerrorname_np(errno));
}

/* opens reports whether /proc/PID/path opens with flags. */
static void opens(const char *name, pid_t pid, const char *path, int flags) {
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/%s", pid, path);
	int fd = open(p, flags | O_CLOEXEC);
	report(name, fd >= 0);
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	pid_t pid = atoi(argv[1]);
	char p[64];

	if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
		report("attach", 1);
		waitpid(pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, pid, 0, 0);
	} else {
		report("attach", 0);
	}
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
		report("seize", 1);
		ptrace(PTRACE_INTERRUPT, pid, 0, 0);
		waitpid(pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, pid, 0, 0);
	} else {
		report("seize", 0);
	}

	char mine = 0, buf = 0;
	struct iovec local = {.iov_base = &buf, .iov_len = 1};
	struct iovec remote = {.iov_base = &mine, .iov_len = 1};
	report("vmread", process_vm_readv(pid, &local, 1, &remote, 1, 0) >= 0 || errno == EFAULT);

	opens("mem", pid, "mem", O_RDONLY);
	opens("root", pid, "root/", O_RDONLY | O_DIRECTORY);
	opens("fddir", pid, "fd/", O_RDONLY | O_DIRECTORY);

	char l[256];
	snprintf(p, sizeof p, "/proc/%d/fd/0", pid);
	report("fdlink", readlink(p, l, sizeof l) >= 0);

	snprintf(p, sizeof p, "/proc/%d/environ", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	int ok = fd >= 0 && read(fd, l, sizeof l) >= 0;
	report("environ", ok);
	if (fd >= 0)
		close(fd);

	opens("ns", pid, "ns/mnt", O_RDONLY);
	opens("cwd", pid, "cwd/", O_RDONLY | O_DIRECTORY);

	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pfd < 0) {
		report("getfd", 0);
	} else {
		int got = (int)syscall(SYS_pidfd_getfd, pfd, 0, 0);
		report("getfd", got >= 0);
		if (got >= 0)
			close(got);
		close(pfd);
	}
	return 0;
}
