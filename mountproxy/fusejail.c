/*
 * fusejail: starts a FUSE helper for a container, with the container's
 * confinement or less, never the supervisor's. Runs before the Go runtime
 * (setns and unshare need a single-threaded process), in a re-execution of
 * loopvisor with _LOOPVISOR_FUSEJAIL=1 in the environment.
 *
 * Steps (the launcher L starts as host root in the host's namespaces):
 *  1. Wait for the supervisor's "go" byte on fd 10: by then it has moved L
 *     into the container's cgroups, so everything L starts counts there.
 *  2. Clone (open_tree) the four host objects the jail needs and the
 *     container must not reach by path: the helper's device node (fd 6,
 *     owned by the container's root, 0600 or 0400), a /dev/fuse node
 *     (fd 7), and execute-only copies (mode 0111, host root's) of the
 *     helper (fd 12) and of loopvisor, which serves as fusermount
 *     (fd 13). A process that runs a program it cannot read has memory
 *     the kernel makes non-dumpable and owned by the host's user
 *     namespace, so the container cannot ptrace the helper, read its
 *     memory or reach its fds and jail through /proc.
 *  3. Drop supplementary groups (host root's) and, still host root,
 *     unshare(CLONE_NEWNS): a mount namespace owned by the initial user
 *     namespace, which the container can neither enter nor remount. A
 *     tmpfs over /tmp becomes the jail: the files listed on fd 11 (the
 *     helper, loopvisor, the libraries ldd names for them and libgcc_s,
 *     which glibc loads for pthread_cancel) read-only, nosuid, nodev, each
 *     at its own path; /etc/ld.so.cache;
 *     /dev/{null,zero,full,random,urandom}, /dev/fuse and the device node
 *     (/dev/DEVNAME); an empty /mnt; fusermount and fusermount3 replaced
 *     by loopvisor. pivot_root into it; the host's tree is detached.
 *  4. Join the caller's net, ipc, uts, cgroup, pid and time namespaces
 *     where they differ from ours, then its user namespace, become its
 *     root (uid/gid 0 there) and open /dev/fuse.
 *  5. Fork Q into the caller's mount namespace (owned by the container's
 *     user namespace) and root: it makes the FUSE superblock with
 *     fsopen/fsconfig (so the superblock belongs to the container's user
 *     namespace: device nodes in the image never open), source
 *     /dev/DEVNAME, subtype SUBTYPE, fsmounts it detached with ATTRS and
 *     reports the mount id.
 *  6. Fork the helper H into the container's pid namespace: fd 3 is the
 *     /dev/fuse fd, fd 5 a pipe fusermount writes a byte to when called,
 *     stdio /dev/null + L's stderr, every other fd closed,
 *     empty environment but PATH, no_new_privs, every capability dropped
 *     (SECBIT_NOROOT locked: exec gives uid 0 no capabilities), the
 *     seccomp program read from fd 8 (built by the supervisor), then exec
 *     of the host's helper binary with argv from the supervisor. libfuse
 *     cannot mount (no capability, and the filter answers EPERM), so it
 *     runs "fusermount", which is loopvisor: it passes fd 3 back over
 *     _FUSE_COMMFD, exactly as the real fusermount would pass a new mount.
 *  7. Q's fstatfs on the detached mount returns once the helper has
 *     answered INIT and STATFS, and fails (ENOTCONN) if it died on the
 *     image; then Q attaches it on TARGET (resolved in the caller's root
 *     and cwd). The mount appears in the container only once the helper
 *     serves it.
 *     With an empty TARGET (the new mount API) Q stops after
 *     FSCONFIG_CMD_CREATE: it sends the created context over the unix
 *     socket on fd 14 (the supervisor hands it to the caller, whose own
 *     fsmount makes the mount), reports mount id 0 and exits.
 *  8. Report "mounted MNTID HELPERPID MAJOR:MINOR" (the mount's id and
 *     its superblock's device number) on fd 9 (kept open until exit),
 *     wait for H (woken by SIGCHLD) and exit with its status. SIGTERM
 *     and SIGINT are passed on to H; H dies with L (PDEATHSIG), and L with
 *     the supervisor unless _LOOPVISOR_NSEXEC_KEEP=1.
 * Any failure: "error ERRNO STEP" on fd 9, exit 120.
 *
 * argv: loopvisor-fusejail NSFLAGS TARGET DEVNAME SUBTYPE SOURCE ATTRS RO
 *       -- HELPER ARGS...
 *   NSFLAGS  CLONE_NEW* bits (decimal) of the non-user namespaces to join
 *   ATTRS    MOUNT_ATTR_* bits (decimal) for fsmount
 *   RO       1: superblock read-only
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int status_fd = 9;

static void jfail(int err, const char *step) {
	dprintf(status_fd, "error %d %s\n", err, step);
	dprintf(2, "loopvisor fusejail: %s: %s\n", step, strerror(err));
	_exit(120);
}

static int j_open_tree(int dfd, const char *path, unsigned flags) {
	return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int j_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags) {
	return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int j_fsopen(const char *fs, unsigned flags) { return (int)syscall(SYS_fsopen, fs, flags); }

static int j_fsconfig(int fd, unsigned cmd, const char *key, const void *val, int aux) {
	return (int)syscall(SYS_fsconfig, fd, cmd, key, val, aux);
}

static int j_fsmount(int fd, unsigned flags, unsigned attrs) { return (int)syscall(SYS_fsmount, fd, flags, attrs); }

static int j_mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *attr) {
	return (int)syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(*attr));
}

/* clone_file returns a detached bind mount of the object at fd. */
static int clone_fd(int fd, const char *what) {
	int m = j_open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (m < 0)
		jfail(errno, what);
	return m;
}

