// mountprobe: the timed mount and read loops of `make bench`.
//
// It runs once per set-up (host root, each loopvisor sandbox) and serves
// commands read line by line from stdin, so that the set-up's start-up is not
// measured and the bench can act between commands (drop the page cache,
// which the sandbox cannot). Every command's output ends with a line "ok",
// or "err MESSAGE" if it failed. EOF on stdin ends the probe.
//
// Commands (paths relative to the working directory are fine):
//   cycle N IMG MNT   N times: run `mount -o loop IMG MNT` and `umount MNT`,
//                     timing each cycle with CLOCK_MONOTONIC; prints one line
//                     "cycle NS" per cycle
//   exec ARGV...      run the command ARGV (untimed), e.g. mount or cp
//   read FILE         read FILE from start to end with read(2) into a 1 MiB
//                     buffer; prints "read BYTES NS"
//   fstype MNT        prints "fstype TYPE SOURCE" of the mount on MNT (the
//                     last one in /proc/self/mountinfo)
//   write IMG MNT MIB mount -o loop IMG MNT, write MIB MiB of pseudo-random
//                     bytes to MNT/w.bin with write(2) from a 1 MiB buffer,
//                     close, umount MNT; prints "write BYTES NS", the time
//                     of all of it (umount returns once the data is on the
//                     device: the kernel syncs, a FUSE helper has exited)
//   untar IMG MNT TAR mount -o loop IMG MNT, tar -xf TAR -C MNT, umount MNT;
//                     prints "untar NS", likewise
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

// spawn runs argv (looked up in PATH, its stdout sent to stderr so that it
// cannot garble the protocol) and waits for it; it returns 0 if it exited 0,
// else prints "err ..." and returns -1.
static int spawn(char *const argv[]) {
	static posix_spawn_file_actions_t fa;
	static int fa_ready;
	pid_t pid;
	int st, e;
	if (!fa_ready) {
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, 2, 1);
		fa_ready = 1;
	}
	e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	if (e != 0) {
		printf("err %s: %s\n", argv[0], strerror(e));
		return -1;
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			printf("err waitpid: %s\n", strerror(errno));
			return -1;
		}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	printf("err");
	for (int i = 0; argv[i]; i++)
		printf(" %s", argv[i]);
	if (WIFEXITED(st))
		printf(": exit status %d\n", WEXITSTATUS(st));
	else
		printf(": signal %d\n", WTERMSIG(st));
	return -1;
}

static int cycle(long n, char *img, char *mnt) {
	char *mount_argv[] = {"mount", "-o", "loop", img, mnt, NULL};
	char *umount_argv[] = {"umount", mnt, NULL};
	for (long i = 0; i < n; i++) {
		double t0 = now_ns();
		if (spawn(mount_argv) < 0)
			return -1;
		if (spawn(umount_argv) < 0)
			return -1;
		printf("cycle %.0f\n", now_ns() - t0);
	}
	return 0;
}

static int readfile(const char *path) {
	static char buf[1 << 20];
	long long total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("err open %s: %s\n", path, strerror(errno));
		return -1;
	}
	double t0 = now_ns();
	for (;;) {
		ssize_t r = read(fd, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			printf("err read %s: %s\n", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		total += r;
	}
	double t1 = now_ns();
	close(fd);
	printf("read %lld %.0f\n", total, t1 - t0);
	return 0;
}

static int writefile(char *img, char *mnt, long mib) {
	static char buf[1 << 20];
	static int filled;
	char path[4096];
	char *mount_argv[] = {"mount", "-o", "loop", img, mnt, NULL};
	char *umount_argv[] = {"umount", mnt, NULL};
	if (!filled) {
		unsigned long long x = 0x9e3779b97f4a7c15ULL;
		for (size_t i = 0; i < sizeof buf; i += 8) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(buf + i, &x, 8);
		}
		filled = 1;
	}
	if (snprintf(path, sizeof path, "%s/w.bin", mnt) >= (int)sizeof path) {
		printf("err path too long\n");
		return -1;
	}
	double t0 = now_ns();
	if (spawn(mount_argv) < 0)
		return -1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		printf("err open %s: %s\n", path, strerror(errno));
		spawn(umount_argv);
		return -1;
	}
	long long total = 0;
	for (long i = 0; i < mib; i++) {
		for (size_t off = 0; off < sizeof buf;) {
			ssize_t w = write(fd, buf + off, sizeof buf - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				printf("err write %s: %s\n", path, w < 0 ? strerror(errno) : "short write");
				close(fd);
				spawn(umount_argv);
				return -1;
			}
			off += (size_t)w;
			total += w;
		}
	}
	if (close(fd) < 0) {
		printf("err close %s: %s\n", path, strerror(errno));
		spawn(umount_argv);
		return -1;
	}
	if (spawn(umount_argv) < 0)
		return -1;
	printf("write %lld %.0f\n", total, now_ns() - t0);
	return 0;
}

static int untar(char *img, char *mnt, char *tar) {
	char *mount_argv[] = {"mount", "-o", "loop", img, mnt, NULL};
	char *tar_argv[] = {"tar", "-xf", tar, "-C", mnt, NULL};
	char *umount_argv[] = {"umount", mnt, NULL};
	double t0 = now_ns();
	if (spawn(mount_argv) < 0)
		return -1;
	if (spawn(tar_argv) < 0) {
		spawn(umount_argv);
		return -1;
	}
	if (spawn(umount_argv) < 0)
		return -1;
	printf("untar %.0f\n", now_ns() - t0);
	return 0;
}

// fstype prints the type and source of the topmost mount on mnt.
static int fstype(const char *mnt) {
	char want[4096], line[8192], type[256] = "", source[4096] = "";
	if (!realpath(mnt, want)) {
		printf("err realpath %s: %s\n", mnt, strerror(errno));
		return -1;
	}
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f) {
		printf("err /proc/self/mountinfo: %s\n", strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
		char point[4096], *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 || strcmp(point, want) != 0)
			continue;
		if (sscanf(sep + 3, "%255s %4095s", type, source) != 2)
			continue;
	}
	fclose(f);
	if (!type[0]) {
		printf("err nothing mounted on %s\n", want);
		return -1;
	}
	printf("fstype %s %s\n", type, source);
	return 0;
}

int main(void) {
	char line[4096];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("PATH"))
		setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	while (fgets(line, sizeof line, stdin)) {
		char *f[32];
		int nf = 0;
		for (char *s = strtok(line, " \t\n"); s && nf < 31; s = strtok(NULL, " \t\n"))
			f[nf++] = s;
		f[nf] = NULL;
		if (nf == 0)
			continue;
		int r;
		if (strcmp(f[0], "cycle") == 0 && nf == 4 && atol(f[1]) > 0)
			r = cycle(atol(f[1]), f[2], f[3]);
		else if (strcmp(f[0], "exec") == 0 && nf >= 2)
			r = spawn(f + 1);
		else if (strcmp(f[0], "read") == 0 && nf == 2)
			r = readfile(f[1]);
		else if (strcmp(f[0], "fstype") == 0 && nf == 2)
			r = fstype(f[1]);
		else if (strcmp(f[0], "write") == 0 && nf == 4 && atol(f[3]) > 0)
			r = writefile(f[1], f[2], atol(f[3]));
		else if (strcmp(f[0], "untar") == 0 && nf == 4)
			r = untar(f[1], f[2], f[3]);
		else {
			printf("err unknown command %s\n", f[0]);
			r = -1;
		}
		if (r == 0)
			printf("ok\n");
	}
	return 0;
}
