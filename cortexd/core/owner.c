/* owner.c — see owner.h. */
#include "owner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <unistd.h>

#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "work.h"

#define OWN_ID_MAX 128

static int own_on;
static char own_id[OWN_ID_MAX];
static char own_url[512];
static int64_t own_ttl;
static int64_t own_lease; /* atomic: a worker renews it */
static store *own_st;
static struct lws_context *own_ctx;
static lws_sorted_usec_list_t own_sul;
static int own_ka_busy, own_stopping;
static struct cortexd *own_d;
/* metrics (service thread) */
static uint64_t own_claims, own_takeovers, own_redirects, own_lease_lost, own_released;
/* A request for a session id no cache knows reads the store on the service
 * thread: at most 100 a second, bursts of 200 (auth.c's reasoning); past it
 * a 503 "try again". */
static struct cx_budget own_miss_budget = CX_BUDGET_INIT(100, 200);

int owner_enabled(void)
{
	return own_on;
}

const char *owner_node_id(void)
{
	return own_id;
}

static int64_t lease_now(void)
{
	return __atomic_load_n(&own_lease, __ATOMIC_ACQUIRE);
}

/* nodes/<id> on lease: 0 or -1.  Any thread. */
static int put_node(int64_t lease, cx_err *err)
{
	json_t *o = json_pack("{s:s,s:s,s:i}", "id", own_id, "url", own_url, "pid", (int)getpid());
	char *v = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	char key[200];
	snprintf(key, sizeof key, "nodes/%s", own_id);
	int rc = v ? store_put_lease(own_st, key, v, strlen(v), lease, err) : -1;
	free(v);
	return rc != 0 ? cx_err_wrap(err, "register %s", key) : 0;
}

/* A new lease and nodes/<id> on it: 0 or -1.  Any thread. */
static int register_node(cx_err *err)
{
	int64_t lease = 0;
	if (store_lease_grant(own_st, own_ttl, &lease, err) < 0)
		return cx_err_wrap(err, "node lease");
	if (put_node(lease, err) < 0)
		return -1;
	__atomic_store_n(&own_lease, lease, __ATOMIC_RELEASE);
	return 0;
}

enum owner_who owner_claim(store *st, const char *id, char *node, size_t cap, cx_err *err)
{
	if (!own_on)
		return OWNER_MINE;
	char key[128];
	snprintf(key, sizeof key, "owners/%s", id);
	for (int tries = 0; tries < 3; tries++) {
		int rc = store_create_lease(st, key, own_id, strlen(own_id), lease_now(), err);
		if (rc == 0)
			return OWNER_MINE;
		if (rc < 0 && rc != CX_NOTFOUND)
			return OWNER_ERROR;
		if (rc == CX_NOTFOUND) /* the lease lapsed: the keepalive regrants it */
			return cx_err_set(err, EAGAIN, "this node's lease lapsed; try again"),
			       OWNER_ERROR;
		char *v = NULL;
		size_t len = 0;
		rc = store_get(st, key, &v, &len, err);
		if (rc == CX_NOTFOUND)
			continue; /* it expired in between: try again */
		if (rc < 0)
			return OWNER_ERROR;
		enum owner_who who =
		    len == strlen(own_id) && !memcmp(v, own_id, len) ? OWNER_MINE : OWNER_OTHER;
		/* ours on an older lease (an upgrade restart): onto this one */
		if (who == OWNER_MINE &&
		    store_put_lease(st, key, own_id, strlen(own_id), lease_now(), err) != 0)
			log_warn("%s: moving it to this node's lease: %s", key, err->msg);
		if (node && cap)
			snprintf(node, cap, "%.*s", (int)(len < cap ? len : cap - 1), v);
		free(v);
		return who;
	}
	return cx_err_set(err, EAGAIN, "owners/%s keeps changing", id), OWNER_ERROR;
}

