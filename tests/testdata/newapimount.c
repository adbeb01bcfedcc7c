/* newapimount: mount like libmount >= 2.39 does: the new mount API first
 * (fsopen, fsconfig, fsmount, move_mount), mount(2) only if fsopen fails
 * with ENOSYS.
 *
 *   newapimount FSTYPE SOURCE TARGET
 * Prints "new-api" or "mount2-fallback", then "OK" or "ERR <errno>".
 * With LIBMOUNT_FORCE_MOUNT2=always it calls mount(2) only ("mount2").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

int main(int argc, char **argv) {
	if (argc != 4) return 2;
	const char *force = getenv("LIBMOUNT_FORCE_MOUNT2");
	if (force && !strcmp(force, "always")) {
		puts("mount2");
		if (mount(argv[2], argv[3], argv[1], 0, NULL) < 0) {
			printf("ERR %s\n", strerrorname_np(errno));
			return 1;
		}
		puts("OK");
		return 0;
	}
	int fs = syscall(SYS_fsopen, argv[1], FSOPEN_CLOEXEC);
	if (fs < 0 && errno == ENOSYS) {
		puts("mount2-fallback");
		if (mount(argv[2], argv[3], argv[1], 0, NULL) < 0) {
			printf("ERR %s\n", strerrorname_np(errno));
			return 1;
		}
		puts("OK");
		return 0;
	}
	puts("new-api");
	if (fs < 0) { printf("ERR %s\n", strerrorname_np(errno)); return 1; }
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", argv[2], 0) < 0 ||
	    syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		printf("ERR %s\n", strerrorname_np(errno));
		return 1;
	}
	int m = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
	if (m < 0 || syscall(SYS_move_mount, m, "", AT_FDCWD, argv[3], MOVE_MOUNT_F_EMPTY_PATH) < 0) {
		printf("ERR %s\n", strerrorname_np(errno));
		return 1;
	}
	puts("OK");
	return 0;
}
