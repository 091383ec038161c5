/* wsa.h — ws-agent: the WebSocket agent server that runs inside a sandbox.
 *
 * cortexd holds one WebSocket connection per session to this process over a
 * Unix socket (protocol v2, docs/protocol.md).  ws-agent is a process manager
 * plus a pipe: a "start" frame (generation G) picks up the context file and
 * spawns ONE long-lived agent; "input" frames are written to its stdin as
 * lines (wsa.started also passes cortexd a duplicate of that stdin, which
 * cortexd writes itself while it can: docs/protocol.md); every stdout line of the current agent goes back verbatim, one frame
 * per line.  A newer start or a "stop" retires the agent (SIGTERM, SIGKILL
 * after a grace; its later output is drained and dropped).  Every spawned
 * agent ends with exactly one wsa.exit frame.
 *
 * Everything runs on one libwebsockets service loop: the agents' pipes and
 * pidfds, the inotify fd and a signalfd are adopted into the loop as raw file
 * descriptors, timers are lws_sul.  No threads, no sleeps.
 *
 * Files: context.c (read + parse the context file), proto.c (parse one
 * message from cortexd), agent.c (fork/exec,
 * signal, reap one process), common/lines.c (line splitting, UTF-8: shared
 * with cortexd, which reads a passed stdout itself), outq.c
 * (outgoing frame queue), runner.c (the running agents on the loop: pipes,
 * stdin queue, retiring, wsa.exit), server.c (connections, protocol, the
 * pending start and its wait for the context file), main.c (args).
 */
#ifndef WSA_H
#define WSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "caps.h"
#include "cx.h"
#include "lines.h"

/* Caps specific to ws-agent (the shared table is common/caps.h). */
#define WSA_CAP_STDIN_QUEUE  (1u << 20) /* bytes queued to one agent's stdin      */
/* one cortexd -> ws-agent message: an input frame carrying a full stdin queue,
 * JSON-escaped, or a detach frame carrying the partial stdout line cortexd
 * had read (up to a line cap, in hex): the larger (grown on demand, not
 * allocated up front) */
#define WSA_CAP_CLIENT_FRAME                                                                       \
	((2 * WSA_CAP_STDIN_QUEUE > 2 * CX_CAP_AGENT_LINE ? 2 * WSA_CAP_STDIN_QUEUE                  \
							  : 2 * CX_CAP_AGENT_LINE) +               \
	 (4u << 10))
#define WSA_CAP_OUT_QUEUE    (8u << 20)  /* queued to cortexd before stdout pauses */
#define WSA_CAP_OUT_MESSAGE  (256u << 10) /* lines coalesced into one message to cortexd */
/* The resend window: lines sent to cortexd and not yet acknowledged, kept
 * for a cortexd that attaches after the one that read them died.  Past the
 * cap the oldest go; a resume from before them is reported (wsa.attached
 * "lost"), never silent. */
#define WSA_CAP_RESEND       (4u << 20)
#define WSA_READ_CHUNK       (256u << 10) /* one read() from an agent pipe         */
#define WSA_STDOUT_PIPE      (256u << 10) /* the agent's stdout pipe (F_SETPIPE_SZ)  */
#define WSA_CAP_FWD_BUF      (256u << 10) /* forwarder: pipe size per direction, per pair (kernel pages, charged to the sandbox) */
#define WSA_CAP_FWD_CONNS    64          /* gateway forwarder: pairs at once (then backlog) */
/* fds lws tracks (links from cortexd, agents' pipes and pidfds).  Without it
 * lws sizes two zeroed tables by RLIMIT_NOFILE, which the sandbox inherits
 * from cortexd (the unit sets 1048576): 16 MB written at every start. */
#define WSA_CAP_LWS_FDS      1024