int owner_node_url(store *st, const char *node, char *url, size_t cap, cx_err *err)
{
	char key[200];
	snprintf(key, sizeof key, "nodes/%s", node);
	char *v = NULL;
	size_t len = 0;
	int rc = store_get(st, key, &v, &len, err);
	if (rc < 0)
		return rc;
	json_t *o = json_loadb(v, len, 0, NULL);
	free(v);
	const char *u = json_string_value(json_object_get(o, "url"));
	rc = u && strlen(u) < cap ? 0 : CX_NOTFOUND;
	if (rc == 0)
		snprintf(url, cap, "%s", u);
	json_decref(o);
	return rc;
}

void owner_forget(store *st, const char *id)
{
	if (!own_on)
		return;
	char key[128];
	cx_err err = CX_ERR_INIT;
	snprintf(key, sizeof key, "owners/%s", id);
	if (store_delete(st, key, &err) == -1)
		log_warn("session %s: dropping its owner key: %s", id, err.msg);
}

int owner_route(struct cortexd *d, const char *user, const char *id, struct session **out,
		char *url, size_t cap, cx_err *err)
{
	*out = NULL;
	if (!own_on || strchr(id, '/'))
		return CX_NOTFOUND;
	char node[OWN_ID_MAX];
	if (!d->cfg.cluster_redirect &&
	    owner_cache_lookup(id, node, sizeof node, url, cap) == 1 && strcmp(node, own_id))
		return 1;
	char key[256];
	snprintf(key, sizeof key, "sessions/%s/%s", user, id);
	if (!cx_budget_take(&own_miss_budget))
		return cx_err_set(err, EAGAIN, "too many requests for sessions this node does not know; try again"),
		       -1;
	char *v = NULL;
	size_t len = 0;
	int rc = store_get(d->st, key, &v, &len, err);
	if (rc < 0)
		return rc;
	free(v);
	enum owner_who who = owner_claim(d->st, id, node, sizeof node, err);
	if (who == OWNER_ERROR)
		return -1;
	if (who == OWNER_OTHER) {
		rc = owner_node_url(d->st, node, url, cap, err);
		if (rc == CX_NOTFOUND) /* its node is gone, its key not yet: a moment */
			return cx_err_set(err, EAGAIN,
					  "session %s: its owner %s is going away; try again", id,
					  node),
			       -1;
		return rc < 0 ? -1 : 1;
	}
	/* Ours now: a dead node's session comes back sleeping here (when no
	 * takeover sweep had loaded it yet). */
	own_claims++;
	if (!session_find(d, id)) {
		if (lifecycle_load_one(d, key, err) < 0)
			return -1;
		owner_took_over(id);
	}
	*out = session_find(d, id);
	return *out ? 0 : CX_NOTFOUND;
}

/* ---- sandbox uids ---- */

int owner_uid_claim(store *st, uid_t uid, const char *id, char *other, cx_err *err)
{
	if (!own_on || !uid)
		return 0;
	char key[64];
	snprintf(key, sizeof key, "uids/%u", (unsigned)uid);
	int rc = store_create_lease(st, key, id, strlen(id), 0, err);
	if (rc != 1)
		return rc == 0 ? 0 : -1;
	char *v = NULL;
	size_t len = 0;
	rc = store_get(st, key, &v, &len, err);
	if (rc == CX_NOTFOUND) /* freed in between: once more */
		return store_create_lease(st, key, id, strlen(id), 0, err) == 0 ? 0 : -1;
	if (rc < 0)
		return -1;
	int mine = len == strlen(id) && !memcmp(v, id, len);
	if (!mine && other)
		snprintf(other, 64, "%.*s", (int)(len < 63 ? len : 63), v);
	free(v);
	return mine ? 0 : 1;
}

uid_t owner_uid_alloc(struct cortexd *d, const char *id, cx_err *err)
{
	const config *c = &d->cfg;
	if (!own_on)
		return session_uid_alloc_from(d, 0);
	uint32_t start = randombytes_uniform(c->sandbox_uid_count ? c->sandbox_uid_count : 1);
	for (int tries = 0; tries < 64; tries++) {
		uid_t uid = session_uid_alloc_from(d, start);
		if (!uid)
			break;
		int rc = owner_uid_claim(d->st, uid, id, NULL, err);
		if (rc == 0)
			return uid;
		session_uid_put(d, uid);
		if (rc < 0)
			return 0;
		start = (uint32_t)(uid - c->sandbox_uid_base) + 1; /* another node's session has it */
	}
	cx_err_set(err, EAGAIN, "no sandbox uid is free in the cluster (sandbox.uid_count)");
	return 0;
}

