/* nproxy.c — requests for another node's session, proxied to it (nproxy.h).
 *
 * A proxy lives while the client's side (down) or the owner's connection
 * (up) refers to it.  The client side lets go in nproxy_release (from
 * CLOSED_HTTP or CLOSED); the owner side in CLOSED_CLIENT_HTTP, CLIENT_CLOSED
 * or CLIENT_CONNECTION_ERROR.  Releasing the client side of an HTTP proxy
 * kills the owner connection at once; a WebSocket's is closed with the
 * client's close code after the frames still queued to the owner. */
#include "nproxy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"
#include "nproxy-internal.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "owner.h"
#include "preview.h"
#include "pv_fwd.h"
#include "session.h"

/* ---- counters (service thread) ---- */

uint64_t np_http, np_ws, np_unreachable, np_timeouts, np_refused, np_loops, np_cut, np_pauses;
uint64_t np_bytes_up, np_bytes_down;
static uint64_t np_hdr_drops; /* preview headers past NP_HDRCAP or the handshake's room */
unsigned np_open;

/* ---- queued pieces ---- */

unsigned char *np_piece_data(struct np_piece *p)
{
	return p->buf + LWS_PRE + NP_HEADROOM;
}

int np_q_put(struct np_queue *q, const void *data, size_t len, int flags)
{
	struct np_piece *p = malloc(sizeof *p + LWS_PRE + NP_HEADROOM + len + NP_TAIL);
	if (!p)
		return -1;
	p->next = NULL;
	p->len = len;
	p->flags = flags;
	if (len)
		memcpy(np_piece_data(p), data, len);
	if (q->tail)
		q->tail->next = p;
	else
		q->head = p;
	q->tail = p;
	q->bytes += len;
	return 0;
}

void np_q_pop(struct np_queue *q)
{
	struct np_piece *p = q->head;
	if (!p)
		return;
	q->head = p->next;
	if (!q->head)
		q->tail = NULL;
	q->bytes -= p->len;
	free(p);
}

static void q_free(struct np_queue *q)
{
	while (q->head)
		np_q_pop(q);
}

static void np_free(struct nproxy *px)
{
	lws_sul_cancel(&px->sul);
	q_free(&px->downq);
	q_free(&px->upq);
	free(px->body);
	free(px->xhdr);
	free(px->rhdr);
	np_open--;
	free(px);
}

void np_maybe_free(struct nproxy *px)
{
	if (!px->down && !px->up)
		np_free(px);
}

