/* agent.c — see agent.h. */
#include "agent.h"
#include "turnlog.h"
#include "handover.h"
#include "egress.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_line.h"
#include "caps.h"
#include "fanout.h"
#include "jobs.h"
#include "log.h"

static struct agent_counters counters;
void agent_get_counters(struct agent_counters *out)
{
	*out = counters;
	agent_stdin_counts(&out->stdin_direct, &out->stdin_link);
	agent_stdout_counts(&out->stdout_lines, &out->stdout_starts, &out->stdout_fallbacks, &out->stdout_dropped);
}
void agent_count_release(void) { counters.releases++; }
void agent_count_live(int refused)
{
	if (refused)
		counters.live_refused++;
	else
		counters.live_applies++;
}

static int link_write_now(struct session *s);

static void link_send(struct session *s, const char *txt, size_t len)
{
	if (!s->link.wsi)
		return;
	struct frame *f = frame_new(txt, len);
	if (!f)
		return;
	fq_push(&s->link.out, f);
	/* Nothing ahead of it: written now, not on the loop's next POLLOUT
	 * (a turn's input leaves while the service thread goes on with the
	 * other clients' messages).  A full socket or a failed write is left
	 * to the writeable callback, which fails the link. */
	if (link_write_now(s) != 0)
		lws_callback_on_writable(s->link.wsi);
}
static const struct agent_io link_io = {link_send};

void agent_link_send(struct session *s, const char *txt, size_t len)
{
	const struct agent_io *io = s->link.io ? s->link.io : &link_io;
	io->send(s, txt, len);
}

static void send_json(struct session *s, json_t *o)
{
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	const struct agent_io *io = s->link.io ? s->link.io : &link_io;
	io->send(s, txt, strlen(txt));
	free(txt);
}

/* {"type":"input","gen":G,"data":"<line, as a JSON string>"[,"ack":K]}
 * written around the line's one json_dumps: the line is jansson's compact
 * output (valid UTF-8, no raw control byte), so only '"' and '\\' need a
 * backslash here (control bytes are escaped anyway, for any caller). */
static char *input_frame(const char *line, uint64_t gen, int has_ack, uint64_t ack, size_t *out_len)
{
	size_t n = strlen(line);
	if (n > (SIZE_MAX - 128) / 6)
		return NULL;
	char *f = malloc(128 + 6 * n), *o = f;
	if (!f)
		return NULL;
	o += sprintf(o, "{\"type\":\"input\",\"gen\":%llu,\"data\":\"", (unsigned long long)gen);
	for (const unsigned char *p = (const unsigned char *)line; *p; p++) {
		if (*p == '"' || *p == '\\') {
			*o++ = '\\';
			*o++ = (char)*p;
		} else if (*p < 0x20) {
			o += sprintf(o, "\\u%04x", *p);
		} else {
			*o++ = (char)*p;
		}
	}
	*o++ = '"';
	if (has_ack)
		o += sprintf(o, ",\"ack\":%llu", (unsigned long long)ack);
	*o++ = '}';
	*o = '\0';
	*out_len = (size_t)(o - f);
	return f;
}

void agent_input(struct session *s, json_t *line)
{
	char *txt = line ? json_dumps(line, JSON_COMPACT) : NULL;
	json_decref(line);
	agent_input_str(s, txt);
}

/* The user message as jansson's json_pack + json_dumps wrote it, the same
 * bytes (a test compares them), without a tree and a dump per turn on the
 * service thread.  NULL when text is not UTF-8 (jansson refused it too). */
char *agent_user_line(const char *text)
{
	static const char head[] = "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":"
				   "[{\"type\":\"text\",\"text\":";
	size_t n = cx_json_str_len(text);
	char *line = n ? malloc(sizeof head - 1 + n + sizeof "}]}}") : NULL;
	if (line)
		memcpy(cx_json_str_put(stpcpy(line, head), text), "}]}}", sizeof "}]}}");
	return line;
}

void agent_input_str(struct session *s, char *txt)
{
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	/* Straight into the agent's stdin when ws-agent passed it (agent_stdin.c). */
	if (agent_stdin_write(s, txt, strlen(txt)) == 0) {
		free(txt);
		return;
	}
	/* The ack rides along (a ws-agent before it ignores the key; the
	 * timer's ack still comes): no frame and no wake-up of its own per turn. */
	int ack = s->link.up && s->link.logged_seq > s->link.acked_seq;
	size_t len = 0;
	char *frame = input_frame(txt, s->link.gen, ack, s->link.logged_seq, &len);
	free(txt);
	if (!frame) {
		frames_count_alloc_failure();
		return;
	}
	if (ack) {
		s->link.acked_seq = s->link.logged_seq;
		s->link.ack_bytes = 0;
	}
	const struct agent_io *io = s->link.io ? s->link.io : &link_io;
	io->send(s, frame, len);
	free(frame);
}

void agent_interrupt(struct session *s)
{
	char id[40];
	snprintf(id, sizeof id, "cx-int-%llu", (unsigned long long)++s->link.int_seq);
	agent_input(s, json_pack("{s:s,s:s,s:{s:s}}", "type", "control_request", "request_id", id, "request",
				 "subtype", "interrupt"));
}

