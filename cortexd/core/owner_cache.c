/* owner_cache.c — the cluster's owners/ and nodes/ keys in memory (owner.h).
 *
 * A request on this node for a session it does not hold must learn the
 * session's owner and that owner's URL.  Reading owners/<id> and nodes/<node>
 * from etcd on the service thread cost one or two round trips per request;
 * instead both prefixes are listed once at start and then followed by store
 * watches (the store's watch thread applies each event under a mutex), so a
 * lookup is a hash probe.  A RESYNC (events missed) re-lists the prefix on
 * the watch thread.  The cache can lag etcd by a watch delivery (a few ms):
 * a stale owner means one proxied request reaches a node that no longer holds
 * the session, which answers it itself (it claims or refuses as any node). */
#include "owner.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define OC_BUCKETS  4096
#define OC_ID_MAX   64
#define OC_NODE_MAX 128
#define OC_URL_MAX  512

struct oc_owner {
	struct oc_owner *next;
	char id[OC_ID_MAX];
	char node[OC_NODE_MAX];
};

struct oc_node {
	struct oc_node *next;
	char id[OC_NODE_MAX];
	char url[OC_URL_MAX];
	int naddr;		 /* its URL's host as addresses (0: a DNS name) */
	struct in6_addr addr[2]; /* IPv4 as v4-mapped */
};

static pthread_mutex_t oc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct oc_owner *oc_tab[OC_BUCKETS];
static struct oc_node *oc_nodes;
static size_t oc_count;
static store *oc_st;
static store_watch *oc_wowners, *oc_wnodes;

static unsigned oc_hash(const char *s)
{
	return cx_fnv1a(s, strlen(s)) % OC_BUCKETS;
}

/* ---- under oc_mu ---- */

static void owner_set(const char *id, const char *node, size_t nlen)
{
	if (strlen(id) >= OC_ID_MAX || !nlen || nlen >= OC_NODE_MAX)
		return;
	struct oc_owner **pp = &oc_tab[oc_hash(id)];
	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->id, id))
			break;
	struct oc_owner *o = *pp;
	if (!o) {
		o = calloc(1, sizeof *o);
		if (!o)
			return;
		snprintf(o->id, sizeof o->id, "%s", id);
		*pp = o;
		oc_count++;
	}
	memcpy(o->node, node, nlen);
	o->node[nlen] = '\0';
}

/* Drops id; its owner was (prev, cap bytes: "" if unknown). */
static void owner_del(const char *id, char *prev, size_t cap)
{
	prev[0] = '\0';
	for (struct oc_owner **pp = &oc_tab[oc_hash(id)]; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->id, id)) {
			struct oc_owner *o = *pp;
			snprintf(prev, cap, "%s", o->node);
			*pp = o->next;
			free(o);
			oc_count--;
			return;
		}
}

static void owners_clear(void)
{
	for (size_t i = 0; i < OC_BUCKETS; i++)
		while (oc_tab[i]) {
			struct oc_owner *o = oc_tab[i];
			oc_tab[i] = o->next;
			free(o);
		}
	oc_count = 0;
}

/* A numeric address as an in6_addr (IPv4 v4-mapped): 0, or -1. */
static int addr_parse(const char *s, struct in6_addr *a)
{
	struct in_addr v4;
	if (inet_pton(AF_INET6, s, a) == 1)
		return 0;
	if (inet_pton(AF_INET, s, &v4) != 1)
		return -1;
	memset(a, 0, sizeof *a);
	a->s6_addr[10] = a->s6_addr[11] = 0xff;
	memcpy(&a->s6_addr[12], &v4, 4);
	return 0;
}

/* The host of url (scheme://host[:port][/...], host maybe [v6]) as n's
 * addresses: a literal one, or localhost's two. */
static void node_addrs(struct oc_node *n, const char *url)
{
	char host[256];
	const char *h = strstr(url, "://");
	h = h ? h + 3 : url;
	size_t len = *h == '[' ? strcspn(++h, "]") : strcspn(h, ":/");
	n->naddr = 0;
	if (len >= sizeof host)
		return;
	memcpy(host, h, len);
	host[len] = '\0';
	if (!strcmp(host, "localhost")) {
		addr_parse("127.0.0.1", &n->addr[0]);
		addr_parse("::1", &n->addr[1]);
		n->naddr = 2;
	} else if (addr_parse(host, &n->addr[0]) == 0) {
		n->naddr = 1;
	}
}

/* nodes/<id> = {"id","url","pid"}: its url, or a delete when val is NULL. */
static void node_set(const char *id, const char *val, size_t len)
{
	struct oc_node **pp = &oc_nodes;
	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->id, id))
			break;
	if (!val) {
		if (*pp) {
			struct oc_node *n = *pp;
			*pp = n->next;
			free(n);
		}
		return;
	}
	json_t *o = json_loadb(val, len, 0, NULL);
	const char *u = json_string_value(json_object_get(o, "url"));
	if (u && strlen(u) < OC_URL_MAX && strlen(id) < OC_NODE_MAX) {
		struct oc_node *n = *pp;
		if (!n && (n = calloc(1, sizeof *n))) {
			snprintf(n->id, sizeof n->id, "%s", id);
			*pp = n;
		}
		if (n) {
			snprintf(n->url, sizeof n->url, "%s", u);
			node_addrs(n, u);
		}
	}
	json_decref(o);
}