/* Stop the owner connection now (its callbacks then see no proxy). */
static void np_kill_up(struct nproxy *px)
{
	if (!px->up)
		return;
	lws_set_opaque_user_data(px->up, NULL);
	lws_set_timeout(px->up, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
	px->up = NULL;
}

static void np_fail(struct nproxy *px, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void np_fail(struct nproxy *px, const char *fmt, ...)
{
	if (px->fail_code)
		return;
	px->fail_code = "owner_unreachable";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(px->fail_msg, sizeof px->fail_msg, fmt, ap);
	va_end(ap);
	np_unreachable++;
	/* at most one line a second: a dead owner fails every request until its lease expires */
	static lws_usec_t last;
	static unsigned quiet;
	lws_usec_t now = lws_now_usecs();
	if (now - last < LWS_US_PER_SEC) {
		quiet++;
		return;
	}
	log_warn("proxy to %s:%d%.100s: %s (%u more since the last line)", px->host, px->port,
		 px->path, px->fail_msg, quiet);
	last = now;
	quiet = 0;
}

/* The owner's answer did not come in time. */
static void np_timeout(lws_sorted_usec_list_t *sul)
{
	struct nproxy *px = lws_container_of(sul, struct nproxy, sul);
	if (px->head_in || px->ws_open)
		return;
	np_timeouts++;
	np_fail(px, "the session's node did not %s within %d ms",
		px->ws ? "accept the WebSocket" : "accept the connection",
		px->d->cfg.cluster_proxy_timeout_ms ? px->d->cfg.cluster_proxy_timeout_ms : 5000);
	np_kill_up(px);
	px->up_gone = 1;
	if (px->down)
		lws_callback_on_writable(px->down);
	else
		np_maybe_free(px);
}

/* http://host[:port] into px. */
static int parse_url(struct nproxy *px, const char *url)
{
	if (strncmp(url, "http://", 7))
		return -1;
	const char *h = url + 7;
	size_t hl = strcspn(h, ":/");
	if (!hl || hl >= sizeof px->host)
		return -1;
	memcpy(px->host, h, hl);
	px->host[hl] = '\0';
	px->port = 80;
	if (h[hl] == ':') {
		char *e;
		long p = strtol(h + hl + 1, &e, 10);
		if (p <= 0 || p > 65535 || (*e && *e != '/'))
			return -1;
		px->port = (int)p;
	}
	return 0;
}

struct nproxy *np_new(struct cortexd *d, struct lws *down, const char *url, int ws)
{
	struct nproxy *px = calloc(1, sizeof *px);
	if (!px)
		return NULL;
	np_open++;
	px->d = d;
	px->down = down;
	px->ws = ws;
	px->clen = -1;
	if (parse_url(px, url) < 0) {
		np_fail(px, "the session's node has an advertised URL this node cannot use: %.100s",
			url);
		return px;
	}
	return px;
}

/* Connect to the owner; a failure is left in px (the client is told). */
void np_connect(struct nproxy *px)
{
	if (px->fail_code)
		return;
	struct lws_client_connect_info i;
	memset(&i, 0, sizeof i);
	char hosthdr[300];
	snprintf(hosthdr, sizeof hosthdr, "%s:%d", px->host, px->port);
	i.context = px->d->ctx;
	i.vhost = px->d->vh;
	i.address = px->host;
	i.port = px->port;
	i.path = px->path;
	i.host = hosthdr;
	i.origin = px->preview ? NULL : hosthdr; /* a preview's: the client's, in xhdr */
	i.method = px->ws ? NULL : px->method;
	i.protocol = NULL; /* no subprotocol: the owner's default "cortex" */
	i.local_protocol_name = "cortex-owner";
	i.ssl_connection = LCCSCF_HTTP_NO_FOLLOW_REDIRECT;
	i.opaque_user_data = px;
	i.pwsi = &px->up;
	int ms = px->d->cfg.cluster_proxy_timeout_ms ? px->d->cfg.cluster_proxy_timeout_ms : 5000;
	lws_sul_schedule(px->d->ctx, 0, &px->sul, np_timeout, (lws_usec_t)ms * 1000);
	if (!lws_client_connect_via_info(&i)) {
		px->up = NULL;
		np_fail(px, "cannot connect to the session's node %s", hosthdr);
		px->up_gone = 1;
	}
}

void nproxy_release(struct nproxy *px)
{
	if (!px)
		return;
	px->down = NULL;
	if (px->slot)
		*px->slot = NULL;
	px->slot = NULL;
	if (px->ws && px->up && px->ws_open) {
		/* the client's close code goes on to the owner after the queued frames */
		if (!px->close_up)
			px->close_up = LWS_CLOSE_STATUS_GOINGAWAY;
		lws_rx_flow_control(px->up, 0);
		lws_set_timeout(px->up, PENDING_TIMEOUT_CLOSE_SEND, 5);
		lws_callback_on_writable(px->up);
		return;
	}
	np_kill_up(px);
	np_maybe_free(px);
}

/* ---- which requests ---- */

int nproxy_target(struct cortexd *d, const char *path, char *url, size_t cap)
{
	static const char pre[] = "/v1/sessions/";
	if (!owner_enabled() || d->cfg.cluster_redirect || strncmp(path, pre, sizeof pre - 1))
		return 0;
	const char *id = path + sizeof pre - 1;
	size_t n = strcspn(id, "/");
	char sid[64], node[128];
	if (!n || n >= sizeof sid)
		return 0;
	memcpy(sid, id, n);
	sid[n] = '\0';
	if (session_find(d, sid))
		return 0;
	return owner_cache_lookup(sid, node, sizeof node, url, cap) == 1 &&
	       strcmp(node, owner_node_id());
}

void nproxy_count_loop(void)
{
	np_loops++;
}

/* ---- HTTP ---- */

/* Append name and v as a pair to *buf (capped at NP_HDRCAP: past it,
 * dropped and counted). */
static void hdr_put(char **buf, size_t *len, const char *name, const char *v)
{
	size_t nl = strlen(name) + 1, vl = strlen(v) + 1;
	char *nb = *len + nl + vl > NP_HDRCAP ? NULL : realloc(*buf, *len + nl + vl);
	if (!nb) {
		np_hdr_drops++;
		return;
	}
	memcpy(nb + *len, name, nl);
	memcpy(nb + *len + nl, v, vl);
	*buf = nb;
	*len += nl + vl;
}

/* Every header of token t (each repeat its own pair: Set-Cookie). */
static void hdr_put_token(char **buf, size_t *len, struct lws *wsi, enum lws_token_indexes t)
{
	const char *name = (const char *)lws_token_to_string(t);
	char v[4096];
	if (!name || lws_hdr_total_length(wsi, t) <= 0)
		return;
	for (int i = 0; i < 32; i++) {
		if (lws_hdr_copy_fragment(wsi, v, sizeof v, t, i) < 0)
			break;
		hdr_put(buf, len, name, v);
	}
}

static void xhdr_put(void *arg, const char *name, const char *v)
{
	struct nproxy *px = arg;
	hdr_put(&px->xhdr, &px->xhdr_len, name, v);
}

static void rhdr_put(void *arg, const char *name, const char *v)
{
	struct nproxy *px = arg;
	hdr_put(&px->rhdr, &px->rhdr_len, name, v);
}

/* The request headers a preview passes inside (preview.c's tokens, every
 * custom one: pv_fwd.h), after the client's address and host, which the
 * owner trusts from a node (pv_fwd_client) and passes inside for it. */
void np_preview_request_headers(struct nproxy *px, struct lws *wsi)
{
	char *v = malloc(NP_VCAP), host[512];
	if (!v) {
		np_hdr_drops++;
		return;
	}
	pv_fwd_client(wsi, v, NP_VCAP, host, sizeof host);
	hdr_put(&px->xhdr, &px->xhdr_len, "x-forwarded-for:", v);
	if (host[0])
		hdr_put(&px->xhdr, &px->xhdr_len, "x-forwarded-host:", host);
	for (size_t i = 0; i < preview_fwd_ntokens; i++)
		if (lws_hdr_copy(wsi, v, NP_VCAP, preview_fwd_tokens[i]) > 0)
			hdr_put(&px->xhdr, &px->xhdr_len,
				(const char *)lws_token_to_string(preview_fwd_tokens[i]), v);
	free(v);
	pv_fwd_request_custom(wsi, xhdr_put, px);
}

/* The preview server's response headers lws parsed: every known one but the
 * framing (this hop's own), and every custom one but the hop-by-hop ones. */

static void preview_response_headers(struct nproxy *px, struct lws *wsi)
{
	static const char *const skip[] = {"content-length:",
					   "transfer-encoding:",
					   "connection:",
					   "keep-alive:",
					   "upgrade:",
					   "proxy-connection:",
					   "te:",
					   "trailer:",
					   "host:"};
	for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
		const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)t);
		size_t nl = name ? strlen(name) : 0;
		if (!nl || name[0] == ':' || name[nl - 1] != ':' || strchr(name, ' '))
			continue; /* methods, the status line, HTTP/2 pseudo-headers */
		int sk = 0;
		for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
			sk |= !strcmp(name, skip[i]);
		if (!sk)
			hdr_put_token(&px->rhdr, &px->rhdr_len, wsi, (enum lws_token_indexes)t);
	}
	pv_fwd_response_custom(wsi, rhdr_put, px);
}