int agent_is_current(const struct session *s, const cconfig *cfg)
{
	return s->link.state == AG_HOT && !s->link.applying && !strcmp(s->link.hash, cfg->base_hash) &&
	       !strcmp(s->link.live_hash, cfg->live_hash);
}

/* Every change of the agent's state goes through here: leaving "starting"
 * frees the boot slot (boot.h), whatever ended the boot. */
static void set_state(struct session *s, enum ag_state st)
{
	enum ag_state was = s->link.state;
	s->link.state = st;
	if (st == AG_NONE) {
		s->link.applying = 0; /* a live apply dies with its agent */
		agent_stdin_close(s); /* and its stdin: EOF, as ws-agent lets go too */
		agent_stdout_close(s); /* and its stdout: ws-agent drains and drops the rest */
	}
	if (was == AG_STARTING && st != AG_STARTING && s->d->agent_boot_end)
		s->d->agent_boot_end(s);
}

static void down(struct session *s, enum agent_down why, const char *code, const char *msg)
{
	if (s->d->agent_down)
		s->d->agent_down(s, why, code, msg);
}

/* ---- the agent's life ---- */

/* The image's Env under cortexd's and the user's (which win), except PATH:
 * the image's PATH replaces cortexd's default tail, after the package bins. */
static json_t *image_env(const struct session *s, const cconfig *cfg)
{
	json_t *env = s->rt.env ? json_copy(s->rt.env) : json_object();
	if (!env)
		return NULL;
	const char *ipath = json_string_value(json_object_get(s->rt.env, "PATH"));
	json_object_update(env, cfg->agent_env);
	const char *path = json_string_value(json_object_get(cfg->agent_env, "PATH"));
	size_t bl = strlen(CCONFIG_BASE_PATH);
	if (ipath && path && strlen(path) >= bl && !strcmp(path + strlen(path) - bl, CCONFIG_BASE_PATH)) {
		char p[8192];
		snprintf(p, sizeof p, "%.*s%s", (int)(strlen(path) - bl), path, ipath);
		json_object_set_new(env, "PATH", json_string(p));
	}
	return env;
}

/* The egress proxy for everything that honours the usual variables (curl,
 * git, npm, pip, Node's fetch where enabled); the sandbox's own loopback
 * (the gateway, preview servers) stays direct.  Set over the user's env:
 * inside the namespace nothing else leads out anyway. */
static void egress_env(json_t *env, int port)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
	static const char *const proxy_vars[] = {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
						 "npm_config_proxy", "npm_config_https_proxy", NULL};
	for (const char *const *v = proxy_vars; *v; v++)
		json_object_set_new(env, *v, json_string(url));
	json_object_set_new(env, "NO_PROXY", json_string("127.0.0.1,localhost,::1"));
	json_object_set_new(env, "no_proxy", json_string("127.0.0.1,localhost,::1"));
	/* The broker's CA (jobs.c binds it): Node adds it to its own store; the
	 * rest take a whole bundle (the public CAs, then it). */
	if (egress_ca_pem()) {
		json_object_set_new(env, "NODE_EXTRA_CA_CERTS", json_string(EGRESS_TRUST_MOUNT "/ca.pem"));
		static const char *const bundle_vars[] = {"SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
							  "REQUESTS_CA_BUNDLE", NULL};
		for (const char *const *v = bundle_vars; *v; v++)
			json_object_set_new(env, *v, json_string(EGRESS_TRUST_MOUNT "/bundle.pem"));
	}
}

/* What the agent is started with, written to the context file: the hot agent
 * reads messages as stream-json lines on stdin. */
static json_t *build_context(struct session *s, const cconfig *cfg)
{
	const config *c = &s->d->cfg;
	const char *cmd = s->rt.agent_cmd[0] ? s->rt.agent_cmd : c->agent_command;
	json_t *argv = json_pack("[s,s,s,s,s,s,s,s]", cmd, "-p", "--input-format", "stream-json",
				 "--output-format", "stream-json", "--verbose", "--include-partial-messages");
	const char *perm = agent_perm_of(s, cfg);
	if (perm[0]) {
		json_array_append_new(argv, json_string("--permission-mode"));
		json_array_append_new(argv, json_string(perm));
	}
	/* MCP servers come by mcp_set_servers after initialize (agent_live.c),
	 * so a change of them is applied without a restart. */
	if (c->agent_handshake) {
		json_array_append_new(argv, json_string("--strict-mcp-config"));
		/* A user may pick bypassPermissions (settings/user): without this
		 * an agent started in another mode refuses to switch into it. */
		json_array_append_new(argv, json_string("--allow-dangerously-skip-permissions"));
	}
	if (s->link.had_success)
		json_array_append_new(argv, json_string("--continue"));
	const char *model = agent_model_of(s, cfg);
	if (model[0]) {
		json_array_append_new(argv, json_string("--model"));
		json_array_append_new(argv, json_string(model));
	}
	/* The env was built once with the config; the gateway's URL and this
	 * session's token are the only per-session part. */
	json_t *env = image_env(s, cfg);
	if (env && c->gateway_enabled) {
		char url[300];
		/* Isolated: the sandbox's own 127.0.0.1, where ws-agent forwards. */
		snprintf(url, sizeof url, "http://%s:%d",
			 c->sandbox_net_isolated ? "127.0.0.1" : c->gateway_host, gateway_port());
		json_object_set_new(env, "ANTHROPIC_BASE_URL", json_string(url));
		json_object_set_new(env, "ANTHROPIC_API_KEY", json_string(s->gw_token));
	}
	if (env && c->sandbox_net_isolated && egress_running())
		egress_env(env, c->egress_port);
	return json_pack("{s:o,s:o,s:s}", "argv", argv, "env", env, "cwd",
			 s->rt.cwd[0] ? s->rt.cwd : "/workspace");
}

