/* exec.h — commands run in a session's sandbox for its clients
 * (docs/protocol.md "Exec"): {"type":"exec",...} on the session WebSocket
 * streams cortex.stdout / cortex.stderr frames and ends with cortex.exit;
 * POST /v1/sessions/{id}/exec runs one and answers with its capped output.
 *
 * A command runs like the agent: sandbox_exec() in the session's sandbox
 * (same uid, cgroup, limits, seccomp filter), in a process group of its own,
 * with an exit fd (sandbox.h): init reports the wait status there, and
 * closing our end kills the group (cancel, timeout, the client gone).  Its
 * pipes (or the master of a pty of the sandbox's devpts) are adopted into
 * the lws loop ("cortex-exec"); the launch itself (a request to init) runs
 * on a worker while s->exec_launching keeps the lifecycle from stopping or
 * freezing the sandbox under it.  A session that sleeps is woken as a
 * message would; one that cannot be woken fails the command with
 * session_unavailable.
 *
 * Caps: exec.max_per_session and exec.max_per_user commands at once
 * (cortex.error too_many_execs / 429); output is read only while the
 * client's queue is under half of ws.client_queue_max_bytes (the pipe then
 * fills and the command blocks on write); a POST reply keeps at most
 * exec.max_output bytes per stream (truncated).  Service thread only. */
#ifndef CORTEX_EXEC_H
#define CORTEX_EXEC_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "session.h"

#define EXEC_ID_MAX 64
#define EXEC_MAX_ARGS 1024
#define EXEC_MAX_ENV 256
#define EXEC_MAX_STRINGS (96u << 10) /* argv + env bytes (init takes 128 KiB with the image's env) */
#define EXEC_STDIN_CAP (256u << 10)  /* stdin bytes waiting for the command to read */

/* A checked request. */
struct exec_spec {
	char id[EXEC_ID_MAX + 1];
	char **argv;      /* NULL-terminated, owned */
	char **env;       /* the caller's NAME=value entries, NULL-terminated, owned */
	char cwd[1025];
	int timeout_s;    /* 0 = none */
	int pty;
	unsigned cols, rows;
	int base64;       /* "encoding":"base64": data in both directions is base64 */
	char *stdin_data; /* POST: the whole stdin (owned), or NULL */
	size_t stdin_len;
};

/* Check an exec frame or POST body (http: the POST's keys and defaults)
 * into out.  -1 with a message (for a bad_frame / 400). */
int exec_spec_parse(json_t *o, int http, const config *cfg, struct exec_spec *out, char *msg, size_t mcap);
void exec_spec_clear(struct exec_spec *sp);
/* Strict base64 (RFC 4648, padding optional): the bytes into out (room for
 * n bytes), their count, or -1. */
long exec_b64_decode(const char *in, size_t n, char *out);

/* Client frames (edge/ws_client.c), each with a string "id". */
enum exec_frame { EXEC_FRAME_START, EXEC_FRAME_STDIN, EXEC_FRAME_RESIZE, EXEC_FRAME_CANCEL };
void exec_client_frame(struct session *s, struct client *c, enum exec_frame type, json_t *frame);
/* The session is deleted or cortexd stops: every command is killed (a POST
 * waiting for one gets 404 / the reason), before its clients are let go. */
void exec_session_gone(struct session *s, const char *why);
/* The client has gone: its commands are killed. */
void exec_client_left(struct client *c);
/* The client's queue went down: paused output is read again. */
void exec_client_drained(struct client *c);

/* What POST .../exec answers. */
struct exec_result {
	int code;           /* exit code (128 + n for a signal), -1 when unknown */
	const char *signal; /* "KILL", ... or NULL */
	int timed_out, truncated;
	const char *out, *err; /* not NUL-terminated */
	size_t nout, nerr;
	double ms;
	const char *fail_code; /* non-NULL: it did not run (session_unavailable, exec_failed, ...) */
	const char *fail_msg;
};
typedef void (*exec_done_fn)(void *arg, const struct exec_result *r);
/* Start a one-shot command (sp consumed).  -1 when refused now (status and
 * message: 429 too_many_execs); otherwise done is called once, later, on the
 * service thread. */
int exec_oneshot(struct session *s, struct exec_spec *sp, exec_done_fn done, void *arg, int *status, char *msg,
		 size_t mcap);

/* lws callback of the adopted pipes ("cortex-exec"). */
int exec_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
/* Registers the /metrics writer. */
void exec_init(void);

#endif
