/* work.c — see work.h. */
#include "work.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

struct job {
	work_fn run, done;
	void *arg;
	struct job *next;
};

/* One lane: its own queue and threads.  Every lane's finished jobs go to one
 * done list (the service thread drains it). */
struct lane {
	struct job *todo_head, *todo_tail;
	pthread_cond_t cv;
	pthread_t threads[WORK_LANE_MAX_THREADS];
	unsigned nthreads;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct lane lanes[WORK_LANES] = {
	[WORK_GENERAL] = {.cv = PTHREAD_COND_INITIALIZER},
	[WORK_SANDBOX] = {.cv = PTHREAD_COND_INITIALIZER},
	[WORK_BACKGROUND] = {.cv = PTHREAD_COND_INITIALIZER},
};
static const char *const lane_names[WORK_LANES] = {"cx-work", "cx-sandbox", "cx-background"};
static uint64_t n_quiet_waits, quiet_wait_us;
static struct job *done_head, *done_tail;
static int stopping;
static struct lws_context *svc_ctx;

static void push(struct job **head, struct job **tail, struct job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static struct job *pop(struct job **head, struct job **tail)
{
	struct job *j = *head;
	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
	}
	return j;
}

static int quiet_ok, quiet_probed; /* the probe found a thread can leave SCHED_IDLE again */

/* The background lane's wait for a quiet CPU, holding nothing: as
 * SCHED_IDLE the thread is picked again only when its CPU has nothing of
 * normal priority to run that weighs more (in cortexd's autogroup or cgroup,
 * the service thread), then it is back to SCHED_OTHER for the job.  When
 * the kernel refuses (no such policy), the job just runs. */
static void quiet_wait(void)
{
	if (!quiet_ok)
		return;
	struct sched_param p = {0};
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	if (sched_setscheduler(0, SCHED_IDLE, &p) != 0)
		return;
	(void)sched_yield();
	(void)sched_setscheduler(0, SCHED_OTHER, &p);
	clock_gettime(CLOCK_MONOTONIC, &b);
	int64_t us = (int64_t)(b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
	__atomic_add_fetch(&quiet_wait_us, (uint64_t)(us > 0 ? us : 0), __ATOMIC_RELAXED);
	__atomic_add_fetch(&n_quiet_waits, 1, __ATOMIC_RELAXED);
}

/* Leaving SCHED_IDLE takes CAP_SYS_NICE or an RLIMIT_NICE of 20: without
 * them a thread that went idle-class would stay there, holding the store's
 * lock at idle priority later.  So a throwaway thread tries it first. */
static void *quiet_probe(void *arg)
{
	struct sched_param p = {0};
	*(int *)arg = sched_setscheduler(0, SCHED_IDLE, &p) == 0 && sched_setscheduler(0, SCHED_OTHER, &p) == 0;
	return NULL;
}

static void quiet_probe_once(void)
{
	if (quiet_probed)
		return;
	pthread_t t;
	int ok = 0;
	if (pthread_create(&t, NULL, quiet_probe, &ok) == 0 && pthread_join(t, NULL) == 0) {
		quiet_ok = ok;
		quiet_probed = 1;
	}
}

void work_quiet_counts(uint64_t *waits, uint64_t *us)
{
	*waits = __atomic_load_n(&n_quiet_waits, __ATOMIC_RELAXED);
	*us = __atomic_load_n(&quiet_wait_us, __ATOMIC_RELAXED);
}

/* First tokens first (work.h).  A mutex of its own: the service thread
 * takes it twice a turn, never behind a job. */
static pthread_mutex_t ft_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ft_cv;
static pthread_once_t ft_once = PTHREAD_ONCE_INIT;
static int ft_pending;
static unsigned ft_wait_ms = WORK_FIRST_TOKEN_WAIT_MS;
static uint64_t n_ft_waits, ft_wait_us;

static void ft_init(void)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&ft_cv, &a);
	pthread_condattr_destroy(&a);
}

void work_first_tokens_add(int delta)
{
	pthread_once(&ft_once, ft_init);
	pthread_mutex_lock(&ft_mu);
	ft_pending += delta;
	if (ft_pending <= 0) {
		ft_pending = 0; /* (never below: a miscount could only shorten the waits) */
		pthread_cond_broadcast(&ft_cv);
	}
	pthread_mutex_unlock(&ft_mu);
}

int work_first_tokens_pending(void)
{
	pthread_mutex_lock(&ft_mu);
	int n = ft_pending;
	pthread_mutex_unlock(&ft_mu);
	return n;
}

void work_set_first_token_wait_ms(unsigned ms) { __atomic_store_n(&ft_wait_ms, ms, __ATOMIC_RELAXED); }

