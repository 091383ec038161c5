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
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "owner.h"
#include "session.h"

#define NP_QCAP	    CX_CAP_PREVIEW_BUF /* bytes queued per direction before its reader pauses */
#define NP_PIECE    16384	       /* bytes per read of the owner's HTTP body */
#define NP_HEADROOM 16		       /* room for a chunk header before a piece's data */
#define NP_TAIL	    8		       /* "\r\n" and a last "0\r\n\r\n" after it */

/* ---- counters (service thread) ---- */

static uint64_t np_http, np_ws, np_unreachable, np_timeouts, np_refused, np_loops, np_cut;
static uint64_t np_bytes_up, np_bytes_down;
static unsigned np_open;

/* ---- queued pieces: one copy of what was read, written whole ---- */

struct np_piece {
	struct np_piece *next;
	size_t len;
	int flags; /* lws_write flags of a WebSocket fragment */
	unsigned char buf[];
};

struct np_queue {
	struct np_piece *head, *tail;
	size_t bytes;
};

static unsigned char *piece_data(struct np_piece *p)
{
	return p->buf + LWS_PRE + NP_HEADROOM;
}

static int q_put(struct np_queue *q, const void *data, size_t len, int flags)
{
	struct np_piece *p = malloc(sizeof *p + LWS_PRE + NP_HEADROOM + len + NP_TAIL);
	if (!p)
		return -1;
	p->next = NULL;
	p->len = len;
	p->flags = flags;
	if (len)
		memcpy(piece_data(p), data, len);
	if (q->tail)
		q->tail->next = p;
	else
		q->head = p;
	q->tail = p;
	q->bytes += len;
	return 0;
}

static void q_pop(struct np_queue *q)
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
		q_pop(q);
}

/* ---- the proxy ---- */

struct nproxy {
	int ws;
	struct cortexd *d;	/* not owned */
	struct lws *down;	/* the client's side; NULL once gone */
	struct lws *up;		/* the connection to the owner; NULL before and after */
	struct nproxy **slot;	/* the client connection's pointer to this */
	lws_sorted_usec_list_t sul; /* the owner's answer is due */
	char host[256];
	int port;
	char path[CX_CAP_HTTP_URI + 64];
	char token[300];
	/* HTTP request */
	char method[8];
	char *body; /* owned */
	size_t body_len, body_off;
	char range[128], inm[256];
	/* HTTP response */
	int status, head_in, head_out, chunk_out, up_done, up_gone;
	long long clen; /* -1: none (chunked or to the close) */
	char ctype[128], crange[128], etag[300], loc[700], retry[16], accept_ranges[16];
	const char *fail_code; /* "owner_unreachable": nothing came from the owner */
	char fail_msg[200];
	struct np_queue downq, upq; /* to the client, to the owner */
	int up_paused;		    /* the owner's reading is paused (downq full) */
	int down_paused;	    /* the client's reading is paused (upq full) */
	/* WebSocket */
	int ws_open;		/* the owner accepted the upgrade */
	int close_down, close_up; /* a close code to send that way once its queue drained */
	unsigned char down_reason[124], up_reason[124];
	size_t down_rlen, up_rlen;
};

static void np_free(struct nproxy *px)
{
	lws_sul_cancel(&px->sul);
	q_free(&px->downq);
	q_free(&px->upq);
	free(px->body);
	np_open--;
	free(px);
}

static void np_maybe_free(struct nproxy *px)
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
	log_warn("proxy to %s:%d%.100s: %s (%u more since the last line)", px->host, px->port, px->path,
		 px->fail_msg, quiet);
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
	np_fail(px, "the session's node did not %s within %d ms", px->ws ? "accept the WebSocket" : "accept the connection",
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

static struct nproxy *np_new(struct cortexd *d, struct lws *down, const char *url, int ws)
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
		np_fail(px, "the session's node has an advertised URL this node cannot use: %.100s", url);
		return px;
	}
	return px;
}

