/* peerwatch.c — see peerwatch.h. */
#include "peerwatch.h"

#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "work.h"

#define PW_PREFIX      "settings/"
#define PW_USER_MAX    256
#define PW_PENDING_MAX 256 /* queued jobs; past it one "every user" job stands for the rest */

struct pw_job {
	struct cortexd *d; /* not owned */
	int all;	   /* events were missed or coalesced: every user here */
	char user[PW_USER_MAX];
};

static store_watch *pw_watch;
static unsigned pw_pending; /* atomic */
static int pw_all_queued;   /* atomic: an "every user" job is queued */
/* service thread only */
static uint64_t pw_events, pw_resyncs, pw_coalesced;

static void pw_done(void *arg)
{
	struct pw_job *j = arg;
	__atomic_sub_fetch(&pw_pending, 1, __ATOMIC_RELAXED);
	if (j->all) {
		__atomic_store_n(&pw_all_queued, 0, __ATOMIC_RELAXED);
		/* each user once: a session is marked with the first of its user's */
		for (struct session *s = j->d->sessions; s; s = s->next) {
			int seen = 0;
			for (struct session *p = j->d->sessions; p != s && !seen; p = p->next)
				seen = strcmp(p->user, s->user) == 0;
			if (!seen)
				lifecycle_settings_written(j->d, s->user);
		}
	} else {
		pw_events++;
		lifecycle_settings_written(j->d, j->user);
	}
	free(j);
}

static void pw_queue(struct cortexd *d, const char *user, size_t ulen, int all)
{
	if (!all && __atomic_load_n(&pw_pending, __ATOMIC_RELAXED) >= PW_PENDING_MAX)
		all = 1;
	if (all && __atomic_exchange_n(&pw_all_queued, 1, __ATOMIC_RELAXED))
		return; /* one is queued already and will cover this one */
	struct pw_job *j = calloc(1, sizeof *j);
	if (!j)
		abort(); /* as work_submit does */
	j->d = d;
	j->all = all;
	if (!all)
		memcpy(j->user, user, ulen);
	__atomic_add_fetch(&pw_pending, 1, __ATOMIC_RELAXED);
	work_submit(NULL, pw_done, j);
}

/* On the store's watch thread: touches nothing but the queue. */
static void pw_event(void *arg, const store_event *ev)
{
	struct cortexd *d = arg;
	if (ev->kind == STORE_EV_RESYNC) {
		__atomic_add_fetch(&pw_resyncs, 1, __ATOMIC_RELAXED);
		pw_queue(d, NULL, 0, 1);
		return;
	}
	/* settings/<user>/... */
	const char *user = ev->key + strlen(PW_PREFIX);
	size_t ulen = strcspn(user, "/");
	if (ulen == 0 || ulen >= PW_USER_MAX || user[ulen] != '/')
		return;
	pw_queue(d, user, ulen, 0);
}

static void pw_metrics(FILE *f, void *arg)
{
	(void)arg;
	metrics_counter(f, "cortex_settings_watch_events_total",
			"Settings writes of the cluster seen by this node's store watch", pw_events);
	metrics_counter(f, "cortex_settings_watch_resyncs_total",
			"Times the settings watch missed events and marked every user",
			__atomic_load_n(&pw_resyncs, __ATOMIC_RELAXED));
	(void)pw_coalesced;
}

int peerwatch_start(struct cortexd *d, cx_err *err)
{
	if (store_watch_start(d->st, PW_PREFIX, 0, pw_event, d, &pw_watch, err) < 0)
		return cx_err_wrap(err, "settings watch");
	metrics_register("settings_watch", pw_metrics, NULL);
	log_info("watching %s in the shared store: settings written on other nodes apply here",
		 PW_PREFIX);
	return 0;
}

void peerwatch_stop(void)
{
	store_watch_cancel(pw_watch);
	pw_watch = NULL;
}
