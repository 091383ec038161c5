/* store_etcd.c — the etcd backend of the store (see store.h), over etcd's v3
 * JSON gateway (etcd_client.c: libcurl, keep-alive handles, failover).
 *
 * Keys live under a namespace (opts.ns, default "cortex/"), so a list of ""
 * is the range [ns, ns+1) and never reaches another tenant of the cluster.
 * The store revision is etcd's revision minus one: an empty cluster is at
 * etcd revision 1, the store at 0; both count committed writes.
 *
 * etcd differs from the store contract in three places, handled here:
 * - a txn that changes nothing does not bump etcd's revision, but a committed
 *   store txn always counts: every txn also puts the marker key "<ns minus
 *   its '/'>.txn" (outside the namespace, so no list or watch shows it);
 * - a txn may not name a key twice: the last op on a key wins (which is what
 *   applying the ops in order gives);
 * - a request has a size cap (--max-request-bytes, 1.5 MiB by default) and a
 *   txn an op cap (--max-txn-ops, 128): a write over either is refused before
 *   it is sent (EFBIG / E2BIG) with a message naming the option.  Values are
 *   not chunked: the operator raises etcd's cap and opts.max_request_bytes
 *   together (docs/scale-out.md).
 */
#include "etcd_client.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_OP_OVERHEAD 32u /* proto bytes around one op's key and value */

struct se {
	struct etcd *e;
	char ns[STORE_KEY_MAX];
	size_t nslen;
	char marker[STORE_KEY_MAX + 8];
	size_t max_req;
	unsigned max_ops;
};

/* ns + key, as raw bytes in buf (STORE_KEY_MAX * 2 + 2). */
static size_t full_key(const struct se *q, const char *key, char *buf)
{
	size_t k = strlen(key);
	memcpy(buf, q->ns, q->nslen);
	memcpy(buf + q->nslen, key, k);
	buf[q->nslen + k] = '\0';
	return q->nslen + k;
}

/* The smallest key above every key that starts with p[0..len): etcd's
 * range_end for a prefix.  The namespace is never all 0xff, so one exists. */
static size_t successor(char *p, size_t len)
{
	while (len > 0 && (unsigned char)p[len - 1] == 0xff)
		len--;
	if (len > 0)
		p[len - 1] = (char)((unsigned char)p[len - 1] + 1);
	return len;
}

static void add_b64_field(struct ebuf *b, const char *name, const void *bin, size_t n)
{
	ebuf_str(b, "\"");
	ebuf_str(b, name);
	ebuf_str(b, "\":\"");
	ebuf_b64(b, bin, n);
	ebuf_str(b, "\"");
}

static int check_size(struct se *q, size_t bytes, const char *key, cx_err *err)
{
	if (bytes > q->max_req)
		return cx_err_set(err, EFBIG,
				  "store: etcd write of ~%zu bytes for '%.64s' is over the request "
				  "cap of %zu bytes (etcd --max-request-bytes; set the store's "
				  "etcd_max_request_bytes to match)",
				  bytes, key, q->max_req);
	return 0;
}

/* POST a body built in b; the answer in *out. */
static int post(struct se *q, const char *path, struct ebuf *b, json_t **out, int *code,
		cx_err *err)
{
	if (b->over) {
		ebuf_free(b);
		return cx_err_set(err, ENOMEM, "store: etcd: building a request");
	}
	int r = etcd_post(q->e, path, b->p, b->len, out, code, err);
	ebuf_free(b);
	return r;
}

