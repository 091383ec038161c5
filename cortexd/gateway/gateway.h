/* gateway.h — the model gateway: an Anthropic-Messages-compatible HTTP
 * endpoint for sandboxes only, so provider keys never enter a sandbox.
 *
 * Each session's agent gets ANTHROPIC_BASE_URL = http://127.0.0.1:<gateway
 * port> and ANTHROPIC_API_KEY = the session's capability token ("cxg_" + 64
 * hex, in memory only, gone with the session).  A request's token (x-api-key,
 * or Authorization: Bearer) is looked up to its session and that session's
 * provider URL and key (gateway_ops.authorize); the gateway swaps them in and
 * forwards the request with libcurl on its own thread, streaming the response
 * back as it arrives (no buffering beyond one capped queue).  When the
 * provider request ends, a report (status, timings, usage parsed from the SSE
 * events) goes to gateway_ops.report on the service thread.
 *
 * Fair shares: an authorized request holds a slot of the in-flight pool from
 * its headers (while its body arrives, however slowly) until its provider
 * request ends.  Past its user's share: 429 rate_limit_error.  Past the whole
 * pool it waits in a queue (its body read meanwhile) until a slot is free,
 * the fewest-holding user's oldest request first; past the queue's length or
 * its wait: 529 overloaded_error.  Both with retry-after (struct
 * gateway_limits).
 *
 * Threads: gateway_* calls and the report callback run on the lws service
 * thread; curl runs on one thread per in-flight request (bounded). */
#ifndef CORTEX_GATEWAY_H
#define CORTEX_GATEWAY_H

#include <libwebsockets.h>
#include <stdint.h>

#include "cx.h"
#include "gw_sse.h" /* struct gw_usage */

#define GW_TOKEN_LEN	      68   /* "cxg_" + 64 hex */
#define GW_USER_LEN	      72   /* a user's name, as authorize gives it */
#define GW_MAX_INFLIGHT_LIMIT 1024 /* the most max_inflight may be (a thread each) */
#define GW_MAX_QUEUED_LIMIT   4096 /* the most max_queued may be (a body each, <= GW_CAP_BODY) */
#define GW_RETRY_AFTER_S      2	   /* retry-after of a 429 / 529 made by the gateway */

/* One provider request, as seen by the gateway. */
struct gw_report {
	int status;          /* provider HTTP status; 0 = none (connect failure, timeout) */
	int curl_code;       /* CURLE_*; 0 = complete */
	int cut;             /* the response ended before the provider finished it */
	int stream;          /* the request asked for SSE */
	int agent_gone;      /* the agent closed its connection first (cancel, crash): not the provider's fault */
	uint64_t recv_us;    /* cx_mono_us() when the request was received (which turn it belongs to) */
	double ttfb_ms;      /* request received -> provider's first body byte */
	double total_ms;     /* request received -> last byte sent to the agent */
	unsigned events;     /* body chunks forwarded */
	double fwd_us_sum;   /* per chunk: received from the provider -> written to the agent */
	double fwd_us_max;
	struct gw_usage usage; /* from message_start / message_delta (or the JSON body) */
	char model[128];     /* from the response, else the request */
	char error[512];     /* the provider's error message, or curl's */
};

/* What the gateway needs from the rest of the daemon: sessions and their
 * providers.  Both hooks run on the service thread. */
struct gateway_ops {
	void *arg;
	/* token -> the session it belongs to.  0: sess_id and user set, url/key filled with its
	 * provider; CX_NOTFOUND: no session has this token; -1: sess_id and user set but the
	 * session has no provider.  Called once a request's headers are in.  Service thread.
	 * key is wiped by the gateway after use. */
	int (*authorize)(void *arg, const char *token, char sess_id[40], char user[GW_USER_LEN],
			 char *url, size_t ucap, char *key, size_t kcap);
	/* A provider request of session sess_id ended (service thread); the session may be gone. */
	void (*report)(void *arg, const char *sess_id, const struct gw_report *r);
};

/* The in-flight pool: requests holding a slot (body arriving or provider
 * request running), in all and per user.  1 <= max_inflight_per_user <=
 * max_inflight <= GW_MAX_INFLIGHT_LIMIT (config: gateway.max_inflight, 32, and
 * gateway.max_inflight_per_user, 8).  A user's share bounds its requests in
 * flight and queued together.  Past the pool, up to max_queued requests wait
 * (no slot, no thread) for queue_timeout_ms at most; max_queued 0: 529 at
 * once.  A body still arriving body_deadline_s after its headers closes the
 * connection (lws closes one idle for its context's timeout_secs, but a byte
 * now and then keeps it open). */
struct gateway_limits {
	unsigned max_inflight;
	unsigned max_inflight_per_user;
	unsigned body_deadline_s;  /* >= 1 (config: gateway.body_deadline_s, 60) */
	unsigned max_queued;	   /* <= GW_MAX_QUEUED_LIMIT (config: gateway.max_queued, 256) */
	unsigned queue_timeout_ms; /* >= 1 (config: gateway.queue_timeout_ms, 30000) */
};

/* Listen on host:port (port 0 = any free one) as a second vhost of ctx.
 * ops and lim are copied; authorize is required, report may be NULL. */
int gateway_start(struct lws_context *ctx, const char *host, int port,
		  const struct gateway_ops *ops, const struct gateway_limits *lim, cx_err *err);
int gateway_port(void);
/* Also serve the gateway on the Unix socket NAME in the dir dirfd (root-only:
 * sandboxes in their own network namespace reach it through an O_PATH fd
 * ws-agent is handed, see ws-agent/forward.c).  After gateway_start; the
 * socket is made connectable by any uid (mode 0666), the dir guards it. */
int gateway_listen_unix(int dirfd, const char *name, cx_err *err);
/* Abort in-flight requests and join their threads (before the context goes). */
void gateway_stop(void);
/* The service thread woke from lws_cancel_service: move curl's data to the sockets. */
void gateway_service(void);
void gateway_token_new(char out[GW_TOKEN_LEN + 1]);

struct gw_stats {
	uint64_t requests, unauthorized, by_class[6]; /* by_class[status/100], [0] = no response */
	uint64_t overloaded;	    /* every 529 made for the pool: the three below */
	uint64_t refused_global_cap; /* refused: the pool was taken and max_queued is 0 (529) */
	uint64_t refused_queue_full; /* refused: the pool and the queue were full (529) */
	uint64_t queue_timeouts;     /* refused: queued for queue_timeout_ms (529) */
	uint64_t refused_user_cap;   /* refused: the user held its share (429) */
	uint64_t slow_body; /* closed: the body still arriving past body_deadline_s */
	unsigned inflight, inflight_users; /* slots held now, by how many users */
	unsigned queued;		   /* requests waiting for a slot now */
	/* the wait of requests that got a slot from the queue */
	uint64_t queue_wait_us_sum, queue_wait_count;
	uint64_t queue_wait_bucket[10]; /* cumulative-ready counts for GW_QUEUE_WAIT_BOUNDS_MS */
	struct gateway_limits lim;
	uint64_t ttfb_us_sum, ttfb_count, fwd_us_sum, fwd_events;
	uint64_t ttfb_bucket[12]; /* cumulative-ready counts for GW_TTFB_BOUNDS_MS */
};
#define GW_TTFB_BOUNDS_MS {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}
#define GW_QUEUE_WAIT_BOUNDS_MS {10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}
void gateway_get_stats(struct gw_stats *out);

#endif
