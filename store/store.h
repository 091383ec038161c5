/* store.h — the key-value store every persistent thing lives in.
 *
 * Shaped like etcd v3 (keys and values are byte strings, list by prefix,
 * atomic multi-key transactions) so an etcd backend can be added behind the
 * same ops table without touching callers.  The embedded default is SQLite
 * (WAL, synchronous=FULL) in the data dir.  Thread-safe: callers on any thread.
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
 * missing) or "etcd" (target = endpoint; fails with "etcd backend not built"
 * until that backend exists).  Any other kind is an error naming the kind. */
int store_open(store **out, const char *kind, const char *target, cx_err *err);
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
	void (*close)(void *impl);
};
/* Wrap a backend's impl; on failure ops->close(impl) has been called. */
int store_new(store **out, const struct store_ops *ops, void *impl, cx_err *err);

#endif