/* The pairs of buf as header lines.  fit: a pair that does not fit in
 * what is left is dropped (counted), not an error (a client handshake's
 * room: lws's pt_serv_buf_size, 4 KiB with the request line). */
static int add_pairs(struct lws *wsi, const char *buf, size_t len, unsigned char **p,
		     unsigned char *end, int fit)
{
	for (size_t o = 0; o < len;) {
		const char *name = buf + o, *v = name + strlen(name) + 1;
		size_t need = strlen(name) + strlen(v) + 8;
		o = (size_t)(v - buf) + strlen(v) + 1;
		if (fit && (end - *p < 0 || (size_t)(end - *p) < need)) {
			np_hdr_drops++;
			continue;
		}
		if (np_add_hdr(wsi, name, v, p, end))
			return -1;
	}
	return 0;
}

int nproxy_http_begin(struct cortexd *d, struct lws *wsi, struct http_conn *h, const char *url)
{
	struct nproxy *px = np_new(d, wsi, url, 0);
	if (!px) {
		api_error(&h->resp, 500, "internal", "out of memory");
		return -1;
	}
	np_http++;
	snprintf(px->method, sizeof px->method, "%s", h->method);
	snprintf(px->path, sizeof px->path, "%s%s%s", h->path, h->query[0] ? "?" : "", h->query);
	snprintf(px->token, sizeof px->token, "%s", h->token);
	snprintf(px->range, sizeof px->range, "%s", h->range);
	snprintf(px->inm, sizeof px->inm, "%s", h->inm);
	if (preview_is_route(h->path)) {
		px->preview = 1;
		np_preview_request_headers(px, wsi);
	}
	px->body = h->body;
	px->body_len = h->body_len;
	if (h->pv_stream) {
		px->stream = 1;
		px->body_len = h->pv_stream;
	}
	h->body = NULL;
	h->body_len = 0;
	px->slot = &h->px;
	h->px = px;
	np_connect(px);
	return 0;
}

