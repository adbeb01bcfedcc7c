/* fspickopts: hostile fsconfig(2) calls on a reconfiguration context of a
 * kernel ext4 mount, one line per call ("NAME OK" or "NAME ERRNONAME").
 *
 *   fspickopts params MNT   file system options outside loopvisor's
 *                           allow-list, per-mount flags as parameters,
 *                           path and descriptor parameters, hostile
 *                           pointers and sizes; then a reconfiguration
 *   fspickopts race MNT     errors=panic slipped onto the context by
 *                           swapping its descriptor number with a tmpfs
 *                           context's while fsconfig is trapped ("slipped
 *                           N" counts the calls the kernel took on the
 *                           context); then a reconfiguration
 * Both end with the mount's options and its superblock's, from
 * /proc/self/mountinfo ("mount ..." and "super ...").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

#include "report.h"

static long fsconfig_(int fd, unsigned cmd, const char *k, const void *v, int aux) {
	return syscall(SYS_fsconfig, fd, cmd, k, v, aux);
}

static void options(const char *mnt) {
	struct stat st;
	if (stat(mnt, &st) < 0)
		return;
	char want[64];
	snprintf(want, sizeof want, "%u:%u", major(st.st_dev), minor(st.st_dev));
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[8192];
	while (f && fgets(line, sizeof line, f)) {
		char id[32], parent[32], dev[64], root[4096], point[4096], mopts[1024];
		if (sscanf(line, "%31s %31s %63s %4095s %4095s %1023s", id, parent, dev, root, point, mopts) != 6 || strcmp(dev, want))
			continue;
		char *sep = strstr(line, " - ");
		char type[256], src[4096], sopts[2048];
		if (!sep || sscanf(sep + 3, "%255s %4095s %2047s", type, src, sopts) != 3)
			continue;
		printf("mount %s\nsuper %s\n", mopts, sopts);
	}
	if (f)
		fclose(f);
	fflush(stdout);
}

static volatile int stop;
static int flipfd, tokenfd, otherfd;

static void *flipper(void *arg) {
	(void)arg;
	while (!stop) {
		dup2(otherfd, flipfd);
		dup2(tokenfd, flipfd);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	const char *mnt = argv[2];
	int p = (int)report("fspick", syscall(SYS_fspick, AT_FDCWD, mnt, FSPICK_CLOEXEC));
	if (p < 0)
		return 1;
	if (!strcmp(argv[1], "params")) {
		report("errors=panic", fsconfig_(p, FSCONFIG_SET_STRING, "errors", "panic", 0));
		report("abort", fsconfig_(p, FSCONFIG_SET_FLAG, "abort", NULL, 0));
		report("dax", fsconfig_(p, FSCONFIG_SET_FLAG, "dax", NULL, 0));
		report("resuid=0", fsconfig_(p, FSCONFIG_SET_STRING, "resuid", "0", 0));
		report("source", fsconfig_(p, FSCONFIG_SET_STRING, "source", "/dev/vda", 0));
		report("suid", fsconfig_(p, FSCONFIG_SET_FLAG, "suid", NULL, 0));
		report("dev", fsconfig_(p, FSCONFIG_SET_FLAG, "dev", NULL, 0));
		report("journal_path", fsconfig_(p, FSCONFIG_SET_PATH, "journal_path", "/dev/vda", AT_FDCWD));
		report("journal_dev", fsconfig_(p, FSCONFIG_SET_STRING, "journal_dev", "64768", 0));
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		report("set-fd", fsconfig_(p, FSCONFIG_SET_FD, "journal_path", NULL, fd));
		report("binary", fsconfig_(p, FSCONFIG_SET_BINARY, "errors", "panic", 5));
		report("key-fault", fsconfig_(p, FSCONFIG_SET_FLAG, (const char *)8, NULL, 0));
		report("value-fault", fsconfig_(p, FSCONFIG_SET_STRING, "commit", (const char *)8, 0));
		char big[4096];
		memset(big, 'a', sizeof big - 1);
		big[sizeof big - 1] = 0;
		report("key-long", fsconfig_(p, FSCONFIG_SET_FLAG, big, NULL, 0));
		report("value-long", fsconfig_(p, FSCONFIG_SET_STRING, "commit", big, 0));
		/* A key that runs into an unmapped page. */
		long pg = sysconf(_SC_PAGESIZE);
		char *two = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (two != MAP_FAILED) {
			munmap(two + pg, pg);
			memset(two + pg - 3, 'r', 3);
			report("key-edge", fsconfig_(p, FSCONFIG_SET_FLAG, two + pg - 3, NULL, 0));
		}
		report("binary-huge", fsconfig_(p, FSCONFIG_SET_BINARY, "errors", "x", 1 << 21));
		report("badcmd", fsconfig_(p, 99, NULL, NULL, 0));
		report("reconfigure", fsconfig_(p, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
	} else if (!strcmp(argv[1], "race")) {
		otherfd = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
		if (otherfd < 0)
			return 1;
		tokenfd = dup(p);
		flipfd = p;
		pthread_t th;
		pthread_create(&th, NULL, flipper, NULL);
		int slipped = 0;
		for (int i = 0; i < 20000 && slipped < 5; i++)
			if (fsconfig_(flipfd, FSCONFIG_SET_STRING, "errors", "panic", 0) == 0)
				slipped++;
		stop = 1;
		pthread_join(th, NULL);
		printf("slipped %d\n", slipped);
		report("reconfigure", fsconfig_(tokenfd, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0));
	}
	options(mnt);
	return 0;
}
