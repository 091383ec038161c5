/* http.c — libwebsockets plumbing for the HTTP routes: collect the request
 * (method, path, token, body within CX_CAP_HTTP_BODY), hand it to api.c, and
 * write the response from LWS_CALLBACK_HTTP_WRITEABLE (headers, then body,
 * one lws_write per callback). */
#include "http.h"

#include <errno.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "images.h"
#include "log.h"
#include "nproxy.h"
#include "owner.h"
#include "preview.h"

static void http_reset(struct http_conn *h)
{
	if (h->waiting) /* the client left before its write was done */
		api_defer_detach(h->waiting);
	preview_release(h->pv);
	nproxy_release(h->px);
	free(h->body);
	free(h->resp.body);
	if (h->upfd > 0)
		close(h->upfd);
	if (h->upload[0])
		unlink(h->upload); /* the route did not take it (an error, or the client left) */
	if (h->logfd > 0)
		close(h->logfd);
	memset(h, 0, sizeof *h);
}

/* A body streamed to a file under DATA/uploads (a build context, an image). */
static int upload_open(struct cortexd *d, struct http_conn *h)
{
	snprintf(h->upload, sizeof h->upload, "%s/uploads", d->cfg.data_dir);
	if (mkdir(h->upload, 0700) < 0 && errno != EEXIST)
		return -1;
	snprintf(h->upload, sizeof h->upload, "%s/uploads/body-XXXXXX", d->cfg.data_dir);
	h->upfd = mkostemp(h->upload, O_CLOEXEC);
	if (h->upfd < 0) {
		h->upload[0] = '\0';
		return -1;
	}
	return 0;
}

static const char *method_of(struct lws *wsi)
{
	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
		return "GET";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
		return "POST";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
		return "PUT";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
		return "DELETE";
	return NULL;
}

/* ... and the ones only a preview port accepts (preview.c), proxied to the
 * owner of a preview this node does not serve. */
static const char *preview_method_of(struct lws *wsi)
{
	const char *m = method_of(wsi);
	if (m)
		return m;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI))
		return "PATCH";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI))
		return "OPTIONS";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI))
		return "HEAD";
	return NULL;
}

/* A session another node owns (nproxy.h): proxied there, or 508 when it
 * was proxied here already.  1 if handled (resp holds an error reply, or the
 * proxy runs), 0 to route it here. */
static int forward(struct cortexd *d, struct lws *wsi, struct http_conn *h)
{
	char url[512];
	if (!h->resp.forward) {
		if (h->preset || h->upload_failed || h->too_big || !nproxy_target(d, h->path, url, sizeof url))
			return 0;
	} else {
		snprintf(url, sizeof url, "%s", h->resp.location);
		h->resp.forward = 0;
		h->resp.location[0] = '\0';
	}
	if (h->hop) {
		nproxy_count_loop();
		api_error(&h->resp, 508, "proxy_loop",
			  "forwarded by another node, and this node does not hold the session either");
		return 1;
	}
	if (nproxy_http_begin(d, wsi, h, url) < 0)
		return 1;
	http_peer_watch(wsi); /* a client that hangs up while the owner works is seen */
	return 2;
}

static void dispatch(struct cortexd *d, struct lws *wsi, struct http_conn *h)
{
	int fw = forward(d, wsi, h);
	if (fw == 2) { /* the response comes from the owner (nproxy_http_writeable) */
		h->responding = 1;
		return;
	}
	if (fw) {
		/* the reply is in resp */
	} else if (h->preset) {
		/* the reply is in resp already */
	} else if (h->upload_failed) {
		api_error(&h->resp, 500, "internal", "cannot store the request body: %s", strerror(h->upload_failed));
	} else if (h->too_big) {
		api_error(&h->resp, 413, "too_large", "request body over %zu bytes", h->cap);
	} else {
		if (h->upfd > 0) {
			close(h->upfd);
			h->upfd = 0;
		}
		struct api_req r = {h->method, h->path, h->token[0] ? h->token : NULL, h->body, h->body_len,
				    h->query, h->upload[0] ? h->upload : NULL, h->range[0] ? h->range : NULL,
				    h->inm[0] ? h->inm : NULL};
		api_handle(d, &r, &h->resp);
		if (h->resp.forward && forward(d, wsi, h) == 2) { /* the owner was found in the store */
			h->responding = 1;
			return;
		}
		if (h->resp.defer || h->resp.status < 300)
			h->upload[0] = '\0'; /* the route's job owns the file now */
	}
	h->responding = 1;
	if (h->resp.defer) { /* a store write first: its job asks for WRITEABLE */
		api_defer_start(&h->resp, wsi, &h->waiting);
		return;
	}
	lws_callback_on_writable(wsi);
}