/* A kv of a range answer → a store_kv (key without the namespace). */
static int take_kv(struct se *q, json_t *kv, store_kv *out, cx_err *err)
{
	const char *k64 = json_string_value(json_object_get(kv, "key"));
	const char *v64 = json_string_value(json_object_get(kv, "value"));
	size_t klen = 0;
	char *key = NULL;
	if (!k64 || etcd_b64_decode(k64, strlen(k64), &key, &klen) < 0 || klen < q->nslen) {
		free(key);
		return cx_err_set(err, EIO, "store: etcd: a key that is not base64");
	}
	memmove(key, key + q->nslen, klen - q->nslen + 1);
	if (etcd_b64_decode(v64 ? v64 : "", v64 ? strlen(v64) : 0, &out->val, &out->len) < 0) {
		free(key);
		return cx_err_set(err, EIO, "store: etcd: a value that is not base64");
	}
	out->key = key;
	return 0;
}

static int se_get(void *impl, const char *key, char **out, size_t *out_len, cx_err *err)
{
	struct se *q = impl;
	char fk[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, key, fk);
	struct ebuf b = {0};
	ebuf_str(&b, "{");
	add_b64_field(&b, "key", fk, n);
	ebuf_str(&b, "}");
	json_t *j = NULL;
	if (post(q, "/v3/kv/range", &b, &j, NULL, err) < 0)
		return cx_err_wrap(err, "store: get '%.64s'", key);
	json_t *kv = json_array_get(json_object_get(j, "kvs"), 0);
	int r = CX_NOTFOUND;
	if (kv) {
		store_kv e = {0};
		r = take_kv(q, kv, &e, err);
		if (r == 0) {
			free(e.key);
			*out = e.val;
			if (out_len)
				*out_len = e.len;
		}
	}
	json_decref(j);
	return r;
}

/* The fields of a put, {"key","value"[,"lease"]} without the braces: put and create share them. */
static void put_fields(struct ebuf *b, const char *fk, size_t n, const void *val, size_t len, int64_t lease)
{
	add_b64_field(b, "key", fk, n);
	ebuf_str(b, ",");
	add_b64_field(b, "value", val ? val : "", len);
	if (lease) {
		char l[48];
		snprintf(l, sizeof l, ",\"lease\":\"%lld\"", (long long)lease);
		ebuf_str(b, l);
	}
}

static int put_req(struct se *q, const char *key, const void *val, size_t len, int64_t lease,
		   cx_err *err)
{
	if (check_size(q, q->nslen + strlen(key) + len + ETCD_OP_OVERHEAD, key, err) < 0)
		return -1;
	char fk[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, key, fk);
	struct ebuf b = {0};
	ebuf_str(&b, "{");
	put_fields(&b, fk, n, val, len, lease);
	ebuf_str(&b, "}");
	json_t *j = NULL;
	int code = 0;
	if (post(q, "/v3/kv/put", &b, &j, &code, err) < 0) {
		if (lease && code == ETCD_GRPC_NOT_FOUND) {
			cx_err_clear(err);
			return CX_NOTFOUND;
		}
		return cx_err_wrap(err, "store: put '%.64s'", key);
	}
	json_decref(j);
	return 0;
}

static int se_put(void *impl, const char *key, const void *val, size_t len, cx_err *err)
{
	return put_req(impl, key, val, len, 0, err);
}

static int se_put_lease(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			cx_err *err)
{
	return put_req(impl, key, val, len, lease, err);
}

/* Put only if the key is absent (compare create_revision == 0): 0 if put,
 * CX_EXIST-style 1 if the key exists (nothing written). */
static int se_create_lease(void *impl, const char *key, const void *val, size_t len, int64_t lease,
			   cx_err *err)
{
	struct se *q = impl;
	if (check_size(q, q->nslen + strlen(key) + len + ETCD_OP_OVERHEAD, key, err) < 0)
		return -1;
	char fk[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, key, fk);
	struct ebuf b = {0};
	ebuf_str(&b, "{\"compare\":[{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"create_revision\":\"0\",");
	add_b64_field(&b, "key", fk, n);
	ebuf_str(&b, "}],\"success\":[{\"request_put\":{");
	put_fields(&b, fk, n, val, len, lease);
	ebuf_str(&b, "}}]}");
	json_t *j = NULL;
	int code = 0;
	if (post(q, "/v3/kv/txn", &b, &j, &code, err) < 0) {
		if (lease && code == ETCD_GRPC_NOT_FOUND) {
			cx_err_clear(err);
			return CX_NOTFOUND;
		}
		return cx_err_wrap(err, "store: create '%.64s'", key);
	}
	int ok = json_is_true(json_object_get(j, "succeeded"));
	json_decref(j);
	return ok ? 0 : 1;
}

