/* gw_upstream.c — the provider side of a gateway request: one thread per
 * request runs libcurl and hands the response to the service thread through
 * the request's queue (see gw_internal.h).
 *
 * If the agent closes its connection, the queue's abort flag stops curl
 * (write callback and xferinfo callback; the latter runs at least once a
 * second, so an idle provider connection is dropped within ~1 s).
 *
 * Provider connections are kept alive and shared between requests (curl share
 * handle: connections, DNS, TLS sessions), so a request does not pay a TLS
 * handshake each time.
 *
 * Usage is parsed here, on the curl thread, while the bytes stream through
 * (gw_sse.h).
 */
#include "gw_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define GW_CONNECT_TIMEOUT_MS 10000L
#define GW_IDLE_TIMEOUT_S     300L /* no byte from the provider for this long: abort */

static CURLSH *share;
static pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
	(void)h, (void)a, (void)u;
	pthread_mutex_lock(&share_mu[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
	(void)h, (void)u;
	pthread_mutex_unlock(&share_mu[d]);
}

int gw_upstream_init(cx_err *err)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return cx_err_set(err, 0, "gateway: curl_global_init failed");
	if (share)
		return 0;
	share = curl_share_init();
	if (!share)
		return cx_err_set(err, ENOMEM, "gateway: curl_share_init");
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&share_mu[i], NULL);
	curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	return 0;
}

void gw_upstream_cleanup(void)
{
	if (!share)
		return;
	curl_share_cleanup(share);
	share = NULL;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&share_mu[i]);
}

struct gw_req *gw_req_new(void)
{
	struct gw_req *q = calloc(1, sizeof *q);
	if (!q)
		return NULL;
	gw_queue_init(&q->queue);
	gw_sse_init(&q->parse, 0);
	return q;
}

void gw_req_free(struct gw_req *q)
{
	if (!q)
		return;
	sodium_memzero(q->key, sizeof q->key);
	for (struct curl_slist *l = q->hdrs; l; l = l->next)
		sodium_memzero(l->data, strlen(l->data)); /* one of them is the key */
	curl_slist_free_all(q->hdrs);
	free(q->body);
	gw_sse_free(&q->parse);
	gw_queue_destroy(&q->queue);
	free(q);
}

const char *gw_req_strerror(const struct gw_req *q)
{
	return q->curl_err[0] ? q->curl_err : curl_easy_strerror((CURLcode)q->curl_code);
}

/* Headers a client of the Anthropic API acts on: retry hints, request ids, limits. */
static int header_passes(const char *name, size_t nl)
{
	static const char *const pass[] = {"retry-after", "x-should-retry", "request-id",
					   "x-request-id", NULL};
	if (nl > 16 && !strncasecmp(name, "anthropic-ratelimit-", nl < 20 ? nl : 20))
		return 1;
	for (const char *const *p = pass; *p; p++)
		if (strlen(*p) == nl && !strncasecmp(name, *p, nl))
			return 1;
	return 0;
}

static size_t on_header(char *b, size_t size, size_t nitems, void *ud)
{
	struct gw_req *q = ud;
	size_t n = size * nitems;
	if (n >= 5 && !memcmp(b, "HTTP/", 5)) {
		/* a new status line (after a 1xx, or the first) */
		const char *sp = memchr(b, ' ', n);
		q->status = sp ? atoi(sp + 1) : 0;
		q->ctype[0] = '\0';
		q->rhdrs_len = 0;
		q->rhdrs[0] = '\0';
		return n;
	}
	if (n <= 2 && (b[0] == '\r' || b[0] == '\n')) {
		if (q->status >= 200) {
			gw_queue_headers_done(&q->queue);
			lws_cancel_service(gw_state.ctx);
		}
		return n;
	}
	const char *colon = memchr(b, ':', n);
	if (!colon)
		return n;
	size_t nl = (size_t)(colon - b);
	const char *v = colon + 1;
	size_t vl = n - nl - 1;
	while (vl && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	if (nl == 12 && !strncasecmp(b, "content-type", 12)) {
		snprintf(q->ctype, sizeof q->ctype, "%.*s", (int)vl, v);
		return n;
	}
	if (header_passes(b, nl) && q->rhdrs_len + nl + vl + 3 < sizeof q->rhdrs) {
		int w = snprintf(q->rhdrs + q->rhdrs_len, sizeof q->rhdrs - q->rhdrs_len,
				 "%.*s: %.*s\n", (int)nl, b, (int)vl, v);
		if (w > 0)
			q->rhdrs_len += (size_t)w;
	}
	return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct gw_req *q = ud;
	size_t n = size * nmemb;
	uint64_t now = cx_mono_us();
	if (!q->t_first_us) {
		q->t_first_us = now;
		gw_sse_init(&q->parse, !strncasecmp(q->ctype, "text/event-stream", 17));
	}
	gw_sse_feed(&q->parse, p, n);
	int rc = gw_queue_push(&q->queue, p, n, now, GW_CAP_QUEUE);
	if (rc < 0)
		return 0; /* CURLE_WRITE_ERROR */
	if (rc > 0)
		lws_cancel_service(gw_state.ctx);
	return n;
}

static int on_xferinfo(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct gw_req *q = ud;
	return gw_queue_aborted(&q->queue);
}

static void set_options(CURL *h, struct gw_req *q)
{
	curl_easy_setopt(h, CURLOPT_URL, q->url);
	curl_easy_setopt(h, CURLOPT_SHARE, share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, q->hdrs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, q->curl_err);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, q);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, q);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, GW_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, GW_IDLE_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (!strcmp(q->method, "GET")) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(q->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		if (strcmp(q->method, "POST"))
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
	}
}

static void *upstream_thread(void *arg)
{
	struct gw_req *q = arg;
	CURL *h = curl_easy_init();
	CURLcode rc = CURLE_FAILED_INIT;
	if (h) {
		set_options(h, q);
		rc = curl_easy_perform(h);
		long code = 0;
		if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code &&
		    !q->status)
			q->status = (int)code;
		curl_easy_cleanup(h);
	}
	q->curl_code = (int)rc;
	/* Whatever needs the whole body, off the service thread. */
	gw_sse_finish(&q->parse, q->status);
	gw_sse_request(&q->parse, q->body, q->body_len);
	gw_queue_finish(&q->queue);
	lws_cancel_service(gw_state.ctx);
	return NULL;
}

int gw_req_start(struct gw_req *q)
{
	return pthread_create(&q->thr, NULL, upstream_thread, q);
}
