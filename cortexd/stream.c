/* stream.c — the message path.
 *
 *   client WS --message--> turn: [wait sandbox] -> config -> context file -> "run" to ws-agent
 *   ws-agent --line--> + seq --> every client of the session (verbatim otherwise)
 *   agent `result` line --> cortex.done {timings}; ws-agent `wsa.exit` closes the turn
 *
 * Flow control: each client has a byte-capped queue; while any client of a
 * session is over its cap, reading from that session's ws-agent connection is
 * paused (lws_rx_flow_control), which backs up ws-agent and then the agent's
 * stdout pipe.  Memory stays bounded; nothing is dropped. */
#include "daemon.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "caps.h"
#include "log.h"

/* ---- frame queues ---- */

struct frame *frame_new(const void *data, size_t len)
{
	struct frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f)
		return NULL;
	f->next = NULL;
	f->len = len;
	memcpy(f->buf + LWS_PRE, data, len);
	return f;
}

void fq_push(struct fqueue *q, struct frame *f)
{
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->bytes += f->len;
}

struct frame *fq_pop(struct fqueue *q)
{
	struct frame *f = q->head;
	if (f) {
		q->head = f->next;
		if (!q->head)
			q->tail = NULL;
		q->bytes -= f->len;
	}
	return f;
}

/* The lws write discipline: one frame per WRITEABLE callback, and ask for
 * another callback while frames remain.  -1 means close the connection. */
int fq_write_one(struct lws *wsi, struct fqueue *q)
{
	struct frame *f = fq_pop(q);
	if (!f)
		return 0;
	int n = lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
	free(f);
	if (n < 0)
		return -1;
	if (q->head)
		lws_callback_on_writable(wsi);
	return 0;
}

void fq_clear(struct fqueue *q)
{
	struct frame *f;
	while ((f = fq_pop(q)))
		free(f);
}

/* Reassemble a fragmented WebSocket message up to cap.  Past the cap the rest
 * is discarded and *overflow set, so the caller can answer once the final
 * fragment arrives.  -1 only when out of memory. */
static int rx_append(char **buf, size_t *len, int *overflow, size_t cap, const void *in, size_t n)
{
	if (*overflow || *len + n > cap) {
		*overflow = 1;
		return 0;
	}
	char *nb = realloc(*buf, *len + n + 1);
	if (!nb)
		return -1;
	*buf = nb;
	memcpy(nb + *len, in, n);
	*len += n;
	return 0;
}

static void rx_reset(char **buf, size_t *len, int *overflow)
{
	free(*buf);
	*buf = NULL;
	*len = 0;
	*overflow = 0;
}

/* ---- sending ---- */

static void update_flow(struct session *s)
{
	if (!s->agent_wsi)
		return;
	size_t worst = 0;
	for (struct client *c = s->clients; c; c = c->next)
		if (c->out.bytes > worst)
			worst = c->out.bytes;
	if (!s->agent_paused && worst > CX_CAP_CLIENT_QUEUE) {
		s->agent_paused = 1;
		lws_rx_flow_control(s->agent_wsi, 0);
	} else if (s->agent_paused && worst <= CX_CAP_CLIENT_QUEUE / 2) {
		s->agent_paused = 0;
		lws_rx_flow_control(s->agent_wsi, 1);
	}
}

static void client_send(struct client *c, const char *data, size_t len)
{
	if (c->closing)
		return;
	struct frame *f = frame_new(data, len);
	if (!f)
		return;
	fq_push(&c->out, f);
	lws_callback_on_writable(c->wsi);
}

static void broadcast(struct session *s, const char *data, size_t len)
{
	for (struct client *c = s->clients; c; c = c->next)
		client_send(c, data, len);
	update_flow(s);
}

/* Send a cortex.* object (consumed) to every client, with the next seq. */
static void send_obj(struct session *s, json_t *o)
{
	json_object_set_new(o, "seq", json_integer((json_int_t)++s->seq));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (txt) {
		broadcast(s, txt, strlen(txt));
		free(txt);
	}
}

