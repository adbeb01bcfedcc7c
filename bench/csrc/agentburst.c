// agentburst: many "containers" handed to one `loopvisor agent` the way an
// OCI runtime hands them (ContainerProcessState JSON + the seccomp listener
// as SCM_RIGHTS, one connection per process), for `make bench` and the
// exit-burst test (tests/hostile_agent_test.go).
//
// Usage: agentburst AGENT_SOCKET   (as host root), then commands on stdin,
// one per line, each answered with one line on stdout:
//
//   spawn K     start K more containers: each is a child in a new user and
//               mount namespace (root -> host uid 100000, 65536 ids) that
//               loads a filter trapping ioctl(..., LOOP_CTL_GET_FREE) with
//               SECCOMP_FILTER_FLAG_NEW_LISTENER; its listener goes to the
//               agent with status "creating" and id "burst-PID-I".
//               -> "spawned TOTAL"
//   spawnid ID INIT PROC
//               start one more container whose message names id ID,
//               state.pid INIT and pid PROC (-1: the child's own pid; 0: no
//               pid, as crun sends for exec), to try the agent with lying or
//               colliding messages. -> "spawned TOTAL CHILDPID"
//   single N [I] container I (default 0) makes 100 warm-up calls, then N
//               timed trapped calls ioctl(/dev/null, LOOP_CTL_GET_FREE)
//               while the others sit idle.
//               -> "single NS_PER_CALL ERRORS ERRNO_NAME_OF_THE_LAST_CALL"
//   all N       every container makes N trapped calls at once.
//               -> "all TOTAL_CALLS ELAPSED_NS ERRORS"
//   exit        every container exits at once; reaped. -> "exited TOTAL"
//
// A call is counted as an error unless the agent served it: it must fail
// with ENOTTY (the loop driver's answer for /dev/null, which the agent
// computes on its copy of the fd); ENOSYS means no agent serves the filter.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GET_FREE 0x4C82
#define HOST_ID 100000

struct cmd {
	char op; // 's' single, 'a' all, 'x' exit
	int calls;
};

struct res {
	long long ns;
	int errors;
	int last_errno;
};

static const char *sock_path;
static int *sps;    // parent's end of each child's socketpair
static pid_t *pids;
static int n, cap_;

static void die(const char *what) {
	fprintf(stderr, "agentburst: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int full_read(int fd, void *buf, size_t len) {
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static int load_filter(void) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		// the low 32 bits of args[1] (little endian)
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, GET_FREE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static int send_fd(int s, int fd, const char *msg, size_t len) {
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof cbuf);
	struct iovec iov = {(void *)msg, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(s, &m, 0) < 0 ? -1 : 0;
}

static int recv_fd(int s) {
	char b;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&b, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	if (recvmsg(s, &m, 0) <= 0)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

static int calls(int fd, int k, int *errors, int *last) {
	for (int i = 0; i < k; i++) {
		int r = ioctl(fd, GET_FREE, 0);
		*last = r == -1 ? errno : 0;
		if (r != -1 || errno != ENOTTY)
			(*errors)++;
	}
	return 0;
}

// child is one container's process. It never returns.
static void child(int sp) {
	char b = 0;
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
		die("unshare");
	if (write(sp, &b, 1) != 1 || full_read(sp, &b, 1) < 0) // parent writes the id maps
		_exit(1);
	if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0)
		die("become the namespace's root");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / private");
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		die("open /dev/null");
	int lfd = load_filter();
	if (lfd < 0)
		die("seccomp(NEW_LISTENER)");
	if (send_fd(sp, lfd, "L", 1) < 0)
		die("send the listener");
	close(lfd);
	for (;;) {
		struct cmd c;
		if (full_read(sp, &c, sizeof c) < 0 || c.op == 'x')
			_exit(0);
		struct res r = {0, 0, 0};
		if (c.op == 's') {
			calls(null, 100, &r.errors, &r.last_errno);
			r.errors = 0;
		}
		long long t0 = now_ns();
		calls(null, c.calls, &r.errors, &r.last_errno);
		r.ns = now_ns() - t0;
		if (write(sp, &r, sizeof r) != sizeof r)
			_exit(1);
	}
}

static void write_file(pid_t pid, const char *name, const char *text) {
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", pid, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die(path);
	close(fd);
}

static void hand_to_agent(const char *id, int init_pid, int proc_pid, int lfd) {
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, sock_path, sizeof a.sun_path - 1);
	if (s < 0 || connect(s, (void *)&a, sizeof a) < 0)
		die("connect to the agent");
	char msg[512];
	int len = snprintf(msg, sizeof msg,
		"{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":%d,\"metadata\":\"\","
		"\"state\":{\"ociVersion\":\"1.0.2\",\"id\":\"%s\",\"status\":\"%s\",\"pid\":%d,\"bundle\":\"/\"}}",
		proc_pid, id, init_pid == proc_pid && init_pid > 0 ? "creating" : "running", init_pid);
	if (send_fd(s, lfd, msg, len) < 0)
		die("send to the agent");
	close(s);
}

// spawn starts k containers; id NULL: burst-PID-I, each its own init.
static void spawn(int k, const char *id, int init_pid, int proc_pid) {
	char map[64];
	snprintf(map, sizeof map, "0 %d 65536\n", HOST_ID);
	for (int i = 0; i < k; i++) {
		if (n == cap_) {
			cap_ = cap_ ? 2 * cap_ : 64;
			sps = realloc(sps, cap_ * sizeof *sps);
			pids = realloc(pids, cap_ * sizeof *pids);
		}
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			for (int j = 0; j < n; j++)
				close(sps[j]);
			close(sv[0]);
			child(sv[1]);
		}
		close(sv[1]);
		char b;
		if (full_read(sv[0], &b, 1) < 0)
			die("child did not unshare");
		write_file(pid, "uid_map", map);
		write_file(pid, "gid_map", map);
		if (write(sv[0], &b, 1) != 1)
			die("write");
		int lfd = recv_fd(sv[0]);
		if (lfd < 0)
			die("child sent no listener");
		char def[64];
		if (!id) {
			snprintf(def, sizeof def, "burst-%d-%d", getpid(), n);
			hand_to_agent(def, pid, pid, lfd);
		} else {
			hand_to_agent(id, init_pid < 0 ? pid : init_pid, proc_pid < 0 ? pid : proc_pid, lfd);
		}
		close(lfd);
		sps[n] = sv[0];
		pids[n] = pid;
		n++;
	}
	if (id)
		printf("spawned %d %d\n", n, pids[n - 1]);
	else
		printf("spawned %d\n", n);
}

