/* mountcall: one mount(2) call, then umount2 of what it mounted.
 *
 *   mountcall FSTYPE SOURCE TARGET FLAGS [DATA]
 *
 * FLAGS is a number (0x1 = MS_RDONLY). Prints "OK" or the errno's name;
 * a mount that succeeded is unmounted at once, so a script can try many
 * combinations on one target and leaves nothing behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 6)
		return 2;
	unsigned long flags = strtoul(argv[4], NULL, 0);
	if (mount(argv[2], argv[3], argv[1], flags, argc == 6 ? argv[5] : NULL) < 0) {
		printf("%s\n", strerrorname_np(errno));
		return 0;
	}
	if (umount2(argv[3], 0) < 0) {
		printf("OK, umount2 %s\n", strerrorname_np(errno));
		return 1;
	}
	puts("OK");
	return 0;
}