static void send_error_to(struct session *s, struct client *only, const char *code, const char *msg)
{
	json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg);
	if (!only) {
		send_obj(s, o);
		return;
	}
	json_object_set_new(o, "seq", json_integer((json_int_t)(s ? ++s->seq : 0)));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (txt) {
		client_send(only, txt, strlen(txt));
		free(txt);
	}
}

/* Forward one agent line verbatim with "seq" spliced in as the first member:
 * no re-encoding, so the bytes the agent printed are the bytes clients get. */
static void forward_line(struct session *s, const char *line, size_t len)
{
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	char head[40];
	int hn = snprintf(head, sizeof head, "{\"seq\":%llu", (unsigned long long)++s->seq);
	size_t rest = len - i - 1; /* after '{' */
	const char *r = line + i + 1;
	size_t k = 0;
	while (k < rest && (r[k] == ' ' || r[k] == '\t' || r[k] == '\n' || r[k] == '\r'))
		k++;
	int empty = k < rest && r[k] == '}';
	size_t total = (size_t)hn + (empty ? 0 : 1) + rest;
	char *buf = malloc(total);
	if (!buf)
		return;
	memcpy(buf, head, (size_t)hn);
	size_t off = (size_t)hn;
	if (!empty)
		buf[off++] = ',';
	memcpy(buf + off, r, rest);
	broadcast(s, buf, total);
	free(buf);
}

static void agent_send(struct session *s, json_t *o)
{
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt || !s->agent_wsi) {
		free(txt);
		return;
	}
	struct frame *f = frame_new(txt, strlen(txt));
	free(txt);
	if (!f)
		return;
	fq_push(&s->agent_out, f);
	lws_callback_on_writable(s->agent_wsi);
}

/* ---- turns ---- */

static double ms_since(uint64_t us) { return (double)(cx_mono_us() - us) / 1000.0; }

static void turn_free(struct turn *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->final_text);
	free(t);
}

static void turn_start(struct session *s, const char *text);

/* The turn is over (ws-agent said so, or it can never start). */
static void turn_end(struct session *s)
{
	struct turn *t = s->turn;
	s->turn = NULL;
	turn_free(t);
	s->last_active_at = cx_wall_ms();
	/* A message that arrived after cortex.done but before the agent exited. */
	char *next = s->next_text;
	s->next_text = NULL;
	if (next && !s->deleted)
		turn_start(s, next);
	else if (s->sync_again && !s->deleted)
		session_config_kick(s); /* settings changed during the turn */
	free(next);
}

static void turn_fail(struct session *s, const char *code, const char *msg)
{
	send_error_to(s, NULL, code, msg);
	turn_end(s);
}

static const char *cache_how_name(int h)
{
	static const char *n[] = {"hit", "miss", "dirty", "expired"};
	return h >= 0 && h <= 3 ? n[h] : "none";
}

static void send_done(struct session *s)
{
	struct turn *t = s->turn;
	double total = ms_since(t->t0_us);
	json_t *timings = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "first_token_ms",
				    t->first_token_ms < 0 ? total : t->first_token_ms, "total_ms", total,
				    "wait_sandbox_ms", t->wait_sandbox_ms, "config_ms", t->config_ms,
				    "install_ms", t->install_ms, "sync_ms", t->sync_ms, "context_ms",
				    t->context_ms);
	const char *path = t->cold ? "cold" : t->config_changed ? "config_changed" : "warm";
	send_obj(s, json_pack("{s:s,s:o,s:s,s:s,s:I}", "type", "cortex.done", "timings", timings, "path",
			      path, "config_cache", cache_how_name(t->cache_how), "turn", (json_int_t)t->id));
	t->done_sent = 1;
	log_info("session %s turn %llu: first token %.1f ms, total %.1f ms (%s)", s->id,
		 (unsigned long long)t->id, t->first_token_ms, total, path);
}

/* Everything the agent needs for one message, written to the context file:
 * argv (the message, --continue, the model) plus the cached config's env. */
