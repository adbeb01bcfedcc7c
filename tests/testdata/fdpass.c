/* fdpass: pass an open file to another process over a unix socket, for the
 * hostile tests (issue 8: a node the container opens must not become a
 * capability outside its filter).
 *
 *   fdpass recv SOCK add|remove|getfree IDX
 *       listen on SOCK (mode 0777), print "listening", take one fd
 *       (SCM_RIGHTS), print "rdev MAJ:MIN" of it, then issue
 *       LOOP_CTL_ADD or LOOP_CTL_REMOVE IDX on it: "OK <ret>" or
 *       "ERR <errno>"; getfree issues LOOP_CTL_GET_FREE twice (IDX
 *       unused), one line each (a second call may be recognised)
 *   fdpass send SOCK PATH
 *       open PATH O_RDWR, connect to SOCK and send the fd: "sent"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(const char *what) {
	printf("ERR %s %s\n", what, strerrorname_np(errno));
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 4)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return fail("socket");
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	if (!strcmp(argv[1], "send")) {
		int fd = open(argv[3], O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return fail("open");
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return fail("connect");
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
		if (sendmsg(s, &msg, 0) < 0)
			return fail("sendmsg");
		printf("sent\n");
		return 0;
	}
	if (strcmp(argv[1], "recv") || argc != 5)
		return 2;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(argv[2], 0777) < 0 || listen(s, 1) < 0)
		return fail("listen");
	printf("listening\n");
	int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return fail("accept");
	if (recvmsg(c, &msg, MSG_CMSG_CLOEXEC) < 0)
		return fail("recvmsg");
	struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
	if (!h || h->cmsg_type != SCM_RIGHTS) {
		errno = EBADMSG;
		return fail("no fd");
	}
	int fd;
	memcpy(&fd, CMSG_DATA(h), sizeof(int));
	struct stat st;
	if (fstat(fd, &st) < 0)
		return fail("fstat");
	printf("rdev %u:%u\n", major(st.st_rdev), minor(st.st_rdev));
	if (!strcmp(argv[3], "getfree")) {
		for (int i = 0; i < 2; i++) {
			long r = ioctl(fd, LOOP_CTL_GET_FREE);
			if (r < 0)
				printf("ERR ioctl %s\n", strerrorname_np(errno));
			else
				printf("OK %ld\n", r);
		}
		return 0;
	}
	unsigned long cmd = !strcmp(argv[3], "add") ? LOOP_CTL_ADD : LOOP_CTL_REMOVE;
	long r = ioctl(fd, cmd, atol(argv[4]));
	if (r < 0)
		return fail("ioctl");
	printf("OK %ld\n", r);
	return 0;
}
