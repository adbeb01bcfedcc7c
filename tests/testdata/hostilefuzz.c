/*
 * hostilefuzz: a randomized hostile client of the calls loopvisor traps
 * (tests/hostile_fuzz_test.go).
 *
 *   hostilefuzz fuzz   SEED CALLS SCRATCH BASE DECOY THREADS
 *   hostilefuzz replay SEED CALLS SCRATCH BASE DECOY
 *
 * SCRATCH  a directory the client owns; it mounts a tmpfs on SCRATCH/t and
 *          keeps every file it creates and every mount target in there.
 *          SCRATCH/ext.img, if present, is copied in (an ext4 image).
 * BASE     first of 8 loop indices that are free on the machine: the
 *          client may LOOP_CTL_ADD them (and removes what it added).
 * DECOY    a loop index that exists and belongs to someone else (the test);
 *          the client tries to ADD it (both modes) and REMOVE it (fuzz only).
 *
 * Every call draws a fixed number of random words from a seeded PRNG
 * (splitmix64), so the sequence depends on SEED only, not on results.
 *
 * fuzz: THREADS threads issue trapped calls until CALLS have been made in
 * total: loop and loop-control ioctls (and their cmd|garbage<<32 variants),
 * BLKRRPART, BLKPG on own devices, loop-control, pipes, files, O_PATH fds,
 * closed and huge fds, with NULL, unmapped, guard-page, straddling,
 * read-only, kernel, non-canonical and valid pointers to random or sane
 * structures; mount(2), umount2(2), fsopen(2) with random flags, types,
 * options and paths inside SCRATCH/t; the same through int $0x80 (i386)
 * and the x32 syscall numbers. The main thread signals the workers
 * (SIGUSR1 interrupts, SIGUSR2 restarts) and forks children that it
 * SIGKILLs in the middle of their calls. Prints a histogram of
 * (op, errno) and "fuzz done N calls"; one call in 1000 is traced to
 * stderr as "# t op class -> errno".
 *
 * replay: one thread, no signals, no children; one line per call on stdout:
 * "seq op class -> errno". Nothing that may legitimately differ between the
 * host and a sandbox (indices, fd numbers, addresses) is printed. Calls that
 * could hurt the machine if they unexpectedly succeeded as host root are
 * never made in either mode: mount targets and bind sources stay inside the
 * private tmpfs, MS_REMOUNT only comes with MS_BIND (per-mount flags, never
 * a superblock), sources are never host block devices, options come from a
 * vocabulary without errors=panic and friends, LOOP_CTL_REMOVE names only
 * devices the client added (or absent indices, and the decoy in fuzz mode,
 * i.e. inside a sandbox).
 *
 * Notes for the caller on stderr: "# loopprobe: created loopX by ..." and
 * "# loopprobe: removed loopX" (the format of loopprobe, so that the test
 * can clean up the host after the replay as root).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKPG
#define BLKPG 0x1269
#endif
#define KADDR 0xffffffff81000000UL
#define NONCANON 0x0000800000000000UL
#define IMGSIZE (4L << 20)
#define NSLOT 3
#define NR_I386_IOCTL 54
#define NR_I386_MOUNT 21
#define NR_I386_UMOUNT 22
#define NR_I386_UMOUNT2 52
#define NR_I386_FSOPEN 430
#define X32_BIT 0x40000000L
#define NR_X32_IOCTL 514
#define NR_X32_MOUNT 165
#define NR_X32_UMOUNT2 166
#define NR_X32_FSOPEN 430

static int replay;
static long total;                /* calls to make */
static atomic_long *done_calls;   /* shared with children */
static atomic_int *stop;
static int base_idx, decoy_idx;
static int *seen;                 /* fuzz: 32 indices devices were got at (shared) */
static unsigned char existed0[1 << 16]; /* loop indices present at start */
static char tdir[512];            /* SCRATCH/t, absolute */
static long pg;

/* ---- PRNG ----------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#define NR 12 /* random words per call */

/* ---- per-thread state ------------------------------------------------------ */

struct slot {
	int idx;       /* -1: empty */
	int rw, ro, path;
	int added;     /* obtained by LOOP_CTL_ADD: the client may remove it */
};

struct th {
	int id;
	uint64_t seed;
	/* 8 pages below 4 GiB (int $0x80 takes 32-bit pointers):
	 * 0-1 rw structs | 2 guard | 3 ro | 4 unmapped | 5-6 long strings | 7 paths */
	char *mem;
	struct slot s[NSLOT];
	pthread_t pt;
	long calls;
};

/* fds shared by all threads, opened once */
static int ctl, ctlro, ctlpath, img, imgpath, roimg, sameimg, smallimg, extimg;
static int pipefd[2], sv[2], dirfd_, nullfd, closedfd;
static int have_ext;

/* ---- histogram ------------------------------------------------------------- */

#define NOPS 64
static const char *opnames[NOPS];
static atomic_long hist[NOPS][136];

static int opid(const char *name)
{
	for (int i = 0; i < NOPS; i++) {
		if (opnames[i] == name)
			return i;
		if (!opnames[i]) {
			opnames[i] = name;
			return i;
		}
	}
	return NOPS - 1;
}

static pthread_mutex_t opmu = PTHREAD_MUTEX_INITIALIZER;

/* time spent per kind of call (fuzz mode), to see what the supervisor is slow at */
static atomic_long kind_ns[32], kind_n[32];
static const char *kind_names[32] = {
	"SET_FD", "CLR_FD", "SET_STATUS", "GET_STATUS", "SET_STATUS64", "GET_STATUS64",
	"CHANGE_FD", "SET_CAPACITY", "SET_DIRECT_IO", "SET_BLOCK_SIZE", "CONFIGURE",
	"CTL_ADD", "CTL_REMOVE", "CTL_GET_FREE", "BLKRRPART", "BLKPG",
	"mount", "umount2", "fsopen", "release",
};