int np_add_hdr(struct lws *wsi, const char *name, const char *v, unsigned char **p,
	       unsigned char *end)
{
	if (!v || !v[0])
		return 0;
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
					   (const unsigned char *)v, (int)strlen(v), p, end);
}

static int write_head(struct nproxy *px)
{
	unsigned char buf[LWS_PRE + NP_HDRCAP + 2048];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	struct lws *wsi = px->down;
	int nobody = px->status == 204 || px->status == 304 || px->status < 200;
	int head = !strcmp(px->method, "HEAD"); /* the owner's length, no body */
	char num[24];
	snprintf(num, sizeof num, "%lld", px->clen);
	if (lws_add_http_header_status(wsi, (unsigned)px->status, &p, end))
		return -1;
	if (px->preview) {
		if (add_pairs(wsi, px->rhdr, px->rhdr_len, &p, end, 0))
			return -1;
	} else if (np_add_hdr(wsi, "content-type:", px->ctype, &p, end) ||
		   np_add_hdr(wsi, "content-range:", px->crange, &p, end) ||
		   np_add_hdr(wsi, "accept-ranges:", px->accept_ranges, &p, end) ||
		   np_add_hdr(wsi, "etag:", px->etag, &p, end) ||
		   np_add_hdr(wsi, "location:", px->loc, &p, end) ||
		   np_add_hdr(wsi, "retry-after:", px->retry, &p, end))
		return -1;
	if (head && !nobody) {
		if (px->clen >= 0 && np_add_hdr(wsi, "content-length:", num, &p, end))
			return -1;
	} else if (!nobody && px->clen >= 0) {
		if (np_add_hdr(wsi, "content-length:", num, &p, end))
			return -1;
	} else if (!nobody) {
		px->chunk_out = 1;
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
						 (const unsigned char *)"chunked", 7, &p, end))
			return -1;
	} else if (np_add_hdr(wsi, "content-length:", "0", &p, end)) {
		return -1;
	}
	return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

/* The head piece of downq, chunk-framed when chunk_out (data has headroom). */
static int write_piece(struct nproxy *px, struct np_piece *pc)
{
	unsigned char *data = np_piece_data(pc), *start = data;
	size_t len = pc->len;
	if (px->chunk_out) {
		char hdr[NP_HEADROOM];
		int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
		start = data - hl;
		memcpy(start, hdr, (size_t)hl);
		memcpy(data + len, "\r\n", 2);
		len += (size_t)hl + 2;
	}
	return lws_write(px->down, start, len, LWS_WRITE_HTTP) < (int)len ? -1 : 0;
}

