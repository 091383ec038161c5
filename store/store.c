/* store.c — the backend-independent front of the store (see store.h).
 *
 * Callers hold a `store *`; every call is checked here (key/value limits, op
 * kinds) and then dispatched through the backend's ops table.  Doing the checks
 * once, here, is what keeps the rules identical when an etcd backend is added.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct store {
	const struct store_ops *ops;
	void *impl; /* owned: released through ops->close */
};

int store_new(store **out, const struct store_ops *ops, void *impl, cx_err *err)
{
	store *s = calloc(1, sizeof *s);
	if (!s) {
		ops->close(impl);
		return cx_err_set(err, ENOMEM, "store: allocating handle");
	}
	s->ops = ops;
	s->impl = impl;
	*out = s;
	return 0;
}

void store_close(store *s)
{
	if (!s)
		return;
	s->ops->close(s->impl);
	free(s);
}

/* ---- validation, shared by every backend ---- */

static int check_key(const char *what, const char *key, cx_err *err)
{
	if (!key || !*key)
		return cx_err_set(err, EINVAL, "store: empty %s", what);
	size_t n = strnlen(key, STORE_KEY_MAX + 1);
	if (n > STORE_KEY_MAX)
		return cx_err_set(err, EINVAL, "store: %s longer than %u bytes", what,
				  STORE_KEY_MAX);
	return 0;
}

/* A prefix may be empty (list everything) but has the same length cap as a key. */
static int check_prefix(const char *prefix, cx_err *err)
{
	if (!prefix)
		return cx_err_set(err, EINVAL, "store: NULL prefix");
	if (strnlen(prefix, STORE_KEY_MAX + 1) > STORE_KEY_MAX)
		return cx_err_set(err, EINVAL, "store: prefix longer than %u bytes", STORE_KEY_MAX);
	return 0;
}

static int check_val(const char *key, const void *val, size_t len, cx_err *err)
{
	if (!val && len)
		return cx_err_set(err, EINVAL, "store: NULL value with length %zu for '%.64s'", len,
				  key);
	if (len > STORE_VAL_MAX)
		return cx_err_set(err, EFBIG, "store: value for '%.64s' is %zu bytes (max %u)", key,
				  len, STORE_VAL_MAX);
	return 0;
}

/* ---- dispatch ---- */

int store_get(store *s, const char *key, char **out, size_t *out_len, cx_err *err)
{
	*out = NULL;
	if (out_len)
		*out_len = 0;
	if (check_key("key", key, err) < 0)
		return -1;
	return s->ops->get(s->impl, key, out, out_len, err);
}

int store_put(store *s, const char *key, const void *val, size_t len, cx_err *err)
{
	if (check_key("key", key, err) < 0 || check_val(key, val, len, err) < 0)
		return -1;
	return s->ops->put(s->impl, key, val, len, err);
}

int store_delete(store *s, const char *key, cx_err *err)
{
	if (check_key("key", key, err) < 0)
		return -1;
	return s->ops->del(s->impl, key, err);
}

int store_list(store *s, const char *prefix, size_t limit, store_kv **out, size_t *out_n,
	       cx_err *err)
{
	return store_list_after(s, prefix, NULL, limit, out, out_n, err);
}

int store_list_after(store *s, const char *prefix, const char *after, size_t limit, store_kv **out,
		     size_t *out_n, cx_err *err)
{
	*out = NULL;
	*out_n = 0;
	if (check_prefix(prefix, err) < 0 || (after && after[0] && check_key("after", after, err) < 0))
		return -1;
	return s->ops->list(s->impl, prefix, after && after[0] ? after : NULL, limit, out, out_n, err);
}

void store_kv_free(store_kv *kv, size_t n)
{
	if (!kv)
		return;
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].val);
	}
	free(kv);
}

int store_txn(store *s, const store_op *ops, size_t n, cx_err *err)
{
	if (n && !ops)
		return cx_err_set(err, EINVAL, "store: txn with %zu ops but no op array", n);
	/* Validate everything before the backend takes its write lock: a bad op is a
	 * caller bug and must not leave half a transaction behind. */
	for (size_t i = 0; i < n; i++) {
		const store_op *op = &ops[i];
		int r;
		if (op->kind != STORE_PUT && op->kind != STORE_DEL)
			r = cx_err_set(err, EINVAL, "store: unknown op kind %d", (int)op->kind);
		else
			r = check_key("key", op->key, err);
		if (r == 0 && op->kind == STORE_PUT)
			r = check_val(op->key, op->val, op->len, err);
		if (r < 0)
			return cx_err_wrap(err, "store: txn op %zu of %zu", i + 1, n);
	}
	if (n == 0)
		return 0;
	return s->ops->txn(s->impl, ops, n, err);
}