static long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static const char *ename(int e)
{
	static __thread char buf[16];
	const char *n;

	if (e == 0)
		return "OK";
	n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

static void note(const char *fmt, ...)
{
	va_list ap;
	char buf[256];
	int n;

	va_start(ap, fmt);
	n = snprintf(buf, sizeof(buf), "# loopprobe: ");
	vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	if (write(2, buf, strlen(buf)) < 0)
		_exit(3);
}

/* record accounts one trapped call: op (a string literal), its argument
 * class and errno (0: success). */
static void record(struct th *t, const char *op, const char *cls, long r, int err)
{
	int e = r < 0 ? err : 0;
	long n;

	n = atomic_fetch_add(done_calls, 1) + 1;
	t->calls++;
	if (replay) {
		printf("%ld %s %s -> %s\n", n, op, cls, ename(e));
		return;
	}
	pthread_mutex_lock(&opmu);
	int id = opid(op);
	pthread_mutex_unlock(&opmu);
	atomic_fetch_add(&hist[id][e < 135 ? e : 135], 1);
	if (n % 1000 == 0) {
		char buf[256];

		snprintf(buf, sizeof(buf), "# %d %s %s -> %s\n", t->id, op, cls, ename(e));
		if (write(2, buf, strlen(buf)) < 0)
			_exit(3);
	}
	if (n >= total)
		atomic_store(stop, 1);
}

/* ---- raw calls ------------------------------------------------------------- */

static long sys(long nr, long a, long b, long c, long d, long e)
{
	errno = 0;
	return syscall(nr, a, b, c, d, e);
}

/* int $0x80 from 64-bit code: the i386 ABI. */
static long sys32(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	register long r8 asm("r8");
	register long r9 asm("r9");
	register long r10 asm("r10");
	register long r11 asm("r11");

	(void)e;
	asm volatile("push %%rbp\n\tint $0x80\n\tpop %%rbp"
		     : "=a"(ret), "=r"(r8), "=r"(r9), "=r"(r10), "=r"(r11)
		     : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(0L)
		     : "memory", "cc");
	if (ret < 0 && ret > -4096) {
		errno = -ret;
		return -1;
	}
	errno = 0;
	return ret;
}

/* ---- capabilities ----------------------------------------------------------- */

struct caphdr { uint32_t version; int pid; };
struct capdata { uint32_t eff, perm, inh; };

/* setadmin raises or drops CAP_SYS_ADMIN in the calling thread's effective set. */
static void setadmin(int on)
{
	struct caphdr h = {0x20080522, 0};
	struct capdata d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return;
	if (on)
		d[0].eff |= 1U << 21;
	else
		d[0].eff &= ~(1U << 21);
	syscall(SYS_capset, &h, d);
}

/* ---- argument classes -------------------------------------------------------- */

/* a loop index for LOOP_CTL_ADD/REMOVE; *cls names its class */
static unsigned long pick_index(struct th *t, uint64_t r, int remove, const char **cls)
{
	struct slot *s = &t->s[(r >> 8) % NSLOT];

	switch (r % 12) {
	case 0: *cls = "idx=-1"; return ~0UL;
	case 1: *cls = "idx=0x7fffffff"; return 0x7fffffff;
	case 2: *cls = "idx=1<<20"; return 1UL << 20;
	case 3: *cls = "idx=0x80000000"; return 0x80000000UL; /* negative as an int */
	case 4: *cls = "idx=(1<<32)|base"; return (1UL << 32) | (unsigned)(base_idx + (r >> 16) % 8);
	case 5:
		if (remove && replay) { /* as host root this would remove it */
			*cls = "idx=absent";
			return base_idx + 9;
		}
		*cls = "idx=decoy";
		return decoy_idx;
	case 6:
		if (!replay && remove) { /* any device some thread or child got */
			*cls = "idx=seen";
			return seen[(r >> 16) % 32];
		}
		/* fall through */
	case 7: case 8:
		*cls = "idx=base";
		return base_idx + (r >> 16) % 8;
	default:
		if (s->idx >= 0 && (!remove || s->added || !replay)) {
			*cls = "idx=own";
			return s->idx;
		}
		*cls = "idx=absent";
		return base_idx + 8; /* never added */
	}
}

/* a file descriptor for a loop ioctl's target: dev > 0 one of a slot's device fds, dev < 0 never a device */
static int pick_target(struct th *t, uint64_t r, int dev, const char **cls)
{
	struct slot *s = &t->s[(r >> 8) % NSLOT];

	switch (dev > 0 ? 13 : dev < 0 ? r % 13 : r % 20) {
	case 0: case 1: *cls = "fd=ctl"; return ctl;
	case 2: *cls = "fd=ctl-ro"; return ctlro;
	case 3: *cls = "fd=ctl-path"; return ctlpath;
	case 4: *cls = "fd=pipe"; return pipefd[0];
	case 5: *cls = "fd=file"; return img;
	case 6: *cls = "fd=file-path"; return imgpath;
	case 7: *cls = "fd=dir"; return dirfd_;
	case 8: *cls = "fd=null"; return nullfd;
	case 9: *cls = "fd=sock"; return sv[0];
	case 10: *cls = "fd=closed"; return closedfd;
	case 11: *cls = "fd=-1"; return -1;
	case 12: *cls = "fd=99999"; return 99999;
	default:
		if (s->idx < 0) {
			*cls = "fd=closed";
			return closedfd;
		}
		switch ((r >> 16) % 8) {
		case 0: *cls = "fd=dev-ro"; return s->ro;
		case 1: *cls = "fd=dev-path"; return s->path;
		default: *cls = "fd=dev"; return s->rw;
		}
	}
}

/* a backing fd for SET_FD/CHANGE_FD/CONFIGURE */
static int pick_backing(struct th *t, uint64_t r, const char **cls)
{
	struct slot *s = &t->s[(r >> 8) % NSLOT];

	switch (r % 16) {
	case 0: case 1: case 2: *cls = "bfd=img"; return img;
	case 3: *cls = "bfd=ro.img"; return roimg;
	case 4: *cls = "bfd=same.img"; return sameimg;
	case 5: *cls = "bfd=small.img"; return smallimg;
	case 6: *cls = "bfd=ext.img"; return have_ext ? extimg : img;
	case 7: *cls = "bfd=pipe"; return pipefd[0];
	case 8: *cls = "bfd=dir"; return dirfd_;
	case 9: *cls = "bfd=sock"; return sv[0];
	case 10: *cls = "bfd=null"; return nullfd;
	case 11: *cls = "bfd=path"; return imgpath;
	case 12: *cls = "bfd=closed"; return closedfd;
	case 13: *cls = "bfd=-1"; return -1;
	default:
		if (s->idx >= 0) {
			*cls = "bfd=loop";
			return s->rw;
		}
		*cls = "bfd=img";
		return img;
	}
}

/* fill a loop_info64 at p, sane or random */
static void fill_info(struct th *t, struct loop_info64 *li, uint64_t r, uint64_t r2)
{
	(void)t;
	if (r % 3 == 0) {
		uint64_t x = r2;

		for (size_t i = 0; i < sizeof(*li); i++) {
			((unsigned char *)li)[i] = (unsigned char)x;
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			x ^= x >> 29;
		}
		return;
	}
	memset(li, 0, sizeof(*li));
	static const uint64_t offs[] = {0, 512, 4096, 1UL << 20, 1UL << 63, 4095};
	li->lo_offset = offs[(r2 >> 4) % 6];
	li->lo_sizelimit = offs[(r2 >> 8) % 6];
	li->lo_flags = (uint32_t)((r2 >> 12) & 0x1f); /* RO AUTOCLEAR PARTSCAN DIO */
	if ((r2 >> 20) % 8 == 0)
		li->lo_encrypt_type = (r2 >> 24) % 20;
	if ((r2 >> 28) % 8 == 0)
		li->lo_encrypt_key_size = (r2 >> 32) % 40;
	snprintf((char *)li->lo_file_name, LO_NAME_SIZE, "hf%u", (unsigned)(r2 >> 40) % 100);
}

/* a pointer to a struct of size n for cmd; fills the buffer it points to */
static unsigned long pick_ptr(struct th *t, uint64_t r, uint64_t r2, size_t n, int kind, const char **cls,
			      int backing)
{
	char *rw = t->mem, *guard = t->mem + 2 * pg, *ro = t->mem + 3 * pg, *unm = t->mem + 4 * pg;
	char *buf = rw + 64; /* room before and after */

	switch (r % 16) {
	case 0: *cls = "ptr=NULL"; return 0;
	case 1: *cls = "ptr=1"; return 1;
	case 2: *cls = "ptr=unmapped"; return (unsigned long)unm;
	case 3: *cls = "ptr=guard"; return (unsigned long)guard;
	case 4: {
		size_t k = 1 + (r2 % (n - 1));

		*cls = "ptr=straddle";
		memset(guard - k, 0, k);
		return (unsigned long)(guard - k);
	}
	case 5: *cls = "ptr=ro"; return (unsigned long)ro;
	case 6: *cls = "ptr=kernel"; return KADDR;
	case 7: *cls = "ptr=noncanon"; return NONCANON;
	case 8: case 9: *cls = "ptr=atend"; buf = guard - n; break;
	default: *cls = "ptr=buf"; break;
	}
	/* valid: fill it */
	if (kind == 1) { /* loop_info64 */
		fill_info(t, (struct loop_info64 *)buf, r2, r2 * 31 + 7);
	} else if (kind == 2) { /* loop_config */
		struct loop_config *c = (struct loop_config *)buf;

		fill_info(t, &c->info, r2, r2 * 31 + 7);
		c->fd = backing;
		static const uint32_t bs[] = {0, 512, 1024, 4096, 3000, 256, 131072, 1U << 31};
		c->block_size = bs[(r2 >> 44) % 8];
		memset(c->__reserved, 0, sizeof(c->__reserved));
		if ((r2 >> 50) % 8 == 0)
			c->__reserved[(r2 >> 53) % 8] = r2;
		if ((r2 >> 56) % 16 == 0)
			c->fd = (uint32_t)(r2 >> 20);
	} else if (kind == 3) { /* loop_info (old) */
		struct loop_info *o = (struct loop_info *)buf;

		memset(o, 0, sizeof(*o));
		o->lo_offset = (int)((r2 >> 4) % 3) * 512;
		o->lo_flags = (int)((r2 >> 12) & 0x1f);
		if ((r2 >> 20) % 6 == 0)
			o->lo_encrypt_type = (r2 >> 24) % 20;
	} else if (kind == 4) { /* blkpg_ioctl_arg + struct blkpg_partition */
		struct { int op, flags, datalen; int pad; unsigned long data; } *a = (void *)buf;
		/* struct blkpg_partition: start, length, pno, devname[64], volname[64]; 152 bytes */
		char *p = rw + 1024;
		size_t mapped = 152;
		static const long long st[] = {0, 512, 1 << 20, -512, 1000};
		static const long long ln[] = {512, 1 << 20, 0, -1, 1LL << 40};
		long long v;
		int pno;

		if ((r2 >> 40) % 4 == 0) { /* straddles the guard page: 144..151 bytes mapped */
			mapped = 144 + (r2 >> 50) % 8;
			p = guard - mapped;
		}
		memset(p, 0, mapped);
		v = st[(r2 >> 16) % 5];
		memcpy(p, &v, 8);
		v = ln[(r2 >> 20) % 5];
		memcpy(p + 8, &v, 8);
		pno = (int)((r2 >> 24) % 6) - 1;
		memcpy(p + 16, &pno, 4);
		a->op = (int)((r2 >> 4) % 5); /* 0 bad, 1 add, 2 del, 3 resize, 4 bad */
		a->flags = 0;
		a->pad = 0;
		a->datalen = (r2 >> 8) % 4 == 0 ? 0 : 152;
		a->data = (r2 >> 12) % 8 == 0 ? (unsigned long)unm : (unsigned long)p;
	} else { /* random bytes */
		uint64_t x = r2;

		for (size_t i = 0; i < n; i++) {
			buf[i] = (char)x;
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		}
	}
	return (unsigned long)buf;
}

/* ---- slots ------------------------------------------------------------------ */

static void slot_open(struct th *t, int i, int idx, int added)
{
	char p[64];
	struct slot *s = &t->s[i];

	snprintf(p, sizeof(p), "/dev/loop%d", idx);
	s->rw = open(p, O_RDWR | O_CLOEXEC);
	s->ro = open(p, O_RDONLY | O_CLOEXEC);
	s->path = open(p, O_PATH | O_CLOEXEC);
	s->idx = idx;
	s->added = added;
	if (s->rw < 0 && s->ro < 0) {
		if (s->path >= 0)
			close(s->path);
		s->idx = -1;
	}
}

static void slot_close(struct slot *s)
{
	if (s->idx < 0)
		return;
	if (s->rw >= 0)
		close(s->rw);
	if (s->ro >= 0)
		close(s->ro);
	if (s->path >= 0)
		close(s->path);
	s->rw = s->ro = s->path = -1;
	s->idx = -1;
}

/* ---- path and string classes ------------------------------------------------ */

static const char *pick_fstype(uint64_t r, char *longbuf, const char **cls)
{
	static const char *types[] = {
		"ext4", "ext2", "ext3", "squashfs", "vfat", "tmpfs", "ramfs", "proc",
		"xfs", "btrfs", "erofs", "nosuchfs", "", "fuse", "overlay", "ext4",
	};

	switch (r % 20) {
	case 16: *cls = "type=NULL"; return NULL;
	case 17: *cls = "type=bad"; return (const char *)1;
	case 18:
		*cls = "type=long";
		memset(longbuf, 'x', 5000);
		longbuf[5000] = 0;
		return longbuf;
	case 19: *cls = "type=ext4"; return "ext4";
	default: {
		static __thread char c[32];

		snprintf(c, sizeof(c), "type=%s", types[r % 16]);
		*cls = c;
		return types[r % 16];
	}
	}
}

static char *pathin(char *buf, const char *rel)
{
	snprintf(buf, 600, "%s/%s", tdir, rel);
	return buf;
}

static const char *pick_target_path(uint64_t r, char *buf, char *longbuf, const char **cls)
{
	static const char *rels[] = {"m0", "m1", "m2", "m0/d", "f", "nx", "m1/", "m3"};

	switch (r % 12) {
	case 8: *cls = "tgt=NULL"; return NULL;
	case 9: *cls = "tgt=bad"; return (const char *)1;
	case 10: *cls = "tgt=empty"; return "";
	case 11:
		*cls = "tgt=long";
		memset(longbuf, 'y', 5000);
		longbuf[5000] = 0;
		return longbuf;
	default: {
		static __thread char c[32];

		snprintf(c, sizeof(c), "tgt=%s", rels[r % 8]);
		*cls = c;
		if ((r >> 8) % 2)
			return rels[r % 8]; /* relative: cwd is SCRATCH/t */
		return pathin(buf, rels[r % 8]);
	}
	}
}

static const char *pick_source(struct th *t, uint64_t r, char *buf, const char **cls)
{
	struct slot *s = &t->s[(r >> 8) % NSLOT];

	switch (r % 12) {
	case 0: *cls = "src=NULL"; return NULL;
	case 1: *cls = "src=bad"; return (const char *)1;
	case 2: *cls = "src=none"; return "none";
	case 3: *cls = "src=nonexistent"; return "/nonexistent-hostilefuzz";
	case 4: *cls = "src=file"; return pathin(buf, "ext.img");
	case 5: *cls = "src=dir"; return pathin(buf, "d");
	case 6: *cls = "src=empty"; return "";
	default:
		if (s->idx >= 0) {
			*cls = "src=own-loop";
			snprintf(buf, 600, "/dev/loop%d", s->idx);
			return buf;
		}
		*cls = "src=none";
		return "none";
	}
}

static const char *pick_data(struct th *t, uint64_t r, const char **cls)
{
	static const char *opts[] = {
		"ro", "rw", "size=1m", "mode=755", "noatime", "bogus=1", "errors=continue",
		"errors=remount-ro", "uid=0", "nr_inodes=100", "user_xattr", "data=ordered",
		"data=journal", "loop", "acl", "",
	};
	char *buf = t->mem + pg + 512;

	switch (r % 10) {
	case 0: case 1: case 2: *cls = "data=NULL"; return NULL;
	case 3: *cls = "data=bad"; return (const char *)1;
	case 4: *cls = "data=atend"; memcpy(t->mem + 2 * pg - 3, "ro", 3); return t->mem + 2 * pg - 3;
	default: {
		int n = 1 + (r >> 8) % 3;

		buf[0] = 0;
		for (int i = 0; i < n; i++) {
			if (i)
				strcat(buf, ",");
			strcat(buf, opts[(r >> (12 + 4 * i)) % 16]);
		}
		*cls = "data=opts";
		return buf;
	}
	}
}

static unsigned long pick_mflags(uint64_t r, const char **cls)
{
	static const unsigned long bits[] = {
		MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_MANDLOCK, MS_DIRSYNC,
		MS_NOATIME, MS_NODIRATIME, MS_SILENT, MS_POSIXACL, MS_RELATIME, MS_STRICTATIME,
		MS_LAZYTIME, MS_I_VERSION, MS_REC, MS_NOSYMFOLLOW, 1UL << 22 /* MS_KERNMOUNT */,
		1UL << 31 /* MS_NOUSER */, 1UL << 26, 1UL << 40,
	};
	unsigned long f = 0;

	switch (r % 16) {
	case 0: *cls = "flags=0"; return 0;
	case 1: *cls = "flags=MGC"; return 0xC0ED0000UL | MS_RDONLY;
	case 2: *cls = "flags=private"; return MS_PRIVATE | ((r >> 8) % 2 ? MS_REC : 0);
	case 3: *cls = "flags=shared"; return MS_SHARED;
	case 4: *cls = "flags=bind"; return MS_BIND | ((r >> 8) % 2 ? MS_REC : 0);
	case 5: *cls = "flags=remount-bind"; return MS_REMOUNT | MS_BIND | MS_RDONLY;
	case 6: *cls = "flags=move"; return MS_MOVE;
	default:
		for (int i = 0; i < 21; i++)
			if ((r >> (8 + i)) & 1 && ((r >> 40) % 4 == 0 || bits[i] < (1UL << 22)))
				f |= bits[i];
		*cls = "flags=rand";
		return f;
	}
}

/* ---- one call --------------------------------------------------------------- */

static int heavy_mask = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 10) |
			 (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15);
