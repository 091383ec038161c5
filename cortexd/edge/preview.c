/* preview.c — preview ports (see preview.h and docs/network.md).
 *
 *   browser ──HTTP/WS──▶ cortexd "cortex" protocol (http.c / server.c route here)
 *                          │  up: request head + body, or masked WS frames
 *                          ▼
 *                        raw socket "cortex-preview", made inside the sandbox's
 *                        network namespace on a worker, connected to 127.0.0.1:port
 *                          │  down: response head + body, or WS frames
 *                          ▼
 *                        parsed here, written to the browser one lws_write per
 *                        WRITEABLE (HTTP re-chunked unless Content-Length)
 *
 * Bounds: CX_CAP_PREVIEW_BUF per direction (past it that side's reading
 * pauses: lws_rx_flow_control), CX_CAP_PREVIEW_HEAD for a response head,
 * CX_CAP_PREVIEW_CONNS open previews per session (429 past it).
 *
 * A preview lives while the browser's side (wsi), the inside socket (in) or
 * the connect job refers to it; the last one to let go frees it. */
#include "preview.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "caps.h"
#include "http.h"
#include "lifecycle.h"
#include "log.h"
#include "pv_fwd.h"
#include "refuse.h"
#include "work.h"

#define PV_BUF	      CX_CAP_PREVIEW_BUF
#define PV_BUF_HARD   (4 * CX_CAP_PREVIEW_BUF) /* what a side may still deliver after its pause */
#define PV_HEAD	      CX_CAP_PREVIEW_HEAD
#define PV_PIECE      16384 /* bytes per lws_write */
#define PV_CONNECT_MS 3000

/* ---- bounded byte buffers ---- */

struct pv_buf {
	char *p;
	size_t off, len, cap; /* unread bytes are p[off, len) */
};

static size_t buf_avail(const struct pv_buf *b)
{
	return b->len - b->off;
}
static const char *buf_data(const struct pv_buf *b)
{
	return b->p + b->off;
}

