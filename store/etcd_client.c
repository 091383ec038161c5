/* etcd_client.c — see etcd_client.h. */
#include "etcd_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct etcd {
	char *ep[ETCD_ENDPOINTS_MAX]; /* base URLs, no trailing '/' */
	unsigned nep;
	unsigned cur; /* atomic: the endpoint tried first */
	unsigned timeout_ms;
	pthread_mutex_t mu; /* guards pool */
	CURL *pool[ETCD_POOL];
	unsigned npool;
	struct curl_slist *hdrs;
};

/* ---- buffers, base64, JSON ---- */

void ebuf_add(struct ebuf *b, const void *s, size_t n)
{
	if (b->over)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *np = b->max && b->len + n > b->max ? NULL : realloc(b->p, ncap);
		if (!np) {
			b->over = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void ebuf_str(struct ebuf *b, const char *s) { ebuf_add(b, s, strlen(s)); }

void ebuf_b64(struct ebuf *b, const void *bin, size_t n)
{
	size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	if (b->over)
		return;
	ebuf_add(b, "", 0);
	if (b->over || b->len + need > b->cap) {
		char *tmp = malloc(need);
		if (!tmp) {
			b->over = 1;
			return;
		}
		sodium_bin2base64(tmp, need, bin, n, sodium_base64_VARIANT_ORIGINAL);
		ebuf_add(b, tmp, need - 1);
		free(tmp);
		return;
	}
	sodium_bin2base64(b->p + b->len, need, bin, n, sodium_base64_VARIANT_ORIGINAL);
	b->len += need - 1;
}

void ebuf_free(struct ebuf *b)
{
	free(b->p);
	*b = (struct ebuf){0};
}

int etcd_b64_decode(const char *b64, size_t b64len, char **out, size_t *out_len)
{
	size_t max = b64len / 4 * 3 + 3;
	char *bin = malloc(max + 1);
	if (!bin)
		return -1;
	size_t n = 0;
	if (sodium_base642bin((unsigned char *)bin, max, b64, b64len, NULL, &n, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(bin);
		return -1;
	}
	bin[n] = '\0';
	*out = bin;
	*out_len = n;
	return 0;
}

int64_t etcd_jint(const json_t *obj, const char *name)
{
	json_t *v = json_object_get(obj, name);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	if (json_is_integer(v))
		return json_integer_value(v);
	return 0;
}

/* ---- endpoints and the handle pool ---- */

int etcd_new(struct etcd **out, const char *endpoints, unsigned timeout_ms, cx_err *err)
{
	*out = NULL;
	if (!endpoints || !*endpoints)
		return cx_err_set(err, EINVAL, "store: etcd needs endpoints (URL[,URL...])");
	if (sodium_init() < 0)
		return cx_err_set(err, 0, "store: libsodium init failed");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	struct etcd *e = calloc(1, sizeof *e);
	if (!e)
		return cx_err_set(err, ENOMEM, "store: allocating etcd client");
	pthread_mutex_init(&e->mu, NULL);
	e->timeout_ms = timeout_ms ? timeout_ms : 5000;
	const char *p = endpoints;
	while (*p) {
		size_t n = strcspn(p, ",");
		while (n && p[n - 1] == '/')
			n--;
		if (n == 0 || n > 512 || e->nep == ETCD_ENDPOINTS_MAX ||
		    (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)) {
			etcd_free(e);
			return cx_err_set(err, EINVAL,
					  "store: bad etcd endpoint list '%.200s' (http[s]://host:port, "
					  "comma-separated, at most %d)",
					  endpoints, ETCD_ENDPOINTS_MAX);
		}
		e->ep[e->nep++] = strndup(p, n);
		p += strcspn(p, ",");
		if (*p == ',')
			p++;
	}
	e->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	e->hdrs = curl_slist_append(e->hdrs, "Expect:"); /* no 100-continue round trip */
	*out = e;
	return 0;
}

void etcd_free(struct etcd *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->npool; i++)
		curl_easy_cleanup(e->pool[i]);
	for (unsigned i = 0; i < e->nep; i++)
		free(e->ep[i]);
	curl_slist_free_all(e->hdrs);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

unsigned etcd_timeout_ms(struct etcd *e) { return e->timeout_ms; }

const char *etcd_endpoint(struct etcd *e, unsigned *idx)
{
	*idx = __atomic_load_n(&e->cur, __ATOMIC_RELAXED) % e->nep;
	return e->ep[*idx];
}

void etcd_endpoint_failed(struct etcd *e, unsigned idx)
{
	unsigned want = idx;
	/* only the first to see this endpoint fail moves everyone on */
	__atomic_compare_exchange_n(&e->cur, &want, (idx + 1) % e->nep, 0, __ATOMIC_RELAXED,
				    __ATOMIC_RELAXED);
}

static CURL *pool_get(struct etcd *e)
{
	CURL *c = NULL;
	pthread_mutex_lock(&e->mu);
	if (e->npool)
		c = e->pool[--e->npool];
	pthread_mutex_unlock(&e->mu);
	return c ? c : curl_easy_init();
}

static void pool_put(struct etcd *e, CURL *c)
{
	pthread_mutex_lock(&e->mu);
	if (e->npool < ETCD_POOL) {
		e->pool[e->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&e->mu);
	if (c)
		curl_easy_cleanup(c);
}

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct ebuf *b = arg;
	ebuf_add(b, p, sz * n);
	return b->over ? 0 : sz * n;
}

/* One try on one endpoint: 0 with the answer, 1 to try the next endpoint,
 * -1 for an answer that is final (an etcd error). */
static int post_once(struct etcd *e, CURL *c, const char *base, const char *path, const char *body,
		     size_t len, json_t **out, int *grpc_code, cx_err *err)
{
	char url[600];
	snprintf(url, sizeof url, "%s%s", base, path);
	struct ebuf resp = {.max = ETCD_RESPONSE_MAX};
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)e->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		int over = resp.over;
		ebuf_free(&resp);
		if (over)
			return cx_err_set(err, EFBIG, "store: etcd %s%s: answer over %u bytes", base,
					  path, ETCD_RESPONSE_MAX);
		cx_err_set(err, EIO, "store: etcd %s%s: %s", base, path, curl_easy_strerror(rc));
		return 1;
	}
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	json_error_t jerr;
	json_t *j = resp.p ? json_loadb(resp.p, resp.len, 0, &jerr) : NULL;
	ebuf_free(&resp);
	if (!json_is_object(j)) {
		json_decref(j);
		cx_err_set(err, EIO, "store: etcd %s%s: HTTP %ld, not a JSON object", base, path,
			   status);
		return status >= 500 ? 1 : -1;
	}
	if (status != 200 || json_object_get(j, "error")) {
		int code = (int)etcd_jint(j, "code");
		const char *msg = json_string_value(json_object_get(j, "message"));
		if (grpc_code)
			*grpc_code = code;
		cx_err_set(err, code == ETCD_GRPC_NOT_FOUND ? ENOENT : EIO,
			   "store: etcd %s%s: %s (code %d, HTTP %ld)", base, path,
			   msg ? msg : "error", code, status);
		json_decref(j);
		return code == ETCD_GRPC_UNAVAILABLE ? 1 : -1;
	}
	*out = j;
	return 0;
}

int etcd_post(struct etcd *e, const char *path, const char *body, size_t len, json_t **out,
	      int *grpc_code, cx_err *err)
{
	*out = NULL;
	if (grpc_code)
		*grpc_code = 0;
	CURL *c = pool_get(e);
	if (!c)
		return cx_err_set(err, ENOMEM, "store: curl_easy_init");
	int r = 1;
	for (unsigned tries = 0; r == 1 && tries < e->nep; tries++) {
		unsigned idx;
		const char *base = etcd_endpoint(e, &idx);
		cx_err_clear(err);
		r = post_once(e, c, base, path, body, len, out, grpc_code, err);
		if (r == 1)
			etcd_endpoint_failed(e, idx);
	}
	pool_put(e, c);
	return r == 0 ? 0 : -1;
}

int etcd_revision(struct etcd *e, int64_t *out, cx_err *err)
{
	static const char body[] = "{\"key\":\"AA==\",\"count_only\":true}";
	json_t *j = NULL;
	if (etcd_post(e, "/v3/kv/range", body, sizeof body - 1, &j, NULL, err) < 0)
		return -1;
	*out = etcd_jint(json_object_get(j, "header"), "revision");
	json_decref(j);
	return 0;
}
