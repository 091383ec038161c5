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
#include <jansson.h>
#include <libwebsockets.h>

#include "cconfig.h"
#include "config.h"
#include "cx.h"
#include "sandbox.h"
#include "secrets.h"
#include "store.h"
#include "sync.h"

/* ---- outgoing frame queues (LWS_PRE headroom, byte-capped by the owner) ---- */
struct frame {
	struct frame *next;
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
};

/* A turn: one user message and the agent's answer. */
struct turn {
	uint64_t id;
	uint64_t t0_us;         /* message received by cortexd */
	uint64_t phase_start_us;
	double wait_sandbox_ms; /* waiting for the sandbox / ws-agent to be ready */
	double config_ms;       /* building the agent's argv and env */
	double context_ms;      /* writing /tmp/vf-pending-query.json */
	double install_ms;      /* waiting for MCP package installs */
	double sync_ms;         /* waiting for config files / package mounts */
	uint64_t wait_since_us; /* start of the current wait (install or sync), 0 if none */
	int config_changed;     /* the config differs from the previous turn's */
	int progress_sent;      /* bit set of cortex.progress phases already sent */
	int wait_kind;          /* 0 none, 1 installing packages, 2 syncing config */
	int sandbox_ok;         /* the sandbox was found ready (wait_sandbox_ms is final) */
	int cache_how;          /* enum ccache_how of the turn's first config lookup, -1 before */
	double first_token_ms;  /* < 0 until the first text delta is sent */
	int cold;               /* the sandbox had to be created or woken */
	int result_seen, done_sent, started;
	char *text;             /* the user's message */
	char *final_text;       /* the agent's result text */
	char stderr_tail[1024];
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

	struct client *clients;
	struct turn *turn;     /* the running turn, or NULL */
	char *next_text;       /* message received between cortex.done and the agent's exit */
	uint64_t seq;          /* last seq sent on this session */
	uint64_t turns;        /* turns started (argv gets --continue after the first) */
	int had_success;       /* an earlier turn finished: the agent can --continue */
	struct ccache_entry cc; /* the assembled config (cconfig.h) */
	struct sync_state sync; /* what is written in the sandbox (sync.h); a sync job owns it while sync_running */
	int sync_running;
	int sync_again;         /* config changed while a sync ran: run once more */
	pid_t agent_pid;        /* ws-agent's pid inside the sandbox */
	char last_turn_hash[65]; /* all_hash of the config the previous turn ran with */
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
int session_persist(struct session *s, cx_err *err);
json_t *session_to_json(const struct session *s);
void session_ensure_ready(struct session *s);   /* start create/wake if needed */
void session_sleep(struct session *s);
void session_delete(struct session *s);
void session_unref(struct session *s);
void sessions_shutdown(void);
void transcript_append(const struct session *s, const char *role, const char *text, uint64_t turn);
/* Bring the sandbox in line with the session's config in the background:
 * re-assemble if needed, start missing package installs, start a sync job
 * when hashes differ.  A turn waiting to start is advanced instead. */
void session_config_kick(struct session *s);
int session_busy(const struct session *s); /* a lifecycle or sync job owns the sandbox */
/* Start a sync job if the sandbox is behind c: 1 = a sync is running (wait
 * for it), 0 = the sandbox is current. */
int session_sync_needed(struct session *s, cconfig *c);

/* stream.c */
void stream_agent_connect(struct session *s);
void stream_session_ready(struct session *s);     /* sandbox + ws-agent are up */
void stream_session_failed(struct session *s, const char *code, const char *msg);
void stream_session_detach(struct session *s);    /* session going away: drop clients, agent */
void stream_turn_advance(struct session *s);      /* a waiting turn re-checks what it waits for */
int callback_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* http.c / api.c */
struct api_req {
	const char *method;  /* GET POST PUT DELETE */
	const char *path;
	const char *token;   /* may be NULL */
	const char *body;    /* may be NULL */
	size_t body_len;
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
