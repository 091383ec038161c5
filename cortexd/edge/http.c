/* http.c — libwebsockets plumbing for the HTTP routes: collect the request
 * (method, path, token, body within CX_CAP_HTTP_BODY), hand it to api.c, and
 * write the response from LWS_CALLBACK_HTTP_WRITEABLE (headers, then body,
 * one lws_write per callback). */
#include "http.h"

#include <stdio.h>
#include <string.h>

#include "caps.h"
#include "log.h"

static void http_reset(struct http_conn *h)
{
	if (h->waiting) /* the client left before its write was done */
		api_defer_detach(h->waiting);
	free(h->body);
	free(h->resp.body);
	memset(h, 0, sizeof *h);
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

static void dispatch(struct cortexd *d, struct lws *wsi, struct http_conn *h)
{
	if (h->too_big) {
		api_error(&h->resp, 413, "too_large", "request body over %u bytes", CX_CAP_HTTP_BODY);
	} else {
		struct api_req r = {h->method, h->path, h->token[0] ? h->token : NULL, h->body, h->body_len,
				    h->query};
		api_handle(d, &r, &h->resp);
	}
	h->responding = 1;
	if (h->resp.defer) { /* a store write first: its job asks for WRITEABLE */
		api_defer_start(&h->resp, wsi, &h->waiting);
		return;
	}
	lws_callback_on_writable(wsi);
}

static int write_response(struct lws *wsi, struct http_conn *h)
{
	size_t blen = h->resp.body ? strlen(h->resp.body) : 0;
	if (!h->headers_sent) {
		unsigned char buf[LWS_PRE + 512];
		unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
		if (lws_add_http_common_headers(wsi, (unsigned int)h->resp.status,
						blen ? (h->resp.ctype ? h->resp.ctype : "application/json") : NULL, (lws_filepos_t)blen, &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		h->headers_sent = 1;
		if (blen) {
			lws_callback_on_writable(wsi);
			return 0;
		}
	} else if (blen) {
		unsigned char *buf = malloc(LWS_PRE + blen);
		if (!buf)
			return -1;
		memcpy(buf + LWS_PRE, h->resp.body, blen);
		int n = lws_write(wsi, buf + LWS_PRE, blen, LWS_WRITE_HTTP_FINAL);
		free(buf);
		if (n < 0)
			return -1;
	}
	log_debug("%s %s -> %d", h->method, h->path, h->resp.status);
	http_reset(h);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int http_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason, struct http_conn *h, void *in,
		  size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		http_reset(h);
		const char *m = method_of(wsi);
		snprintf(h->path, sizeof h->path, "%s", (const char *)in);
		if (!m) {
			h->method = "OTHER";
			api_error(&h->resp, 405, "method_not_allowed", "method not supported");
			h->responding = 1;
			lws_callback_on_writable(wsi);
			return 0;
		}
		h->method = m;
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
		char hdr[400];
		if (lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
		    !strncasecmp(hdr, "Bearer ", 7))
			snprintf(h->token, sizeof h->token, "%s", hdr + 7);
		else {
			const char *v = lws_get_urlarg_by_name(wsi, "token=", hdr, sizeof hdr);
			if (v)
				snprintf(h->token, sizeof h->token, "%s", v);
		}
		char cl[32] = "";
		lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
		long long clen = cl[0] ? atoll(cl) : 0;
		if ((!strcmp(m, "POST") || !strcmp(m, "PUT")) && clen > 0) {
			h->expect = (size_t)clen;
			if (clen > CX_CAP_HTTP_BODY)
				h->too_big = 1; /* read and discard, then answer 413 */
			return 0;  /* wait for the body */
		}
		dispatch(d, wsi, h);
		return 0;
	}
	case LWS_CALLBACK_HTTP_BODY:
		if (!len || !in)
			return 0; /* lws may report an empty chunk with a NULL pointer */
		if (h->too_big || h->body_len + len > CX_CAP_HTTP_BODY) {
			h->too_big = 1;
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
		if (!h->responding)
			dispatch(d, wsi, h);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!h->responding || h->waiting)
			return 0;
		return write_response(wsi, h);
	case LWS_CALLBACK_CLOSED_HTTP:
		http_reset(h);
		return 0;
	default:
		return 0;
	}
}
