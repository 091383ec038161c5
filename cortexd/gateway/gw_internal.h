/* gw_internal.h — what the gateway's files share; not for the rest of cortexd.
 *
 *   gateway.c      public API (gateway.h), the in-flight list, reports, stats
 *   gw_http.c      the lws vhost: reading agent requests, writing responses
 *   gw_upstream.c  one curl thread per provider request
 *   gw_queue.c     the capped chunk queue between the two threads
 *   gw_pool.c      the in-flight pool: slots in all and per user (fair shares),
 *                  and the queue of requests waiting for one
 *   gw_sse.c       usage / model / error parsing of provider responses
 *
 * A request's life:
 *
 *   curl thread                          service thread
 *   -----------                          --------------
 *   header cb: status, content-type  -->  gateway_service(): on_writable
 *   write cb:  chunk -> queue         -->  WRITEABLE: headers, then one chunk
 *              (waits while the queue       per callback (HTTP/1.1 chunked),
 *               holds GW_CAP_QUEUE)         signals the queue as it drains
 *   end:       finished               -->  last chunk, final "0\r\n\r\n",
 *                                          join, report, free
 *
 * Every hand-over goes through the queue's mutex plus lws_cancel_service();
 * the service thread never blocks on curl (it joins a thread only once it has
 * finished).
 */
#ifndef CORTEX_GW_INTERNAL_H
#define CORTEX_GW_INTERNAL_H

#include <curl/curl.h>
#include <libwebsockets.h>
#include <pthread.h>

#include "gateway.h"
#include "gw_queue.h"
#include "gw_sse.h"

/* Caps of the gateway (belong in common/caps.h once it is integrated);
 * the parser's are in gw_sse.h. */
#define GW_CAP_BODY  (32u << 20) /* request body from the agent */
#define GW_CAP_QUEUE (1u << 20)	 /* provider bytes queued to one agent connection */
#define GW_CAP_PATH  2048u	 /* path + query */
#define GW_CAP_URL   4096u	 /* provider URL */
#define GW_CAP_KEY   1024u	 /* provider key */
#define GW_CAP_RHDRS 4096u	 /* provider response headers passed through */

struct gw_conn;

/* One forwarded request.  Fields are owned as marked:
 *   [svc]  service thread only
 *   [thr]  curl thread until the queue says finished, then the service thread (after join)
 *   [ro]   set before the thread starts, read-only afterwards */
struct gw_req {
	struct gw_req *next;  /* [svc] in gw_state.inflight */
	struct gw_conn *conn; /* [svc] not owned; NULL once the agent closed */
	struct lws *wsi;      /* [svc] not owned; NULL with conn */
	pthread_t thr;	      /* [svc] */
	char sess_id[40];     /* [ro] the session, for the report */
	char user[GW_USER_LEN]; /* [ro] its user: the request holds a slot of the pool for it */

	/* request */
	char method[16];	 /* [ro] */
	char url[GW_CAP_URL];	 /* [ro] */
	char key[GW_CAP_KEY];	 /* [ro] wiped in gw_req_free */
	struct curl_slist *hdrs; /* [ro] holds the key: wiped in gw_req_free */
	char *body;		 /* [ro] owned */
	size_t body_len;
	uint64_t t_recv_us; /* [ro] request fully received */

	struct gw_queue queue; /* body chunks, hdr_done, finished, abort */

	/* response metadata: written by the thread before hdr_done / finished */
	int status;
	char ctype[128];
	char rhdrs[GW_CAP_RHDRS]; /* "name: value\n" passed through to the agent */
	size_t rhdrs_len;

	/* [thr] */
	int curl_code;
	char curl_err[CURL_ERROR_SIZE];
	uint64_t t_first_us; /* first body byte, 0 before */
	struct gw_sse parse; /* usage, model, error */

	/* [svc] */
	int hdr_sent;
	int chunked; /* HTTP/1.1 agent: chunked framing */
	int timeout_cleared;
	uint64_t t_last_us;
	unsigned events;
	double fwd_us_sum, fwd_us_max;
};

/* Per-connection data of the gateway protocol.  Its token is looked up as
 * soon as the headers are in: an authorized request takes its slot of the
 * pool then, so a body sent slowly holds a slot of its own user; or, the
 * pool being full, waits in the queue for one (reading its body meanwhile). */