void agent_stop(struct session *s)
{
	if (s->link.state == AG_NONE)
		return;
	send_json(s, json_pack("{s:s,s:I}", "type", "stop", "gen", (json_int_t)s->link.gen));
	set_state(s, AG_NONE);
	lws_sul_cancel(&s->link.sul_boot);
}

void agent_detach(struct session *s)
{
	/* The stdout cortexd reads goes back to ws-agent with the line cortexd
	 * had begun (agent_stdout.c): ws-agent reads on from exactly there. */
	json_t *o = json_pack("{s:s}", "type", "detach");
	json_t *out = agent_stdout_detach(s);
	if (o && out)
		json_object_set_new(o, "stdout", out);
	else
		json_decref(out);
	send_json(s, o);
}

/* wsa.attached: the agents ws-agent held for us.  The one this session knew
 * goes on (and the turn with it); if it ended meanwhile, the turn cannot. */
static void on_attached(struct session *s, const struct agent_line *l)
{
	s->link.attaching = 0;
	/* The lines that follow are numbered from "seq" on: those up to the
	 * turn log's last "L" (dup_upto) were read before and are dropped.
	 * "lost": lines past ws-agent's resend window, gone. */
	json_t *jseq = json_object_get(l->o, "seq");
	if (json_is_integer(jseq) && json_integer_value(jseq) > 0)
		s->link.rx_seq = (uint64_t)json_integer_value(jseq) - 1;
	json_int_t lost = json_integer_value(json_object_get(l->o, "lost"));
	json_int_t resent = json_integer_value(json_object_get(l->o, "resent"));
	if (resent > 0) {
		counters.link_resent += (uint64_t)resent;
		log_info("session %s: ws-agent sends %lld line(s) again that the turn log lacked", s->id,
			 (long long)resent);
	}
	if (lost > 0) {
		counters.link_lost += (uint64_t)lost;
		char msg[200];
		snprintf(msg, sizeof msg,
			 "%lld line(s) of the agent's output were lost with cortexd's restart (past "
			 "ws-agent's resend window)",
			 (long long)lost);
		log_warn("session %s: %s", s->id, msg);
		if (s->turn)
			fanout_error(s, NULL, "agent_output_lost", msg);
	}
	uint64_t gen = l->has_gen ? l->gen : 0;
	if (s->link.state == AG_HOT && gen && gen == s->link.gen) {
		log_info("session %s: agent %llu taken back after the upgrade restart", s->id, (unsigned long long)gen);
		s->d->reconcile(s);
		return;
	}
	int had = s->link.state != AG_NONE;
	set_state(s, AG_NONE);
	if (had || s->turn)
		down(s, DOWN_EXITED, "agent_lost", "the agent ended during cortexd's upgrade restart");
	else
		s->d->reconcile(s);
}

static void sul_boot_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, link.sul_boot);
	if (s->link.state != AG_STARTING)
		return;
	char msg[1300];
	snprintf(msg, sizeof msg, "the agent did not become ready within %d ms%s%s", s->d->cfg.agent_start_timeout_ms,
		 s->link.stderr_tail[0] ? ": " : "", s->link.stderr_tail);
	log_error("session %s: %s", s->id, msg);
	agent_stop(s);
	down(s, DOWN_BOOT_TIMEOUT, "agent_start_timeout", msg); /* the lifecycle retries, bounded */
}

