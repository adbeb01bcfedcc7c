/* fspickerrs: fspick(2) and fsconfig(2) on a reconfiguration context, one
 * line per call: "NAME OK" or "NAME ERRNONAME" (and a few states). Run by
 * host root and in a sandbox; the lines must be the same.
 *
 *   fspickerrs MNT TMPFS
 * MNT is the root of a mounted ext4 file system (writable, with
 * lost+found), TMPFS a tmpfs mount point. MNT ends read-write.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/mount.h>

#include "report.h"

static long fspick_(int dfd, const char *p, unsigned f) { return syscall(SYS_fspick, dfd, p, f); }
static long fsopen_(const char *t, unsigned f) { return syscall(SYS_fsopen, t, f); }
static long fsconfig_(int fd, unsigned cmd, const char *k, const void *v, int aux) {
	return syscall(SYS_fsconfig, fd, cmd, k, v, aux);
}
static long fsmount_(int fd, unsigned f, unsigned a) { return syscall(SYS_fsmount, fd, f, a); }

static void state(const char *name, const char *mnt) {
	struct statvfs st;
	char path[4096];
	snprintf(path, sizeof path, "%s/probe-file", mnt);
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	int werr = fd < 0 ? errno : 0;
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	if (statvfs(mnt, &st) != 0) {
		printf("%s statvfs %s\n", name, strerrorname_np(errno));
		return;
	}
	printf("%s sb=%s write=%s\n", name, (st.f_flag & ST_RDONLY) ? "ro" : "rw", werr ? strerrorname_np(werr) : "OK");
	fflush(stdout);
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	const char *mnt = argv[1], *tmpfs = argv[2];
	char sub[4096];
	snprintf(sub, sizeof sub, "%s/lost+found", mnt);

	/* The kernel's errnos for bad input. */
	report("fspick-badflags", fspick_(AT_FDCWD, mnt, 0x100));
	report("fspick-enoent", fspick_(AT_FDCWD, "no-such-dir", 0));
	report("fspick-empty", fspick_(AT_FDCWD, "", 0));
	report("fspick-badfd", fspick_(9999, "", FSPICK_EMPTY_PATH));
	report("fspick-not-root", fspick_(AT_FDCWD, sub, 0));
	if (symlink(mnt, "fspick-link") == 0) {
		int l = report("fspick-symlink", fspick_(AT_FDCWD, "fspick-link", FSPICK_CLOEXEC));
		if (l >= 0)
			close(l);
		report("fspick-symlink-nofollow", fspick_(AT_FDCWD, "fspick-link", FSPICK_SYMLINK_NOFOLLOW));
		unlink("fspick-link");
	}

	/* A context, duplicated and its first descriptor closed: the copy is
	 * the same context. */
	int p = report("fspick", fspick_(AT_FDCWD, mnt, FSPICK_CLOEXEC));
	if (p < 0)
		return 1;
	int d = dup(p);
	close(p);
	report("fsmount-reconf", fsmount_(d, FSMOUNT_CLOEXEC, 0));
	report("create-reconf", fsconfig_(d, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	report("flag-with-value", fsconfig_(d, FSCONFIG_SET_FLAG, "ro", "x", 0));
	report("bad-cmd", fsconfig_(d, 99, NULL, NULL, 0));
	report("key-efault", fsconfig_(d, FSCONFIG_SET_FLAG, (const char *)8, NULL, 0));
	/* A superblock option the host's ext4 takes back unchanged, as
	 * libmount passes mountinfo's. */
	report("errors", fsconfig_(d, FSCONFIG_SET_STRING, "errors", "remount-ro", 0));
	report("ro", fsconfig_(d, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("reconfigure-ro", fsconfig_(d, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
	state("after-ro", mnt);
	close(d);

	/* The number, reused by a tmpfs context, is the kernel's tmpfs. */
	int t = report("fsopen-tmpfs", fsopen_("tmpfs", FSOPEN_CLOEXEC));
	printf("reused %s\n", t == p ? "yes" : "no");
	report("tmpfs-unknown-key", fsconfig_(t, FSCONFIG_SET_FLAG, "nosuchkey", NULL, 0));
	report("tmpfs-size", fsconfig_(t, FSCONFIG_SET_STRING, "size", "1M", 0));
	report("tmpfs-create", fsconfig_(t, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	close(t);

	/* util-linux's form: an O_PATH descriptor of the mount. */
	int o = open(mnt, O_PATH | O_CLOEXEC);
	int q = report("fspick-empty-path", fspick_(o, "", FSPICK_EMPTY_PATH | FSPICK_NO_AUTOMOUNT));
	close(o);
	if (q < 0)
		return 1;
	report("rw", fsconfig_(q, FSCONFIG_SET_FLAG, "rw", NULL, 0));
	report("reconfigure-rw", fsconfig_(q, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
	state("after-rw", mnt);
	close(q);

	/* A context whose holder lacks CAP_SYS_ADMIN (uid 1000): parameters
	 * are taken, the reconfiguration is refused. The context stays open
	 * in the parent until after the umount that follows (the caller's
	 * own descriptor is closed first). */
	int u = report("fspick-for-unprivileged", fspick_(AT_FDCWD, mnt, FSPICK_CLOEXEC));
	if (u >= 0) {
		pid_t pid = fork();
		if (pid == 0) {
			if (setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000))
				_exit(3);
			report("unprivileged-ro", fsconfig_(u, FSCONFIG_SET_FLAG, "ro", NULL, 0));
			report("unprivileged-reconfigure", fsconfig_(u, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
			report("unprivileged-reconfigure-again", fsconfig_(u, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
			_exit(0);
		}
		int st;
		waitpid(pid, &st, 0);
		close(u);
		state("after-unprivileged", mnt);
	}

	/* Not loopvisor's: a tmpfs mounted by the caller. */
	int k = report("fspick-tmpfs", fspick_(AT_FDCWD, tmpfs, FSPICK_CLOEXEC));
	if (k >= 0) {
		report("tmpfs-reconf-size", fsconfig_(k, FSCONFIG_SET_STRING, "size", "2M", 0));
		report("tmpfs-reconfigure", fsconfig_(k, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
		close(k);
	}
	return 0;
}