static json_t *build_context(struct session *s, const struct turn *t, const cconfig *cfg)
{
	const config *c = &D.cfg;
	json_t *argv = json_pack("[s,s,s,s,s,s]", c->agent_command, "-p", "--output-format",
				 "stream-json", "--verbose", "--include-partial-messages");
	if (c->agent_permission_mode[0]) {
		json_array_append_new(argv, json_string("--permission-mode"));
		json_array_append_new(argv, json_string(c->agent_permission_mode));
	}
	if (s->had_success)
		json_array_append_new(argv, json_string("--continue"));
	const char *model = cfg->model[0] ? cfg->model : c->provider_model;
	if (model[0]) {
		json_array_append_new(argv, json_string("--model"));
		json_array_append_new(argv, json_string(model));
	}
	/* "--" so a message starting with '-' is never taken for a flag. */
	json_array_append_new(argv, json_string("--"));
	json_array_append_new(argv, json_string(t->text));
	/* The env was built once with the config (cconfig.c agent_env_of). */
	return json_pack("{s:o,s:O,s:s,s:I}", "argv", argv, "env", cfg->agent_env, "cwd", "/workspace", "turn",
			 (json_int_t)t->id);
}

/* Everything is ready: context file -> run. */
static void turn_launch(struct session *s, const cconfig *cfg)
{
	struct turn *t = s->turn;
	uint64_t t1 = cx_mono_us();
	json_t *ctx = build_context(s, t, cfg);
	char *txt = json_dumps(ctx, JSON_COMPACT);
	json_decref(ctx);
	if (!txt) {
		turn_fail(s, "internal", "could not encode the context");
		return;
	}
	size_t len = strlen(txt);
	cx_err err = CX_ERR_INIT;
	int rc = len > CX_CAP_CONTEXT_FILE
			 ? cx_err_set(&err, EMSGSIZE, "context is %zu bytes (cap %u)", len, CX_CAP_CONTEXT_FILE)
			 : sandbox_write_file(s->sb, "/tmp/vf-pending-query.json", txt, len, 0600, &err);
	/* The context holds the user's secret env values: wipe before freeing. */
	memset(txt, 0, len);
	free(txt);
	t->context_ms = ms_since(t1);
	if (rc < 0) {
		turn_fail(s, "context_failed", err.msg);
		return;
	}
	t->started = 1;
	if (t->cold)
		send_obj(s, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase", "starting_agent"));
	agent_send(s, json_pack("{s:s,s:I}", "type", "run", "turn", (json_int_t)t->id));
}

enum { PG_WAKING = 1, PG_INSTALL = 2, PG_CONFIG = 4 };

/* Each cortex.progress phase once per turn. */
static void progress(struct session *s, int bit, json_t *o)
{
	if (s->turn->progress_sent & bit) {
		json_decref(o);
		return;
	}
	s->turn->progress_sent |= bit;
	send_obj(s, o);
}

/* Account the time spent waiting to the phase being waited for. */
static void wait_mark(struct turn *t, int kind)
{
	if (t->wait_kind == kind)
		return;
	uint64_t now = cx_mono_us();
	if (t->wait_kind) {
		double ms = (double)(now - t->wait_since_us) / 1000.0;
		if (t->wait_kind == 1)
			t->install_ms += ms;
		else
			t->sync_ms += ms;
	}
	t->wait_kind = kind;
	t->wait_since_us = now;
}

/* The turn's state machine: sandbox -> config (cache) -> packages -> sync ->
 * launch.  Called when the turn starts and again whenever what it waits for
 * arrives (sandbox ready, install done, sync done).  On the warm path every
 * check is an in-memory compare and it launches at once. */
void stream_turn_advance(struct session *s)
{
	struct turn *t = s->turn;
	if (!t || t->started || s->deleted)
		return;
	if (!s->sb || !s->agent_up || s->job_running) {
		t->cold = 1;
		progress(s, PG_WAKING, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase",
						 s->state == SS_CREATING ? "creating" : "waking"));
		session_ensure_ready(s);
		return;
	}
	if (!t->sandbox_ok) {
		t->sandbox_ok = 1;
		t->wait_sandbox_ms = t->cold ? ms_since(t->t0_us) : 0;
	}
	uint64_t c0 = cx_mono_us();
	enum ccache_how how;
	cx_err err = CX_ERR_INIT;
	cconfig *cfg = ccache_get(s, &how, &err);
	t->config_ms += ms_since(c0);
	if (t->cache_how < 0)
		t->cache_how = (int)how;
	if (!cfg) {
		turn_fail(s, "config_failed", err.msg);
		return;
	}
	if (cfg->pkgs_missing) {
		const char *spec = NULL, *why = cconfig_failed_pkg(cfg, &spec);
		if (why) {
			char msg[1000];
			snprintf(msg, sizeof msg, "MCP package %s could not be installed (fix the mcp setting): %s",
				 spec, why);
			turn_fail(s, "mcp_install_failed", msg);
			return;
		}
		wait_mark(t, 1);
		progress(s, PG_INSTALL, json_pack("{s:s,s:s,s:I,s:I}", "type", "cortex.progress", "phase",
						  "installing_packages", "missing", (json_int_t)cfg->pkgs_missing,
						  "total", (json_int_t)cfg->n_pkgs));
		cconfig_start_installs(cfg, s->user); /* joins installs already under way */
		return;
	}
	if (session_sync_needed(s, cfg)) {
		wait_mark(t, 2);
		progress(s, PG_CONFIG, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase",
						 "writing_config"));
		return;
	}
	wait_mark(t, 0);
	if (s->last_turn_hash[0] && strcmp(s->last_turn_hash, cfg->all_hash))
		t->config_changed = 1;
	memcpy(s->last_turn_hash, cfg->all_hash, sizeof s->last_turn_hash);
	turn_launch(s, cfg);
}

