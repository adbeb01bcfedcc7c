/* ctlflood: make a supervisor's file cache hold as much as it would.
 *
 *   ctlflood N T
 *       open N descriptors of /dev/loop-control, create ./opened and wait
 *       for ./go1; then T threads each issue LOOP_CTL_GET_FREE on every
 *       descriptor (N*T thread/descriptor pairs, each one a key of the
 *       supervisor's kcmp cache), the whole round twice; print
 *       "calls C ok K", create ./called and wait for ./go2 (each wait
 *       bounded to 60 s).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int n, *fds;
static long ok[64];

static void *worker(void *arg)
{
	long t = (long)arg;
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < n; i++)
			if (ioctl(fds[i], LOOP_CTL_GET_FREE) >= 0)
				ok[t]++;
	return NULL;
}

static int wait_for(const char *name)
{
	for (int i = 0; i < 6000; i++) {
		if (access(name, F_OK) == 0)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "no %s\n", name);
	return 1;
}

static void touch(const char *name)
{
	int fd = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	n = atoi(argv[1]);
	int threads = atoi(argv[2]);
	if (n < 1 || threads < 1 || threads > 64)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	fds = calloc(n, sizeof(int));
	for (int i = 0; i < n; i++) {
		fds[i] = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		if (fds[i] < 0) {
			printf("ERR open %s\n", strerrorname_np(errno));
			return 1;
		}
	}
	touch("opened");
	if (wait_for("go1"))
		return 1;
	pthread_t th[64];
	for (long t = 0; t < threads; t++)
		if (pthread_create(&th[t], NULL, worker, (void *)t))
			return 1;
	long sum = 0;
	for (int t = 0; t < threads; t++) {
		pthread_join(th[t], NULL);
		sum += ok[t];
	}
	printf("calls %ld ok %ld\n", 2L * n * threads, sum);
	touch("called");
	return wait_for("go2");
}
