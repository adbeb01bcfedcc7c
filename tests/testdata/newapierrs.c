/* newapierrs: misuses of the new mount API on a served type, one line per
 * call: "NAME OK" or "NAME ERRNONAME". Run by host root and in a sandbox;
 * the lines must be the same.
 *
 *   newapierrs FSTYPE DEV MNT
 * DEV holds a file system of FSTYPE with a file "hello"; MNT is an empty
 * directory. The last steps mount DEV on MNT with the new API, read
 * MNT/hello and unmount it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

#include "report.h"

#ifndef FSCONFIG_CMD_CREATE_EXCL
#define FSCONFIG_CMD_CREATE_EXCL 8
#endif


static long fsopen_(const char *t, unsigned f) { return syscall(SYS_fsopen, t, f); }
static long fsconfig_(int fd, unsigned cmd, const char *k, const void *v, int aux) {
	return syscall(SYS_fsconfig, fd, cmd, k, v, aux);
}
static long fsmount_(int fd, unsigned f, unsigned a) { return syscall(SYS_fsmount, fd, f, a); }

int main(int argc, char **argv) {
	if (argc != 4)
		return 2;
	const char *type = argv[1], *dev = argv[2], *mnt = argv[3];
	report("fsopen-badflags", fsopen_(type, 2));
	int fs = report("fsopen", fsopen_(type, FSOPEN_CLOEXEC));
	if (fs < 0)
		return 1;
	report("fsmount-before-create", fsmount_(fs, FSMOUNT_CLOEXEC, 0));
	report("flag-unknown-key", fsconfig_(fs, FSCONFIG_SET_FLAG, "nosuchkey", NULL, 0));
	report("string-unknown-key", fsconfig_(fs, FSCONFIG_SET_STRING, "nosuchkey", "x", 0));
	report("flag-with-value", fsconfig_(fs, FSCONFIG_SET_FLAG, "ro", "x", 0));
	report("flag-with-aux", fsconfig_(fs, FSCONFIG_SET_FLAG, "ro", NULL, 1));
	report("string-without-value", fsconfig_(fs, FSCONFIG_SET_STRING, "source", NULL, 0));
	report("string-without-key", fsconfig_(fs, FSCONFIG_SET_STRING, NULL, "x", 0));
	report("bad-cmd", fsconfig_(fs, 99, NULL, NULL, 0));
	report("create-with-key", fsconfig_(fs, FSCONFIG_CMD_CREATE, "source", NULL, 0));
	report("key-efault", fsconfig_(fs, FSCONFIG_SET_FLAG, (const char *)8, NULL, 0));
	report("binary-bad-aux", fsconfig_(fs, FSCONFIG_SET_BINARY, "source", "x", 0));
	report("fd-bad-fd", fsconfig_(fs, FSCONFIG_SET_FD, "source", NULL, 9999));
	report("path-unknown-key", fsconfig_(fs, FSCONFIG_SET_PATH, "nosuchkey", "/", AT_FDCWD));
	report("not-a-context", fsconfig_(0, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("bad-fd", fsconfig_(9999, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("negative-fd", fsconfig_(-1, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("flag-ro", fsconfig_(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("flag-rw", fsconfig_(fs, FSCONFIG_SET_FLAG, "rw", NULL, 0));
	report("source", fsconfig_(fs, FSCONFIG_SET_STRING, "source", dev, 0));
	report("source-twice", fsconfig_(fs, FSCONFIG_SET_STRING, "source", dev, 0));

	/* A failed create, on its own context. */
	int fs2 = report("fsopen-2", fsopen_(type, FSOPEN_CLOEXEC));
	report("create-without-source", fsconfig_(fs2, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	report("after-failed-create", fsconfig_(fs2, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("create-again", fsconfig_(fs2, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	close(fs2);

	report("create", fsconfig_(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	report("create-twice", fsconfig_(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	report("create-excl-after", fsconfig_(fs, FSCONFIG_CMD_CREATE_EXCL, NULL, NULL, 0));
	report("flag-after-create", fsconfig_(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0));
	report("fsmount-badflags", fsmount_(fs, 2, 0));
	report("fsmount-badattr", fsmount_(fs, FSMOUNT_CLOEXEC, 0x40000000));
	report("fsmount-badatime", fsmount_(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME));
	int m = report("fsmount", fsmount_(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID));
	report("fsmount-twice", fsmount_(fs, FSMOUNT_CLOEXEC, 0));
	report("fsmount-cloexec", m < 0 ? -1 : (fcntl(m, F_GETFD) == FD_CLOEXEC ? 0 : (errno = EBADFD, -1)));
	report("flag-after-fsmount", fsconfig_(fs, FSCONFIG_SET_FLAG, "nosuchkey", NULL, 0));
	report("close-context", close(fs));
	int h = report("openat-hello", m < 0 ? -1 : openat(m, "hello", O_RDONLY | O_CLOEXEC));
	if (h >= 0) {
		char buf[64] = {0};
		ssize_t n = read(h, buf, sizeof(buf) - 1);
		printf("hello %s", n > 0 ? buf : "(empty)\n");
		close(h);
	}
	report("move_mount", m < 0 ? -1 : syscall(SYS_move_mount, m, "", AT_FDCWD, mnt, MOVE_MOUNT_F_EMPTY_PATH));
	report("move_mount-again", m < 0 ? -1 : syscall(SYS_move_mount, m, "", AT_FDCWD, mnt, MOVE_MOUNT_F_EMPTY_PATH));
	report("close-mount", m < 0 ? -1 : close(m));
	char path[4096];
	snprintf(path, sizeof(path), "%s/hello", mnt);
	int a = report("open-attached", open(path, O_RDONLY | O_CLOEXEC));
	if (a >= 0)
		close(a);
	report("umount", umount2(mnt, 0));

	/* Descriptor numbers are the caller's: a context of the served type,
	 * closed, and a tmpfs context that gets its number must be the
	 * kernel's tmpfs context. */
	int c = report("fsopen-3", fsopen_(type, FSOPEN_CLOEXEC));
	close(c);
	int b = report("fsopen-tmpfs", fsopen_("tmpfs", FSOPEN_CLOEXEC));
	report("same-number", b == c ? 0 : (errno = EBADF, -1));
	report("reused-size", fsconfig_(b, FSCONFIG_SET_STRING, "size", "1m", 0));
	report("reused-create", fsconfig_(b, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	int rm = report("reused-fsmount", fsmount_(b, FSMOUNT_CLOEXEC, 0));
	close(rm);
	close(b);
	return 0;
}
