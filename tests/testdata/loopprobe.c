/*
 * loopprobe: a fixed sequence of loop ioctls, for the differential test
 * (tests/differential_test.go). It runs once on the host as root and once
 * as the root of a loopvisor sandbox; the two outputs must be identical.
 *
 * Usage: loopprobe DIR IMAGE
 *   DIR    a directory the probe may create files in (it chdirs there)
 *   IMAGE  a 4 MiB file in DIR, named relative to DIR
 *
 * Every step prints one line "step: ret=R err=ERRNO [fields]". Nothing
 * that legitimately differs between host and sandbox is printed on stdout:
 *   - loop indices are relative to the probe's device N ("N", "other", or
 *     "arg" for LOOP_CTL_ADD of a requested index), never absolute;
 *   - backing files are named by matching lo_device/lo_inode against the
 *     files the probe opened, never by inode numbers or absolute paths;
 *   - sysfs backing_file is printed as its base name.
 * Notes for the caller go to stderr as lines starting with "# loopprobe: ":
 * "created loopX by LOOP_CTL_GET_FREE" or "... by LOOP_CTL_ADD" for every
 * device the probe created on the machine, "removed loopX" when the probe
 * removed it again. The caller removes what was created and not removed.
 *
 * The probe never removes a loop device it did not create: the only
 * LOOP_CTL_REMOVE calls that can succeed name devices the probe itself
 * created with LOOP_CTL_ADD, or its own device while it holds it open (the
 * kernel then refuses with EBUSY). At the end its device is unbound.
 *
 * Exit status: 0 when the sequence ran (whatever the individual results),
 * 1 when no loop device could be obtained or opened, 2 on a setup error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024L * 1024L)
#define IMGSIZE (4 * MiB)
#define HIGH32 0x100000000UL
#define KADDR 0xffffffff81000000UL /* a kernel address */
#define NONCANON 0x0000800000000000UL /* first non-canonical address on x86_64 */

static int N = -1;   /* index of the probe's device */
static long pg;      /* page size */
static char *rwpage; /* one rw page, followed by guard */
static char *guard;  /* PROT_NONE page */
static char *ropage; /* PROT_READ page */
static char *unmapped;
static unsigned char *existed; /* loop indices present in sysfs at start */

/* ---- output helpers ---------------------------------------------------- */

static const char *ename(int e)
{
	static char buf[32];
	const char *n;

	if (e == 0)
		return "0";
	n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

/* idx names a loop index relative to the probe's device. */
static const char *idx(long v)
{
	if (v < 0)
		return "-1";
	if (v == N)
		return "N";
	return "other";
}

static long xioctl(long fd, unsigned long cmd, unsigned long arg)
{
	long r;

	errno = 0;
	r = syscall(SYS_ioctl, fd, cmd, arg);
	return r;
}

static void report(const char *step, long r, int e, const char *retstr)
{
	char buf[32];

	if (!retstr) {
		snprintf(buf, sizeof(buf), "%ld", r);
		retstr = buf;
	}
	printf("%s: ret=%s err=%s\n", step, retstr, ename(r < 0 ? e : 0));
	fflush(stdout);
}

/* R runs an ioctl (or any call returning -1/errno) and reports it. */
#define R(step, expr)                             \
	do {                                      \
		long r_ = (expr);                 \
		report((step), r_, errno, NULL);  \
	} while (0)

/* RI is R for calls that return a loop index. */
#define RI(step, expr)                                                \
	do {                                                          \
		long r_ = (expr);                                     \
		report((step), r_, errno, idx(r_));                   \
	} while (0)

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "# loopprobe: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static void die(const char *what)
{
	fprintf(stderr, "loopprobe: %s: %s\n", what, strerror(errno));
	exit(2);
}

/*
 * removed runs LOOP_CTL_REMOVE of a device the probe created and notes its
 * removal for the caller.
 */
static void removed(const char *step, int ctl, unsigned long arg, long index)
{
	long r = xioctl(ctl, LOOP_CTL_REMOVE, arg);

	report(step, r, errno, NULL);
	if (r == 0)
		note("removed loop%ld", index);
}

/* ---- backing files the probe knows ------------------------------------ */

struct known {
	const char *name;
	dev_t dev;
	ino_t ino;
};
static struct known known[16];
static int nknown;

static void learn(const char *name, int fd)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0 || nknown == 16)
		return;
	known[nknown].name = name;
	known[nknown].dev = st.st_dev;
	known[nknown].ino = st.st_ino;
	nknown++;
}

static const char *backing(uint64_t dev, uint64_t ino)
{
	for (int i = nknown - 1; i >= 0; i--)
		if ((uint64_t)known[i].dev == dev && (uint64_t)known[i].ino == ino)
			return known[i].name;
	if (dev == 0 && ino == 0)
		return "none";
	return "unknown";
}

static const char *rdevname(uint64_t rdev)
{
	static char buf[32];

	if (rdev == 0)
		return "0";
	if (major(rdev) == 7 && (int)minor(rdev) == N)
		return "loopN";
	if (major(rdev) == 7)
		return "loop-other";
	snprintf(buf, sizeof(buf), "%u:%u", major(rdev), minor(rdev));
	return buf;
}

/* ---- device state ------------------------------------------------------ */

static void sysattr(char *out, size_t n, int index, const char *attr)
{
	char path[128], val[256];
	int fd;
	ssize_t len;

	snprintf(path, sizeof(path), "/sys/block/loop%d/%s", index, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(out, n, "-");
		return;
	}
	len = read(fd, val, sizeof(val) - 1);
	close(fd);
	if (len < 0) {
		snprintf(out, n, "%s", ename(errno));
		return;
	}
	val[len] = 0;
	val[strcspn(val, "\n")] = 0;
	if (strcmp(attr, "loop/backing_file") == 0) {
		char *b = strrchr(val, '/');
		int i;
		char c;

		b = b ? b + 1 : val;
		if (sscanf(b, "loop%d%c", &i, &c) == 1)
			b = i == N ? "loopN" : "loop-other";
		snprintf(out, n, "%s", b);
		return;
	}
	snprintf(out, n, "%s", val);
}

static void print_info64(const struct loop_info64 *li)
{
	printf(" off=%llu sl=%llu flags=%#x num=%s enc=%u keysz=%u name=\"%.64s\" crypt=\"%.64s\" backing=%s rdev=%s init=%llu,%llu",
	       (unsigned long long)li->lo_offset, (unsigned long long)li->lo_sizelimit,
	       li->lo_flags, idx(li->lo_number), li->lo_encrypt_type, li->lo_encrypt_key_size,
	       (const char *)li->lo_file_name, (const char *)li->lo_crypt_name,
	       backing(li->lo_device, li->lo_inode), rdevname(li->lo_rdevice),
	       (unsigned long long)li->lo_init[0], (unsigned long long)li->lo_init[1]);
}

