/* store.h — the key-value store every persistent thing lives in.
 *
 * Shaped like etcd v3 (keys and values are byte strings, list by prefix,
 * atomic multi-key transactions, revisions, watches, leases) with two
 * backends behind one ops table: the embedded default, SQLite (WAL,
 * synchronous=FULL) in the data dir, and etcd (store_etcd.c, shared by several
 * cortexd: docs/scale-out.md).  Thread-safe: callers on any thread.
 *
 * Key layout (owned by the callers, documented in docs/architecture.md):
 *   users/<name>, tokens/<sha256-hex>, sessions/<user>/<id>,
 *   transcripts/<session-id>/<zero-padded seq>
 */
#ifndef CORTEX_STORE_H
#define CORTEX_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "cx.h"

/* Limits enforced by the front (store.c) for every backend, so callers see the
 * same rules whether the data lives in SQLite or etcd (etcd's default request
 * cap is 1.5 MiB; keep values small in practice). */
#define STORE_KEY_MAX 1024u		    /* bytes, excluding the NUL */
#define STORE_VAL_MAX (16u * 1024u * 1024u) /* bytes */

typedef struct store store;

typedef struct store_kv {
	char *key;  /* NUL-terminated, owned */
	char *val;  /* NUL-terminated for convenience; may hold binary; owned */
	size_t len; /* value length in bytes, without the NUL */
} store_kv;

typedef enum store_op_kind { STORE_PUT = 1, STORE_DEL = 2 } store_op_kind;

typedef struct store_op {
	store_op_kind kind;
	const char *key; /* not owned */
	const char *val; /* not owned; PUT only */
	size_t len;	 /* PUT only */
} store_op;

/* Open a store by kind: "sqlite" (target = database file path, created 0600 if
 * missing) or "etcd" (target = "URL[,URL...]", the default options below).
 * Any other kind is an error naming the kind. */
int store_open(store **out, const char *kind, const char *target, cx_err *err);

/* The etcd backend (store_etcd.c, over etcd's v3 JSON gateway). */
struct store_etcd_opts {
	const char *endpoints; /* "http://h:p[,http://h:p...]": tried in turn on failure */
	const char *ns;	       /* key namespace, ends with '/'; NULL = "cortex/" */
	/* etcd's --max-request-bytes (default 1.5 MiB): a write whose request would
	 * be larger is refused (EFBIG) before it is sent.  0 = the default. */
	size_t max_request_bytes;
	unsigned max_txn_ops;  /* etcd's --max-txn-ops; 0 = 128 */
	unsigned timeout_ms;   /* per request; 0 = 5000 */
};
#define STORE_ETCD_MAX_REQUEST_DEFAULT (1536u * 1024u)
int store_open_etcd(store **out, const struct store_etcd_opts *opts, cx_err *err);
/* Open (creating if needed) the SQLite store at path. */
int store_open_sqlite(store **out, const char *path, cx_err *err);
void store_close(store *s);

/* 0 and a malloc'd NUL-terminated copy in *out (len in *out_len, may be NULL);
 * CX_NOTFOUND if absent; -1 on error. */
int store_get(store *s, const char *key, char **out, size_t *out_len, cx_err *err);
int store_put(store *s, const char *key, const void *val, size_t len, cx_err *err);
/* 0 if deleted, CX_NOTFOUND if absent. */
int store_delete(store *s, const char *key, cx_err *err);
/* Every key starting with prefix, in key order, at most limit (0 = no limit).
 * Free with store_kv_free(). */
int store_list(store *s, const char *prefix, size_t limit, store_kv **out, size_t *out_n,
	       cx_err *err);
/* The same, only keys sorting strictly after `after` (NULL or "" = from the
 * start): a cursor for paging through a long prefix without reading it all. */
int store_list_after(store *s, const char *prefix, const char *after, size_t limit, store_kv **out,
		     size_t *out_n, cx_err *err);
void store_kv_free(store_kv *kv, size_t n);
/* Apply all ops atomically: all or none.  Any invalid op refuses the whole
 * txn before anything is applied; no ops (n == 0) is a no-op. */
int store_txn(store *s, const store_op *ops, size_t n, cx_err *err);
/* Delete every key with this prefix, atomically; *out_n (may be NULL) = count.
 * An empty prefix is refused (it would wipe the whole store). */
int store_delete_prefix(store *s, const char *prefix, size_t *out_n, cx_err *err);
/* Store revision (etcd-style): bumped once per committed write — put, delete
 * that removed something, txn of one or more ops (once, however many), and
 * delete_prefix that removed something.  Every row also records the revision
 * that last wrote it.  Starts at 0. */
int store_revision(store *s, int64_t *out, cx_err *err);

