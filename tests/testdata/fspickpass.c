/* fspickpass: a reconfiguration context passed to another process over a
 * unix socket (SCM_RIGHTS), one line per step ("NAME OK" or
 * "NAME ERRNONAME").
 *
 *   fspickpass recv SOCKET FLAG   listen on SOCKET (mode 0777), take one
 *                                 descriptor, show what it is, then
 *                                 fsconfig(FSCONFIG_SET_FLAG, FLAG),
 *                                 FSCONFIG_CMD_RECONFIGURE, fsmount and
 *                                 FSCONFIG_CMD_CREATE on it; answer one byte
 *   fspickpass send SOCKET MNT    fspick(MNT), send the context, wait for the
 *                                 answer
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/mount.h>

#include "report.h"

int main(int argc, char **argv) {
	if (argc != 4)
		return 2;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[2]);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 1;
	char byte = 1;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	if (!strcmp(argv[1], "recv")) {
		unlink(a.sun_path);
		if (report("listen", bind(s, (struct sockaddr *)&a, sizeof a) < 0 || chmod(a.sun_path, 0777) < 0 || listen(s, 1) < 0 ? -1 : 0) < 0)
			return 1;
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (report("accept", c) < 0 || report("recvmsg", recvmsg(c, &m, MSG_CMSG_CLOEXEC)) <= 0)
			return 1;
		struct cmsghdr *h = CMSG_FIRSTHDR(&m);
		if (!h || h->cmsg_type != SCM_RIGHTS)
			return 1;
		int fd;
		memcpy(&fd, CMSG_DATA(h), sizeof fd);
		char proc[64], what[256] = "";
		snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(proc, what, sizeof what - 1);
		printf("received %s\n", n > 0 ? what : "?");
		report("set", syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, argv[3], NULL, 0));
		report("reconfigure", syscall(SYS_fsconfig, fd, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
		report("fsmount", syscall(SYS_fsmount, fd, FSMOUNT_CLOEXEC, 0));
		report("create", syscall(SYS_fsconfig, fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
		return write(c, &byte, 1) == 1 ? 0 : 1;
	}
	int p = (int)report("fspick", syscall(SYS_fspick, AT_FDCWD, argv[3], FSPICK_CLOEXEC));
	if (p < 0 || report("connect", connect(s, (struct sockaddr *)&a, sizeof a)) < 0)
		return 1;
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &p, sizeof p);
	if (report("sendmsg", sendmsg(s, &m, 0)) < 0)
		return 1;
	return read(s, &byte, 1) == 1 ? 0 : 1;
}
