/* fspickro: the new mount API's remount of one superblock, one line per
 * call ("NAME OK" or "NAME ERRNONAME"):
 *
 *   fspickro PATH [FLAG]
 * fspick(PATH), fsconfig(FSCONFIG_SET_FLAG, FLAG) (default "ro"),
 * fsconfig(FSCONFIG_CMD_RECONFIGURE). FLAG "-": fspick only, and the
 * context closed.
 *   fspickro PATH many N
 * N contexts picked and closed at once; prints "picked M" (those that
 * succeeded).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

#include "report.h"

int main(int argc, char **argv) {
	if (argc == 4 && !strcmp(argv[2], "many")) {
		int n = atoi(argv[3]), ok = 0;
		for (int i = 0; i < n; i++) {
			int p = (int)syscall(SYS_fspick, AT_FDCWD, argv[1], FSPICK_CLOEXEC);
			if (p >= 0) {
				ok++;
				close(p);
			}
		}
		printf("picked %d\n", ok);
		return 0;
	}
	if (argc < 2 || argc > 3)
		return 2;
	const char *flag = argc == 3 ? argv[2] : "ro";
	long p = report("fspick", syscall(SYS_fspick, AT_FDCWD, argv[1], FSPICK_CLOEXEC));
	if (p < 0 || !strcmp(flag, "-"))
		return 0;
	report("set", syscall(SYS_fsconfig, (int)p, FSCONFIG_SET_FLAG, flag, NULL, 0));
	report("reconfigure", syscall(SYS_fsconfig, (int)p, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
	return 0;
}