/* state prints what a client can learn about device index through fd. */
static void state(const char *tag, int fd, int index)
{
	struct loop_info64 li;
	unsigned long long size = 0;
	int ro = -1, ssz = -1;
	long r;
	char a[8][256];
	static const char *attrs[8] = {
		"ro", "size", "loop/offset", "loop/sizelimit",
		"loop/autoclear", "loop/partscan", "loop/dio", "loop/backing_file",
	};

	memset(&li, 0, sizeof(li));
	r = xioctl(fd, LOOP_GET_STATUS64, (unsigned long)&li);
	printf("%s: status err=%s", tag, ename(r < 0 ? errno : 0));
	if (r == 0)
		print_info64(&li);
	if (r < 0) {
		/*
		 * Unbound: the read-only flag and block size an unbound device
		 * reports are left over from its previous binding, which is
		 * history, not a result of this sequence.
		 */
		r = xioctl(fd, BLKGETSIZE64, (unsigned long)&size);
		printf(" size=%llu/%s", size, ename(r < 0 ? errno : 0));
		sysattr(a[1], sizeof(a[1]), index, attrs[1]);
		sysattr(a[2], sizeof(a[2]), index, attrs[7]);
		printf(" sys=size:%s,backing:%s\n", a[1], a[2]);
		fflush(stdout);
		return;
	}
	r = xioctl(fd, BLKGETSIZE64, (unsigned long)&size);
	printf(" size=%llu/%s", size, ename(r < 0 ? errno : 0));
	r = xioctl(fd, BLKROGET, (unsigned long)&ro);
	printf(" ro=%d/%s", ro, ename(r < 0 ? errno : 0));
	r = xioctl(fd, BLKSSZGET, (unsigned long)&ssz);
	printf(" bs=%d/%s", ssz, ename(r < 0 ? errno : 0));
	for (int i = 0; i < 8; i++)
		sysattr(a[i], sizeof(a[i]), index, attrs[i]);
	printf(" sys=%s,%s,%s,%s,%s,%s,%s,%s\n", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
	fflush(stdout);
}

/* ---- helpers ----------------------------------------------------------- */

static char devpath[64];

static int opendev(const char *step, int flags)
{
	int fd;

	errno = 0;
	fd = open(devpath, flags | O_CLOEXEC);
	report(step, fd < 0 ? -1 : 0, errno, NULL);
	return fd;
}

static void xclose(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* reopen closes the probe's two fds on loopN and opens them again: dev
 * O_RDWR, rodev O_RDONLY. */
static void reopen(int *dev, int *rodev)
{
	xclose(rodev);
	xclose(dev);
	*dev = opendev("reopen loopN O_RDWR", O_RDWR);
	*rodev = opendev("reopen loopN O_RDONLY", O_RDONLY);
}

static int mkimage(const char *name, off_t size, mode_t mode)
{
	int fd;

	unlink(name);
	fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0 || ftruncate(fd, size) < 0)
		die(name);
	close(fd);
	return 0;
}

static int xopen(const char *name, int flags)
{
	int fd = open(name, flags | O_CLOEXEC);

	if (fd < 0)
		die(name);
	return fd;
}

static void scan_existing(void)
{
	DIR *d = opendir("/sys/devices/virtual/block");
	struct dirent *e;

	existed = calloc(1 << 20, 1);
	if (!existed)
		die("calloc");
	if (!d)
		return;
	while ((e = readdir(d))) {
		int i;
		char c;

		if (sscanf(e->d_name, "loop%d%c", &i, &c) == 1 && i >= 0 && i < (1 << 20))
			existed[i] = 1;
	}
	closedir(d);
}

static int sys_exists(int i)
{
	char p[96];

	snprintf(p, sizeof(p), "/sys/devices/virtual/block/loop%d", i);
	return access(p, F_OK) == 0;
}

/* a free index for LOOP_CTL_ADD of a requested index */
static int free_index(int from)
{
	char p[64];

	for (int i = from; i < from + 1000; i++) {
		snprintf(p, sizeof(p), "/dev/loop%d", i);
		if (!sys_exists(i) && access(p, F_OK) != 0)
			return i;
	}
	return from;
}

/* fill a loop_info64 / loop_config with a plain setting */
static void info64(struct loop_info64 *li, uint64_t off, uint64_t sl, uint32_t flags, const char *name)
{
	memset(li, 0, sizeof(*li));
	li->lo_offset = off;
	li->lo_sizelimit = sl;
	li->lo_flags = flags;
	if (name)
		snprintf((char *)li->lo_file_name, LO_NAME_SIZE, "%s", name);
}

static void config(struct loop_config *c, int fd, uint32_t bs, uint64_t off, uint64_t sl, uint32_t flags, const char *name)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->block_size = bs;
	info64(&c->info, off, sl, flags, name);
}

/* atend copies n bytes of src so that they end exactly at the guard page. */
static void *atend(const void *src, size_t n)
{
	void *p = guard - n;

	memcpy(p, src, n);
	return p;
}

/*
 * swaps: one descriptor number, changed under the caller's hands. The
 * supervisor recognises a loop-control file it has seen before (kcmp);
 * every change under the same number must give the kernel's answer for
 * the file now there: another device, a regular file, a closed number,
 * the control file back, a dup, and another process (a new thread id)
 * with the inherited descriptor that replaces it in its own table.
 */
static void swaps(int ctl, int null, int file)
{
	const int n = 50;
	pid_t pid;
	int st, d;

	if (dup2(ctl, n) < 0)
		die("dup2");
	RI("swap: GET_FREE on a dup2 of loop-control", xioctl(n, LOOP_CTL_GET_FREE, 0));
	RI("swap: GET_FREE again", xioctl(n, LOOP_CTL_GET_FREE, 0));
	if (dup2(null, n) < 0)
		die("dup2");
	R("swap: GET_FREE on /dev/null under that number", xioctl(n, LOOP_CTL_GET_FREE, 0));
	R("swap: LOOP_CTL_ADD on /dev/null under that number", xioctl(n, LOOP_CTL_ADD, 0x7fffffff));
	if (dup2(ctl, n) < 0)
		die("dup2");
	RI("swap: GET_FREE on loop-control back", xioctl(n, LOOP_CTL_GET_FREE, 0));
	if (dup2(file, n) < 0)
		die("dup2");
	R("swap: GET_FREE on a regular file under that number", xioctl(n, LOOP_CTL_GET_FREE, 0));
	close(n);
	R("swap: GET_FREE on the closed number", xioctl(n, LOOP_CTL_GET_FREE, 0));
	if (dup2(ctl, n) < 0)
		die("dup2");
	RI("swap: GET_FREE on loop-control again", xioctl(n, LOOP_CTL_GET_FREE, 0));
	d = dup(n);
	RI("swap: GET_FREE on a dup", xioctl(d, LOOP_CTL_GET_FREE, 0));
	close(d);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		RI("swap: child: GET_FREE on the inherited number", xioctl(n, LOOP_CTL_GET_FREE, 0));
		if (dup2(null, n) < 0)
			_exit(1);
		R("swap: child: GET_FREE on /dev/null under that number", xioctl(n, LOOP_CTL_GET_FREE, 0));
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("swap child");
	RI("swap: parent: GET_FREE after the child's swap", xioctl(n, LOOP_CTL_GET_FREE, 0));
	close(n);
}

