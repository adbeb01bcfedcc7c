/* fspickrw: a bare superblock reconfiguration, as a program using the new
 * mount API may make it without touching the mount's own flags: fspick(2)
 * of MNT, fsconfig(2) FLAG ("ro" or "rw"), FSCONFIG_CMD_RECONFIGURE.
 * Prints "fspick-FLAG OK" or "fspick-FLAG ERRNONAME" for the first call
 * that fails. Run by host root and in a sandbox; the lines must be the
 * same.
 *
 *   fspickrw MNT FLAG
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: fspickrw MNT ro|rw\n");
		return 2;
	}
	long r = syscall(SYS_fspick, AT_FDCWD, argv[1], FSPICK_CLOEXEC);
	int fd = (int)r;
	if (r >= 0)
		r = syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, argv[2], NULL, 0);
	if (r >= 0)
		r = syscall(SYS_fsconfig, fd, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0);
	if (r < 0)
		printf("fspick-%s %s\n", argv[2], strerrorname_np(errno));
	else
		printf("fspick-%s OK\n", argv[2]);
	return 0;
}
