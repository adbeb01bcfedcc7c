// setnsdev: what a host-root helper can do inside a runc/crun userns container.
//   setnsdev probe PID      (as host root; PID = container init)
//   setnsdev open PATH...   (inside the container: open PATH O_RDWR, LOOP_CTL_REMOVE -1)
// Build static (it is also copied into the rootfs): gcc -O2 -Wall -static -o setnsdev setnsdev.c
// WARNING: `open` of a /dev/loopN node whose device does not exist creates it on the host
// (CONFIG_BLOCK_LEGACY_AUTOLOAD); only open loop-control or existing devices.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/mount.h>
#include <linux/capability.h>
#include <sys/fsuid.h>

// raise the effective set to the permitted set (setfsuid to non-zero drops CAP_MKNOD & co.)
static int raise_caps(void) {
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0) return -1;
	d[0].effective = d[0].permitted; d[1].effective = d[1].permitted;
	return syscall(SYS_capset, &h, d);
}

#define HOST "/tmp/ocidev/host"

static int sys_open_tree(int dfd, const char *p, unsigned f) { return syscall(SYS_open_tree, dfd, p, f); }
static int sys_move_mount(int fd, const char *fp, int tfd, const char *tp, unsigned f) { return syscall(SYS_move_mount, fd, fp, tfd, tp, f); }
static int sys_fsopen(const char *fs, unsigned f) { return syscall(SYS_fsopen, fs, f); }
static int sys_fsconfig(int fd, unsigned cmd, const char *k, const void *v, int aux) { return syscall(SYS_fsconfig, fd, cmd, k, v, aux); }
static int sys_fsmount(int fd, unsigned f, unsigned a) { return syscall(SYS_fsmount, fd, f, a); }

#define R(what, expr) do { long _r = (long)(expr); printf("%-62s -> %s\n", what, _r < 0 ? strerror(errno) : "ok"); } while (0)

static void grepmounts(const char *needle) {
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[1024];
	while (f && fgets(line, sizeof line, f))
		if (strstr(line, needle)) printf("    mountinfo: %s", line);
	if (f) fclose(f);
}

static void try_open(const char *path) {
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) { printf("    open(%s, O_RDWR) -> %s\n", path, strerror(errno)); return; }
	long r = ioctl(fd, 0x4C81 /* LOOP_CTL_REMOVE */, -1L);
	printf("    open(%s, O_RDWR) -> ok; ioctl(LOOP_CTL_REMOVE, -1) -> %s\n", path, r < 0 ? strerror(errno) : "ok");
	close(fd);
}

static void caps(void) {
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "CapEff", 6) || !strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4)) printf("    %s", line);
	if (f) fclose(f);
}

