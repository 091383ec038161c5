/* nproxy.h — a request for a session another node owns, proxied to that
 * node (issue 16 point 3, docs/scale-out.md "Proxy to the owner").
 *
 *   client ──HTTP/WS──▶ node B "cortex" protocol (http.c, server.c route here)
 *                         │  request head + body / WebSocket frames
 *                         ▼
 *                       lws client connection "cortex-owner" to the owner A's
 *                       advertised URL, X-Cortex-Hop: 1 (A never proxies it
 *                       again: 508 proxy_loop), the caller's token
 *                         │  status, headers, body as it arrives / frames
 *                         ▼
 *                       written back to the client, one lws_write per WRITEABLE
 *
 * Each direction queues whole pieces (a body read or a frame fragment, one
 * copy each) up to CX_CAP_PREVIEW_BUF; past it the reading side pauses
 * (lws_rx_flow_control) until the queue drains to half.  Close codes pass
 * through both ways.  A that cannot be reached (connect refused, or not
 * connected — a WebSocket: not upgraded — within cluster.proxy_timeout_ms;
 * a response then takes as long as its route): HTTP 503 owner_unreachable
 * with Retry-After; a WebSocket gets a cortex.error frame and close 1013.
 * A preview port's request (preview.h) passes preview.c's request headers as
 * sent and the preview server's response headers (capped at NP_HDRCAP).
 * Service thread only. */
#ifndef CORTEX_NPROXY_H
#define CORTEX_NPROXY_H

#include "edge.h"

struct nproxy;
struct http_conn;

/* The registry of its /metrics series; at start. */
void nproxy_init(void);

/* path (an HTTP route or a WebSocket's GET URI) is a session route of a
 * session this node does not hold, whose owner the owner cache knows to be
 * another live node: 1 and that node's base URL in url; else 0.  No store
 * read (owner.h: owner_cache_lookup). */
int nproxy_target(struct cortexd *d, const char *path, char *url, size_t cap);

/* Start proxying h's request (its body is taken) to url: 0 (the response
 * comes from nproxy_http_writeable), or -1 with an error reply in h->resp. */
int nproxy_http_begin(struct cortexd *d, struct lws *wsi, struct http_conn *h, const char *url);
/* A piece of a preview body streamed to the owner (h->pv_stream): queued;
 * the client's reading pauses past NP_QCAP until the owner takes it.  0 or -1. */
int nproxy_http_body(struct nproxy *px, const void *in, size_t len);
enum nproxy_write {
	NPROXY_MORE,  /* wrote, or nothing to write yet */
	NPROXY_REPLY, /* nothing was sent: resp holds an error reply (503) */
	NPROXY_DONE,  /* the response is complete: end the transaction */
	NPROXY_CLOSE, /* hang up (a response cut short by the owner) */
};
/* LWS_CALLBACK_HTTP_WRITEABLE: at most one lws_write. */
enum nproxy_write nproxy_http_writeable(struct nproxy *px, struct api_resp *resp);

/* The WebSocket upgrade of a proxied session (nproxy_target said 1):
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE.  0 lets it go on, else the callback's
 * return value (401, 508 written). */
int nproxy_ws_confirm(struct cortexd *d, struct lws *wsi);
/* Its events from LWS_CALLBACK_ESTABLISHED (which makes the proxy in *slot
 * and connects to url) to LWS_CALLBACK_CLOSED.  The callback's return value. */
int nproxy_ws_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason,
		       struct nproxy **slot, const char *url, void *in, size_t len);

/* The client's side has gone (or its transaction ended): the owner's
 * connection is closed (after the queued frames and the close code, for a
 * WebSocket) and the proxy freed.  NULL is fine. */
void nproxy_release(struct nproxy *px);

/* The "cortex-owner" protocol: the client connections to owners. */
int nproxy_owner_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			  size_t len);

/* A request that arrived with X-Cortex-Hop for a session this node does not
 * hold either (cortex_owner_proxy_loops_total). */
void nproxy_count_loop(void);

#endif
