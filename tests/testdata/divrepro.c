/*
 * divrepro: minimal reproducers of the divergences TestHostileReplay found
 * between a sandbox and host root (tests/hostile_fuzz_test.go,
 * TestHostileDivergences). Run once as host root (in unshare -m) and once
 * in a sandbox; the outputs must be identical once a divergence is fixed.
 *
 *   divrepro CASE DIR INDEX
 *
 * DIR    a directory to create img (4 MiB, zeroed) in
 * INDEX  a free loop index: cases that need a device LOOP_CTL_ADD it, and
 *        remove it at the end ("# loopprobe: created/removed" notes on
 *        stderr, as loopprobe, so that the test can clean up the host)
 *
 * Prints "CASE: ERRNO" (OK for success).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef BLKPG
#define BLKPG 0x1269
#endif
#define BLKPG_ADD_PARTITION 1
#define BLKPG_DEL_PARTITION 2
#define BLKPG_RESIZE_PARTITION 3

struct blkpg_arg {
	int op, flags, datalen;
	void *data;
};
struct blkpg_part { /* struct blkpg_partition: 152 bytes */
	long long start, length;
	int pno;
	char devname[64], volname[64];
};

static const char *res(long r)
{
	return r < 0 ? strerrorname_np(errno) : "OK";
}

static int ctl = -1, dev = -1, idx = -1;

/* device gets loop INDEX, bound to DIR/img with cfg's flags and block size */
static void device(const char *dir, uint32_t flags, uint32_t bs)
{
	char p[600];
	struct loop_config c;
	int img;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0 || ioctl(ctl, LOOP_CTL_ADD, idx) != idx) {
		perror("LOOP_CTL_ADD");
		exit(2);
	}
	fprintf(stderr, "# loopprobe: created loop%d by LOOP_CTL_ADD\n", idx);
	snprintf(p, sizeof(p), "%s/img", dir);
	img = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (img < 0 || ftruncate(img, 4 << 20) < 0) {
		perror(p);
		exit(2);
	}
	snprintf(p, sizeof(p), "/dev/loop%d", idx);
	dev = open(p, O_RDWR | O_CLOEXEC);
	memset(&c, 0, sizeof(c));
	c.fd = img;
	c.block_size = bs;
	c.info.lo_flags = flags;
	if (dev < 0 || ioctl(dev, LOOP_CONFIGURE, &c) < 0) {
		perror("LOOP_CONFIGURE");
		exit(2);
	}
	close(img);
}

static void release(void)
{
	if (dev < 0)
		return;
	ioctl(dev, LOOP_CLR_FD, 0);
	close(dev);
	for (int i = 0; i < 100; i++) {
		if (ioctl(ctl, LOOP_CTL_REMOVE, idx) == 0) {
			fprintf(stderr, "# loopprobe: removed loop%d\n", idx);
			return;
		}
		usleep(20000);
	}
	perror("LOOP_CTL_REMOVE");
}

int main(int argc, char **argv)
{
	const char *c;
	char p[600];
	long r;

	if (argc != 4)
		return 2;
	c = argv[1];
	idx = atoi(argv[3]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(c, "fsopen-flags")) {
		/* the kernel checks flags before it looks at the type */
		r = syscall(SYS_fsopen, "ext4", 2);
		if (r >= 0)
			close((int)r);
	} else if (!strcmp(c, "mount-target")) {
		/* the kernel looks the target up before it reads the device */
		device(argv[2], 0, 0);
		snprintf(p, sizeof(p), "%s/nonexistent", argv[2]);
		snprintf(p + 300, 64, "/dev/loop%d", idx);
		r = mount(p + 300, p, "ext4", 0, NULL);
	} else if (!strcmp(c, "blkpg-datalen")) {
		/* the kernel ignores datalen: a zeroed arg has data=NULL: EFAULT */
		struct blkpg_arg a = {0};

		device(argv[2], 0, 0);
		r = ioctl(dev, BLKPG, &a);
	} else if (!strcmp(c, "blkpg-short")) {
		/* struct blkpg_partition is 152 bytes; the last 4 in a PROT_NONE page */
		char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct blkpg_part *pp;
		struct blkpg_arg a;

		mprotect(m + 4096, 4096, PROT_NONE);
		pp = (struct blkpg_part *)(m + 4096 - 148);
		memset(pp, 0, 148);
		pp->start = 0;
		pp->length = 1 << 20;
		pp->pno = 1;
		a = (struct blkpg_arg){BLKPG_ADD_PARTITION, 0, sizeof(struct blkpg_part), pp};
		device(argv[2], LO_FLAGS_PARTSCAN, 0);
		r = ioctl(dev, BLKPG, &a);
		if (r == 0) {
			struct blkpg_part q = {.pno = 1};
			struct blkpg_arg d = {BLKPG_DEL_PARTITION, 0, sizeof(q), &q};

			ioctl(dev, BLKPG, &d);
		}
	} else if (!strcmp(c, "blkpg-nopartscan")) {
		/* a partition on a device without LO_FLAGS_PARTSCAN: the kernel adds it */
		struct blkpg_part q = {.start = 0, .length = 1 << 20, .pno = 1};
		struct blkpg_arg a = {BLKPG_ADD_PARTITION, 0, sizeof(q), &q};

		device(argv[2], 0, 0);
		r = ioctl(dev, BLKPG, &a);
		if (r == 0) {
			struct blkpg_arg d = {BLKPG_DEL_PARTITION, 0, sizeof(q), &q};

			ioctl(dev, BLKPG, &d);
		}
	} else if (!strcmp(c, "blkpg-resize-unaligned")) {
		/* the kernel checks alignment to the logical block size before it
		 * looks for the partition: EINVAL, not ENXIO */
		struct blkpg_part q = {.start = 1000, .length = 1 << 20, .pno = 1};
		struct blkpg_arg a = {BLKPG_RESIZE_PARTITION, 0, sizeof(q), &q};

		device(argv[2], 0, 0);
		r = ioctl(dev, BLKPG, &a);
	} else if (!strcmp(c, "blkrrpart-bs64k")) {
		/* no partition table, 64 KiB logical blocks (accepted since Linux
		 * 6.11): the kernel finds nothing, answers 0 */
		device(argv[2], LO_FLAGS_PARTSCAN, 0);
		r = ioctl(dev, LOOP_SET_BLOCK_SIZE, 65536);
		if (r == 0)
			r = ioctl(dev, BLKRRPART, 0);
	} else if (!strcmp(c, "x32-ioctl")) {
		/* this kernel has no CONFIG_X86_X32_ABI: ENOSYS */
		ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		r = syscall(0x40000000L | 514, ctl, (long)LOOP_CTL_GET_FREE, 0L);
		if (r >= 0)
			r = 0;
		dev = -1;
	} else {
		fprintf(stderr, "unknown case %s\n", c);
		return 2;
	}
	printf("%s: %s\n", c, res(r));
	release();
	return 0;
}
