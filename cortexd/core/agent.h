/* agent.h — the agent link: cortexd's WebSocket to the session's ws-agent
 * (a Unix socket in the sandbox's run dir), and the hot agent ws-agent runs.
 *
 * The agent is started once per session in stream-json input mode and kept
 * hot: a warm message is one write into the agent's stdin, whose pipe
 * ws-agent passed with wsa.started (agent_stdin.c), or else one "input"
 * frame on the open link.  Readiness is
 * the agent's answer to an initialize control request (no sleep).  What the
 * link sees is reported upward through the cortexd hooks (session.h):
 * reconcile (connected, hot), agent_down (why an agent or the link went
 * away), agent_output (every other line). */
#ifndef CORTEX_AGENT_H
#define CORTEX_AGENT_H

#include "session.h"

/* Why the agent (or the link) went away; what the turn makes of it is turn.c's. */
enum agent_down {
	DOWN_LINK_LOST,     /* ws-agent's connection closed or failed */
	DOWN_EXITED,        /* the agent exited by itself (crash, or it quit) */
	DOWN_KILLED,        /* ... by a signal */
	DOWN_NEVER_STARTED, /* ws-agent could not start it (bad context, spawn failed) */
	DOWN_BOOT_TIMEOUT,  /* it did not answer the handshake in time */
	DOWN_PIPE,          /* ws-agent cannot feed it (stdin full, no agent) */
};

int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* Connect to ws-agent (the sandbox is up).  0, or -1 with err (nothing pending). */
int agent_link_connect(struct session *s, cx_err *err);
/* The sandbox is going away: drop the link and the agent. */
void agent_link_close(struct session *s);

/* Start an agent for cfg (a running one is retired first); hot later. */
int agent_start(struct session *s, const cconfig *cfg, double *context_ms, cx_err *err);
void agent_stop(struct session *s);
/* An upgrade restart: ask ws-agent to hold the agents (wsa.detached answers). */
void agent_detach(struct session *s);
/* One JSON line (consumed) to the current agent's stdin. */
void agent_input(struct session *s, json_t *line);
/* The same for a line already written (malloc'd; taken, NULL counts as an
 * allocation failure). */
void agent_input_str(struct session *s, char *line);
/* {"type":"user","message":{"role":"user","content":[{"type":"text","text":T}]}}
 * (malloc'd; NULL: no memory, or text not UTF-8). */
char *agent_user_line(const char *text);
/* Ask the current agent to stop its turn (a control request). */
void agent_interrupt(struct session *s);
/* The agent runs cfg and is hot. */
int agent_is_current(const struct session *s, const cconfig *cfg);

struct agent_counters {
	uint64_t starts, crashes, releases;
	uint64_t live_applies, live_refused; /* agent_live.c */
	uint64_t link_resent; /* lines ws-agent sent again at an attach (the turn log lacked them) */
	uint64_t link_dups;  /* lines ws-agent sent again after an attach that were read before */
	uint64_t link_lost;  /* lines past ws-agent's resend window at an attach */
	uint64_t stdin_direct, stdin_link; /* inputs written to the agent's stdin by cortexd / sent on the link */
	uint64_t stdout_lines;     /* agent stdout lines cortexd read from the pipe itself */
	uint64_t stdout_starts;    /* agents whose stdout cortexd read itself */
	uint64_t stdout_fallbacks; /* ... asked for and not usable: ws-agent read it (stdout_back) */
	uint64_t stdout_dropped;   /* its lines dropped by ws-agent's checks (cap, UTF-8, "wsa.") */
};
void agent_get_counters(struct agent_counters *out);
void agent_count_release(void);
void agent_count_live(int refused);

/* ---- the agent's stdin, written by cortexd (agent_stdin.c) ---- */

/* One read of the link (recvmsg): a descriptor ws-agent passed is kept for
 * the wsa.started it came with, any other is closed. */
ssize_t agent_link_recv(struct session *s, int sock, void *buf, size_t cap);
/* wsa.started was read (offered: it says "stdin":true and names the current
 * generation, which is starting): the descriptor received with it becomes
 * the agent's stdin, or is closed. */
void agent_stdin_started(struct session *s, int offered);
/* line (no '\n') written to the agent's stdin whole: 0; -1: it must go on
 * the link, as every later input of this generation. */
int agent_stdin_write(struct session *s, const char *line, size_t len);
void agent_stdin_close(struct session *s); /* the generation ends (EOF for the agent) */
void agent_stdin_reset(struct session *s); /* a new generation or link: nothing held */
void agent_stdin_counts(uint64_t *direct, uint64_t *link);

/* wsa.started said which descriptors came with it (stdin, then stdout):
 * the stdin one stays in rx_fd for agent_stdin_started, the stdout one is
 * returned (-1: none).  Any other count: none is used. */
int agent_started_fds(struct session *s, int has_in, int has_out);

/* ---- the agent's stdout, read by cortexd (agent_stdout.c) ---- */

int callback_agent_stdout(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
/* wsa.started of gen passed ("stdout":true) fd (taken, -1 when it did not
 * come); usable: gen is the starting one.  cortexd reads it, or closes it
 * and sends stdout_back. */
void agent_stdout_started(struct session *s, uint64_t gen, int passed, int usable, int fd);
/* The end of an anonymous pipe open as accmode (O_RDONLY, O_WRONLY), passed
 * by a sandbox, reopened with O_NONBLOCK as cortexd's own description, or -1
 * (agent_stdin.c). */
int agent_pipe_reopen(int fd, int accmode);
/* The pipe is readable (the loop's callback; unit tests call it by hand). */
int agent_stdout_readable(struct session *s);
/* gen's wsa.exit: read its stdout to the end first. */
void agent_stdout_drain(struct session *s, uint64_t gen);
/* The generation ends: stop reading (ws-agent drains and drops the rest). */
void agent_stdout_close(struct session *s);
/* detach: the "stdout" member (the gen and the partial line), reading stopped; NULL if none. */
json_t *agent_stdout_detach(struct session *s);
void agent_stdout_counts(uint64_t *lines, uint64_t *starts, uint64_t *fallbacks, uint64_t *dropped);

/* ---- for agent_stdout.c: the link's line path ---- */

/* One line of the agent's (or, numbered, of ws-agent's link: a link seq). */
void agent_link_line(struct session *s, const char *line, size_t len, int numbered);
/* A wsa.error ws-agent would have sent for the current generation. */
void agent_link_error(struct session *s, const char *code, const char *msg);
void agent_link_send(struct session *s, const char *txt, size_t len);

/* ---- config changes a hot agent takes by control request (agent_live.c) ---- */

/* The model / permission mode cfg asks of s's agent ("" = the agent's default). */
const char *agent_model_of(const struct session *s, const cconfig *cfg);
const char *agent_perm_of(const struct session *s, const cconfig *cfg);
/* agent_start: cfg's live part is what the new agent is started with. */
void agent_live_record(struct session *s, const cconfig *cfg);
/* The boot's control requests after initialize (the MCP servers); how many
 * responses to wait for before the agent is hot. */
int agent_live_boot(struct session *s);
/* The hot agent runs cfg's base and only its live part differs: a live apply
 * can bring it to cfg. */
int agent_live_applicable(const struct session *s, const cconfig *cfg);
/* Send the control requests that do (set_model, set_permission_mode,
 * mcp_set_servers); their answers come to agent_live_response. */
void agent_live_apply(struct session *s, const cconfig *cfg);
/* A control response: 1 when it answered a live or boot request (consumed). */
int agent_live_response(struct session *s, const char *request_id, json_t *line);

#endif
