/* gw_pool.c — fair shares of the gateway's in-flight pool, and its queue.
 *
 * A slot is held by an authorized request from its headers until its
 * provider request ends (or the agent's connection closes before that): the
 * connection holds it while the body arrives, then the gw_req.  Each user may
 * have gw_state.lim.max_inflight_per_user requests in flight and queued
 * together, of gw_state.lim.max_inflight slots, so one user's slow requests
 * (a slowloris body, a stalled provider, an agent reading slowly) cannot take
 * the pool from the others, nor fill its queue.
 *
 * Past the pool a request waits in the queue (lim.max_queued at most, past
 * it 529 at once): it holds no slot and no thread, its body is read as it
 * arrives.  A slot given back goes to the queued user holding the fewest
 * slots, the one queued longest among equals (so users take turns), and to
 * that user's oldest request.  gw_http.c times the wait out and takes a
 * closed connection out of the queue.  Service thread only.
 *
 * Every user holding a slot or queuing a request has an entry in
 * gw_state.users: lim.max_inflight + lim.max_queued entries always suffice. */
#include "gw_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Who wakes a conn that got its slot (gw_http_granted): handed in, so the
 * pool, which the HTTP side calls, does not call back up into it. */
static void (*granted_cb)(struct gw_conn *c);

static unsigned users_cap(void)
{
	return gw_state.lim.max_inflight + gw_state.lim.max_queued;
}

static struct gw_pool_user *find(const char *user)
{
	for (unsigned i = 0; i < gw_state.nusers; i++) {
		struct gw_pool_user *u = &gw_state.users[i];
		if ((u->n || u->nq) && !strcmp(u->user, user))
			return u;
	}
	return NULL;
}

static struct gw_pool_user *add(const char *user)
{
	struct gw_pool_user *u = NULL;
	for (unsigned i = 0; i < gw_state.nusers && !u; i++)
		if (!gw_state.users[i].n && !gw_state.users[i].nq)
			u = &gw_state.users[i];
	if (!u) {
		if (gw_state.nusers >= users_cap())
			return NULL; /* cannot happen: an entry per slot or queued conn */
		u = &gw_state.users[gw_state.nusers++];
	}
	memset(u, 0, sizeof *u);
	snprintf(u->user, sizeof u->user, "%s", user);
	return u;
}

/* u's last slot or queued request is gone: its entry is free. */
static void user_drop_if_idle(struct gw_pool_user *u)
{
	if (u->n || u->nq)
		return;
	while (gw_state.nusers && !gw_state.users[gw_state.nusers - 1].n &&
	       !gw_state.users[gw_state.nusers - 1].nq)
		gw_state.nusers--;
}

static void hold(struct gw_pool_user *u)
{
	if (u->n++ == 0)
		gw_state.stats.inflight_users++;
	gw_state.used++;
	gw_state.stats.inflight = gw_state.used;
}

static void enqueue(struct gw_pool_user *u, struct gw_conn *c, struct lws *wsi)
{
	c->queued = 1;
	c->wsi = wsi;
	c->qnext = NULL;
	c->qseq = ++gw_state.qseq;
	c->t_queued_us = cx_mono_us();
	if (u->qtail)
		u->qtail->qnext = c;
	else
		u->qhead = c;
	u->qtail = c;
	u->nq++;
	gw_state.stats.queued = ++gw_state.queued;
}

/* Unlink c, queued by u. */
static void unlink_conn(struct gw_pool_user *u, struct gw_conn *c)
{
	struct gw_conn **pp = &u->qhead, *prev = NULL;
	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (!*pp) {
		log_error("gateway: a conn of '%s' is not in its queue", u->user);
		return;
	}
	*pp = c->qnext;
	if (u->qtail == c)
		u->qtail = prev;
	c->qnext = NULL;
	c->queued = 0;
	u->nq--;
	gw_state.stats.queued = --gw_state.queued;
}