enum nproxy_write nproxy_http_writeable(struct nproxy *px, struct api_resp *resp)
{
	static const char *const retry_hdr[] = {"retry-after:", "1", NULL};
	if (!px->head_out) {
		if (!px->head_in && (px->fail_code || px->up_gone)) {
			if (!px->fail_code) {
				np_cut++;
				np_fail(
				    px,
				    "the session's node closed the connection without a response");
			}
			api_error(resp, 503, px->fail_code, "%s", px->fail_msg);
			resp->headers = retry_hdr;
			return NPROXY_REPLY;
		}
		if (!px->head_in)
			return NPROXY_MORE;
		if (write_head(px) < 0)
			return NPROXY_CLOSE;
		px->head_out = 1;
		lws_callback_on_writable(px->down);
		return NPROXY_MORE;
	}
	struct np_piece *pc = px->downq.head;
	if (pc) {
		if (write_piece(px, pc) < 0)
			return NPROXY_CLOSE;
		np_bytes_down += pc->len;
		np_q_pop(&px->downq);
		if (px->up_paused && px->up && px->downq.bytes <= NP_QCAP / 2) {
			px->up_paused = 0;
			lws_rx_flow_control(px->up, 1);
		}
		lws_callback_on_writable(px->down);
		return NPROXY_MORE;
	}
	if (px->up_done) {
		if (px->chunk_out) {
			unsigned char buf[LWS_PRE + 8];
			memcpy(buf + LWS_PRE, "0\r\n\r\n", 5);
			if (lws_write(px->down, buf + LWS_PRE, 5, LWS_WRITE_HTTP_FINAL) < 5)
				return NPROXY_CLOSE;
		}
		/* answered before the client's body was all in: that connection ends */
		return px->stream && px->body_in < px->body_len ? NPROXY_CLOSE : NPROXY_DONE;
	}
	if (px->up_gone) { /* cut short by the owner: the client sees it cut short */
		np_cut++;
		return NPROXY_CLOSE;
	}
	return NPROXY_MORE;
}

static void copy_hdr(struct lws *wsi, char *out, int cap, enum lws_token_indexes t)
{
	if (lws_hdr_copy(wsi, out, cap, t) < 0)
		out[0] = '\0';
}

/* The owner's response head. */
static void up_head(struct nproxy *px, struct lws *wsi)
{
	px->status = (int)lws_http_client_http_response(wsi);
	copy_hdr(wsi, px->ctype, sizeof px->ctype, WSI_TOKEN_HTTP_CONTENT_TYPE);
	copy_hdr(wsi, px->crange, sizeof px->crange, WSI_TOKEN_HTTP_CONTENT_RANGE);
	copy_hdr(wsi, px->etag, sizeof px->etag, WSI_TOKEN_HTTP_ETAG);
	copy_hdr(wsi, px->loc, sizeof px->loc, WSI_TOKEN_HTTP_LOCATION);
	copy_hdr(wsi, px->retry, sizeof px->retry, WSI_TOKEN_HTTP_RETRY_AFTER);
	copy_hdr(wsi, px->accept_ranges, sizeof px->accept_ranges, WSI_TOKEN_HTTP_ACCEPT_RANGES);
	char cl[32] = "";
	copy_hdr(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
	px->clen = cl[0] && strspn(cl, "0123456789") == strlen(cl) ? atoll(cl) : -1;
	if (px->preview)
		preview_response_headers(px, wsi);
	px->head_in = 1;
	lws_sul_cancel(&px->sul);
}

/* Request headers to the owner (APPEND_HANDSHAKE_HEADER): the caller's
 * token, the hop mark, and for HTTP the range, ETag and body length. */
static int up_headers(struct nproxy *px, struct lws *wsi, unsigned char **p, unsigned char *end)
{
	char auth[320];
	snprintf(auth, sizeof auth, "Bearer %s", px->token);
	if (px->preview) { /* as the client sent them: the token in the query or Authorization */
		char num[24];
		snprintf(num, sizeof num, "%zu", px->body_len);
		if (np_add_hdr(wsi, "x-cortex-hop:", "1", p, end) ||
		    ((px->body_len || !strcmp(px->method, "POST") || !strcmp(px->method, "PUT")) &&
		     np_add_hdr(wsi, "content-length:", num, p, end)) ||
		    add_pairs(wsi, px->xhdr, px->xhdr_len, p, end, 1))
			return -1;
		if (px->body_len) {
			lws_client_http_body_pending(wsi, 1);
			lws_callback_on_writable(wsi);
		}
		return 0;
	}
	if ((px->token[0] && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
							  (const unsigned char *)auth,
							  (int)strlen(auth), p, end)) ||
	    np_add_hdr(wsi, "x-cortex-hop:", "1", p, end))
		return -1;
	if (px->ws)
		return 0;
	char num[24];
	snprintf(num, sizeof num, "%zu", px->body_len);
	if (np_add_hdr(wsi, "range:", px->range, p, end) ||
	    np_add_hdr(wsi, "if-none-match:", px->inm, p, end))
		return -1;
	if (!strcmp(px->method, "POST") || !strcmp(px->method, "PUT")) {
		if (np_add_hdr(wsi, "content-length:", num, p, end) ||
		    (px->body_len && np_add_hdr(wsi, "content-type:", "application/json", p, end)))
			return -1;
		if (px->body_len) {
			lws_client_http_body_pending(wsi, 1);
			lws_callback_on_writable(wsi);
		}
	}
	return 0;
}

