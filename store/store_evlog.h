/* store_evlog.h — an in-process event log and its watchers, for backends
 * that have no watch of their own (SQLite).  Internal to store/.
 *
 * The backend appends every committed change in commit order (with its write
 * lock held) and publishes after each commit; each watch has a thread that
 * delivers the events under its prefix.  The log keeps the last
 * EVLOG_MAX_EVENTS events within EVLOG_MAX_BYTES (one larger event is kept
 * alone); a watcher that falls behind what is kept gets STORE_EV_RESYNC. */
#ifndef CORTEX_STORE_EVLOG_H
#define CORTEX_STORE_EVLOG_H

#include "store.h"

#define EVLOG_MAX_EVENTS 4096u
#define EVLOG_MAX_BYTES	 (8u * 1024u * 1024u)

struct evlog;

/* rev = the store's revision now: events at or before it are not kept. */
int evlog_new(struct evlog **out, int64_t rev, cx_err *err);
/* Every watch must have been cancelled. */
void evlog_free(struct evlog *l);
/* Append one change (a copy is kept).  0, or -1 when out of memory: the
 * log then marks everything before as lost (watchers RESYNC). */
void evlog_add(struct evlog *l, store_event_kind kind, const char *key, const void *val,
	       size_t len, int64_t rev);
/* Wake the watchers (after the commit that the added events belong to). */
void evlog_publish(struct evlog *l);
int evlog_watch(struct evlog *l, const char *prefix, int64_t from_rev, store_watch_fn cb,
		void *arg, void **out, cx_err *err);
void evlog_cancel(struct evlog *l, void *w);

#endif
