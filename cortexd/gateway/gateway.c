/* gateway.c — the model gateway (see gateway.h).
 *
 * One lws vhost "gateway" (HTTP only) on the daemon's context.  A request
 * under /v1/ is read whole (GW_CAP_BODY), its token is looked up to a
 * session and its provider (gateway_ops.authorize), and a struct gw_req is
 * handed to a thread of its own that runs libcurl against that provider.
 * The response comes back as it arrives:
 *
 *   curl thread                          service thread
 *   -----------                          --------------
 *   header cb: status, content-type  -->  gateway_service(): on_writable
 *   write cb:  chunk -> q->head       -->  WRITEABLE: headers, then one chunk
 *              (waits on q->cv while        per callback (HTTP/1.1 chunked),
 *               q->qbytes >= GW_CAP_QUEUE)  signals q->cv as it drains
 *   end:       q->finished = 1        -->  last chunk, final "0\r\n\r\n",
 *                                          join, report, free
 *
 * Every hand-over goes through q->mu plus lws_cancel_service(); the service
 * thread never blocks on curl (it joins a thread only once it has finished).
 * If the agent closes its connection, q->abort stops curl (write callback and
 * xferinfo callback; the latter runs at least once a second, so an idle
 * provider connection is dropped within ~1 s).
 *
 * Provider connections are kept alive and shared between requests (curl share
 * handle: connections, DNS, TLS sessions), so a request does not pay a TLS
 * handshake each time.
 *
 * Usage is parsed on the curl thread while the bytes stream through
 * (gw_sse.h).
 */
#include "gateway.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* Caps of the gateway (belong in common/caps.h once it is integrated). */
#define GW_CAP_BODY     (32u << 20) /* request body from the agent */
#define GW_CAP_QUEUE    (1u << 20)  /* provider bytes queued to one agent connection */
#define GW_CAP_PATH     2048u       /* path + query */
#define GW_CAP_URL      4096u       /* provider URL */
#define GW_CAP_KEY      1024u       /* provider key */
#define GW_CAP_RHDRS    4096u       /* provider response headers passed through */

#define GW_CONNECT_TIMEOUT_MS 10000L
#define GW_IDLE_TIMEOUT_S     300L  /* no byte from the provider for this long: abort */

/* One chunk of provider body, with room for lws and the chunked framing
 * ("<hex>\r\n" before, "\r\n" after). */
#define GW_CHUNK_HEAD 16
struct gw_chunk {
	struct gw_chunk *next;
	uint64_t t_us;      /* when the curl callback got it */
	size_t len;
	unsigned char buf[]; /* LWS_PRE + GW_CHUNK_HEAD, payload, 2 */
};

struct gw_conn;

/* One forwarded request.  Fields are owned as marked:
 *   [svc]  service thread only
 *   [thr]  curl thread until `finished`, then the service thread (after join)
 *   [mu]   under mu
 *   [ro]   set before the thread starts, read-only afterwards */
struct gw_req {
	struct gw_req *next;        /* [svc] in inflight */
	struct gw_conn *conn;       /* [svc] not owned; NULL once the agent closed */
	struct lws *wsi;            /* [svc] not owned; NULL with conn */
	pthread_t thr;              /* [svc] */
	char sess_id[40];           /* [ro] the session, for the report */

	/* request */
	char method[16];            /* [ro] */
	char url[GW_CAP_URL];       /* [ro] */
	char key[GW_CAP_KEY];       /* [ro] wiped in req_free */
	struct curl_slist *hdrs;    /* [ro] */
	char *body;                 /* [ro] owned */
	size_t body_len;
	uint64_t t_recv_us;         /* [ro] request fully received */

	pthread_mutex_t mu;
	pthread_cond_t cv;          /* queue drained / abort */
	int abort;                  /* [mu] (read atomically by xferinfo) */
	int finished;               /* [mu] the thread is done with everything but its return */
	int hdr_done;               /* [mu] status + headers known (status >= 200) */
	struct gw_chunk *head, *tail; /* [mu] */
	size_t qbytes;              /* [mu] */