/* 1 in N of these keeps its device target (fuzz mode): measured here, a
 * SET_STATUS(64), SET_DIRECT_IO or SET_BLOCK_SIZE of a bound device takes
 * 3-10 ms (queue freeze), LOOP_CTL_ADD/REMOVE 15-50 ms */
static const int heavy_one_in[16] = {
	[0] = 12, [2] = 48, [4] = 48, [6] = 12, [8] = 48, [9] = 48, [10] = 12,
	[11] = 64, [12] = 64, [14] = 12, [15] = 12,
};

static const unsigned long loopcmds[] = {
	LOOP_SET_FD, LOOP_CLR_FD, LOOP_SET_STATUS, LOOP_GET_STATUS, LOOP_SET_STATUS64,
	LOOP_GET_STATUS64, LOOP_CHANGE_FD, LOOP_SET_CAPACITY, LOOP_SET_DIRECT_IO,
	LOOP_SET_BLOCK_SIZE, LOOP_CONFIGURE, LOOP_CTL_ADD, LOOP_CTL_REMOVE, LOOP_CTL_GET_FREE,
	BLKRRPART, BLKPG,
};
static const char *loopnames[] = {
	"SET_FD", "CLR_FD", "SET_STATUS", "GET_STATUS", "SET_STATUS64", "GET_STATUS64",
	"CHANGE_FD", "SET_CAPACITY", "SET_DIRECT_IO", "SET_BLOCK_SIZE", "CONFIGURE",
	"CTL_ADD", "CTL_REMOVE", "CTL_GET_FREE", "BLKRRPART", "BLKPG",
};

