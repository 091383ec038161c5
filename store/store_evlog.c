/* store_evlog.c — see store_evlog.h.
 *
 * Entries are refcounted so a watcher can deliver one with the log unlocked
 * while writers go on appending (and evicting).  Each entry has a sequence
 * number; a watcher's cursor is the next sequence it has to look at. */
#include "store_evlog.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ev {
	unsigned refs; /* under the log's mutex */
	store_event_kind kind;
	int64_t rev;
	size_t len, bytes;
	char *key, *val; /* point into this allocation */
};

struct evlog {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ev *ring[EVLOG_MAX_EVENTS];
	uint64_t start, end;  /* sequences kept: [start, end) */
	uint64_t published;   /* watchers see [.., published) */
	size_t bytes;	      /* of the events kept */
	int64_t lost_rev;     /* highest revision no longer kept */
	int64_t pub_rev;      /* revision of the last published event */
};

struct evw {
	struct evlog *l; /* not owned */
	char *prefix;
	size_t plen;
	store_watch_fn cb;
	void *arg;
	uint64_t next;
	int64_t from_rev; /* events below it are skipped */
	int resync;	  /* deliver a RESYNC first */
	int stop, detached;
	pthread_t th;
};

int evlog_new(struct evlog **out, int64_t rev, cx_err *err)
{
	struct evlog *l = calloc(1, sizeof *l);
	if (!l)
		return cx_err_set(err, ENOMEM, "store: allocating the event log");
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->lost_rev = rev;
	l->pub_rev = rev;
	*out = l;
	return 0;
}

static void ev_unref(struct ev *e)
{
	if (e && --e->refs == 0)
		free(e);
}

void evlog_free(struct evlog *l)
{
	if (!l)
		return;
	for (uint64_t s = l->start; s < l->end; s++)
		ev_unref(l->ring[s % EVLOG_MAX_EVENTS]);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

/* With the mutex held: drop the oldest entry. */
static void evict_one(struct evlog *l)
{
	struct ev *e = l->ring[l->start % EVLOG_MAX_EVENTS];
	l->ring[l->start % EVLOG_MAX_EVENTS] = NULL;
	l->start++;
	l->bytes -= e->bytes;
	if (e->rev > l->lost_rev)
		l->lost_rev = e->rev;
	ev_unref(e);
}

void evlog_add(struct evlog *l, store_event_kind kind, const char *key, const void *val,
	       size_t len, int64_t rev)
{
	size_t klen = strlen(key);
	size_t bytes = sizeof(struct ev) + klen + 1 + len + 1;
	struct ev *e = malloc(bytes);
	pthread_mutex_lock(&l->mu);
	if (!e) { /* lose everything up to here: watchers resync */
		while (l->start < l->end)
			evict_one(l);
		if (rev > l->lost_rev)
			l->lost_rev = rev;
		pthread_mutex_unlock(&l->mu);
		return;
	}
	*e = (struct ev){.refs = 1, .kind = kind, .rev = rev, .len = len, .bytes = bytes};
	e->key = (char *)(e + 1);
	memcpy(e->key, key, klen + 1);
	e->val = e->key + klen + 1;
	if (len)
		memcpy(e->val, val, len);
	e->val[len] = '\0';
	while (l->start < l->end &&
	       (l->end - l->start >= EVLOG_MAX_EVENTS || l->bytes + bytes > EVLOG_MAX_BYTES))
		evict_one(l);
	l->ring[l->end % EVLOG_MAX_EVENTS] = e;
	l->end++;
	l->bytes += bytes;
	pthread_mutex_unlock(&l->mu);
}

void evlog_publish(struct evlog *l)
{
	pthread_mutex_lock(&l->mu);
	if (l->published != l->end) {
		l->published = l->end;
		l->pub_rev = l->end > l->start ? l->ring[(l->end - 1) % EVLOG_MAX_EVENTS]->rev
						: l->lost_rev;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
}

static void *evw_main(void *arg)
{
	struct evw *w = arg;
	struct evlog *l = w->l;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!w->stop && !w->resync && w->next >= l->published)
			pthread_cond_wait(&l->cv, &l->mu);
		if (w->stop)
			break;
		if (w->resync || w->next < l->start) {
			w->resync = 0;
			w->next = l->published;
			store_event ev = {.kind = STORE_EV_RESYNC, .rev = l->pub_rev};
			pthread_mutex_unlock(&l->mu);
			w->cb(w->arg, &ev);
			pthread_mutex_lock(&l->mu);
			continue;
		}
		struct ev *e = l->ring[w->next % EVLOG_MAX_EVENTS];
		w->next++;
		if (e->rev < w->from_rev || strncmp(e->key, w->prefix, w->plen) != 0)
			continue;
		e->refs++;
		pthread_mutex_unlock(&l->mu);
		store_event ev = {.kind = e->kind, .key = e->key, .val = e->kind == STORE_EV_PUT ? e->val : NULL,
				  .len = e->kind == STORE_EV_PUT ? e->len : 0, .rev = e->rev};
		w->cb(w->arg, &ev);
		pthread_mutex_lock(&l->mu);
		ev_unref(e);
	}
	int detached = w->detached;
	pthread_mutex_unlock(&l->mu);
	if (detached) { /* cancelled from its own callback: nobody joins */
		free(w->prefix);
		free(w);
	}
	return NULL;
}

int evlog_watch(struct evlog *l, const char *prefix, int64_t from_rev, store_watch_fn cb,
		void *arg, void **out, cx_err *err)
{
	struct evw *w = calloc(1, sizeof *w);
	if (!w || !(w->prefix = strdup(prefix))) {
		free(w);
		return cx_err_set(err, ENOMEM, "store: allocating a watch");
	}
	w->l = l;
	w->plen = strlen(prefix);
	w->cb = cb;
	w->arg = arg;
	pthread_mutex_lock(&l->mu);
	if (from_rev == 0) {
		w->next = l->published;
	} else if (from_rev <= l->lost_rev) {
		w->resync = 1;
		w->next = l->published;
	} else { /* every kept event of revision >= from_rev */
		w->next = l->start;
		w->from_rev = from_rev;
	}
	pthread_mutex_unlock(&l->mu);
	int rc = pthread_create(&w->th, NULL, evw_main, w);
	if (rc != 0) {
		free(w->prefix);
		free(w);
		return cx_err_set(err, rc, "store: starting a watch thread");
	}
	*out = w;
	return 0;
}

void evlog_cancel(struct evlog *l, void *wv)
{
	struct evw *w = wv;
	if (!w)
		return;
	int self = pthread_equal(pthread_self(), w->th);
	pthread_mutex_lock(&l->mu);
	w->stop = 1;
	w->detached = self;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (self) {
		pthread_detach(w->th);
		return;
	}
	pthread_join(w->th, NULL);
	free(w->prefix);
	free(w);
}