void owner_uid_forget(store *st, uid_t uid, const char *id)
{
	if (!own_on || !uid)
		return;
	char key[64], *v = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	snprintf(key, sizeof key, "uids/%u", (unsigned)uid);
	if (store_get(st, key, &v, &len, &err) == 0 && len == strlen(id) && !memcmp(v, id, len) &&
	    store_delete(st, key, &err) == -1)
		log_warn("session %s: dropping %s: %s", id, key, err.msg);
	free(v);
}

struct forget_job {
	store *st;
	uid_t uid;
	int owner;
	char id[64];
};

static void forget_run(void *arg)
{
	struct forget_job *f = arg;
	owner_uid_forget(f->st, f->uid, f->id);
	if (f->owner)
		owner_forget(f->st, f->id);
	free(f);
}

void owner_forget_async(store *st, const char *id, uid_t uid, int owner)
{
	struct forget_job *f = own_on ? calloc(1, sizeof *f) : NULL;
	if (!f)
		return;
	f->st = st;
	f->uid = uid;
	f->owner = owner;
	snprintf(f->id, sizeof f->id, "%s", id);
	work_submit(forget_run, NULL, f);
}

void owner_took_over(const char *id)
{
	own_takeovers++;
	log_info("session %s: taken over (its owner is gone), sleeping here", id);
}

void owner_redirected(void)
{
	own_redirects++;
}

/* ---- the keepalive ---- */

struct ka {
	int lost; /* the lease had expired: a new one was granted */
	int failed;
	cx_err err;
};

static void ka_run(void *arg)
{
	struct ka *k = arg;
	int64_t ttl = 0;
	int rc = store_lease_keepalive(own_st, lease_now(), &ttl, &k->err);
	if (rc == CX_NOTFOUND) {
		k->lost = 1;
		cx_err_clear(&k->err);
		if (register_node(&k->err) < 0)
			k->failed = 1;
	} else if (rc < 0) {
		k->failed = 1;
	}
}

static void ka_schedule(void);

static void ka_done(void *arg)
{
	struct ka *k = arg;
	own_ka_busy = 0;
	if (k->failed)
		log_warn("node %s: lease keepalive: %s", own_id, k->err.msg);
	if (k->lost && !k->failed) {
		/* Our keys went with the old lease: claim our sessions again.  One
		 * another node took over meanwhile is its now: let go of it here
		 * (two nodes must not run one sandbox on one shared disk). */
		own_lease_lost++;
		log_warn("node %s: the lease had expired; registered again", own_id);
		size_t n = 0, i = 0;
		for (struct session *s = own_d->sessions; s; s = s->next)
			n++;
		char (*gone)[64] = n ? calloc(n, sizeof *gone) : NULL;
		for (struct session *s = own_d->sessions; s; s = s->next) {
			char node[OWN_ID_MAX] = "";
			cx_err e = CX_ERR_INIT;
			if (s->deleted)
				continue;
			enum owner_who who = owner_claim(own_d->st, s->id, node, sizeof node, &e);
			if (who == OWNER_OTHER && gone && i < n && strlen(s->id) < sizeof gone[0])
				snprintf(gone[i++], sizeof gone[0], "%s", s->id);
			if (who == OWNER_OTHER)
				log_error("session %s: taken over by %s while this node's lease had lapsed: "
					  "released here", s->id, node);
			else if (who == OWNER_ERROR)
				log_error("session %s: claiming it again: %s", s->id, e.msg);
		}
		for (size_t k2 = 0; k2 < i; k2++) { /* (a release unlinks the session) */
			struct session *s = session_find(own_d, gone[k2]);
			if (s && !s->deleted) {
				own_released++;
				lifecycle_release(s);
			}
		}
		free(gone);
	}
	free(k);
	if (!own_stopping)
		ka_schedule();
}

