/* Unit tests: the worker lanes (cortexd/base/work.h), the background lane's
 * quiet waits in particular.  A background job must have waited for a quiet
 * CPU (SCHED_IDLE and a yield) before it runs, and must run, and leave its
 * thread, at normal priority: nothing may be held at idle priority.  Off the
 * background lane work_quiet_point is a no-op.  Before that, a background
 * job waits while turns wait for their first token (work_first_tokens_add),
 * up to its bound; the other lanes never do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "work.h"

struct probe {
	int call_point;      /* call work_quiet_point() in the job */
	int policy_in_run;   /* sched_getscheduler at the job's start */
	int policy_after_pt; /* ... and after work_quiet_point */
	pid_t tid;
	char name[16];
	int done;
};

static void probe_run(void *arg)
{
	struct probe *p = arg;
	p->tid = (pid_t)syscall(SYS_gettid);
	p->policy_in_run = sched_getscheduler(0);
	pthread_getname_np(pthread_self(), p->name, sizeof p->name);
	p->policy_after_pt = -2;
	if (p->call_point) {
		work_quiet_point();
		p->policy_after_pt = sched_getscheduler(0);
	}
}

static void probe_done(void *arg) { ((struct probe *)arg)->done = 1; }

static void wait_done(struct probe *p)
{
	for (int i = 0; i < 5000 && !p->done; i++) {
		work_drain_done();
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	assert_true(p->done);
}

/* Run p on lane; its thread's name, the quiet waits it made, and that it
 * ran (and left its quiet point) at normal priority. */
static void run_probe(enum work_lane lane, struct probe *p, const char *name, uint64_t waits)
{
	uint64_t w0, us0, w1, us1;
	work_quiet_counts(&w0, &us0);
	work_submit_lane(lane, probe_run, probe_done, p);
	wait_done(p);
	work_quiet_counts(&w1, &us1);
	assert_string_equal(p->name, name);
	assert_int_equal(w1 - w0, waits);
	assert_int_equal(p->policy_in_run, SCHED_OTHER);
	assert_int_equal(p->policy_after_pt, SCHED_OTHER);
}

static int setup(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(work_start(NULL, 2, &err), 0);
	assert_int_equal(work_start_lane(WORK_BACKGROUND, 2, &err), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	work_stop();
	return 0;
}

static void test_background_job_waits_then_runs_normal(void **state)
{
	(void)state;
	struct probe p = {.call_point = 1};
	/* one wait before the job, one at its quiet point */
	run_probe(WORK_BACKGROUND, &p, "cx-background", 2);
	/* and the thread, waiting for its next job, is back to normal too */
	assert_int_equal(sched_getscheduler(p.tid), SCHED_OTHER);
}

static void test_general_lane_has_no_quiet_wait(void **state)
{
	(void)state;
	struct probe p = {.call_point = 1};
	run_probe(WORK_GENERAL, &p, "cx-work", 0);
}

/* Jobs of the lane run in order, each once, however many are queued. */
static void test_background_many_jobs(void **state)
{
	(void)state;
	enum { N = 50 };
	struct probe p[N];
	memset(p, 0, sizeof p);
	for (int i = 0; i < N; i++)
		work_submit_lane(WORK_BACKGROUND, probe_run, probe_done, &p[i]);
	for (int i = 0; i < N; i++) {
		wait_done(&p[i]);
		assert_int_equal(p[i].policy_in_run, SCHED_OTHER);
	}
}

/* Without CAP_SYS_NICE and with RLIMIT_NICE 0 a thread cannot leave
 * SCHED_IDLE: the probe sees it and background jobs run without the wait
 * (never stuck idle-class).  In a child that drops root. */
static void test_no_wait_when_idle_is_one_way(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip(); /* needs root to drop it; as non-root the other tests cover the probe */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = {0, 0};
		if (setrlimit(RLIMIT_NICE, &rl) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		uint64_t w0, us0;
		work_quiet_counts(&w0, &us0); /* (the parent's counts, inherited) */
		cx_err err = CX_ERR_INIT;
		if (work_start(NULL, 1, &err) != 0 || work_start_lane(WORK_BACKGROUND, 1, &err) != 0)
			_exit(11);
		struct probe p = {.call_point = 1};
		work_submit_lane(WORK_BACKGROUND, probe_run, probe_done, &p);
		for (int i = 0; i < 5000 && !p.done; i++) {
			work_drain_done();
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
		uint64_t w, us;
		work_quiet_counts(&w, &us);
		int rc = !p.done ? 12 : w != w0 ? 13 : p.policy_in_run != SCHED_OTHER ? 14
			 : p.policy_after_pt != SCHED_OTHER ? 15 : 0;
		work_stop();
		_exit(rc);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- first tokens first ---- */

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

struct stamp {
	uint64_t ran_us;
	int done;
};

static void stamp_run(void *arg) { __atomic_store_n(&((struct stamp *)arg)->ran_us, now_us(), __ATOMIC_RELEASE); }
static void stamp_done(void *arg) { ((struct stamp *)arg)->done = 1; }

static void stamp_wait(struct stamp *s, int ms)
{
	for (int i = 0; i < ms && !s->done; i++) {
		work_drain_done();
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

/* A background job taken while a turn waits for its first token starts once
 * that first token came, not before (the bound here is far off: 30 s). */
static void test_background_waits_for_first_tokens(void **state)
{
	(void)state;
	work_set_first_token_wait_ms(30000);
	uint64_t w0, us0, w1, us1;
	work_first_token_counts(&w0, &us0);
	work_first_tokens_add(1);
	work_first_tokens_add(1);
	struct stamp s = {0};
	work_submit_lane(WORK_BACKGROUND, stamp_run, stamp_done, &s);
	stamp_wait(&s, 100);
	assert_int_equal(s.done, 0); /* two turns wait: the job too */
	work_first_tokens_add(-1);
	stamp_wait(&s, 100);
	assert_int_equal(s.done, 0); /* one still waits */
	uint64_t released = now_us();
	work_first_tokens_add(-1);
	stamp_wait(&s, 5000);
	assert_int_equal(s.done, 1);
	assert_true(__atomic_load_n(&s.ran_us, __ATOMIC_ACQUIRE) >= released);
	work_first_token_counts(&w1, &us1);
	assert_int_equal(w1 - w0, 1);
	assert_true(us1 - us0 >= 200000);
	/* none waiting: the next job does not wait */
	struct stamp t = {0};
	work_submit_lane(WORK_BACKGROUND, stamp_run, stamp_done, &t);
	stamp_wait(&t, 5000);
	assert_int_equal(t.done, 1);
	work_first_token_counts(&w0, &us0);
	assert_int_equal(w0, w1);
	work_set_first_token_wait_ms(WORK_FIRST_TOKEN_WAIT_MS);
}

/* A first token that never comes (a turn stuck before its answer) holds a
 * background job for its bound only. */
static void test_first_token_wait_is_bounded(void **state)
{
	(void)state;
	work_set_first_token_wait_ms(50);
	work_first_tokens_add(1);
	struct stamp s = {0};
	uint64_t t0 = now_us();
	work_submit_lane(WORK_BACKGROUND, stamp_run, stamp_done, &s);
	stamp_wait(&s, 5000);
	assert_int_equal(s.done, 1);
	assert_true(__atomic_load_n(&s.ran_us, __ATOMIC_ACQUIRE) - t0 >= 50000);
	work_first_tokens_add(-1);
	work_set_first_token_wait_ms(WORK_FIRST_TOKEN_WAIT_MS);
}

/* The general lane (API replies, imports) never waits for first tokens. */
static void test_general_lane_does_not_wait_for_first_tokens(void **state)
{
	(void)state;
	work_set_first_token_wait_ms(30000);
	work_first_tokens_add(1);
	struct stamp s = {0};
	work_submit_lane(WORK_GENERAL, stamp_run, stamp_done, &s);
	stamp_wait(&s, 5000);
	assert_int_equal(s.done, 1);
	work_first_tokens_add(-1);
	work_set_first_token_wait_ms(WORK_FIRST_TOKEN_WAIT_MS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_background_job_waits_then_runs_normal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_general_lane_has_no_quiet_wait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_background_many_jobs, setup, teardown),
	    cmocka_unit_test(test_no_wait_when_idle_is_one_way),
	    cmocka_unit_test_setup_teardown(test_background_waits_for_first_tokens, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_first_token_wait_is_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_general_lane_does_not_wait_for_first_tokens, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
