/* session.h — cortexd's in-memory model of a session, and the daemon.
 *
 * A session is split by owner: each part below is written by one module of
 * core/ and only on the libwebsockets service thread.  Worker jobs never touch
 * a session: they get copies of what they need and return a result struct
 * that the owning module applies on the service thread (lifecycle.c).
 *
 *   struct session          session.c   identity, registry, refcount
 *   struct lifecycle        lifecycle.c state machine, sandbox, jobs, idle timers
 *   struct agent_link       agent.c     the ws-agent connection and the hot agent
 *   struct fanout           fanout.c    clients, seq, the replay kept for resume
 *   struct turn *           turn.c      the running turn
 *   cc / sync               lifecycle.c the cached config, what the sandbox holds */
#ifndef CORTEX_SESSION_H
#define CORTEX_SESSION_H

#include <signal.h>
#include <stdint.h>
#include <jansson.h>
#include <libwebsockets.h>

#include "cconfig.h"
#include "config.h"
#include "cx.h"
#include "frames.h"
#include "gateway.h"
#include "guard.h"
#include "wslink.h"
#include "lines.h"
#include "sandbox.h"
#include "secrets.h"
#include "sentence.h"
#include "store.h"
#include "sync.h"

/* Public states (the contract's names, sess_state_name()). */
enum sess_state { SS_CREATING, SS_READY, SS_PAUSED, SS_SLEEPING, SS_WAKING, SS_ERROR, SS_N };
/* What the lifecycle drives the session towards. */
enum lc_goal {
	GOAL_ASLEEP, /* no sandbox (home and workspace stay) */
	GOAL_PAUSED, /* sandbox frozen */
	GOAL_UP,     /* sandbox up and in line with the config; no agent wanted */
	GOAL_HOT,    /* ... and a hot agent running that config */
	GOAL_GONE,   /* deleted: tear down once no job runs */
};
/* The one sandbox job a session may have running (sync runs beside it only
 * when the job is none). */
enum lc_job { JOB_NONE, JOB_PREPARE, JOB_STOP, JOB_FREEZE };
enum ag_state { AG_NONE, AG_STARTING, AG_HOT };
/* The lifecycle's steps, in order (lifecycle.c has the table). */
enum lc_step { STEP_SANDBOX, STEP_LINK, STEP_CONFIG, STEP_PACKAGES, STEP_SYNC, STEP_REPO, STEP_AGENT, STEP_N };

const char *sess_state_name(enum sess_state s);

struct session;
struct fswatch;
struct exec;
struct sync_job;
struct agent_line;

/* One client WebSocket (per-connection data of the "cortex" protocol). */
struct client {
	struct lws *wsi;      /* NULL in unit tests: frames only queue */
	struct session *sess; /* not owned; NULL once the session is gone */
	struct client *next;  /* in sess->fan.clients */
	struct fqueue out;    /* references to shared frames (frames.h) */
	struct rxbuf rx;
	int closing;
	int cut;              /* too slow: closed with 1008 "client too slow" at its next WRITEABLE */
	int held;             /* joined mid-turn: gets that turn's frames only after "resume" */
	unsigned watch;       /* roots it watches, bit 0 /workspace, 1 /home/agent (fswatch.c) */
	uint64_t last_seq;    /* highest stream seq queued to this client, not counting errors
	                         to it alone (resume never repeats one) */
};

/* The durable turn log (turnlog.c). */
#define TURNLOG_BIG_MIN 1024u /* frames this long are written from where they lie */
#define TURNLOG_BIG_MAX 64u   /* of them pending at once (then a flush) */
#define TURNLOG_SLOTS 2u      /* = TLR_SLOTS (turnlog_ring.h; turnlog.c asserts it) */

