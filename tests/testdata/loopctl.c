/* loopctl: issue one raw loop-control or loop-device ioctl and print the
 * result as "OK <ret>" or "ERR <errno name>", for the acceptance tests.
 *
 *   loopctl getfree | add IDX | remove IDX | remove64 IDX | add64 IDX
 *   loopctl open PATH               (open O_RDWR, report)
 *   loopctl hold PATH SECONDS       (open O_RDWR and sleep)
 *   loopctl configure DEV FILE      (open both O_RDWR, LOOP_CONFIGURE)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *ename(int e) {
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ENXIO: return "ENXIO";
	case EBADF: return "EBADF";
	case EACCES: return "EACCES";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ENOTTY: return "ENOTTY";
	case ENOSYS: return "ENOSYS";
	case ETIMEDOUT: return "ETIMEDOUT";
	}
	static char buf[32];
	snprintf(buf, sizeof buf, "errno%d", e);
	return buf;
}

static int report(long r) {
	if (r < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("OK %ld\n", r);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	if (!strcmp(argv[1], "open") && argc == 3)
		return report(open(argv[2], O_RDWR));
	if (!strcmp(argv[1], "hold") && argc == 4) {
		int fd = open(argv[2], O_RDWR);
		if (fd < 0) return report(fd);
		sleep(atoi(argv[3]));
		return 0;
	}
	if (!strcmp(argv[1], "configure") && argc == 4) {
		int dev = open(argv[2], O_RDWR);
		if (dev < 0) return report(dev);
		int file = open(argv[3], O_RDWR);
		if (file < 0) return report(file);
		struct loop_config cfg;
		memset(&cfg, 0, sizeof cfg);
		cfg.fd = (unsigned)file;
		return report(ioctl(dev, LOOP_CONFIGURE, &cfg));
	}
	const char *ctlpath = getenv("LOOPCTL_CONTROL"); /* a node bound elsewhere */
	int ctl = open(ctlpath ? ctlpath : "/dev/loop-control", O_RDWR);
	if (ctl < 0) return report(ctl);
	if (!strcmp(argv[1], "getfree"))
		return report(ioctl(ctl, LOOP_CTL_GET_FREE));
	if (argc < 3) return 2;
	long idx = atol(argv[2]);
	if (!strcmp(argv[1], "add"))
		return report(ioctl(ctl, LOOP_CTL_ADD, idx));
	if (!strcmp(argv[1], "remove"))
		return report(ioctl(ctl, LOOP_CTL_REMOVE, idx));
	if (!strcmp(argv[1], "remove64"))
		/* High bits set: the kernel truncates cmd to 32 bits, so a filter
		 * comparing all 64 bits would let this through. */
		return report(syscall(SYS_ioctl, ctl, 0xdeadbeef00000000UL | LOOP_CTL_REMOVE, idx));
	if (!strcmp(argv[1], "add64"))
		return report(syscall(SYS_ioctl, ctl, 0xdeadbeef00000000UL | LOOP_CTL_ADD, idx));
	return 2;
}
