/* server.h — internal to ws-agent: the state shared by server.c (connections,
 * protocol, the pending start) and runner.c (the agent processes on the loop).
 *
 * Agents: at most one is current (srv->current); any number are retiring.
 * Every spawned agent stays on srv->agents until it is reaped, its wsa.exit is
 * queued and all of its adopted descriptors have been closed by lws.
 */
#ifndef WSA_SERVER_H
#define WSA_SERVER_H

#include <jansson.h>
#include <libwebsockets.h>

#include "wsa.h"

enum fd_kind { FD_SIGNAL = 1, FD_INOTIFY, FD_LISTEN, FD_STDIN, FD_STDOUT, FD_STDERR, FD_PIDFD };

/* What an adopted descriptor is: its wsi's opaque user data points here. */
struct wsa_fdref {
	enum fd_kind kind;
	struct wsa_agent *agent; /* not owned; NULL for the server's own fds */
};

/* Per WebSocket connection (lws per_session_data, zeroed by lws). */
struct wsa_conn {
	struct lws *wsi;
	struct wsa_outq q;
	char *rx; /* reassembly of a fragmented message, grown up to the cap */
	size_t rx_len, rx_alloc;
	bool rx_oversize;
	bool rx_binary;
	bool rx_paused; /* a client not reading its replies stops being read */
	bool greeted;	/* its first message came: an attach continues the link seqs, else they restart */
};

struct wsa_agent {
	struct wsa_server *srv; /* not owned */
	struct wsa_agent *next; /* on srv->agents */
	int64_t gen;
	struct wsa_conn *owner; /* not owned; NULL once that connection closed */
	pid_t pid;		/* also the process group */
	bool reaped;
	int status;
	lws_usec_t reaped_at;
	bool retired;	/* stopped or replaced: output dropped, never current again */
	bool exit_sent; /* wsa.exit queued (or had nowhere to go) */
	bool paused;	/* stdout/stderr flow-controlled off (backpressure) */
	bool held;	/* detached: kept (paused) for the connection that attaches next */
	bool forced_eof;
	int eof_stage;

	/* stdin: written directly while the pipe takes it; the rest waits in inq
	 * and a dup of in_fd is adopted for POLLOUT only while inq is not empty
	 * (a write end adopted for good would be reported POLLERR forever once
	 * the agent closes its stdin, which lws's raw-file role never handles). */
	int in_fd;	     /* owned; -1 once closed */
	struct lws *in_wsi;  /* the adopted dup, while inq is not empty */
	struct wsa_outq inq; /* lines not yet written (cap WSA_CAP_STDIN_QUEUE) */
	size_t in_off;	     /* bytes of inq.head already written */

	/* stdout read by cortexd ("stdout":true in the start): out_fd is our
	 * own copy of the read end, never read here, kept so that the pipe comes
	 * back to us (out_wsi) when cortexd lets go of it: a retire (drained and
	 * dropped), stdout_back, a detach (with cortexd's partial line), a
	 * dropped link (resync: the first line only if whole). */
	int out_fd;	/* owned; -1 when we read stdout (out_wsi) or it is closed */
	bool resync;	/* taken back after cortexd vanished mid-read: see on_stdout_line */
	lws_sorted_usec_list_t sul_hup; /* reaped, cortexd's stdout not at EOF yet */

	struct lws *out_wsi, *err_wsi, *pid_wsi; /* NULL once closed */
	struct wsa_fdref ref_in, ref_out, ref_err, ref_pid;
	struct cx_lines out_lines, err_lines;
	char tail[CX_CAP_STDERR_TAIL];
	size_t tail_len;
	bool tail_cut;
	lws_sorted_usec_list_t sul_kill; /* SIGTERM -> SIGKILL */
	lws_sorted_usec_list_t sul_eof;	 /* reaped, pipes still open */
	lws_sorted_usec_list_t sul_in;	 /* re-arm POLLOUT on the stdin dup */
};

/* A start waiting for the context file. */
struct wsa_pending {
	bool active;
	int64_t gen;
	struct wsa_conn *owner; /* not owned */
	bool want_stdout;       /* cortexd reads the agent's stdout itself ("stdout":true) */
	lws_sorted_usec_list_t sul_deadline;
};