static void nodes_clear(void)
{
	while (oc_nodes) {
		struct oc_node *n = oc_nodes;
		oc_nodes = n->next;
		free(n);
	}
}

/* ---- filling ---- */

/* Re-read prefix ("owners/" or "nodes/") into the cache.  Any thread but the
 * service thread's hot path (a blocking store list). */
static int oc_load(const char *prefix, cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(oc_st, prefix, 0, &kv, &n, err) < 0)
		return -1;
	size_t pl = strlen(prefix);
	int owners = prefix[0] == 'o';
	pthread_mutex_lock(&oc_mu);
	if (owners)
		owners_clear();
	else
		nodes_clear();
	for (size_t i = 0; i < n; i++) {
		if (owners)
			owner_set(kv[i].key + pl, kv[i].val, kv[i].len);
		else
			node_set(kv[i].key + pl, kv[i].val, kv[i].len);
	}
	pthread_mutex_unlock(&oc_mu);
	store_kv_free(kv, n);
	return 0;
}

/* On the store's watch thread. */
static void oc_event(void *arg, const store_event *ev)
{
	const char *prefix = arg;
	if (ev->kind == STORE_EV_RESYNC) {
		cx_err err = CX_ERR_INIT;
		if (oc_load(prefix, &err) < 0)
			log_warn("owner cache: re-reading %s: %s", prefix, err.msg);
		if (prefix[0] == 'o') /* deletes were missed: sessions may be orphans */
			owner_orphans_resync();
		return;
	}
	const char *name = ev->key + strlen(prefix);
	char prev[OC_NODE_MAX] = "";
	pthread_mutex_lock(&oc_mu);
	if (prefix[0] != 'o')
		node_set(name, ev->kind == STORE_EV_PUT ? ev->val : NULL, ev->len);
	else if (ev->kind == STORE_EV_PUT)
		owner_set(name, ev->val, ev->len);
	else
		owner_del(name, prev, sizeof prev);
	pthread_mutex_unlock(&oc_mu);
	/* another node's session lost its owner: takeover.c sees whether the
	 * node is gone (and then claims it) */
	if (prev[0] && strcmp(prev, owner_node_id()))
		owner_orphaned(name, prev);
}

int owner_cache_start(store *st, cx_err *err)
{
	static const char owners[] = "owners/", nodes[] = "nodes/";
	oc_st = st;
	int64_t rev = 0;
	/* the revision first: the watches replay every write after it, so a
	 * write between the list and the watch is applied (again: idempotent) */
	if (store_revision(st, &rev, err) < 0 || oc_load(owners, err) < 0 ||
	    oc_load(nodes, err) < 0 ||
	    store_watch_start(st, owners, rev + 1, oc_event, (void *)owners, &oc_wowners, err) <
		0 ||
	    store_watch_start(st, nodes, rev + 1, oc_event, (void *)nodes, &oc_wnodes, err) < 0)
		return cx_err_wrap(err, "owner cache");
	return 0;
}

void owner_cache_stop(void)
{
	store_watch_cancel(oc_wowners);
	store_watch_cancel(oc_wnodes);
	oc_wowners = oc_wnodes = NULL;
	pthread_mutex_lock(&oc_mu);
	owners_clear();
	nodes_clear();
	pthread_mutex_unlock(&oc_mu);
}

int owner_cache_lookup(const char *id, char *node, size_t ncap, char *url, size_t ucap)
{
	int rc = CX_NOTFOUND;
	pthread_mutex_lock(&oc_mu);
	for (struct oc_owner *o = oc_tab[oc_hash(id)]; o; o = o->next) {
		if (strcmp(o->id, id))
			continue;
		snprintf(node, ncap, "%s", o->node);
		rc = 2; /* an owner, no URL known */
		for (struct oc_node *n = oc_nodes; n; n = n->next)
			if (!strcmp(n->id, o->node)) {
				snprintf(url, ucap, "%s", n->url);
				rc = 1;
			}
		break;
	}
	pthread_mutex_unlock(&oc_mu);
	return rc;
}

size_t owner_cache_size(void)
{
	pthread_mutex_lock(&oc_mu);
	size_t n = oc_count;
	pthread_mutex_unlock(&oc_mu);
	return n;
}

int owner_cache_is_node_addr(const char *peer)
{
	struct in6_addr a;
	int hit = 0;
	if (!peer || addr_parse(peer, &a) < 0)
		return 0;
	pthread_mutex_lock(&oc_mu);
	for (struct oc_node *n = oc_nodes; n && !hit; n = n->next)
		for (int i = 0; i < n->naddr; i++)
			hit |= !memcmp(&n->addr[i], &a, sizeof a);
	pthread_mutex_unlock(&oc_mu);
	return hit;
}