/* Connect to the owner; a failure is left in px (the client is told). */
static void np_connect(struct nproxy *px)
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
	i.origin = hosthdr;
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
	return owner_cache_lookup(sid, node, sizeof node, url, cap) == 1 && strcmp(node, owner_node_id());
}

void nproxy_count_loop(void)
{
	np_loops++;
}

/* ---- HTTP ---- */

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
	px->body = h->body;
	px->body_len = h->body_len;
	h->body = NULL;
	h->body_len = 0;
	px->slot = &h->px;
	h->px = px;
	np_connect(px);
	return 0;
}

static int add_hdr(struct lws *wsi, const char *name, const char *v, unsigned char **p, unsigned char *end)
{
	if (!v || !v[0])
		return 0;
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v,
					   (int)strlen(v), p, end);
}

static int write_head(struct nproxy *px)
{
	unsigned char buf[LWS_PRE + 2048];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	struct lws *wsi = px->down;
	int nobody = px->status == 204 || px->status == 304 || px->status < 200;
	char num[24];
	snprintf(num, sizeof num, "%lld", px->clen);
	if (lws_add_http_header_status(wsi, (unsigned)px->status, &p, end) ||
	    add_hdr(wsi, "content-type:", px->ctype, &p, end) ||
	    add_hdr(wsi, "content-range:", px->crange, &p, end) ||
	    add_hdr(wsi, "accept-ranges:", px->accept_ranges, &p, end) ||
	    add_hdr(wsi, "etag:", px->etag, &p, end) || add_hdr(wsi, "location:", px->loc, &p, end) ||
	    add_hdr(wsi, "retry-after:", px->retry, &p, end))
		return -1;
	if (!nobody && px->clen >= 0) {
		if (add_hdr(wsi, "content-length:", num, &p, end))
			return -1;
	} else if (!nobody) {
		px->chunk_out = 1;
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
						 (const unsigned char *)"chunked", 7, &p, end))
			return -1;
	} else if (add_hdr(wsi, "content-length:", "0", &p, end)) {
		return -1;
	}
	return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

/* The head piece of downq, chunk-framed when chunk_out (data has headroom). */
static int write_piece(struct nproxy *px, struct np_piece *pc)
{
	unsigned char *data = piece_data(pc), *start = data;
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
				np_fail(px, "the session's node closed the connection without a response");
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
		q_pop(&px->downq);
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
		return NPROXY_DONE;
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
	px->head_in = 1;
	lws_sul_cancel(&px->sul);
}

/* Request headers to the owner (APPEND_HANDSHAKE_HEADER): the caller's
 * token, the hop mark, and for HTTP the range, ETag and body length. */
static int up_headers(struct nproxy *px, struct lws *wsi, unsigned char **p, unsigned char *end)
{
	char auth[320];
	snprintf(auth, sizeof auth, "Bearer %s", px->token);
	if ((px->token[0] && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
							  (const unsigned char *)auth, (int)strlen(auth), p, end)) ||
	    add_hdr(wsi, "x-cortex-hop:", "1", p, end))
		return -1;
	if (px->ws)
		return 0;
	char num[24];
	snprintf(num, sizeof num, "%zu", px->body_len);
	if (add_hdr(wsi, "range:", px->range, p, end) || add_hdr(wsi, "if-none-match:", px->inm, p, end))
		return -1;
	if (!strcmp(px->method, "POST") || !strcmp(px->method, "PUT")) {
		if (add_hdr(wsi, "content-length:", num, p, end) ||
		    (px->body_len && add_hdr(wsi, "content-type:", "application/json", p, end)))
			return -1;
		if (px->body_len) {
			lws_client_http_body_pending(wsi, 1);
			lws_callback_on_writable(wsi);
		}
	}
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
static int down_put(struct nproxy *px, struct lws *up, const void *in, size_t len, int flags)
{
	if (q_put(&px->downq, in, len, flags) < 0)
		return -1;
	if (px->downq.bytes > NP_QCAP && !px->up_paused) {
		px->up_paused = 1;
		lws_rx_flow_control(up, 0);
	}
	if (px->down)
		lws_callback_on_writable(px->down);
	return 0;
}