/* put attaches the detached mount m on path (created as an empty file). */
static void put_file(int m, const char *path) {
	int f = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0)
		jfail(errno, path);
	close(f);
	if (j_move_mount(m, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		jfail(errno, path);
	close(m);
}

/* put_program is put for a program: read-only, nosuid, nodev. */
static void put_program(int m, const char *path) {
	put_file(m, path);
	struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
	if (j_mount_setattr(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, &a) < 0)
		jfail(errno, path);
}

/* bind_file binds the host file src (symlinks followed: a regular file, or
 * a character device when dev_ok) read-only and nosuid, and nodev unless
 * dev_ok, on dst, created as an empty file. A missing src is skipped; a
 * dst that exists already (listed twice) is left alone. */
static void bind_file(const char *src, const char *dst, int dev_ok) {
	struct stat st;
	if (stat(src, &st) < 0 || !(S_ISREG(st.st_mode) || (dev_ok && S_ISCHR(st.st_mode))))
		return;
	int f = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0 && errno == EEXIST)
		return;
	if (f < 0)
		jfail(errno, dst);
	close(f);
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		jfail(errno, src);
	struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (dev_ok ? 0 : MOUNT_ATTR_NODEV)};
	if (j_mount_setattr(AT_FDCWD, dst, AT_SYMLINK_NOFOLLOW, &a) < 0)
		jfail(errno, dst);
}

/* mkdir_parents creates the directories of relative path p (not p). */
static void mkdir_parents(const char *p) {
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", p) >= (int)sizeof(buf))
		jfail(ENAMETOOLONG, p);
	for (char *s = strchr(buf, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			jfail(errno, buf);
		*s = '/';
	}
}

/* fake_fusermount puts the loopvisor binary (detached mount exe) at
 * .loopvisor/fusermount, then binds it wherever else libfuse may look for
 * fusermount or fusermount3 (the host's real one is setuid root). */
static void fake_fusermount(int exe) {
	static const char *const names[] = {".loopvisor/fusermount3", "usr/bin/fusermount", "usr/bin/fusermount3",
					    "bin/fusermount", "bin/fusermount3", "usr/local/bin/fusermount",
					    "usr/local/bin/fusermount3"};
	if (mkdir(".loopvisor", 0755) < 0)
		jfail(errno, "mkdir .loopvisor");
	put_program(exe, ".loopvisor/fusermount");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct stat st;
		if (i == 0) {
			int f = open(names[i], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0755);
			if (f < 0)
				jfail(errno, names[i]);
			close(f);
		} else if (lstat(names[i], &st) < 0 || !S_ISREG(st.st_mode)) {
			continue;
		}
		if (mount(".loopvisor/fusermount", names[i], NULL, MS_BIND, NULL) < 0)
			jfail(errno, names[i]);
	}
}

