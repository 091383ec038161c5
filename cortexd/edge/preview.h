/* preview.h — preview ports: /v1/sessions/{id}/ports/{port}/... reaches a
 * server the agent started on 127.0.0.1:{port} inside the session's sandbox,
 * HTTP and WebSocket, streamed both ways (docs/network.md, "Preview ports").
 *
 * The browser's side is an ordinary connection of the "cortex" protocol
 * (http.c, server.c route its events here); the inside side is a TCP socket
 * made in the sandbox's network namespace on a worker
 * (sandbox_netns_connect) and adopted into lws as a raw socket of the
 * "cortex-preview" protocol (preview_inside_callback).  Requests are rebuilt
 * from lws's header tables, responses parsed here (HTTP/1.1 head, then a
 * body by Content-Length, chunked or until close), WebSocket messages
 * relayed frame by frame.  Service thread only. */
#ifndef CORTEX_PREVIEW_H
#define CORTEX_PREVIEW_H

#include "edge.h"

struct preview;

/* path is /v1/sessions/{id}/ports/... */
int preview_is_route(const char *path);

/* The request headers a preview passes to the inside (nproxy.c passes the
 * same ones to the owner): by lws token here; the custom ones and the
 * client's address are pv_fwd.h's. */
extern const enum lws_token_indexes preview_fwd_tokens[];
extern const size_t preview_fwd_ntokens;

/* LWS_CALLBACK_HTTP on a preview route.  0: the preview runs and *slot holds
 * it (its events go to the functions below); -1: resp holds the error reply
 * (401, 403, 404, 400 bad port, 405, 409, 411, 429).  *body_len: the
 * request's Content-Length (the caller discards a body after an error). */
int preview_http_begin(struct cortexd *d, struct lws *wsi, const char *path, struct preview **slot,
		       struct api_resp *resp, size_t *body_len);
/* LWS_CALLBACK_HTTP_BODY: 0, or -1 to hang up. */
int preview_http_body(struct preview *pv, const void *in, size_t len);
enum preview_write {
	PREVIEW_MORE,  /* wrote, or nothing to write yet */
	PREVIEW_REPLY, /* nothing was sent: resp holds an error reply (502) */
	PREVIEW_DONE,  /* the response is complete: end the transaction */
	PREVIEW_CLOSE, /* hang up (a response cut short inside) */
};
/* LWS_CALLBACK_HTTP_WRITEABLE: at most one lws_write. */
enum preview_write preview_http_writeable(struct preview *pv, struct api_resp *resp);

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE on a preview route: 0 lets the upgrade
 * go on, else the callback's return value (an error reply was written). */
int preview_ws_confirm(struct cortexd *d, struct lws *wsi);
/* The WebSocket's events (from LWS_CALLBACK_ESTABLISHED, which makes the
 * preview in *slot, to LWS_CALLBACK_CLOSED).  The callback's return value. */
int preview_ws_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason,
			struct preview **slot, void *in, size_t len);

/* The browser's side has gone (or its transaction ended): the inside
 * connection is closed (a WebSocket's after a close frame) and the preview
 * freed once nothing refers to it.  NULL is fine. */
void preview_release(struct preview *pv);

/* The "cortex-preview" protocol: the adopted inside sockets. */
int preview_inside_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			    size_t len);

#endif
