/* agent_stdout.c — the agent's stdout, read by cortexd itself.
 *
 * cortexd asks for it in the start ("stdout":true); ws-agent then passes the
 * read end of the new agent's stdout with wsa.started (SCM_RIGHTS, next to
 * the stdin: agent_stdin.c) and cortexd reads the pipe on its own loop: no
 * link frame and no wake-up of ws-agent per turn (on a busy host a wake-up
 * costs as much as the rest of a turn's host work).  Each line goes through
 * the checks ws-agent made (common/lines.c: the line cap, UTF-8, no "wsa."
 * type; the same errors) and then down exactly the path a link line takes
 * (agent_link_line).  ws-agent keeps everything else: stderr, the exit,
 * retiring and killing, the forwarders; and a copy of the read end it never
 * reads, so that the pipe goes back to it whenever cortexd lets go.
 *
 * The rules, each against a hostile agent as much as a slow client:
 *  - only when asked, and answered: an fd cortexd cannot use (not the read
 *    end of an anonymous pipe, a gen that is no longer starting, no fd at
 *    all) is closed unread and "stdout_back" tells ws-agent to read the pipe
 *    itself, so a pipe nobody reads can never stall an agent;
 *  - the descriptor comes from the sandbox, whose copy shares its
 *    description: it is reopened through /proc/self/fd with cortexd's own
 *    O_NONBLOCK (the sandbox could clear it and block the service thread);
 *  - order: ws-agent sends a current agent's wsa.exit only once no writer
 *    holds the pipe (POLLHUP on its copy; or it gave up, as before, after
 *    WSA_EOF_GIVE_UP_MS), and cortexd reads the pipe to its end before it
 *    acts on the exit: every line of gen g comes before g's exit.  That
 *    last read ignores the pause (the pipe has no writer left: at most one
 *    pipe buffer, bounded), as ws-agent's own last read did;
 *  - gens: when the agent's state leaves "starting"/"hot" (stop, start,
 *    exit, link lost) cortexd stops reading at once; ws-agent, which
 *    retires the agent, takes the pipe back, drains and drops the rest;
 *  - backpressure: the pipe is paused exactly where the link is
 *    (fanout_update_flow), so a slow client still blocks the agent;
 *  - detach (an upgrade restart): the line cortexd had begun goes back to
 *    ws-agent in the detach frame (hex, or "dropping" inside an over-long
 *    line), so no line is lost or cut: ws-agent reads on from there and the
 *    link carries the output until the agent's next start.  A crash loses
 *    what cortexd had read and not logged, and ws-agent resyncs at the next
 *    line boundary (docs/operations.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <unistd.h>

#include "agent.h"
#include "caps.h"
#include "log.h"
#include "session.h"
#include "turnlog.h"

static uint64_t n_lines, n_starts, n_fallbacks, n_dropped;

void agent_stdout_counts(uint64_t *lines, uint64_t *starts, uint64_t *fallbacks, uint64_t *dropped)
{
	*lines = n_lines;
	*starts = n_starts;
	*fallbacks = n_fallbacks;
	*dropped = n_dropped;
}

/* What ws-agent's on_stdout_line did, with the same errors; then the line
 * goes where a link line goes. */
static int on_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct session *s = arg;
	char msg[160];
	if (too_long) {
		snprintf(msg, sizeof msg, "agent stdout line over %u bytes dropped", CX_CAP_AGENT_LINE);
		n_dropped++;
		agent_link_error(s, "line_too_long", msg);
		return 0;
	}
	if (!len)
		return 0;
	if (!cx_utf8_valid(line, len)) {
		snprintf(msg, sizeof msg, "agent stdout line of %zu bytes is not valid UTF-8; dropped", len);
		n_dropped++;
		agent_link_error(s, "bad_line", msg);
		return 0;
	}
	if (cx_line_spoofs_event(line, len)) {
		n_dropped++;
		agent_link_error(s, "bad_line", "agent stdout line with a \"wsa.\" type dropped");
		return 0;
	}
	n_lines++;
	agent_link_line(s, line, len, 0); /* (a "wsa." type spelt with escapes: refused there) */
	/* A line may end the session or this stdout (a result that stops the
	 * agent): the caller stops feeding. */
	return s->deleted || s->link.out_fd < 0 ? 1 : 0;
}