	/* response metadata: written by the thread before hdr_done / finished */
	int status;
	char ctype[128];
	char rhdrs[GW_CAP_RHDRS];   /* "name: value\n" passed through to the agent */
	size_t rhdrs_len;

	/* [thr] */
	int curl_code;
	char curl_err[CURL_ERROR_SIZE];
	uint64_t t_first_us;        /* first body byte, 0 before */
	struct gw_sse parse;        /* usage, model, error */

	/* [svc] */
	int hdr_sent;
	int chunked;                /* HTTP/1.1 agent: chunked framing */
	int timeout_cleared;
	uint64_t t_last_us;
	unsigned events;
	double fwd_us_sum, fwd_us_max;
};

/* Per-connection data of the gateway protocol. */
struct gw_conn {
	struct gw_req *req;         /* not owned (inflight owns it) */
	int dispatched;
	int too_big;
	int http11;
	const char *method;         /* static string */
	char path[GW_CAP_PATH];     /* path + "?" + query, re-encoded */
	char token[128];            /* wiped after the lookup */
	char *body;
	size_t body_len, body_cap;
	/* a response made here (errors): status + JSON body */
	int lstatus;
	char *lbody;
};

static struct lws_context *gw_ctx;
static struct lws_vhost *gw_vh;
static int gw_listen_port;
static struct gw_req *inflight; /* [svc] */
static unsigned ninflight;
static struct gw_stats stats;
static struct gateway_ops gw_ops;
static CURLSH *share;
static pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
static const unsigned ttfb_bounds_ms[12] = GW_TTFB_BOUNDS_MS;

/* ---------------------------------------------------------------- util */

static void gw_err_json(struct gw_conn *c, int status, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void gw_err_json(struct gw_conn *c, int status, const char *type, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type,
			      "message", msg);
	free(c->lbody);
	c->lbody = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	c->lstatus = status;
}

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

static double us_to_ms(uint64_t us) { return (double)us / 1000.0; }

/* ------------------------------------------------------ curl callbacks */

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
			pthread_mutex_lock(&q->mu);
			q->hdr_done = 1;
			pthread_mutex_unlock(&q->mu);
			lws_cancel_service(gw_ctx);
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
	/* What an Anthropic client acts on: retry hints, request ids, limits. */
	static const char *const pass[] = {"retry-after", "x-should-retry", "request-id",
					   "x-request-id", NULL};
	int keep = nl > 16 && !strncasecmp(b, "anthropic-ratelimit-", nl < 20 ? nl : 20);
	for (const char *const *p = pass; !keep && *p; p++)
		keep = strlen(*p) == nl && !strncasecmp(b, *p, nl);
	if (keep && q->rhdrs_len + nl + vl + 3 < sizeof q->rhdrs) {
		int w = snprintf(q->rhdrs + q->rhdrs_len, sizeof q->rhdrs - q->rhdrs_len, "%.*s: %.*s\n",
				 (int)nl, b, (int)vl, v);
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

	struct gw_chunk *c = malloc(sizeof *c + LWS_PRE + GW_CHUNK_HEAD + n + 2);
	if (!c)
		return 0; /* CURLE_WRITE_ERROR */
	c->next = NULL;
	c->t_us = now;
	c->len = n;
	memcpy(c->buf + LWS_PRE + GW_CHUNK_HEAD, p, n);

	pthread_mutex_lock(&q->mu);
	/* Backpressure: the agent reads slower than the provider sends. */
	while (q->qbytes && q->qbytes + n > GW_CAP_QUEUE && !q->abort)
		pthread_cond_wait(&q->cv, &q->mu);
	if (q->abort) {
		pthread_mutex_unlock(&q->mu);
		free(c);
		return 0;
	}
	int wake = !q->head; /* the service thread re-arms itself while the queue is non-empty */
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	q->qbytes += n;
	pthread_mutex_unlock(&q->mu);
	if (wake)
		lws_cancel_service(gw_ctx);
	return n;
}

static int on_xferinfo(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct gw_req *q = ud;
	return __atomic_load_n(&q->abort, __ATOMIC_RELAXED);
}

