/*
 * geoprobe: HDIO_GETGEO on block devices, for the partition differential
 * test (tests/bootable_test.go).
 *
 * Usage: geoprobe DEV...
 *
 * Prints one line per device: "DEV: err=ERRNO" or
 * "DEV: heads=H sectors=S cylinders=C start=N", and one more each for a
 * NULL argument and an unmapped one: "DEV null: err=ERRNO" (or "ok"),
 * "DEV bad: err=ERRNO" (or "ok").
 * Exit status 0 unless a device cannot be opened (1).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/hdreg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
	case ENOTTY: return "ENOTTY";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case EPERM: return "EPERM";
	case ENOSYS: return "ENOSYS";
	default: return strerror(e);
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			perror(argv[i]);
			return 1;
		}
		struct hd_geometry g;
		memset(&g, 0, sizeof(g));
		if (ioctl(fd, HDIO_GETGEO, &g) < 0)
			printf("%s: err=%s\n", argv[i], errname(errno));
		else
			printf("%s: heads=%u sectors=%u cylinders=%u start=%lu\n", argv[i],
			       g.heads, g.sectors, g.cylinders, g.start);
		if (ioctl(fd, HDIO_GETGEO, NULL) < 0)
			printf("%s null: err=%s\n", argv[i], errname(errno));
		else
			printf("%s null: ok\n", argv[i]);
		if (ioctl(fd, HDIO_GETGEO, (void *)8) < 0)
			printf("%s bad: err=%s\n", argv[i], errname(errno));
		else
			printf("%s bad: ok\n", argv[i]);
		close(fd);
	}
	return 0;
}