struct turnlog_state {
	int fd;                  /* SESSION_DIR/turn.ring (turnlog_ring.h); <= 0 = not open */
	char *buf;               /* records gathered, not yet written */
	size_t len, alloc;
	/* Big frames are not copied into buf: a reference each, written (writev)
	 * after buf's first big_at[i] bytes; pending = buf + their bytes. */
	struct frame *big[TURNLOG_BIG_MAX];
	size_t big_at[TURNLOG_BIG_MAX];
	unsigned nbig;
	size_t pending;
	unsigned slot;           /* the slot being written (or, before in_slot, the newest found) */
	uint64_t off;            /* bytes of it written */
	uint64_t gen;            /* its generation (the highest in the file) */
	int in_slot;             /* a slot was started since the file was opened */
	uint64_t turn;           /* the turn it holds (0: none) */
	int dirty;               /* written since the last fdatasync */
	/* For the sync pass (turnlog.c): a slot is written from its start with
	 * no gap, so ext[i] bytes of slot i hold records or zeros since the
	 * open; dur[i] of them are known allocated, with the file's size, on
	 * disk (a completed fdatasync covered them).  Below dur an overwrite
	 * changes no metadata. */
	uint64_t ext[TURNLOG_SLOTS], dur[TURNLOG_SLOTS];
	uint64_t open_id;        /* which open of the file (a pass's result is for that one only) */
	int range_ok;            /* ext4 without data=journal: sync_file_range is exact for an overwrite */
	int legacy_maybe;        /* turn.log / turn.old (the text format) may exist */
	int end_gathered;        /* pending ends with the last turn's "E" (turnlog_end_batched) */
};

struct fanout {
	struct client *clients;
	unsigned nclients;       /* in clients (the edge's ws.max_clients_* caps) */
	uint64_t seq;            /* last seq sent on this session */
	struct fqueue replay;    /* frames of the running or last turn, for "resume" (capped) */
	uint64_t replay_dropped; /* highest seq dropped from replay by the cap, 0 if none */
	int rx_paused;           /* agent link reading paused: even the fastest client is behind */
	int restored;            /* replay holds the last turn's frames from the turn log (a
	                            restart): a client joining is held until "resume", as mid-turn */
	struct turnlog_state tlog;
};