/* drop_caps leaves the process with no capability now or after exec. */
static void drop_caps(void) {
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
					 SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
					 SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) < 0)
		jfail(errno, "securebits");
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			jfail(errno, "capbset");
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &h, d) < 0)
		jfail(errno, "capset");
}

static char *read_all(int fd, size_t *len) {
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			jfail(errno, "read filter");
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*len = n;
	return buf;
}

/* sendfd passes fd over the unix socket sock with one byte, as
 * fusermount passes a FUSE fd: 0, or -1 with errno set. */
static int sendfd(int sock, int fd) {
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	while (sendmsg(sock, &msg, 0) < 0)
		if (errno != EINTR)
			return -1;
	return 0;
}

/* fusermount_main is loopvisor run as fusermount inside a jail: it hands
 * libfuse the FUSE fd its helper was started with (fd 3). */
static void fusermount_main(int argc, char **argv) {
	const char *comm = getenv("_FUSE_COMMFD");
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-u") || !strcmp(argv[i], "--unmount"))
			_exit(0); /* the supervisor unmounts */
	if (!comm) {
		fprintf(stderr, "fusermount (loopvisor): mounts are made by the supervisor\n");
		_exit(1);
	}
	struct stat st;
	if (fstat(3, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 229)) {
		fprintf(stderr, "fusermount (loopvisor): fd 3 is not the FUSE device\n");
		_exit(1);
	}
	struct stat rst;
	if (fstat(5, &rst) == 0 && S_ISFIFO(rst.st_mode)) {
		/* Nobody reads it for a mount(2): EPIPE, not SIGPIPE. */
		signal(SIGPIPE, SIG_IGN);
		char r = 1;
		while (write(5, &r, 1) < 0 && errno == EINTR)
			;
	}
	if (sendfd(atoi(comm), 3) < 0) {
		perror("fusermount (loopvisor): sendmsg");
		_exit(1);
	}
	_exit(0);
}

/* send_fd passes fd m to the supervisor over the unix socket on fd 14. */
static void send_fd(int m) {
	if (sendfd(14, m) < 0)
		jfail(errno, "send context");
}