static void turn_start(struct session *s, const char *text)
{
	struct turn *t = calloc(1, sizeof *t);
	if (!t || !(t->text = strdup(text))) {
		free(t);
		send_error_to(s, NULL, "internal", "out of memory");
		return;
	}
	t->t0_us = cx_mono_us();
	t->first_token_ms = -1;
	t->cache_how = -1;
	t->id = ++s->turns;
	s->turn = t;
	s->last_active_at = cx_wall_ms();
	transcript_append(s, "user", text, t->id);
	stream_turn_advance(s);
}

void stream_session_ready(struct session *s)
{
	s->state = SS_READY;
	stream_turn_advance(s);
}

void stream_session_failed(struct session *s, const char *code, const char *msg)
{
	if (s->turn)
		turn_fail(s, code, msg);
}

/* ---- agent lines ---- */

static const char *jget_str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void handle_wsa(struct session *s, json_t *o, const char *type)
{
	struct turn *t = s->turn;
	if (!strcmp(type, "wsa.stderr")) {
		const char *txt = jget_str(o, "text");
		if (txt && t) {
			size_t have = strlen(t->stderr_tail), add = strlen(txt);
			if (have + add + 2 >= sizeof t->stderr_tail) {
				have = 0; /* keep the latest lines */
				t->stderr_tail[0] = '\0';
			}
			if (add + 2 < sizeof t->stderr_tail) {
				memcpy(t->stderr_tail + have, txt, add);
				t->stderr_tail[have + add] = '\n';
				t->stderr_tail[have + add + 1] = '\0';
			}
		}
		log_debug("session %s agent stderr: %s", s->id, txt ? txt : "");
	} else if (!strcmp(type, "wsa.exit")) {
		if (!t)
			return;
		if (!t->result_seen) {
			char msg[1400];
			json_int_t code = json_integer_value(json_object_get(o, "code"));
			json_int_t sig = json_integer_value(json_object_get(o, "signal"));
			const char *tail = jget_str(o, "stderr_tail");
			snprintf(msg, sizeof msg, "agent exited (code %lld, signal %lld) without a result%s%s",
				 (long long)code, (long long)sig, tail && *tail ? ": " : "",
				 tail ? tail : "");
			turn_fail(s, sig ? "agent_killed" : "agent_failed", msg);
		} else {
			turn_end(s);
		}
	} else if (!strcmp(type, "wsa.error")) {
		const char *code = jget_str(o, "code");
		const char *msg = jget_str(o, "message");
		char full[600];
		snprintf(full, sizeof full, "ws-agent: %s", msg ? msg : code ? code : "error");
		/* These mean the agent never started, so no wsa.exit will follow. */
		if (code && t && (!strcmp(code, "context_timeout") || !strcmp(code, "bad_context") ||
				  !strcmp(code, "spawn_failed") || !strcmp(code, "busy") ||
				  !strcmp(code, "cancelled")))
			turn_fail(s, code, full);
		else
			send_error_to(s, NULL, code ? code : "agent_error", full);
	}
	/* "pong" and unknown wsa.* are ignored. */
}