struct agent_link {
	struct lws *wsi;         /* a raw socket: cortexd speaks the WebSocket itself (wslink.h) */
	int up;                  /* connected to ws-agent, handshake done */
	int dirfd;               /* O_PATH of DATA/sock while connecting/connected, -1 */
	struct fqueue out;
	struct rxbuf rx;         /* a line cut at the end of what was read */
	struct wsl_rx ws;        /* the frame parser */
	char ws_key[25];         /* Sec-WebSocket-Key of the handshake */
	int ws_sent;             /* the handshake request is written */
	char *ws_head;           /* the reply head, gathered (WSL_HEAD_MAX) until up */
	size_t ws_head_len;
	char *tx;                /* bytes being written (a frame with its header), tx_off sent */
	size_t tx_len, tx_off;
	/* The hot agent (ws-agent protocol v2: docs/protocol.md). */
	enum ag_state state;
	uint64_t gen;            /* generation of the current agent; strictly increasing */
	char hash[65];           /* all_hash of the config it was started with */
	uint64_t start_us;
	int crashes;             /* exits without a finished turn since the last good one */
	int had_success;         /* a turn finished: a restarted agent can --continue */
	char stderr_tail[1024];  /* the current agent's latest stderr, for error frames */
	uint64_t int_seq;        /* interrupt request ids */
	lws_sorted_usec_list_t sul_boot; /* start deadline */
	/* What the agent runs that a control request can change (agent_live.c):
	 * hash is cfg->base_hash, fixed at start; these follow live applies. */
	char live_hash[65];      /* cfg->live_hash it runs */
	char mcp_hash[65];       /* cfg->mcp_hash it runs */
	char live_model[128];    /* the model it runs ("" = its default) */
	char live_perm[32];      /* the permission mode it runs ("" = its default) */
	cconfig *pend_cfg;       /* owned ref: the config a boot or a live apply is bringing in */
	int boot_waits;          /* control responses a starting agent still owes */
	int applying;            /* control responses a live apply still waits for */
	int apply_failed;        /* one was refused (or not answered in time): restart instead */
	lws_sorted_usec_list_t sul_apply; /* live apply deadline (agent.start_timeout_ms) */
	uint64_t apply_seq;      /* live apply request ids */
	uint64_t live_applies;   /* config changes taken without a restart */
	int pid;                 /* the current agent's pid (wsa.started), 0 */
	int attaching;           /* adopted after an upgrade restart: "attach" sent first,
	                            the agent is hot again once wsa.attached names its gen */
	/* ws-agent numbers the lines it sends (the link seq) and keeps them
	 * until acked (its resend window); an attach names the last one the turn
	 * log has and ws-agent sends again what follows (docs/reliability.md). */
	uint64_t rx_seq;         /* link seq of the last whole line read */
	uint64_t dup_upto;       /* lines up to this seq were read before the attach: dropped */
	uint64_t logged_seq;     /* rx_seq as the turn log has it ("L" record) */
	int seq_known;           /* logged_seq came from the turn log at load: an attach names it */
	uint64_t acked_seq;      /* the last ack sent to ws-agent */
	size_t ack_bytes;        /* read since that ack */
	lws_sorted_usec_list_t sul_ack;
	/* The agent's stdin, passed by ws-agent with wsa.started (agent_stdin.c). */
	int stdin_fd;            /* cortexd's own description of it, or -1: inputs on the link */
	int rx_fd;               /* received on the link, waiting for its wsa.started, or -1 */
	int rx_fd2;              /* a second one with it (stdin, then stdout), or -1 */
	/* The agent's stdout, passed with wsa.started too and read by cortexd
	 * (agent_stdout.c); ws-agent reads it when out_fd is -1. */
	struct lws *out_wsi;     /* the adopted pipe, or NULL */
	int out_fd;              /* cortexd's own description of it, or -1 */
	uint64_t out_gen;        /* the generation whose stdout it is */
	struct cx_lines out_lines; /* the line cut at the end of a read (cap CX_CAP_AGENT_LINE) */
	int out_feeding;         /* a line of it is being handled (its buffer stays) */
	unsigned link_inputs;    /* inputs of this generation sent on the link */
	/* Sends to ws-agent go through io (agent.c by default; a fake in unit tests). */
	const struct agent_io *io;
};
struct agent_io {
	void (*send)(struct session *s, const char *txt, size_t len);
};

