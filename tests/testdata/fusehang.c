/*
 * fusehang: a hostile FUSE server for the "one container stalls all" tests.
 *
 *   fusehang hang MOUNTPOINT        mount, never answer anything (not even
 *                                   INIT): every access below MOUNTPOINT
 *                                   blocks until the server dies
 *   fusehang file MOUNTPOINT SIZE   one regular file "img" of SIZE bytes
 *                                   whose READs are never answered (a loop
 *                                   device's reads do not reach it: the
 *                                   kernel's loop worker is not in the
 *                                   server's user namespace, and FUSE
 *                                   refuses it with EOVERFLOW, so EIO)
 *   fusehang attrhang MOUNTPOINT SIZE
 *                                   the same, but the attributes of "img"
 *                                   are never cached and its GETATTRs never
 *                                   answered: the first one creates the
 *                                   file "getattr-pending" in the server's
 *                                   cwd. LOOP_CONFIGURE asks for the size.
 *
 * Mounts with mount(2) as the caller (root of a user namespace), forks the
 * server into the background and exits 0 once the mount is up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

struct in_hdr {
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t extlen, pad;
};
struct out_hdr {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};
struct attr {
	uint64_t ino, size, blocks, atime, mtime, ctime;
	uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth, unused[6];
};

static int fd;
static uint64_t size;
static int attrhang;

static void reply(uint64_t unique, int err, const void *p, size_t n) {
	char buf[512];
	struct out_hdr h = {.len = sizeof(h) + n, .error = err, .unique = unique};
	memcpy(buf, &h, sizeof(h));
	if (n)
		memcpy(buf + sizeof(h), p, n);
	if (write(fd, buf, sizeof(h) + n) < 0) {
	}
}

static void fill(struct attr *a, uint64_t ino) {
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	if (ino == 1) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
	} else {
		a->mode = S_IFREG | 0666;
		a->nlink = 1;
		a->size = size;
		a->blocks = size / 512;
	}
	a->blksize = 4096;
}

static void serve(void) {
	static char buf[1 << 20];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == ENOENT))
			continue;
		if (n <= 0)
			_exit(0);
		struct in_hdr *h = (struct in_hdr *)buf;
		char *arg = buf + sizeof(*h);
		switch (h->opcode) {
		case 26: { /* INIT */
			struct init_out o = {.major = 7, .minor = 31, .max_readahead = 131072, .max_write = 65536,
					     .max_background = 16, .congestion_threshold = 12, .time_gran = 1};
			reply(h->unique, 0, &o, sizeof(o));
			break;
		}
		case 1: /* LOOKUP */
			if (!strcmp(arg, "img")) {
				struct {
					uint64_t nodeid, gen, ev, av;
					uint32_t evn, avn;
					struct attr a;
				} e = {.nodeid = 2, .ev = 3600, .av = attrhang ? 0 : 3600};
				fill(&e.a, 2);
				reply(h->unique, 0, &e, sizeof(e));
			} else {
				reply(h->unique, -ENOENT, NULL, 0);
			}
			break;
		case 3: { /* GETATTR */
			if (attrhang && h->nodeid == 2) {
				int m = open("getattr-pending", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
				if (m >= 0)
					close(m);
				break; /* never answered */
			}
			struct {
				uint64_t av;
				uint32_t avn, dummy;
				struct attr a;
			} o = {.av = attrhang ? 0 : 3600};
			fill(&o.a, h->nodeid);
			reply(h->unique, 0, &o, sizeof(o));
			break;
		}
		case 14: { /* OPEN */
			struct {
				uint64_t fh;
				uint32_t flags;
				int32_t backing;
			} o = {0};
			reply(h->unique, 0, &o, sizeof(o));
			break;
		}
		case 15: /* READ: never answered */
			break;
		case 17: { /* STATFS */
			uint32_t o[20] = {0};
			reply(h->unique, 0, o, sizeof(o));
			break;
		}
		case 18: /* RELEASE */
		case 25: /* FLUSH */
			reply(h->unique, 0, NULL, 0);
			break;
		default:
			reply(h->unique, -ENOSYS, NULL, 0);
		}
	}
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: fusehang hang|file MOUNTPOINT [SIZE]\n");
		return 2;
	}
	int hang = !strcmp(argv[1], "hang");
	attrhang = !strcmp(argv[1], "attrhang");
	size = argc > 3 ? strtoull(argv[3], NULL, 0) : 64 << 20;
	fd = open("/dev/fuse", O_RDWR);
	if (fd < 0) {
		perror("open /dev/fuse");
		return 1;
	}
	char opts[128];
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
	if (mount("fusehang", argv[2], "fuse.fusehang", MS_NOSUID | MS_NODEV, opts) < 0) {
		perror("mount");
		return 1;
	}
	pid_t p = fork();
	if (p < 0)
		return 1;
	if (p > 0)
		return 0;
	setsid();
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
	}
	if (hang)
		for (;;)
			pause();
	serve();
	return 0;
}
