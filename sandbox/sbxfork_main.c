/* sbxfork_main.c — cortex-sbxfork, the sandbox fork server as a program of
 * its own (sandbox/forkserver.c).  cortexd forks once at its start and execs
 * this in the child:  cortex-sbxfork FD PARENT_PID  with FD its end of the
 * fork server's socket.  Built from the sandbox library alone and, in a
 * release build, statically: each monitor it clones (and each sandbox's init,
 * forked by the monitor) copies this small image, not cortexd's.  Not meant
 * to be run by hand: it serves only when PARENT_PID is its parent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sandbox-internal.h"

static long number(const char *s, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	return errno || end == s || *end || v < 0 || v > max ? -1 : v;
}

int main(int argc, char **argv)
{
	long fd = argc == 3 ? number(argv[1], 1 << 20) : -1;
	long parent = argc == 3 ? number(argv[2], 1 << 30) : -1;
	if (fd < 3 || parent <= 1) {
		fprintf(stderr, "usage: cortex-sbxfork FD PARENT_PID (started by cortexd)\n");
		return 2;
	}
	sbx_forkserver_serve((int)fd, (pid_t)parent);
}