static void *gw_thread(void *arg)
{
	struct gw_req *q = arg;
	CURL *h = curl_easy_init();
	CURLcode rc = CURLE_FAILED_INIT;
	if (h) {
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
		rc = curl_easy_perform(h);
		long code = 0;
		if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code && !q->status)
			q->status = (int)code;
		curl_easy_cleanup(h);
	}
	q->curl_code = (int)rc;
	/* Whatever needs the whole body, off the service thread. */
	gw_sse_finish(&q->parse, q->status);
	gw_sse_request(&q->parse, q->body, q->body_len);
	pthread_mutex_lock(&q->mu);
	q->finished = 1;
	pthread_mutex_unlock(&q->mu);
	lws_cancel_service(gw_ctx);
	return NULL;
}

/* ------------------------------------------------- request lifecycle */

static void req_free(struct gw_req *q)
{
	if (!q)
		return;
	sodium_memzero(q->key, sizeof q->key);
	curl_slist_free_all(q->hdrs); /* holds no secret: the key header is wiped below */
	free(q->body);
	gw_sse_free(&q->parse);
	for (struct gw_chunk *c = q->head, *n; c; c = n) {
		n = c->next;
		free(c);
	}
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}

static void req_abort(struct gw_req *q)
{
	pthread_mutex_lock(&q->mu);
	__atomic_store_n(&q->abort, 1, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static void stats_add(const struct gw_report *r)
{
	int cls = r->status / 100;
	stats.by_class[cls >= 0 && cls < 6 ? cls : 0]++;
	if (r->ttfb_ms > 0) {
		uint64_t us = (uint64_t)(r->ttfb_ms * 1000.0);
		stats.ttfb_us_sum += us;
		stats.ttfb_count++;
		/* cumulative (Prometheus "le" buckets); +Inf is ttfb_count */
		for (unsigned i = 0; i < 12; i++)
			if (r->ttfb_ms <= ttfb_bounds_ms[i])
				stats.ttfb_bucket[i]++;
	}
	stats.fwd_us_sum += (uint64_t)r->fwd_us_sum;
	stats.fwd_events += r->events;
}

static void report_to_session(const char *id, const struct gw_report *r)
{
	stats_add(r);
	if (gw_ops.report)
		gw_ops.report(gw_ops.arg, id, r);
}

/* The thread has finished: join it, report, unlink, free.  Service thread. */
static void req_finalize(struct gw_req *q)
{
	pthread_join(q->thr, NULL);
	const struct gw_sse *p = &q->parse;
	struct gw_report r;
	memset(&r, 0, sizeof r);
	r.status = q->hdr_done || q->t_first_us ? q->status : 0;
	r.curl_code = q->curl_code;
	r.stream = p->sse || p->req_stream;
	r.agent_gone = !q->conn;
	r.recv_us = q->t_recv_us;
	/* Cut: curl failed after the response began, the agent left early, or an
	 * SSE 200 stream ended without message_stop (a close-delimited response
	 * cut by the provider looks complete to curl). */
	r.cut = r.status && (q->curl_code != 0 || (p->sse && q->status == 200 && !p->saw_stop && !p->error[0]));
	r.ttfb_ms = q->t_first_us ? us_to_ms(q->t_first_us - q->t_recv_us) : 0;
	r.total_ms = us_to_ms((q->t_last_us ? q->t_last_us : cx_mono_us()) - q->t_recv_us);
	r.events = q->events;
	r.fwd_us_sum = q->fwd_us_sum;
	r.fwd_us_max = q->fwd_us_max;
	r.usage = p->usage;
	snprintf(r.model, sizeof r.model, "%s", p->model);
	if (p->error[0] && q->status >= 400)
		snprintf(r.error, sizeof r.error, "%s", p->error);
	else if (q->curl_code)
		snprintf(r.error, sizeof r.error, "%s",
			 q->curl_err[0] ? q->curl_err : curl_easy_strerror((CURLcode)q->curl_code));
	else if (p->error[0])
		snprintf(r.error, sizeof r.error, "%s", p->error);
	if (r.cut && !q->conn && !r.error[0])
		snprintf(r.error, sizeof r.error, "the agent closed the connection");
	log_debug("gateway: %s %s -> %d (curl %d%s) ttfb %.1f ms total %.1f ms, %u chunks", q->method,
		  q->sess_id, r.status, r.curl_code, r.cut ? ", cut" : "", r.ttfb_ms, r.total_ms, r.events);

	for (struct gw_req **pp = &inflight; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			ninflight--;
			break;
		}
	if (q->conn)
		q->conn->req = NULL;
	report_to_session(q->sess_id, &r);
	req_free(q);
}

/* --------------------------------------------------- service side */

static void conn_reset(struct gw_conn *c)
{
	free(c->body);
	free(c->lbody);
	sodium_memzero(c->token, sizeof c->token);
	memset(c, 0, sizeof *c);
}

static const char *const fwd_custom[] = {
	/* lws 4.1 cannot list unknown headers, so the ones that matter are named
	 * here: the Anthropic SDK's own and Claude Code's. */
	"anthropic-version:", "anthropic-beta:", "anthropic-dangerous-direct-browser-access:",
	"x-stainless-arch:", "x-stainless-lang:", "x-stainless-os:", "x-stainless-package-version:",
	"x-stainless-retry-count:", "x-stainless-runtime:", "x-stainless-runtime-version:",
	"x-stainless-timeout:", "x-stainless-helper-method:", "x-stainless-async:", "x-app:",
	"x-claude-code-session-id:", NULL,
};

static struct curl_slist *hdr_add(struct curl_slist *l, const char *name, const char *v, int *fail)
{
	char line[8192];
	snprintf(line, sizeof line, "%s %s", name, v);
	struct curl_slist *n = curl_slist_append(l, line);
	if (!n) {
		*fail = 1;
		return l;
	}
	return n;
}

/* The agent's headers that go on to the provider, plus the provider key. */
static struct curl_slist *build_headers(struct lws *wsi, const char *key, int *fail)
{
	struct curl_slist *l = NULL;
	char v[4096];
	static const struct {
		enum lws_token_indexes t;
		const char *name;
	} tok[] = {
		{WSI_TOKEN_HTTP_CONTENT_TYPE, "content-type:"},
		{WSI_TOKEN_HTTP_ACCEPT, "accept:"},
		{WSI_TOKEN_HTTP_USER_AGENT, "user-agent:"},
	};
	int have_ctype = 0;
	for (size_t i = 0; i < sizeof tok / sizeof tok[0]; i++)
		if (lws_hdr_copy(wsi, v, sizeof v, tok[i].t) > 0) {
			l = hdr_add(l, tok[i].name, v, fail);
			have_ctype |= i == 0;
		}
	for (const char *const *n = fwd_custom; *n; n++)
		if (lws_hdr_custom_copy(wsi, v, sizeof v, *n, (int)strlen(*n)) >= 0 && v[0]) {
			const char *p = v;
			while (*p == ' ')
				p++;
			l = hdr_add(l, *n, p, fail);
		}
	if (!have_ctype)
		l = hdr_add(l, "content-type:", "", fail); /* no form-urlencoded default from curl */
	l = hdr_add(l, "expect:", "", fail);           /* no 100-continue round trip */
	l = hdr_add(l, "x-api-key:", key, fail);
	return l;
}

/* Percent-encode what lws decoded, so the provider sees a valid URL. */
static void enc_append(char *out, size_t cap, const char *s, const char *keep)
{
	size_t o = strlen(out);
	for (; *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~", ch) || (ch && strchr(keep, ch))) {
			out[o++] = (char)ch;
		} else {
			snprintf(out + o, cap - o, "%%%02X", ch);
			o += 3;
		}
	}
	out[o] = '\0';
}

static void read_target(struct lws *wsi, struct gw_conn *c, const char *path)
{
	c->path[0] = '\0';
	enc_append(c->path, sizeof c->path, path, "/:@!$&'()*+,;=");
	char arg[1024];
	for (int i = 0; lws_hdr_copy_fragment(wsi, arg, sizeof arg, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
		size_t o = strlen(c->path);
		if (o + 2 >= sizeof c->path)
			break;
		c->path[o] = i ? '&' : '?';
		c->path[o + 1] = '\0';
		char *eq = strchr(arg, '=');
		if (eq)
			*eq = '\0';
		enc_append(c->path, sizeof c->path, arg, "");
		if (eq) {
			enc_append(c->path, sizeof c->path, "=", "=");
			enc_append(c->path, sizeof c->path, eq + 1, "");
		}
	}
}

static void read_token(struct lws *wsi, struct gw_conn *c)
{
	char v[256];
	if (lws_hdr_custom_copy(wsi, v, sizeof v, "x-api-key:", 10) > 0) {
		const char *p = v;
		while (*p == ' ')
			p++;
		snprintf(c->token, sizeof c->token, "%s", p);
	} else if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
		   !strncasecmp(v, "Bearer ", 7)) {
		snprintf(c->token, sizeof c->token, "%s", v + 7);
	}
	sodium_memzero(v, sizeof v);
}

static int respond_local(struct lws *wsi, struct gw_conn *c)
{
	lws_callback_on_writable(wsi);
	c->dispatched = 1;
	return 0;
}

/* Start the provider request of an authorized agent request.  base is the
 * session's provider URL ("" when it has none). */
static int forward(struct lws *wsi, struct gw_conn *c, const char *sess_id, const char *base,
		   const char *key)
{
	if (ninflight >= GW_MAX_INFLIGHT) {
		stats.overloaded++;
		gw_err_json(c, 529, "overloaded_error", "gateway: %u provider requests in flight",
			    GW_MAX_INFLIGHT);
		return respond_local(wsi, c);
	}
	struct gw_req *q = calloc(1, sizeof *q);
	if (!q) {
		gw_err_json(c, 500, "api_error", "gateway: out of memory");
		return respond_local(wsi, c);
	}
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	gw_sse_init(&q->parse, 0);
	snprintf(q->sess_id, sizeof q->sess_id, "%s", sess_id);
	snprintf(q->method, sizeof q->method, "%s", c->method);
	q->t_recv_us = cx_mono_us();
	if (!base[0]) {
		struct gw_report r;
		memset(&r, 0, sizeof r);
		snprintf(r.error, sizeof r.error, "no AI provider is configured for this session");
		report_to_session(q->sess_id, &r);
		req_free(q);
		gw_err_json(c, 403, "permission_error", "no AI provider is configured for this session");
		return respond_local(wsi, c);
	}
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	if (bl + strlen(c->path) + 1 > sizeof q->url) {
		req_free(q);
		gw_err_json(c, 414, "invalid_request_error", "provider URL too long");
		return respond_local(wsi, c);
	}
	snprintf(q->url, sizeof q->url, "%.*s%s", (int)bl, base, c->path);
	snprintf(q->key, sizeof q->key, "%s", key);
	int fail = 0;
	q->hdrs = build_headers(wsi, q->key, &fail);
	if (fail) {
		req_free(q);
		gw_err_json(c, 500, "api_error", "gateway: out of memory");
		return respond_local(wsi, c);
	}
	q->body = steal_pointer(&c->body);
	q->body_len = c->body_len;
	q->chunked = c->http11;
	q->conn = c;
	q->wsi = wsi;
	int rc = pthread_create(&q->thr, NULL, gw_thread, q);
	if (rc) {
		req_free(q);
		log_error("gateway: pthread_create: %s", strerror(rc));
		gw_err_json(c, 529, "overloaded_error", "gateway: cannot start a request thread");
		return respond_local(wsi, c);
	}
	q->next = inflight;
	inflight = q;
	ninflight++;
	c->req = q;
	/* The first writable clears lws's body timeout (set after a body-less
	 * LWS_CALLBACK_HTTP returns): a provider may take minutes. */
	lws_callback_on_writable(wsi);
	return 0;
}

/* The request is complete: answer it here or start its provider request. */
static int dispatch(struct lws *wsi, struct gw_conn *c)
{
	c->dispatched = 1;
	stats.requests++;
	if (c->too_big) {
		gw_err_json(c, 413, "request_too_large", "request body over %u bytes", GW_CAP_BODY);
		return respond_local(wsi, c);
	}
	if (strncmp(c->path, "/v1/", 4)) {
		gw_err_json(c, 404, "not_found_error", "the gateway serves /v1/ only");
		return respond_local(wsi, c);
	}
	char sess_id[40] = "", base[GW_CAP_URL] = "", key[GW_CAP_KEY] = "";
	int had_token = c->token[0] != '\0';
	int rc = had_token ? gw_ops.authorize(gw_ops.arg, c->token, sess_id, base, sizeof base, key,
					      sizeof key)
			   : CX_NOTFOUND;
	sodium_memzero(c->token, sizeof c->token);
	int res;
	if (rc == 0 || rc == -1) {
		res = forward(wsi, c, sess_id, rc == 0 ? base : "", key);
	} else {
		stats.unauthorized++;
		gw_err_json(c, 401, "authentication_error",
			    had_token ? "invalid gateway token" : "missing x-api-key or Authorization: Bearer");
		res = respond_local(wsi, c);
	}
	sodium_memzero(key, sizeof key);
	return res;
}

static int write_local(struct lws *wsi, struct gw_conn *c)
{
	size_t blen = c->lbody ? strlen(c->lbody) : 0;
	unsigned char *buf = malloc(LWS_PRE + 512 + blen);
	if (!buf)
		return -1;
	unsigned char *start = buf + LWS_PRE, *p = start, *end = start + 511;
	if (lws_add_http_common_headers(wsi, (unsigned)c->lstatus, "application/json",
					(lws_filepos_t)blen, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end)) {
		free(buf);
		return -1;
	}
	memcpy(p, c->lbody ? c->lbody : "", blen);
	p += blen;
	int n = lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_FINAL);
	free(buf);
	if (n < 0)
		return -1;
	conn_reset(c);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Status line + headers of the provider's response. */
static int write_head(struct lws *wsi, struct gw_req *q)
{
	unsigned char buf[LWS_PRE + GW_CAP_RHDRS + 1024];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	if (lws_add_http_header_status(wsi, (unsigned)q->status, &p, end))
		return -1;
	if (q->ctype[0] &&
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (unsigned char *)q->ctype,
					 (int)strlen(q->ctype), &p, end))
		return -1;
	if (q->chunked &&
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
					 (unsigned char *)"chunked", 7, &p, end))
		return -1;
	if (lws_add_http_header_by_name(wsi, (unsigned char *)"cache-control:",
					(unsigned char *)"no-cache", 8, &p, end))
		return -1;
	for (char *l = q->rhdrs; *l;) {
		char *nl = strchr(l, '\n');
		char *colon = strchr(l, ':');
		if (!nl || !colon || colon > nl)
			break;
		char name[64];
		snprintf(name, sizeof name, "%.*s:", (int)(colon - l), l);
		for (char *x = name; *x; x++)
			*x = (char)(*x >= 'A' && *x <= 'Z' ? *x + 32 : *x);
		const char *v = colon + 2 <= nl ? colon + 2 : nl;
		if (lws_add_http_header_by_name(wsi, (unsigned char *)name, (const unsigned char *)v,
						(int)(nl - v), &p, end))
			return -1;
		l = nl + 1;
	}
	if (lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	q->hdr_sent = 1;
	return 0;
}

