/* report.h: the probes' one line per step, "NAME OK" or "NAME ERRNONAME"
 * (errno's name), flushed at once so a probe killed later keeps it. */
#ifndef LOOPVISOR_REPORT_H
#define LOOPVISOR_REPORT_H
#include <errno.h>
#include <stdio.h>
#include <string.h>

static long report(const char *name, long r) {
	if (r < 0)
		printf("%s %s\n", name, strerrorname_np(errno));
	else
		printf("%s OK\n", name);
	fflush(stdout);
	return r;
}
#endif