struct wsa_server {
	struct wsa_options opts;
	struct lws_context *ctx;
	struct lws_vhost *vh;
	char *ctx_dir;	      /* owned */
	const char *ctx_base; /* into ctx_base_buf */
	char *ctx_base_buf;   /* owned */
	int inotify_fd;	      /* owned by its wsi once adopted */
	struct lws *inotify_wsi, *signal_wsi, *listen_wsi;
	struct wsa_fdref ref_inotify, ref_signal, ref_listen;
	bool interrupted;
	bool stopping;	  /* context being destroyed: callbacks only let go */
	int64_t last_gen; /* of the last accepted start; 0 before any */
	struct wsa_pending pending;
	struct wsa_agent *agents;  /* owned: every agent not yet freed */
	struct wsa_agent *current; /* on agents, or NULL */
	lws_sorted_usec_list_t sul_detach; /* detached agents not attached again by then stop */
	/* The link seq: every line sent to cortexd but wsa.attached is numbered
	 * 1, 2, ... in the order sent; a connection that starts with "attach"
	 * continues the numbering, any other starts it again. */
	uint64_t link_seq;       /* of the last line numbered */
	struct wsa_outq sent;    /* the resend window: lines sent, not yet acked (WSA_CAP_RESEND) */
	bool dropped;           /* a link dropped with agents held, not attached again yet */
	/* While an agent's pipe is read: its owner, whose sends only queue;
	 * wsa_conn_send_now sends them after the read (not owned). */
	struct wsa_conn *defer;
	struct wsa_outq held_q; /* --hold-on-drop: what the dropped link had not sent, for the
	                           connection that attaches (bounded as that queue was);
	                           lines it had sent wait in the resend window */
};

/* ---- server.c, for runner.c ---- */
void wsa_conn_send(struct wsa_server *srv, struct wsa_conn *c, const char *data, size_t len);
void wsa_conn_send_json(struct wsa_server *srv, struct wsa_conn *c, json_t *obj); /* takes obj */
/* The same with descriptors that leave with it (SCM_RIGHTS, fd then fd2;
 * -1 for none); takes them. */
void wsa_conn_send_json_fds(struct wsa_server *srv, struct wsa_conn *c, json_t *obj, int fd, int fd2);
/* After an agent's read (srv->defer = c during it): what it queued to c,
 * sent now when it fits one message, else on c's writeable callback. */
void wsa_conn_send_now(struct wsa_server *srv, struct wsa_conn *c);
/* gen <= 0: the error carries no "gen". */
__attribute__((format(printf, 5, 6))) void wsa_send_error(struct wsa_server *srv,
							  struct wsa_conn *c, int64_t gen,
							  const char *code, const char *fmt, ...);
/* Adopt fd into the loop; NULL (fd closed by lws) on failure. */
struct lws *wsa_adopt_fd(struct wsa_server *srv, int fd, struct wsa_fdref *ref);
void wsa_close_wsi_async(struct lws *wsi);

/* ---- runner.c ---- */
/* Spawn the agent ctx describes as generation gen, make it current and send
 * wsa.started (or wsa.error spawn_failed) to owner. */
void wsa_runner_start(struct wsa_server *srv, struct wsa_conn *owner, int64_t gen, bool give_stdout,
		      const struct wsa_context *ctx);
/* stdout_back: cortexd could not use the stdout of gen it was passed: read it here. */
void wsa_runner_stdout_back(struct wsa_server *srv, struct wsa_conn *c, int64_t gen);
/* Queue data + "\n" for the stdin of the current agent gen (no_agent, stdin_full). */
void wsa_runner_input(struct wsa_server *srv, struct wsa_conn *c, int64_t gen, const char *data,
		      size_t len);
/* Retire the current agent (stop, or a newer start): its output is dropped from now on. */
void wsa_runner_retire(struct wsa_agent *a);
/* detach: hold every agent of c (paused, kept when c closes); attach: give
 * the held agents to c and let them run.  Both return the current agent's
 * gen and pid (0 when none). */
void wsa_runner_detach(struct wsa_server *srv, struct wsa_conn *c, const struct wsa_msg *m, int64_t *gen,
		       pid_t *pid);
void wsa_runner_attach(struct wsa_server *srv, struct wsa_conn *c, int64_t *gen, pid_t *pid);
/* Connection c is gone: retire every agent it started, send them nothing more. */
void wsa_runner_conn_closed(struct wsa_server *srv, struct wsa_conn *c);
void wsa_runner_reap_all(struct wsa_server *srv); /* SIGCHLD */
/* Backpressure: pause/resume the current agent's pipes around its owner's queue. */
void wsa_runner_flow_update(struct wsa_server *srv);
/* LWS_CALLBACK_RAW_RX_FILE / _WRITEABLE_FILE / _CLOSE_FILE for an agent's fd. */
int wsa_runner_fd_rx(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref);
int wsa_runner_fd_writeable(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref);
void wsa_runner_fd_closed(struct wsa_server *srv, struct lws *wsi, struct wsa_fdref *ref);
/* Going away: SIGKILL every agent's group and reap them (blocking, bounded by SIGKILL). */
void wsa_runner_kill_all(struct wsa_server *srv);
/* After lws_context_destroy: free what is left. */
void wsa_runner_free_all(struct wsa_server *srv);

#endif