static int probe(int pid) {
	char p[256];
	// 1. host side: a tmpfs mounted by host root in the initial namespaces, with a loop-control node.
	mkdir(HOST, 0755);
	R("host: mount tmpfs " HOST, mount("tmpfs", HOST, "tmpfs", 0, "mode=0755"));
	R("host: mknod " HOST "/loop-control c 10:237", mknod(HOST "/loop-control", S_IFCHR | 0666, makedev(10, 237)));
	R("host: chmod 0666 (mknod applies the umask)", chmod(HOST "/loop-control", 0666));
	R("host: mkdir " HOST "/block", mkdir(HOST "/block", 0755));
	R("host: symlink block/loop7 -> ../devices/virtual/block/loop7", symlink("../devices/virtual/block/loop7", HOST "/block/loop7"));
	int node = sys_open_tree(AT_FDCWD, HOST "/loop-control", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	R("host: open_tree(OPEN_TREE_CLONE) " HOST "/loop-control", node);
	int devnode = sys_open_tree(AT_FDCWD, "/dev/loop-control", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	R("host: open_tree(OPEN_TREE_CLONE) /dev/loop-control (devtmpfs)", devnode);
	int dir = sys_open_tree(AT_FDCWD, HOST "/block", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	R("host: open_tree(OPEN_TREE_CLONE) " HOST "/block", dir);
	int fsfd = sys_fsopen("tmpfs", FSOPEN_CLOEXEC);
	R("host: fsopen(tmpfs)", fsfd);
	R("host: fsconfig(CMD_CREATE)", sys_fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	int fresh = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	R("host: fsmount -> detached tmpfs (init userns)", fresh);
	// 2. the container's /dev superblock: host root cannot create there (its uid is not mapped in
	// the tmpfs's userns); with fsuid/fsgid = the container's root it can, but the node does not
	// open (SB_I_NODEV on every superblock mounted inside a user namespace).
	snprintf(p, sizeof p, "/proc/%d/root/dev/oci-nodev-test", pid);
	R("host: mknod /proc/PID/root/dev/oci-nodev-test c 1 3 (fsuid 0)", mknod(p, S_IFCHR | 0666, makedev(1, 3)));
	setfsgid(100000); setfsuid(100000);
	R("host: same with setfsuid(100000)/setfsgid(100000)", mknod(p, S_IFCHR | 0666, makedev(1, 3)));
	R("host: capset(effective = permitted), still fsuid 100000", raise_caps());
	R("host: mknod again (CAP_MKNOD in the initial userns)", mknod(p, S_IFCHR | 0666, makedev(1, 3)));
	setfsuid(0); setfsgid(0);
	int t = open(p, O_RDWR);
	R("host: open that node (on the container's /dev tmpfs)", t);
	if (t >= 0) close(t);
	unlink(p);
	snprintf(p, sizeof p, "/proc/%d/root/dev/null", pid);
	t = open(p, O_RDWR);
	R("host: open /proc/PID/root/dev/null (runc's bind of the host node)", t);
	if (t >= 0) close(t);

	pid_t c = fork();
	if (c == 0) {
		char up[64], mp[64];
		snprintf(up, sizeof up, "/proc/%d/ns/user", pid);
		snprintf(mp, sizeof mp, "/proc/%d/ns/mnt", pid);
		int ufd = open(up, O_RDONLY | O_CLOEXEC), mfd = open(mp, O_RDONLY | O_CLOEXEC);
		R("child: setns(user)", setns(ufd, CLONE_NEWUSER));
		R("child: setns(mnt)", setns(mfd, CLONE_NEWNS));
		printf("    after setns: uid=%d (host root is unmapped in the container's userns)\n", (int)getuid());
		R("child: setresgid(0,0,0)", setresgid(0, 0, 0));
		R("child: setresuid(0,0,0)", setresuid(0, 0, 0));
		caps();
		R("child: chdir /", chdir("/"));
		// /dev
		int e = open("/dev/loop-control", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
		R("child: create empty /dev/loop-control", e);
		if (e >= 0) close(e);
		R("child: move_mount(host-tmpfs node clone -> /dev/loop-control)", sys_move_mount(node, "", AT_FDCWD, "/dev/loop-control", MOVE_MOUNT_F_EMPTY_PATH));
		grepmounts("/dev/loop-control");
		try_open("/dev/loop-control");
		e = open("/dev/loop-control2", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
		if (e >= 0) close(e);
		R("child: move_mount(devtmpfs node clone -> /dev/loop-control2)", sys_move_mount(devnode, "", AT_FDCWD, "/dev/loop-control2", MOVE_MOUNT_F_EMPTY_PATH));
		try_open("/dev/loop-control2");
		// old-style bind from a detached tree's fd (a tree cloned in the host's mount ns)
		snprintf(p, sizeof p, "/proc/self/fd/%d", fresh);
		R("child: mount(MS_BIND) /proc/self/fd/<detached tmpfs> -> /mnt", mount(p, "/mnt", NULL, MS_BIND, NULL));
		umount2("/mnt", MNT_DETACH);
		R("child: open_tree(detached fd, \"\", CLONE|AT_EMPTY_PATH)", ({ int x = sys_open_tree(fresh, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | OPEN_TREE_CLOEXEC); if (x >= 0) close(x); x; }));
		R("child: mknod /dev/oci-mknod-test c 10:237 (in the userns)", mknod("/dev/oci-mknod-test", S_IFCHR | 0666, makedev(10, 237)));
		unlink("/dev/oci-mknod-test");
		// /sys
		grepmounts(" /sys ");
		R("child: move_mount(detached host tmpfs -> /sys/block)", sys_move_mount(fresh, "", AT_FDCWD, "/sys/block", MOVE_MOUNT_F_EMPTY_PATH));
		grepmounts("/sys/block");
		R("child: umount2(/sys/block)", umount2("/sys/block", MNT_DETACH));
		R("child: move_mount(host dir clone " HOST "/block -> /sys/block)", sys_move_mount(dir, "", AT_FDCWD, "/sys/block", MOVE_MOUNT_F_EMPTY_PATH));
		grepmounts("/sys/block");
		R("child: readlink /sys/block/loop7", ({ char b[128]; ssize_t l = readlink("/sys/block/loop7", b, sizeof b - 1); if (l >= 0) { b[l] = 0; printf("    /sys/block/loop7 -> %s\n", b); } l; }));
		R("child: umount2(/sys/block)", umount2("/sys/block", MNT_DETACH));
		R("child: mount(tmpfs, /sys/block) made inside the userns", mount("tmpfs", "/sys/block", "tmpfs", MS_NODEV | MS_NOSUID, "mode=0755"));
		grepmounts("/sys/block");
		R("child: umount2(/sys/block)", umount2("/sys/block", MNT_DETACH));
		R("child: mount(/sys/devices/virtual/block, /sys/block, MS_BIND)", mount("/sys/devices/virtual/block", "/sys/block", NULL, MS_BIND, NULL));
		R("child: umount2(/sys/block)", umount2("/sys/block", MNT_DETACH));
		_exit(0);
	}
	int st;
	waitpid(c, &st, 0);
	close(node); close(devnode); close(dir); close(fresh); close(fsfd);
	R("host: umount2(" HOST ", MNT_DETACH)", umount2(HOST, MNT_DETACH));
	rmdir(HOST);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 3 && !strcmp(argv[1], "probe")) return probe(atoi(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "open")) {
		for (int i = 2; i < argc; i++) try_open(argv[i]);
		caps();
		return 0;
	}
	fprintf(stderr, "usage: setnsdev probe PID | setnsdev open PATH...\n");
	return 2;
}