#define WSA_PROTOCOL      "cortex-agent"
#define WSA_FD_PROTOCOL   "wsa-fd" /* internal: adopted descriptors only */
#define WSA_KILL_GRACE_MS 2000     /* SIGTERM -> SIGKILL, and exit -> pipe EOF */
#define WSA_DETACH_GRACE_MS 60000  /* detached agents not attached again by then are stopped */

/* ---- context.c: the context file of one start ---- */

struct wsa_context {
	char **argv; /* NULL-terminated; argv[0] is an absolute path */
	char **envp; /* NULL-terminated "K=V"; exactly the agent's environment */
	char *cwd;   /* absolute; "/" when the file gives none */
};

/* Parse {"argv":[...],"env":{...},"cwd":"..."}; on failure *out is untouched. */
int wsa_context_parse(const char *buf, size_t len, struct wsa_context *out, cx_err *err);
/* Open, unlink at once, read (cap CX_CAP_CONTEXT_FILE) and parse the file.
 * Returns CX_NOTFOUND when there is no file (yet), without setting err. */
int wsa_context_take(const char *path, struct wsa_context *out, cx_err *err);
void wsa_context_free(struct wsa_context *ctx);

/* ---- proto.c: one message from cortexd ---- */

/* detach: cortexd is about to re-exec (an upgrade restart): the agents stay
 * when this connection closes, their output waits in their pipes; attach: a
 * (new) connection takes them over (docs/protocol.md). */
enum wsa_msg_type {
	WSA_MSG_INPUT,
	WSA_MSG_START,
	WSA_MSG_STOP,
	WSA_MSG_PING,
	WSA_MSG_DETACH,
	WSA_MSG_ATTACH,
	WSA_MSG_ACK,
	WSA_MSG_STDOUT_BACK /* cortexd cannot read the stdout it asked for: ws-agent reads it */
};

struct wsa_msg {
	enum wsa_msg_type type;
	int64_t gen;	    /* > 0; input, start, stop */
	const char *data;   /* input: the line for the agent's stdin, no '\n' (in root) */
	size_t data_len;
	uint64_t seq;	    /* ack, attach, input's "ack": a link seq (has_seq) */
	bool has_seq;
	/* start: "stdout":true, cortexd reads the agent's stdout itself (the
	 * read end rides on wsa.started).  detach: "stdout" names the gen whose
	 * stdout cortexd was reading (out_gen > 0), with the partial line it had
	 * read (hex, decoded into partial) or "dropping" (inside an over-long line). */
	bool want_stdout;
	int64_t out_gen;
	char *partial;	    /* owned (wsa_msg_free), partial_len bytes */
	size_t partial_len;
	bool partial_dropping;
	struct json_t *root; /* the parsed message (owned: wsa_msg_free) */
};

/* 0 and *out filled, or -1 with why (a bad_request message) and *err_gen
 * the generation the error answers (0 when none applies). */
int wsa_msg_parse(const char *buf, size_t len, struct wsa_msg *out, int64_t *err_gen, char *why,
		  size_t cap);
void wsa_msg_free(struct wsa_msg *m);

/* ---- agent.c: the agent process ---- */

struct wsa_child {
	pid_t pid;  /* also its process group id */
	int pidfd;  /* -1 when pidfd_open is unavailable (then SIGCHLD reaps) */
	int in_fd;  /* write end of the agent's stdin: O_NONBLOCK, O_CLOEXEC */
	int out_fd; /* read end of the agent's stdout */
	int err_fd; /* read end of the agent's stderr */
};

/* Spawn ctx->argv[0] in a new process group with exactly ctx->envp, cwd,
 * stdin/stdout/stderr pipes to us and every other fd closed.  Fails
 * (err->code = the exec errno) if the program could not be started; the
 * failed child is reaped.  The caller owns every fd in *out. */
int wsa_agent_spawn(const struct wsa_context *ctx, struct wsa_child *out, cx_err *err);
/* Signal the whole process group; ESRCH (already gone) is not an error. */
void wsa_agent_signal_group(pid_t pgid, int sig);
/* Reap pid if it has exited: 1 reaped (*status set), 0 still running, -1 error. */
int wsa_agent_try_reap(pid_t pid, int *status);