static void ka_tick(lws_sorted_usec_list_t *sul)
{
	(void)sul;
	if (own_ka_busy || own_stopping)
		return;
	struct ka *k = calloc(1, sizeof *k);
	if (!k)
		return ka_schedule();
	own_ka_busy = 1;
	work_submit(ka_run, ka_done, k);
}

static void ka_schedule(void)
{
	lws_usec_t every = (lws_usec_t)own_ttl * 1000000 / 3;
	lws_sul_schedule(own_ctx, 0, &own_sul, ka_tick, every);
}

static void owner_metrics(FILE *f, void *arg)
{
	(void)arg;
	metrics_counter(f, "cortex_owner_claims_total", "Sessions this node claimed on a request",
			own_claims);
	metrics_counter(f, "cortex_owner_takeovers_total",
			"Sessions of a node that is gone loaded here (they come back sleeping)",
			own_takeovers);
	metrics_counter(f, "cortex_owner_redirects_total",
			"Requests answered with a 307 to the node that owns the session", own_redirects);
	metrics_gauge(f, "cortex_owner_cache_sessions", "Session owners of the cluster known to this node",
		      (double)owner_cache_size());
	metrics_counter(f, "cortex_owner_lease_lost_total",
			"Times this node's lease had expired at a keepalive", own_lease_lost);
	metrics_counter(f, "cortex_owner_lookups_refused_total",
			"Requests for a session no cache knows refused unread (over 100 store reads a second)",
			cx_budget_refused(&own_miss_budget));
	metrics_counter(f, "cortex_owner_released_total",
			"Sessions let go here because another node took them over while this node's lease had lapsed",
			own_released);
}

int owner_init(struct cortexd *d, cx_err *err)
{
	const config *c = &d->cfg;
	if (strcmp(c->store_kind, "etcd"))
		return 0;
	char host[200] = "localhost";
	(void)gethostname(host, sizeof host - 1);
	if (c->node_id[0])
		snprintf(own_id, sizeof own_id, "%s", c->node_id);
	else if (c->listen_port)
		snprintf(own_id, sizeof own_id, "%.100s:%d", host, c->listen_port);
	else /* a kernel-chosen port is not known yet */
		snprintf(own_id, sizeof own_id, "%.100s:pid%ld", host, (long)getpid());
	own_ttl = c->node_lease_ttl_s ? c->node_lease_ttl_s : 10;
	own_st = d->st;
	own_d = d;
	int64_t lease = 0;
	if (store_lease_grant(own_st, own_ttl, &lease, err) < 0)
		return cx_err_wrap(err, "node lease");
	__atomic_store_n(&own_lease, lease, __ATOMIC_RELEASE);
	own_on = 1;
	return 0;
}

int owner_start(struct cortexd *d, cx_err *err)
{
	const config *c = &d->cfg;
	if (!own_on)
		return 0;
	if (c->node_advertise_url[0])
		snprintf(own_url, sizeof own_url, "%s", c->node_advertise_url);
	else
		snprintf(own_url, sizeof own_url, "http://%.200s:%d", c->listen_host, d->port);
	size_t ul = strlen(own_url);
	while (ul && own_url[ul - 1] == '/')
		own_url[--ul] = '\0';
	own_ctx = d->ctx;
	if (put_node(lease_now(), err) < 0)
		return -1;
	if (own_ctx)
		ka_schedule();
	owner_takeover_start(d, own_st);
	if (owner_cache_start(own_st, err) < 0)
		return -1;
	metrics_register("owner", owner_metrics, NULL);
	log_info("node %s (%s): lease %lld, TTL %lld s", own_id, own_url, (long long)lease_now(),
		 (long long)own_ttl);
	return 0;
}

void owner_stop(struct cortexd *d)
{
	(void)d;
	if (!own_on)
		return;
	own_stopping = 1;
	lws_sul_cancel(&own_sul);
	owner_cache_stop();
	cx_err err = CX_ERR_INIT;
	if (store_lease_revoke(own_st, lease_now(), &err) < 0)
		log_warn("node %s: revoking the lease: %s", own_id, err.msg);
}