/* 502 / 504 when the provider never answered. */
static void no_response(struct gw_conn *c, struct gw_req *q)
{
	const char *why = q->curl_err[0] ? q->curl_err : curl_easy_strerror((CURLcode)q->curl_code);
	if (q->curl_code == CURLE_OPERATION_TIMEDOUT)
		gw_err_json(c, 504, "api_error", "gateway: provider timed out: %s", why);
	else
		gw_err_json(c, 502, "api_error", "gateway: provider unreachable: %s", why);
}

static int write_req(struct lws *wsi, struct gw_conn *c, struct gw_req *q)
{
	if (!q->timeout_cleared) {
		lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
		q->timeout_cleared = 1;
	}
	pthread_mutex_lock(&q->mu);
	int hdr_done = q->hdr_done, finished = q->finished;
	struct gw_chunk *ch = NULL;
	if (q->hdr_sent && (ch = q->head)) {
		q->head = ch->next;
		if (!q->head)
			q->tail = NULL;
		q->qbytes -= ch->len;
		pthread_cond_signal(&q->cv);
	}
	int more = q->head != NULL;
	pthread_mutex_unlock(&q->mu);

	if (!q->hdr_sent) {
		if (!hdr_done && !finished)
			return 0; /* nothing yet */
		if (!hdr_done && !q->t_first_us) {
			/* No response: answer locally, then report. */
			no_response(c, q);
			q->t_last_us = cx_mono_us();
			req_finalize(q);
			return write_local(wsi, c);
		}
		if (write_head(wsi, q) < 0)
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (ch) {
		unsigned char *pl = ch->buf + LWS_PRE + GW_CHUNK_HEAD, *start = pl;
		size_t n = ch->len;
		if (q->chunked) {
			char hx[GW_CHUNK_HEAD];
			int hl = snprintf(hx, sizeof hx, "%zx\r\n", ch->len);
			start = pl - hl;
			memcpy(start, hx, (size_t)hl);
			memcpy(pl + ch->len, "\r\n", 2);
			n += (size_t)hl + 2;
		}
		int w = lws_write(wsi, start, n, LWS_WRITE_HTTP);
		uint64_t now = cx_mono_us();
		double d = (double)(now - ch->t_us);
		free(ch);
		if (w < 0)
			return -1; /* CLOSED_HTTP aborts the request */
		q->events++;
		q->fwd_us_sum += d;
		if (d > q->fwd_us_max)
			q->fwd_us_max = d;
		q->t_last_us = now;
		if (more || finished)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (!finished)
		return 0;
	/* All sent and curl is done. */
	int cut = q->curl_code != 0, q_chunked = q->chunked;
	q->t_last_us = cx_mono_us();
	req_finalize(q);
	c->req = NULL;
	if (cut)
		return -1; /* the agent sees the response end early (no final chunk) */
	unsigned char fin[LWS_PRE + 8];
	memcpy(fin + LWS_PRE, "0\r\n\r\n", 5);
	if (lws_write(wsi, fin + LWS_PRE, q_chunked ? 5 : 0, LWS_WRITE_HTTP_FINAL) < 0)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int gw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		       size_t len)
{
	struct gw_conn *c = user;
	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		/* lws delivers this to every protocol of every vhost, so the
		 * gateway drains itself; server.c calling gateway_service() as
		 * well is harmless. */
		gateway_service();
		return 0;
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return -1; /* no WebSocket on the gateway */
	case LWS_CALLBACK_HTTP: {
		if (!c)
			return -1;
		if (c->req) /* pipelined request while one runs: not supported */
			return -1;
		conn_reset(c);
		char *uri;
		int ulen;
		int m = lws_http_get_uri_and_method(wsi, &uri, &ulen);
		static const char *const names[] = {"GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"};
		c->method = m >= 0 && m < 6 ? names[m] : NULL;
		char ver[16] = "";
		lws_hdr_copy(wsi, ver, sizeof ver, WSI_TOKEN_HTTP);
		c->http11 = !strcmp(ver, "HTTP/1.1");
		read_target(wsi, c, in ? (const char *)in : "");
		read_token(wsi, c);
		if (!c->method) {
			gw_err_json(c, 405, "invalid_request_error", "method not supported");
			c->method = "OTHER";
			stats.requests++;
			return respond_local(wsi, c);
		}
		char cl[32] = "";
		lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
		long long clen = cl[0] ? atoll(cl) : 0;
		if (clen > 0) {
			if (clen > GW_CAP_BODY)
				c->too_big = 1; /* read and discard, then 413 */
			else if (!(c->body = malloc((size_t)clen + 1)))
				return -1;
			else
				c->body_cap = (size_t)clen;
			return 0; /* wait for the body */
		}
		return dispatch(wsi, c);
	}
	case LWS_CALLBACK_HTTP_BODY:
		if (!c || !in || !len || c->too_big)
			return 0;
		if (c->body_len + len > c->body_cap) {
			/* more than content-length announced */
			c->too_big = c->body_len + len > GW_CAP_BODY;
			if (c->too_big)
				return 0;
			size_t nc = c->body_len + len;
			char *nb = realloc(c->body, nc + 1);
			if (!nb)
				return -1;
			c->body = nb;
			c->body_cap = nc;
		}
		memcpy(c->body + c->body_len, in, len);
		c->body_len += len;
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (!c || c->dispatched)
			return 0;
		return dispatch(wsi, c);
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!c || !c->dispatched)
			return 0;
		if (c->req)
			return write_req(wsi, c, c->req);
		if (c->lstatus)
			return write_local(wsi, c);
		return 0;
	case LWS_CALLBACK_CLOSED_HTTP:
		if (!c)
			return 0;
		if (c->req) {
			struct gw_req *q = c->req;
			q->conn = NULL;
			q->wsi = NULL;
			c->req = NULL;
			req_abort(q);
			pthread_mutex_lock(&q->mu);
			int finished = q->finished;
			pthread_mutex_unlock(&q->mu);
			if (finished) /* its last wake-up may be past: finalize now */
				req_finalize(q);
			/* else gateway_service() finalizes it once curl returned */
		}
		conn_reset(c);
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols gw_protocols[] = {
	{"cortex-gateway", gw_callback, sizeof(struct gw_conn), 64 * 1024, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ------------------------------------------------------------ public */

int gateway_start(struct lws_context *ctx, const char *host, int port,
		  const struct gateway_ops *ops, cx_err *err)
{
	if (gw_vh)
		return cx_err_set(err, EALREADY, "gateway: already started");
	if (!ops || !ops->authorize)
		return cx_err_set(err, EINVAL, "gateway: no authorize hook");
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return cx_err_set(err, 0, "gateway: curl_global_init failed");
	if (!share) {
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
	}
	gw_ops = *ops;
	gw_ctx = ctx;
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.vhost_name = "gateway";
	info.port = port;
	info.iface = host;
	info.protocols = gw_protocols;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	info.keepalive_timeout = 60;
	gw_vh = lws_create_vhost(ctx, &info);
	if (!gw_vh)
		return cx_err_set(err, 0, "gateway: cannot listen on %s:%d", host, port);
	gw_listen_port = lws_get_vhost_listen_port(gw_vh);
	return 0;
}

int gateway_port(void) { return gw_listen_port; }

void gateway_service(void)
{
	for (struct gw_req *q = inflight, *next; q; q = next) {
		next = q->next;
		pthread_mutex_lock(&q->mu);
		int finished = q->finished;
		int pending = (q->hdr_done && !q->hdr_sent) || q->head || finished;
		pthread_mutex_unlock(&q->mu);
		if (q->wsi) {
			if (pending)
				lws_callback_on_writable(q->wsi);
		} else if (finished) {
			req_finalize(q); /* the agent left: nothing to send */
		}
	}
}

void gateway_stop(void)
{
	for (struct gw_req *q = inflight; q; q = q->next)
		req_abort(q);
	while (inflight) {
		struct gw_req *q = inflight;
		inflight = q->next;
		pthread_join(q->thr, NULL); /* curl notices abort within ~1 s */
		if (q->conn)
			q->conn->req = NULL;
		req_free(q); /* no report: sessions are going away too */
	}
	ninflight = 0;
	gw_vh = NULL; /* destroyed with the context */
	if (share) {
		curl_share_cleanup(share);
		share = NULL;
		for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
			pthread_mutex_destroy(&share_mu[i]);
	}
}

void gateway_token_new(char out[GW_TOKEN_LEN + 1])
{
	unsigned char r[32];
	randombytes_buf(r, sizeof r);
	memcpy(out, "cxg_", 4);
	sodium_bin2hex(out + 4, 65, r, sizeof r);
	sodium_memzero(r, sizeof r);
}

void gateway_get_stats(struct gw_stats *out) { *out = stats; }