/* ---- outq.c: outgoing frames, each with LWS_PRE headroom ---- */

struct wsa_frame {
	struct wsa_frame *next;
	size_t len;          /* payload bytes, starting at data + LWS_PRE */
	uint64_t seq;        /* a line to cortexd: its link seq once sent, 0 before */
	bool unnumbered;     /* wsa.attached: outside the sequence, never resent */
	int fd;              /* -1, or a descriptor that leaves with this frame's first
	                        byte (SCM_RIGHTS: wsa.started's stdin); owned until sent */
	int fd2;             /* -1, or a second one with fd (wsa.started's stdout) */
	unsigned char data[]; /* LWS_PRE headroom + payload */
};

struct wsa_outq {
	struct wsa_frame *head, *tail;
	size_t bytes; /* payload bytes queued */
	size_t count;
};

int wsa_outq_push(struct wsa_outq *q, const char *payload, size_t len, cx_err *err);
/* The same, with a '\n' appended (a line for an agent's stdin). */
int wsa_outq_push_line(struct wsa_outq *q, const char *payload, size_t len, cx_err *err);
struct wsa_frame *wsa_outq_pop(struct wsa_outq *q); /* caller frees with free() */
void wsa_outq_append(struct wsa_outq *q, struct wsa_frame *f); /* takes f */
void wsa_outq_clear(struct wsa_outq *q); /* frees the frames, closes their fds */
/* Move every frame of from to the end of to (from is left empty). */
void wsa_outq_splice(struct wsa_outq *to, struct wsa_outq *from);
struct lws;
#define WSA_DIRECT_IOV 64   /* lines gathered into one sendmsg */
#define WSA_DIRECT_MIN 2048 /* writeable callback: smaller lines are copied */
/* The head lines of q (min bytes and more, at most WSA_DIRECT_IOV) as one
 * binary message in one sendmsg from where they lie (outq.c): 1 when not
 * done (the caller copies), 0, or -1 (close).  Lines sent are numbered from
 * *seq and handed to keep().  A frame with an fd only ever heads a message
 * (its fd rides on that sendmsg), so it is never copied. */
int wsa_outq_send_direct(struct wsa_outq *q, struct lws *wsi, size_t min, uint64_t *seq,
			 void (*keep)(void *arg, struct wsa_frame *f), void *arg);

/* ---- server.c: the WebSocket protocol (runner.c is its internal half) ---- */

struct wsa_options {
	const char *socket_path;  /* not owned; NULL when listen_fd is given */
	int listen_fd;            /* an inherited listening Unix socket (cortexd's
	                             --listen-fd), or -1: listen on socket_path */
	const char *context_path; /* not owned */
	unsigned context_timeout_ms;
	int ready_fd; /* -1: none */
	unsigned hold_on_drop_ms; /* 0: a connection that closes takes its agents down.
	                             N: it acts as a "detach" (cortexd died; a new one
	                             attaches): its agents are held, output waiting in
	                             their pipes, for N ms (--hold-on-drop MS) */
};

struct wsa_server;
/* Create the lws context serving opts->listen_fd (or listening on
 * opts->socket_path) and report readiness. */
int wsa_server_create(const struct wsa_options *opts, struct wsa_server **out, cx_err *err);
/* Serve until SIGTERM/SIGINT; kills and reaps every agent on the way out. */
int wsa_server_run(struct wsa_server *srv, cx_err *err);
void wsa_server_destroy(struct wsa_server *srv);

/* forward.c: listen on 127.0.0.1:port (the sandbox's own loopback) and pipe
 * each connection to the Unix socket upstream_fd is an O_PATH fd of (cortexd's
 * model gateway), on a thread of its own that blocks every signal. */
int wsa_forward_start(int port, int upstream_fd, cx_err *err);

#endif