/* ---- the sequence ------------------------------------------------------ */

int main(int argc, char **argv)
{
	int ctl, ctlro, ctlpath, dev = -1, rodev = -1, pathdev = -1;
	int img, imgpath, imgwo, ro, same, other, dir, pfd[2], sv[2], null;
	struct loop_info64 li;
	struct loop_info oli;
	struct loop_config cfg;
	char step[128];
	long r;

	if (argc != 3) {
		fprintf(stderr, "usage: loopprobe DIR IMAGE\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (chdir(argv[1]) < 0)
		die(argv[1]);
	pg = sysconf(_SC_PAGESIZE);

	/* memory: rw page | PROT_NONE guard | PROT_READ page | unmapped page */
	rwpage = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rwpage == MAP_FAILED)
		die("mmap");
	guard = rwpage + pg;
	ropage = rwpage + 2 * pg;
	unmapped = rwpage + 3 * pg;
	if (mprotect(guard, pg, PROT_NONE) < 0 || mprotect(ropage, pg, PROT_READ) < 0 ||
	    munmap(unmapped, pg) < 0)
		die("mprotect");

	/* files */
	mkimage("ro.img", IMGSIZE, 0444);
	mkimage("same.img", IMGSIZE, 0644);
	mkimage("other.img", 2 * MiB, 0644);
	if (mkdir("subdir", 0755) < 0 && errno != EEXIST)
		die("mkdir");
	img = xopen(argv[2], O_RDWR);
	imgwo = xopen(argv[2], O_WRONLY);
	imgpath = xopen(argv[2], O_PATH);
	ro = xopen("ro.img", O_RDONLY);
	same = xopen("same.img", O_RDONLY);
	other = xopen("other.img", O_RDONLY);
	dir = xopen("subdir", O_RDONLY | O_DIRECTORY);
	null = xopen("/dev/null", O_RDWR);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		die("pipe");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	learn("img", img);
	learn("ro.img", ro);
	learn("same.img", same);
	learn("other.img", other);
	scan_existing();

	/* --- loop-control, the probe's device ------------------------------ */
	errno = 0;
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	report("open loop-control O_RDWR", ctl < 0 ? -1 : 0, errno, NULL);
	if (ctl < 0)
		return 1;
	r = xioctl(ctl, LOOP_CTL_GET_FREE, 0);
	if (r < 0) {
		report("LOOP_CTL_GET_FREE", r, errno, NULL);
		return 1;
	}
	N = (int)r;
	if (existed[N])
		note("using loop%d, which existed", N);
	else
		note("created loop%d by LOOP_CTL_GET_FREE", N);
	report("LOOP_CTL_GET_FREE", r, 0, idx(r));
	snprintf(devpath, sizeof(devpath), "/dev/loop%d", N);
	RI("LOOP_CTL_GET_FREE again while N unbound", xioctl(ctl, LOOP_CTL_GET_FREE, 0));
	RI("LOOP_CTL_GET_FREE cmd|0xdeadbeef<<32", xioctl(ctl, 0xdeadbeef00000000UL | LOOP_CTL_GET_FREE, 0));
	RI("LOOP_CTL_GET_FREE arg=0xffffffffffffffff", xioctl(ctl, LOOP_CTL_GET_FREE, ~0UL));
	RI("LOOP_CTL_GET_FREE fd|1<<32", xioctl(HIGH32 | ctl, LOOP_CTL_GET_FREE, 0));
	RI("LOOP_CTL_GET_FREE fd=-1", xioctl(-1, LOOP_CTL_GET_FREE, 0));
	RI("LOOP_CTL_GET_FREE fd=9999", xioctl(9999, LOOP_CTL_GET_FREE, 0));
	swaps(ctl, null, same);
	errno = 0;
	ctlro = open("/dev/loop-control", O_RDONLY | O_CLOEXEC);
	report("open loop-control O_RDONLY", ctlro < 0 ? -1 : 0, errno, NULL);
	RI("LOOP_CTL_GET_FREE on O_RDONLY loop-control", xioctl(ctlro, LOOP_CTL_GET_FREE, 0));
	errno = 0;
	ctlpath = open("/dev/loop-control", O_PATH | O_CLOEXEC);
	report("open loop-control O_PATH", ctlpath < 0 ? -1 : 0, errno, NULL);

	dev = opendev("open loopN O_RDWR", O_RDWR);
	rodev = opendev("open loopN O_RDONLY", O_RDONLY);
	pathdev = opendev("open loopN O_PATH", O_PATH);
	if (dev < 0 || rodev < 0)
		return 1;
	learn("devnode-loopN", dev);

	/* --- unbound device ------------------------------------------------ */
	state("unbound", dev, N);
	memset(&li, 0, sizeof(li));
	R("GET_STATUS64 unbound", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)&li));
	R("GET_STATUS64 unbound NULL", xioctl(dev, LOOP_GET_STATUS64, 0));
	R("GET_STATUS64 unbound ptr=1", xioctl(dev, LOOP_GET_STATUS64, 1));
	R("GET_STATUS64 unbound unmapped", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)unmapped));
	R("GET_STATUS64 unbound O_RDONLY", xioctl(rodev, LOOP_GET_STATUS64, (unsigned long)&li));
	R("GET_STATUS64 unbound O_PATH", xioctl(pathdev, LOOP_GET_STATUS64, (unsigned long)&li));
	R("GET_STATUS unbound", xioctl(dev, LOOP_GET_STATUS, (unsigned long)&oli));
	R("GET_STATUS unbound NULL", xioctl(dev, LOOP_GET_STATUS, 0));
	info64(&li, 0, 0, 0, "x");
	R("SET_STATUS64 unbound", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	R("SET_STATUS64 unbound NULL", xioctl(dev, LOOP_SET_STATUS64, 0));
	R("SET_STATUS64 unbound ptr=1", xioctl(dev, LOOP_SET_STATUS64, 1));
	R("SET_STATUS64 unbound O_RDONLY", xioctl(rodev, LOOP_SET_STATUS64, (unsigned long)&li));
	memset(&oli, 0, sizeof(oli));
	R("SET_STATUS unbound", xioctl(dev, LOOP_SET_STATUS, (unsigned long)&oli));
	R("SET_STATUS unbound NULL", xioctl(dev, LOOP_SET_STATUS, 0));
	R("CLR_FD unbound", xioctl(dev, LOOP_CLR_FD, 0));
	R("SET_CAPACITY unbound", xioctl(dev, LOOP_SET_CAPACITY, 0));
	R("SET_BLOCK_SIZE 4096 unbound", xioctl(dev, LOOP_SET_BLOCK_SIZE, 4096));
	R("SET_BLOCK_SIZE 3000 unbound", xioctl(dev, LOOP_SET_BLOCK_SIZE, 3000));
	R("SET_DIRECT_IO 1 unbound", xioctl(dev, LOOP_SET_DIRECT_IO, 1));
	R("CHANGE_FD unbound", xioctl(dev, LOOP_CHANGE_FD, same));
	R("CHANGE_FD unbound fd=-1", xioctl(dev, LOOP_CHANGE_FD, -1L));

	/* --- LOOP_SET_FD with bad backing fds ------------------------------ */
	R("SET_FD fd=-1", xioctl(dev, LOOP_SET_FD, -1L));
	R("SET_FD fd=9999", xioctl(dev, LOOP_SET_FD, 9999));
	R("SET_FD fd=0x7fffffff", xioctl(dev, LOOP_SET_FD, 0x7fffffff));
	R("SET_FD fd=0x80000000", xioctl(dev, LOOP_SET_FD, 0x80000000UL));
	R("SET_FD fd=(1<<32)|9999", xioctl(dev, LOOP_SET_FD, HIGH32 | 9999));
	R("SET_FD pipe read end", xioctl(dev, LOOP_SET_FD, pfd[0]));
	R("SET_FD pipe write end", xioctl(dev, LOOP_SET_FD, pfd[1]));
	R("SET_FD (1<<32)|pipe", xioctl(dev, LOOP_SET_FD, HIGH32 | pfd[0]));
	R("SET_FD directory", xioctl(dev, LOOP_SET_FD, dir));
	R("SET_FD socket", xioctl(dev, LOOP_SET_FD, sv[0]));
	R("SET_FD /dev/null", xioctl(dev, LOOP_SET_FD, null));
	R("SET_FD loop-control", xioctl(dev, LOOP_SET_FD, ctl));
	R("SET_FD itself", xioctl(dev, LOOP_SET_FD, dev));
	R("SET_FD itself O_RDONLY fd", xioctl(dev, LOOP_SET_FD, rodev));
	R("SET_FD O_PATH file", xioctl(dev, LOOP_SET_FD, imgpath));
	R("SET_FD on O_PATH loop fd", xioctl(pathdev, LOOP_SET_FD, img));
	R("SET_FD on O_PATH loop fd bad fd", xioctl(pathdev, LOOP_SET_FD, 9999));
	R("SET_FD on fd=9999", xioctl(9999, LOOP_SET_FD, img));
	state("after bad SET_FDs", dev, N);

	/* --- read-only backing file: read-only device, CHANGE_FD ------------ */
	R("SET_FD read-only file", xioctl(dev, LOOP_SET_FD, ro));
	state("bound ro.img", dev, N);
	R("SET_FD again (bound)", xioctl(dev, LOOP_SET_FD, img));
	R("SET_FD again pipe (bound)", xioctl(dev, LOOP_SET_FD, pfd[0]));
	R("SET_FD again fd=-1 (bound)", xioctl(dev, LOOP_SET_FD, -1L));
	config(&cfg, img, 0, 0, 0, 0, "busy");
	R("CONFIGURE (bound)", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	R("CHANGE_FD different size", xioctl(dev, LOOP_CHANGE_FD, other));
	R("CHANGE_FD pipe", xioctl(dev, LOOP_CHANGE_FD, pfd[0]));
	R("CHANGE_FD directory", xioctl(dev, LOOP_CHANGE_FD, dir));
	R("CHANGE_FD fd=9999", xioctl(dev, LOOP_CHANGE_FD, 9999));
	R("CHANGE_FD itself", xioctl(dev, LOOP_CHANGE_FD, dev));
	R("CHANGE_FD O_PATH file", xioctl(dev, LOOP_CHANGE_FD, imgpath));
	R("CHANGE_FD same size", xioctl(dev, LOOP_CHANGE_FD, same));
	state("changed to same.img", dev, N);
	R("CHANGE_FD (1<<32)|fd back", xioctl(dev, LOOP_CHANGE_FD, HIGH32 | ro));
	state("changed back to ro.img", dev, N);
	R("CHANGE_FD on O_RDONLY fd", xioctl(rodev, LOOP_CHANGE_FD, same));
	R("CHANGE_FD on O_PATH loop fd", xioctl(pathdev, LOOP_CHANGE_FD, ro));
	/* two openers: LOOP_CLR_FD only marks the device for autoclear */
	R("CLR_FD with two openers", xioctl(dev, LOOP_CLR_FD, 0));
	state("after deferred CLR_FD", dev, N);
	R("CLR_FD again with two openers", xioctl(rodev, LOOP_CLR_FD, 0));
	xclose(&rodev);
	/* sole opener: rundown at once */
	R("CLR_FD as sole opener", xioctl(dev, LOOP_CLR_FD, 0));
	R("CLR_FD twice", xioctl(dev, LOOP_CLR_FD, 0));
	R("GET_STATUS64 in rundown", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)&li));
	rodev = opendev("open loopN in rundown", O_RDONLY);
	reopen(&dev, &rodev);
	state("after clear", dev, N);

	/* --- LOOP_SET_FD through an O_RDONLY device fd ---------------------- */
	R("SET_FD rw file on O_RDONLY loop fd", xioctl(rodev, LOOP_SET_FD, img));
	state("bound via O_RDONLY fd", dev, N);
	R("CLR_FD on O_RDONLY fd (deferred)", xioctl(rodev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);
	state("after autoclear", dev, N);

	/* --- write-only backing file --------------------------------------- */
	R("SET_FD write-only file", xioctl(dev, LOOP_SET_FD, imgwo));
	state("after SET_FD write-only", dev, N);
	R("CLR_FD", xioctl(dev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);

	/* --- a rw regular file, with high bits in the fd argument ------------ */
	R("SET_FD (1<<32)|fd rw file", xioctl(dev, LOOP_SET_FD, HIGH32 | img));
	state("bound img", dev, N);

	/* GET_STATUS64 with good and bad buffers */
	R("GET_STATUS64 NULL", xioctl(dev, LOOP_GET_STATUS64, 0));
	R("GET_STATUS64 ptr=1", xioctl(dev, LOOP_GET_STATUS64, 1));
	R("GET_STATUS64 unmapped", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)unmapped));
	R("GET_STATUS64 PROT_NONE", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)guard));
	R("GET_STATUS64 PROT_READ", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)ropage));
	R("GET_STATUS64 kernel address", xioctl(dev, LOOP_GET_STATUS64, KADDR));
	R("GET_STATUS64 non-canonical", xioctl(dev, LOOP_GET_STATUS64, NONCANON));
	R("GET_STATUS64 ptr=-1", xioctl(dev, LOOP_GET_STATUS64, ~0UL));
	{
		struct loop_info64 *p = (void *)(guard - sizeof(struct loop_info64));

		memset(rwpage, 0, pg);
		R("GET_STATUS64 exactly before guard page", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)p));
		printf("  ->");
		print_info64(p);
		printf("\n");
		/* one byte into the guard page: copy_to_user fails part way */
		p = (void *)(guard - offsetof(struct loop_info64, lo_crypt_name) - 8);
		memset(rwpage, 0xa5, pg);
		R("GET_STATUS64 straddling guard page", xioctl(dev, LOOP_GET_STATUS64, (unsigned long)p));
		printf("  -> off=%#llx sl=%#llx num=%s flags=%#x name=\"%.64s\"\n",
		       (unsigned long long)p->lo_offset, (unsigned long long)p->lo_sizelimit,
		       p->lo_number == 0xa5a5a5a5 ? "untouched" : idx(p->lo_number), p->lo_flags,
		       (const char *)p->lo_file_name);
	}
	R("GET_STATUS64 on O_RDONLY fd", xioctl(rodev, LOOP_GET_STATUS64, (unsigned long)&li));
	R("GET_STATUS64 on O_PATH fd", xioctl(pathdev, LOOP_GET_STATUS64, (unsigned long)&li));
	R("GET_STATUS64 on O_PATH fd NULL", xioctl(pathdev, LOOP_GET_STATUS64, 0));
	R("GET_STATUS64 on O_PATH fd ptr=1", xioctl(pathdev, LOOP_GET_STATUS64, 1));
	R("GET_STATUS64 fd|1<<32", xioctl(HIGH32 | dev, LOOP_GET_STATUS64, (unsigned long)&li));
	memset(&li, 0, sizeof(li));
	R("GET_STATUS64 cmd|0xdeadbeef<<32", xioctl(dev, 0xdeadbeef00000000UL | LOOP_GET_STATUS64, (unsigned long)&li));
	printf("  ->");
	print_info64(&li);
	printf("\n");

	/* old LOOP_GET_STATUS */
	memset(&oli, 0, sizeof(oli));
	R("GET_STATUS", xioctl(dev, LOOP_GET_STATUS, (unsigned long)&oli));
	printf("  -> num=%s off=%d flags=%#x enc=%d name=\"%.64s\"\n", idx(oli.lo_number), oli.lo_offset,
	       oli.lo_flags, oli.lo_encrypt_type, oli.lo_name);
	R("GET_STATUS NULL", xioctl(dev, LOOP_GET_STATUS, 0));
	R("GET_STATUS ptr=1", xioctl(dev, LOOP_GET_STATUS, 1));
	R("GET_STATUS PROT_READ", xioctl(dev, LOOP_GET_STATUS, (unsigned long)ropage));
	R("GET_STATUS exactly before guard page",
	  xioctl(dev, LOOP_GET_STATUS, (unsigned long)(guard - sizeof(struct loop_info))));
	R("GET_STATUS 1 byte into guard page",
	  xioctl(dev, LOOP_GET_STATUS, (unsigned long)(guard - sizeof(struct loop_info) + 1)));
	R("GET_STATUS cmd|0xdeadbeef<<32", xioctl(dev, 0xdeadbeef00000000UL | LOOP_GET_STATUS, (unsigned long)&oli));

	/* LOOP_SET_STATUS64 */
	R("SET_STATUS64 NULL", xioctl(dev, LOOP_SET_STATUS64, 0));
	R("SET_STATUS64 ptr=1", xioctl(dev, LOOP_SET_STATUS64, 1));
	R("SET_STATUS64 unmapped", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)unmapped));
	R("SET_STATUS64 kernel address", xioctl(dev, LOOP_SET_STATUS64, KADDR));
	info64(&li, 0, 0, 0, "guard");
	R("SET_STATUS64 1 byte into guard page",
	  xioctl(dev, LOOP_SET_STATUS64, (unsigned long)((char *)atend(&li, sizeof(li)) + 1)));
	R("SET_STATUS64 exactly before guard page",
	  xioctl(dev, LOOP_SET_STATUS64, (unsigned long)atend(&li, sizeof(li))));
	state("set name via guard-page buffer", dev, N);
	/* ropage is a readable all-zero page: an all-zero loop_info64 */
	R("SET_STATUS64 PROT_READ zero page", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)ropage));
	state("after zero info", dev, N);
	info64(&li, 0, 0, 0, "enc");
	li.lo_encrypt_type = LO_CRYPT_XOR;
	R("SET_STATUS64 encrypt_type=XOR", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	li.lo_encrypt_type = LO_CRYPT_CRYPTOAPI;
	R("SET_STATUS64 encrypt_type=CRYPTOAPI", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	info64(&li, 0, 0, 0, "keysz");
	li.lo_encrypt_key_size = 33;
	R("SET_STATUS64 encrypt_key_size=33", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	info64(&li, 1ULL << 63, 0, 0, "bigoff");
	R("SET_STATUS64 offset=1<<63", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	info64(&li, 0, 1ULL << 63, 0, "bigsl");
	R("SET_STATUS64 sizelimit=1<<63", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("after refused SET_STATUS64s", dev, N);
	info64(&li, 2 * IMGSIZE, 0, 0, "beyond");
	R("SET_STATUS64 offset beyond size", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("offset beyond size", dev, N);
	info64(&li, 4096, MiB, 0, "window");
	R("SET_STATUS64 offset=4096 sizelimit=1MiB", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("window", dev, N);
	info64(&li, 1000, 5000, 0, "odd");
	R("SET_STATUS64 offset=1000 sizelimit=5000", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("odd window", dev, N);
	info64(&li, 0, 0, LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN, "flags");
	R("SET_STATUS64 AUTOCLEAR|PARTSCAN", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("autoclear partscan", dev, N);
	info64(&li, 0, 0, 0, "noflags");
	R("SET_STATUS64 flags=0", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("flags cleared", dev, N);
	info64(&li, 0, 0, LO_FLAGS_READ_ONLY | LO_FLAGS_DIRECT_IO | 0x80, "ignored");
	R("SET_STATUS64 READ_ONLY|DIRECT_IO|0x80", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("unsettable flags", dev, N);
	info64(&li, 0, 0, 0, "rdonly-fd");
	snprintf((char *)li.lo_crypt_name, LO_NAME_SIZE, "crypt");
	li.lo_init[0] = 7;
	R("SET_STATUS64 on O_RDONLY fd", xioctl(rodev, LOOP_SET_STATUS64, (unsigned long)&li));
	state("set via O_RDONLY fd", dev, N);
	info64(&li, 0, 0, 0, "opath");
	R("SET_STATUS64 on O_PATH fd", xioctl(pathdev, LOOP_SET_STATUS64, (unsigned long)&li));
	R("SET_STATUS64 on O_PATH fd NULL", xioctl(pathdev, LOOP_SET_STATUS64, 0));
	R("SET_STATUS64 on O_PATH fd ptr=1", xioctl(pathdev, LOOP_SET_STATUS64, 1));
	info64(&li, 0, 0, 0, "highcmd");
	R("SET_STATUS64 cmd|0xdeadbeef<<32", xioctl(dev, 0xdeadbeef00000000UL | LOOP_SET_STATUS64, (unsigned long)&li));
	state("set via high cmd", dev, N);

	/* old LOOP_SET_STATUS */
	R("SET_STATUS NULL", xioctl(dev, LOOP_SET_STATUS, 0));
	R("SET_STATUS ptr=1", xioctl(dev, LOOP_SET_STATUS, 1));
	memset(&oli, 0, sizeof(oli));
	oli.lo_offset = 512;
	snprintf(oli.lo_name, LO_NAME_SIZE, "old");
	R("SET_STATUS offset=512", xioctl(dev, LOOP_SET_STATUS, (unsigned long)&oli));
	state("old set status", dev, N);
	oli.lo_offset = -1;
	R("SET_STATUS offset=-1", xioctl(dev, LOOP_SET_STATUS, (unsigned long)&oli));
	oli.lo_offset = 0;
	oli.lo_encrypt_type = LO_CRYPT_XOR;
	R("SET_STATUS encrypt_type=XOR", xioctl(dev, LOOP_SET_STATUS, (unsigned long)&oli));
	oli.lo_encrypt_type = 0;
	oli.lo_flags = LO_FLAGS_AUTOCLEAR;
	snprintf(oli.lo_name, LO_NAME_SIZE, "old-end");
	R("SET_STATUS 1 byte into guard page",
	  xioctl(dev, LOOP_SET_STATUS, (unsigned long)((char *)atend(&oli, sizeof(oli)) + 1)));
	R("SET_STATUS exactly before guard page",
	  xioctl(dev, LOOP_SET_STATUS, (unsigned long)atend(&oli, sizeof(oli))));
	state("old set status at page end", dev, N);
	R("SET_STATUS on O_RDONLY fd", xioctl(rodev, LOOP_SET_STATUS, (unsigned long)&oli));
	info64(&li, 0, 0, 0, "reset");
	R("SET_STATUS64 reset", xioctl(dev, LOOP_SET_STATUS64, (unsigned long)&li));

	/* LOOP_SET_CAPACITY */
	if (ftruncate(img, 2 * IMGSIZE) < 0)
		die("grow");
	state("backing file grown", dev, N);
	R("SET_CAPACITY", xioctl(dev, LOOP_SET_CAPACITY, 0));
	state("capacity updated", dev, N);
	if (ftruncate(img, IMGSIZE) < 0)
		die("shrink");
	R("SET_CAPACITY on O_RDONLY fd", xioctl(rodev, LOOP_SET_CAPACITY, 0));
	R("SET_CAPACITY on O_PATH fd", xioctl(pathdev, LOOP_SET_CAPACITY, 0));
	R("SET_CAPACITY arg=-1", xioctl(dev, LOOP_SET_CAPACITY, ~0UL));
	state("capacity shrunk", dev, N);

	/* LOOP_SET_BLOCK_SIZE */
	R("SET_BLOCK_SIZE 4096", xioctl(dev, LOOP_SET_BLOCK_SIZE, 4096));
	state("block size 4096", dev, N);
	R("SET_BLOCK_SIZE 3000", xioctl(dev, LOOP_SET_BLOCK_SIZE, 3000));
	R("SET_BLOCK_SIZE 256", xioctl(dev, LOOP_SET_BLOCK_SIZE, 256));
	R("SET_BLOCK_SIZE 65536", xioctl(dev, LOOP_SET_BLOCK_SIZE, 65536));
	state("block size 65536", dev, N);
	R("SET_BLOCK_SIZE 131072", xioctl(dev, LOOP_SET_BLOCK_SIZE, 131072));
	R("SET_BLOCK_SIZE (1<<32)|512", xioctl(dev, LOOP_SET_BLOCK_SIZE, HIGH32 | 512));
	R("SET_BLOCK_SIZE 0", xioctl(dev, LOOP_SET_BLOCK_SIZE, 0));
	state("block size 0", dev, N);
	R("SET_BLOCK_SIZE 1024 on O_RDONLY fd", xioctl(rodev, LOOP_SET_BLOCK_SIZE, 1024));
	state("block size 1024", dev, N);
	R("SET_BLOCK_SIZE 512 on O_PATH fd", xioctl(pathdev, LOOP_SET_BLOCK_SIZE, 512));
	R("SET_BLOCK_SIZE 512", xioctl(dev, LOOP_SET_BLOCK_SIZE, 512));

	/* LOOP_SET_DIRECT_IO */
	R("SET_DIRECT_IO 1", xioctl(dev, LOOP_SET_DIRECT_IO, 1));
	state("direct io 1", dev, N);
	R("SET_DIRECT_IO 0", xioctl(dev, LOOP_SET_DIRECT_IO, 0));
	state("direct io 0", dev, N);
	R("SET_DIRECT_IO 2", xioctl(dev, LOOP_SET_DIRECT_IO, 2));
	R("SET_DIRECT_IO 1<<32", xioctl(dev, LOOP_SET_DIRECT_IO, HIGH32));
	state("direct io 1<<32", dev, N);
	R("SET_DIRECT_IO 0 on O_RDONLY fd", xioctl(rodev, LOOP_SET_DIRECT_IO, 0));
	R("SET_DIRECT_IO 1 on O_PATH fd", xioctl(pathdev, LOOP_SET_DIRECT_IO, 1));
	state("direct io off", dev, N);

	/* CHANGE_FD on a rw device */
	R("CHANGE_FD on rw device", xioctl(dev, LOOP_CHANGE_FD, same));

	/* loop-control commands on the loop device, and on loop-control */
	R("LOOP_CTL_GET_FREE on loopN", xioctl(dev, LOOP_CTL_GET_FREE, 0));
	R("LOOP_CTL_ADD on loopN", xioctl(dev, LOOP_CTL_ADD, 0x7fffffff));
	R("LOOP_CTL_REMOVE on loopN", xioctl(dev, LOOP_CTL_REMOVE, N));
	R("LOOP_CTL_REMOVE -1 on loopN", xioctl(dev, LOOP_CTL_REMOVE, -1L));
	R("LOOP_CTL_ADD N (exists)", xioctl(ctl, LOOP_CTL_ADD, N));
	R("LOOP_CTL_REMOVE N (bound)", xioctl(ctl, LOOP_CTL_REMOVE, N));

	/* loop on loop: a device the probe creates, backed by loopN */
	{
		long m = xioctl(ctl, LOOP_CTL_ADD, -1L);
		int e = errno, mfd = -1;
		char mpath[64];

		report("LOOP_CTL_ADD -1", m, e, idx(m));
		if (m >= 0) {
			note("created loop%ld by LOOP_CTL_ADD", m);
			snprintf(mpath, sizeof(mpath), "/dev/loop%ld", m);
			errno = 0;
			mfd = open(mpath, O_RDWR | O_CLOEXEC);
			report("open loopM O_RDWR", mfd < 0 ? -1 : 0, errno, NULL);
			R("SET_FD loopM backed by loopN", xioctl(mfd, LOOP_SET_FD, dev));
			state("loopM", mfd, (int)m);
			R("SET_FD loopN (bound) backed by loopM", xioctl(dev, LOOP_SET_FD, mfd));
			R("LOOP_CTL_REMOVE M (bound)", xioctl(ctl, LOOP_CTL_REMOVE, m));
			R("CLR_FD loopM", xioctl(mfd, LOOP_CLR_FD, 0));
			close(mfd);
			removed("LOOP_CTL_REMOVE M", ctl, m, m);
			R("LOOP_CTL_REMOVE M again", xioctl(ctl, LOOP_CTL_REMOVE, m));
		}
	}
	R("CLR_FD with two openers", xioctl(dev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);
	state("after clear", dev, N);

	/* --- LOOP_CONFIGURE ------------------------------------------------- */
	R("CONFIGURE NULL", xioctl(dev, LOOP_CONFIGURE, 0));
	R("CONFIGURE ptr=1", xioctl(dev, LOOP_CONFIGURE, 1));
	R("CONFIGURE unmapped", xioctl(dev, LOOP_CONFIGURE, (unsigned long)unmapped));
	R("CONFIGURE kernel address", xioctl(dev, LOOP_CONFIGURE, KADDR));
	config(&cfg, img, 0, 0, 0, 0, "cfg");
	R("CONFIGURE 1 byte into guard page",
	  xioctl(dev, LOOP_CONFIGURE, (unsigned long)((char *)atend(&cfg, sizeof(cfg)) + 1)));
	R("CONFIGURE on O_PATH fd", xioctl(pathdev, LOOP_CONFIGURE, (unsigned long)&cfg));
	R("CONFIGURE on O_PATH fd NULL", xioctl(pathdev, LOOP_CONFIGURE, 0));
	R("CONFIGURE on O_PATH fd ptr=1", xioctl(pathdev, LOOP_CONFIGURE, 1));
	config(&cfg, -1, 0, 0, 0, 0, "cfg");
	R("CONFIGURE fd=-1", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = 9999;
	R("CONFIGURE fd=9999", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = pfd[0];
	R("CONFIGURE pipe", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = dir;
	R("CONFIGURE directory", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = sv[0];
	R("CONFIGURE socket", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = dev;
	R("CONFIGURE itself", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.fd = imgpath;
	R("CONFIGURE O_PATH file", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	config(&cfg, img, 0, 0, 0, 0x80, "cfg");
	R("CONFIGURE flags=0x80", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.info.lo_flags = 0xffffffff;
	R("CONFIGURE flags=0xffffffff", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	config(&cfg, img, 3000, 0, 0, 0, "cfg");
	R("CONFIGURE block_size=3000", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.block_size = 256;
	R("CONFIGURE block_size=256", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.block_size = 131072;
	R("CONFIGURE block_size=131072", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	cfg.block_size = 1U << 31;
	R("CONFIGURE block_size=1<<31", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	config(&cfg, img, 0, 1ULL << 63, 0, 0, "cfg");
	R("CONFIGURE offset=1<<63", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	config(&cfg, img, 0, 0, 0, 0, "cfg");
	cfg.info.lo_encrypt_type = LO_CRYPT_XOR;
	R("CONFIGURE encrypt_type=XOR", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	config(&cfg, img, 0, 0, 0, 0, "cfg");
	cfg.info.lo_encrypt_key_size = 33;
	R("CONFIGURE encrypt_key_size=33", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	state("after refused CONFIGUREs", dev, N);

	config(&cfg, img, 4096, 4096, MiB, LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN, "cfg-window");
	R("CONFIGURE bs=4096 offset=4096 sizelimit=1MiB AUTOCLEAR|PARTSCAN at page end",
	  xioctl(dev, LOOP_CONFIGURE, (unsigned long)atend(&cfg, sizeof(cfg))));
	state("configured window", dev, N);
	R("CONFIGURE again (bound)", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	R("CLR_FD", xioctl(dev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);

	config(&cfg, img, 0, 0, 0, LO_FLAGS_AUTOCLEAR | LO_FLAGS_READ_ONLY, "cfg-autoclear");
	R("CONFIGURE AUTOCLEAR|READ_ONLY cmd|0xdeadbeef<<32",
	  xioctl(dev, 0xdeadbeef00000000UL | LOOP_CONFIGURE, (unsigned long)&cfg));
	state("configured autoclear", dev, N);
	xclose(&rodev);
	xclose(&dev);
	dev = opendev("reopen loopN after autoclear", O_RDWR);
	rodev = opendev("reopen loopN O_RDONLY", O_RDONLY);
	state("after autoclear", dev, N);

	config(&cfg, img, 0, 0, 0, LO_FLAGS_DIRECT_IO, "cfg-dio");
	cfg.__reserved[0] = 1;
	cfg.__reserved[7] = ~0ULL;
	R("CONFIGURE DIRECT_IO reserved!=0 on O_RDONLY fd", xioctl(rodev, LOOP_CONFIGURE, (unsigned long)&cfg));
	state("configured dio", dev, N);
	R("CLR_FD", xioctl(rodev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);

	config(&cfg, ro, 512, 0, 0, 0, "cfg-ro");
	R("CONFIGURE read-only file", xioctl(dev, LOOP_CONFIGURE, (unsigned long)&cfg));
	state("configured ro.img", dev, N);
	R("CHANGE_FD same size after CONFIGURE", xioctl(dev, LOOP_CHANGE_FD, same));
	state("changed to same.img", dev, N);
	R("CLR_FD", xioctl(dev, LOOP_CLR_FD, 0));
	reopen(&dev, &rodev);

	/* --- loop commands on other files ------------------------------------ */
	{
		struct {
			const char *name;
			int fd;
		} fds[] = {
			{"pipe", pfd[0]}, {"regular file", img}, {"/dev/null", null},
			{"directory", dir}, {"socket", sv[0]}, {"O_PATH file", imgpath},
		};
		struct {
			const char *name;
			unsigned long cmd;
			unsigned long arg;
		} cmds[] = {
			{"SET_FD", LOOP_SET_FD, (unsigned long)img},
			{"CLR_FD", LOOP_CLR_FD, 0},
			{"GET_STATUS64", LOOP_GET_STATUS64, (unsigned long)&li},
			{"GET_STATUS64 NULL", LOOP_GET_STATUS64, 0},
			{"SET_STATUS64 ptr=1", LOOP_SET_STATUS64, 1},
			{"CONFIGURE", LOOP_CONFIGURE, (unsigned long)&cfg},
			{"SET_BLOCK_SIZE", LOOP_SET_BLOCK_SIZE, 4096},
			{"LOOP_CTL_GET_FREE", LOOP_CTL_GET_FREE, 0},
			{"LOOP_CTL_ADD 0x7fffffff", LOOP_CTL_ADD, 0x7fffffff},
			{"LOOP_CTL_REMOVE -1", LOOP_CTL_REMOVE, ~0UL},
		};
		config(&cfg, img, 0, 0, 0, 0, "cfg");
		for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
			for (size_t j = 0; j < sizeof(cmds) / sizeof(cmds[0]); j++) {
				snprintf(step, sizeof(step), "%s on %s", cmds[j].name, fds[i].name);
				R(step, xioctl(fds[i].fd, cmds[j].cmd, cmds[j].arg));
			}
		/* loop device commands on loop-control */
		for (size_t j = 0; j < 7; j++) {
			snprintf(step, sizeof(step), "%s on loop-control", cmds[j].name);
			R(step, xioctl(ctl, cmds[j].cmd, cmds[j].arg));
		}
		snprintf(step, sizeof(step), "CLR_FD cmd|0xdeadbeef<<32 on loop-control");
		R(step, xioctl(ctl, 0xdeadbeef00000000UL | LOOP_CLR_FD, 0));
	}
	state("still unbound", dev, N);

	/* --- loop-control: out-of-range and foreign indices ------------------- */
	R("LOOP_CTL_ADD 0x7fffffff", xioctl(ctl, LOOP_CTL_ADD, 0x7fffffff));
	R("LOOP_CTL_ADD 1<<20", xioctl(ctl, LOOP_CTL_ADD, 1 << 20));
	R("LOOP_CTL_ADD (1<<32)|0x7fffffff", xioctl(ctl, LOOP_CTL_ADD, HIGH32 | 0x7fffffff));
	R("LOOP_CTL_ADD N (exists, unbound, open)", xioctl(ctl, LOOP_CTL_ADD, N));
	R("LOOP_CTL_ADD (1<<32)|N", xioctl(ctl, LOOP_CTL_ADD, HIGH32 | N));
	R("LOOP_CTL_REMOVE -1", xioctl(ctl, LOOP_CTL_REMOVE, -1L));
	R("LOOP_CTL_REMOVE 0xffffffff", xioctl(ctl, LOOP_CTL_REMOVE, 0xffffffffUL));
	R("LOOP_CTL_REMOVE 0x80000000", xioctl(ctl, LOOP_CTL_REMOVE, 0x80000000UL));
	R("LOOP_CTL_REMOVE 0x7fffffff", xioctl(ctl, LOOP_CTL_REMOVE, 0x7fffffff));
	R("LOOP_CTL_REMOVE 1<<20", xioctl(ctl, LOOP_CTL_REMOVE, 1 << 20));
	R("LOOP_CTL_REMOVE 999999 (absent)", xioctl(ctl, LOOP_CTL_REMOVE, 999999));
	R("LOOP_CTL_REMOVE N (unbound, open)", xioctl(ctl, LOOP_CTL_REMOVE, N));
	R("LOOP_CTL_REMOVE (1<<32)|N (unbound, open)", xioctl(ctl, LOOP_CTL_REMOVE, HIGH32 | N));
	R("LOOP_CTL_REMOVE N on O_RDONLY loop-control", xioctl(ctlro, LOOP_CTL_REMOVE, N));
	{
		int m = free_index(4000);
		long r2;
		int e;

		errno = 0;
		r2 = xioctl(ctl, LOOP_CTL_ADD, m);
		e = errno;
		report("LOOP_CTL_ADD free index", r2, e, r2 == m ? "arg" : idx(r2));
		if (r2 >= 0) {
			note("created loop%ld by LOOP_CTL_ADD", r2);
			R("LOOP_CTL_ADD same index again", xioctl(ctl, LOOP_CTL_ADD, m));
			removed("LOOP_CTL_REMOVE (1<<32)|index", ctl, HIGH32 | (unsigned long)r2, r2);
			R("LOOP_CTL_REMOVE index again", xioctl(ctl, LOOP_CTL_REMOVE, r2));
		}
		errno = 0;
		r2 = xioctl(ctl, LOOP_CTL_ADD, 0x80000000UL);
		e = errno;
		report("LOOP_CTL_ADD 0x80000000 (negative: any index)", r2, e, idx(r2));
		if (r2 >= 0) {
			note("created loop%ld by LOOP_CTL_ADD", r2);
			removed("LOOP_CTL_REMOVE it", ctl, r2, r2);
		}
	}
	/* loop-control through O_PATH: the kernel refuses a path-only fd */
	RI("LOOP_CTL_GET_FREE on O_PATH loop-control", xioctl(ctlpath, LOOP_CTL_GET_FREE, 0));
	R("LOOP_CTL_ADD 0x7fffffff on O_PATH loop-control", xioctl(ctlpath, LOOP_CTL_ADD, 0x7fffffff));
	R("LOOP_CTL_REMOVE -1 on O_PATH loop-control", xioctl(ctlpath, LOOP_CTL_REMOVE, -1L));
	R("LOOP_CTL_REMOVE N on O_PATH loop-control", xioctl(ctlpath, LOOP_CTL_REMOVE, N));

	/* --- the end: GET_FREE while N is bound, then unbind ----------------- */
	R("SET_FD rw file", xioctl(dev, LOOP_SET_FD, img));
	free(existed);
	scan_existing();
	{
		long m = xioctl(ctl, LOOP_CTL_GET_FREE, 0);
		int e = errno;

		report("LOOP_CTL_GET_FREE while N bound", m, e, idx(m));
		if (m >= 0 && m != N && m < (1 << 20) && !existed[m])
			note("created loop%ld by LOOP_CTL_GET_FREE", m);
	}
	R("CLR_FD", xioctl(dev, LOOP_CLR_FD, 0));
	xclose(&rodev);
	xclose(&pathdev);
	xclose(&dev);
	dev = opendev("reopen loopN O_RDONLY", O_RDONLY);
	R("CLR_FD at the end", xioctl(dev, LOOP_CLR_FD, 0));
	state("final", dev, N);
	xclose(&dev);
	printf("done\n");
	return 0;
}