static void handle_agent_line(struct session *s, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *o = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(o)) {
		json_decref(o);
		send_error_to(s, NULL, "agent_output", "the agent printed a line that is not a JSON object");
		return;
	}
	const char *type = jget_str(o, "type");
	if (type && !strncmp(type, "wsa.", 4)) {
		handle_wsa(s, o, type);
		json_decref(o);
		return;
	}
	if (type && !strcmp(type, "pong")) {
		json_decref(o);
		return;
	}
	struct turn *t = s->turn;
	forward_line(s, line, len);
	if (t && type) {
		if (t->first_token_ms < 0 && !strcmp(type, "stream_event")) {
			json_t *ev = json_object_get(o, "event");
			const char *et = jget_str(ev, "type");
			const char *dt = jget_str(json_object_get(ev, "delta"), "type");
			if (et && dt && !strcmp(et, "content_block_delta") && !strcmp(dt, "text_delta"))
				t->first_token_ms = ms_since(t->t0_us);
		} else if (!strcmp(type, "result") && !t->result_seen) {
			t->result_seen = 1;
			const char *res = jget_str(o, "result");
			int is_error = json_is_true(json_object_get(o, "is_error"));
			if (res)
				transcript_append(s, "assistant", res, t->id);
			if (!is_error)
				s->had_success = 1;
			send_done(s);
		}
	}
	json_decref(o);
}

/* ---- client messages ---- */

static void handle_client_msg(struct client *c, const char *data, size_t len)
{
	struct session *s = c->sess;
	if (!s)
		return;
	json_error_t jerr;
	json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = json_is_object(o) ? jget_str(o, "type") : NULL;
	if (!type) {
		char msg[300];
		snprintf(msg, sizeof msg, "%s", o ? "frame needs a string \"type\"" : jerr.text);
		send_error_to(s, c, "bad_frame", msg);
	} else if (!strcmp(type, "message")) {
		json_t *tv = json_object_get(o, "text");
		const char *text = json_string_value(tv);
		if (!text || !*text)
			send_error_to(s, c, "bad_frame", "\"message\" needs a non-empty string \"text\"");
		else if (json_string_length(tv) > CX_CAP_MESSAGE_TEXT)
			send_error_to(s, c, "too_large", "message text over the size cap");
		else if (s->turn && s->turn->done_sent && !s->next_text)
			s->next_text = strdup(text); /* the agent is exiting; starts at wsa.exit */
		else if (s->turn)
			send_error_to(s, c, "busy", "a turn is running on this session; cancel it or wait for cortex.done");
		else
			turn_start(s, text);
	} else if (!strcmp(type, "cancel")) {
		if (s->turn && s->turn->started)
			agent_send(s, json_pack("{s:s}", "type", "cancel"));
		else if (s->turn)
			turn_fail(s, "cancelled", "the turn was cancelled before the agent started");
		else
			send_error_to(s, c, "no_turn", "no turn is running");
	} else if (!strcmp(type, "resume")) {
		send_error_to(s, c, "unsupported", "resume is not available yet");
	} else {
		char msg[200];
		snprintf(msg, sizeof msg, "unknown frame type \"%.64s\"", type);
		send_error_to(s, c, "bad_frame", msg);
	}
	json_decref(o);
}

/* ---- the client protocol ---- */

static int parse_ws_path(const char *uri, char *out_id, size_t cap)
{
	static const char pre[] = "/v1/sessions/";
	if (strncmp(uri, pre, sizeof pre - 1))
		return -1;
	const char *id = uri + sizeof pre - 1;
	const char *slash = strchr(id, '/');
	if (!slash || strcmp(slash, "/ws") || slash == id || (size_t)(slash - id) >= cap)
		return -1;
	memcpy(out_id, id, (size_t)(slash - id));
	out_id[slash - id] = '\0';
	return 0;
}