int agent_start(struct session *s, const cconfig *cfg, double *context_ms, cx_err *err)
{
	agent_stop(s);
	uint64_t t1 = cx_mono_us();
	json_t *ctx = build_context(s, cfg);
	char *txt = ctx ? json_dumps(ctx, JSON_COMPACT) : NULL;
	json_decref(ctx);
	if (!txt)
		return cx_err_set(err, ENOMEM, "could not encode the agent's context");
	size_t len = strlen(txt);
	int rc = len > CX_CAP_CONTEXT_FILE
			 ? cx_err_set(err, EMSGSIZE, "context is %zu bytes (cap %u)", len, CX_CAP_CONTEXT_FILE)
		 : s->lc.sb ? sandbox_write_file(s->lc.sb, "/tmp/vf-pending-query.json", txt, len, 0600, err)
			    : 0;
	/* The context holds the user's secret env values: wipe before freeing. */
	memset(txt, 0, len);
	free(txt);
	if (context_ms)
		*context_ms += (double)(cx_mono_us() - t1) / 1000.0;
	if (rc < 0)
		return -1;
	s->link.gen++;
	counters.starts++;
	set_state(s, AG_STARTING);
	agent_stdin_reset(s); /* (agent_stop closed the last one's; none of this gen's went yet) */
	s->link.start_us = cx_mono_us();
	s->link.stderr_tail[0] = '\0';
	memcpy(s->link.hash, cfg->base_hash, sizeof s->link.hash);
	agent_live_record(s, cfg);
	/* "stdout": ws-agent passes the agent's stdout too and cortexd reads it
	 * (agent_stdout.c); a ws-agent before it ignores the key. */
	send_json(s, json_pack("{s:s,s:I,s:b}", "type", "start", "gen", (json_int_t)s->link.gen, "stdout", 1));
	session_timer(s, &s->link.sul_boot, sul_boot_cb, (uint64_t)s->d->cfg.agent_start_timeout_ms * LWS_US_PER_MS);
	log_debug("session %s: starting agent %llu", s->id, (unsigned long long)s->link.gen);
	return 0;
}

static void agent_hot(struct session *s)
{
	set_state(s, AG_HOT);
	handover_keep_note(s); /* a crash now finds this agent */
	lws_sul_cancel(&s->link.sul_boot);
	log_info("session %s: agent %llu hot in %.1f ms", s->id, (unsigned long long)s->link.gen,
		 (double)(cx_mono_us() - s->link.start_us) / 1000.0);
	s->d->reconcile(s);
}

/* ---- ws-agent's own events ---- */

static void stderr_keep(char *buf, size_t cap, const char *txt)
{
	size_t have = strlen(buf), add = strlen(txt);
	if (add + 2 >= cap)
		return;
	if (have + add + 2 >= cap) {
		have = 0; /* keep the latest lines */
		buf[0] = '\0';
	}
	memcpy(buf + have, txt, add);
	buf[have + add] = '\n';
	buf[have + add + 1] = '\0';
}

static void on_exit_event(struct session *s, const struct agent_line *l)
{
	int was_starting = s->link.state == AG_STARTING;
	set_state(s, AG_NONE);
	s->link.crashes++;
	counters.crashes++;
	lws_sul_cancel(&s->link.sul_boot);
	json_int_t code = json_integer_value(json_object_get(l->o, "code"));
	json_int_t sig = json_integer_value(json_object_get(l->o, "signal"));
	const char *tail = agent_line_str(l, "stderr_tail");
	if (!tail || !*tail)
		tail = s->link.stderr_tail;
	char msg[1400];
	snprintf(msg, sizeof msg, "the agent exited (code %lld, signal %lld)%s%s%s", (long long)code, (long long)sig,
		 was_starting ? " before it was ready" : "", *tail ? ": " : "", tail);
	log_warn("session %s: %s", s->id, msg);
	if (was_starting)
		down(s, DOWN_NEVER_STARTED, "agent_failed", msg);
	else
		down(s, sig ? DOWN_KILLED : DOWN_EXITED, sig ? "agent_killed" : "agent_crashed", msg);
}

static int eq(const char *a, const char *b) { return a && !strcmp(a, b); }

static void on_error_event(struct session *s, const struct agent_line *l)
{
	const char *code = agent_line_str(l, "code");
	if (l->has_gen && l->gen != s->link.gen && (eq(code, "no_agent") || eq(code, "stdin_full"))) {
		/* About an agent already replaced (the message went on to the new one). */
		log_info("session %s: ws-agent: %s for agent %llu, not the current one: ignored", s->id, code,
			 (unsigned long long)l->gen);
		return;
	}
	agent_link_error(s, code, agent_line_str(l, "message"));
}

void agent_link_error(struct session *s, const char *code, const char *msg)
{
	char full[600];
	snprintf(full, sizeof full, "ws-agent: %s", msg ? msg : code ? code : "error");
	log_warn("session %s: %s (%s)", s->id, full, code ? code : "?");
	if (s->link.state == AG_STARTING &&
	    (eq(code, "context_timeout") || eq(code, "bad_context") || eq(code, "spawn_failed"))) {
		/* The agent never started: no wsa.exit follows. */
		set_state(s, AG_NONE);
		s->link.crashes++;
		lws_sul_cancel(&s->link.sul_boot);
		down(s, DOWN_NEVER_STARTED, code, full);
	} else if (eq(code, "stdin_full") || eq(code, "no_agent")) {
		down(s, DOWN_PIPE, "agent_lost", full);
	} else if ((eq(code, "line_too_long") || eq(code, "bad_line")) && s->turn && s->turn->sent) {
		fanout_error(s, NULL, code, full);
	}
}

