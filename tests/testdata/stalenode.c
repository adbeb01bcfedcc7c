/* stalenode: keep a reference to a device node and use it later, for the
 * hostile tests (issue 8, attacks 3 and 4).
 *
 *   stalenode PATH GOFILE
 *
 * Opens PATH with O_PATH (no open of the device itself), prints "held",
 * waits until GOFILE exists, then reopens the node through
 * /proc/self/fd/N with O_RDWR. It prints "reopen OK" or "reopen ERR <errno>";
 * after a successful reopen it prints the first 16 bytes it reads
 * ("read <text>") and writes "A-WAS-HERE" at offset 4096 ("write OK" or
 * "write ERR <errno>").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 3) return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	int fd = open(argv[1], O_PATH | O_CLOEXEC);
	if (fd < 0) {
		printf("hold ERR %s\n", strerrorname_np(errno));
		return 1;
	}
	printf("held\n");
	while (access(argv[2], F_OK) != 0) usleep(20000);
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	int dev = open(p, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		printf("reopen ERR %s\n", strerrorname_np(errno));
		return 0;
	}
	printf("reopen OK\n");
	char buf[17] = {0};
	ssize_t n = pread(dev, buf, 16, 0);
	for (int i = 0; i < 16; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e) buf[i] = '.';
	if (n < 0) printf("read ERR %s\n", strerrorname_np(errno));
	else printf("read %s\n", buf);
	if (pwrite(dev, "A-WAS-HERE", 10, 4096) == 10 && fsync(dev) == 0) printf("write OK\n");
	else printf("write ERR %s\n", strerrorname_np(errno));
	close(dev);
	return 0;
}
