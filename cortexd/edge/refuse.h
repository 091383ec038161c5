/* refuse.h — what the edge refuses for a full pool or a bad request head,
 * counted for /metrics (cortex_refused_total{pool}, cortex_http_rejected_total{reason}),
 * and client WebSockets lws closed for a protocol error (cortex_ws_protocol_errors_total).
 * Service thread only. */
#ifndef CORTEX_REFUSE_H
#define CORTEX_REFUSE_H

#include <stdio.h>

enum refuse_pool {
	REFUSE_HTTP,	      /* http.max_conns: 503 */
	REFUSE_HTTP_IP,	      /* http.max_conns_per_ip: 429 */
	REFUSE_WS_SESSION,    /* ws.max_clients_per_session: 429 at the upgrade */
	REFUSE_WS_USER,	      /* ws.max_clients_per_user: 429 at the upgrade */
	REFUSE_SESSIONS_USER, /* sessions.max_per_user: 429 on create */
	REFUSE_IMAGE_BUILDS,  /* images.max_builds / max_user_builds: 429 */
	REFUSE_PREVIEW,	      /* CX_CAP_PREVIEW_CONNS per session: 429 */
	REFUSE_N
};

enum reject_reason {
	REJECT_URI_TOO_LONG,   /* 414 */
	REJECT_HEAD_TOO_LARGE, /* 431 */
	REJECT_BAD_HEAD,       /* 400: not an HTTP/1 request head */
	REJECT_HEAD_TIMEOUT,   /* 408: no whole head within the door's time */
	REJECT_DROPPED,	       /* closed at accept without a reply: too many refusals pending */
	REJECT_N
};

void refuse_count(enum refuse_pool p);
void reject_count(enum reject_reason r);
/* A client WebSocket lws closed with 1002: an unmasked frame (the patched
 * lws, third_party/lws), a bad opcode, continuation or reserved bits. */
void ws_protocol_error_count(void);
/* The /metrics writer (registered by server.c). */
void refuse_metrics_write(FILE *f, void *arg);

#endif