static void ioctl_call(struct th *t, uint64_t *r, int abi)
{
	int ci = r[1] % 16;
	unsigned long cmd = loopcmds[ci];
	const char *fcls, *acls = "", *bcls = "";
	int fd, unpriv = (r[0] >> 20) % 16 == 0, nodev = 0;
	unsigned long arg = 0, fdarg;
	char cls[200];
	long ret;
	int e;

	/*
	 * Fuzz mode: commands that change a device's state cost the kernel
	 * milliseconds (queue freezes, RCU syncs, device creation) whoever
	 * issues them; most of them get a target on which they fail fast, so
	 * that 10^6 calls fit in minutes. Replay keeps the full mix.
	 */
	if (!replay && ((1 << ci) & heavy_mask) && r[9] % heavy_one_in[ci] != 0) {
		static const int cheap[] = {3, 5, 1, 7, 13}; /* GET_STATUS, GET_STATUS64, CLR_FD, SET_CAPACITY, GET_FREE */

		if (r[9] % 3 == 0) {
			ci = cheap[(r[9] >> 8) % 5];
			cmd = loopcmds[ci];
		} else {
			nodev = 1; /* same command, a target that is not a device */
		}
	}
	/* loop-control commands mostly on loop-control, device commands mostly on devices */
	if (nodev) {
		fd = pick_target(t, r[2] >> 2, -1, &fcls);
	} else if (ci >= 11 && ci <= 13 && r[2] % 4 != 0) {
		fd = (r[2] >> 4) % 8 ? ctl : ctlro;
		fcls = fd == ctl ? "fd=ctl" : "fd=ctl-ro";
	} else {
		fd = pick_target(t, r[2] >> 2, (ci < 11 || ci > 13) && r[2] % 4 != 0, &fcls);
	}
	/*
	 * Replay: calls whose sandbox answer differs by design or by a known
	 * gap must not change the state either side (or every later line
	 * would differ): the x32 ABI (absent from this kernel: ENOSYS, but
	 * the supervisor serves it) gets a closed fd; the i386 LOOP_SET_STATUS
	 * (not served: EINVAL) a pipe.
	 */
	if (replay && abi == 0) {
		fd = closedfd;
		fcls = "fd=closed";
	}
	if (replay && abi == 32 && ci == 2) {
		fd = pipefd[0];
		fcls = "fd=pipe";
	}
	if (r[3] % 16 == 0)
		cmd |= (r[3] >> 8) << 32 ? (r[3] >> 8) << 32 : 1UL << 32; /* high bits: same command */
	fdarg = (unsigned long)(unsigned)fd;
	if (r[3] % 32 == 1)
		fdarg |= 1UL << 32;
	switch (ci) {
	case 0: case 6: { /* SET_FD, CHANGE_FD */
		int b = pick_backing(t, r[4], &bcls);

		arg = (unsigned long)(unsigned)b;
		if (r[5] % 8 == 0)
			arg |= 1UL << 32;
		break;
	}
	case 2: arg = pick_ptr(t, r[4], r[5], sizeof(struct loop_info), 3, &acls, 0); break;
	case 4: arg = pick_ptr(t, r[4], r[5], sizeof(struct loop_info64), 1, &acls, 0); break;
	case 3: case 5:
		arg = pick_ptr(t, r[4], r[5], ci == 3 ? sizeof(struct loop_info) : sizeof(struct loop_info64), 0, &acls, 0);
		break;
	case 10: {
		int b = pick_backing(t, r[6], &bcls);

		arg = pick_ptr(t, r[4], r[5], sizeof(struct loop_config), 2, &acls, b);
		break;
	}
	case 15: arg = pick_ptr(t, r[4], r[5], 24, 4, &acls, 0); break;
	case 8: {
		static const unsigned long v[] = {0, 1, 2, 1UL << 32, ~0UL};

		arg = v[r[4] % 5];
		acls = "arg=dio";
		break;
	}
	case 9: {
		static const unsigned long v[] = {512, 1024, 4096, 3000, 256, 65536, 131072, 0, (1UL << 32) | 512};

		arg = v[r[4] % 9];
		acls = "arg=bs";
		break;
	}
	case 11: case 12: arg = pick_index(t, r[4], ci == 12, &acls); break;
	default:
		arg = r[4] % 4 ? 0 : r[5];
		acls = arg ? "arg=rand" : "arg=0";
	}
	snprintf(cls, sizeof(cls), "%s%s%s %s %s %s%s%s", unpriv ? "unpriv " : "", abi == 32 ? "i386 " : abi == 64 ? "" : "x32 ",
		 loopnames[ci], fcls, acls, bcls, cmd >> 32 ? " cmd|hi" : "", fdarg >> 32 ? " fd|hi" : "");
	if (unpriv)
		setadmin(0);
	if (abi == 32)
		ret = sys32(NR_I386_IOCTL, (long)fdarg, (long)(cmd & 0xffffffff), (long)(arg & 0xffffffff), 0, 0);
	else if (abi == 64)
		ret = sys(SYS_ioctl, (long)fdarg, (long)cmd, (long)arg, 0, 0);
	else
		ret = sys(X32_BIT | NR_X32_IOCTL, (long)fdarg, (long)cmd, (long)arg, 0, 0);
	e = errno;
	if (unpriv)
		setadmin(1);
	record(t, abi == 64 ? "ioctl" : abi == 32 ? "ioctl32" : "ioctlx32", cls, ret, e);

	/* bookkeeping: devices the client got (by any ABI) */
	if (ret >= 0 && (ci == 11 || ci == 13) && (fd == ctl || fd == ctlro) && abi != 0) {
		struct slot *s = NULL;
		int idx = (int)ret, have = 0;

		if (ci == 11 || idx >= (1 << 16) || !existed0[idx])
			note("created loop%d by %s", idx, ci == 11 ? "LOOP_CTL_ADD" : "LOOP_CTL_GET_FREE");
		if (!replay)
			seen[(r[8] >> 3) % 32] = idx;
		for (int i = 0; i < NSLOT; i++) {
			have |= t->s[i].idx == idx;
			if (!s && t->s[(r[7] + i) % NSLOT].idx < 0)
				s = &t->s[(r[7] + i) % NSLOT];
		}
		/* In replay, only LOOP_CTL_ADD gives the client a device: GET_FREE
		 * legitimately returns different devices in a sandbox (its own
		 * unbound one) and on the host (the host's lowest free one). */
		if (s && !have && (ci == 11 || !replay))
			slot_open(t, s - t->s, idx, ci == 11);
	}
	if (ret == 0 && ci == 12 && (fd == ctl || fd == ctlro) && abi != 0) {
		note("removed loop%d", (int)(unsigned)arg);
		for (int i = 0; i < NSLOT; i++)
			if (t->s[i].idx == (int)(unsigned)arg)
				slot_close(&t->s[i]);
	}
}

