// pingfloor: the floor of a trapped call, a seccomp user-notification
// ping-pong in C with nothing but the two ioctls in the supervisor's loop.
//
// Usage: pingfloor FILTER PROBE ARGS...
//
// FILTER is a file holding a BPF program (struct sock_filter[]): the
// bench writes the one a loopvisor sandbox loads (notify.Program), so the
// filter's own cost is the same as in the other set-ups. A child sets
// no_new_privs, loads it with a listener (and
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV where the kernel has it, as
// notify.Install does), passes the listener up over a socketpair and execs
// PROBE ARGS (bench/csrc/probe.c). The parent asks for
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP and then loops: blocking
// SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND with value 0. It exits
// with the probe's status and prints "served N sync_wakeup 0|1" on stderr.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS _IOW('!', 4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static void die(const char *what) {
	fprintf(stderr, "pingfloor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void child(int sock, const char *filter, char **argv) {
	int f = open(filter, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (f < 0 || fstat(f, &st) < 0)
		die("open filter");
	if (st.st_size == 0 || st.st_size % sizeof(struct sock_filter) || st.st_size > 65536) {
		errno = EINVAL;
		die("filter size");
	}
	struct sock_filter *insns = malloc(st.st_size);
	if (read(f, insns, st.st_size) != st.st_size)
		die("read filter");
	close(f);
	struct sock_fprog prog = {.len = st.st_size / sizeof(struct sock_filter), .filter = insns};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("no_new_privs");
	unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
	long lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (lfd < 0 && errno == EINVAL)
		lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (lfd < 0)
		die("seccomp");
	char byte = 'L', cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	int fd = (int)lfd;
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) < 0)
		die("sendmsg");
	close(fd);
	// Exec only once the parent serves: the probe's first call is trapped.
	if (read(sock, &byte, 1) != 1)
		die("wait for the supervisor");
	close(sock);
	execv(argv[0], argv);
	die("exec probe");
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: pingfloor FILTER PROBE ARGS...\n");
		return 2;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		child(sv[1], argv[1], argv + 2);
	}
	close(sv[1]);
	char byte;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	if (recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC) != 1)
		die("no listener from the child");
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS) {
		errno = EPROTO;
		die("no listener from the child");
	}
	int lfd;
	memcpy(&lfd, CMSG_DATA(c), sizeof(int));
	int sync = ioctl(lfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0) == 0;
	if (write(sv[0], "A", 1) != 1)
		die("write");
	close(sv[0]);

	struct seccomp_notif req;
	struct seccomp_notif_resp resp;
	long served = 0;
	for (;;) {
		memset(&req, 0, sizeof(req));
		if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOENT) {
				// A caller gone before we received it, or no task uses
				// the filter any more (the listener hangs up).
				struct pollfd p = {.fd = lfd, .events = POLLIN};
				if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
					break;
				continue;
			}
			die("SECCOMP_IOCTL_NOTIF_RECV");
		}
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
			die("SECCOMP_IOCTL_NOTIF_SEND");
		served++;
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	fprintf(stderr, "served %ld sync_wakeup %d\n", served, sync);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}