/* deleterange of [key, end) (end NULL: the key alone); *deleted = count. */
static int delete_range(struct se *q, const char *fk, size_t n, const char *end, size_t elen,
			int64_t *deleted, cx_err *err)
{
	struct ebuf b = {0};
	ebuf_str(&b, "{");
	add_b64_field(&b, "key", fk, n);
	if (end) {
		ebuf_str(&b, ",");
		add_b64_field(&b, "range_end", end, elen);
	}
	ebuf_str(&b, "}");
	json_t *j = NULL;
	if (post(q, "/v3/kv/deleterange", &b, &j, NULL, err) < 0)
		return -1;
	*deleted = etcd_jint(j, "deleted");
	json_decref(j);
	return 0;
}

static int se_del(void *impl, const char *key, cx_err *err)
{
	struct se *q = impl;
	char fk[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, key, fk);
	int64_t deleted = 0;
	if (delete_range(q, fk, n, NULL, 0, &deleted, err) < 0)
		return cx_err_wrap(err, "store: delete '%.64s'", key);
	return deleted ? 0 : CX_NOTFOUND;
}

static int se_delete_prefix(void *impl, const char *prefix, size_t *out_n, cx_err *err)
{
	struct se *q = impl;
	char fk[STORE_KEY_MAX * 2 + 2], end[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, prefix, fk);
	memcpy(end, fk, n);
	size_t elen = successor(end, n);
	int64_t deleted = 0;
	if (delete_range(q, fk, n, end, elen, &deleted, err) < 0)
		return cx_err_wrap(err, "store: delete prefix '%.64s'", prefix);
	if (out_n)
		*out_n = (size_t)deleted;
	return 0;
}

static int se_list(void *impl, const char *prefix, const char *after, size_t limit, store_kv **out,
		   size_t *out_n, cx_err *err)
{
	struct se *q = impl;
	char start[STORE_KEY_MAX * 2 + 3], end[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, prefix, start);
	memcpy(end, start, n);
	size_t elen = successor(end, n);
	if (after && strcmp(after, prefix) >= 0) { /* start just after the cursor */
		n = full_key(q, after, start);
		start[n++] = '\0'; /* after + "\0": the next key up */
	}
	struct ebuf b = {0};
	ebuf_str(&b, "{");
	add_b64_field(&b, "key", start, n);
	ebuf_str(&b, ",");
	add_b64_field(&b, "range_end", end, elen);
	if (limit && limit < (size_t)INT64_MAX) {
		char l[48];
		snprintf(l, sizeof l, ",\"limit\":\"%zu\"", limit);
		ebuf_str(&b, l);
	}
	ebuf_str(&b, "}");
	json_t *j = NULL;
	if (post(q, "/v3/kv/range", &b, &j, NULL, err) < 0)
		return cx_err_wrap(err, "store: list '%.64s'", prefix);
	json_t *kvs = json_object_get(j, "kvs");
	size_t cnt = json_array_size(kvs);
	store_kv *kv = cnt ? calloc(cnt, sizeof *kv) : NULL;
	int r = cnt && !kv ? cx_err_set(err, ENOMEM, "store: list: %zu entries", cnt) : 0;
	size_t got = 0;
	for (; r == 0 && got < cnt; got++)
		if ((r = take_kv(q, json_array_get(kvs, got), &kv[got], err)) < 0)
			break;
	json_decref(j);
	if (r < 0) {
		store_kv_free(kv, got);
		return cx_err_wrap(err, "store: list '%.64s'", prefix);
	}
	*out = kv;
	*out_n = cnt;
	return 0;
}