/* A turn: one user message and the agent's answer. */
enum turn_wait { TW_NONE, TW_INSTALL, TW_SYNC, TW_AGENT };
struct turn {
	struct session *sess;   /* not owned: the session the turn belongs to */
	uint64_t id;
	uint64_t t0_us;         /* message received by cortexd */
	double wait_sandbox_ms; /* waiting for the sandbox / ws-agent (create, wake, thaw) */
	double config_ms;       /* config cache lookup (and assembly on a miss) */
	double context_ms;      /* writing the context file (only when the agent starts) */
	double install_ms;      /* waiting for MCP package installs */
	double sync_ms;         /* waiting for config files / package mounts */
	double agent_start_ms;  /* waiting for the agent to boot (cold agent) */
	uint64_t wait_since_us; /* start of the current wait, 0 if none */
	enum turn_wait wait;
	int config_changed;     /* the config differs from the previous turn's */
	unsigned progress_sent; /* bit set of cortex.progress phases already sent */
	int sandbox_ok;         /* the sandbox was found ready (wait_sandbox_ms is final) */
	int cache_how;          /* enum ccache_how of the turn's first config lookup, -1 before */
	double first_token_ms;  /* < 0 until the first text delta is sent */
	int awaiting_first;     /* sent, no text delta yet: counted in work.h's first tokens */
	const char *wake;       /* NULL, "paused", "sleeping", "creating": what the turn woke */
	int agent_cold;         /* the agent was not hot when the message came */
	int sent;               /* the message is written to the agent (agent_gen) */
	uint64_t sent_us;
	uint64_t agent_gen;
	int result_seen, done_sent;
	int output_seen;        /* a line of the agent's output came for this turn */
	int resent;             /* given to a fresh agent after its agent ended without a word */
	int cancelled;          /* interrupt sent (client cancel, no client left, guard) */
	int revoked;            /* the stream guard stopped it: its output is dropped */
	int stopped;            /* ended for the client (revoked, provider error): later output dropped */
	struct gw_usage usage;  /* from the model gateway, over the turn's provider requests */
	unsigned model_requests;
	double model_ttfb_ms;   /* first provider request's time to first byte, < 0 before */
	int provider_status;    /* last non-2xx status, 0 if none */
	char model[128];
	char outcome[40];       /* "ok", "agent_error", "revoked", or the cortex.error code */
	char *text;             /* the user's message */
	struct guard_scan gs_text;  /* stream guard over the text deltas (split-safe) */
	struct guard_scan gs_line;  /* ... and over each other line, one at a time */
	struct sentencer sz;        /* voice: text deltas -> cortex.sentence */
	lws_sorted_usec_list_t sul_int;   /* interrupt sent: stop the agent past this */
};

struct lifecycle {
	enum sess_state state;
	enum lc_goal goal;
	enum lc_job job;
	sandbox *sb;             /* owned; set only by a job's done on the service thread */
	pid_t wsa_pid;           /* ws-agent's pid inside the sandbox */
	struct sync_job *sync_job; /* running sync (its result is applied when done) */
	int in_reconcile;        /* reconcile is running: a nested call only asks for one more pass */
	int again;
	int failed;              /* a step failed: no retry until a request or a message */
	int broken;              /* the sandbox is there but its ws-agent link was lost (ws-agent
	                            or init died, killed from inside): the sandbox step replaces it */
	int torn_down;           /* deleted and torn down */
	int pinned;              /* the sandbox holds a pin of its image (the stop job unpins) */
	int cloning;             /* the repo step's clone runs (clone.c) */
	int image_wait;          /* the image is being built or imported: polled (sul_image) */
	lws_sorted_usec_list_t sul_image;
	char clone_error[600];   /* why the last clone failed ("" = none): reported once */
	uint32_t clone_objects, clone_total;
	char sync_failed[65];    /* all_hash whose sync failed ("" = none) */
	char error[512];
	lws_sorted_usec_list_t sul_idle;  /* release the agent, pause, sleep */
	lws_sorted_usec_list_t sul_grace; /* a turn without any client */
	uint64_t active_us;      /* monotonic time of the last activity */
	uint64_t ready_t0_us;    /* create / wake requested (0: not measuring) */
	double ready_ms;         /* create/wake -> agent hot, < 0 before */
	char last_turn_hash[65]; /* all_hash of the config the previous turn ran with */
	/* Agent boots (boot.c): a slot held while the agent starts, or a place in line. */
	int boot_slot;           /* holds one of agent.max_booting */
	int boot_queued;         /* waits in d->boot_head (a reference held) */
	struct session *boot_next;
	int boot_timeouts;       /* boots timed out since the agent was last hot or asked for */
	int agent_failed;        /* gave up starting the agent (error state) until asked again */
};

struct cortexd;