static void run(char op, int from, int to, int k, struct res *sum) {
	struct cmd c = {op, k};
	for (int i = from; i < to; i++)
		if (write(sps[i], &c, sizeof c) != sizeof c)
			die("command a child");
	for (int i = from; i < to; i++) {
		struct res r;
		if (full_read(sps[i], &r, sizeof r) < 0)
			die("child died");
		sum->ns += r.ns;
		sum->errors += r.errors;
		sum->last_errno = r.last_errno;
	}
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: agentburst AGENT_SOCKET < commands\n");
		return 2;
	}
	sock_path = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct rlimit rl = {1 << 16, 1 << 16};
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);
	char line[128];
	while (fgets(line, sizeof line, stdin)) {
		char op[16], id[64];
		int k = 0, i = 0, init_pid = -1, proc_pid = -1;
		if (sscanf(line, "%15s %d %d", op, &k, &i) < 1)
			continue;
		if (!strcmp(op, "spawn")) {
			spawn(k, NULL, 0, 0);
		} else if (!strcmp(op, "spawnid")) {
			if (sscanf(line, "%15s %63s %d %d", op, id, &init_pid, &proc_pid) != 4) {
				fprintf(stderr, "agentburst: spawnid ID INIT PROC\n");
				return 2;
			}
			spawn(1, id, init_pid, proc_pid);
		} else if (!strcmp(op, "single")) {
			if (k < 1 || i < 0 || i >= n) {
				fprintf(stderr, "agentburst: single needs N >= 1 and a container\n");
				return 2;
			}
			struct res r = {0, 0, 0};
			run('s', i, i + 1, k, &r);
			printf("single %.0f %d %s\n", (double)r.ns / k, r.errors, r.last_errno ? strerrorname_np(r.last_errno) : "0");
		} else if (!strcmp(op, "all")) {
			struct res r = {0, 0, 0};
			long long t0 = now_ns();
			run('a', 0, n, k, &r);
			printf("all %lld %lld %d\n", (long long)n * k, now_ns() - t0, r.errors);
		} else if (!strcmp(op, "exit")) {
			struct cmd c = {'x', 0};
			for (int i = 0; i < n; i++)
				if (write(sps[i], &c, sizeof c) < 0) {
				}
			for (int i = 0; i < n; i++) {
				waitpid(pids[i], NULL, 0);
				close(sps[i]);
			}
			printf("exited %d\n", n);
			n = 0;
		} else {
			fprintf(stderr, "agentburst: unknown command %s\n", op);
			return 2;
		}
	}
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	return 0;
}