/* Stop reading.  The partial line's buffer is freed later when a line
 * being handled (it may point into it) is what stopped it. */
static void out_stop(struct session *s)
{
	struct lws *w = s->link.out_wsi;
	if (!w && s->link.out_fd >= 0)
		close(s->link.out_fd); /* (unit tests: not adopted) */
	s->link.out_wsi = NULL;
	s->link.out_fd = -1; /* else lws's: closed with w */
	if (!s->link.out_feeding)
		cx_lines_free(&s->link.out_lines);
	if (w) {
		lws_rx_flow_control(w, 0);
		lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
}

void agent_stdout_close(struct session *s)
{
	out_stop(s);
}

static void send_back(struct session *s, uint64_t gen)
{
	n_fallbacks++;
	char txt[80];
	int n = snprintf(txt, sizeof txt, "{\"type\":\"stdout_back\",\"gen\":%llu}", (unsigned long long)gen);
	agent_link_send(s, txt, (size_t)n);
}

void agent_stdout_started(struct session *s, uint64_t gen, int passed, int usable, int fd)
{
	if (!passed) {
		if (fd >= 0)
			close(fd);
		return;
	}
	int r = usable && fd >= 0 ? agent_pipe_reopen(fd, O_RDONLY) : -1;
	if (fd >= 0)
		close(fd);
	out_stop(s); /* (none: a start closed the last one) */
	cx_lines_free(&s->link.out_lines);
	if (r >= 0 && s->link.io) {
		/* unit tests: no loop to adopt into; the fd is read by hand */
		s->link.out_fd = r;
	} else if (r >= 0 && s->d && s->d->vh) {
		lws_adopt_desc_t ad = {.vh = s->d->vh,
				       .type = LWS_ADOPT_RAW_FILE_DESC,
				       .fd.filefd = r,
				       .vh_prot_name = "cortex-agent-out",
				       .opaque = s};
		s->refs++; /* held by the wsi until RAW_CLOSE_FILE */
		s->link.out_wsi = lws_adopt_descriptor_vhost_via_info(&ad); /* closes r on failure */
		if (!s->link.out_wsi)
			s->refs--;
		else
			s->link.out_fd = r;
	} else if (r >= 0) {
		close(r);
	}
	if (s->link.out_fd < 0) {
		log_debug("session %s: the agent's stdout is not usable directly: ws-agent reads it", s->id);
		send_back(s, gen);
		return;
	}
	n_starts++;
	s->link.out_gen = gen;
	cx_lines_init(&s->link.out_lines, CX_CAP_AGENT_LINE, false);
	if (s->link.out_wsi && s->fan.rx_paused)
		lws_rx_flow_control(s->link.out_wsi, 0);
}

/* Feed bytes (or the end) to the splitter; its buffer outlives the lines. */
static int feed(struct session *s, const char *buf, size_t n, cx_err *err)
{
	s->link.out_feeding = 1;
	int rc = buf ? cx_lines_feed(&s->link.out_lines, buf, n, on_line, s, err)
		     : cx_lines_finish(&s->link.out_lines, on_line, s);
	s->link.out_feeding = 0;
	if (s->link.out_fd < 0)
		cx_lines_free(&s->link.out_lines);
	return rc < 0 ? -1 : 0;
}

/* One read: the bytes handled, 0 nothing now (EAGAIN), -1 EOF or an error. */
#define OUT_READ (256u << 10)
static ssize_t read_once(struct session *s)
{
	static char buf[OUT_READ]; /* the service thread's */
	ssize_t r;
	do
		r = read(s->link.out_fd, buf, sizeof buf);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno == EAGAIN)
		return 0;
	if (r <= 0)
		return -1;
	cx_err err = CX_ERR_INIT;
	if (feed(s, buf, (size_t)r, &err) < 0) {
		log_error("session %s: agent stdout: %s", s->id, err.msg);
		return -1;
	}
	return r;
}

