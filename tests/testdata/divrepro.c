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
#include <sys/stat.h>
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

/* setup failed after LOOP_CTL_ADD: give the device back, then exit */
static void undo(const char *what)
{
	perror(what);
	if (dev >= 0)
		close(dev);
	if (ioctl(ctl, LOOP_CTL_REMOVE, idx) == 0)
		fprintf(stderr, "# loopprobe: removed loop%d\n", idx);
	exit(2);
}

/* devimg gets loop INDEX, bound to DIR/NAME (a new zeroed 4 MiB file if
 * name is "img") with the given flags, block size and offset */
static void devimg(const char *dir, const char *name, uint32_t flags, uint32_t bs, uint64_t off)
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
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	if (strcmp(name, "img") == 0)
		img = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	else
		img = open(p, O_RDWR | O_CLOEXEC);
	if (img < 0 || (strcmp(name, "img") == 0 && ftruncate(img, 4 << 20) < 0))
		undo(p);
	snprintf(p, sizeof(p), "/dev/loop%d", idx);
	dev = open(p, O_RDWR | O_CLOEXEC);
	memset(&c, 0, sizeof(c));
	c.fd = img;
	c.block_size = bs;
	c.info.lo_flags = flags;
	c.info.lo_offset = off;
	if (dev < 0 || ioctl(dev, LOOP_CONFIGURE, &c) < 0)
		undo("LOOP_CONFIGURE");
	close(img);
}

static void device(const char *dir, uint32_t flags, uint32_t bs)
{
	devimg(dir, "img", flags, bs, 0);
}

/* int $0x80: the i386 ABI; pointers must be below 4 GiB */
static long sys32(long nr, long a, long b, long c)
{
	long ret;
	register long r8 asm("r8");
	register long r9 asm("r9");
	register long r10 asm("r10");
	register long r11 asm("r11");

	asm volatile("push %%rbp\n\tint $0x80\n\tpop %%rbp"
		     : "=a"(ret), "=r"(r8), "=r"(r9), "=r"(r10), "=r"(r11)
		     : "a"(nr), "b"(a), "c"(b), "d"(c)
		     : "memory", "cc");
	if (ret < 0 && ret > -4096) {
		errno = -ret;
		return -1;
	}
	return ret;
}

static char *mountat(const char *dir, const char *name)
{
	static char p[600];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	mkdir(p, 0755);
	return p;
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
	} else if (!strcmp(c, "blkpg-overlap")) {
		/* a partition sharing a sector with another: EBUSY
		 * (partition_overlaps), before add_partition's checks */
		struct blkpg_part q = {.start = 0, .length = 1 << 20, .pno = 1};
		struct blkpg_part o = {.start = 512 << 10, .length = 1 << 20, .pno = 300};
		struct blkpg_arg a = {BLKPG_ADD_PARTITION, 0, sizeof(q), &q};
		struct blkpg_arg b = {BLKPG_ADD_PARTITION, 0, sizeof(o), &o};

		device(argv[2], LO_FLAGS_PARTSCAN, 0);
		r = ioctl(dev, BLKPG, &a);
		if (r == 0) {
			struct blkpg_arg d = {BLKPG_DEL_PARTITION, 0, sizeof(q), &q};

			r = ioctl(dev, BLKPG, &b);
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
	} else if (!strcmp(c, "mount-ro-device")) {
		/* a read-only device mounted read-write: the kernel says EACCES */
		char src[64];

		devimg(argv[2], "ext3.img", LO_FLAGS_READ_ONLY, 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext4", 0, NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strcmp(c, "mount-ext2-of-ext4")) {
		/* the kernel's ext2 driver refuses an ext4 image (extents, 64bit):
		 * EINVAL; fuse2fs mounts it */
		char src[64];

		devimg(argv[2], "ext4.img", 0, 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext2", MS_RDONLY, NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strcmp(c, "mount-mgc")) {
		/* MS_MGC_VAL (0xC0ED0000) is dropped before the MS_NOUSER check,
		 * whose bit it shares: a plain mount */
		char src[64];

		devimg(argv[2], "ext3.img", 0, 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext4", 0xC0ED0000UL | MS_RDONLY, NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strcmp(c, "mount-nouser")) {
		/* MS_NOUSER (1<<31) is refused by path_mount: EINVAL */
		char src[64];

		devimg(argv[2], "ext3.img", 0, 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext4", MS_RDONLY | (1UL << 31), NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strncmp(c, "mount-flags=", 12)) {
		/* mount(2) of a good ext3 image with the given flags: the kernel
		 * honours every MS_* flag; so must the FUSE helper */
		char src[64];

		devimg(argv[2], "ext3.img", 0, 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext4", strtoul(c + 12, NULL, 0), NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strcmp(c, "mount-empty-device")) {
		/* a bound device of size 0 (offset at the end of the file) */
		char src[64];

		devimg(argv[2], "ext3.img", 0, 0, 4 << 20);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		r = mount(src, mountat(argv[2], "mnt"), "ext4", 0, NULL);
		if (r == 0)
			umount(mountat(argv[2], "mnt"));
	} else if (!strcmp(c, "mount-data-before-target")) {
		/* the kernel copies the data page before it looks the target up */
		char src[64], tgt[5000];

		device(argv[2], 0, 0);
		snprintf(src, sizeof(src), "/dev/loop%d", idx);
		memset(tgt, 'y', sizeof(tgt) - 1);
		tgt[sizeof(tgt) - 1] = 0;
		r = mount(src, tgt, "ext4", 0, (void *)1);
	} else if (!strcmp(c, "i386-ctl-on-device")) {
		/* lo_compat_ioctl knows no LOOP_CTL_*: ENOTTY (native: EINVAL) */
		device(argv[2], 0, 0);
		r = sys32(54 /* ioctl */, dev, LOOP_CTL_GET_FREE, 0);
	} else if (!strcmp(c, "blkpg-i386")) {
		/* struct compat_blkpg_ioctl_arg: op, flags, datalen, u32 data (16 bytes) */
		char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
		int *a = (int *)m;
		struct blkpg_part *q = (struct blkpg_part *)(m + 1024);

		memset(m, 0, 4096);
		q->start = 0;
		q->length = 1 << 20;
		q->pno = 1;
		a[0] = BLKPG_ADD_PARTITION;
		a[2] = sizeof(*q);
		a[3] = (int)(unsigned long)q;
		device(argv[2], LO_FLAGS_PARTSCAN, 0);
		r = sys32(54 /* ioctl */, dev, BLKPG, (long)a);
		if (r == 0) {
			struct blkpg_arg d = {BLKPG_DEL_PARTITION, 0, sizeof(*q), q};

			ioctl(dev, BLKPG, &d);
		}
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
