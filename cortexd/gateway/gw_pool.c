/* gw_pool.c — fair shares of the gateway's in-flight pool.
 *
 * A slot is held by an authorized request from its headers until its
 * provider request ends (or the agent's connection closes before that): the
 * connection holds it while the body arrives, then the gw_req.  Each user may
 * hold gw_state.lim.max_inflight_per_user slots of gw_state.lim.max_inflight,
 * so one user's slow requests (a slowloris body, a stalled provider, an agent
 * reading slowly) cannot take the pool from the others.  Service thread only.
 *
 * Every holding user has an entry in gw_state.users: at most one per slot, so
 * GW_MAX_INFLIGHT_LIMIT entries always suffice. */
#include "gw_internal.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static struct gw_pool_user *find(const char *user)
{
	for (unsigned i = 0; i < gw_state.nusers; i++)
		if (gw_state.users[i].n && !strcmp(gw_state.users[i].user, user))
			return &gw_state.users[i];
	return NULL;
}

static struct gw_pool_user *add(const char *user)
{
	struct gw_pool_user *u = NULL;
	for (unsigned i = 0; i < gw_state.nusers && !u; i++)
		if (!gw_state.users[i].n)
			u = &gw_state.users[i];
	if (!u) {
		if (gw_state.nusers >= GW_MAX_INFLIGHT_LIMIT)
			return NULL; /* cannot happen: used < max_inflight <= the limit */
		u = &gw_state.users[gw_state.nusers++];
	}
	snprintf(u->user, sizeof u->user, "%s", user);
	gw_state.stats.inflight_users++;
	return u;
}

enum gw_pool_verdict gw_pool_take(const char *user, unsigned *held)
{
	struct gw_pool_user *u = find(user);
	*held = u ? u->n : 0;
	if (*held >= gw_state.lim.max_inflight_per_user) {
		gw_state.stats.refused_user_cap++;
		return GW_POOL_USER_CAP;
	}
	if (gw_state.used >= gw_state.lim.max_inflight || (!u && !(u = add(user)))) {
		gw_state.stats.overloaded++;
		return GW_POOL_GLOBAL_CAP;
	}
	u->n++;
	gw_state.used++;
	gw_state.stats.inflight = gw_state.used;
	return GW_POOL_OK;
}

void gw_pool_put(const char *user)
{
	if (!gw_state.vh)
		return; /* stopped: the pool was cleared, connections close after */
	struct gw_pool_user *u = find(user);
	if (!u || !gw_state.used) {
		log_error("gateway: a slot given back for '%s', which holds none", user);
		return;
	}
	gw_state.used--;
	gw_state.stats.inflight = gw_state.used;
	if (--u->n == 0) {
		gw_state.stats.inflight_users--;
		while (gw_state.nusers && !gw_state.users[gw_state.nusers - 1].n)
			gw_state.nusers--;
	}
}

void gw_pool_clear(void)
{
	memset(gw_state.users, 0, sizeof gw_state.users);
	gw_state.nusers = gw_state.used = 0;
	gw_state.stats.inflight = gw_state.stats.inflight_users = 0;
}