/* The token from "Authorization: Bearer X" or, for browsers, ?token=X. */
static int ws_token(struct lws *wsi, char *out, int cap)
{
	char hdr[400];
	if (lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
	    !strncasecmp(hdr, "Bearer ", 7)) {
		snprintf(out, (size_t)cap, "%s", hdr + 7);
		return 0;
	}
	const char *v = lws_get_urlarg_by_name(wsi, "token=", out, cap);
	if (v) {
		memmove(out, v, strlen(v) + 1);
		return 0;
	}
	out[0] = '\0';
	return -1;
}

/* Refuse an upgrade with a real HTTP status and JSON body (clients see 401/404). */
static int reject_upgrade(struct lws *wsi, int status, const char *code, const char *msg)
{
	unsigned char buf[LWS_PRE + 1024];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	char body[400];
	int blen = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
	if (lws_add_http_common_headers(wsi, (unsigned int)status, "application/json",
					(lws_filepos_t)blen, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end))
		return -1;
	if (end - p > blen) {
		memcpy(p, body, (size_t)blen);
		p += blen;
	}
	lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS);
	return -1;
}

static struct session *ws_authorize(struct lws *wsi, int *status, const char **code, const char **msg)
{
	char uri[512], id[64], token[300], user[80];
	*status = 404;
	*code = "not_found";
	*msg = "no such session";
	if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || parse_ws_path(uri, id, sizeof id) < 0)
		return NULL;
	ws_token(wsi, token, sizeof token);
	int who = api_auth(token[0] ? token : NULL, user, sizeof user);
	if (who < 0) {
		*status = 401;
		*code = "unauthorized";
		*msg = "missing or invalid token";
		return NULL;
	}
	struct session *s = session_find(id);
	if (!s || who != 0 || strcmp(s->user, user))
		return NULL; /* another user's session looks exactly like a missing one */
	return s;
}

int callback_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct client *c = user;
	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
		int status;
		const char *code, *msg;
		if (!ws_authorize(wsi, &status, &code, &msg))
			return reject_upgrade(wsi, status, code, msg);
		return 0;
	}
	case LWS_CALLBACK_ESTABLISHED: {
		memset(c, 0, sizeof *c);
		c->wsi = wsi;
		int status;
		const char *code, *msg;
		struct session *s = ws_authorize(wsi, &status, &code, &msg);
		if (!s)
			return -1;
		c->sess = s;
		c->next = s->clients;
		s->clients = c;
		/* Speculative warm-up: a client that connects will send a message soon. */
		session_ensure_ready(s);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE: {
		if (!c->sess)
			return -1;
		if (lws_frame_is_binary(wsi)) {
			send_error_to(c->sess, c, "bad_frame", "binary frames are not accepted");
			return 0;
		}
		if (rx_append(&c->rx, &c->rx_len, &c->rx_overflow, CX_CAP_CLIENT_FRAME, in, len) < 0)
			return -1;
		if (!lws_is_final_fragment(wsi))
			return 0;
		if (c->rx_overflow)
			send_error_to(c->sess, c, "too_large", "frame over the size cap");
		else
			handle_client_msg(c, c->rx, c->rx_len);
		rx_reset(&c->rx, &c->rx_len, &c->rx_overflow);
		return 0;
	}
	case LWS_CALLBACK_SERVER_WRITEABLE: {
		if (c->closing || fq_write_one(wsi, &c->out) < 0)
			return -1;
		if (c->sess)
			update_flow(c->sess);
		return 0;
	}
	case LWS_CALLBACK_CLOSED: {
		struct session *s = c->sess;
		if (s) {
			for (struct client **pp = &s->clients; *pp; pp = &(*pp)->next)
				if (*pp == c) {
					*pp = c->next;
					break;
				}
			update_flow(s);
		}
		c->sess = NULL;
		fq_clear(&c->out);
		free(c->rx);
		c->rx = NULL;
		return 0;
	}
	default:
		return 0;
	}
}