int store_delete_prefix(store *s, const char *prefix, size_t *out_n, cx_err *err)
{
	if (out_n)
		*out_n = 0;
	if (check_prefix(prefix, err) < 0)
		return -1;
	if (!*prefix)
		return cx_err_set(err, EINVAL, "store: refusing to delete with an empty prefix");
	return s->ops->delete_prefix(s->impl, prefix, out_n, err);
}

int store_revision(store *s, int64_t *out, cx_err *err)
{
	*out = 0;
	if (!s->ops->revision)
		return cx_err_set(err, ENOTSUP, "store: %s backend has no revision counter",
				  s->ops->name);
	return s->ops->revision(s->impl, out, err);
}

/* ---- watch and lease ---- */

struct store_watch {
	store *s; /* not owned */
	void *impl;
};

static int check_ops(store *s, int have, const char *what, cx_err *err)
{
	if (!have)
		return cx_err_set(err, ENOTSUP, "store: %s backend has no %s", s->ops->name, what);
	return 0;
}

int store_watch_start(store *s, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
		      store_watch **out, cx_err *err)
{
	*out = NULL;
	if (check_ops(s, s->ops->watch != NULL, "watch", err) < 0 || check_prefix(prefix, err) < 0)
		return -1;
	if (!cb || from_rev < 0)
		return cx_err_set(err, EINVAL, "store: watch needs a callback and a revision >= 0");
	store_watch *w = calloc(1, sizeof *w);
	if (!w)
		return cx_err_set(err, ENOMEM, "store: allocating a watch");
	w->s = s;
	if (s->ops->watch(s->impl, prefix, from_rev, cb, arg, &w->impl, err) < 0) {
		free(w);
		return cx_err_wrap(err, "store: watch '%.64s'", prefix);
	}
	*out = w;
	return 0;
}

void store_watch_cancel(store_watch *w)
{
	if (!w)
		return;
	w->s->ops->watch_cancel(w->s->impl, w->impl);
	free(w);
}

int store_lease_grant(store *s, int64_t ttl_s, int64_t *out_id, cx_err *err)
{
	*out_id = 0;
	if (check_ops(s, s->ops->lease_grant != NULL, "leases", err) < 0)
		return -1;
	if (ttl_s < 1 || ttl_s > STORE_LEASE_TTL_MAX)
		return cx_err_set(err, EINVAL, "store: lease TTL %lld s out of range 1..%d",
				  (long long)ttl_s, STORE_LEASE_TTL_MAX);
	return s->ops->lease_grant(s->impl, ttl_s, out_id, err);
}

int store_lease_keepalive(store *s, int64_t id, int64_t *out_ttl, cx_err *err)
{
	if (out_ttl)
		*out_ttl = 0;
	if (check_ops(s, s->ops->lease_keepalive != NULL, "leases", err) < 0)
		return -1;
	if (id <= 0)
		return cx_err_set(err, EINVAL, "store: lease id %lld is not > 0", (long long)id);
	int64_t ttl = 0;
	int r = s->ops->lease_keepalive(s->impl, id, &ttl, err);
	if (r == 0 && out_ttl)
		*out_ttl = ttl;
	return r;
}

int store_lease_revoke(store *s, int64_t id, cx_err *err)
{
	if (check_ops(s, s->ops->lease_revoke != NULL, "leases", err) < 0)
		return -1;
	if (id <= 0)
		return cx_err_set(err, EINVAL, "store: lease id %lld is not > 0", (long long)id);
	return s->ops->lease_revoke(s->impl, id, err);
}

int store_put_lease(store *s, const char *key, const void *val, size_t len, int64_t lease,
		    cx_err *err)
{
	if (check_ops(s, s->ops->put_lease != NULL, "leases", err) < 0)
		return -1;
	if (check_key("key", key, err) < 0 || check_val(key, val, len, err) < 0)
		return -1;
	if (lease <= 0)
		return cx_err_set(err, EINVAL, "store: lease id %lld is not > 0", (long long)lease);
	return s->ops->put_lease(s->impl, key, val, len, lease, err);
}

int store_create_lease(store *s, const char *key, const void *val, size_t len, int64_t lease,
		       cx_err *err)
{
	if (check_ops(s, s->ops->create_lease != NULL, "create-if-absent", err) < 0)
		return -1;
	if (check_key("key", key, err) < 0 || check_val(key, val, len, err) < 0)
		return -1;
	if (lease < 0)
		return cx_err_set(err, EINVAL, "store: lease id %lld is < 0", (long long)lease);
	return s->ops->create_lease(s->impl, key, val, len, lease, err);
}