/* What the session was created with (persisted; see session_record). */
struct session_spec {
	char image[128];         /* image name; "host" = the host's root (operator opt-in) */
	uint64_t disk_mb;        /* home + /workspace + the root's upper, kernel-enforced */
	uint32_t cpu_weight;     /* cgroup cpu weight */
	uint32_t cpu_max_milli;  /* 0 = no cap */
	uint64_t memory_mb;      /* cgroup memory.max; 0 = the config's (sandbox.memory_max_mb) */
	uint64_t pids;           /* cgroup pids.max; 0 = the config's (sandbox.pids_max) */
	uid_t uid;               /* the session's own uid (and gid), from sandbox.uid_base.. */
	char repo_url[1024];     /* "" = no repo */
	char repo_ref[256];      /* "" = the remote's HEAD */
	char repo_secret[128];   /* the user's secret holding the token; "" = none */
	int repo_done;           /* cloned into /workspace (never cloned again) */
};

struct session {
	struct cortexd *d;       /* not owned */
	char id[40];
	char user[72];
	char surface[8];
	const struct surface_profile *prof;
	int64_t created_at, last_active_at;
	int idle_sleep_s;
	char dir[4096];          /* DATA/sessions/<id> */
	int refs;                /* registry + jobs + the agent connection; freed at 0 */
	int deleted;
	int released;            /* deleted here only: another node owns it now (files kept) */
	int uid_held;            /* spec.uid's bit in d->uid_used is this session's (freed with it) */
	char gw_token[GW_TOKEN_LEN + 1]; /* the agent's key for the model gateway (memory only) */
	uint64_t turns;          /* turns started (kept across restarts: turnstate/<id>) */
	uint64_t lost_turn;      /* the turn a previous cortexd died in (until the next turn), 0 = none */
	unsigned previews;       /* open preview-port connections (edge/preview.c) */
	unsigned files_inflight; /* files API operations running (edge/files_route.c) */
	struct exec *execs;      /* commands run by clients and POST .../exec (exec.c) */
	unsigned nexec;          /* in execs */
	unsigned exec_launching; /* exec launch jobs borrowing lc.sb: no stop or freeze meanwhile */
	char *next_text;         /* message received after cortex.revoked, before the agent stopped */
	struct session_spec spec;
	/* An upgrade restart (handover.c): detach sent / answered; the sandbox
	 * handed to the next cortexd; taken back from the previous one. */
	struct {
		int detaching, detached, kept, adopted;
		pid_t failed_monitor; /* its sandbox could not be taken back: reaped after the cgroup reap */
	} ho;
	json_t *network;         /* the session's own egress policy (owned), NULL = its user's */
	/* What the running sandbox's image says about the agent (set by the
	 * prepare job's done; docs/images.md "What applies to the agent"). */
	struct {
		char agent_cmd[512];
		char cwd[1024];
		json_t *env;          /* the image's Env, owned; NULL = none */
	} rt;

	struct lifecycle lc;
	struct agent_link link;
	struct fanout fan;
	struct fswatch *fsw[2];  /* watches of /workspace and /home/agent (fswatch.c), NULL */
	struct turn *turn;       /* the running turn, or NULL */
	struct ccache_entry cc;  /* the assembled config (cconfig.h) */
	struct sync_state sync;  /* what is written in the sandbox (sync.h) */
	struct session *next;    /* registry */
};

struct put_item;