/* ---- watch ----
 * Events of every committed write under a prefix, in revision order, on a
 * thread of the backend's (never the caller's).  The key and value point into
 * the backend's buffers and are valid only during the callback.  All events of
 * one txn or delete_prefix share its revision. */
typedef enum store_event_kind {
	STORE_EV_PUT = 1,
	STORE_EV_DEL = 2,
	/* Events were missed (history compacted, or the backend's event log
	 * overflowed while the watcher was slow): re-read the prefix.  The watch
	 * goes on with the events after ev->rev (the revision it resumed at). */
	STORE_EV_RESYNC = 3,
} store_event_kind;

typedef struct store_event {
	store_event_kind kind;
	const char *key; /* not owned; NULL for RESYNC */
	const char *val; /* not owned; PUT only (NUL-terminated; may hold binary) */
	size_t len;
	int64_t rev; /* the store revision of the write (store_revision's numbering) */
} store_event;

typedef void (*store_watch_fn)(void *arg, const store_event *ev);
typedef struct store_watch store_watch;

/* Watch every key starting with prefix ("" = all).  from_rev 0: the writes
 * committed after this call returns; from_rev N > 0: every write with
 * revision >= N first (a RESYNC if they are no longer kept).  *out is the
 * handle for store_watch_cancel. */
int store_watch_start(store *s, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
		      store_watch **out, cx_err *err);
/* Stop the watch: once it returns the callback is not running and will not be
 * called again (called from inside the callback, it stops after it returns).
 * NULL is a no-op. */
void store_watch_cancel(store_watch *w);

/* ---- leases ----
 * A lease lives ttl_s seconds unless kept alive; when it expires or is revoked,
 * every key put with it is deleted (one revision, DEL events).  IDs are > 0.
 * SQLite keeps leases in the process: a key put with a lease of a process
 * that is gone is deleted when the store is opened again. */
#define STORE_LEASE_TTL_MAX 86400
int store_lease_grant(store *s, int64_t ttl_s, int64_t *out_id, cx_err *err);
/* Renew: *out_ttl (may be NULL) = the TTL granted; CX_NOTFOUND once expired. */
int store_lease_keepalive(store *s, int64_t id, int64_t *out_ttl, cx_err *err);
/* 0, or CX_NOTFOUND if unknown or already expired. */
int store_lease_revoke(store *s, int64_t id, cx_err *err);
/* store_put, the key attached to the lease; CX_NOTFOUND if the lease is gone. */
int store_put_lease(store *s, const char *key, const void *val, size_t len, int64_t lease,
		    cx_err *err);

/* Put key only if it is absent (atomically), attached to lease (0 = none):
 * 0 if put, 1 if the key exists (nothing written), CX_NOTFOUND if the lease
 * is gone.  etcd: one txn comparing create_revision; SQLite: in its lock. */
int store_create_lease(store *s, const char *key, const void *val, size_t len, int64_t lease,
		       cx_err *err);

/* ---- backend interface: for store_*.c only, not for callers ----
 * The front (store.c) validates keys, values and ops before dispatching, so a
 * backend may assume: keys non-empty and <= STORE_KEY_MAX, values <=
 * STORE_VAL_MAX, op kinds valid.  Backends must be thread-safe and must
 * return CX_NOTFOUND exactly as documented above. */
struct store_ops {
	const char *name;
	int (*get)(void *impl, const char *key, char **out, size_t *out_len, cx_err *err);
	int (*put)(void *impl, const char *key, const void *val, size_t len, cx_err *err);
	int (*del)(void *impl, const char *key, cx_err *err);
	int (*list)(void *impl, const char *prefix, const char *after /* NULL = none */, size_t limit,
		    store_kv **out, size_t *out_n, cx_err *err);
	int (*txn)(void *impl, const store_op *ops, size_t n, cx_err *err);
	int (*delete_prefix)(void *impl, const char *prefix, size_t *out_n, cx_err *err);
	int (*revision)(void *impl, int64_t *out, cx_err *err); /* may be NULL */
	/* watch and lease: may be NULL (ENOTSUP) */
	int (*watch)(void *impl, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
		     void **out, cx_err *err);
	void (*watch_cancel)(void *impl, void *w);
	int (*lease_grant)(void *impl, int64_t ttl_s, int64_t *out_id, cx_err *err);
	int (*lease_keepalive)(void *impl, int64_t id, int64_t *out_ttl, cx_err *err);
	int (*lease_revoke)(void *impl, int64_t id, cx_err *err);
	/* lease 0 = none: put with no lease, which detaches the key from any */
	int (*put_lease)(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			 cx_err *err);
	/* may be NULL (ENOTSUP) */
	int (*create_lease)(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			    cx_err *err);
	void (*close)(void *impl);
};
/* Wrap a backend's impl; on failure ops->close(impl) has been called. */
int store_new(store **out, const struct store_ops *ops, void *impl, cx_err *err);

#endif
