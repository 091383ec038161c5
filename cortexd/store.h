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
#include "cx.h"

typedef struct store store;

typedef struct store_kv {
	char *key;   /* NUL-terminated, owned */
	char *val;   /* NUL-terminated for convenience; may hold binary; owned */
	size_t len;  /* value length in bytes, without the NUL */
} store_kv;

typedef enum store_op_kind { STORE_PUT = 1, STORE_DEL = 2 } store_op_kind;

typedef struct store_op {
	store_op_kind kind;
	const char *key; /* not owned */
	const char *val; /* not owned; PUT only */
	size_t len;      /* PUT only */
} store_op;

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
void store_kv_free(store_kv *kv, size_t n);
/* Apply all ops atomically: all or none. */
int store_txn(store *s, const store_op *ops, size_t n, cx_err *err);
/* Delete every key with this prefix, atomically; *out_n (may be NULL) = count. */
int store_delete_prefix(store *s, const char *prefix, size_t *out_n, cx_err *err);

#endif
