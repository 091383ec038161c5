/* daemon.h — cortexd's in-memory model, shared by its modules.
 *
 * Threads: everything here is owned by the libwebsockets service thread,
 * except what a worker job touches while `job_running` is set on a session
 * (its sandbox pointer and preparation result); see work.h.
 *
 *   http.c     lws plumbing for HTTP routes (bodies, caps, responses)
 *   api.c      the routes themselves: request in, status + JSON out
 *   session.c  session registry, persistence, sandbox lifecycle jobs
 *   stream.c   client WebSockets, the ws-agent connection, turns
 *   server.c   lws context, protocols, service loop
 */
#ifndef CORTEX_DAEMON_H
#define CORTEX_DAEMON_H

#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "cconfig.h"
#include "gateway.h"
#include "guard.h"
#include "sentence.h"
#include "config.h"
#include "cx.h"
#include "sandbox.h"
#include "secrets.h"
#include "store.h"
#include "sync.h"

/* ---- outgoing frame queues (LWS_PRE headroom, byte-capped by the owner) ---- */
struct frame {
	struct frame *next;
	uint64_t seq;        /* session seq of the frame (0: none), for resume */
	size_t len;
	unsigned char buf[]; /* LWS_PRE bytes of headroom, then len bytes of payload */
};
struct fqueue {
	struct frame *head, *tail;
	size_t bytes;
};
struct frame *frame_new(const void *data, size_t len);
void fq_push(struct fqueue *q, struct frame *f);
struct frame *fq_pop(struct fqueue *q);
void fq_clear(struct fqueue *q);
int fq_write_one(struct lws *wsi, struct fqueue *q);

/* ---- sessions ---- */
enum sess_state { SS_CREATING, SS_READY, SS_PAUSED, SS_SLEEPING, SS_WAKING, SS_ERROR };
enum ag_state { AG_NONE, AG_STARTING, AG_HOT };
const char *sess_state_name(enum sess_state s);

struct session;

/* One client WebSocket (per-connection data of the "cortex" protocol). */
struct client {
	struct lws *wsi;
	struct session *sess; /* not owned; NULL once the session is gone */
	struct client *next;  /* in sess->clients */
	struct fqueue out;
	char *rx;             /* reassembly of a fragmented message */
	size_t rx_len;
	int rx_overflow;
	int closing;
	int held;             /* joined mid-turn: gets that turn's frames only after "resume" */
	uint64_t last_seq;    /* highest seq queued to this client (resume never repeats one) */
};

/* A turn: one user message and the agent's answer. */
struct turn {
	uint64_t id;
	uint64_t t0_us;         /* message received by cortexd */
	double wait_sandbox_ms; /* waiting for the sandbox / ws-agent to be ready (create, wake, thaw) */
	double config_ms;       /* config cache lookup (and assembly on a miss) */
	double context_ms;      /* writing /tmp/vf-pending-query.json (only when the agent starts) */
	double install_ms;      /* waiting for MCP package installs */
	double sync_ms;         /* waiting for config files / package mounts */
	double agent_start_ms;  /* waiting for the agent to boot (cold agent) */
	uint64_t wait_since_us; /* start of the current wait, 0 if none */
	int wait_kind;          /* 0 none, 1 installing packages, 2 syncing config, 3 starting the agent */
	int config_changed;     /* the config differs from the previous turn's */
	int progress_sent;      /* bit set of cortex.progress phases already sent */
	int sandbox_ok;         /* the sandbox was found ready (wait_sandbox_ms is final) */
	int cache_how;          /* enum ccache_how of the turn's first config lookup, -1 before */
	double first_token_ms;  /* < 0 until the first text delta is sent */
	const char *wake;       /* NULL, "paused", "sleeping", "creating": what the turn woke */
	int agent_cold;         /* the agent was not hot when the message came */
	int sent;               /* the message is written to the agent (agent_gen) */
	uint64_t sent_us;
	uint64_t agent_gen;
	int result_seen, done_sent;
	int cancelled;          /* interrupt sent (client cancel, no client left, guard) */
	int revoked;            /* the stream guard stopped it: its output is dropped */
	int stopped;            /* ended for the client (revoked, provider error): later output dropped */
	/* From the model gateway (all provider requests of the turn). */
	struct gw_usage usage;
	unsigned model_requests;
	double model_ttfb_ms;   /* first provider request's time to first byte, < 0 before */
	int provider_status;    /* last non-2xx status, 0 if none */
	char model[128];
	char outcome[40];       /* "ok", "agent_error", "revoked", or the cortex.error code */
	char *text;             /* the user's message */
	struct guard_scan gs_text;  /* stream guard over the text deltas (split-safe) */
	struct guard_scan gs_line;  /* ... and over each other line, one at a time */
	struct sentencer sz;        /* voice: text deltas -> cortex.sentence */
};
struct session {
	char id[40];
	char user[72];
	char surface[8];
	int64_t created_at, last_active_at;
	int idle_sleep_s;
	enum sess_state state;
	char error[512];
	int refs;          /* registry + pending jobs; freed at 0 */
	int deleted;
	int job_running;   /* a worker owns sb right now */
	sandbox *sb;
	cx_err job_err;
	char dir[4096];    /* DATA/sessions/<id> */