/* Is ops[i] the last op on its key?  (etcd refuses a key twice in a txn.) */
static int last_on_key(const store_op *ops, size_t n, size_t i)
{
	for (size_t k = i + 1; k < n; k++)
		if (strcmp(ops[k].key, ops[i].key) == 0)
			return 0;
	return 1;
}

static void txn_op(struct se *q, struct ebuf *b, const store_op *op)
{
	char fk[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, op->key, fk);
	if (op->kind == STORE_PUT) {
		ebuf_str(b, "{\"request_put\":{");
		add_b64_field(b, "key", fk, n);
		ebuf_str(b, ",");
		add_b64_field(b, "value", op->val ? op->val : "", op->len);
	} else {
		ebuf_str(b, "{\"request_delete_range\":{");
		add_b64_field(b, "key", fk, n);
	}
	ebuf_str(b, "}},");
}

static int se_txn(void *impl, const store_op *ops, size_t n, cx_err *err)
{
	struct se *q = impl;
	size_t bytes = 64, nops = 1;
	for (size_t i = 0; i < n; i++) {
		if (!last_on_key(ops, n, i))
			continue;
		nops++;
		bytes += q->nslen + strlen(ops[i].key) + ETCD_OP_OVERHEAD +
			 (ops[i].kind == STORE_PUT ? ops[i].len : 0);
	}
	if (nops > q->max_ops)
		return cx_err_set(err, E2BIG,
				  "store: etcd txn of %zu ops is over the cap of %u (etcd "
				  "--max-txn-ops, one op is the store's own)",
				  nops, q->max_ops);
	if (check_size(q, bytes, ops[0].key, err) < 0)
		return cx_err_wrap(err, "store: txn of %zu ops", n);
	struct ebuf b = {0};
	ebuf_str(&b, "{\"success\":[");
	for (size_t i = 0; i < n; i++)
		if (last_on_key(ops, n, i))
			txn_op(q, &b, &ops[i]);
	ebuf_str(&b, "{\"request_put\":{");
	add_b64_field(&b, "key", q->marker, strlen(q->marker));
	ebuf_str(&b, "}}]}");
	json_t *j = NULL;
	if (post(q, "/v3/kv/txn", &b, &j, NULL, err) < 0)
		return cx_err_wrap(err, "store: txn of %zu ops", n);
	json_decref(j);
	return 0;
}

static int se_revision(void *impl, int64_t *out, cx_err *err)
{
	struct se *q = impl;
	int64_t rev = 0;
	if (etcd_revision(q->e, &rev, err) < 0)
		return cx_err_wrap(err, "store: revision");
	*out = rev - 1;
	return 0;
}

/* ---- watch and lease ---- */

static int se_watch(void *impl, const char *prefix, int64_t from_rev, store_watch_fn cb, void *arg,
		    void **out, cx_err *err)
{
	struct se *q = impl;
	char fk[STORE_KEY_MAX * 2 + 2], end[STORE_KEY_MAX * 2 + 2];
	size_t n = full_key(q, prefix, fk);
	memcpy(end, fk, n);
	size_t elen = successor(end, n);
	int64_t start = from_rev + 1; /* store revision N is etcd's N + 1 */
	if (from_rev == 0) {	      /* from now: exactly the writes after this call */
		if (etcd_revision(q->e, &start, err) < 0)
			return -1;
		start++;
	}
	return etcd_watch_start(q->e, fk, n, end, elen, start, q->nslen, -1, cb, arg,
				(struct etcd_watch **)out, err);
}

static void se_watch_cancel(void *impl, void *w)
{
	(void)impl;
	etcd_watch_cancel(w);
}

