/* test_sandbox_fork.c — creating sandboxes from a process whose other threads
 * keep the allocator busy, as cortexd's do.
 *
 * The monitor and init are forks of a multi-threaded process and never exec.
 * A lock another thread held at the fork (the allocator's, under ASan) stays
 * held in them forever, so nothing on their path may allocate.  Here churn
 * threads malloc and free in a tight loop while, each time from a fresh thread
 * (an empty allocator cache, so any allocation in the child needs the shared
 * allocator), a sandbox is created, pinged, runs a program, gets a host dir
 * mounted (another fork) and is destroyed.
 * A step that hangs is reported with its iteration; killing the sandbox's
 * cgroup then unblocks the creator so the run ends.
 *
 * Under ASan a malloc hook also counts allocations made in the creator's
 * forked children (in a shared page), so one is caught every time, not only
 * when another thread happened to hold the lock it needs.
 *
 * Needs root and cgroups; CORTEX_FORK_ITERS overrides the iteration count. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "sandbox_fixture.h"

#define ITERS_DEFAULT 40
#define N_CHURN	      3
#define STEP_LIMIT_S  30 /* create to destroy; normally < 1 s */

static char g_base[512]; /* per-run scratch dir */
static atomic_bool g_stop;

/* ---- allocations in forked children (ASan only) ---- */

typedef void (*malloc_hook_fn)(const volatile void *, size_t);
typedef void (*free_hook_fn)(const volatile void *);
/* The sanitizer runtime's; NULL without one. */
extern int __sanitizer_install_malloc_and_free_hooks(malloc_hook_fn, free_hook_fn)
    __attribute__((weak));

typedef struct child_allocs {
	atomic_int count;
	size_t first_size;
} child_allocs;

static child_allocs *g_child_allocs; /* MAP_SHARED: children write, we read */
static pid_t g_pid;
static _Thread_local bool t_creator; /* inherited by the creator's forks */

static void on_malloc(const volatile void *p, size_t size)
{
	(void)p;
	if (t_creator && getpid() != g_pid && atomic_fetch_add(&g_child_allocs->count, 1) == 0)
		g_child_allocs->first_size = size;
}

static void on_free(const volatile void *p)
{
	(void)p;
}

/* Bursts of one size at a time, so that every small size class keeps
 * refilling from (and draining to) the shared allocator under its lock; now
 * and then a large block, which takes the allocator's global lock. */
static void *churn_main(void *arg)
{
	uint32_t x = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
	void *held[256];
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		bool large = (x & 0xf) == 0;
		size_t size = large ? 200000 : 16u << (x >> 8) % 9, n = large ? 8 : 256;
		for (size_t i = 0; i < n; i++) {
			held[i] = malloc(size);
			if (held[i])
				((char *)held[i])[0] = 1;
		}
		for (size_t i = 0; i < n; i++)
			free(held[i]);
	}
	return NULL;
}

typedef struct job {
	fixture f;
	const char *step; /* the step that failed, NULL when all passed */
	cx_err err;
} job;

static void *creator_main(void *arg)
{
	job *j = arg;
	t_creator = true;
	j->step = "sandbox_create";
	if (sandbox_create(&j->f.sb, &j->f.opts, &j->err) < 0)
		return NULL;
	j->step = "sandbox_health";
	if (sandbox_health(j->f.sb, &j->err) < 0)
		goto out;
	j->step = "sandbox_exec";
	const char *argv[] = {"/bin/true", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	pid_t pid;
	if (sandbox_exec(j->f.sb, &pid, &eo, &j->err) < 0)
		goto out;
	j->step = "sandbox_mount_ro";
	if (sandbox_mount_ro(j->f.sb, g_base, "base", &j->err) < 0)
		goto out;
	j->step = NULL;
out:
	sandbox_destroy(j->f.sb);
	j->f.sb = NULL;
	return NULL;
}

static bool join_within(pthread_t t, int seconds)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += seconds;
	return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

static void test_create_while_threads_allocate(void **state)
{
	(void)state;
	const char *env = getenv("CORTEX_FORK_ITERS");
	int iters = env ? atoi(env) : ITERS_DEFAULT;
	pthread_t churn[N_CHURN];
	atomic_store(&g_stop, false);
	for (uintptr_t i = 0; i < N_CHURN; i++)
		assert_int_equal(pthread_create(&churn[i], NULL, churn_main, (void *)(i + 1)), 0);

	int failed_at = -1;
	job j;
	for (int i = 0; i < iters && failed_at < 0; i++) {
		char tag[16];
		pathf(tag, sizeof tag, "i%d", i);
		memset(&j, 0, sizeof j);
		fixture_init_dirs(&j.f, g_base, "f", tag);
		j.f.opts.mount_dir = "/cortex/mnt";
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, creator_main, &j), 0);
		if (join_within(t, STEP_LIMIT_S)) {
			int allocs = atomic_exchange(&g_child_allocs->count, 0);
			if (j.step) {
				print_error("iteration %d: %s: %s\n", i, j.step, j.err.msg);
				failed_at = i;
			} else if (allocs) {
				print_error("iteration %d: %d allocations in the sandbox's forked "
					    "children (the first of %zu bytes)\n",
					    i, allocs, g_child_allocs->first_size);
				failed_at = i;
			}
			continue;
		}
		failed_at = i;
		print_error("iteration %d: %s did not return within %d s: a sandbox child "
			    "is stuck (a lock held across fork?)\n",
			    i, j.step, STEP_LIMIT_S);
		/* Kill what is in the sandbox's cgroup: the creator sees EOF. */
		cx_err err = CX_ERR_INIT;
		int found = 0;
		if (sandbox_reap_stale(CG_NAME, j.f.id, &found, &err) < 0)
			print_error("reap %s: %s\n", j.f.id, err.msg);
		if (!join_within(t, STEP_LIMIT_S))
			print_error("creator still blocked after the reap\n");
	}

	atomic_store(&g_stop, true);
	for (size_t i = 0; i < N_CHURN; i++)
		pthread_join(churn[i], NULL);
	if (failed_at >= 0)
		fail();
}

static int group_setup(void **state)
{
	(void)state;
	g_pid = getpid();
	void *m = mmap(NULL, sizeof *g_child_allocs, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	g_child_allocs = m;
	if (__sanitizer_install_malloc_and_free_hooks &&
	    !__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free))
		return -1;
	return scratch_dir(g_base, sizeof g_base, "sbxfork");
}

static int group_teardown(void **state)
{
	(void)state;
	char cmd[700];
	pathf(cmd, sizeof cmd, "rm -rf '%s'", g_base);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_while_threads_allocate),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