	/* ws-agent connection (client role). */
	struct lws *agent_wsi;
	int agent_up;
	struct fqueue agent_out;
	char *agent_rx;
	size_t agent_rx_len;
	int agent_rx_overflow;
	int agent_paused;  /* rx flow-controlled because a client is slow */
	int agent_dirfd;   /* O_PATH of DATA/sessions/<id>/run while connecting/connected, -1 */

	struct client *clients;
	struct turn *turn;     /* the running turn, or NULL */
	char *next_text;       /* message received after cortex.revoked, before the agent stopped */
	uint64_t seq;          /* last seq sent on this session */
	uint64_t turns;        /* turns started */
	int had_success;       /* an earlier turn finished: a restarted agent can --continue */
	struct ccache_entry cc; /* the assembled config (cconfig.h) */
	struct sync_state sync; /* what is written in the sandbox (sync.h); a sync job owns it while sync_running */
	int sync_running;
	int sync_again;         /* config changed while a sync ran: run once more */
	pid_t agent_pid;        /* ws-agent's pid inside the sandbox */
	char last_turn_hash[65]; /* all_hash of the config the previous turn ran with */
	const struct surface_profile *prof;

	/* The hot agent (ws-agent protocol v2: docs/protocol.md). */
	int ag_state;           /* enum ag_state */
	uint64_t ag_gen;        /* generation of the current agent; strictly increasing */
	char ag_hash[65];       /* all_hash of the config it was started with */
	uint64_t ag_start_us;
	int ag_crashes;         /* exits without a finished turn since the last good one */
	int want_agent;         /* keep one hot: set by create/wake/client/message, cleared when idle */
	int wake_pending;       /* a client connected while a pause/sleep job ran: wake after it */
	char ag_stderr[1024];   /* the current agent's latest stderr, for error frames */
	char gw_token[GW_TOKEN_LEN + 1]; /* the agent's key for the model gateway (memory only) */
	uint64_t int_seq;       /* interrupt request ids */

	/* Timers (lws_sul, service thread).  session_unref cancels them. */
	lws_sorted_usec_list_t sul_idle;  /* release the agent, pause, sleep */
	lws_sorted_usec_list_t sul_agent; /* agent boot deadline; interrupt -> stop deadline */
	lws_sorted_usec_list_t sul_grace; /* a turn without any client */
	uint64_t active_us;     /* monotonic time of the last activity */
	uint64_t ready_t0_us;   /* create / wake requested (0: not measuring) */
	double ready_ms;        /* create/wake -> agent hot, < 0 before */

	/* Frames of the running or last turn, for "resume" (capped). */
	struct fqueue replay;
	uint64_t replay_dropped; /* highest seq dropped from replay by the cap, 0 if none */
	struct session *next;  /* registry */
};

struct daemon {
	config cfg;
	store *st;
	struct lws_context *ctx;
	struct lws_vhost *vh;
	struct session *sessions;
	int port;
	char admin_token[256];
	secrets_key skey;   /* master key for secrets at rest */
	volatile int stop;
};
extern struct daemon D;