/* give a slot back: close its fds, detach, remove it if the client added it */
static void release_call(struct th *t, uint64_t *r)
{
	struct slot *s = &t->s[r[1] % NSLOT];
	char cls[64];
	long ret;
	int idx = s->idx, added = s->added;

	if (idx < 0)
		return;
	if (s->rw >= 0) {
		ret = sys(SYS_ioctl, s->rw, LOOP_CLR_FD, 0, 0, 0);
		record(t, "ioctl", "release CLR_FD fd=dev", ret, errno);
	}
	slot_close(s);
	if (!added && replay)
		return;
	for (int i = 0; i < NSLOT; i++)
		if (t->s[i].idx == idx)
			return;
	ret = sys(SYS_ioctl, ctl, LOOP_CTL_REMOVE, idx, 0, 0);
	snprintf(cls, sizeof(cls), "release CTL_REMOVE idx=own%s", added ? "" : "-getfree");
	record(t, "ioctl", cls, ret, errno);
	if (ret == 0)
		note("removed loop%d", idx);
}

/* lowstr copies a string that lives above 4 GiB (a literal) below it, for int $0x80 */
static void lowstr(struct th *t, const char **p, size_t *off)
{
	unsigned long a = (unsigned long)*p;

	if (a < 4096 || (a >= (unsigned long)t->mem && a < (unsigned long)t->mem + 8 * pg))
		return;
	size_t n = strlen(*p) + 1;
	char *dst = t->mem + 7 * pg + 2048 + *off;

	if (*off + n > 2048)
		return;
	memcpy(dst, *p, n);
	*p = dst;
	*off += n;
}

