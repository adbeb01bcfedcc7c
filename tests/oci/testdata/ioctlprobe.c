// ioctlprobe [alarm] CMD... | int80 CMD | x32 CMD: ioctl(open("/dev/null"), CMD, 0) for each CMD
// (strtoull) and print the result. "alarm": SIGALRM handler (SA_RESTART) + alarm(1) first.
// "int80 CMD": the i386 ioctl (nr 54) via int $0x80; "x32 CMD": the x32 ioctl (0x40000000|514).
// Build static so it runs in any rootfs: gcc -O2 -Wall -static -o ioctlprobe ioctlprobe.c
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <signal.h>
static volatile int alarms;
static void onalarm(int s) { (void)s; alarms++; }
int main(int argc, char **argv) {
	int fd = open("/dev/null", O_RDONLY);
	if (fd < 0) fd = 0;
	int first = 1;
	if (argc > 1 && !strcmp(argv[1], "alarm")) {
		struct sigaction sa = {.sa_handler = onalarm, .sa_flags = SA_RESTART};
		sigaction(SIGALRM, &sa, NULL);
		alarm(1);
		first = 2;
	}
	for (int i = first; i < argc; i++) {
		if (!strcmp(argv[i], "int80") && i + 1 < argc) { // i386 ABI ioctl (nr 54) via int $0x80
			unsigned int cmd = strtoul(argv[++i], NULL, 0);
			long r;
			__asm__ volatile("int $0x80" : "=a"(r) : "a"(54), "b"(fd), "c"(cmd), "d"(0) : "memory");
			printf("i386 ioctl(%#x) = %ld\n", cmd, r);
			continue;
		}
		if (!strcmp(argv[i], "x32") && i + 1 < argc) { // x32 ABI ioctl (0x40000000|514)
			unsigned long cmd = strtoull(argv[++i], NULL, 0);
			long r = syscall(0x40000000 | 514, fd, cmd, 0);
			printf("x32 ioctl(%#lx) = %ld errno=%d\n", cmd, r, r < 0 ? errno : 0);
			continue;
		}
		unsigned long cmd = strtoull(argv[i], NULL, 0);
		long r = syscall(SYS_ioctl, fd, cmd, 0);
		printf("ioctl(%#lx) = %ld errno=%d (%s)\n", cmd, r, r < 0 ? errno : 0, r < 0 ? strerror(errno) : "ok");
	}
	if (first == 2) printf("SIGALRM handler ran %d times\n", alarms);
	return 0;
}
