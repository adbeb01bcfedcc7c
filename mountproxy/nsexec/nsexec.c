/*
 * nsexec: the part of loopvisor that must run before the Go runtime starts.
 *
 * setns(2) into a mount namespace fails in a multithreaded process, and every
 * Go process is one. When loopvisor re-executes itself with _LOOPVISOR_NSEXEC
 * in the environment, this constructor joins the sandbox's namespaces while
 * the process is still single-threaded, becomes the sandbox's root (never
 * host root), does one small job and exits; Go's main never runs.
 *
 * Protocol (file descriptors set up by mountproxy/nsexec.go):
 *   fd 3  pidfd of a task of the sandbox: its user and mount namespaces
 *   fd 4  the caller's root directory (O_PATH, from /proc/PID/root)
 *   fd 5  the caller's working directory (O_PATH, from /proc/PID/cwd)
 *   fd 6  a detached mount (op "move" only)
 *   env   _LOOPVISOR_NSEXEC=OP
 *   argv  loopvisor-nsexec ARGS...
 * Ops:
 *   move TARGET         attach fd 6 on TARGET (move_mount)
 *   lockmove TARGET SET attach fd 6 on TARGET with its flags locked, as
 *                       if the sandbox had inherited it, then MOUNT_ATTR_*
 *                       bits SET (ro, noexec, nosymfollow only) set on it,
 *                       not locked (see lockmove())
 *   umount TARGET FLAGS umount2(TARGET, FLAGS)
 *   bind TARGET         attach fd 6 on TARGET, creating TARGET as an empty
 *                       file if it does not exist (a device node for /dev)
 *   unbind TARGET       detach what is mounted on TARGET and remove it
 *   loopioctl PID CMD ARG
 *                       ioctl(fd 6, CMD, ...) with the credentials of task
 *                       PID (the caller) in its user namespace, not in its
 *                       mount namespace: the argument is what stdin holds
 *                       (a loop_config or loop_info64, read to EOF) or, when
 *                       stdin is empty, ARG; a backing file is fd 7. The
 *                       loop driver asks the backing file's getattr for its
 *                       size as the calling task, and a FUSE file system
 *                       owned by the container answers only tasks of its
 *                       user namespace (host root gets EACCES, and the
 *                       device size 0).
 *   remountbind TARGET FLAGS
 *                       mount(NULL, TARGET, NULL, MS_REMOUNT|MS_BIND|FLAGS)
 *   clonemount SRC ID TARGET SET CLR
 *                       attach a private clone of the mount at SRC (its
 *                       mount id must be ID) on TARGET, with MOUNT_ATTR_*
 *                       bits CLR cleared and SET set (see clonemount())
 *   kcreate NAME MAJOR MINOR
 *                       FSCONFIG_CMD_CREATE of the file system context on
 *                       fd 6 (its source already /dev/NAME) as host root,
 *                       with /dev/NAME a block node MAJOR:MINOR on a tmpfs
 *                       /dev of a private mount namespace (see kcreate());
 *                       no caller namespaces: fds 3-5 are not used
 * FUSE helpers are started by fusejail.c, not here.
 * Result: "0" on stdout; an error is "ERRNO STEP" on stdout (nsexec.Error
 * in Go), a message on stderr and exit status 120.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif

static void die(int err, const char *what) {
	dprintf(1, "%d %s\n", err, what);
	dprintf(2, "nsexec: %d %s: %s\n", err, what, strerror(err));
	_exit(120);
}

/* drop_groups drops host root's supplementary groups: first, because
 * inside a user namespace whose setgroups is denied they could no longer be
 * dropped. */
static void drop_groups(void) {
	if (setgroups(0, NULL) < 0)
		die(errno, "setgroups");
}

/* become_caller makes the process the sandbox's root (never host root),
 * chrooted to the caller's root (fd 4) in its cwd (fd 5). Preconditions:
 * in the sandbox's user and mount namespaces. */
static void become_caller(void) {
	if (setresgid(0, 0, 0) < 0)
		die(errno, "setresgid");
	if (setresuid(0, 0, 0) < 0)
		die(errno, "setresuid");
	if (getuid() != 0 || geteuid() != 0)
		die(EPERM, "not the sandbox's root");
	if (fchdir(4) < 0)
		die(errno, "fchdir root");
	if (chroot(".") < 0)
		die(errno, "chroot");
	if (fchdir(5) < 0)
		die(errno, "fchdir cwd");
	close(3);
	close(4);
	close(5);
}

