/* http.h — per-connection HTTP request state (see http.c). */
#ifndef CORTEX_HTTP_H
#define CORTEX_HTTP_H

#include "edge.h"

struct http_conn {
	const char *method; /* static string */
	char path[512];
	char token[300];
	char query[1280];   /* URI args joined with '&' ("" if none; over the cap: cut) */
	char range[128];    /* the Range header ("" if none) */
	char inm[256];      /* the If-None-Match header ("" if none; a longer one is dropped) */
	size_t body_off;    /* bytes of a large response body already written */
	char *body;
	size_t body_len, expect;
	int too_big;
	size_t cap;         /* body cap of this request */
	int upfd;           /* a body streamed to upload[] (images), or 0 */
	int upload_failed;  /* the upload file could not be made: 500 */
	char upload[4200];
	int logfd;          /* a streamed response (resp.stream_file), or 0 */
	int stream_done;
	int responding, headers_sent;
	struct api_defer *waiting; /* the reply waits for this job (a store write) */
	struct preview *pv;  /* a preview-port request (preview.c), or NULL */
	struct nproxy *px;   /* a request proxied to its session's node (nproxy.c), or NULL */
	int hop;             /* it came with X-Cortex-Hop: forwarded by another node already */
	size_t pv_stream;    /* a preview body streamed to the owner as it arrives: its length */
	int preset;          /* resp already holds the reply (a refused preview request) */
	int close_after;     /* the request's framing is unknown (a bad Content-Length, a chunked
	                        body): answer, then close, so no leftover byte is read as a request */
	struct api_resp resp;
};

/* Watch wsi for a hang-up while its response waits on something else
 * (a preview's server inside): LWS_CALLBACK_TIMER peeks every 2 s. */
void http_peer_watch(struct lws *wsi);
int http_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason, struct http_conn *h, void *in,
		  size_t len);

#endif