/* End of the pipe: a last line without '\n' still counts (as in ws-agent). */
static void at_eof(struct session *s)
{
	(void)feed(s, NULL, 0, NULL);
	out_stop(s);
}

int agent_stdout_readable(struct session *s)
{
	if (s->link.out_fd < 0)
		return 0;
	if (read_once(s) < 0 && s->link.out_fd >= 0 && !s->deleted)
		at_eof(s);
	(void)turnlog_flush(s); /* the batch's frames, before any client is given them */
	return 0;
}

void agent_stdout_drain(struct session *s, uint64_t gen)
{
	if (s->link.out_fd < 0 || s->link.out_gen != gen)
		return;
	/* ws-agent saw no writer left (or gave up on one): read to the end
	 * now, paused or not.  Bounded: with no writer the pipe holds at most
	 * its buffer; a writer ws-agent gave up on (outside the agent's group)
	 * may go on writing, so at most a pipe's size more, and what is left
	 * then, with a partial last line, is dropped as ws-agent dropped it. */
	int sz = fcntl(s->link.out_fd, F_GETPIPE_SZ);
	size_t budget = (size_t)(sz > 0 ? sz : 1 << 20) + OUT_READ, got = 0;
	for (;;) {
		ssize_t rc = read_once(s);
		if (s->deleted || s->link.out_fd < 0)
			break;
		if (rc < 0) {
			at_eof(s);
			break;
		}
		got += (size_t)rc;
		if (rc == 0 || got > budget) {
			log_warn("session %s: agent %llu exited with its stdout still held open: the rest is dropped",
				 s->id, (unsigned long long)gen);
			out_stop(s);
			break;
		}
	}
	(void)turnlog_flush(s);
}

/* The detach frame's "stdout": the line cortexd had begun goes back to
 * ws-agent with the pipe.  NULL when cortexd reads no stdout. */
json_t *agent_stdout_detach(struct session *s)
{
	if (s->link.out_fd < 0)
		return NULL;
	const struct cx_lines *l = &s->link.out_lines;
	char *hex = malloc(2 * l->len + 1);
	if (!hex)
		return NULL; /* (ws-agent then takes the pipe back and resyncs) */
	sodium_bin2hex(hex, 2 * l->len + 1, (const unsigned char *)l->buf, l->len);
	json_t *o = json_pack("{s:I,s:s,s:b}", "gen", (json_int_t)s->link.out_gen, "partial", hex, "dropping",
			      l->dropping);
	free(hex);
	out_stop(s);
	return o;
}

int callback_agent_stdout(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user;
	(void)in;
	(void)len;
	struct session *s = lws_get_opaque_user_data(wsi);
	if (!s)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		if (s->link.out_wsi == wsi) {
			/* lws closes a pipe on POLLHUP (no writer left), also while
			 * it is paused, with lines still in it: they come before the
			 * agent's exit, so they are read now (no writer: at most a
			 * pipe buffer), from a dup, since lws closes its fd. */
			s->link.out_wsi = NULL;
			s->link.out_fd = s->deleted ? -1 : fcntl(lws_get_socket_fd(wsi), F_DUPFD_CLOEXEC, 3);
			if (s->link.out_fd >= 0)
				agent_stdout_drain(s, s->link.out_gen);
			else
				cx_lines_free(&s->link.out_lines);
		}
		lws_set_opaque_user_data(wsi, NULL);
		session_unref(s);
		return 0;
	case LWS_CALLBACK_RAW_RX_FILE:
		if (s->deleted || s->link.out_wsi != wsi)
			return 0;
		return agent_stdout_readable(s);
	default:
		return 0;
	}
}