static void mount_call(struct th *t, uint64_t *r, int abi)
{
	char *sbuf = t->mem + 7 * pg, *tbuf = t->mem + 7 * pg + 1024, cls[300];
	char *longbuf = t->mem + 5 * pg;
	const char *scls, *tcls, *ycls, *fcls, *dcls;
	const char *src = pick_source(t, r[2], sbuf, &scls);
	const char *tgt = pick_target_path(r[3], tbuf, longbuf, &tcls);
	const char *type = pick_fstype(r[4], longbuf, &ycls);
	unsigned long flags = pick_mflags(r[5], &fcls);
	const char *data = pick_data(t, r[6], &dcls);
	int unpriv = (r[0] >> 20) % 16 == 0;
	int trapped = !(flags & (MS_REMOUNT | MS_BIND | MS_MOVE));
	long ret;
	int e;

	if (replay && abi == 0)
		src = NULL, scls = "src=NULL";
	/*
	 * Replay: a proc mount in a user namespace must keep the atime flags
	 * of the proc mount already visible (mount_too_revealing: EPERM), host
	 * root need not; the host's mount would then sit on the target and
	 * every later call there would differ. Keep relatime.
	 */
	if (replay && type && (unsigned long)type > 4096 && strcmp(type, "proc") == 0)
		flags &= ~(unsigned long)(MS_NOATIME | MS_NODIRATIME | MS_STRICTATIME);
	/*
	 * Replay: a mount loopvisor serves with a FUSE helper succeeds or fails
	 * on other grounds than the kernel's (options the helper cannot
	 * honour; MS_NOUSER and MS_NODIRATIME, known divergences, see
	 * divrepro.c): keep to the flags and options both honour, or one side
	 * would hold a mount the other has not.
	 */
	if (replay && type && (unsigned long)type > 4096 && strcmp(scls, "src=own-loop") == 0 &&
	    (!strcmp(type, "ext2") || !strcmp(type, "ext3") || !strcmp(type, "ext4") ||
	     !strcmp(type, "squashfs") || !strcmp(type, "vfat"))) {
		if (strcmp(fcls, "flags=rand") == 0) {
			flags &= MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_SYNCHRONOUS | MS_DIRSYNC;
			fcls = "flags=fuse-honoured";
		}
		if (strcmp(dcls, "data=opts") == 0) {
			data = (r[6] >> 8) % 2 ? "ro" : "rw";
			dcls = "data=ro-or-rw";
		}
	}
	if (tgt == longbuf && type == longbuf) /* both long: keep the type */
		tgt = pathin(tbuf, "m0"), tcls = "tgt=m0";
	if (abi == 32) {
		size_t off = 0;

		flags &= 0xffffffff;
		lowstr(t, &src, &off);
		lowstr(t, &tgt, &off);
		lowstr(t, &type, &off);
		lowstr(t, &data, &off);
	}
	snprintf(cls, sizeof(cls), "%s%s %s %s %s %s %s", unpriv ? "unpriv " : "", abi == 32 ? "i386" : abi == 64 ? "" : "x32",
		 scls, tcls, ycls, fcls, dcls);
	if (unpriv)
		setadmin(0);
	if (abi == 32)
		ret = sys32(NR_I386_MOUNT, (long)src, (long)tgt, (long)type, (long)flags, (long)data);
	else if (abi == 64)
		ret = sys(SYS_mount, (long)src, (long)tgt, (long)type, (long)flags, (long)data);
	else
		ret = sys(X32_BIT | NR_X32_MOUNT, (long)src, (long)tgt, (long)type, (long)flags, (long)data);
	e = errno;
	if (unpriv)
		setadmin(1);
	if (trapped)
		record(t, abi == 64 ? "mount" : abi == 32 ? "mount32" : "mountx32", cls, ret, e);
	else if (replay)
		printf("- mount-untrapped %s -> %s\n", cls, ename(ret < 0 ? e : 0));
}

static void umount_call(struct th *t, uint64_t *r, int abi)
{
	char *tbuf = t->mem + 7 * pg + 1024, cls[200];
	char *longbuf = t->mem + 5 * pg;
	const char *tcls;
	const char *tgt = pick_target_path(r[2], tbuf, longbuf, &tcls);
	static const int fl[] = {0, MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW, 0x10, MNT_DETACH | UMOUNT_NOFOLLOW, 0};
	int flags = fl[r[3] % 8];
	int unpriv = (r[0] >> 20) % 16 == 0;

	/* Replay: MNT_FORCE needs CAP_SYS_ADMIN in the initial user namespace
	 * (do_umount): host root would unmount what the sandbox's root cannot */
	if (replay && flags == MNT_FORCE)
		flags = 0;
	long ret;
	int e;

	if (abi == 32) {
		size_t off = 0;

		lowstr(t, &tgt, &off);
	}
	snprintf(cls, sizeof(cls), "%s%s %s flags=%#x", unpriv ? "unpriv " : "", abi == 32 ? (r[4] % 2 ? "i386-umount" : "i386") : abi == 64 ? "" : "x32",
		 tcls, abi == 32 && r[4] % 2 ? 0 : flags);
	if (unpriv)
		setadmin(0);
	if (abi == 32 && r[4] % 2)
		ret = sys32(NR_I386_UMOUNT, (long)tgt, 0, 0, 0, 0);
	else if (abi == 32)
		ret = sys32(NR_I386_UMOUNT2, (long)tgt, flags, 0, 0, 0);
	else if (abi == 64)
		ret = sys(SYS_umount2, (long)tgt, flags, 0, 0, 0);
	else
		ret = sys(X32_BIT | NR_X32_UMOUNT2, (long)tgt, flags, 0, 0, 0);
	e = errno;
	if (unpriv)
		setadmin(1);
	record(t, abi == 64 ? "umount2" : abi == 32 ? "umount32" : "umountx32", cls, ret, e);
}