enum gw_pool_verdict gw_pool_take(struct gw_conn *c, struct lws *wsi, unsigned *held,
				  unsigned *queued)
{
	struct gw_pool_user *u = find(c->user);
	*held = u ? u->n : 0;
	*queued = u ? u->nq : 0;
	if (*held + *queued >= gw_state.lim.max_inflight_per_user) {
		gw_state.stats.refused_user_cap++;
		return GW_POOL_USER_CAP;
	}
	int pool_full = gw_state.used >= gw_state.lim.max_inflight;
	if (pool_full && !gw_state.lim.max_queued) {
		gw_state.stats.refused_global_cap++;
		gw_state.stats.overloaded++;
		return GW_POOL_GLOBAL_CAP;
	}
	if (pool_full && gw_state.queued >= gw_state.lim.max_queued) {
		gw_state.stats.refused_queue_full++;
		gw_state.stats.overloaded++;
		return GW_POOL_QUEUE_FULL;
	}
	if (!u && !(u = add(c->user))) {
		log_error("gateway: no pool entry for '%s'", c->user);
		gw_state.stats.overloaded++;
		return pool_full ? GW_POOL_QUEUE_FULL : GW_POOL_GLOBAL_CAP;
	}
	if (pool_full) {
		enqueue(u, c, wsi);
		return GW_POOL_QUEUED;
	}
	hold(u);
	c->slot = 1;
	return GW_POOL_OK;
}

static const unsigned wait_bounds_ms[10] = GW_QUEUE_WAIT_BOUNDS_MS;

static void wait_observe(uint64_t us)
{
	struct gw_stats *s = &gw_state.stats;
	s->queue_wait_us_sum += us;
	s->queue_wait_count++;
	for (unsigned i = 0; i < 10; i++) /* cumulative (Prometheus "le" buckets) */
		if (us <= (uint64_t)wait_bounds_ms[i] * 1000u)
			s->queue_wait_bucket[i]++;
}

/* The queued user to serve next: the fewest slots held, then the oldest
 * head of queue; NULL when nobody waits. */
static struct gw_pool_user *next_user(void)
{
	struct gw_pool_user *best = NULL;
	for (unsigned i = 0; i < gw_state.nusers; i++) {
		struct gw_pool_user *u = &gw_state.users[i];
		if (!u->nq)
			continue;
		if (!best || u->n < best->n ||
		    (u->n == best->n && u->qhead->qseq < best->qhead->qseq))
			best = u;
	}
	return best;
}

/* Free slots go to queued conns. */
static void grant(void)
{
	while (gw_state.queued && gw_state.used < gw_state.lim.max_inflight) {
		struct gw_pool_user *u = next_user();
		if (!u)
			return;
		struct gw_conn *c = u->qhead;
		unlink_conn(u, c);
		hold(u);
		c->slot = 1;
		wait_observe(cx_mono_us() - c->t_queued_us);
		granted_cb(c);
	}
}

void gw_pool_put(const char *user)
{
	if (!gw_state.vh)
		return; /* stopped: the pool was cleared, connections close after */
	struct gw_pool_user *u = find(user);
	if (!u || !u->n || !gw_state.used) {
		log_error("gateway: a slot given back for '%s', which holds none", user);
		return;
	}
	gw_state.used--;
	gw_state.stats.inflight = gw_state.used;
	if (--u->n == 0)
		gw_state.stats.inflight_users--;
	user_drop_if_idle(u);
	grant();
}

void gw_pool_leave(struct gw_conn *c)
{
	if (!c->queued || !gw_state.vh)
		return;
	struct gw_pool_user *u = find(c->user);
	if (!u) {
		log_error("gateway: a queued conn of '%s', which queues none", c->user);
		c->queued = 0;
		return;
	}
	unlink_conn(u, c);
	user_drop_if_idle(u);
}

int gw_pool_start(void (*granted)(struct gw_conn *c), cx_err *err)
{
	granted_cb = granted;
	free(gw_state.users);
	gw_state.users = calloc(users_cap(), sizeof *gw_state.users);
	if (!gw_state.users)
		return cx_err_set(err, ENOMEM, "gateway: the pool of %u entries", users_cap());
	gw_state.nusers = gw_state.used = gw_state.queued = 0;
	gw_state.stats.inflight = gw_state.stats.inflight_users = gw_state.stats.queued = 0;
	return 0;
}

void gw_pool_clear(void)
{
	for (unsigned i = 0; gw_state.users && i < gw_state.nusers; i++)
		for (struct gw_conn *c = gw_state.users[i].qhead, *next; c; c = next) {
			next = c->qnext;
			c->qnext = NULL;
			c->queued = 0; /* its connection closes with the context */
		}
	free(gw_state.users);
	gw_state.users = NULL;
	gw_state.nusers = gw_state.used = gw_state.queued = 0;
	gw_state.stats.inflight = gw_state.stats.inflight_users = gw_state.stats.queued = 0;
}