/* ---- WebSocket ---- */

static int ws_close_with(struct lws *wsi, int code, const unsigned char *reason, size_t rlen)
{
	lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, rlen);
	return -1;
}

int nproxy_ws_confirm(struct cortexd *d, struct lws *wsi)
{
	char token[300], user[80], hop[8];
	ws_token(wsi, token, sizeof token, NULL);
	if (api_auth(d, token[0] ? token : NULL, user, sizeof user) != WHO_USER)
		return ws_reject_upgrade(wsi, 401, "unauthorized", "missing or invalid token");
	if (lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) > 0) {
		np_loops++;
		return ws_reject_upgrade(wsi, 508, "proxy_loop",
					 "forwarded by another node, and this node does not hold the session either");
	}
	return 0;
}

/* The client's frames and close code, to the owner. */
static int ws_up_writeable(struct nproxy *px, struct lws *wsi)
{
	struct np_piece *pc = px->upq.head;
	if (pc) {
		if (lws_write(wsi, piece_data(pc), pc->len, (enum lws_write_protocol)pc->flags) < (int)pc->len)
			return -1;
		np_bytes_up += pc->len;
		q_pop(&px->upq);
		if (px->down_paused && px->down && px->upq.bytes <= NP_QCAP / 2) {
			px->down_paused = 0;
			lws_rx_flow_control(px->down, 1);
		}
		if (px->upq.head || px->close_up)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (px->close_up)
		return ws_close_with(wsi, px->close_up, px->up_reason, px->up_rlen);
	return 0;
}

/* The owner's frames and close code, to the client. */
static int ws_down_writeable(struct nproxy *px, struct lws *wsi)
{
	if (!px->ws_open && px->fail_code) {
		char frame[LWS_PRE + 400];
		int n = snprintf(frame + LWS_PRE, 400, "{\"type\":\"cortex.error\",\"code\":\"%s\",\"message\":\"%s\"}",
				 px->fail_code, px->fail_msg);
		if (n > 0 && n < 400)
			lws_write(wsi, (unsigned char *)frame + LWS_PRE, (size_t)n, LWS_WRITE_TEXT);
		int code = px->close_down ? px->close_down : 1013 /* try again later */;
		return ws_close_with(wsi, code, (const unsigned char *)"owner unreachable", 17);
	}
	struct np_piece *pc = px->downq.head;
	if (pc) {
		if (lws_write(wsi, piece_data(pc), pc->len, (enum lws_write_protocol)pc->flags) < (int)pc->len)
			return -1;
		np_bytes_down += pc->len;
		q_pop(&px->downq);
		if (px->up_paused && px->up && px->downq.bytes <= NP_QCAP / 2) {
			px->up_paused = 0;
			lws_rx_flow_control(px->up, 1);
		}
		if (px->downq.head || px->up_gone)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (px->up_gone) {
		if (px->close_down)
			return ws_close_with(wsi, px->close_down, px->down_reason, px->down_rlen);
		return ws_close_with(wsi, LWS_CLOSE_STATUS_GOINGAWAY,
				     (const unsigned char *)"the session's node went away", 28);
	}
	return 0;
}

/* A close code as received (2 bytes + reason), kept for the other side;
 * codes that must not be sent become 1000. */
static int close_code_of(const unsigned char *in, size_t len, unsigned char *reason, size_t *rlen)
{
	int code = len >= 2 ? in[0] << 8 | in[1] : 1000;
	if (code < 1000 || code == 1005 || code == 1006 || code == 1015 || code >= 5000)
		code = 1000;
	*rlen = len > 2 ? len - 2 : 0;
	if (*rlen > 123)
		*rlen = 123;
	if (*rlen)
		memcpy(reason, in + 2, *rlen);
	return code;
}

int nproxy_ws_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason,
		       struct nproxy **slot, const char *url, void *in, size_t len)
{
	struct nproxy *px = *slot;
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: {
		char uri[CX_CAP_HTTP_URI], args[CX_CAP_HTTP_URI] = "";
		if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
			return -1;
		if (!(px = np_new(d, wsi, url, 1)))
			return -1;
		np_ws++;
		for (int i = 0; i < 16; i++) { /* the query as sent (a ?token=, ?after=) */
			char v[1024];
			int n = lws_hdr_copy_fragment(wsi, v, sizeof v, WSI_TOKEN_HTTP_URI_ARGS, i);
			if (n <= 0)
				break;
			size_t al = strlen(args);
			snprintf(args + al, sizeof args - al, "%c%s", al ? '&' : '?', v);
		}
		snprintf(px->path, sizeof px->path, "%s%s", uri, args);
		ws_token(wsi, px->token, sizeof px->token, NULL);
		*slot = px;
		px->slot = slot;
		np_connect(px);
		if (px->fail_code)
			lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE: {
		if (!px)
			return -1;
		int flags = lws_write_ws_flags(lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
					       lws_is_first_fragment(wsi), lws_is_final_fragment(wsi));
		if (q_put(&px->upq, in, len, flags) < 0)
			return -1;
		if (px->upq.bytes > NP_QCAP && !px->down_paused) {
			px->down_paused = 1;
			lws_rx_flow_control(wsi, 0);
		}
		if (px->up && px->ws_open)
			lws_callback_on_writable(px->up);
		return 0;
	}
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (px)
			px->close_up = close_code_of(in, len, px->up_reason, &px->up_rlen);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return px ? ws_down_writeable(px, wsi) : -1;
	case LWS_CALLBACK_CLOSED:
		nproxy_release(px);
		return 0;
	default:
		return 0;
	}
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
		if (px->ws && st >= 400 && st < 600) { /* the owner refused the upgrade: its status */
			np_refused++;
			px->fail_code = "owner_refused";
			snprintf(px->fail_msg, sizeof px->fail_msg, "the session's node answered %d", st);
			px->close_down = 4000 + st;
		} else {
			np_fail(px, "cannot reach the session's node %s:%d (%s)", px->host, px->port,
				in ? (const char *)in : "connection error");
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
		return len ? down_put(px, wsi, in, len, 0) : 0;
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
	/* WebSocket */
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (!px)
			return -1;
		px->ws_open = 1;
		lws_sul_cancel(&px->sul);
		if (!px->down)
			px->close_up = px->close_up ? px->close_up : LWS_CLOSE_STATUS_GOINGAWAY;
		if (px->upq.head || px->close_up)
			lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (!px)
			return -1;
		return down_put(px, wsi, in, len,
				lws_write_ws_flags(lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
						   lws_is_first_fragment(wsi), lws_is_final_fragment(wsi)));
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!px)
			return -1;
		return ws_up_writeable(px, wsi);
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (px)
			px->close_down = close_code_of(in, len, px->down_reason, &px->down_rlen);
		return 0;
	default:
		return 0;
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
	metrics_counter(f, "cortex_owner_proxy_timeouts_total",
			"Proxied requests whose node did not answer within cluster.proxy_timeout_ms",
			np_timeouts);
	metrics_counter(f, "cortex_owner_proxy_refused_total",
			"Proxied WebSocket upgrades the owner refused (close 4000 + its status)", np_refused);
	metrics_counter(f, "cortex_owner_proxy_cut_total",
			"Proxied responses the owner cut short", np_cut);
	metrics_counter(f, "cortex_owner_proxy_loops_total",
			"Requests forwarded by another node for a session this node does not hold (508)",
			np_loops);
	metrics_counter(f, "cortex_owner_proxy_bytes_to_owner_total", "Bytes proxied to owners",
			np_bytes_up);
	metrics_counter(f, "cortex_owner_proxy_bytes_from_owner_total", "Bytes proxied from owners",
			np_bytes_down);
	metrics_gauge(f, "cortex_owner_proxy_open", "Proxied requests and WebSockets open now", np_open);
}

void nproxy_init(void)
{
	metrics_register("owner_proxy", np_metrics, NULL);
}