int nproxy_http_body(struct nproxy *px, const void *in, size_t len)
{
	if (!len || !in)
		return 0;
	if (px->body_in + len > px->body_len)
		return -1; /* more than its Content-Length */
	px->body_in += len;
	if (np_q_put(&px->upq, in, len, 0) < 0)
		return -1;
	if (px->upq.bytes > NP_QCAP && !px->down_paused && px->down) {
		px->down_paused = 1;
		np_pauses++;
		lws_rx_flow_control(px->down, 0);
	}
	if (px->up)
		lws_callback_on_writable(px->up);
	return 0;
}

/* One piece of a streamed body to the owner, as the client sent it. */
static int up_stream(struct nproxy *px, struct lws *wsi)
{
	struct np_piece *pc = px->upq.head;
	if (!pc)
		return 0; /* more comes: nproxy_http_body asks again */
	int last = px->body_off + pc->len >= px->body_len;
	if (lws_write(wsi, np_piece_data(pc), pc->len,
		      last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)pc->len)
		return -1;
	px->body_off += pc->len;
	np_bytes_up += pc->len;
	np_q_pop(&px->upq);
	if (px->down_paused && px->down && px->upq.bytes <= NP_QCAP / 2) {
		px->down_paused = 0;
		lws_rx_flow_control(px->down, 1);
	}
	if (last)
		lws_client_http_body_pending(wsi, 0);
	else if (px->upq.head)
		lws_callback_on_writable(wsi);
	return 0;
}

/* One piece of the request body to the owner. */
static int up_body(struct nproxy *px, struct lws *wsi)
{
	size_t n = px->body_len - px->body_off;
	int last = n <= NP_PIECE;
	if (!last)
		n = NP_PIECE;
	unsigned char *buf = malloc(LWS_PRE + n);
	if (!buf)
		return -1;
	memcpy(buf + LWS_PRE, px->body + px->body_off, n);
	int w = lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
	free(buf);
	if (w < (int)n)
		return -1;
	px->body_off += n;
	np_bytes_up += n;
	if (last)
		lws_client_http_body_pending(wsi, 0);
	else
		lws_callback_on_writable(wsi);
	return 0;
}

/* A piece from the owner for the client; the owner pauses past the cap. */
int np_down_put(struct nproxy *px, struct lws *up, const void *in, size_t len, int flags)
{
	if (np_q_put(&px->downq, in, len, flags) < 0)
		return -1;
	if (px->downq.bytes > NP_QCAP && !px->up_paused) {
		px->up_paused = 1;
		lws_rx_flow_control(up, 0);
	}
	if (px->down)
		lws_callback_on_writable(px->down);
	return 0;
}

/* ---- the owner's side ---- */