static void enter(void) {
	drop_groups();
	if (setns(3, CLONE_NEWUSER | CLONE_NEWNS) < 0)
		die(errno, "setns");
	become_caller();
}

/* attach moves the detached mount on fd 6 onto the target fd t (from
 * open(2); < 0 is its error) and ends the process. */
static void attach(int t) {
	if (t < 0)
		die(errno, "open target");
	if (syscall(SYS_move_mount, 6, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		die(errno, "move_mount");
	dprintf(1, "0\n");
	_exit(0);
}

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef MOUNT_ATTR_NODEV
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef MOUNT_ATTR_NOEXEC
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef MOUNT_ATTR_NOSYMFOLLOW
#define MOUNT_ATTR_NOSYMFOLLOW 0x00200000
#endif
struct lv_mount_attr {
	unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

/* unlocked_attrs are the flags lockmove sets after the locked copy: the
 * caller's to clear again, as on the host. */
#define UNLOCKED_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSYMFOLLOW)

/*
 * lockmove attaches the detached mount on fd 6 (made by host root, e.g. with
 * fsmount) on target in the sandbox's mount namespace with the flags it has
 * on fd 6 locked: the sandbox cannot remount it without nosuid or nodev
 * (when set), nor change its atime flags, exactly as for a mount it
 * inherited. set (MOUNT_ATTR_RDONLY, _NOEXEC, _NOSYMFOLLOW) is then set on
 * the mount before it is attached, not locked: the sandbox may clear those
 * again with a remount, as host root may on the host, and the mount is
 * never attached without them.
 *
 * The kernel sets MNT_LOCK_* only when it copies mounts into a mount
 * namespace owned by a less privileged user namespace (copy_mnt_ns ->
 * lock_mnt_tree) or propagates them into one; a mount moved in by host root
 * is not locked. lock_mnt_tree locks each flag the mount has then (ro,
 * nodev, nosuid, noexec) and always its atime flags. So: attach the mount in
 * a private mount namespace of our own (still the host's user namespace),
 * join the sandbox's user namespace, unshare the mount namespace again (the
 * copy belongs to the sandbox's user namespace: every copied mount is
 * locked), clone the locked copy with open_tree (lock flags are part of the
 * mount's flags and survive the clone), set set on the clone (with
 * CAP_SYS_ADMIN over our mount namespace, owned by the sandbox's user
 * namespace; only setting, so the locks are not in the way), join the
 * sandbox's mount namespace and attach the clone. An idmapping must be set
 * on fd 6 before: mount_setattr refuses to idmap an attached mount, and the
 * copy and the clone keep it.
 * Preconditions: single-threaded, host root, fds 3-6 as for "move".
 */
static void lockmove(const char *target, unsigned long long set) {
	if (set & ~(unsigned long long)UNLOCKED_ATTRS)
		die(EINVAL, "flags to set");
	if (unshare(CLONE_NEWNS) < 0)
		die(errno, "unshare mount namespace");
	/* Nothing done here may propagate to the host's mount table. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die(errno, "make / rprivate");
	if (syscall(SYS_move_mount, 6, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) < 0)
		die(errno, "move_mount to the private namespace");
	/* unshare carries the cwd over to the copy of its mount. */
	if (fchdir(6) < 0)
		die(errno, "fchdir mount");
	close(6);
	drop_groups();
	if (setns(3, CLONE_NEWUSER) < 0)
		die(errno, "setns user");
	if (unshare(CLONE_NEWNS) < 0)
		die(errno, "unshare mount namespace in the sandbox's user namespace");
	int m = syscall(SYS_open_tree, AT_FDCWD, ".", OPEN_TREE_CLONE | O_CLOEXEC);
	if (m < 0)
		die(errno, "open_tree");
	/* Check that the kernel locked it: clearing nodev must fail. */
	struct lv_mount_attr a = {.attr_clr = MOUNT_ATTR_NODEV};
	if (syscall(SYS_mount_setattr, m, "", AT_EMPTY_PATH, &a, sizeof a) == 0)
		die(EPERM, "the kernel did not lock the mount's flags");
	if (errno != EPERM)
		die(errno, "mount_setattr check");
	if (set) {
		struct lv_mount_attr s = {.attr_set = set};
		if (syscall(SYS_mount_setattr, m, "", AT_EMPTY_PATH, &s, sizeof s) < 0)
			die(errno, "mount_setattr");
	}
	if (setns(3, CLONE_NEWNS) < 0)
		die(errno, "setns mount");
	become_caller();
	int t = open(target, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t < 0)
		die(errno, "open target");
	if (syscall(SYS_move_mount, m, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		die(errno, "move_mount");
	dprintf(1, "0\n");
	_exit(0);
}

/* task_ids are what /proc/PID/status says of a task's credentials, as
 * seen from our user namespace: real, effective, saved and fs uids and
 * gids, and its effective capabilities. */
struct task_ids {
	unsigned u[4], g[4];
	unsigned long long eff;
};

/* status_field finds "\nKEY" in a status text and parses what follows. */
static const char *status_field(const char *buf, const char *key) {
	const char *l = strstr(buf, key);
	if (!l)
		die(ESRCH, "parse status");
	return l + strlen(key);
}

/* read_task_ids reads /proc/PID/status once. */
static void read_task_ids(const char *pid, struct task_ids *t) {
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%s/status", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(errno, "open status");
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		die(n < 0 ? errno : ESRCH, "read status");
	buf[n] = 0;
	if (sscanf(status_field(buf, "\nUid:"), "%u %u %u %u", &t->u[0], &t->u[1], &t->u[2], &t->u[3]) != 4 ||
	    sscanf(status_field(buf, "\nGid:"), "%u %u %u %u", &t->g[0], &t->g[1], &t->g[2], &t->g[3]) != 4 ||
	    sscanf(status_field(buf, "\nCapEff:"), "%llx", &t->eff) != 1)
		die(ESRCH, "parse status");
}

/* become_ids takes the task's uids and gids (groups already dropped).
 * setfs[ug]id return the old value, never an error. */
static void become_ids(const struct task_ids *t) {
	if (setresgid(t->g[0], t->g[1], t->g[2]) < 0)
		die(errno, "setresgid");
	setfsgid(t->g[3]);
	if (setresuid(t->u[0], t->u[1], t->u[2]) < 0)
		die(errno, "setresuid");
	setfsuid(t->u[3]);
}

static void loopioctl(char **argv) {
	const char *pid = argv[1];
	unsigned long cmd = strtoul(argv[2], NULL, 0);
	unsigned long arg = strtoul(argv[3], NULL, 0);
	char buf[512];
	size_t len = 0;
	for (;;) {
		ssize_t r = read(0, buf + len, sizeof(buf) - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die(errno, "read argument");
		if (r == 0)
			break;
		len += (size_t)r;
		if (len == sizeof(buf))
			die(E2BIG, "argument");
	}
	drop_groups();
	if (setns(3, CLONE_NEWUSER) < 0)
		die(errno, "setns");
	struct task_ids t;
	read_task_ids(pid, &t);
	become_ids(&t);
	close(3);
	close(4);
	close(5);
	int r = len ? ioctl(6, cmd, buf) : ioctl(6, cmd, arg);
	if (r < 0)
		die(errno, "ioctl");
	dprintf(1, "0\n");
	_exit(0);
}

#ifndef AT_STATX_DONT_SYNC
#define AT_STATX_DONT_SYNC 0x4000
#endif

/*
 * clonemount makes another mount of the file system mounted at src, as
 * the kernel does for a second mount(2) of a block device that already
 * has a superblock: same files, its own flags, its own propagation (a
 * clone would otherwise join src's peer group). src must still be the
 * mount the supervisor chose (id): a container that moved it in the
 * meantime gets ESTALE, never another mount. No request reaches the file
 * system (the FUSE helper may be the container's to stall).
 * Preconditions: in the caller's namespaces and root (enter()).
 */
static void clonemount(const char *src, unsigned long long id, const char *target, unsigned long long set,
		       unsigned long long clr) {
	int s = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s < 0)
		die(errno, "open source mount");
	struct statx sx;
	if (statx(s, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &sx) < 0)
		die(errno, "statx source mount");
	if (!(sx.stx_mask & STATX_MNT_ID) || sx.stx_mnt_id != id)
		die(ESTALE, "source mount changed");
	int m = syscall(SYS_open_tree, s, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | O_CLOEXEC);
	if (m < 0)
		die(errno, "open_tree");
	struct lv_mount_attr a = {.attr_set = set, .attr_clr = clr, .propagation = MS_PRIVATE};
	if (syscall(SYS_mount_setattr, m, "", AT_EMPTY_PATH, &a, sizeof a) < 0)
		die(errno, "mount_setattr");
	int t = open(target, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t < 0)
		die(errno, "open target");
	if (syscall(SYS_move_mount, m, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		die(errno, "move_mount");
	dprintf(1, "0\n");
	_exit(0);
}

/*
 * lookup looks path up exactly as the caller (pid) would: in its user
 * namespace, from its root and cwd, with its uids, gids and effective
 * capabilities (not host root's), and reports the errno of an
 * O_PATH open. The supervisor resolves paths as host root; what a caller
 * may learn of a path (ENOENT against EACCES) must be what its own lookup
 * says. Preconditions: host root, fds 3-5.
 */
static void lookup(char **argv) {
	const char *pid = argv[1];
	int follow = atoi(argv[3]);
	drop_groups();
	if (setns(3, CLONE_NEWUSER) < 0)
		die(errno, "setns");
	struct task_ids ids;
	read_task_ids(pid, &ids);
	if (fchdir(4) < 0)
		die(errno, "fchdir root");
	if (chroot(".") < 0)
		die(errno, "chroot");
	if (fchdir(5) < 0)
		die(errno, "fchdir cwd");
	become_ids(&ids);
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{.effective = (unsigned)ids.eff, .permitted = (unsigned)ids.eff},
		{.effective = (unsigned)(ids.eff >> 32), .permitted = (unsigned)(ids.eff >> 32)},
	};
	if (syscall(SYS_capset, &h, d) < 0)
		die(errno, "capset");
	int t = open(argv[2], O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	if (t < 0)
		die(errno, "lookup");
	dprintf(1, "0\n");
	_exit(0);
}

#ifndef FSCONFIG_CMD_CREATE
#define FSCONFIG_CMD_CREATE 6
#endif

/*
 * devices_cgroup writes the path of this process's cgroup v1 devices
 * hierarchy (below /sys/fs/cgroup/devices) to dir, or returns 0 when there
 * is none (a cgroup v2 only host).
 */
static int devices_cgroup(char *dir, size_t n) {
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[4096];
	int found = 0;
	while (f && !found && fgets(line, sizeof line, f)) {
		char *c = strchr(line, ':');
		if (!c || strncmp(c + 1, "devices:", 8) != 0)
			continue;
		c[9 + strcspn(c + 9, "\n")] = 0;
		found = snprintf(dir, n, "/sys/fs/cgroup/devices%s", c + 9) < (int)n;
	}
	if (f)
		fclose(f);
	if (found && access(dir, W_OK) != 0)
		found = 0;
	return found;
}

static void put(const char *dir, const char *file, const char *val) {
	char p[4200];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, strlen(val)) < 0)
		die(errno, "device cgroup");
	close(fd);
}

/*
 * kcreate creates the superblock of the file system context on fd 6 (made
 * by the supervisor with fsopen, its parameters set, its source
 * "/dev/NAME") as host root, with /dev/NAME a node of the serving loop
 * device MAJOR:MINOR. The kernel looks the source up at the create
 * (get_tree_bdev: lookup_bdev in the creating task's root) and keeps the
 * same string as the mount's name (fsmount: mnt_devname, mountinfo's
 * source); so the mount shows the name the sandbox knows (/dev/loopNpM
 * for a partition, whose serving device is another loopK) without a node
 * in the host's /dev. The node lives on a tmpfs mounted over /dev in a
 * private mount namespace of this process only (not nodev: lookup_bdev
 * refuses nodes on nodev mounts), and goes with it. The supervisor does
 * the fsmount afterwards on its own copy of the context.
 * Preconditions: single-threaded, host root.
 */
static void kcreate(const char *name, const char *maj, const char *min, const char *how) {
	size_t n = strlen(name);
	if (n < 5 || n > 32 || strncmp(name, "loop", 4) != 0 || strspn(name + 4, "0123456789p") != n - 4)
		die(EINVAL, "device name");
	char path[48];
	snprintf(path, sizeof(path), "/dev/%s", name);
	if (unshare(CLONE_NEWNS) < 0)
		die(errno, "unshare mount namespace");
	/* Nothing done here may propagate to the host's mount table. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die(errno, "make / rprivate");
	if (mount("loopvisor-kcreate", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0700,size=64k,nr_inodes=8") < 0)
		die(errno, "mount tmpfs on /dev");
	if (mknod(path, S_IFBLK | 0600, makedev(strtoul(maj, NULL, 10), strtoul(min, NULL, 10))) < 0)
		die(errno, "mknod");
	/* The file system reads the image (the container's) and may open
	 * other block devices by the numbers it finds there (ext4's external
	 * journal: s_journal_dev), as host root: opening a loop minor that does
	 * not exist creates it (block device autoloading). Where the host has a
	 * devices cgroup (v1), the create runs in a child cgroup that allows
	 * the serving device only; the others get EPERM before they are looked
	 * up. With "bpf" the supervisor started this process into a cgroup v2
	 * whose device program allows the serving device only
	 * (devcgroup.NewConfined): it is confined already. With "v1" the
	 * host has cgroup v2 but the supervisor could not start this process
	 * in such a cgroup (a limit reached, the cgroup removed: possibly the
	 * container's doing): without a v1 devices hierarchy the create
	 * fails rather than run unconfined. */
	char parent[4096], dir[4200];
	int bpf = !strcmp(how, "bpf"), v1 = !bpf && devices_cgroup(parent, sizeof parent);
	if (!v1 && !strcmp(how, "v1"))
		die(EAGAIN, "device cgroup");
	if (!v1) {
		if (syscall(SYS_fsconfig, 6, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			die(errno, "create");
		dprintf(1, "0\n");
		_exit(0);
	}
	snprintf(dir, sizeof dir, "%s/loopvisor-kcreate-%d", parent, getpid());
	if (mkdir(dir, 0700) < 0)
		die(errno, "device cgroup");
	pid_t c = fork();
	if (c < 0) {
		rmdir(dir);
		die(errno, "fork");
	}
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char rule[96];
		snprintf(rule, sizeof rule, "b %lu:%lu rw", strtoul(maj, NULL, 10), strtoul(min, NULL, 10));
		put(dir, "devices.deny", "a");
		put(dir, "devices.allow", rule);
		put(dir, "cgroup.procs", "0");
		if (syscall(SYS_fsconfig, 6, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			die(errno, "create");
		dprintf(1, "0\n");
		_exit(0);
	}
	int st = 0;
	while (waitpid(c, &st, 0) < 0 && errno == EINTR)
		;
	rmdir(dir);
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 120);
}

__attribute__((constructor)) static void loopvisor_nsexec(int argc, char **argv) {
	const char *op = getenv("_LOOPVISOR_NSEXEC");
	if (!op)
		return;
	unsetenv("_LOOPVISOR_NSEXEC");
	if (argc < 2)
		die(EINVAL, "usage");
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (!strcmp(op, "move")) {
		enter();
		attach(open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC));
	}
	if (!strcmp(op, "lockmove") && argc >= 3)
		lockmove(argv[1], strtoull(argv[2], NULL, 10));
	if (!strcmp(op, "bind")) {
		enter();
		int t = open(argv[1], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (t < 0 && errno == ENOENT) {
			int c = open(argv[1], O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
			if (c < 0)
				die(errno, "create target");
			close(c);
			t = open(argv[1], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		}
		attach(t);
	}
	if (!strcmp(op, "unbind")) {
		enter();
		while (umount2(argv[1], MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			;
		if (unlink(argv[1]) < 0 && errno != ENOENT)
			die(errno, "unlink");
		dprintf(1, "0\n");
		_exit(0);
	}
	if (!strcmp(op, "lookup") && argc >= 4)
		lookup(argv);
	if (!strcmp(op, "loopioctl") && argc >= 4)
		loopioctl(argv);
	if (!strcmp(op, "clonemount") && argc >= 6) {
		enter();
		clonemount(argv[1], strtoull(argv[2], NULL, 10), argv[3], strtoull(argv[4], NULL, 10),
			   strtoull(argv[5], NULL, 10));
	}
	if (!strcmp(op, "kcreate") && argc >= 4)
		kcreate(argv[1], argv[2], argv[3], argc >= 5 ? argv[4] : "");
	if (!strcmp(op, "remountbind") && argc >= 3) {
		enter();
		if (mount(NULL, argv[1], NULL, MS_REMOUNT | MS_BIND | strtoul(argv[2], NULL, 10), NULL) < 0)
			die(errno, "remount");
		dprintf(1, "0\n");
		_exit(0);
	}
	if (!strcmp(op, "umount") && argc >= 3) {
		enter();
		if (umount2(argv[1], atoi(argv[2])) < 0)
			die(errno, "umount2");
		dprintf(1, "0\n");
		_exit(0);
	}
	die(EINVAL, "unknown op");
}