struct gw_conn {
	struct gw_req *req; /* not owned (gw_state.inflight owns it) */
	int dispatched;
	int too_big;
	int discard; /* the body is read and dropped: the answer is made here */
	int http11;
	const char *method;	/* static string */
	char path[GW_CAP_PATH]; /* path + "?" + query, re-encoded */
	char token[128];	/* wiped after the lookup */
	int had_token;
	int auth; /* authorize's answer (0, -1, CX_NOTFOUND) */
	int slot; /* holds a slot of the pool for user (until handed to req) */
	int queued;		/* waits in the pool's queue for a slot (gw_pool.c) */
	struct gw_conn *qnext;	/* [queued] the user's next queued request; not owned */
	struct lws *wsi;	/* [queued] not owned: the connection, woken when a slot is given */
	uint64_t qseq;		/* [queued] order of arrival in the queue */
	uint64_t t_queued_us;	/* [queued] cx_mono_us() at the headers */
	char sess_id[40];
	char user[GW_USER_LEN];
	char base[GW_CAP_URL]; /* the session's provider */
	char key[GW_CAP_KEY];  /* wiped in conn_reset */
	uint64_t t_hdr_us;     /* cx_mono_us() at the headers: the body's deadline counts from it */
	char *body;
	size_t body_len, body_cap;
	/* a response made here (errors): status + JSON body */
	int lstatus;
	int retry_after; /* seconds; 0 = no header */
	char *lbody;
};

/* One user's slots in the pool and requests in its queue (gw_pool.c). */
struct gw_pool_user {
	char user[GW_USER_LEN];
	unsigned n;		     /* slots held */
	unsigned nq;		     /* requests queued; n == nq == 0: a free entry */
	struct gw_conn *qhead, *qtail; /* queued, oldest first; not owned */
};

/* The gateway's state: service thread only, except ctx (curl threads wake
 * the service thread with it). */
struct gw_state {
	struct lws_context *ctx;
	struct lws_vhost *vh;
	int port;
	struct gateway_ops ops;
	struct gw_req *inflight;
	struct gateway_limits lim;
	unsigned used;	  /* slots held, by conns and reqs */
	unsigned queued;  /* conns in the queue */
	uint64_t qseq;	  /* the last queued conn's gw_conn.qseq */
	unsigned nusers;  /* entries of users[] in use (some may be free) */
	/* an entry per holder of a slot or a queued request at most:
	 * lim.max_inflight + lim.max_queued entries (owned) */
	struct gw_pool_user *users;
	struct gw_stats stats;
};
extern struct gw_state gw_state;

/* gateway.c */
/* The curl thread has finished: join it, report, unlink, free. */
void gw_req_finalize(struct gw_req *q);
/* Count r in the stats and hand it to ops.report. */
void gw_report_send(const char *sess_id, const struct gw_report *r);

/* gw_pool.c */
enum gw_pool_verdict {
	GW_POOL_OK,	    /* c->slot: c holds a slot */
	GW_POOL_QUEUED,	    /* c->queued: c waits for one (the granted callback wakes it) */
	GW_POOL_USER_CAP,   /* the user's share is taken, in flight and queued (429) */
	GW_POOL_GLOBAL_CAP, /* the pool is taken and there is no queue (529) */
	GW_POOL_QUEUE_FULL, /* the pool and the queue are full (529) */
};
/* Take a slot for c's user, or queue c for one (refusals are counted in the
 * stats); *held, *queued: the user's before the call. */
enum gw_pool_verdict gw_pool_take(struct gw_conn *c, struct lws *wsi, unsigned *held,
				  unsigned *queued);
/* Give back a slot of user's: it goes to a queued conn, if any. */
void gw_pool_put(const char *user);
/* c leaves the queue without a slot (it closed, or waited too long). */
void gw_pool_leave(struct gw_conn *c);
/* Size the pool for gw_state.lim (gateway_start); granted wakes a queued
 * conn that got its slot (gw_http_granted).  0 or -1. */
int gw_pool_start(void (*granted)(struct gw_conn *c), cx_err *err);
/* Forget every slot and queued conn, free the pool (gateway_stop). */
void gw_pool_clear(void);

/* gw_http.c */
struct lws_vhost *gw_http_listen(struct lws_context *ctx, const char *host, int port);
/* c, queued, has been given a slot: its request goes on (on its next
 * WRITEABLE, or once its body is in). */
void gw_http_granted(struct gw_conn *c);
#define GW_ACCEPT_PROTOCOL "cortex-gateway-accept" /* the unix listener, a raw file */

/* gw_upstream.c */
int gw_upstream_init(cx_err *err);
void gw_upstream_cleanup(void);
struct gw_req *gw_req_new(void);
void gw_req_free(struct gw_req *q);
/* Run the provider request on a thread of its own; 0 or an errno. */
int gw_req_start(struct gw_req *q);
/* curl's message for a failed transfer. */
const char *gw_req_strerror(const struct gw_req *q);

#endif