static void fsopen_call(struct th *t, uint64_t *r, int abi)
{
	char cls[200];
	char *longbuf = t->mem + 5 * pg;
	const char *ycls;
	const char *type = pick_fstype(r[2], longbuf, &ycls);
	static const unsigned fl[] = {0, 1 /* FSOPEN_CLOEXEC */, 2, 0x80000000u};
	unsigned flags = fl[r[3] % 4];
	int unpriv = (r[0] >> 20) % 16 == 0;
	long ret;
	int e;

	if (abi == 32) {
		size_t off = 0;

		lowstr(t, &type, &off);
	}
	snprintf(cls, sizeof(cls), "%s%s %s flags=%#x", unpriv ? "unpriv " : "", abi == 32 ? "i386" : abi == 64 ? "" : "x32", ycls, flags);
	if (unpriv)
		setadmin(0);
	if (abi == 32)
		ret = sys32(NR_I386_FSOPEN, (long)type, flags, 0, 0, 0);
	else if (abi == 64)
		ret = sys(SYS_fsopen, (long)type, flags, 0, 0, 0);
	else
		ret = sys(X32_BIT | NR_X32_FSOPEN, (long)type, flags, 0, 0, 0);
	e = errno;
	if (unpriv)
		setadmin(1);
	if (ret >= 0)
		close((int)ret);
	record(t, abi == 64 ? "fsopen" : abi == 32 ? "fsopen32" : "fsopenx32", cls, ret, e);
}

/* one random call */
static void one(struct th *t)
{
	uint64_t r[NR];
	int k, abi = 64;

	for (int i = 0; i < NR; i++)
		r[i] = splitmix(&t->seed);
	k = r[0] % 1000;
	if ((r[0] >> 12) % 32 == 0)
		abi = (r[0] >> 17) % 4 ? 32 : 0; /* i386 or x32 */
	long t0 = replay ? 0 : now_ns();
	int kind;

	if (k < 700)
		ioctl_call(t, r, abi), kind = r[1] % 16;
	else if (k < 830)
		mount_call(t, r, abi), kind = 16;
	else if (k < 930)
		umount_call(t, r, abi), kind = 17;
	else if (k < 990)
		fsopen_call(t, r, abi), kind = 18;
	else if (replay || r[9] % 16 == 0) /* device removal costs the kernel ~30 ms */
		release_call(t, r), kind = 19;
	else
		umount_call(t, r, abi), kind = 17;
	if (!replay) {
		atomic_fetch_add(&kind_ns[kind], now_ns() - t0);
		atomic_fetch_add(&kind_n[kind], 1);
	}
}

/* ---- set-up ------------------------------------------------------------------- */