static void buf_take(struct pv_buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

/* 0, or -1 when the buffer would pass PV_BUF_HARD (or no memory). */
static int buf_put(struct pv_buf *b, const void *data, size_t n)
{
	if (b->len + n > b->cap && b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 16384;
		while (nc < b->len + n)
			nc *= 2;
		if (nc > PV_BUF_HARD)
			return -1;
		char *np = realloc(b->p, nc);
		if (!np)
			return -1;
		b->p = np;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* ---- the preview ---- */

enum pv_kind { PV_HTTP, PV_WS };
enum pv_body { BODY_NONE, BODY_LEN, BODY_CHUNKED, BODY_CLOSE };
enum pv_ck { CK_SIZE, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE };

struct pv_job {
	int netns_fd; /* owned; closed by run */
	uint16_t port;
	int fd; /* the connected socket, or -1 */
	cx_err err;
	struct preview *pv; /* NULL once the preview let go */
};

struct preview {
	enum pv_kind kind;
	struct cortexd *d;     /* not owned */
	struct session *s;     /* a reference (session_unref when freed) */
	struct lws *wsi;       /* the browser's side; NULL once gone */
	struct preview **slot; /* the browser connection's pointer to this */
	struct lws *in;	       /* the inside socket; NULL before adoption and after close */
	struct pv_job *job;    /* the connect on a worker */
	uint16_t port;
	int is_head;		/* a HEAD request: no body comes back */
	struct pv_buf up, down; /* to the inside, from the inside */
	int up_paused;		/* the browser's reading is paused (up is full) */
	int down_paused;	/* the inside's reading is paused (down is full) */
	int in_eof;		/* the inside closed */
	cx_err fail;		/* the connect failed (code != 0) */
	uint64_t body_left;	/* request body bytes still to come from the browser */
	int closing;		/* a close frame is queued to the inside: close after it */
	uint64_t touch_us;
	/* HTTP response */
	int head_done, headers_sent, status, chunk_out;
	char *rhead; /* the response head, NUL-terminated (owned) */
	enum pv_body body;
	uint64_t remain; /* BODY_LEN: bytes left; BODY_CHUNKED: of this chunk */
	enum pv_ck ck;
	/* WebSocket */
	int ws_open;	 /* the inside answered 101 */
	int ws_up_msg;	 /* a message to the inside is open: continuations follow */
	int ws_down_msg; /* a message to the browser is open */
	int ws_down_op;	 /* its opcode (1 text, 2 binary) */
	int close_code;	 /* the browser's close code, for the inside */
	int fr_have, fr_op, fr_fin, fr_masked;
	uint64_t fr_left, fr_pos;
	unsigned char fr_mask[4];
};

static void pv_maybe_free(struct preview *pv)
{
	if (pv->wsi || pv->in || pv->job)
		return;
	pv->s->previews--;
	session_unref(pv->s);
	free(pv->up.p);
	free(pv->down.p);
	free(pv->rhead);
	free(pv);
}

/* Preview traffic is activity: the session does not idle to sleep under it. */
static void pv_touch(struct preview *pv)
{
	uint64_t now = cx_mono_us();
	if (now - pv->touch_us < 1000000)
		return;
	pv->touch_us = now;
	lifecycle_touch(pv->s);
}

/* Bytes from the browser for the inside. */
static int pv_up_put(struct preview *pv, const void *data, size_t n)
{
	if (buf_put(&pv->up, data, n) < 0)
		return -1;
	if (buf_avail(&pv->up) >= PV_BUF && !pv->up_paused && pv->wsi) {
		lws_rx_flow_control(pv->wsi, 0);
		pv->up_paused = 1;
	}
	if (pv->in)
		lws_callback_on_writable(pv->in);
	return 0;
}

/* The browser's side consumed from down: let the inside send again. */
static void pv_down_taken(struct preview *pv)
{
	if (pv->down_paused && pv->in && buf_avail(&pv->down) < PV_BUF / 2) {
		lws_rx_flow_control(pv->in, 1);
		pv->down_paused = 0;
	}
}

/* ---- routes and authorisation ---- */

struct pv_err {
	int status;
	const char *code;
	char msg[300];
};

static int pv_fail(struct pv_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pv_fail(struct pv_err *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	e->status = status;
	e->code = code;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return -1;
}

static const char ROUTE[] = "/v1/sessions/";

/* /v1/sessions/{id}/ports[/{port}[/rest]]: the id, the port text and what follows it. */
static int parse_route(const char *path, char *id, size_t cap, const char **port, size_t *port_len,
		       const char **rest)
{
	if (strncmp(path, ROUTE, sizeof ROUTE - 1))
		return -1;
	const char *p = path + sizeof ROUTE - 1, *slash = strchr(p, '/');
	if (!slash || slash == p || (size_t)(slash - p) >= cap || strncmp(slash, "/ports", 6) ||
	    (slash[6] && slash[6] != '/'))
		return -1;
	memcpy(id, p, (size_t)(slash - p));
	id[slash - p] = '\0';
	*port = slash[6] ? slash + 7 : slash + 6;
	const char *end = strchr(*port, '/');
	*port_len = end ? (size_t)(end - *port) : strlen(*port);
	*rest = end ? end : "";
	return 0;
}

int preview_is_route(const char *path)
{
	char id[64];
	const char *port, *rest;
	size_t n;
	return parse_route(path, id, sizeof id, &port, &n, &rest) == 0;
}

/* Who asks, for which session and port: 0, or -1 with the reply in e.  The
 * checks and their order are every session route's (401, 403, 404), then
 * the port (400), the session's state (409) and the cap (429). */
static int pv_authorize(struct cortexd *d, struct lws *wsi, const char *path, struct session **out,
			uint16_t *out_port, const char **rest, int *token_in_header,
			struct pv_err *e)
{
	char id[64], token[300], user[80];
	const char *ps;
	size_t pl;
	if (parse_route(path, id, sizeof id, &ps, &pl, rest) < 0)
		return pv_fail(e, 404, "not_found", "no such route");
	ws_token(wsi, token, sizeof token, token_in_header);
	enum api_who who = api_auth(d, token[0] ? token : NULL, user, sizeof user);
	if (who == WHO_NONE)
		return pv_fail(e, 401, "unauthorized", "missing or invalid token");
	if (who != WHO_USER)
		return pv_fail(e, 403, "forbidden", "sessions belong to users; use a user token");
	struct session *s = session_find(d, id);
	if (!s || s->deleted || strcmp(s->user, user)) /* another user's: as if missing */
		return pv_fail(e, 404, "not_found", "no such session");
	long port = 0;
	for (size_t i = 0; i < pl; i++)
		port = ps[i] >= '0' && ps[i] <= '9' && port <= 65535 ? port * 10 + (ps[i] - '0')
								     : 70000;
	if (!pl || port < 1 || port > 65535)
		return pv_fail(e, 400, "bad_port",
			       "the port must be a number from 1 to 65535, not \"%.*s\"",
			       (int)(pl > 16 ? 16 : pl), ps);
	if (!s->lc.sb || s->lc.job != JOB_NONE || s->lc.state == SS_PAUSED)
		return pv_fail(
		    e, 409, "not_running",
		    "the session is %s; preview ports need it running (POST /v1/sessions/%s/wake)",
		    sess_state_name(s->lc.state), s->id);
	if (s->previews >= CX_CAP_PREVIEW_CONNS && (refuse_count(REFUSE_PREVIEW), 1))
		return pv_fail(e, 429, "too_many_previews",
			       "at most %u preview connections per session",
			       (unsigned)CX_CAP_PREVIEW_CONNS);
	*out = s;
	*out_port = (uint16_t)port;
	return 0;
}

/* ---- the request head for the inside ---- */

struct head {
	char b[PV_HEAD];
	size_t n;
	int over;
};

static void head_add(struct head *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void head_add(struct head *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = h->over ? -1 : vsnprintf(h->b + h->n, sizeof h->b - h->n, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof h->b - h->n)
		h->over = 1;
	else
		h->n += (size_t)n;
}

/* Percent-encode what lws decoded: bytes outside the URI's safe set (and '%'
 * itself), so the server inside sees what the browser sent. */
static void head_uri(struct head *h, const char *s, const char *also_safe)
{
	for (; *s && !h->over; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~!$'()*,;:@/", c) || (c && strchr(also_safe, c)))
			head_add(h, "%c", c);
		else
			head_add(h, "%%%02X", c);
	}
}

/* Request headers passed to the inside: the ones lws knows by token... */
const enum lws_token_indexes preview_fwd_tokens[] = {
    WSI_TOKEN_HTTP_ACCEPT,
    WSI_TOKEN_HTTP_ACCEPT_ENCODING,
    WSI_TOKEN_HTTP_ACCEPT_LANGUAGE,
    WSI_TOKEN_HTTP_ACCEPT_CHARSET,
    WSI_TOKEN_HTTP_CACHE_CONTROL,
    WSI_TOKEN_HTTP_PRAGMA,
    WSI_TOKEN_HTTP_COOKIE,
    WSI_TOKEN_HTTP_CONTENT_TYPE,
    WSI_TOKEN_HTTP_IF_MODIFIED_SINCE,
    WSI_TOKEN_HTTP_IF_NONE_MATCH,
    WSI_TOKEN_HTTP_IF_MATCH,
    WSI_TOKEN_HTTP_IF_RANGE,
    WSI_TOKEN_HTTP_IF_UNMODIFIED_SINCE,
    WSI_TOKEN_HTTP_RANGE,
    WSI_TOKEN_HTTP_REFERER,
    WSI_TOKEN_HTTP_USER_AGENT,
    WSI_TOKEN_ORIGIN,
    WSI_TOKEN_HTTP_DATE,
    WSI_TOKEN_HTTP_AC_REQUEST_HEADERS,
    WSI_TOKEN_HTTP_AUTHORIZATION, /* unless it carried the Cortex token */
};
/* ... and every custom one (pv_fwd.c). */
const size_t preview_fwd_ntokens = sizeof preview_fwd_tokens / sizeof preview_fwd_tokens[0];

static void head_custom(void *arg, const char *name, const char *v)
{
	head_add(arg, "%s %s\r\n", name, v);
}

static int pv_method(struct lws *wsi, const char **out)
{
	static const struct {
		enum lws_token_indexes t;
		const char *m;
	} ms[] = {{WSI_TOKEN_GET_URI, "GET"},	    {WSI_TOKEN_POST_URI, "POST"},
		  {WSI_TOKEN_PUT_URI, "PUT"},	    {WSI_TOKEN_PATCH_URI, "PATCH"},
		  {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
		  {WSI_TOKEN_HEAD_URI, "HEAD"}};
	for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
		if (lws_hdr_total_length(wsi, ms[i].t)) {
			*out = ms[i].m;
			return 0;
		}
	return -1;
}

/* The request line and headers for the inside, into pv->up. */
static int pv_request_head(struct preview *pv, struct lws *wsi, const char *method,
			   const char *rest, int token_in_header, uint64_t body_len,
			   const char *ws_key)
{
	struct head *h = malloc(sizeof *h);
	if (!h)
		return -1;
	h->n = 0;
	h->over = 0;
	char v[4200];
	head_add(h, "%s ", method);
	head_uri(h, *rest ? rest : "/", "&=+");
	/* the query, without the Cortex token */
	int first = 1;
	for (int i = 0; i < 64; i++) {
		int n = lws_hdr_copy_fragment(wsi, v, sizeof v, WSI_TOKEN_HTTP_URI_ARGS, i);
		if (n <= 0)
			break;
		if (!strncmp(v, "token=", 6))
			continue;
		head_add(h, "%c", first ? '?' : '&');
		first = 0;
		char *eq = strchr(v, '=');
		if (eq)
			*eq = '\0';
		head_uri(h, v, "");
		if (eq) {
			head_add(h, "=");
			head_uri(h, eq + 1, "");
		}
	}
	head_add(h, " HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n", (unsigned)pv->port);
	for (size_t i = 0; i < sizeof preview_fwd_tokens / sizeof preview_fwd_tokens[0]; i++) {
		enum lws_token_indexes t = preview_fwd_tokens[i];
		if (lws_hdr_total_length(wsi, t) <= 0 || lws_hdr_copy(wsi, v, sizeof v, t) < 0)
			continue;
		if (t == WSI_TOKEN_HTTP_AUTHORIZATION && token_in_header)
			continue; /* the sandbox never sees the user's Cortex token */
		head_add(h, "%s %s\r\n", (const char *)lws_token_to_string(t), v);
	}
	pv_fwd_request_custom(wsi, head_custom, h);
	/* the client's address and host: through a non-owner, the ones it saw */
	char host[512];
	pv_fwd_client(wsi, v, sizeof v, host, sizeof host);
	head_add(h, "X-Forwarded-For: %s\r\n", v);
	if (host[0])
		head_add(h, "X-Forwarded-Host: %s\r\n", host);
	head_add(h, "X-Forwarded-Proto: http\r\nX-Forwarded-Prefix: /v1/sessions/%s/ports/%u\r\n",
		 pv->s->id, (unsigned)pv->port);
	if (ws_key)
		head_add(
		    h,
		    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
		    "Sec-WebSocket-Key: %s\r\n\r\n",
		    ws_key);
	else if (body_len)
		head_add(h, "Content-Length: %llu\r\nConnection: close\r\n\r\n",
			 (unsigned long long)body_len);
	else
		head_add(h, "Connection: close\r\n\r\n");
	int rc = h->over ? -1 : buf_put(&pv->up, h->b, h->n);
	free(h);
	return rc;
}

/* ---- connecting inside (a worker) ---- */

static void connect_run(void *arg)
{
	struct pv_job *j = arg;
	cx_err_clear(&j->err);
	if (sandbox_netns_connect(j->netns_fd, j->port, PV_CONNECT_MS, &j->fd, &j->err) < 0 &&
	    !j->err.code)
		j->err.code = EIO;
	close(j->netns_fd);
	j->netns_fd = -1;
}

static void connect_done(void *arg)
{
	struct pv_job *j = arg;
	struct preview *pv = j->pv;
	int fd = j->fd;
	if (pv)
		pv->job = NULL;
	if (!pv || !pv->wsi) {
		if (fd >= 0)
			close(fd);
	} else if (fd < 0) {
		pv->fail = j->err;
		lws_callback_on_writable(pv->wsi);
	} else {
		lws_adopt_desc_t ad = {.vh = lws_get_vhost(pv->wsi),
				       .type = LWS_ADOPT_SOCKET,
				       .fd.sockfd = fd,
				       .vh_prot_name = "cortex-preview",
				       .opaque = pv};
		pv->in = lws_adopt_descriptor_vhost_via_info(&ad); /* closes fd on failure */
		if (!pv->in) {
			cx_err_set(&pv->fail, ENOMEM, "cannot adopt the connection");
			lws_callback_on_writable(pv->wsi);
		} else if (buf_avail(&pv->up)) {
			lws_callback_on_writable(pv->in);
		}
	}
	free(j);
	if (pv)
		pv_maybe_free(pv);
}

/* A preview of session s's port, its connect started.  NULL with e. */
static struct preview *pv_new(struct cortexd *d, struct session *s, struct lws *wsi,
			      enum pv_kind kind, uint16_t port, struct pv_err *e)
{
	cx_err err = CX_ERR_INIT;
	int nsfd;
	if (sandbox_netns_open(s->lc.sb, &nsfd, &err) < 0) {
		if (err.code == ENOTSUP)
			pv_fail(e, 409, "no_network_namespace",
				"preview ports need the session's own network namespace "
				"(sandbox.net_isolated)");
		else
			pv_fail(e, 409, "not_running", "the session's sandbox is not running: %s",
				err.msg);
		return NULL;
	}
	struct preview *pv = calloc(1, sizeof *pv);
	struct pv_job *j = calloc(1, sizeof *j);
	if (!pv || !j) {
		free(pv);
		free(j);
		close(nsfd);
		pv_fail(e, 500, "internal", "out of memory");
		return NULL;
	}
	pv->kind = kind;
	pv->d = d;
	pv->s = s;
	s->refs++;
	s->previews++;
	pv->wsi = wsi;
	pv->port = port;
	pv->close_code = 1000;
	j->netns_fd = nsfd;
	j->port = port;
	j->fd = -1;
	j->pv = pv;
	pv->job = j;
	pv_touch(pv);
	return pv;
}

static void pv_start(struct preview *pv)
{
	work_submit(connect_run, connect_done, pv->job);
}

void preview_release(struct preview *pv)
{
	if (!pv)
		return;
	if (pv->slot)
		*pv->slot = NULL;
	pv->slot = NULL;
	pv->wsi = NULL;
	if (pv->job) { /* its done closes the socket */
		pv->job->pv = NULL;
		pv->job = NULL;
	}
	if (pv->in && pv->kind == PV_WS && pv->ws_open && !pv->in_eof && !pv->closing) {
		/* a close frame first (masked, as a client's), then the socket */
		unsigned char f[8] = {0x88, 0x82, 0, 0, 0, 0, 0, 0};
		lws_get_random(lws_get_context(pv->in), f + 2, 4);
		f[6] = (unsigned char)((pv->close_code >> 8) ^ f[2]);
		f[7] = (unsigned char)((pv->close_code & 0xff) ^ f[3]);
		pv->closing = 1;
		if (buf_put(&pv->up, f, sizeof f) == 0) {
			lws_set_timeout(pv->in, PENDING_TIMEOUT_CLOSE_SEND, 5);
			lws_callback_on_writable(pv->in);
			return;
		}
	}
	if (pv->in) {
		lws_set_opaque_user_data(pv->in, NULL);
		lws_set_timeout(pv->in, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
		pv->in = NULL;
	}
	pv_maybe_free(pv);
}

/* ---- the inside socket ---- */

static int inside_rx(struct preview *pv, const void *in, size_t len)
{
	if (!pv->wsi)
		return 0; /* closing: what it still says has nobody to go to */
	if (buf_put(&pv->down, in, len) < 0)
		return -1;
	if (buf_avail(&pv->down) >= PV_BUF && !pv->down_paused) {
		lws_rx_flow_control(pv->in, 0);
		pv->down_paused = 1;
	}
	pv_touch(pv);
	lws_callback_on_writable(pv->wsi);
	return 0;
}

static int inside_writeable(struct preview *pv)
{
	size_t n = buf_avail(&pv->up);
	if (!n)
		return pv->closing ? -1 : 0;
	if (n > PV_PIECE)
		n = PV_PIECE;
	unsigned char buf[LWS_PRE + PV_PIECE];
	memcpy(buf + LWS_PRE, buf_data(&pv->up), n);
	if (lws_write(pv->in, buf + LWS_PRE, n, LWS_WRITE_RAW) < (int)n)
		return -1;
	buf_take(&pv->up, n);
	if (pv->up_paused && pv->wsi && buf_avail(&pv->up) < PV_BUF / 2) {
		lws_rx_flow_control(pv->wsi, 1);
		pv->up_paused = 0;
	}
	if (buf_avail(&pv->up) || pv->closing)
		lws_callback_on_writable(pv->in);
	return 0;
}

int preview_inside_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			    size_t len)
{
	(void)user;
	struct preview *pv = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return -1; /* no browser upgrades to this protocol */
	case LWS_CALLBACK_RAW_RX:
		return pv ? inside_rx(pv, in, len) : -1;
	case LWS_CALLBACK_RAW_WRITEABLE:
		return pv ? inside_writeable(pv) : -1;
	case LWS_CALLBACK_RAW_CLOSE:
		if (pv) {
			pv->in = NULL;
			pv->in_eof = 1;
			if (pv->wsi)
				lws_callback_on_writable(pv->wsi);
			pv_maybe_free(pv);
		}
		return 0;
	default:
		return 0;
	}
}

/* ---- the response from the inside ---- */

/* A response head in down: 1 parsed (pv->status, pv->rhead; interim 1xx
 * heads skipped, except 101), 0 not complete yet, -1 malformed or too big. */
static int parse_head(struct preview *pv)
{
	for (;;) {
		size_t n = buf_avail(&pv->down);
		const char *p = buf_data(&pv->down), *end = memmem(p, n, "\r\n\r\n", 4);
		if (!end)
			return n > PV_HEAD ? -1 : 0;
		size_t hl = (size_t)(end - p) + 4;
		if (hl > PV_HEAD)
			return -1;
		unsigned st;
		if (sscanf(p, "HTTP/1.%*1[01] %3u", &st) != 1 || st < 100 || st > 599)
			return -1;
		if (st < 200 && st != 101) {
			buf_take(&pv->down, hl);
			continue;
		}
		free(pv->rhead);
		pv->rhead = malloc(hl + 1);
		if (!pv->rhead)
			return -1;
		memcpy(pv->rhead, p, hl);
		pv->rhead[hl] = '\0';
		buf_take(&pv->down, hl);
		pv->status = (int)st;
		return 1;
	}
}

/* Header lines of rhead after the status line: each name (lowercased, with
 * its colon, in name) and value; 0 at the end. */
static int next_header(char **cur, char *name, size_t cap, const char **val, size_t *vlen)
{
	char *line = *cur, *eol = strstr(line, "\r\n");
	if (!eol || eol == line)
		return 0;
	*cur = eol + 2;
	char *colon = memchr(line, ':', (size_t)(eol - line));
	if (!colon || colon == line || (size_t)(colon - line) + 2 > cap) {
		name[0] = '\0';
		return 1; /* not a header: skipped */
	}
	size_t nl = (size_t)(colon - line);
	for (size_t i = 0; i < nl; i++)
		name[i] = (char)(line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i]);
	name[nl] = ':';
	name[nl + 1] = '\0';
	const char *v = colon + 1;
	while (v < eol && (*v == ' ' || *v == '\t'))
		v++;
	const char *ve = eol;
	while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
		ve--;
	*val = v;
	*vlen = (size_t)(ve - v);
	return 1;
}

static int hop_by_hop(const char *name)
{
	static const char *const h[] = {
	    "connection:", "keep-alive:", "transfer-encoding:", "proxy-connection:",  "te:",
	    "trailer:",	   "upgrade:",	  "content-length:",	"proxy-authenticate:"};
	for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
		if (!strcmp(name, h[i]))
			return 1;
	return 0;
}

/* How the body is framed, from the status and the headers. */
static int body_mode(struct preview *pv)
{
	char *cur = strstr(pv->rhead, "\r\n") + 2, name[128];
	const char *v;
	size_t vl;
	int chunked = 0, have_len = 0;
	unsigned long long len = 0;
	while (next_header(&cur, name, sizeof name, &v, &vl)) {
		if (!strcmp(name, "transfer-encoding:") && vl >= 7 &&
		    !strncasecmp(v + vl - 7, "chunked", 7))
			chunked = 1;
		else if (!strcmp(name, "content-length:")) {
			char tmp[32];
			if (!vl || vl >= sizeof tmp)
				return -1;
			memcpy(tmp, v, vl);
			tmp[vl] = '\0';
			char *e;
			len = strtoull(tmp, &e, 10);
			if (*e || tmp[0] == '-')
				return -1;
			have_len = 1;
		}
	}
	if (pv->is_head || pv->status == 204 || pv->status == 304)
		pv->body = BODY_NONE;
	else if (chunked)
		pv->body = BODY_CHUNKED;
	else if (have_len)
		pv->body = BODY_LEN;
	else
		pv->body = BODY_CLOSE;
	pv->remain = len;
	pv->ck = CK_SIZE;
	return 0;
}

/* The next piece of body payload in down: 1 (*p, *n), 0 wait for more, 2 the
 * body is complete, -1 malformed chunking. */
static int body_next(struct preview *pv, const char **p, size_t *n)
{
	switch (pv->body) {
	case BODY_NONE:
		return 2;
	case BODY_LEN:
		if (!pv->remain)
			return 2;
		*n = buf_avail(&pv->down) < pv->remain ? buf_avail(&pv->down) : (size_t)pv->remain;
		*p = buf_data(&pv->down);
		return *n ? 1 : 0;
	case BODY_CLOSE:
		*n = buf_avail(&pv->down);
		*p = buf_data(&pv->down);
		return *n ? 1 : pv->in_eof ? 2 : 0;
	case BODY_CHUNKED:
		break;
	}
	for (;;) {
		const char *d = buf_data(&pv->down);
		size_t avail = buf_avail(&pv->down);
		if (pv->ck == CK_DONE)
			return 2;
		if (pv->ck == CK_DATA) {
			*n = avail < pv->remain ? avail : (size_t)pv->remain;
			*p = d;
			return *n ? 1 : 0;
		}
		const char *eol = memchr(d, '\n', avail);
		if (!eol)
			return avail > 1024 ? -1 : 0;
		size_t ll = (size_t)(eol - d) + 1;
		if (pv->ck == CK_SIZE) {
			char tmp[24];
			size_t k = 0;
			while (k < ll && k < sizeof tmp - 1 &&
			       ((d[k] >= '0' && d[k] <= '9') ||
				((d[k] | 32) >= 'a' && (d[k] | 32) <= 'f')))
				tmp[k] = d[k], k++;
			tmp[k] = '\0';
			if (!k || k > 15)
				return -1;
			pv->remain = strtoull(tmp, NULL, 16);
			pv->ck = pv->remain ? CK_DATA : CK_TRAILER;
		} else if (pv->ck == CK_DATA_END) {
			if (ll > 2 || (ll == 2 && d[0] != '\r'))
				return -1;
			pv->ck = CK_SIZE;
		} else if (ll <= 2) { /* CK_TRAILER: the empty line ends the body */
			pv->ck = CK_DONE;
		}
		buf_take(&pv->down, ll);
	}
}

static void body_taken(struct preview *pv, size_t n)
{
	buf_take(&pv->down, n);
	if (pv->body == BODY_LEN || pv->body == BODY_CHUNKED)
		pv->remain -= n;
	if (pv->body == BODY_CHUNKED && !pv->remain)
		pv->ck = CK_DATA_END;
	pv_down_taken(pv);
}

/* The response's status and headers to the browser (one lws_write). */
static int write_headers(struct preview *pv)
{
	size_t cap = LWS_PRE + PV_HEAD + 256;
	cleanup_free unsigned char *buf = malloc(cap);
	if (!buf)
		return -1;
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + cap - 1;
	struct lws *wsi = pv->wsi;
	if (lws_add_http_header_status(wsi, (unsigned)pv->status, &p, end))
		return -1;
	char *cur = strstr(pv->rhead, "\r\n") + 2, name[128];
	const char *v;
	size_t vl;
	while (next_header(&cur, name, sizeof name, &v, &vl)) {
		if (!name[0] || hop_by_hop(name))
			continue;
		if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
						(const unsigned char *)v, (int)vl, &p, end))
			return -1;
	}
	char num[32];
	int nl;
	switch (pv->body) {
	case BODY_LEN:
		nl = snprintf(num, sizeof num, "%llu", (unsigned long long)pv->remain);
		if (lws_add_http_header_by_name(wsi, (const unsigned char *)"content-length:",
						(unsigned char *)num, nl, &p, end))
			return -1;
		break;
	case BODY_NONE: /* a HEAD's or a 304's length stays what the server said */
		cur = strstr(pv->rhead, "\r\n") + 2;
		while (next_header(&cur, name, sizeof name, &v, &vl))
			if (!strcmp(name, "content-length:") &&
			    lws_add_http_header_by_name(wsi, (const unsigned char *)name,
							(const unsigned char *)v, (int)vl, &p, end))
				return -1;
		break;
	default:
		pv->chunk_out = 1;
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
						 (const unsigned char *)"chunked", 7, &p, end))
			return -1;
	}
	return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

/* One piece of body (chunk-framed when chunk_out), or the last chunk (n 0). */
static int write_body(struct preview *pv, const char *data, size_t n, int last)
{
	unsigned char buf[LWS_PRE + 16 + PV_PIECE + 8];
	unsigned char *body = buf + LWS_PRE + 16, *start = body;
	if (n)
		memcpy(body, data, n);
	size_t len = n;
	if (pv->chunk_out) {
		char hdr[16];
		int hl = n ? snprintf(hdr, sizeof hdr, "%zx\r\n", n) : 0;
		start = body - hl;
		memcpy(start, hdr, (size_t)hl);
		if (n)
			memcpy(body + n, "\r\n", 2), len += (size_t)hl + 2;
		if (last)
			memcpy(body + len - (size_t)hl, "0\r\n\r\n", 5), len += 5;
	}
	if (!len)
		return 0;
	return lws_write(pv->wsi, start, len, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < 0 ? -1
												: 0;
}

static enum preview_write fail_reply(struct preview *pv, struct api_resp *resp)
{
	if (pv->fail.code == ETIMEDOUT)
		api_error(resp, 504, "gateway_timeout",
			  "port %u inside the session did not answer the connect",
			  (unsigned)pv->port);
	else
		api_error(resp, 502, "bad_gateway",
			  "nothing answers on port %u inside the session (%s)", (unsigned)pv->port,
			  pv->fail.msg);
	return PREVIEW_REPLY;
}

enum preview_write preview_http_writeable(struct preview *pv, struct api_resp *resp)
{
	if (!pv->headers_sent) {
		if (pv->fail.code)
			return pv->body_left ? PREVIEW_MORE
					     : fail_reply(pv, resp); /* the body first */
		if (!pv->head_done) {
			int r = parse_head(pv);
			if (r == 0 && !pv->in_eof)
				return PREVIEW_MORE;
			if (r <= 0 || pv->status == 101 || body_mode(pv) < 0) {
				cx_err_set(
				    &pv->fail, EPROTO,
				    r == 0 ? "it closed the connection without a response"
					   : "its response is not HTTP/1.1 this proxy can read");
				if (pv->in) {
					lws_set_opaque_user_data(pv->in, NULL);
					lws_set_timeout(pv->in, PENDING_TIMEOUT_KILLED_BY_PARENT,
							LWS_TO_KILL_ASYNC);
					pv->in = NULL;
				}
				return pv->body_left ? PREVIEW_MORE : fail_reply(pv, resp);
			}
			pv->head_done = 1;
		}
		if (write_headers(pv) < 0)
			return PREVIEW_CLOSE;
		pv->headers_sent = 1;
		lws_callback_on_writable(pv->wsi);
		return PREVIEW_MORE;
	}
	const char *p = NULL;
	size_t n = 0;
	int r = body_next(pv, &p, &n);
	if (r < 0)
		return PREVIEW_CLOSE;
	if (r == 0)
		return pv->in_eof ? PREVIEW_CLOSE /* cut short inside */ : PREVIEW_MORE;
	if (r == 2) {
		if (write_body(pv, NULL, 0, 1) < 0)
			return PREVIEW_CLOSE;
		/* a body still coming from the browser would be read as the next request */
		return pv->body_left ? PREVIEW_CLOSE : PREVIEW_DONE;
	}
	if (n > PV_PIECE)
		n = PV_PIECE;
	if (write_body(pv, p, n, 0) < 0)
		return PREVIEW_CLOSE;
	body_taken(pv, n);
	pv_touch(pv);
	lws_callback_on_writable(pv->wsi);
	return PREVIEW_MORE;
}

int preview_http_begin(struct cortexd *d, struct lws *wsi, const char *path, struct preview **slot,
		       struct api_resp *resp, size_t *body_len)
{
	char cl[32] = "";
	*body_len = 0;
	if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
		*body_len = (size_t)strtoull(cl, NULL, 10);
	struct pv_err e;
	struct session *s;
	uint16_t port;
	const char *rest, *method;
	int in_header;
	if (pv_authorize(d, wsi, path, &s, &port, &rest, &in_header, &e) < 0) {
		api_error(resp, e.status, e.code, "%s", e.msg);
		return -1;
	}
	if (pv_method(wsi, &method) < 0) {
		api_error(resp, 405, "method_not_allowed", "method not supported");
		return -1;
	}
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
		api_error(resp, 411, "length_required",
			  "send the request body with a Content-Length");
		return -1;
	}
	struct preview *pv = pv_new(d, s, wsi, PV_HTTP, port, &e);
	if (!pv) {
		api_error(resp, e.status, e.code, "%s", e.msg);
		return -1;
	}
	pv->is_head = !strcmp(method, "HEAD");
	pv->body_left = *body_len;
	if (pv_request_head(pv, wsi, method, rest, in_header, *body_len, NULL) < 0) {
		pv->job->pv = NULL; /* never submitted: free it here */
		close(pv->job->netns_fd);
		free(pv->job);
		pv->job = NULL;
		pv->wsi = NULL;
		pv_maybe_free(pv);
		api_error(resp, 431, "headers_too_large",
			  "the request's headers do not fit in %u bytes", (unsigned)PV_HEAD);
		return -1;
	}
	*slot = pv;
	pv->slot = slot;
	pv_start(pv);
	http_peer_watch(wsi); /* a hang-up frees the slot even while the inside is silent */
	return 0;
}

int preview_http_body(struct preview *pv, const void *in, size_t len)
{
	if (!len || !in)
		return 0;
	pv->body_left = len < pv->body_left ? pv->body_left - len : 0;
	if (pv->fail.code) { /* read and dropped: the 502 follows the body */
		if (!pv->body_left)
			lws_callback_on_writable(pv->wsi);
		return 0;
	}
	return pv_up_put(pv, in, len);
}

/* ---- WebSocket ---- */

int preview_ws_confirm(struct cortexd *d, struct lws *wsi)
{
	char uri[512];
	struct pv_err e;
	struct session *s;
	uint16_t port;
	const char *rest;
	int in_header;
	if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
		return -1;
	if (pv_authorize(d, wsi, uri, &s, &port, &rest, &in_header, &e) < 0)
		return ws_reject_upgrade(wsi, e.status, e.code, e.msg);
	cx_err err = CX_ERR_INIT;
	int nsfd;
	if (sandbox_netns_open(s->lc.sb, &nsfd, &err) < 0)
		return ws_reject_upgrade(
		    wsi, 409, err.code == ENOTSUP ? "no_network_namespace" : "not_running",
		    err.code == ENOTSUP ? "preview ports need the session's own network namespace"
					: "the session's sandbox is not running");
	close(nsfd);
	return 0;
}

/* A frame to the inside, masked as a client's must be. */
static int ws_up_frame(struct preview *pv, int op, int fin, const void *data, size_t n)
{
	unsigned char h[14];
	size_t hl;
	h[0] = (unsigned char)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		h[1] = (unsigned char)(0x80 | n);
		hl = 2;
	} else if (n < 65536) {
		h[1] = 0x80 | 126;
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
		hl = 4;
	} else {
		h[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	unsigned char *key = h + hl;
	lws_get_random(pv->d->ctx, key, 4);
	hl += 4;
	if (buf_put(&pv->up, h, hl) < 0 || buf_put(&pv->up, data, n) < 0)
		return -1;
	unsigned char *p = (unsigned char *)pv->up.p + pv->up.len - n;
	for (size_t i = 0; i < n; i++)
		p[i] ^= key[i & 3];
	return pv_up_put(pv, NULL, 0); /* the pause and the wake-up */
}

/* The next frame header from the inside: 1, 0 wait, -1 bad. */
static int ws_frame_header(struct preview *pv)
{
	const unsigned char *p = (const unsigned char *)buf_data(&pv->down);
	size_t avail = buf_avail(&pv->down), hl = 2;
	if (avail < 2)
		return 0;
	int op = p[0] & 0x0f, masked = p[1] & 0x80;
	uint64_t len = p[1] & 0x7f;
	if (p[0] & 0x70 || (op > 2 && op < 8) || op > 10)
		return -1;
	if (len == 126)
		hl += 2;
	else if (len == 127)
		hl += 8;
	if (masked)
		hl += 4;
	if (avail < hl)
		return 0;
	if (len == 126)
		len = (uint64_t)p[2] << 8 | p[3];
	else if (len == 127)
		for (int i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
	if (op >= 8 && (len > 125 || !(p[0] & 0x80)))
		return -1;
	if (masked)
		memcpy(pv->fr_mask, p + hl - 4, 4);
	pv->fr_masked = !!masked;
	pv->fr_op = op;
	pv->fr_fin = !!(p[0] & 0x80);
	pv->fr_left = len;
	pv->fr_pos = 0;
	pv->fr_have = 1;
	buf_take(&pv->down, hl);
	return 1;
}

static int ws_close(struct lws *wsi, enum lws_close_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ws_close(struct lws *wsi, enum lws_close_status code, const char *fmt, ...)
{
	char msg[124];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	lws_close_reason(wsi, code, (unsigned char *)msg, n < 0 ? 0 : strlen(msg));
	return -1;
}

/* The browser may write: the inside's handshake, then its frames. */
static int ws_writeable(struct preview *pv)
{
	struct lws *wsi = pv->wsi;
	if (pv->fail.code)
		return ws_close(wsi, 1014, "nothing answers on port %u inside the session",
				(unsigned)pv->port);
	if (!pv->ws_open) {
		int r = parse_head(pv);
		if (r == 0 && !pv->in_eof)
			return 0;
		if (r <= 0)
			return ws_close(wsi, 1014, "port %u closed without answering the upgrade",
					(unsigned)pv->port);
		if (pv->status != 101)
			return ws_close(wsi, 1014, "port %u answered %d to the upgrade",
					(unsigned)pv->port, pv->status);
		pv->ws_open = 1;
	}
	for (;;) {
		if (!pv->fr_have) {
			int r = ws_frame_header(pv);
			if (r < 0)
				return ws_close(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
						"bad frame from port %u", (unsigned)pv->port);
			if (r == 0)
				return pv->in_eof ? ws_close(wsi, LWS_CLOSE_STATUS_GOINGAWAY,
							     "port %u closed", (unsigned)pv->port)
						  : 0;
		}
		size_t avail = buf_avail(&pv->down);
		unsigned char buf[LWS_PRE + PV_PIECE];
		unsigned char *pl = buf + LWS_PRE;
		if (pv->fr_op >= 8) { /* control: whole, at most 125 bytes */
			if (avail < pv->fr_left)
				return pv->in_eof ? -1 : 0;
			size_t n = (size_t)pv->fr_left;
			memcpy(pl, buf_data(&pv->down), n);
			for (size_t i = 0; pv->fr_masked && i < n; i++)
				pl[i] ^= pv->fr_mask[i & 3];
			buf_take(&pv->down, n);
			pv->fr_have = 0;
			pv_down_taken(pv);
			if (pv->fr_op == 9 && ws_up_frame(pv, 10, 1, pl, n) < 0) /* ping: pong */
				return -1;
			if (pv->fr_op == 8) {
				int code = n >= 2 ? pl[0] << 8 | pl[1] : 1000;
				if (code < 1000 || code == 1005 || code == 1006 || code == 1015 ||
				    code >= 5000)
					code = 1000;
				lws_close_reason(wsi, (enum lws_close_status)code,
						 n > 2 ? pl + 2 : NULL, n > 2 ? n - 2 : 0);
				return -1;
			}
			continue;
		}
		size_t n = avail < pv->fr_left ? avail : (size_t)pv->fr_left;
		if (n > PV_PIECE)
			n = PV_PIECE;
		if (!n && pv->fr_left)
			return pv->in_eof ? -1 : 0;
		int start = !pv->ws_down_msg;
		if (start) {
			if (pv->fr_op == 0)
				return ws_close(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
						"bad continuation from port %u",
						(unsigned)pv->port);
			pv->ws_down_op = pv->fr_op;
		}
		int end = n == pv->fr_left && pv->fr_fin;
		memcpy(pl, buf_data(&pv->down), n);
		for (size_t i = 0; pv->fr_masked && i < n; i++)
			pl[i] ^= pv->fr_mask[(pv->fr_pos + i) & 3];
		int flags = lws_write_ws_flags(
		    pv->ws_down_op == 2 ? LWS_WRITE_BINARY : LWS_WRITE_TEXT, start, end);
		if (lws_write(wsi, pl, n, (enum lws_write_protocol)flags) < (int)n)
			return -1;
		buf_take(&pv->down, n);
		pv->fr_left -= n;
		pv->fr_pos += n;
		if (!pv->fr_left)
			pv->fr_have = 0;
		pv->ws_down_msg = !end;
		pv_down_taken(pv);
		pv_touch(pv);
		if (buf_avail(&pv->down) || pv->in_eof)
			lws_callback_on_writable(wsi);
		return 0;
	}
}

int preview_ws_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason,
			struct preview **slot, void *in, size_t len)
{
	struct preview *pv = *slot;
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: {
		char uri[512], key[32];
		unsigned char raw[16];
		struct pv_err e;
		struct session *s;
		uint16_t port;
		const char *rest;
		int in_header;
		if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 ||
		    pv_authorize(d, wsi, uri, &s, &port, &rest, &in_header, &e) < 0 ||
		    !(pv = pv_new(d, s, wsi, PV_WS, port, &e)))
			return -1;
		lws_get_random(d->ctx, raw, sizeof raw);
		lws_b64_encode_string((const char *)raw, sizeof raw, key, sizeof key);
		*slot = pv;
		pv->slot = slot;
		if (pv_request_head(pv, wsi, "GET", rest, in_header, 0, key) < 0) {
			pv->job->pv = NULL;
			close(pv->job->netns_fd);
			free(pv->job);
			pv->job = NULL;
			preview_release(pv);
			return -1;
		}
		pv_start(pv);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE: {
		if (!pv)
			return -1;
		int op = pv->ws_up_msg ? 0 : lws_frame_is_binary(wsi) ? 2 : 1;
		int fin = lws_is_final_fragment(wsi);
		pv->ws_up_msg = !fin;
		pv_touch(pv);
		return ws_up_frame(pv, op, fin, in, len);
	}
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (pv && len >= 2) {
			const unsigned char *c = in;
			pv->close_code = c[0] << 8 | c[1];
			if (pv->close_code < 1000 || pv->close_code == 1005 ||
			    pv->close_code == 1006)
				pv->close_code = 1000;
		}
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return pv ? ws_writeable(pv) : -1;
	case LWS_CALLBACK_CLOSED:
		preview_release(pv);
		return 0;
	default:
		return 0;
	}
}