static void on_wsa(struct session *s, const struct agent_line *l)
{
	int current = l->has_gen && l->gen == s->link.gen;
	switch (l->wsa) {
	case WSA_STDERR: {
		const char *txt = agent_line_str(l, "text");
		if (txt && current)
			stderr_keep(s->link.stderr_tail, sizeof s->link.stderr_tail, txt);
		log_debug("session %s agent stderr: %s", s->id, txt ? txt : "");
		break;
	}
	case WSA_STARTED: {
		/* Before the initialize below: its first input may go to the stdin,
		 * its answer comes on the stdout cortexd reads. */
		int in = json_is_true(json_object_get(l->o, "stdin"));
		int out = json_is_true(json_object_get(l->o, "stdout"));
		int out_fd = agent_started_fds(s, in, out);
		int usable = current && s->link.state == AG_STARTING;
		agent_stdin_started(s, usable && in);
		agent_stdout_started(s, l->gen, out, usable, out_fd);
		if (!current || s->link.state != AG_STARTING)
			break;
		s->link.pid = (int)json_integer_value(json_object_get(l->o, "pid"));
		if (!s->d->cfg.agent_handshake) {
			agent_hot(s);
			break;
		}
		/* Hot = it answered: Claude Code replies once it has booted. */
		char id[40];
		snprintf(id, sizeof id, "cx-init-%llu", (unsigned long long)l->gen);
		agent_input(s, json_pack("{s:s,s:s,s:{s:s}}", "type", "control_request", "request_id", id, "request",
					 "subtype", "initialize"));
		s->link.boot_waits = 1 + agent_live_boot(s);
		break;
	}
	case WSA_EXIT:
		/* Every line of it first: ws-agent sent this once the stdout
		 * cortexd reads had no writer left (agent_stdout.c). */
		if (current)
			agent_stdout_drain(s, l->gen);
		if (s->deleted)
			break;
		current = l->has_gen && l->gen == s->link.gen; /* a drained line may have started another */
		if (current && !json_is_true(json_object_get(l->o, "retired")) && s->link.state != AG_NONE)
			on_exit_event(s, l);
		break;
	case WSA_DETACHED:
		handover_detached(s);
		break;
	case WSA_ATTACHED:
		on_attached(s, l);
		break;
	case WSA_ERROR:
		if (current)
			on_error_event(s, l);
		else
			log_debug("session %s: ws-agent error for an old agent", s->id);
		break;
	default:
		break; /* unknown wsa.* events are ignored */
	}
}

/* One line from ws-agent (numbered: each but wsa.attached is the next link
 * seq), or from the agent's stdout cortexd reads itself (not numbered: the
 * link seq counts what ws-agent sent; such a line is never a wsa.* event,
 * whatever its spelling: common/lines.c refuses the plain one). */
void agent_link_line(struct session *s, const char *line, size_t len, int numbered)
{
	struct agent_line l;
	agent_line_parse(&l, line, len);
	if (!numbered && l.kind == AL_WSA) {
		agent_link_error(s, "bad_line", "agent stdout line with a \"wsa.\" type dropped");
	} else if (numbered && l.kind == AL_WSA && l.wsa == WSA_ATTACHED && s->link.attaching) {
		on_attached(s, &l);
	} else if (numbered && ++s->link.rx_seq <= s->link.dup_upto) {
		counters.link_dups++; /* resent after an attach, read before it */
	} else if (l.kind == AL_WSA) {
		on_wsa(s, &l);
	} else if (l.kind == AL_CONTROL_RESPONSE) {
		/* control responses answer cortexd's own requests: never forwarded */
		char want[40];
		snprintf(want, sizeof want, "cx-init-%llu", (unsigned long long)s->link.gen);
		int live = agent_live_response(s, l.request_id, l.o);
		if ((live == 2 || (!live && eq(l.request_id, want))) && s->link.state == AG_STARTING &&
		    --s->link.boot_waits <= 0)
			agent_hot(s); /* initialize answered, and the MCP servers set */
	} else if (l.kind != AL_PONG) {
		s->d->agent_output(s, &l, line, len);
	}
	agent_line_free(&l);
}

/* ws-agent's messages are a stream of '\n'-terminated lines, many to a
 * message (it coalesces a burst), a line possibly cut across messages or
 * fragments.  Whole lines inside the received block are handled in place;
 * only a line cut at the block's end is copied, capped at CX_CAP_AGENT_LINE
 * (past the cap the rest of that line is discarded and reported once). */
static void link_partial_done(struct session *s)
{
	if (s->link.rx.overflow) {
		if (++s->link.rx_seq > s->link.dup_upto) /* (a line too, in the link seq) */
			fanout_error(s, NULL, "line_too_long", "an agent line over the size cap was dropped");
	} else if (s->link.rx.len)
		agent_link_line(s, s->link.rx.buf, s->link.rx.len, 1);
	rxbuf_reset(&s->link.rx);
}

static int link_rx(struct session *s, struct lws *wsi, const char *p, size_t len)
{
	const char *end = p + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		if (s->link.rx.len || s->link.rx.overflow || !nl) {
			if (rxbuf_append(&s->link.rx, CX_CAP_AGENT_LINE, p, n) < 0)
				return -1;
			if (nl)
				link_partial_done(s);
		} else if (n) {
			agent_link_line(s, p, n, 1);
		}
		if (s->deleted || s->link.wsi != wsi)
			return 0; /* a line ended the session or the link */
		p += n + (nl ? 1 : 0);
	}
	return 0;
}