void work_first_token_counts(uint64_t *waits, uint64_t *us)
{
	*waits = __atomic_load_n(&n_ft_waits, __ATOMIC_RELAXED);
	*us = __atomic_load_n(&ft_wait_us, __ATOMIC_RELAXED);
}

/* Until no turn waits for its first token, or the bound: the writes go in
 * the gaps between bursts of messages, and under steady load a bounded
 * while later.  An event, not a poll: the last first token signals. */
static void first_tokens_wait(void)
{
	pthread_once(&ft_once, ft_init);
	pthread_mutex_lock(&ft_mu);
	if (ft_pending > 0) {
		uint64_t t0 = cx_mono_us(), end = t0 + (uint64_t)__atomic_load_n(&ft_wait_ms, __ATOMIC_RELAXED) * 1000u;
		struct timespec dl = {(time_t)(end / 1000000u), (long)(end % 1000000u) * 1000};
		while (ft_pending > 0 && pthread_cond_timedwait(&ft_cv, &ft_mu, &dl) == 0)
			;
		__atomic_add_fetch(&ft_wait_us, cx_mono_us() - t0, __ATOMIC_RELAXED);
		__atomic_add_fetch(&n_ft_waits, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&ft_mu);
}

static __thread int on_background;

void work_quiet_point(void)
{
	if (on_background)
		quiet_wait();
}

static void *worker(void *arg)
{
	struct lane *l = arg;
	on_background = l == &lanes[WORK_BACKGROUND];
	pthread_mutex_lock(&mu);
	for (;;) {
		struct job *j;
		while (!(j = pop(&l->todo_head, &l->todo_tail)) && !stopping)
			pthread_cond_wait(&l->cv, &mu);
		if (!j)
			break;
		pthread_mutex_unlock(&mu);
		if (on_background) {
			first_tokens_wait();
			quiet_wait();
		}
		if (j->run)
			j->run(j->arg);
		pthread_mutex_lock(&mu);
		if (j->done) {
			push(&done_head, &done_tail, j);
			if (svc_ctx)
				lws_cancel_service(svc_ctx);
		} else {
			free(j);
		}
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

int work_start_lane(enum work_lane lane, unsigned n, cx_err *err)
{
	struct lane *l = &lanes[lane];
	if (lane == WORK_BACKGROUND)
		quiet_probe_once();
	if (n > WORK_LANE_MAX_THREADS)
		n = WORK_LANE_MAX_THREADS;
	for (unsigned i = l->nthreads; i < n; i++) {
		int rc = pthread_create(&l->threads[i], NULL, worker, l);
		if (rc)
			return cx_err_set(err, rc, "pthread_create");
		/* Named for top -H, perf and /proc. */
		(void)pthread_setname_np(l->threads[i], lane_names[lane]);
		l->nthreads++;
	}
	return 0;
}

int work_start(struct lws_context *ctx, unsigned n, cx_err *err)
{
	svc_ctx = ctx;
	return work_start_lane(WORK_GENERAL, n, err);
}

void work_submit_lane(enum work_lane lane, work_fn run, work_fn done, void *arg)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		abort(); /* out of memory for 32 bytes: nothing sensible left to do */
	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&mu);
	struct lane *l = &lanes[lane];
	if (!l->nthreads) /* a lane that was never started: the general one runs it */
		l = &lanes[WORK_GENERAL];
	if (!run) {
		push(&done_head, &done_tail, j);
		if (svc_ctx)
			lws_cancel_service(svc_ctx);
	} else {
		push(&l->todo_head, &l->todo_tail, j);
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&mu);
}

void work_submit(work_fn run, work_fn done, void *arg) { work_submit_lane(WORK_GENERAL, run, done, arg); }

void work_drain_done(void)
{
	for (;;) {
		pthread_mutex_lock(&mu);
		struct job *j = pop(&done_head, &done_tail);
		pthread_mutex_unlock(&mu);
		if (!j)
			return;
		j->done(j->arg);
		free(j);
	}
}

void work_stop(void)
{
	pthread_mutex_lock(&mu);
	stopping = 1;
	for (int i = 0; i < WORK_LANES; i++)
		pthread_cond_broadcast(&lanes[i].cv);
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < WORK_LANES; i++) {
		for (unsigned k = 0; k < lanes[i].nthreads; k++)
			pthread_join(lanes[i].threads[k], NULL);
		lanes[i].nthreads = 0;
	}
	svc_ctx = NULL;
	work_drain_done();
	stopping = 0; /* a later work_start (unit tests) starts afresh */
	quiet_probed = quiet_ok = 0;
}