/* GET /v1/images/{name}/log: the file in chunks, followed while the build runs
 * (re-read every 250 ms), then the last chunk. */
static int write_stream(struct cortexd *d, struct lws *wsi, struct http_conn *h)
{
	if (!h->headers_sent) {
		unsigned char buf[LWS_PRE + 512];
		unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
		h->logfd = open(h->resp.stream_file, O_RDONLY | O_CLOEXEC);
		if (lws_add_http_common_headers(wsi, (unsigned int)h->resp.status, h->resp.ctype,
						LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
						 (const unsigned char *)"chunked", 7, &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		h->headers_sent = 1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	unsigned char buf[LWS_PRE + 16 + 16384 + 8];
	unsigned char *data = buf + LWS_PRE + 16;
	int running = images_log_running(d, h->resp.stream_name);
	ssize_t n = h->logfd > 0 ? read(h->logfd, data, 16384) : 0;
	if (n > 0) {
		char hdr[16];
		int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", (size_t)n);
		unsigned char *start = data - hl;
		memcpy(start, hdr, (size_t)hl);
		memcpy(data + n, "\r\n", 2);
		if (lws_write(wsi, start, (size_t)hl + (size_t)n + 2, LWS_WRITE_HTTP) < 0)
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (running || h->stream_done == 0) {
		/* nothing new: look again later; once the build ended, read to the end once more */
		if (!running)
			h->stream_done = 1;
		lws_set_timer_usecs(wsi, running ? 250000 : 1000);
		return 0;
	}
	if (lws_write(wsi, (unsigned char *)memcpy(buf + LWS_PRE, "0\r\n\r\n", 5), 5, LWS_WRITE_HTTP_FINAL) < 0)
		return -1;
	log_debug("%s %s -> %d (streamed)", h->method, h->path, h->resp.status);
	http_reset(h);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The body goes out in pieces of at most this many bytes, one lws_write per
 * WRITEABLE (a file of the files API can be megabytes). */
#define HTTP_BODY_CHUNK (64u << 10)

static int write_response(struct lws *wsi, struct http_conn *h)
{
	size_t blen = h->resp.body ? (h->resp.body_len ? h->resp.body_len : strlen(h->resp.body)) : 0;
	if (!h->headers_sent) {
		unsigned char buf[LWS_PRE + 1536];
		unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
		const char *cr = h->resp.content_range, *const *xh = h->resp.headers, *et = h->resp.etag;
		int binary = !xh && (h->resp.body_len || (h->resp.ctype && !strcmp(h->resp.ctype, "application/octet-stream")));
		if (lws_add_http_common_headers(wsi, (unsigned int)h->resp.status,
						blen ? (h->resp.ctype ? h->resp.ctype : "application/json") : NULL, (lws_filepos_t)blen, &p, end) ||
		    (cr[0] && lws_add_http_header_by_name(wsi, (const unsigned char *)"content-range:",
							  (const unsigned char *)cr, (int)strlen(cr), &p, end)) ||
		    (binary && lws_add_http_header_by_name(wsi, (const unsigned char *)"accept-ranges:",
							   (const unsigned char *)"bytes", 5, &p, end)) ||
		    (h->close_after &&
		     lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end)) ||
		    (et && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ETAG, (const unsigned char *)et,
							(int)strlen(et), &p, end)))
			return -1;
		if (h->resp.location[0] &&
		    lws_add_http_header_by_name(wsi, (const unsigned char *)"location:",
						(const unsigned char *)h->resp.location, (int)strlen(h->resp.location), &p, end))
			return -1;
		for (; xh && xh[0]; xh += 2)
			if (lws_add_http_header_by_name(wsi, (const unsigned char *)xh[0], (const unsigned char *)xh[1],
							(int)strlen(xh[1]), &p, end))
				return -1;
		if (lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		h->headers_sent = 1;
		if (blen) {
			lws_callback_on_writable(wsi);
			return 0;
		}
	} else if (blen) {
		size_t n = blen - h->body_off;
		int last = n <= HTTP_BODY_CHUNK;
		if (!last)
			n = HTTP_BODY_CHUNK;
		unsigned char *buf = malloc(LWS_PRE + n);
		if (!buf)
			return -1;
		memcpy(buf + LWS_PRE, h->resp.body + h->body_off, n);
		int w = lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
		free(buf);
		if (w < 0)
			return -1;
		h->body_off += n;
		if (!last) {
			lws_callback_on_writable(wsi);
			return 0;
		}
	}
	log_debug("%s %s -> %d", h->method, h->path, h->resp.status);
	int close_after = h->close_after;
	http_reset(h);
	if (close_after)
		return -1; /* the reply is written; what follows it is not a request */
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* A preview's browser side while the server inside holds its response:
 * lws reads nothing more of an HTTP/1 connection during a transaction, so a
 * hang-up would be seen only at the next write and the preview's slot held
 * until then.  Every PEER_CHECK_US a non-consuming peek tells: 0 bytes = the
 * peer is gone (-1 closes the wsi: CLOSED_HTTP releases the preview). */
#define PEER_CHECK_US 2000000
static int peer_check(struct lws *wsi)
{
	char c;
	ssize_t n = recv(lws_get_socket_fd(wsi), &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		return -1;
	lws_set_timer_usecs(wsi, PEER_CHECK_US);
	return 0;
}

void http_peer_watch(struct lws *wsi)
{
	lws_set_timer_usecs(wsi, PEER_CHECK_US);
}

/* A proxied response (nproxy.c): streamed, or an error reply instead. */
static int nproxy_writeable(struct lws *wsi, struct http_conn *h)
{
	switch (nproxy_http_writeable(h->px, &h->resp)) {
	case NPROXY_MORE:
		return 0;
	case NPROXY_REPLY: /* nothing sent yet: an error reply instead (503) */
		nproxy_release(h->px);
		if (h->pv_stream)
			h->close_after = 1; /* the rest of a streamed body is not read */
		h->responding = 1;
		return write_response(wsi, h);
	case NPROXY_DONE:
		log_debug("%s %s -> proxied", h->method, h->path);
		http_reset(h);
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	case NPROXY_CLOSE:
	default:
		return -1;
	}
}

/* A preview-port response (preview.c): streamed, or an error reply instead. */
static int preview_writeable(struct lws *wsi, struct http_conn *h)
{
	switch (preview_http_writeable(h->pv, &h->resp)) {
	case PREVIEW_MORE:
		return 0;
	case PREVIEW_REPLY: /* nothing sent yet: an error reply instead (502) */
		preview_release(h->pv);
		h->responding = 1;
		return write_response(wsi, h);
	case PREVIEW_DONE:
		log_debug("%s %s -> preview done", h->method, h->path);
		http_reset(h);
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	case PREVIEW_CLOSE:
	default:
		return -1;
	}
}

/* A preview port of a session another node owns, not forwarded here by a
 * node already: it goes the API routes' way, to nproxy (the owner checks the
 * token and serves it). */
static int preview_elsewhere(struct cortexd *d, struct lws *wsi, const char *path)
{
	char url[512], hop[8];
	return nproxy_target(d, path, url, sizeof url) &&
	       lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) <= 0;
}

int http_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason, struct http_conn *h, void *in,
		  size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		http_reset(h);
		const char *m = method_of(wsi);
		snprintf(h->path, sizeof h->path, "%s", (const char *)in);
		int pv_far = 0; /* a preview port proxied to its owner: any method it takes */
		if (preview_is_route(h->path) && preview_elsewhere(d, wsi, h->path)) {
			pv_far = 1;
			m = preview_method_of(wsi);
		} else if (preview_is_route(h->path)) {
			size_t blen;
			h->method = m ? m : "OTHER";
			if (preview_http_begin(d, wsi, h->path, &h->pv, &h->resp, &blen) == 0)
				return 0; /* streamed from HTTP_WRITEABLE */
			h->preset = 1;
			if (blen) { /* read and drop the body, then answer */
				h->cap = 0;
				h->too_big = 1;
				return 0;
			}
			dispatch(d, wsi, h);
			return 0;
		}
		if (!m) {
			h->method = "OTHER";
			api_error(&h->resp, 405, "method_not_allowed", "method not supported");
			h->responding = 1;
			lws_callback_on_writable(wsi);
			return 0;
		}
		h->method = m;
		/* The door (door.c) checked a connection's first head; this is for
		 * the next ones on a kept-alive connection. */
		if (strlen((const char *)in) + (size_t)lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > CX_CAP_HTTP_URI) {
			api_error(&h->resp, 414, "uri_too_long", "the request target is over %u bytes", CX_CAP_HTTP_URI);
			h->close_after = 1;
			h->responding = 1;
			lws_callback_on_writable(wsi);
			return 0;
		}
		size_t qn = 0;
		for (int i = 0; qn + 2 < sizeof h->query; i++) {
			int n = lws_hdr_copy_fragment(wsi, h->query + qn + (qn ? 1 : 0),
						      (int)(sizeof h->query - qn - 1), WSI_TOKEN_HTTP_URI_ARGS, i);
			if (n <= 0)
				break;
			if (qn)
				h->query[qn] = '&';
			qn += (size_t)n + (qn ? 1 : 0);
		}
		h->query[qn] = '\0';
		if (lws_hdr_copy(wsi, h->range, sizeof h->range, WSI_TOKEN_HTTP_RANGE) < 0)
			h->range[0] = '\0';
		if (lws_hdr_copy(wsi, h->inm, sizeof h->inm, WSI_TOKEN_HTTP_IF_NONE_MATCH) < 0)
			h->inm[0] = '\0';
		{
			char hop[8];
			h->hop = owner_enabled() && lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) > 0;
		}
		char hdr[400];
		if (lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
		    !strncasecmp(hdr, "Bearer ", 7))
			snprintf(h->token, sizeof h->token, "%s", hdr + 7);
		else {
			const char *v = lws_get_urlarg_by_name(wsi, "token=", hdr, sizeof hdr);
			if (v)
				snprintf(h->token, sizeof h->token, "%s", v);
		}
		/* The body's length: digits only.  A negative, absurd or chunked one
		 * used to run the route with an empty body; now it is refused. */
		char cl[32] = "", te[64] = "";
		int cln = lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
		lws_hdr_copy(wsi, te, sizeof te, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
		long long clen = 0;
		const char *bad = NULL;
		int status = 400;
		if (cln < 0 || (cl[0] && (strspn(cl, "0123456789") != strlen(cl) || strlen(cl) > 18)))
			bad = "bad Content-Length (digits only, at most 18)";
		else if (cl[0])
			clen = atoll(cl);
		else if (te[0] && (pv_far || !strcmp(m, "POST") || !strcmp(m, "PUT"))) {
			bad = "a request body needs a Content-Length (chunked bodies are not accepted)";
			status = 411;
		}
		if (bad) {
			api_error(&h->resp, status, status == 411 ? "length_required" : "bad_request", "%s", bad);
			h->close_after = 1;
			h->responding = 1;
			lws_callback_on_writable(wsi);
			return 0;
		}
		h->cap = CX_CAP_HTTP_BODY;
		if (pv_far && clen > 0) { /* no cap, as on the owner: streamed there as it comes */
			h->expect = (size_t)clen;
			h->pv_stream = (size_t)clen;
			dispatch(d, wsi, h);
			return 0;
		}
		if ((!strcmp(m, "POST") || !strcmp(m, "PUT")) && clen > 0) {
			h->expect = (size_t)clen;
			size_t fcap = files_route_body_cap(d, m, h->path);
			if (fcap)
				h->cap = fcap;
			if (images_upload_route(m, h->path)) {
				h->cap = (size_t)d->cfg.images_max_context;
				if ((unsigned long long)clen <= h->cap && upload_open(d, h) < 0) {
					log_error("upload file: %s", strerror(errno));
					h->upload_failed = errno;
					h->cap = 0; /* read and discard, then answer 500 */
				}
			}
			if ((unsigned long long)clen > h->cap)
				h->too_big = 1; /* read and discard, then answer 413 (or 500) */
			return 0;  /* wait for the body */
		}
		dispatch(d, wsi, h);
		return 0;
	}
	case LWS_CALLBACK_HTTP_BODY:
		if (h->pv)
			return preview_http_body(h->pv, in, len);
		if (h->px && h->pv_stream)
			return nproxy_http_body(h->px, in, len);
		if (h->pv_stream)
			return 0; /* its proxy is gone (an error reply): dropped */
		if (!len || !in)
			return 0; /* lws may report an empty chunk with a NULL pointer */
		if (h->too_big || h->body_len + len > h->cap) {
			h->too_big = 1;
			return 0;
		}
		if (h->upfd > 0) { /* a local file in the page cache: short */
			cx_err e;
			if (cx_write_all(h->upfd, in, len, &e) < 0) {
				log_error("upload %s: %s", h->upload, e.msg);
				return -1;
			}
			h->body_len += len;
			return 0;
		}
		{
			char *nb = realloc(h->body, h->body_len + len + 1);
			if (!nb)
				return -1;
			h->body = nb;
			memcpy(h->body + h->body_len, in, len);
			h->body_len += len;
			h->body[h->body_len] = '\0';
		}
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		/* lws also reports completion of an empty POST body that we already
		 * answered from LWS_CALLBACK_HTTP: never run a request twice. */
		if (!h->responding && !h->pv)
			dispatch(d, wsi, h);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (h->pv)
			return preview_writeable(wsi, h);
		if (h->px)
			return nproxy_writeable(wsi, h);
		if (!h->responding || h->waiting)
			return 0;
		if (h->resp.stream_file[0])
			return write_stream(d, wsi, h);
		return write_response(wsi, h);
	case LWS_CALLBACK_TIMER:
		if (h->pv || h->px)
			return peer_check(wsi);
		if (h->responding && h->resp.stream_file[0])
			lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_CLOSED_HTTP:
		http_reset(h);
		return 0;
	default:
		return 0;
	}
}