/* ---- the connection: a WebSocket over the session's Unix socket ----
 *
 * cortexd connects the socket itself and adopts it into lws as a raw socket;
 * the WebSocket on it (handshake, frames) is wslink.c's: lws 4.1's client
 * role parses incoming frames byte by byte, and this link carries every
 * delta.  No keepalive pings: it is a Unix socket (ws-agent's death closes
 * it), and a paused sandbox cannot answer a ping — it must not be hung up on. */

int agent_link_connect(struct session *s, cx_err *err)
{
	if (s->link.wsi)
		return 0;
	/* The socket cortexd itself bound for this session's ws-agent, in a dir
	 * only root reaches (jobs.c): never a path under the session's dirs,
	 * which its sandbox can write.  sun_path is 108 bytes and a deep data dir
	 * would not fit: connect through /proc/self/fd/<dirfd>/<id>.sock. */
	if (s->link.dirfd >= 0)
		close(s->link.dirfd);
	s->link.dirfd = jobs_private_dir(&s->d->cfg, JOBS_SOCK_DIR, err);
	if (s->link.dirfd < 0)
		return -1;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s.sock", s->link.dirfd, s->id);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cx_err_set(err, errno, "socket");
	/* A Unix stream connect completes at once, or fails (EAGAIN: its
	 * backlog is full; ENOENT/ECONNREFUSED: no ws-agent). */
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		close(fd);
		return cx_err_set(err, e, "cannot connect to ws-agent at %s/%s/%s.sock", s->d->cfg.data_dir,
				  JOBS_SOCK_DIR, s->id);
	}
	if (s->link.attaching) {
		/* ws-agent goes on numbering: what the turn log has is not sent again */
		s->link.dup_upto = s->link.logged_seq;
		s->link.rx_seq = s->link.logged_seq;
	} else {
		/* A ws-agent that numbers from 1 again: the log says so first, so
		 * that a crash before the next batch does not take lines of this
		 * link for ones read before. */
		s->link.rx_seq = s->link.dup_upto = 0;
		s->link.seq_known = 1;
		(void)turnlog_link_seq(s, 0);
	}
	s->link.acked_seq = 0;
	s->link.ack_bytes = 0;
	memset(&s->link.ws, 0, sizeof s->link.ws);
	wsl_new_key(s->link.ws_key);
	s->link.ws_sent = 0;
	s->link.ws_head_len = 0;
	/* Adopted as a raw file: cortexd does its own reads (LINK_READ at a
	 * time, not lws's 4 KiB service buffer) and writes. */
	lws_adopt_desc_t ad = {.vh = s->d->vh,
			       .type = LWS_ADOPT_RAW_FILE_DESC,
			       .fd.filefd = fd,
			       .vh_prot_name = "cortex-agent",
			       .opaque = s};
	s->refs++; /* held by the connection until RAW_CLOSE_FILE */
	s->link.wsi = lws_adopt_descriptor_vhost_via_info(&ad); /* closes fd on failure */
	if (!s->link.wsi) {
		s->refs--;
		return cx_err_set(err, ENOMEM, "cannot adopt the ws-agent connection");
	}
	/* The handshake must be answered promptly (ws-agent is local). */
	lws_set_timeout(s->link.wsi, PENDING_TIMEOUT_AWAITING_SERVER_RESPONSE, 10);
	lws_callback_on_writable(s->link.wsi);
	return 0;
}

/* Forget the link (ws-agent stops its agents when the connection goes). */
static void link_reset(struct session *s)
{
	s->link.wsi = NULL;
	s->link.up = 0;
	s->fan.rx_paused = 0;
	set_state(s, AG_NONE);
	agent_stdin_reset(s);
	lws_sul_cancel(&s->link.sul_boot);
	lws_sul_cancel(&s->link.sul_ack);
	if (s->link.dirfd >= 0) {
		close(s->link.dirfd);
		s->link.dirfd = -1;
	}
	fq_clear(&s->link.out);
	rxbuf_reset(&s->link.rx);
	free(s->link.tx);
	s->link.tx = NULL;
	s->link.tx_len = s->link.tx_off = 0;
	free(s->link.ws_head);
	s->link.ws_head = NULL;
	s->link.ws_head_len = 0;
}

static void link_gone(struct session *s, struct lws *wsi, const char *why)
{
	if (s->link.wsi != wsi && s->link.wsi)
		return; /* an older connection */
	link_reset(s);
	if (!s->deleted)
		down(s, DOWN_LINK_LOST, "agent_lost", why);
}