/* ---- the ws-agent connection (client role, over the session's Unix socket) ---- */

static const lws_retry_bo_t agent_retry = {
	.secs_since_valid_ping = 15,
	.secs_since_valid_hangup = 45,
};

void stream_agent_connect(struct session *s)
{
	if (s->agent_wsi || !s->sb || D.stop)
		return;
	char addr[4300];
	snprintf(addr, sizeof addr, "+%s/run/agent.sock", s->dir);
	struct lws_client_connect_info i;
	memset(&i, 0, sizeof i);
	i.context = D.ctx;
	i.vhost = D.vh;
	i.address = addr;
	i.port = 0;
	i.path = "/";
	i.host = "localhost";
	i.origin = "localhost";
	i.protocol = "cortex-agent";
	i.local_protocol_name = "cortex-agent";
	i.opaque_user_data = s;
	i.retry_and_idle_policy = &agent_retry;
	i.pwsi = &s->agent_wsi;
	s->refs++; /* held by the connection until CLOSED / CONNECTION_ERROR */
	if (!lws_client_connect_via_info(&i)) {
		s->agent_wsi = NULL;
		s->refs--;
		s->state = SS_ERROR;
		snprintf(s->error, sizeof s->error, "cannot connect to ws-agent at %s", addr + 1);
		stream_session_failed(s, "agent_unreachable", s->error);
	}
}

static void agent_gone(struct session *s, struct lws *wsi, const char *why)
{
	if (s->agent_wsi != wsi && s->agent_wsi)
		return;
	s->agent_wsi = NULL;
	s->agent_up = 0;
	s->agent_paused = 0;
	fq_clear(&s->agent_out);
	free(s->agent_rx);
	s->agent_rx = NULL;
	s->agent_rx_len = 0;
	if (!s->deleted && s->turn)
		turn_fail(s, "agent_lost", why);
	if (!s->deleted && s->state == SS_READY) {
		s->state = SS_ERROR;
		snprintf(s->error, sizeof s->error, "%s", why);
	}
}

int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user;
	struct session *s = lws_get_opaque_user_data(wsi);
	if (!s)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (s->deleted || s->agent_wsi != wsi)
			return -1;
		s->agent_up = 1;
		stream_session_ready(s);
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		char why[300];
		snprintf(why, sizeof why, "ws-agent connection failed: %s", in ? (const char *)in : "unknown");
		log_error("session %s: %s", s->id, why);
		agent_gone(s, wsi, why);
		lws_set_opaque_user_data(wsi, NULL);
		session_unref(s);
		return 0;
	}
	case LWS_CALLBACK_CLIENT_CLOSED:
		agent_gone(s, wsi, "the ws-agent connection closed");
		lws_set_opaque_user_data(wsi, NULL);
		session_unref(s);
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (s->deleted)
			return 0;
		if (rx_append(&s->agent_rx, &s->agent_rx_len, &s->agent_rx_overflow, CX_CAP_AGENT_LINE, in,
			      len) < 0)
			return -1;
		if (!lws_is_final_fragment(wsi))
			return 0;
		if (s->agent_rx_overflow)
			send_error_to(s, NULL, "line_too_long", "an agent line over the size cap was dropped");
		else
			handle_agent_line(s, s->agent_rx, s->agent_rx_len);
		rx_reset(&s->agent_rx, &s->agent_rx_len, &s->agent_rx_overflow);
		return 0;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return fq_write_one(wsi, &s->agent_out);
	default:
		return 0;
	}
}

void stream_session_detach(struct session *s)
{
	free(s->next_text);
	s->next_text = NULL;
	if (s->turn) {
		send_error_to(s, NULL, "session_stopped", "the session was stopped");
		turn_end(s);
	}
	for (struct client *c = s->clients; c; c = c->next) {
		c->sess = NULL;
		c->closing = 1;
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
	s->clients = NULL;
	if (s->agent_wsi) {
		struct lws *w = s->agent_wsi;
		agent_gone(s, w, "session stopped");
		lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
}
