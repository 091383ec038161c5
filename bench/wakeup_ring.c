/* wakeup_ring.c -- a ring of K processes passing one byte through pipes (each
 * blocks in poll(), then read()/write()): CPU per hop = one cross-process
 * wake-up.  On a VM whose context switches cost more the more address spaces
 * take turns, this prices the wake-ups a turn adds (docs/benchmarks.md,
 * "Concurrency (issue 13, goal 2)").  Not built by CMake:
 *   gcc -O2 -o build/wakeup_ring bench/wakeup_ring.c
 *   build/wakeup_ring K LAPS [BYTES touched per hop]   e.g. 2 20000, 200 200 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
int main(int argc, char **argv) {
	int k = atoi(argv[1]), laps = atoi(argv[2]), touch = argc > 3 ? atoi(argv[3]) : 0; char c = 'x';
	int (*p)[2] = malloc(sizeof(int[2]) * k);
	for (int i = 0; i < k; i++) pipe(p[i]);
	for (int i = 1; i < k; i++) if (!fork()) {
		char *mem = touch ? malloc(touch) : NULL;
		for (int l = 0; l < laps; l++) { struct pollfd f = {p[i][0], POLLIN, 0}; poll(&f, 1, -1); read(p[i][0], &c, 1);
			for (int j = 0; j < touch; j += 64) mem[j]++;
			write(p[(i + 1) % k][1], &c, 1); }
		_exit(0);
	}
	struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int l = 0; l < laps; l++) { write(p[1 % k][1], &c, 1); struct pollfd f = {p[0][0], POLLIN, 0}; poll(&f, 1, -1); read(p[0][0], &c, 1); }
	while (wait(NULL) > 0) ;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	struct rusage s, ch; getrusage(RUSAGE_SELF, &s); getrusage(RUSAGE_CHILDREN, &ch);
	double cpu = s.ru_utime.tv_sec + s.ru_stime.tv_sec + ch.ru_utime.tv_sec + ch.ru_stime.tv_sec + (s.ru_utime.tv_usec + s.ru_stime.tv_usec + ch.ru_utime.tv_usec + ch.ru_stime.tv_usec) / 1e6;
	printf("ring of %d, %d laps, touch %d B: CPU %.1f us per hop, wall %.1f us per hop\n", k, laps, touch, cpu * 1e6 / ((double)k * laps),
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / ((double)k * laps));
	return 0;
}