static void jail_main(int argc, char **argv) {
	if (argc < 10 || strcmp(argv[8], "--"))
		jfail(EINVAL, "usage");
	int nsflags = atoi(argv[1]);
	const char *target = argv[2], *devname = argv[3], *subtype = argv[4], *source = argv[5];
	unsigned attrs = (unsigned)strtoul(argv[6], NULL, 10);
	int ro = !strcmp(argv[7], "1");
	char **hargv = argv + 9;
	const char *keep = getenv("_LOOPVISOR_NSEXEC_KEEP");
	int die_with_parent = !(keep && !strcmp(keep, "1"));
	if (die_with_parent)
		prctl(PR_SET_PDEATHSIG, SIGKILL);

	/* 1. cgroups first */
	char go;
	for (;;) {
		ssize_t r = read(10, &go, 1);
		if (r == 1)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		jfail(r == 0 ? ECANCELED : errno, "wait for supervisor");
	}
	close(10);

	/* 2. host objects, cloned while we are host root */
	int node = clone_fd(6, "clone device node");
	int fusenode = clone_fd(7, "clone fuse node");
	/* The programs the helper runs: execute-only copies owned by host
	 * root (see execonly.go), so that the kernel makes the helper's
	 * memory the host's and the container cannot trace it. */
	int helperx = clone_fd(12, "clone helper");
	int exe = clone_fd(13, "clone fusermount");
	close(6);
	close(7);
	close(12);
	close(13);
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		jfail(errno, "open /dev/null");
	size_t flen;
	char *fbuf = read_all(8, &flen);
	close(8);
	size_t fileslen;
	char *files = read_all(11, &fileslen);
	close(11);
	files = realloc(files, fileslen + 1);
	files[fileslen] = 0;
	if (flen == 0 || flen % sizeof(struct sock_filter))
		jfail(EINVAL, "seccomp program");

	/* 3. the jail: a mount namespace owned by the initial user namespace,
	 * built while we are host root, so that the container (which can
	 * see the helper's /proc entry) can neither enter it nor remount it. */
	if (setgroups(0, NULL) < 0)
		jfail(errno, "setgroups");
	if (unshare(CLONE_NEWNS) < 0)
		jfail(errno, "unshare mount");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		jfail(errno, "make / private");
	if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") < 0)
		jfail(errno, "mount jail tmpfs");
	if (chdir("/tmp") < 0)
		jfail(errno, "chdir jail");
	if (mkdir("etc", 0755) < 0 || mkdir("dev", 0755) < 0 || mkdir("mnt", 0755) < 0 || mkdir("tmp", 0755) < 0 ||
	    chmod("tmp", 01777) < 0)
		jfail(errno, "mkdir jail");
	/* The helper first, at the path it is exec'd by: the execute-only
	 * copy (the readable original listed below is then skipped). */
	if (hargv[0][0] != '/' || strstr(hargv[0], "/../"))
		jfail(EINVAL, "helper path");
	mkdir_parents(hargv[0] + 1);
	put_program(helperx, hargv[0] + 1);
	/* Only the files the helper (and fusermount, which is loopvisor) runs
	 * with: the binaries and the libraries they load, each at its own
	 * path, read-only. The container, which can look into the jail
	 * through the helper's /proc entry, sees nothing else of the host. */
	for (char *line = files; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		if (line[0] == '/' && !strstr(line, "/../")) {
			mkdir_parents(line + 1);
			bind_file(line, line + 1, 0);
		}
		line = nl ? nl + 1 : NULL;
	}
	bind_file("/etc/ld.so.cache", "etc/ld.so.cache", 0);
	static const char *const devs[] = {"null", "zero", "full", "random", "urandom"};
	for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
		char src[64], dst[64];
		snprintf(src, sizeof(src), "/dev/%s", devs[i]);
		snprintf(dst, sizeof(dst), "dev/%s", devs[i]);
		bind_file(src, dst, 1);
	}
	char devpath[256];
	if (strchr(devname, '/') || snprintf(devpath, sizeof(devpath), "dev/%s", devname) >= (int)sizeof(devpath))
		jfail(EINVAL, "device name");
	put_file(node, devpath);
	put_file(fusenode, "dev/fuse");
	fake_fusermount(exe);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		jfail(errno, "pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		jfail(errno, "detach host tree");
	if (chdir("/") < 0)
		jfail(errno, "chdir /");

	/* 4. the container's namespaces and its root */
	if (nsflags && setns(3, nsflags) < 0)
		jfail(errno, "setns");
	if (setns(3, CLONE_NEWUSER) < 0)
		jfail(errno, "setns user");
	if (setresgid(0, 0, 0) < 0)
		jfail(errno, "setresgid");
	if (setresuid(0, 0, 0) < 0)
		jfail(errno, "setresuid");
	/* Whatever fs.suid_dumpable says: Q and the helper until its exec
	 * must not be traceable by the container (our memory belongs to the
	 * host's user namespace, as we were exec'd as host root). */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		jfail(errno, "dumpable");
	/* Opened as the container's root: the FUSE superblock must belong to
	 * the user namespace the fd was opened in. */
	int fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse < 0)
		jfail(errno, "open /dev/fuse");

	/* 5. Q makes the FUSE superblock in the caller's mount namespace (owned
	 * by the container's user namespace: the superblock is then the
	 * container's and device nodes in the image never open), waits until
	 * the helper serves it and attaches it on the target. */
	int qp[2];
	if (pipe2(qp, O_CLOEXEC) < 0)
		jfail(errno, "pipe");
	pid_t q = fork();
	if (q < 0)
		jfail(errno, "fork attach");
	if (q == 0) {
		close(qp[0]);
		if (setns(3, CLONE_NEWNS) < 0)
			jfail(errno, "setns mount");
		if (fchdir(4) < 0 || chroot(".") < 0 || fchdir(5) < 0)
			jfail(errno, "enter caller's root");
		int fs = j_fsopen("fuse", FSOPEN_CLOEXEC);
		if (fs < 0)
			jfail(errno, "fsopen fuse");
		char num[32];
		snprintf(num, sizeof(num), "%d", fuse);
		if (j_fsconfig(fs, FSCONFIG_SET_STRING, "fd", num, 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_STRING, "rootmode", "40000", 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_STRING, "user_id", "0", 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_STRING, "group_id", "0", 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_FLAG, "allow_other", NULL, 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_FLAG, "default_permissions", NULL, 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_STRING, "source", source, 0) < 0 ||
		    j_fsconfig(fs, FSCONFIG_SET_STRING, "subtype", subtype, 0) < 0)
			jfail(errno, "fsconfig fuse");
		if (ro && j_fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0)
			jfail(errno, "fsconfig ro");
		if (j_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			jfail(errno, "fsconfig create");
		if (!*target) {
			/* The new mount API: the created context goes to the
			 * caller, whose own fsmount makes the mount. */
			close(fuse);
			send_fd(fs);
			dprintf(qp[1], "0 0:0\n"); /* no mount yet, so no device to name */
			_exit(0);
		}
		int mnt = j_fsmount(fs, FSMOUNT_CLOEXEC, attrs);
		if (mnt < 0)
			jfail(errno, "fsmount");
		close(fs);
		/* Only the helper may hold the FUSE device: if it dies, the
		 * connection aborts and fstatfs fails instead of waiting. */
		close(fuse);
		struct statx sx;
		if (statx(mnt, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) < 0)
			jfail(errno, "statx mount");
		dprintf(qp[1], "%llu %u:%u\n", (unsigned long long)sx.stx_mnt_id, sx.stx_dev_major, sx.stx_dev_minor);
		close(qp[1]);
		struct statfs sf;
		while (fstatfs(mnt, &sf) < 0) {
			if (errno != EINTR)
				jfail(errno, "helper did not serve the mount");
		}
		if (j_move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			jfail(errno, "move_mount");
		_exit(0);
	}
	close(qp[1]);
	char idbuf[64];
	ssize_t idn = read(qp[0], idbuf, sizeof(idbuf) - 1);
	close(qp[0]);
	if (idn <= 0) {
		close(fuse);
		int qst;
		while (waitpid(q, &qst, 0) < 0 && errno == EINTR)
			;
		_exit(120); /* Q reported */
	}
	idbuf[idn] = 0;
	char *devp = NULL;
	unsigned long long mntid = strtoull(idbuf, &devp, 10);
	unsigned dmaj = 0, dmin = 0;
	if (!devp || sscanf(devp, " %u:%u", &dmaj, &dmin) != 2)
		jfail(EIO, "mount id");

	/* 6. the helper */
	int errp[2], readyp[2];
	if (pipe2(errp, O_CLOEXEC) < 0 || pipe2(readyp, O_CLOEXEC) < 0)
		jfail(errno, "pipe");
	pid_t h = fork();
	if (h < 0)
		jfail(errno, "fork helper");
	if (h == 0) {
		status_fd = errp[1];
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (dup2(fuse, 3) != 3 || dup2(devnull, 0) != 0 || dup2(devnull, 1) != 1)
			jfail(errno, "dup2");
		int keepfd = errp[1];
		if (keepfd != 4) {
			if (dup3(keepfd, 4, O_CLOEXEC) < 0)
				jfail(errno, "dup3");
			status_fd = 4;
		}
		/* fd 5: fusermount (loopvisor) writes a byte here once the
		 * helper asks for its FUSE fd, i.e. has opened the image. */
		if (dup2(readyp[1], 5) != 5)
			jfail(errno, "dup2 ready");
		syscall(SYS_close_range, 6, ~0U, 0);
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			jfail(errno, "no_new_privs");
		drop_caps();
		struct sock_fprog prog = {.len = (unsigned short)(flen / sizeof(struct sock_filter)),
					  .filter = (struct sock_filter *)fbuf};
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
			jfail(errno, "seccomp");
		char *envp[] = {"PATH=/.loopvisor:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
		execve(hargv[0], hargv, envp);
		jfail(errno, "exec helper");
	}
	close(errp[1]);
	close(readyp[1]);
	close(devnull);
	close(fuse);
	free(fbuf);
	/* A helper that failed before exec says why on errp. */
	char ebuf[128];
	ssize_t en = read(errp[0], ebuf, sizeof(ebuf) - 1);
	close(errp[0]);
	if (en > 0) {
		ebuf[en] = 0;
		kill(q, SIGKILL);
		dprintf(status_fd, "%s", ebuf);
		_exit(120);
	}

	/* The new mount API's create returns before anything is attached, so
	 * it cannot wait for the helper to serve: it waits until the helper
	 * has opened and accepted the image and asks for its FUSE fd (the
	 * caller may close its loop device then: the helper holds it), or
	 * has exited (the image is refused, as the kernel would refuse it). */
	if (!*target) {
		char r;
		ssize_t rn;
		do
			rn = read(readyp[0], &r, 1);
		while (rn < 0 && errno == EINTR);
		if (rn != 1) {
			kill(q, SIGKILL);
			kill(h, SIGKILL);
			jfail(EINVAL, "helper did not serve the mount");
		}
	}
	close(readyp[0]);

	/* 7. Q reports whether the helper served and the mount is attached */
	int qst;
	while (waitpid(q, &qst, 0) < 0)
		if (errno != EINTR)
			jfail(errno, "wait attach");
	if (!WIFEXITED(qst) || WEXITSTATUS(qst) != 0) {
		kill(h, SIGKILL);
		_exit(120); /* Q reported */
	}
	close(3);
	close(4);
	close(5);
	dprintf(status_fd, "mounted %llu %d %u:%u\n", mntid, (int)h, dmaj, dmin);
	/* status_fd stays open until we exit: its EOF tells the supervisor
	 * the helper is gone without a thread blocked in wait. */

	/* 9. live as long as the helper: SIGCHLD says at once when it is
	 * gone (umount waits for that), the timeout is a safety net. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		/* Reap first: a helper that died before SIGCHLD was blocked
		 * left no signal pending. */
		int st;
		pid_t r = waitpid(h, &st, WNOHANG);
		if (r == h) {
			if (WIFEXITED(st))
				_exit(WEXITSTATUS(st));
			_exit(128 + WTERMSIG(st));
		}
		if (r < 0 && errno != EINTR)
			_exit(121);
		struct timespec ts = {1, 0};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			kill(h, sig);
	}
}

__attribute__((constructor)) static void loopvisor_fusejail(int argc, char **argv) {
	const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : (argc > 0 ? argv[0] : "");
	if (!strcmp(base, "fusermount") || !strcmp(base, "fusermount3"))
		fusermount_main(argc, argv);
	const char *op = getenv("_LOOPVISOR_FUSEJAIL");
	if (!op)
		return;
	jail_main(argc, argv);
}