static int lease_call(struct se *q, const char *path, int64_t id, int64_t ttl, json_t **out,
		      cx_err *err)
{
	char body[96];
	if (ttl)
		snprintf(body, sizeof body, "{\"TTL\":\"%lld\"}", (long long)ttl);
	else
		snprintf(body, sizeof body, "{\"ID\":\"%lld\"}", (long long)id);
	int code = 0;
	if (etcd_post(q->e, path, body, strlen(body), out, &code, err) < 0) {
		if (code == ETCD_GRPC_NOT_FOUND) {
			cx_err_clear(err);
			return CX_NOTFOUND;
		}
		return cx_err_wrap(err, "store: lease %lld", (long long)id);
	}
	return 0;
}

static int se_lease_grant(void *impl, int64_t ttl_s, int64_t *out_id, cx_err *err)
{
	json_t *j = NULL;
	int r = lease_call(impl, "/v3/lease/grant", 0, ttl_s, &j, err);
	if (r != 0)
		return r == CX_NOTFOUND ? cx_err_set(err, EIO, "store: lease grant refused") : r;
	*out_id = etcd_jint(j, "ID");
	json_decref(j);
	return *out_id > 0 ? 0 : cx_err_set(err, EIO, "store: etcd granted no lease id");
}

static int se_lease_keepalive(void *impl, int64_t id, int64_t *out_ttl, cx_err *err)
{
	json_t *j = NULL;
	int r = lease_call(impl, "/v3/lease/keepalive", id, 0, &j, err);
	if (r != 0)
		return r;
	*out_ttl = etcd_jint(json_object_get(j, "result"), "TTL");
	json_decref(j);
	return *out_ttl > 0 ? 0 : CX_NOTFOUND; /* an expired lease answers TTL 0 */
}

static int se_lease_revoke(void *impl, int64_t id, cx_err *err)
{
	json_t *j = NULL;
	int r = lease_call(impl, "/v3/lease/revoke", id, 0, &j, err);
	json_decref(j);
	return r;
}

static void se_close(void *impl)
{
	struct se *q = impl;
	if (!q)
		return;
	etcd_free(q->e);
	free(q);
}

static const struct store_ops se_ops = {
    .name = "etcd",
    .get = se_get,
    .put = se_put,
    .del = se_del,
    .list = se_list,
    .txn = se_txn,
    .delete_prefix = se_delete_prefix,
    .revision = se_revision,
    .watch = se_watch,
    .watch_cancel = se_watch_cancel,
    .lease_grant = se_lease_grant,
    .lease_keepalive = se_lease_keepalive,
    .lease_revoke = se_lease_revoke,
    .put_lease = se_put_lease,
    .create_lease = se_create_lease,
    .close = se_close,
};

int store_open_etcd(store **out, const struct store_etcd_opts *opts, cx_err *err)
{
	*out = NULL;
	const char *ns = opts->ns ? opts->ns : "cortex/";
	size_t nslen = strlen(ns);
	if (nslen < 2 || nslen > 64 || ns[nslen - 1] != '/')
		return cx_err_set(err, EINVAL,
				  "store: etcd namespace '%.80s' must be 2..64 bytes ending in '/'",
				  ns);
	struct se *q = calloc(1, sizeof *q);
	if (!q)
		return cx_err_set(err, ENOMEM, "store: allocating etcd backend");
	memcpy(q->ns, ns, nslen + 1);
	q->nslen = nslen;
	snprintf(q->marker, sizeof q->marker, "%.*s.txn", (int)(nslen - 1), ns);
	q->max_req = opts->max_request_bytes ? opts->max_request_bytes
					     : STORE_ETCD_MAX_REQUEST_DEFAULT;
	q->max_ops = opts->max_txn_ops ? opts->max_txn_ops : 128;
	if (etcd_new(&q->e, opts->endpoints, opts->timeout_ms, err) < 0) {
		free(q);
		return -1;
	}
	int64_t rev;
	if (etcd_revision(q->e, &rev, err) < 0) { /* reachable at all? */
		se_close(q);
		return cx_err_wrap(err, "store: etcd at %.200s", opts->endpoints);
	}
	return store_new(out, &se_ops, q, err);
}