/* session.c */
int sessions_load(cx_err *err);
struct session *session_create(const char *user, const char *surface, int idle_sleep_s, cx_err *err);
struct session *session_find(const char *id);
struct session *session_by_gateway_token(const char *token); /* NULL if none; constant-time compare */
int session_persist(struct session *s, cx_err *err);
json_t *session_to_json(const struct session *s);
void session_ensure_ready(struct session *s);   /* start create/wake if needed */
void session_sleep(struct session *s);       /* stop every process; home and workspace stay */
int session_pause(struct session *s, cx_err *err); /* freeze (a worker job) */
int session_thaw(struct session *s, cx_err *err);  /* paused -> ready, on the service thread */
void session_touch(struct session *s);       /* activity: re-arm the idle timers */
void session_delete(struct session *s);
void session_unref(struct session *s);
void sessions_shutdown(void);
void transcript_append(const struct session *s, const char *role, const char *text, uint64_t turn);
/* Put key = o (consumed) from a worker: never on the message path. */
void store_put_later(const char *key, json_t *o);
/* Bring the sandbox in line with the session's config in the background:
 * re-assemble if needed, start missing package installs, start a sync job
 * when hashes differ.  A turn waiting to start is advanced instead. */
void session_config_kick(struct session *s);
int session_busy(const struct session *s); /* a lifecycle or sync job owns the sandbox */
/* Start a sync job if the sandbox is behind c: 1 = a sync is running (wait
 * for it), 0 = the sandbox is current. */
int session_sync_needed(struct session *s, cconfig *c);

struct api_resp;
/* records.c: one record per turn (seed 001's per-run metrics) */
void record_turn(const struct session *s, const struct turn *t, const char *path, const char *outcome,
		 double first_token_ms, double total_ms);
void records_metrics(FILE *f);          /* Prometheus: first-token histograms */
void records_api_turns(const char *user, int admin, const char *query, struct api_resp *resp);
void records_api_summary(const char *user, int admin, const char *query, struct api_resp *resp);

/* stream.c */
void stream_agent_connect(struct session *s);
void stream_session_ready(struct session *s);     /* sandbox + ws-agent are up */
void stream_session_failed(struct session *s, const char *code, const char *msg);
void stream_session_detach(struct session *s);    /* session going away: drop clients, agent */
void stream_agent_detach(struct session *s);      /* sandbox stopping: end the turn, drop the agent */
void stream_turn_advance(struct session *s);      /* a waiting turn re-checks what it waits for */
/* Config is current: start / restart the hot agent if the session wants one. */
void stream_agent_reconcile(struct session *s, const cconfig *cfg);
void stream_agent_release(struct session *s);     /* stop the hot agent (idle) */
const char *stream_agent_state(const struct session *s); /* none|starting|hot|busy */
void stream_session_timers_cancel(struct session *s);
/* The model gateway's view of a session: its provider (0, or -1 if it has
 * none; the caller wipes key), and a provider request that ended. */
int stream_session_provider(struct session *s, char *url, size_t ucap, char *key, size_t kcap);
void stream_gateway_report(struct session *s, const struct gw_report *r);
/* Per surface first-token figures over the last turns (ring of STREAM_FT_RING). */
#define STREAM_FT_RING 1024
struct surface_stats {
	uint64_t turns, over_first_token, over_response;
	double p50, p95; /* ms, over the ring; 0 when empty */
	uint64_t by_path[3]; /* warm, cold, config_changed */
};
void stream_surface_stats(int surface, struct surface_stats *out);
struct stream_counters {
	uint64_t agent_starts, agent_crashes, agent_releases, messages_sent, revoked;
	uint64_t guard_scans, guard_us;
};
void stream_get_counters(struct stream_counters *out);
int callback_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* http.c / api.c */
struct api_req {
	const char *method;  /* GET POST PUT DELETE */
	const char *path;
	const char *token;   /* may be NULL */
	const char *body;    /* may be NULL */
	size_t body_len;
	const char *query;   /* URI args "a=1&b=2", may be NULL */
};
struct api_resp {
	int status;
	char *body;          /* malloc'd JSON, or NULL for an empty body */
	const char *ctype;   /* NULL = application/json */
};
void api_handle(const struct api_req *req, struct api_resp *resp);
void api_error(struct api_resp *resp, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* status and a JSON body (o consumed; NULL = empty body). */
void api_reply(struct api_resp *resp, int status, json_t *o);
/* Request bodies, shared by every route: a JSON object or a 4xx in resp (NULL). */
json_t *api_body_object(const struct api_req *req, struct api_resp *resp, int allow_empty);
/* -1 with a 400 in resp when o has a member outside allowed (NULL-terminated). */
int api_only_keys(json_t *o, const char *const *allowed, const char *what, struct api_resp *resp);
/* Who is calling: 0 user (name in out), 1 admin, -1 no/bad token. */
int api_auth(const char *token, char *out_user, size_t cap);

#endif
