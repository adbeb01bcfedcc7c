// Throwaway OCI seccomp agent: dumps ContainerProcessState + fds, answers
// trapped ioctls. Usage: agent SOCKPATH LOGFILE [mode]
//   mode "answer" (default): ioctl with low32(cmd)==0x4C82 -> return 4242; other -> ENOTTY
//   mode "slow": as answer, after sleeping 2 s (signal/WAIT_KILLABLE_RECV test)
//   mode "die": exit right after receiving the first notification (no answer)
// Build: gcc -O2 -Wall -o agent agent.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static FILE *logf;
static const char *mode = "answer";

static void serve(int nfd, int conn_no) {
	struct seccomp_notif req;
	struct seccomp_notif_resp resp;
	for (;;) {
		struct pollfd p = {.fd = nfd, .events = POLLIN};
		if (poll(&p, 1, -1) < 0) { if (errno == EINTR) continue; break; }
		if (p.revents & POLLHUP) { fprintf(logf, "conn %d: listener POLLHUP (no tasks left)\n", conn_no); break; }
		memset(&req, 0, sizeof req);
		if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
			fprintf(logf, "conn %d: NOTIF_RECV: %s\n", conn_no, strerror(errno));
			if (errno == EINTR || errno == ENOENT) continue;
			break;
		}
		fprintf(logf, "conn %d: notif id=%llu pid=%u nr=%d arch=0x%x args=[%#llx %#llx %#llx]\n", conn_no,
			(unsigned long long)req.id, req.pid, req.data.nr, req.data.arch,
			(unsigned long long)req.data.args[0], (unsigned long long)req.data.args[1],
			(unsigned long long)req.data.args[2]);
		if (!strcmp(mode, "die")) { fprintf(logf, "conn %d: dying without answer\n", conn_no); fflush(logf); _exit(0); }
		if (!strcmp(mode, "slow")) sleep(2);
		memset(&resp, 0, sizeof resp);
		resp.id = req.id;
		if ((unsigned int)req.data.args[1] == 0x4C82) resp.val = 4242;
		else resp.error = -ENOTTY;
		if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0)
			fprintf(logf, "conn %d: NOTIF_SEND id=%llu: %s\n", conn_no, (unsigned long long)req.id, strerror(errno));
		else
			fprintf(logf, "conn %d: answered id=%llu val=%lld error=%d\n", conn_no, (unsigned long long)req.id, (long long)resp.val, resp.error);
		fflush(logf);
	}
	fflush(logf);
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	if (argc > 3) mode = argv[3];
	logf = fopen(argv[2], "a");
	setvbuf(logf, NULL, _IOLBF, 0);
	signal(SIGCHLD, SIG_IGN);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
	unlink(argv[1]);
	if (bind(s, (void *)&a, sizeof a) < 0 || listen(s, 16) < 0) { perror("bind/listen"); return 1; }
	fprintf(logf, "listening on %s mode %s\n", argv[1], mode);
	for (int n = 1;; n++) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) { if (errno == EINTR) continue; perror("accept"); return 1; }
		struct ucred cr; socklen_t crl = sizeof cr;
		getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crl);
		char comm[64] = "?", path[64];
		snprintf(path, sizeof path, "/proc/%d/comm", cr.pid);
		FILE *cf = fopen(path, "r"); if (cf) { if (fgets(comm, sizeof comm, cf)) comm[strcspn(comm, "\n")] = 0; fclose(cf); }
		char buf[65536];
		char cbuf[CMSG_SPACE(sizeof(int) * 16)];
		struct iovec iov = {buf, sizeof buf - 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
		ssize_t r = recvmsg(c, &m, MSG_CMSG_CLOEXEC);
		if (r < 0) { fprintf(logf, "conn %d: recvmsg: %s\n", n, strerror(errno)); close(c); continue; }
		buf[r] = 0;
		fprintf(logf, "conn %d: peer pid=%d uid=%d gid=%d comm=%s\n", n, cr.pid, cr.uid, cr.gid, comm);
		fprintf(logf, "conn %d: %zd bytes, msg_flags=%#x: %s\n", n, r, m.msg_flags, buf);
		int fds[16], nfds = 0;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
			fprintf(logf, "conn %d: cmsg level=%d type=%d len=%zu\n", n, h->cmsg_level, h->cmsg_type, (size_t)h->cmsg_len);
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
				int k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				memcpy(fds + nfds, CMSG_DATA(h), k * sizeof(int));
				nfds += k;
			}
		}
		for (int i = 0; i < nfds; i++) {
			char lp[64], tgt[256] = ""; snprintf(lp, sizeof lp, "/proc/self/fd/%d", fds[i]);
			ssize_t l = readlink(lp, tgt, sizeof tgt - 1); if (l > 0) tgt[l] = 0;
			fprintf(logf, "conn %d: fd[%d]=%d -> %s\n", n, i, fds[i], tgt);
		}
		if (nfds > 0 && fork() == 0) { close(s); serve(fds[0], n); _exit(0); }
		for (int i = 0; i < nfds; i++) close(fds[i]);
		// does the runtime send more, or close?
		struct pollfd p = {.fd = c, .events = POLLIN};
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int pr = poll(&p, 1, 3000);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		if (pr > 0) {
			ssize_t k = recv(c, buf, sizeof buf, MSG_DONTWAIT);
			fprintf(logf, "conn %d: after message: recv=%zd (%s) after %ld ms\n", n, k, k == 0 ? "peer closed" : "more data", ms);
		}
		else fprintf(logf, "conn %d: after message: nothing within 3000ms, connection still open\n", n);
		close(c);
	}
}