int nproxy_owner_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			  size_t len)
{
	(void)user;
	struct nproxy *px = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		if (!px)
			return -1;
		/* connected: an HTTP response may take as long as its route (a
		 * one-shot exec); a WebSocket's handshake is still timed */
		if (!px->ws)
			lws_sul_cancel(&px->sul);
		return up_headers(px, wsi, (unsigned char **)in, *(unsigned char **)in + len);
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		if (!px)
			return 0;
		int st = (int)lws_http_client_http_response(wsi);
		px->up = NULL;
		px->up_gone = 1;
		if (px->ws && st >= 400 &&
		    st < 600) { /* the owner refused the upgrade: its status */
			np_refused++;
			px->fail_code = "owner_refused";
			snprintf(px->fail_msg, sizeof px->fail_msg,
				 "the session's node answered %d", st);
			px->close_down = 4000 + st;
		} else {
			np_fail(px, "cannot reach the session's node %s:%d (%s)", px->host,
				px->port, in ? (const char *)in : "connection error");
		}
		if (px->down)
			lws_callback_on_writable(px->down);
		else
			np_maybe_free(px);
		return 0;
	}
	/* HTTP */
	case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
		if (!px)
			return -1;
		if (px->stream)
			return up_stream(px, wsi);
		return px->body_off < px->body_len ? up_body(px, wsi) : 0;
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		if (!px)
			return -1;
		up_head(px, wsi);
		if (px->down)
			lws_callback_on_writable(px->down);
		return 0;
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
		char buf[LWS_PRE + NP_PIECE];
		char *p = buf + LWS_PRE;
		int n = NP_PIECE;
		return lws_http_client_read(wsi, &p, &n) < 0 ? -1 : 0;
	}
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
		if (!px)
			return -1;
		return len ? np_down_put(px, wsi, in, len, 0) : 0;
	case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
		if (px) {
			px->up_done = 1;
			if (px->down)
				lws_callback_on_writable(px->down);
		}
		return 0;
	case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (!px)
			return 0;
		lws_set_opaque_user_data(wsi, NULL);
		px->up = NULL;
		px->up_gone = 1;
		if (px->down)
			lws_callback_on_writable(px->down);
		else
			np_maybe_free(px);
		return 0;
	default: /* the WebSocket events */
		return np_ws_owner_event(px, wsi, reason, in, len);
	}
}

/* ---- /metrics ---- */

static void np_metrics(FILE *f, void *arg)
{
	(void)arg;
	metrics_counter(f, "cortex_owner_proxy_http_total",
			"HTTP requests for another node's session proxied to it", np_http);
	metrics_counter(f, "cortex_owner_proxy_ws_total",
			"WebSockets for another node's session proxied to it", np_ws);
	metrics_counter(f, "cortex_owner_proxy_unreachable_total",
			"Proxied requests whose node could not be reached (503 owner_unreachable)",
			np_unreachable);
	metrics_counter(
	    f, "cortex_owner_proxy_timeouts_total",
	    "Proxied requests whose node did not answer within cluster.proxy_timeout_ms",
	    np_timeouts);
	metrics_counter(f, "cortex_owner_proxy_refused_total",
			"Proxied WebSocket upgrades the owner refused (close 4000 + its status)",
			np_refused);
	metrics_counter(f, "cortex_owner_proxy_cut_total", "Proxied responses the owner cut short",
			np_cut);
	metrics_counter(f, "cortex_owner_proxy_client_pauses_total",
			"Times a client's reading paused: its queue to the owner was full",
			np_pauses);
	metrics_counter(
	    f, "cortex_owner_proxy_loops_total",
	    "Requests forwarded by another node for a session this node does not hold (508)",
	    np_loops);
	metrics_counter(f, "cortex_owner_proxy_bytes_to_owner_total", "Bytes proxied to owners",
			np_bytes_up);
	metrics_counter(f, "cortex_owner_proxy_bytes_from_owner_total", "Bytes proxied from owners",
			np_bytes_down);
	metrics_counter(
	    f, "cortex_owner_proxy_headers_dropped_total",
	    "Preview headers not passed: past their cap (16 KiB each way) or the room of "
	    "the request to the owner",
	    np_hdr_drops);
	metrics_gauge(f, "cortex_owner_proxy_open", "Proxied requests and WebSockets open now",
		      np_open);
}

void nproxy_init(void)
{
	metrics_register("owner_proxy", np_metrics, NULL);
}