void agent_link_close(struct session *s)
{
	struct lws *w = s->link.wsi;
	link_reset(s);
	if (w)
		lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* A protocol failure on the link: logged, and the connection dropped. */
static int link_fail(struct session *s, const char *why)
{
	log_error("session %s: ws-agent link: %s", s->id, why);
	return -1;
}

struct link_rx_ctx {
	struct session *s;
	struct lws *wsi;
};

static int link_deliver(void *arg, enum wsl_event ev, const uint8_t *p, size_t n)
{
	struct link_rx_ctx *c = arg;
	if (ev == WSL_CLOSE)
		return 1; /* ws-agent is going: close too */
	if (ev == WSL_PING) {
		/* ws-agent sends none; answer anyway, as a client must */
		struct frame *f = frame_new((const char *)p, n);
		if (!f)
			return 0;
		f->seq = 10; /* the pong opcode, read by link_writeable */
		fq_push(&c->s->link.out, f);
		lws_callback_on_writable(c->wsi);
		return 0;
	}
	if (link_rx(c->s, c->wsi, (const char *)p, n) < 0)
		return -1;
	return c->s->deleted || c->s->link.wsi != c->wsi ? 1 : 0;
}

/* The handshake reply, gathered until its blank line; what follows it is
 * the first frames. */
static int link_handshake(struct session *s, struct lws *wsi, const uint8_t **p, size_t *len)
{
	if (!s->link.ws_head && !(s->link.ws_head = malloc(WSL_HEAD_MAX)))
		return link_fail(s, "out of memory");
	size_t take = *len, old = s->link.ws_head_len;
	if (take > WSL_HEAD_MAX - old)
		take = WSL_HEAD_MAX - old;
	memcpy(s->link.ws_head + old, *p, take);
	s->link.ws_head_len += take;
	const char *h = s->link.ws_head;
	size_t hl = s->link.ws_head_len, end = 0;
	for (size_t i = old >= 3 ? old - 3 : 0; i + 4 <= hl; i++)
		if (!memcmp(h + i, "\r\n\r\n", 4)) {
			end = i + 4;
			break;
		}
	if (!end) {
		*len = 0;
		return hl >= WSL_HEAD_MAX ? link_fail(s, "handshake reply over 4 KiB") : 0;
	}
	const char *why = NULL;
	if (wsl_check_reply(h, end, s->link.ws_key, &why) < 0)
		return link_fail(s, why);
	*p += end - old;
	*len -= end - old;
	free(s->link.ws_head);
	s->link.ws_head = NULL;
	s->link.ws_head_len = 0;
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	s->link.up = 1;
	if (s->link.attaching) { /* adopted: the held agents first, nothing before */
		json_t *o = json_pack("{s:s}", "type", "attach");
		if (o && s->link.seq_known) /* else ws-agent sends nothing again */
			json_object_set_new(o, "seq", json_integer((json_int_t)s->link.logged_seq));
		send_json(s, o);
		return 0;
	}
	if (s->link.out.n)
		lws_callback_on_writable(wsi);
	s->d->reconcile(s);
	return 0;
}

/* Acks: ws-agent may forget the lines the turn log has ("L"), told with
 * the next input (agent_input), or every LINK_ACK_BYTES read, or
 * LINK_ACK_MS after a read, whichever comes first -- not per message: a
 * flood pays one small frame per MiB, a busy session none of its own.  An
 * ack only frees ws-agent's memory (its resend window is capped). */
#define LINK_ACK_BYTES (1u << 20)
#define LINK_ACK_MS    5000

static void link_ack(struct session *s)
{
	s->link.ack_bytes = 0;
	if (!s->link.up || !s->link.wsi || s->link.logged_seq <= s->link.acked_seq)
		return;
	s->link.acked_seq = s->link.logged_seq;
	send_json(s, json_pack("{s:s,s:I}", "type", "ack", "seq", (json_int_t)s->link.acked_seq));
}

static void sul_ack_cb(lws_sorted_usec_list_t *sul)
{
	link_ack(lws_container_of(sul, struct session, link.sul_ack));
}

static void link_ack_later(struct session *s, size_t read)
{
	s->link.ack_bytes += read;
	if (s->link.ack_bytes >= LINK_ACK_BYTES) {
		link_ack(s); /* the timer, if armed, finds nothing new or acks the rest */
	} else if (s->link.logged_seq > s->link.acked_seq && lws_dll2_is_detached(&s->link.sul_ack.list)) {
		session_timer(s, &s->link.sul_ack, sul_ack_cb, (uint64_t)LINK_ACK_MS * LWS_US_PER_MS);
	}
}

static int link_readable(struct session *s, struct lws *wsi, const uint8_t *p, size_t len)
{
	if (!s->link.up && link_handshake(s, wsi, &p, &len) < 0)
		return -1;
	if (!len || s->deleted || s->link.wsi != wsi)
		return 0;
	struct link_rx_ctx c = {s, wsi};
	const char *why = NULL;
	int rc = wsl_feed(&s->link.ws, p, len, link_deliver, &c, &why);
	/* The batch's frames, before any client is given them, and how far the
	 * link is read: only that is acked. */
	if (s->link.rx_seq != s->link.logged_seq && s->link.wsi == wsi && !s->deleted)
		(void)turnlog_link_seq(s, s->link.rx_seq);
	else
		(void)turnlog_flush(s);
	if (s->link.wsi == wsi && !s->deleted)
		link_ack_later(s, len);
	if (rc < 0)
		return why ? link_fail(s, why) : -1;
	return rc == 1 && s->link.wsi == wsi && !s->deleted ? -1 : 0;
}

/* Write what is pending: 0 all written, 1 the socket is full (wait for
 * writeable), -1 failed. */
static int link_flush(struct session *s, int fd)
{
	while (s->link.tx_off < s->link.tx_len) {
		ssize_t n = write(fd, s->link.tx + s->link.tx_off, s->link.tx_len - s->link.tx_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 1 : -1;
		s->link.tx_off += (size_t)n;
	}
	free(s->link.tx);
	s->link.tx = NULL;
	s->link.tx_len = s->link.tx_off = 0;
	return 0;
}

/* A client frame's mask (RFC 6455 5.3) from a pool of random bytes refilled
 * 1 KiB at a time: one getrandom(2) per 256 frames, not per frame (the link
 * is a Unix socket to our own ws-agent; the mask guards no proxy here). */
static void link_mask(uint8_t mask[4])
{
	static uint8_t pool[1024];
	static size_t used = sizeof pool;
	if (used + 4 > sizeof pool) {
		randombytes_buf(pool, sizeof pool);
		used = 0;
	}
	memcpy(mask, pool + used, 4);
	used += 4;
}

/* The next thing to send as bytes in link.tx: the handshake, then a frame at
 * a time (masked as a client's must be).  0 nothing to send. */
static int link_next(struct session *s)
{
	if (!s->link.ws_sent) {
		char req[512];
		int n = wsl_request(req, sizeof req, "cortex-agent", s->link.ws_key);
		if (n < 0 || !(s->link.tx = malloc((size_t)n)))
			return -1;
		memcpy(s->link.tx, req, (size_t)n);
		s->link.tx_len = (size_t)n;
		s->link.ws_sent = 1;
		return 1;
	}
	if (!s->link.up)
		return 0; /* frames wait for the 101; link_handshake asks for writeable again */
	struct frame *f = fq_pop(&s->link.out);
	if (!f)
		return 0;
	uint8_t mask[4], hdr[14];
	link_mask(mask);
	uint8_t op = f->seq == 10 ? 10 : 1; /* pong, else text */
	size_t hl = wsl_header(hdr, op, f->len, mask);
	s->link.tx = malloc(hl + f->len);
	if (s->link.tx) {
		memcpy(s->link.tx, hdr, hl);
		memcpy(s->link.tx + hl, f->buf + LWS_PRE, f->len);
		wsl_mask((uint8_t *)s->link.tx + hl, f->len, mask);
		s->link.tx_len = hl + f->len;
	}
	frame_unref(f);
	return s->link.tx ? 1 : -1;
}

static int link_writeable(struct session *s, struct lws *wsi)
{
	int fd = lws_get_socket_fd(wsi);
	for (;;) {
		int rc = link_flush(s, fd);
		if (rc < 0)
			return link_fail(s, "write failed");
		if (rc == 1)
			break; /* the socket is full */
		rc = link_next(s);
		if (rc < 0)
			return link_fail(s, "out of memory");
		if (rc == 0)
			return 0;
	}
	lws_callback_on_writable(wsi);
	return 0;
}

/* link_send's write at once: only with nothing queued before the frame it
 * just queued and nothing half written.  0 all written, else the writeable
 * callback takes over (1 the socket is full or not up yet, -1 a failure it
 * finds again and reports). */
static int link_write_now(struct session *s)
{
	if (!s->link.up || s->link.tx || s->link.out.n != 1)
		return 1;
	int fd = lws_get_socket_fd(s->link.wsi);
	if (fd < 0)
		return 1;
	int rc = link_next(s);
	if (rc <= 0)
		return rc;
	return link_flush(s, fd);
}

/* One read of up to LINK_READ bytes (the service thread's buffer). */
#define LINK_READ (256u << 10)
static int link_read(struct session *s, struct lws *wsi)
{
	static unsigned char buf[LINK_READ];
	ssize_t n = agent_link_recv(s, lws_get_socket_fd(wsi), buf, sizeof buf);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return -1; /* EOF or an error: RAW_CLOSE_FILE follows */
	return link_readable(s, wsi, buf, (size_t)n);
}

int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user;
	(void)in; /* a raw file: link_read reads the socket itself */
	(void)len;
	struct session *s = lws_get_opaque_user_data(wsi);
	if (reason == LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION)
		return -1; /* no client upgrades to this protocol */
	if (!s)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		link_gone(s, wsi, s->link.wsi == wsi && !s->link.up ? "the ws-agent handshake failed"
								      : "the ws-agent connection closed");
		lws_set_opaque_user_data(wsi, NULL);
		session_unref(s);
		return 0;
	case LWS_CALLBACK_RAW_RX_FILE:
		if (s->deleted || s->link.wsi != wsi)
			return 0;
		return link_read(s, wsi);
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (s->deleted || s->link.wsi != wsi)
			return 0;
		return link_writeable(s, wsi);
	default:
		return 0;
	}
}
