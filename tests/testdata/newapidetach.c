/* newapidetach: a detached mount made with the new mount API and never
 * attached, used through its fd, then closed.
 *
 *   newapidetach FSTYPE DEV PATH HELPER
 * Prints "read <first line of PATH in the mount>", "helpers N" (processes
 * whose comm is HELPER while the mount fd is open), closes the mount fd,
 * then waits (at most 20 s) until no process named HELPER is left and
 * prints "helpers-after N". Each failed call prints "ERR call errno".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/mount.h>

static int fail(const char *call) {
	printf("ERR %s %s\n", call, strerrorname_np(errno));
	return 1;
}

/* count returns how many processes have comm name. */
static int count(const char *name) {
	DIR *d = opendir("/proc");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char p[300], comm[64] = {0};
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(p, sizeof(p), "/proc/%s/comm", e->d_name);
		FILE *f = fopen(p, "re");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = 0;
			if (!strcmp(comm, name))
				n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv) {
	if (argc != 5)
		return 2;
	int fs = syscall(SYS_fsopen, argv[1], FSOPEN_CLOEXEC);
	if (fs < 0)
		return fail("fsopen");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", argv[2], 0) < 0)
		return fail("fsconfig-source");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0)
		return fail("fsconfig-ro");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return fail("fsconfig-create");
	int m = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
	if (m < 0)
		return fail("fsmount");
	close(fs);
	int f = openat(m, argv[3], O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return fail("openat");
	char buf[256] = {0};
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n < 0)
		return fail("read");
	buf[strcspn(buf, "\n")] = 0;
	printf("read %s\n", buf);
	printf("helpers %d\n", count(argv[4]));
	fflush(stdout);
	close(m);
	int left = -1;
	for (int i = 0; i < 2000; i++) {
		left = count(argv[4]);
		if (left == 0)
			break;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	printf("helpers-after %d\n", left);
	return 0;
}