static void die(const char *what)
{
	fprintf(stderr, "hostilefuzz: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void mkimage(const char *name, long size, mode_t mode)
{
	int fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	if (fd < 0 || ftruncate(fd, size) < 0)
		die(name);
	close(fd);
}

static int xopen(const char *name, int flags)
{
	int fd = open(name, flags | O_CLOEXEC);

	if (fd < 0)
		die(name);
	return fd;
}

static void th_init(struct th *t, int id, uint64_t seed)
{
	t->id = id;
	t->seed = seed;
	t->mem = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (t->mem == MAP_FAILED)
		die("mmap");
	if (mprotect(t->mem + 2 * pg, pg, PROT_NONE) < 0 || mprotect(t->mem + 3 * pg, pg, PROT_READ) < 0 ||
	    munmap(t->mem + 4 * pg, pg) < 0)
		die("mprotect");
	for (int i = 0; i < NSLOT; i++)
		t->s[i].idx = -1, t->s[i].rw = t->s[i].ro = t->s[i].path = -1;
}

/* clean up: detach and remove what the thread holds (added devices only) */
static void th_fini(struct th *t)
{
	for (int i = 0; i < NSLOT; i++) {
		struct slot *s = &t->s[i];
		int idx = s->idx, added = s->added;

		if (idx < 0)
			continue;
		if (s->rw >= 0)
			ioctl(s->rw, LOOP_CLR_FD, 0);
		else if (s->ro >= 0)
			ioctl(s->ro, LOOP_CLR_FD, 0);
		slot_close(s);
		if (added) {
			for (int k = 0; k < 100; k++) {
				if (ioctl(ctl, LOOP_CTL_REMOVE, idx) == 0) {
					note("removed loop%d", idx);
					break;
				}
				if (errno != EBUSY)
					break;
				usleep(10000);
			}
		}
	}
}

static void *worker(void *arg)
{
	struct th *t = arg;

	while (!atomic_load(stop))
		one(t);
	return NULL;
}

static void onsig(int s) { (void)s; }

static void unmount_all(void)
{
	static const char *rels[] = {"m0/d", "m0", "m1", "m2", "m3", "f", "d"};
	char p[600];

	for (int round = 0; round < 64; round++) {
		int any = 0;

		for (size_t i = 0; i < sizeof(rels) / sizeof(rels[0]); i++)
			if (umount2(pathin(p, rels[i]), MNT_DETACH) == 0)
				any = 1;
		if (!any)
			break;
	}
}

int main(int argc, char **argv)
{
	uint64_t seed;
	int nthreads = 1;
	char p[600];
	struct th *ths;

	if (argc < 7) {
		fprintf(stderr, "usage: hostilefuzz fuzz|replay SEED CALLS SCRATCH BASE DECOY [THREADS]\n");
		return 2;
	}
	replay = strcmp(argv[1], "replay") == 0;
	seed = strtoull(argv[2], NULL, 0);
	total = atol(argv[3]);
	base_idx = atoi(argv[5]);
	decoy_idx = atoi(argv[6]);
	if (!replay && argc > 7)
		nthreads = atoi(argv[7]);
	pg = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	done_calls = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (done_calls == MAP_FAILED)
		die("mmap");
	stop = (atomic_int *)(done_calls + 1);

	/* private scratch: a tmpfs of our own */
	snprintf(tdir, sizeof(tdir), "%s/t", argv[4]);
	if (mkdir(tdir, 0755) < 0 && errno != EEXIST)
		die(tdir);
	if (mount("hostilefuzz", tdir, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755") < 0)
		die("mount tmpfs");
	if (chdir(tdir) < 0)
		die("chdir");
	mkimage("img", IMGSIZE, 0644);
	mkimage("ro.img", IMGSIZE, 0444);
	mkimage("same.img", IMGSIZE, 0644);
	mkimage("small.img", 1L << 20, 0644);
	mkimage("f", 0, 0644);
	for (const char *d = "m0\0m1\0m2\0m3\0d\0m0/d\0"; *d; d += strlen(d) + 1)
		if (mkdir(d, 0755) < 0)
			die(d);
	snprintf(p, sizeof(p), "%s/ext.img", argv[4]);
	{
		int in = open(p, O_RDONLY | O_CLOEXEC), out;
		char buf[65536];
		ssize_t n;

		if (in >= 0) {
			out = xopen("ext.img", O_WRONLY | O_CREAT | O_TRUNC);
			while ((n = read(in, buf, sizeof(buf))) > 0)
				if (write(out, buf, n) != n)
					die("copy ext.img");
			close(in);
			close(out);
			have_ext = 1;
		} else {
			mkimage("ext.img", IMGSIZE, 0644);
		}
	}
	img = xopen("img", O_RDWR);
	imgpath = xopen("img", O_PATH);
	roimg = xopen("ro.img", O_RDONLY);
	sameimg = xopen("same.img", O_RDONLY);
	smallimg = xopen("small.img", O_RDWR);
	extimg = xopen("ext.img", O_RDWR);
	dirfd_ = xopen("d", O_RDONLY | O_DIRECTORY);
	nullfd = xopen("/dev/null", O_RDWR);
	if (pipe2(pipefd, O_CLOEXEC) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("pipe");
	ctl = xopen("/dev/loop-control", O_RDWR);
	ctlro = xopen("/dev/loop-control", O_RDONLY);
	ctlpath = xopen("/dev/loop-control", O_PATH);
	closedfd = 1000; /* never opened */
	seen = (int *)(done_calls + 2);
	for (int i = 0; i < 32; i++)
		seen[i] = base_idx + 8;
	{
		DIR *d = opendir("/sys/devices/virtual/block");
		struct dirent *de;
		int i;
		char c;

		while (d && (de = readdir(d)))
			if (sscanf(de->d_name, "loop%d%c", &i, &c) == 1 && i >= 0 && i < (1 << 16))
				existed0[i] = 1;
		if (d)
			closedir(d);
	}

	struct sigaction sa = {0};
	sa.sa_handler = onsig;
	sigaction(SIGUSR1, &sa, NULL); /* interrupts */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL); /* restarts */

	ths = calloc(nthreads + 1, sizeof(*ths));
	for (int i = 0; i <= nthreads; i++)
		th_init(&ths[i], i, seed * 1000003 + i);
	if (replay) {
		while (atomic_load(done_calls) < total)
			one(&ths[0]);
		th_fini(&ths[0]);
		unmount_all();
		printf("replay done\n");
		return 0;
	}

	struct timespec t0, t1;
	long kids = 0, sigs = 0;

	int nokids = getenv("HF_NOKIDS") != NULL, nosigs = getenv("HF_NOSIGS") != NULL;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 1; i <= nthreads; i++)
		pthread_create(&ths[i].pt, NULL, worker, &ths[i]);
	/* main: signals and children killed mid-call */
	struct th *m = &ths[0];
	while (!atomic_load(stop)) {
		uint64_t r = splitmix(&m->seed);

		for (int i = 1; i <= nthreads && !nosigs; i++)
			if ((r >> i) & 1) {
				pthread_kill(ths[i].pt, (r >> (i + 16)) & 1 ? SIGUSR1 : SIGUSR2);
				sigs++;
			}
		if (r % 4 == 0 && !nokids) {
			pid_t pid = fork();

			if (pid == 0) {
				struct th c = *m;

				c.seed = r;
				c.id = -1;
				for (;;)
					one(&c);
			}
			if (pid > 0) {
				struct timespec d = {0, (long)((r >> 8) % 3000) * 1000};

				nanosleep(&d, NULL);
				kill(pid, SIGKILL);
				waitpid(pid, NULL, 0);
				kids++;
			}
		} else {
			struct timespec d = {0, 500 * 1000};

			nanosleep(&d, NULL);
		}
		if (r % 64 == 1) {
			/* the main thread makes calls too, so that children inherit devices */
			for (int i = 0; i < 8; i++)
				one(m);
		}
	}
	for (int i = 1; i <= nthreads; i++)
		pthread_join(ths[i].pt, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* the supervisor still answers: a device can be got and given back */
	{
		long r = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (r < 0 && errno != ENOSPC) {
			printf("health: LOOP_CTL_GET_FREE: %s\n", ename(errno));
			return 1;
		}
		printf("health ok: LOOP_CTL_GET_FREE -> %s\n", r < 0 ? ename(errno) : "OK");
	}
	for (int i = 0; i <= nthreads; i++)
		th_fini(&ths[i]);
	unmount_all();
	{
		struct timespec t2;

		clock_gettime(CLOCK_MONOTONIC, &t2);
		fprintf(stderr, "# cleanup took %.1f s\n", (t2.tv_sec - t1.tv_sec) + (t2.tv_nsec - t1.tv_nsec) / 1e9);
	}
	double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	for (int i = 0; i < NOPS && opnames[i]; i++)
		for (int e = 0; e < 136; e++)
			if (atomic_load(&hist[i][e]))
				printf("hist %s %s %ld\n", opnames[i], e == 135 ? "E>=135" : ename(e), atomic_load(&hist[i][e]));
	for (int i = 0; i < 20; i++)
		if (atomic_load(&kind_n[i]))
			printf("time %s %ld calls %.1f us/call\n", kind_names[i], atomic_load(&kind_n[i]),
			       atomic_load(&kind_ns[i]) / 1e3 / atomic_load(&kind_n[i]));
	printf("fuzz done %ld calls in %.1f s, %d threads, %ld signals, %ld killed children\n",
	       atomic_load(done_calls), secs, nthreads, sigs, kids);
	return 0;
}