/* The daemon.  One per process, passed explicitly. */
struct cortexd {
	config cfg;
	store *st;
	struct lws_context *ctx; /* NULL in unit tests: timers and sockets are skipped */
	struct lws_vhost *vh;
	struct session *sessions;
	unsigned char *uid_used; /* sandbox uids held here, a bit per slot of sandbox.uid_count (session.c) */
	int port;
	char admin_token[256];
	secrets_key skey;        /* master key for secrets at rest */
	volatile sig_atomic_t stop;
	volatile sig_atomic_t upgrade; /* SIGHUP: stop, hand the sandboxes over, re-exec */
	char *const *argv;       /* main's, for the re-exec (not owned) */
	char exe[4096];          /* this binary's path at start (a new one there is what runs next) */
	json_t *handover;        /* the previous process's handover record, while loading */
	unsigned ho_pending;     /* detach answers still awaited */
	/* Off-path store writes (store_put_later), service thread only: the
	 * queue of the next group commit and the batch being written. */
	struct {
		struct put_item *head, *tail;
		size_t queued;
		int inflight;
		uint64_t batches, written; /* commits and puts handed to them */
		uint64_t coalesced;      /* puts folded into a later put of their key in the same commit */
		size_t bytes, bytes_high; /* held by queued and in-flight puts; its high-water mark */
		uint64_t trims;          /* malloc_trim after a backlog drained */
	} puts;
	uint64_t store_write_failures;
	int store_failing;       /* the last write failed: /healthz says 503 */
	char store_error[200];   /* for the log and operators, never for clients */
	struct imgstore *images; /* container/imgstore.h; NULL if it could not open */
	struct builder *builder; /* container/build.h */
	int default_importing;   /* images.import_dir_default is being imported (server.c) */
	char npm_disk[4096];     /* the npm cache's own disk is mounted here ("" = none) */
	/* Agent boots in progress and the line of those waiting (boot.h). */
	unsigned booting, boot_queued;
	struct session *boot_head, *boot_tail;
	lws_sorted_usec_list_t sul_boot_kick;
	/* Upward events, set by lifecycle_init(): modules below the lifecycle
	 * report through them instead of calling up. */
	void (*reconcile)(struct session *s);
	void (*agent_output)(struct session *s, const struct agent_line *l, const char *raw, size_t len);
	void (*agent_down)(struct session *s, int why /* enum agent_down */, const char *code, const char *msg);
	/* The agent left "starting" (hot, gone, stopped): its boot slot is free. */
	void (*agent_boot_end)(struct session *s);
};

/* session.c: the registry */
/* A session not yet in the registry (session_link adds it). */
struct session *session_new(struct cortexd *d, const char *id, const char *user, const char *surface);
void session_link(struct session *s);
struct session *session_find(struct cortexd *d, const char *id);
char *session_record(const struct session *s, char *key, size_t cap);
json_t *session_to_json(const struct session *s);
/* Read spec fields of a record (or of a create body: the same names) into s->spec. */
void session_spec_load(struct session *s, json_t *o);
/* Sandbox uids held on this node: one bit per slot of [uid_base, uid_base +
 * uid_count), taken when a session is made or loaded and given back when the
 * session is freed, after its sandbox is destroyed.  Sessions being created
 * (not yet linked) hold theirs too: a burst of creates gets distinct uids.
 * session_uid_alloc: the lowest free uid, taken; 0 if none is left.
 * session_uid_alloc_from: the first free at or after slot start (wrapping).
 * session_uid_take: a stored uid, taken: 0, or 1 when another session here
 * holds it already (or it is outside the range: not tracked, 0).
 * session_uid_put: given back. */
uid_t session_uid_alloc(struct cortexd *d);
uid_t session_uid_alloc_from(struct cortexd *d, uint32_t start);
int session_uid_take(struct cortexd *d, uid_t uid);
void session_uid_put(struct cortexd *d, uid_t uid);
void session_unref(struct session *s);
void session_unlink(struct session *s);
/* Timers: no-ops without an lws context (unit tests). */
void session_timer(struct session *s, lws_sorted_usec_list_t *sul, sul_cb_t cb, uint64_t us);
/* Put key = o (consumed) from a worker, group-committed: never on the message path. */
/* A failed write counts in store_write_failures, marks the store failing
 * (GET /healthz 503) and sends cortex.error to session sid's clients. */
void store_put_later(struct cortexd *d, const char *sid, const char *key, json_t *o);
/* The same with the value already a JSON text (val: malloc'd, taken; NULL = out of memory). */
void store_put_later_str(struct cortexd *d, const char *sid, const char *key, char *val);
/* Write every queued put now, on this thread (shutdown, after work_stop). */
void store_put_flush(struct cortexd *d);
void transcript_append(const struct session *s, const char *role, const char *text, uint64_t turn);

#endif
