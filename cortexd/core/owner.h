/* owner.h — one owner per session when several cortexd share an etcd store
 * (issue 16 point 3, docs/scale-out.md "Ownership").
 *
 * Each node keeps a store lease (node_lease_ttl_s, kept alive every TTL/3 on
 * a worker) and registers nodes/<node_id> = {"id","url"} on it.  A session
 * made on a node is owned by it: owners/<session-id> = <node_id>, put on the
 * node's lease with a create-if-absent txn.  A node loads and serves only the
 * sessions it owns; a request for a session owned by another live node is
 * sent there (proxied, or a 307 to the owner's advertised URL, see
 * owner_route).  When a node dies its lease expires and its owners/ keys go
 * with it: every live node sees the deletes and races to claim the sessions
 * (takeover.c, the same create-if-absent txn, on a worker); each winner
 * loads its sessions sleeping from the shared sessions dir.  A request for
 * a session whose owner this node does not know yet claims it itself.
 *
 * With the SQLite store (one node) all of this is off: owner_enabled() is 0
 * and every call below is a no-op that says "mine".  Service thread only,
 * except where noted. */
#ifndef CORTEX_OWNER_H
#define CORTEX_OWNER_H

#include "session.h"

/* With the store open, before lifecycle_load: the node id and its lease
 * (etcd only).  0 or -1 with err. */
int owner_init(struct cortexd *d, cx_err *err);
/* After work_start and the listener (d->port known): nodes/<id> and the
 * keepalive.  0 or -1 with err. */
int owner_start(struct cortexd *d, cx_err *err);
/* Revokes the lease (a clean stop hands the sessions over at once). */
void owner_stop(struct cortexd *d);
int owner_enabled(void);
const char *owner_node_id(void);

enum owner_who { OWNER_MINE = 0, OWNER_OTHER = 1, OWNER_ERROR = -1 };
/* Claim session id for this node unless another live node holds it.
 * OWNER_OTHER: *node (cap bytes, may be NULL) names the owner.  Blocking
 * (one or two store round trips): any thread. */
enum owner_who owner_claim(store *st, const char *id, char *node, size_t cap, cx_err *err);
/* The advertised URL of node (from nodes/<node>); 0, CX_NOTFOUND, -1. */
int owner_node_url(store *st, const char *node, char *url, size_t cap, cx_err *err);
/* A session route for id that this node does not hold: claims it (and
 * loads it sleeping: *out) if its owner is gone, or says where it lives.
 * 0 and *out: serve it here; 1 and url: the owner's base URL (no trailing
 * slash); CX_NOTFOUND: no such session of this user; -1: store error.
 * With cluster.forward "proxy" (the default) an owner in the cache is the
 * answer (1: no store read; the owner checks the user); only a session with
 * no live owner in the cache (gone, or unknown) reads and claims in the
 * store.  With "redirect" the user is checked here first (a 307 must not
 * tell another user where a session lives). */
int owner_route(struct cortexd *d, const char *user, const char *id, struct session **out,
		char *url, size_t cap, cx_err *err);
/* A 307 to the owner was sent (cortex_owner_redirects_total). */
void owner_redirected(void);

/* owner_cache.c: owners/ and nodes/ followed by store watches (started by
 * owner_start, stopped by owner_stop), so routing a request to another node
 * reads no store on the service thread.  Any thread. */
int owner_cache_start(store *st, cx_err *err);
void owner_cache_stop(void);
/* Session id's owner per the cache: 1 with *node and *url; 2 with *node only
 * (its nodes/ key is gone: it is going away); CX_NOTFOUND: no owner known. */
int owner_cache_lookup(const char *id, char *node, size_t ncap, char *url, size_t ucap);
size_t owner_cache_size(void);
/* peer (a numeric IPv4 or IPv6 address, as lws_get_peer_simple gives it) is
 * the host of a live node's URL in nodes/ (a literal address, or localhost:
 * the loopback ones; a URL naming a host by DNS name matches nothing): 1,
 * else 0.  How an owner trusts the client address a proxying node sends
 * (edge/preview.c, docs/scale-out.md).  Any thread. */
int owner_cache_is_node_addr(const char *peer);

/* takeover.c: a dead node's sessions claimed when its owners/ keys go.
 * owner_orphaned(id, node): owners/<id>, owned by node (not this one), was
 * deleted (the owner cache's watch thread); owner_orphans_resync(): events
 * were missed: every session no live node owns.  Both any thread.  Started
 * by owner_start; owner_takeover_stop before work_stop (a sweep that ends
 * later loads nothing: the next start claims and loads its sessions). */
void owner_orphaned(const char *id, const char *node);
void owner_orphans_resync(void);
void owner_takeover_start(struct cortexd *d, store *st);
void owner_takeover_stop(void);
/* Session id was loaded here from a node that is gone (counts and logs it).
 * Service thread. */
void owner_took_over(const char *id);

/* ---- sandbox uids, unique in the cluster (uids/<uid> = <session id>, no
 * lease) ----
 * A session keeps its uid when another node takes it over, and the egress
 * proxy and the sandbox's files know a session by it: two sessions with one
 * uid on one host would share a policy and credentials.  Each node picks
 * from sandbox.uid_base..+uid_count, so the cluster decides who has a uid.
 * Off (no etcd): session_uid_alloc alone. */
/* A uid for session id, free here and claimed in the store (from a random
 * start in the range: nodes rarely race for one); 0 with err when none is
 * free.  Blocking (a txn per try): lifecycle_new, as owner_claim. */
uid_t owner_uid_alloc(struct cortexd *d, const char *id, cx_err *err);
/* Claim uid for id if nobody has it: 0 (ours, or claimed now), 1 (another
 * session's: *other, 64 bytes, names it), -1.  Any thread. */
int owner_uid_claim(store *st, uid_t uid, const char *id, char *other, cx_err *err);
/* Session id is gone: uids/<uid> too, if it is still id's.  Any thread. */
void owner_uid_forget(store *st, uid_t uid, const char *id);
/* A failed create: its uids/ key goes, and its owners/ key with owner (on a
 * worker). */
void owner_forget_async(store *st, const char *id, uid_t uid, int owner);

/* The session is gone: its owners/ key too.  Any thread. */
void owner_forget(store *st, const char *id);

#endif
