// probe: the timed loops of `make bench`.
//
// Usage: probe BATCHES MODE:N[:BATCHES] [MODE:N[:BATCHES]...]
//
// For each MODE it warms up, then times BATCHES batches (the spec's own, else
// the first argument) of N calls with
// CLOCK_MONOTONIC (vDSO: no system call, so no filter in the timed path)
// and prints one line per batch: "MODE NS_PER_OP". Before the batches it
// prints "result MODE VALUE" with what the first call returned (the
// return value, or -errno), so the caller can tell a trapped call from one
// the kernel ran.
//
// Modes:
//   getfree      ioctl(/dev/loop-control, LOOP_CTL_GET_FREE): every call must
//                return the same index (the first allocates a device, later
//                ones return that unbound device)
//   nullgetfree  ioctl(/dev/null, LOOP_CTL_GET_FREE, 0): trapped by the
//                filter; the bare supervisor answers 0, the kernel ENOTTY
//   getppid      syscall(SYS_getppid): not trapped
//   tcgets       ioctl(/dev/null, TCGETS, &t): an ioctl the filter compares
//                against every loop command and lets through (ENOTTY)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define LOOP_CTL_GET_FREE_CMD 0x4C82

static int fd_ctl = -1, fd_null = -1;

static long call(const char *mode) {
	long r;
	struct termios t;
	if (strcmp(mode, "getfree") == 0)
		r = ioctl(fd_ctl, LOOP_CTL_GET_FREE_CMD, 0);
	else if (strcmp(mode, "nullgetfree") == 0)
		r = ioctl(fd_null, LOOP_CTL_GET_FREE_CMD, 0);
	else if (strcmp(mode, "getppid") == 0)
		r = syscall(SYS_getppid);
	else if (strcmp(mode, "tcgets") == 0)
		r = ioctl(fd_null, TCGETS, &t);
	else {
		fprintf(stderr, "probe: unknown mode %s\n", mode);
		exit(2);
	}
	return r < 0 ? -errno : r;
}

static double now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

// run times n calls of one mode; the loops are written out per mode so the
// timed path is the system call and nothing else.
static double run(const char *mode, long n, long want) {
	double t0, t1;
	long i, r;
	struct termios t;
	if (strcmp(mode, "getfree") == 0) {
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			r = ioctl(fd_ctl, LOOP_CTL_GET_FREE_CMD, 0);
			if (r != want) {
				fprintf(stderr, "probe: LOOP_CTL_GET_FREE returned %ld (errno %d), want %ld\n", r, errno, want);
				exit(1);
			}
		}
		t1 = now_ns();
	} else if (strcmp(mode, "nullgetfree") == 0) {
		t0 = now_ns();
		for (i = 0; i < n; i++)
			ioctl(fd_null, LOOP_CTL_GET_FREE_CMD, 0);
		t1 = now_ns();
	} else if (strcmp(mode, "getppid") == 0) {
		t0 = now_ns();
		for (i = 0; i < n; i++)
			syscall(SYS_getppid);
		t1 = now_ns();
	} else {
		t0 = now_ns();
		for (i = 0; i < n; i++)
			ioctl(fd_null, TCGETS, &t);
		t1 = now_ns();
	}
	return (t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: probe BATCHES MODE:N[:BATCHES] [MODE:N[:BATCHES]...]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int batches = atoi(argv[1]);
	fd_null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd_null < 0) {
		perror("probe: open /dev/null");
		return 1;
	}
	for (int a = 2; a < argc; a++) {
		char mode[64];
		long n;
		int nb = batches;
		char *end;
		const char *colon = strchr(argv[a], ':');
		if (!colon || colon - argv[a] >= (long)sizeof(mode) || (n = strtol(colon + 1, &end, 10)) <= 0 ||
		    (*end == ':' && (nb = atoi(end + 1)) <= 0) || (*end != ':' && *end != 0)) {
			fprintf(stderr, "probe: bad spec %s\n", argv[a]);
			return 2;
		}
		memcpy(mode, argv[a], colon - argv[a]);
		mode[colon - argv[a]] = 0;
		if (strcmp(mode, "getfree") == 0 && fd_ctl < 0) {
			fd_ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
			if (fd_ctl < 0) {
				perror("probe: open /dev/loop-control");
				return 1;
			}
		}
		long first = call(mode);
		printf("result %s %ld\n", mode, first);
		if (strcmp(mode, "getfree") == 0 && first < 0) {
			fprintf(stderr, "probe: LOOP_CTL_GET_FREE: %s\n", strerror((int)-first));
			return 1;
		}
		long warm = n / 10;
		if (warm < 100)
			warm = 100;
		run(mode, warm, first);
		for (int b = 0; b < nb; b++)
			printf("%s %.2f\n", mode, run(mode, n, first));
	}
	return 0;
}
