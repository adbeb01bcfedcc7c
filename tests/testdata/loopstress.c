/* loopstress: hammer the supervisor from inside a sandbox.
 *
 *   loopstress DEV SECONDS
 *
 * Threads issue LOOP_GET_STATUS64 on DEV and LOOP_CTL_GET_FREE in a loop
 * while the main thread signals them (handler with and without SA_RESTART),
 * and child processes that are SIGKILLed in the middle of their ioctls.
 * Prints "stress ok N" with the number of completed calls and exits 0 if
 * every call returned a result the kernel can give (success, EINTR).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 12
static const char *dev;
static atomic_long calls, bad;
static atomic_int stop;

static void onsig(int s) { (void)s; }

static void *worker(void *arg) {
	long id = (long)arg;
	int fd = open(dev, O_RDONLY);
	int ctl = open("/dev/loop-control", O_RDWR);
	if (fd < 0 || ctl < 0) { atomic_fetch_add(&bad, 1); return NULL; }
	while (!atomic_load(&stop)) {
		struct loop_info64 info;
		int r = (id % 2) ? ioctl(fd, LOOP_GET_STATUS64, &info) : ioctl(ctl, LOOP_CTL_GET_FREE);
		if (r < 0 && errno != EINTR) {
			fprintf(stderr, "thread %ld: %s\n", id, strerror(errno));
			atomic_fetch_add(&bad, 1);
		}
		atomic_fetch_add(&calls, 1);
	}
	close(fd); close(ctl);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 3) return 2;
	dev = argv[1];
	int secs = atoi(argv[2]);
	struct sigaction sa = {0};
	sa.sa_handler = onsig;
	sigaction(SIGUSR1, &sa, NULL);          /* interrupts: EINTR or restart */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);
	pthread_t th[THREADS];
	for (long i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)i);
	time_t end = time(NULL) + secs;
	int kids = 0;
	while (time(NULL) < end) {
		for (int i = 0; i < THREADS; i++) pthread_kill(th[i], i % 2 ? SIGUSR1 : SIGUSR2);
		pid_t p = fork();
		if (p == 0) {
			int ctl = open("/dev/loop-control", O_RDWR);
			int fd = open(dev, O_RDONLY);
			for (;;) { struct loop_info64 info; ioctl(ctl, LOOP_CTL_GET_FREE); ioctl(fd, LOOP_GET_STATUS64, &info); }
		}
		usleep(2000);
		kill(p, SIGKILL);
		waitpid(p, NULL, 0);
		kids++;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
	if (atomic_load(&bad)) { printf("stress bad %ld\n", atomic_load(&bad)); return 1; }
	printf("stress ok %ld calls, %d killed children\n", atomic_load(&calls), kids);
	return 0;
}
