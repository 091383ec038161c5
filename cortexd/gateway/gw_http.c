/* gw_http.c — the gateway's lws vhost "gateway" (HTTP only): an agent's
 * request under /v1/ has its token authorized and a slot of the in-flight
 * pool taken for its user once the headers are in (gw_pool.c) — or, the pool
 * being full, waits in its queue for one, bounded in time by an lws timer —
 * is read whole (GW_CAP_BODY), and its provider request started once it
 * holds a slot and its body is in (gw_upstream.c); the
 * response goes back one chunk per WRITEABLE callback as the curl thread
 * queues it.  Errors the gateway makes itself are Anthropic-style JSON
 * ({"type":"error",...}); the body of a request answered here is dropped as
 * it arrives.
 */
#include "gw_internal.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "log.h"

/* ------------------------------------------------------ local answers */

static void set_error(struct gw_conn *c, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(struct gw_conn *c, int status, const char *type, const char *fmt, ...)
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

/* The slot c holds, given back (an answer made here needs none). */
static void slot_release(struct gw_conn *c)
{
	if (c->slot)
		gw_pool_put(c->user);
	c->slot = 0;
}

static void conn_reset(struct gw_conn *c)
{
	gw_pool_leave(c);
	slot_release(c);
	free(c->body);
	free(c->lbody);
	sodium_memzero(c->token, sizeof c->token);
	sodium_memzero(c->key, sizeof c->key);
	memset(c, 0, sizeof *c);
}

static int respond_local(struct lws *wsi, struct gw_conn *c)
{
	slot_release(c);
	lws_callback_on_writable(wsi);
	c->dispatched = 1;
	return 0;
}

static int write_local(struct lws *wsi, struct gw_conn *c)
{
	size_t blen = c->lbody ? strlen(c->lbody) : 0;
	unsigned char *buf = malloc(LWS_PRE + 512 + blen);
	if (!buf)
		return -1;
	unsigned char *start = buf + LWS_PRE, *p = start, *end = start + 511;
	char ra[16];
	int ral = snprintf(ra, sizeof ra, "%d", c->retry_after);
	if (lws_add_http_common_headers(wsi, (unsigned)c->lstatus, "application/json",
					(lws_filepos_t)blen, &p, end) ||
	    (c->retry_after > 0 &&
	     lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
					 (const unsigned char *)ra, ral, &p, end)) ||
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

/* ------------------------------------------------- reading a request */

static const char *const fwd_custom[] = {
    /* lws 4.1 cannot list unknown headers, so the ones that matter are named
     * here: the Anthropic SDK's own and Claude Code's. */
    "anthropic-version:",
    "anthropic-beta:",
    "anthropic-dangerous-direct-browser-access:",
    "x-stainless-arch:",
    "x-stainless-lang:",
    "x-stainless-os:",
    "x-stainless-package-version:",
    "x-stainless-retry-count:",
    "x-stainless-runtime:",
    "x-stainless-runtime-version:",
    "x-stainless-timeout:",
    "x-stainless-helper-method:",
    "x-stainless-async:",
    "x-app:",
    "x-claude-code-session-id:",
    NULL,
};

static struct curl_slist *hdr_add(struct curl_slist *l, const char *name, const char *v, int *fail)
{
	char line[8192];
	snprintf(line, sizeof line, "%s %s", name, v);
	struct curl_slist *n = curl_slist_append(l, line);
	sodium_memzero(line, sizeof line); /* may be the key */
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
		l = hdr_add(l, "content-type:", "",
			    fail);	     /* no form-urlencoded default from curl */
	l = hdr_add(l, "expect:", "", fail); /* no 100-continue round trip */
	l = hdr_add(l, "x-api-key:", key, fail);
	return l;
}

/* Percent-encode what lws decoded, so the provider sees a valid URL. */
static void enc_append(char *out, size_t cap, const char *s, const char *keep)
{
	size_t o = strlen(out);
	for (; *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~", ch) || (ch && strchr(keep, ch))) {
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
	for (int i = 0; lws_hdr_copy_fragment(wsi, arg, sizeof arg, WSI_TOKEN_HTTP_URI_ARGS, i) > 0;
	     i++) {
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

/* ------------------------------------------------- starting a request */

/* The headers are in: look the token up and take a slot of the pool for the
 * request's user, or a place in its queue.  What is refused here is answered
 * once the body is in (dropped as it arrives); nothing but a slot holder or a
 * queued request keeps its body. */
static void admit(struct lws *wsi, struct gw_conn *c)
{
	c->discard = 1;
	c->auth = CX_NOTFOUND;
	if (c->too_big || strncmp(c->path, "/v1/", 4))
		return;
	c->had_token = c->token[0] != '\0';
	c->auth = c->had_token
		      ? gw_state.ops.authorize(gw_state.ops.arg, c->token, c->sess_id, c->user,
					       c->base, sizeof c->base, c->key, sizeof c->key)
		      : CX_NOTFOUND;
	sodium_memzero(c->token, sizeof c->token);
	/* The hook's strings end inside their buffers whatever it wrote. */
	c->sess_id[sizeof c->sess_id - 1] = c->user[sizeof c->user - 1] = '\0';
	c->base[sizeof c->base - 1] = c->key[sizeof c->key - 1] = '\0';
	if (c->auth != 0) {
		if (c->auth != -1)
			c->auth = CX_NOTFOUND;
		return;
	}
	unsigned held, queued;
	switch (gw_pool_take(c, wsi, &held, &queued)) {
	case GW_POOL_OK:
		c->discard = 0;
		return;
	case GW_POOL_QUEUED:
		c->discard = 0;
		lws_set_timer_usecs(wsi, (lws_usec_t)gw_state.lim.queue_timeout_ms * 1000);
		log_debug("gateway: %s of user %s queued: %u in flight, %u queued", c->sess_id,
			  c->user, gw_state.used, gw_state.queued);
		return;
	case GW_POOL_USER_CAP:
		if (queued)
			set_error(
			    c, 429, "rate_limit_error",
			    "gateway: user %s has %u requests in flight and %u queued (cap %u)",
			    c->user, held, queued, gw_state.lim.max_inflight_per_user);
		else
			set_error(c, 429, "rate_limit_error",
				  "gateway: user %s has %u requests in flight (cap %u)", c->user,
				  held, gw_state.lim.max_inflight_per_user);
		break;
	case GW_POOL_GLOBAL_CAP:
		set_error(c, 529, "overloaded_error",
			  "gateway: %u requests in flight, of all users (cap %u)", gw_state.used,
			  gw_state.lim.max_inflight);
		break;
	case GW_POOL_QUEUE_FULL:
		set_error(
		    c, 529, "overloaded_error",
		    "gateway: %u requests in flight and %u queued, of all users (caps %u and %u)",
		    gw_state.used, gw_state.queued, gw_state.lim.max_inflight,
		    gw_state.lim.max_queued);
		break;
	}
	c->retry_after = GW_RETRY_AFTER_S;
	log_debug("gateway: %s of user %s refused (%d): %u of %u in flight", c->sess_id, c->user,
		  c->lstatus, gw_state.used, gw_state.lim.max_inflight);
}

/* A session without a provider: 403, and the session hears why. */
static int no_provider(struct lws *wsi, struct gw_conn *c)
{
	struct gw_report r;
	memset(&r, 0, sizeof r);
	snprintf(r.error, sizeof r.error, "no AI provider is configured for this session");
	gw_report_send(c->sess_id, &r);
	set_error(c, 403, "permission_error", "no AI provider is configured for this session");
	return respond_local(wsi, c);
}

/* Start the provider request of an admitted agent request (it holds a slot,
 * which passes to the gw_req). */
static int forward(struct lws *wsi, struct gw_conn *c)
{
	const char *base = c->base;
	struct gw_req *q = gw_req_new();
	if (!q) {
		set_error(c, 500, "api_error", "gateway: out of memory");
		return respond_local(wsi, c);
	}
	snprintf(q->sess_id, sizeof q->sess_id, "%s", c->sess_id);
	snprintf(q->user, sizeof q->user, "%s", c->user);
	snprintf(q->method, sizeof q->method, "%s", c->method);
	q->t_recv_us = cx_mono_us();
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	if (bl + strlen(c->path) + 1 > sizeof q->url) {
		gw_req_free(q);
		set_error(c, 414, "invalid_request_error", "provider URL too long");
		return respond_local(wsi, c);
	}
	snprintf(q->url, sizeof q->url, "%.*s%s", (int)bl, base, c->path);
	snprintf(q->key, sizeof q->key, "%s", c->key);
	sodium_memzero(c->key, sizeof c->key);
	int fail = 0;
	q->hdrs = build_headers(wsi, q->key, &fail);
	if (fail) {
		gw_req_free(q);
		set_error(c, 500, "api_error", "gateway: out of memory");
		return respond_local(wsi, c);
	}
	q->body = steal_pointer(&c->body);
	q->body_len = c->body_len;
	q->chunked = c->http11;
	q->conn = c;
	q->wsi = wsi;
	int rc = gw_req_start(q);
	if (rc) {
		gw_req_free(q);
		log_error("gateway: pthread_create: %s", strerror(rc));
		set_error(c, 529, "overloaded_error", "gateway: cannot start a request thread");
		return respond_local(wsi, c);
	}
	q->next = gw_state.inflight;
	gw_state.inflight = q;
	c->slot = 0; /* q holds it now: gw_req_finalize gives it back */
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
	gw_state.stats.requests++;
	if (c->too_big) {
		set_error(c, 413, "request_too_large", "request body over %u bytes", GW_CAP_BODY);
		return respond_local(wsi, c);
	}
	if (strncmp(c->path, "/v1/", 4)) {
		set_error(c, 404, "not_found_error", "the gateway serves /v1/ only");
		return respond_local(wsi, c);
	}
	if (c->auth == CX_NOTFOUND) {
		gw_state.stats.unauthorized++;
		set_error(c, 401, "authentication_error",
			  c->had_token ? "invalid gateway token"
				       : "missing x-api-key or Authorization: Bearer");
		return respond_local(wsi, c);
	}
	if (c->auth == -1)
		return no_provider(wsi, c);
	if (c->queued) {
		/* waits for gw_http_granted(); its WRITEABLE clears lws's timeout
		 * (the queue's timer bounds the wait) */
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (!c->slot) /* refused by a cap in admit() or by the queue: the answer is set */
		return respond_local(wsi, c);
	return forward(wsi, c);
}

void gw_http_granted(struct gw_conn *c)
{
	lws_set_timer_usecs(c->wsi, LWS_SET_TIMER_USEC_CANCEL);
	if (c->dispatched) /* its body is in: forward() on WRITEABLE, outside gw_pool_put */
		lws_callback_on_writable(c->wsi);
	/* else dispatch() forwards it once the body is in */
}

/* The queue's timer of c fired: 529, now or once its body is in. */
static int queue_timeout(struct lws *wsi, struct gw_conn *c)
{
	if (!c->queued)
		return 0;
	gw_pool_leave(c);
	gw_state.stats.queue_timeouts++;
	gw_state.stats.overloaded++;
	set_error(c, 529, "overloaded_error",
		  "gateway: waited %u ms for a slot of the pool (%u in flight, %u queued, of all "
		  "users)",
		  gw_state.lim.queue_timeout_ms, gw_state.used, gw_state.queued);
	c->retry_after = GW_RETRY_AFTER_S;
	log_debug("gateway: %s of user %s: no slot after %u ms", c->sess_id, c->user,
		  gw_state.lim.queue_timeout_ms);
	free(c->body);
	c->body = NULL;
	c->body_len = c->body_cap = 0;
	c->discard = 1;
	return c->dispatched ? respond_local(wsi, c) : 0;
}

/* ------------------------------------------------- writing a response */

/* Status line + headers of the provider's response. */
static int write_head(struct lws *wsi, struct gw_req *q)
{
	unsigned char buf[LWS_PRE + GW_CAP_RHDRS + 1024];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	if (lws_add_http_header_status(wsi, (unsigned)q->status, &p, end))
		return -1;
	if (q->ctype[0] &&
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
					 (unsigned char *)q->ctype, (int)strlen(q->ctype), &p, end))
		return -1;
	if (q->chunked && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
						       (unsigned char *)"chunked", 7, &p, end))
		return -1;
	if (lws_add_http_header_by_name(
		wsi, (unsigned char *)"cache-control:", (unsigned char *)"no-cache", 8, &p, end))
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
		if (lws_add_http_header_by_name(wsi, (unsigned char *)name,
						(const unsigned char *)v, (int)(nl - v), &p, end))
			return -1;
		l = nl + 1;
	}
	if (lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	q->hdr_sent = 1;
	return 0;
}

/* 502 / 504 when the provider never answered. */
static void set_no_response(struct gw_conn *c, struct gw_req *q)
{
	const char *why = gw_req_strerror(q);
	if (q->curl_code == CURLE_OPERATION_TIMEDOUT)
		set_error(c, 504, "api_error", "gateway: provider timed out: %s", why);
	else
		set_error(c, 502, "api_error", "gateway: provider unreachable: %s", why);
}

/* One queued chunk of the provider's body to the agent. */
static int write_chunk(struct lws *wsi, struct gw_req *q, struct gw_chunk *ch,
		       const struct gw_queue_state *st)
{
	unsigned char *pl = gw_chunk_data(ch), *start = pl;
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
	if (st->more || st->finished)
		lws_callback_on_writable(wsi);
	return 0;
}

/* All sent and curl is done: report, then end the response. */
static int write_end(struct lws *wsi, struct gw_conn *c, struct gw_req *q)
{
	int cut = q->curl_code != 0, chunked = q->chunked;
	q->t_last_us = cx_mono_us();
	gw_req_finalize(q);
	c->req = NULL;
	if (cut)
		return -1; /* the agent sees the response end early (no final chunk) */
	unsigned char fin[LWS_PRE + 8];
	memcpy(fin + LWS_PRE, "0\r\n\r\n", 5);
	if (lws_write(wsi, fin + LWS_PRE, chunked ? 5 : 0, LWS_WRITE_HTTP_FINAL) < 0)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int write_req(struct lws *wsi, struct gw_conn *c, struct gw_req *q)
{
	if (!q->timeout_cleared) {
		lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
		q->timeout_cleared = 1;
	}
	struct gw_queue_state st;
	struct gw_chunk *ch = gw_queue_pop(&q->queue, q->hdr_sent, &st);
	if (!q->hdr_sent) {
		if (!st.hdr_done && !st.finished)
			return 0; /* nothing yet */
		if (!st.hdr_done && !q->t_first_us) {
			/* No response: answer locally, then report. */
			set_no_response(c, q);
			q->t_last_us = cx_mono_us();
			gw_req_finalize(q);
			return write_local(wsi, c);
		}
		if (write_head(wsi, q) < 0)
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (ch)
		return write_chunk(wsi, q, ch, &st);
	if (!st.finished)
		return 0;
	return write_end(wsi, c, q);
}

/* ------------------------------------------------------ lws callbacks */

static int on_http(struct lws *wsi, struct gw_conn *c, const char *in)
{
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
	read_target(wsi, c, in ? in : "");
	read_token(wsi, c);
	if (!c->method) {
		set_error(c, 405, "invalid_request_error", "method not supported");
		c->method = "OTHER";
		gw_state.stats.requests++;
		return respond_local(wsi, c);
	}
	char cl[32] = "";
	lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
	long long clen = cl[0] ? atoll(cl) : 0;
	c->too_big = clen > GW_CAP_BODY; /* read and discard, then 413 */
	c->t_hdr_us = cx_mono_us();
	admit(wsi, c);
	if (clen > 0) {
		if (!c->discard && !(c->body = malloc((size_t)clen + 1)))
			return -1;
		if (!c->discard)
			c->body_cap = (size_t)clen;
		return 0; /* wait for the body */
	}
	return dispatch(wsi, c);
}

static int on_body(struct gw_conn *c, const char *in, size_t len)
{
	if (cx_mono_us() - c->t_hdr_us > (uint64_t)gw_state.lim.body_deadline_s * 1000000u) {
		/* a slowloris: a byte now and then keeps lws's idle timeout away */
		gw_state.stats.slow_body++;
		log_debug("gateway: a body of user %s still arriving after %u s: closed",
			  c->user[0] ? c->user : "(none)", gw_state.lim.body_deadline_s);
		return -1;
	}
	if (c->too_big || c->discard)
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
}

/* The agent's connection closed: stop its provider request. */
static void on_closed(struct gw_conn *c)
{
	struct gw_req *q = c->req;
	if (q) {
		q->conn = NULL;
		q->wsi = NULL;
		c->req = NULL;
		gw_queue_abort(&q->queue);
		struct gw_queue_state st;
		gw_queue_pop(&q->queue, 0, &st);
		if (st.finished) /* its last wake-up may be past: finalize now */
			gw_req_finalize(q);
		/* else gateway_service() finalizes it once curl returned */
	}
	conn_reset(c);
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
	case LWS_CALLBACK_HTTP:
		return c ? on_http(wsi, c, in) : -1;
	case LWS_CALLBACK_HTTP_BODY:
		return c && in && len ? on_body(c, in, len) : 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		return c && !c->dispatched ? dispatch(wsi, c) : 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!c || !c->dispatched)
			return 0;
		if (c->req)
			return write_req(wsi, c, c->req);
		if (c->lstatus)
			return write_local(wsi, c);
		if (c->queued) {
			lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
			return 0;
		}
		if (c->slot) /* given a slot from the queue */
			return forward(wsi, c);
		return 0;
	case LWS_CALLBACK_TIMER:
		return c ? queue_timeout(wsi, c) : 0;
	case LWS_CALLBACK_CLOSED_HTTP:
		if (c)
			on_closed(c);
		return 0;
	default:
		return 0;
	}
}

/* The gateway's Unix socket (gateway_listen_unix), adopted as a raw file:
 * each accepted connection becomes an HTTP connection of this vhost, served
 * by gw_callback with the same token auth as over TCP. */
static void gw_adopt(void *vh, int fd)
{
	if (!lws_adopt_socket_vhost(vh, fd)) /* it closed fd */
		log_warn("gateway: could not adopt a unix connection");
}

static int gw_accept_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			      void *in, size_t len)
{
	(void)user, (void)in, (void)len;
	cx_err err = CX_ERR_INIT;
	if (reason == LWS_CALLBACK_RAW_RX_FILE &&
	    cx_accept_each(lws_get_socket_fd(wsi), gw_adopt, lws_get_vhost(wsi), &err) < 0)
		log_warn("gateway: on the unix socket: %s", err.msg);
	return 0;
}

static const struct lws_protocols gw_protocols[] = {
    {"cortex-gateway", gw_callback, sizeof(struct gw_conn), 64 * 1024, 0, NULL, 0},
    {GW_ACCEPT_PROTOCOL, gw_accept_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

struct lws_vhost *gw_http_listen(struct lws_context *ctx, const char *host, int port)
{
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.vhost_name = "gateway";
	info.port = port;
	info.iface = host;
	info.protocols = gw_protocols;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	info.keepalive_timeout = 60;
	return lws_create_vhost(ctx, &info);
}
