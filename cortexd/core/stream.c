/* stream.c — the message path.
 *
 *   client WS --message--> turn: [wake / thaw] -> config -> [sync] -> [agent boot] -> input line
 *   hot agent --line--> ws-agent --frame--> + seq --> every client of the session (verbatim)
 *   agent `result` line --> cortex.done {timings}; the agent stays up for the next message
 *
 * The agent is started once per session (ws-agent protocol v2, docs/protocol.md)
 * in stream-json input mode and kept hot: a warm message is one frame on the
 * already-open ws-agent connection.  A config change restarts it in the
 * background; an idle one is released (session.c timers).
 *
 * Flow control: each client has a byte-capped queue; while any client of a
 * session is over its cap, reading from that session's ws-agent connection is
 * paused (lws_rx_flow_control), which backs up ws-agent and then the agent's
 * stdout pipe.  Memory stays bounded; nothing is dropped.
 *
 * Resume: every frame of a turn carries seq and is kept (capped) until the
 * next turn starts; a client that joins mid-turn is "held" until it sends
 * resume, so no frame reaches it twice. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "caps.h"
#include "log.h"

/* ---- frame queues ---- */

struct frame *frame_new(const void *data, size_t len)
{
	struct frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f)
		return NULL;
	f->next = NULL;
	f->seq = 0;
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

static void client_send(struct client *c, const char *data, size_t len, uint64_t seq)
{
	if (c->closing)
		return;
	struct frame *f = frame_new(data, len);
	if (!f)
		return;
	f->seq = seq;
	if (seq > c->last_seq)
		c->last_seq = seq;
	fq_push(&c->out, f);
	lws_callback_on_writable(c->wsi);
}

/* Keep a turn's frame for "resume"; past the cap the oldest go. */
static void replay_keep(struct session *s, const char *data, size_t len, uint64_t seq)
{
	struct frame *f = frame_new(data, len);
	if (!f)
		return;
	f->seq = seq;
	fq_push(&s->replay, f);
	while (s->replay.bytes > CX_CAP_REPLAY && s->replay.head != s->replay.tail) {
		struct frame *old = fq_pop(&s->replay);
		s->replay_dropped = old->seq;
		free(old);
	}
}

/* To every client following the stream (not those waiting to resume). */
static void broadcast(struct session *s, const char *data, size_t len, uint64_t seq)
{
	if (s->turn)
		replay_keep(s, data, len, seq);
	for (struct client *c = s->clients; c; c = c->next)
		if (!c->held)
			client_send(c, data, len, seq);
	update_flow(s);
}

/* Send a cortex.* object (consumed) to every client, with the next seq. */
static void send_obj(struct session *s, json_t *o)
{
	uint64_t seq = ++s->seq;
	json_object_set_new(o, "seq", json_integer((json_int_t)seq));
	if (s->turn && !json_object_get(o, "turn"))
		json_object_set_new(o, "turn", json_integer((json_int_t)s->turn->id));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (txt) {
		broadcast(s, txt, strlen(txt), seq);
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
	uint64_t seq = s ? ++s->seq : 0;
	json_object_set_new(o, "seq", json_integer((json_int_t)seq));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (txt) {
		client_send(only, txt, strlen(txt), seq);
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
	uint64_t seq = ++s->seq;
	char head[40];
	int hn = snprintf(head, sizeof head, "{\"seq\":%llu", (unsigned long long)seq);
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
	broadcast(s, buf, total, seq);
	free(buf);
}

static void agent_send(struct session *s, json_t *o)
{
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
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

/* One line to the current agent's stdin (o consumed). */
static void agent_input(struct session *s, json_t *line)
{
	char *txt = line ? json_dumps(line, JSON_COMPACT) : NULL;
	json_decref(line);
	if (!txt)
		return;
	agent_send(s, json_pack("{s:s,s:I,s:s}", "type", "input", "gen", (json_int_t)s->ag_gen, "data", txt));
	free(txt);
}

/* ---- counters ---- */

static struct stream_counters counters;
void stream_get_counters(struct stream_counters *out) { *out = counters; }

/* ---- per surface figures ---- */

static struct surf_ring {
	double ft[STREAM_FT_RING];
	size_t n, next;
	struct surface_stats st;
} surf[SURF_N];

static int surface_index(const struct session *s)
{
	return s->prof && !strcmp(s->prof->name, "voice") ? SURF_VOICE : SURF_CHAT;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void stream_surface_stats(int surface, struct surface_stats *out)
{
	struct surf_ring *r = &surf[surface];
	*out = r->st;
	out->p50 = out->p95 = 0;
	if (!r->n)
		return;
	double tmp[STREAM_FT_RING];
	memcpy(tmp, r->ft, r->n * sizeof *tmp);
	qsort(tmp, r->n, sizeof *tmp, cmp_double);
	out->p50 = tmp[(r->n * 50 + 99) / 100 - 1];
	out->p95 = tmp[(r->n * 95 + 99) / 100 - 1];
}

static void surface_record(const struct session *s, double first_token, double total, int path)
{
	struct surf_ring *r = &surf[surface_index(s)];
	r->ft[r->next] = first_token;
	r->next = (r->next + 1) % STREAM_FT_RING;
	if (r->n < STREAM_FT_RING)
		r->n++;
	r->st.turns++;
	r->st.by_path[path]++;
	if (s->prof && s->prof->first_token_budget_ms && first_token > s->prof->first_token_budget_ms)
		r->st.over_first_token++;
	if (s->prof && s->prof->response_budget_ms && total > s->prof->response_budget_ms)
		r->st.over_response++;
}

/* ---- turns ---- */

static double ms_since(uint64_t us) { return (double)(cx_mono_us() - us) / 1000.0; }

static void turn_free(struct turn *t)
{
	if (!t)
		return;
	free(t->text);
	guard_scan_free(&t->gs_text);
	guard_scan_free(&t->gs_line);
	sentencer_free(&t->sz);
	free(t);
}

static void turn_start(struct session *s, const char *text);

/* The turn is over: the agent's result came, or it can never come. */
static int turn_path(const struct turn *t)
{
	/* cold: the sandbox had to be created, woken or thawed, or the agent started
	 * for this message; config_changed: the agent runs a changed config. */
	return t->config_changed ? 2 : (t->wake || t->agent_cold) ? 1 : 0;
}
static const char *const path_names[] = {"warm", "cold", "config_changed"};

static void turn_end(struct session *s)
{
	struct turn *t = s->turn;
	s->turn = NULL;
	if (t) {
		double total = ms_since(t->t0_us);
		record_turn(s, t, path_names[turn_path(t)], t->outcome[0] ? t->outcome : "ended",
			    t->first_token_ms < 0 ? total : t->first_token_ms, total);
	}
	lws_sul_cancel(&s->sul_agent); /* an interrupt deadline */
	lws_sul_cancel(&s->sul_grace);
	turn_free(t);
	session_touch(s);
	/* A message that came after cortex.revoked, while the agent was stopping. */
	char *next = s->next_text;
	s->next_text = NULL;
	if (next && !s->deleted)
		turn_start(s, next);
	else if (!s->deleted)
		session_config_kick(s); /* settings changed during the turn; a crashed agent */
	free(next);
}

static void turn_fail(struct session *s, const char *code, const char *msg)
{
	if (s->turn && !s->turn->outcome[0])
		snprintf(s->turn->outcome, sizeof s->turn->outcome, "%s", code);
	send_error_to(s, NULL, code, msg);
	turn_end(s);
}

static const char *cache_how_name(int h)
{
	static const char *n[] = {"hit", "miss", "dirty", "expired"};
	return h >= 0 && h <= 3 ? n[h] : "none";
}

static void send_done(struct session *s, int is_error)
{
	struct turn *t = s->turn;
	double total = ms_since(t->t0_us);
	double ft = t->first_token_ms < 0 ? total : t->first_token_ms;
	json_t *timings = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "first_token_ms", ft, "total_ms",
				    total, "wait_sandbox_ms", t->wait_sandbox_ms, "config_ms", t->config_ms,
				    "install_ms", t->install_ms, "sync_ms", t->sync_ms, "agent_start_ms",
				    t->agent_start_ms, "context_ms", t->context_ms);
	int path = turn_path(t);
	const char *const *pn = path_names;
	snprintf(t->outcome, sizeof t->outcome, "%s", is_error ? "agent_error" : "ok");
	json_t *o = json_pack("{s:s,s:o,s:s,s:s,s:s,s:s,s:b,s:b}", "type", "cortex.done", "timings", timings,
			      "path", pn[path], "agent", t->agent_cold ? "cold" : "hot", "config_cache",
			      cache_how_name(t->cache_how), "surface", s->surface, "cancelled", t->cancelled,
			      "is_error", is_error);
	if (t->wake)
		json_object_set_new(o, "wake", json_string(t->wake));
	if (s->prof)
		json_object_set_new(o, "first_token_budget_ms", json_integer(s->prof->first_token_budget_ms));
	if (t->model_requests) {
		json_object_set_new(timings, "model_ttfb_ms", json_real(t->model_ttfb_ms));
		json_object_set_new(o, "usage", json_pack("{s:I,s:I,s:I,s:I,s:i}", "input_tokens",
							  (json_int_t)t->usage.input, "output_tokens",
							  (json_int_t)t->usage.output, "cache_read_input_tokens",
							  (json_int_t)t->usage.cache_read, "cache_creation_input_tokens",
							  (json_int_t)t->usage.cache_creation, "model_requests",
							  (int)t->model_requests));
	}
	send_obj(s, o);
	t->done_sent = 1;
	surface_record(s, ft, total, path);
	log_info("session %s turn %llu: first token %.1f ms, total %.1f ms (%s, agent %s)", s->id,
		 (unsigned long long)t->id, t->first_token_ms, total, pn[path], t->agent_cold ? "cold" : "hot");
}

/* ---- the hot agent ---- */

const char *stream_agent_state(const struct session *s)
{
	if (s->turn && s->turn->sent)
		return "busy";
	static const char *n[] = {"none", "starting", "hot"};
	return n[s->ag_state];
}

static void sul_agent_cb(lws_sorted_usec_list_t *sul);

/* What the agent is started with, written to the context file: the hot agent
 * reads messages as stream-json lines on stdin. */
static json_t *build_context(struct session *s, const cconfig *cfg)
{
	const config *c = &D.cfg;
	json_t *argv = json_pack("[s,s,s,s,s,s,s,s]", c->agent_command, "-p", "--input-format", "stream-json",
				 "--output-format", "stream-json", "--verbose", "--include-partial-messages");
	if (c->agent_permission_mode[0]) {
		json_array_append_new(argv, json_string("--permission-mode"));
		json_array_append_new(argv, json_string(c->agent_permission_mode));
	}
	if (s->had_success)
		json_array_append_new(argv, json_string("--continue"));
	/* The user's model, else the surface's, else the provider's. */
	const char *model = cfg->model[0]			? cfg->model
			    : s->prof && s->prof->model[0] ? s->prof->model
							   : c->provider_model;
	if (model[0]) {
		json_array_append_new(argv, json_string("--model"));
		json_array_append_new(argv, json_string(model));
	}
	/* The env was built once with the config (cconfig.c agent_env_of); the
	 * gateway's URL and this session's token are the only per-session part. */
	json_t *env = json_copy(cfg->agent_env);
	if (env && D.cfg.gateway_enabled) {
		char url[300];
		snprintf(url, sizeof url, "http://%s:%d", D.cfg.gateway_host, gateway_port());
		json_object_set_new(env, "ANTHROPIC_BASE_URL", json_string(url));
		json_object_set_new(env, "ANTHROPIC_API_KEY", json_string(s->gw_token));
	}
	return json_pack("{s:o,s:o,s:s}", "argv", argv, "env", env, "cwd", "/workspace");
}

/* Retire the current agent (ws-agent drops its later output). */
static void agent_stop(struct session *s)
{
	if (s->ag_state == AG_NONE)
		return;
	agent_send(s, json_pack("{s:s,s:I}", "type", "stop", "gen", (json_int_t)s->ag_gen));
	s->ag_state = AG_NONE;
	lws_sul_cancel(&s->sul_agent);
}

/* Start an agent for cfg (a running one is retired first).  The turn, if one
 * waits, is advanced when the agent answers the handshake. */
static int agent_start(struct session *s, const cconfig *cfg, cx_err *err)
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
			 : sandbox_write_file(s->sb, "/tmp/vf-pending-query.json", txt, len, 0600, err);
	/* The context holds the user's secret env values: wipe before freeing. */
	memset(txt, 0, len);
	free(txt);
	if (s->turn)
		s->turn->context_ms += ms_since(t1);
	if (rc < 0)
		return -1;
	s->ag_gen++;
	counters.agent_starts++;
	s->ag_state = AG_STARTING;
	s->ag_start_us = cx_mono_us();
	s->ag_stderr[0] = '\0';
	memcpy(s->ag_hash, cfg->all_hash, sizeof s->ag_hash);
	agent_send(s, json_pack("{s:s,s:I}", "type", "start", "gen", (json_int_t)s->ag_gen));
	lws_sul_schedule(D.ctx, 0, &s->sul_agent, sul_agent_cb,
			 (lws_usec_t)D.cfg.agent_start_timeout_ms * LWS_US_PER_MS);
	log_debug("session %s: starting agent %llu", s->id, (unsigned long long)s->ag_gen);
	return 0;
}

static void agent_hot(struct session *s)
{
	s->ag_state = AG_HOT;
	lws_sul_cancel(&s->sul_agent);
	double boot = ms_since(s->ag_start_us);
	if (s->ready_t0_us) {
		s->ready_ms = ms_since(s->ready_t0_us);
		s->ready_t0_us = 0;
	}
	log_info("session %s: agent %llu hot in %.1f ms", s->id, (unsigned long long)s->ag_gen, boot);
	if (s->turn && !s->turn->sent)
		stream_turn_advance(s);
	else if (!s->turn)
		session_touch(s);
}

/* Ask the agent to stop the running turn; past the deadline it is stopped. */
static void turn_interrupt(struct session *s, int grace_ms)
{
	struct turn *t = s->turn;
	if (!t || !t->sent || t->cancelled)
		return;
	t->cancelled = 1;
	char id[40];
	snprintf(id, sizeof id, "cx-int-%llu", (unsigned long long)++s->int_seq);
	agent_input(s, json_pack("{s:s,s:s,s:{s:s}}", "type", "control_request", "request_id", id, "request",
				 "subtype", "interrupt"));
	lws_sul_schedule(D.ctx, 0, &s->sul_agent, sul_agent_cb, (lws_usec_t)grace_ms * LWS_US_PER_MS);
}

#define INTERRUPT_GRACE_MS 5000

/* Agent deadlines: the boot handshake, or an interrupt that was not obeyed. */
static void sul_agent_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, sul_agent);
	struct turn *t = s->turn;
	if (s->ag_state == AG_STARTING) {
		char msg[1300];
		snprintf(msg, sizeof msg, "the agent did not become ready within %d ms%s%s",
			 D.cfg.agent_start_timeout_ms, s->ag_stderr[0] ? ": " : "", s->ag_stderr);
		log_error("session %s: %s", s->id, msg);
		agent_stop(s);
		s->ag_crashes++;
		if (t && !t->sent)
			turn_fail(s, "agent_start_timeout", msg);
	} else if (t && t->sent && t->cancelled) {
		/* It ignored the interrupt: replace it.  The next agent --continues. */
		agent_stop(s);
		if (t->stopped)
			turn_end(s);
		else
			turn_fail(s, "cancelled", "the agent did not stop within 5 s; it was restarted");
	}
}

/* The config is current (files synced, packages mounted): make the hot agent
 * match it.  Started in the background when the session wants an agent;
 * restarted when the config it runs is stale (the next turn waits only if the
 * restart has not finished). */
void stream_agent_reconcile(struct session *s, const cconfig *cfg)
{
	if (s->deleted || D.stop || s->turn || !s->sb || !s->agent_up || s->job_running ||
	    s->state != SS_READY)
		return;
	if (s->ag_state != AG_NONE) {
		if (strcmp(s->ag_hash, cfg->all_hash)) {
			cx_err err = CX_ERR_INIT;
			log_info("session %s: config changed; restarting the agent", s->id);
			if (agent_start(s, cfg, &err) < 0)
				log_error("session %s: agent restart: %s", s->id, err.msg);
		}
		return;
	}
	/* Crashing at start: wait for a message to ask again (no restart loop). */
	if (!s->want_agent || s->ag_crashes >= 3)
		return;
	cx_err err = CX_ERR_INIT;
	if (agent_start(s, cfg, &err) < 0)
		log_error("session %s: agent start: %s", s->id, err.msg);
}

void stream_agent_release(struct session *s)
{
	if (s->ag_state == AG_NONE || s->turn)
		return;
	log_info("session %s: releasing the idle agent", s->id);
	counters.agent_releases++;
	s->want_agent = 0;
	agent_stop(s);
}

/* ---- the turn state machine ---- */

enum { PG_WAKING = 1, PG_INSTALL = 2, PG_CONFIG = 4, PG_AGENT = 8 };

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
		else if (t->wait_kind == 2)
			t->sync_ms += ms;
		else
			t->agent_start_ms += ms;
	}
	t->wait_kind = kind;
	t->wait_since_us = now;
}

static void turn_send(struct session *s)
{
	struct turn *t = s->turn;
	t->sent = 1;
	t->sent_us = cx_mono_us();
	counters.messages_sent++;
	t->agent_gen = s->ag_gen;
	agent_input(s, json_pack("{s:s,s:{s:s,s:[{s:s,s:s}]}}", "type", "user", "message", "role", "user",
				 "content", "type", "text", "text", t->text));
}

/* The turn's state machine: sandbox -> config (cache) -> packages -> sync ->
 * hot agent -> send.  Called when the turn starts and again whenever what it
 * waits for arrives (sandbox ready, install done, sync done, agent hot).  On
 * the warm path every check is an in-memory compare and the message goes out
 * at once on the open ws-agent connection. */
void stream_turn_advance(struct session *s)
{
	struct turn *t = s->turn;
	if (!t || t->sent || s->deleted)
		return;
	if (s->state == SS_PAUSED && !s->job_running) {
		cx_err err = CX_ERR_INIT;
		t->wake = "paused";
		progress(s, PG_WAKING, json_pack("{s:s,s:s,s:s}", "type", "cortex.progress", "phase", "waking",
						 "from", "paused"));
		if (session_thaw(s, &err) < 0) {
			turn_fail(s, "sandbox_failed", err.msg);
			return;
		}
	}
	if (!s->sb || !s->agent_up || s->job_running) {
		if (!t->wake)
			t->wake = s->state == SS_CREATING ? "creating" : "sleeping";
		progress(s, PG_WAKING, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase",
						 s->state == SS_CREATING ? "creating" : "waking"));
		session_ensure_ready(s);
		return;
	}
	if (!t->sandbox_ok) {
		t->sandbox_ok = 1;
		t->wait_sandbox_ms = t->wake ? ms_since(t->t0_us) : 0;
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
	if (s->ag_state != AG_HOT || strcmp(s->ag_hash, cfg->all_hash)) {
		t->agent_cold = 1;
		wait_mark(t, 3);
		progress(s, PG_AGENT, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase",
						"starting_agent"));
		if (s->ag_state == AG_NONE || strcmp(s->ag_hash, cfg->all_hash)) {
			s->want_agent = 1;
			if (agent_start(s, cfg, &err) < 0)
				turn_fail(s, "context_failed", err.msg);
		}
		return; /* agent_hot() advances */
	}
	wait_mark(t, 0);
	if (s->last_turn_hash[0] && strcmp(s->last_turn_hash, cfg->all_hash))
		t->config_changed = 1;
	memcpy(s->last_turn_hash, cfg->all_hash, sizeof s->last_turn_hash);
	turn_send(s);
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
	t->model_ttfb_ms = -1;
	t->cache_how = -1;
	t->id = ++s->turns;
	guard_scan_init(&t->gs_text);
	guard_scan_init(&t->gs_line);
	sentencer_init(&t->sz);
	/* A new turn: the replay holds only its frames, and every client follows it. */
	fq_clear(&s->replay);
	s->replay_dropped = 0;
	for (struct client *c = s->clients; c; c = c->next)
		c->held = 0;
	s->turn = t;
	s->want_agent = 1;
	session_touch(s);
	transcript_append(s, "user", text, t->id);
	stream_turn_advance(s);
}

void stream_session_ready(struct session *s)
{
	s->state = SS_READY;
	if (s->turn && !s->turn->sent)
		stream_turn_advance(s);
	else
		session_config_kick(s);
}

void stream_session_failed(struct session *s, const char *code, const char *msg)
{
	if (s->turn)
		turn_fail(s, code, msg);
}

/* ---- agent lines ---- */

static const char *jget_str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

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

/* The current agent exited by itself (crash, or it quit). */
static void agent_exited(struct session *s, json_t *o)
{
	struct turn *t = s->turn;
	int was_starting = s->ag_state == AG_STARTING;
	s->ag_state = AG_NONE;
	s->ag_crashes++;
	counters.agent_crashes++;
	lws_sul_cancel(&s->sul_agent);
	char msg[1400];
	json_int_t code = json_integer_value(json_object_get(o, "code"));
	json_int_t sig = json_integer_value(json_object_get(o, "signal"));
	const char *tail = jget_str(o, "stderr_tail");
	if (!tail || !*tail)
		tail = s->ag_stderr;
	snprintf(msg, sizeof msg, "the agent exited (code %lld, signal %lld)%s%s%s", (long long)code,
		 (long long)sig, was_starting ? " before it was ready" : "", *tail ? ": " : "", tail);
	log_warn("session %s: %s", s->id, msg);
	if (t && t->sent && !t->result_seen) {
		if (t->stopped)
			turn_end(s);
		else
			turn_fail(s, sig ? "agent_killed" : "agent_crashed", msg);
	} else if (t && !t->sent && was_starting) {
		turn_fail(s, "agent_failed", msg);
	} else if (!t) {
		session_config_kick(s); /* restart in the background (bounded by ag_crashes) */
	}
}

static void handle_wsa(struct session *s, json_t *o, const char *type)
{
	struct turn *t = s->turn;
	json_t *jg = json_object_get(o, "gen");
	uint64_t gen = json_is_integer(jg) ? (uint64_t)json_integer_value(jg) : 0;
	int current = jg && gen == s->ag_gen;
	if (!strcmp(type, "wsa.stderr")) {
		const char *txt = jget_str(o, "text");
		if (txt && current)
			stderr_keep(s->ag_stderr, sizeof s->ag_stderr, txt);
		log_debug("session %s agent stderr: %s", s->id, txt ? txt : "");
	} else if (!strcmp(type, "wsa.started")) {
		if (!current || s->ag_state != AG_STARTING)
			return;
		if (!D.cfg.agent_handshake) {
			agent_hot(s);
			return;
		}
		/* Hot = it answered: Claude Code replies once it has booted. */
		char id[40];
		snprintf(id, sizeof id, "cx-init-%llu", (unsigned long long)gen);
		agent_input(s, json_pack("{s:s,s:s,s:{s:s}}", "type", "control_request", "request_id", id,
					 "request", "subtype", "initialize"));
	} else if (!strcmp(type, "wsa.exit")) {
		if (current && !json_is_true(json_object_get(o, "retired")) && s->ag_state != AG_NONE)
			agent_exited(s, o);
	} else if (!strcmp(type, "wsa.error")) {
		const char *code = jget_str(o, "code");
		const char *msg = jget_str(o, "message");
		char full[600];
		snprintf(full, sizeof full, "ws-agent: %s", msg ? msg : code ? code : "error");
		log_warn("session %s: %s (%s)", s->id, full, code ? code : "?");
		if (!current)
			return;
		if (s->ag_state == AG_STARTING && code &&
		    (!strcmp(code, "context_timeout") || !strcmp(code, "bad_context") ||
		     !strcmp(code, "spawn_failed"))) {
			/* The agent never started: no wsa.exit follows. */
			s->ag_state = AG_NONE;
			s->ag_crashes++;
			lws_sul_cancel(&s->sul_agent);
			if (t && !t->sent)
				turn_fail(s, code, full);
		} else if (t && t->sent && code && (!strcmp(code, "stdin_full") || !strcmp(code, "no_agent"))) {
			turn_fail(s, "agent_lost", full);
		} else if (t && t->sent && code && (!strcmp(code, "line_too_long") || !strcmp(code, "bad_line"))) {
			send_error_to(s, NULL, code, full);
		}
	}
	/* "pong" and unknown wsa.* are ignored. */
}

/* control_response lines answer cortexd's own requests: never forwarded. */
static void handle_control(struct session *s, json_t *o)
{
	const char *id = jget_str(json_object_get(o, "response"), "request_id");
	char want[40];
	snprintf(want, sizeof want, "cx-init-%llu", (unsigned long long)s->ag_gen);
	if (id && !strcmp(id, want) && s->ag_state == AG_STARTING)
		agent_hot(s);
}

static int on_sentence(void *arg, const char *text, size_t n)
{
	struct session *s = arg;
	send_obj(s, json_pack("{s:s,s:s%}", "type", "cortex.sentence", "text", text, n));
	return 0;
}

/* The stream guard matched: stop the turn; nothing more of it goes out or is kept. */
static void turn_revoke(struct session *s)
{
	struct turn *t = s->turn;
	t->revoked = 1;
	t->stopped = 1;
	snprintf(t->outcome, sizeof t->outcome, "revoked");
	counters.revoked++;
	send_obj(s, json_pack("{s:s,s:s,s:s}", "type", "cortex.revoked", "reason", "secret_in_output",
			      "message", "the agent's output contained one of your secret values; the turn was stopped"));
	log_warn("session %s turn %llu: stream guard matched a secret; turn revoked", s->id,
		 (unsigned long long)t->id);
	if (t->cancelled) {
		/* Already interrupted: just wait for its end (the deadline is armed). */
		return;
	}
	turn_interrupt(s, INTERRUPT_GRACE_MS);
}

/* 1 when a secret shows in this line (text deltas are scanned as one stream). */
static int guard_check(struct session *s, struct turn *t, const char *line, size_t len, const char *delta)
{
	const cconfig *cfg = s->cc.cfg;
	if (!cfg || !cfg->guard || !guard_patterns(cfg->guard))
		return 0;
	uint64_t g0 = cx_mono_us();
	cx_err err = CX_ERR_INIT;
	int hit;
	if (delta) {
		hit = guard_feed(&t->gs_text, cfg->guard, delta, strlen(delta), NULL, &err);
	} else {
		guard_scan_reset(&t->gs_line);
		hit = guard_feed(&t->gs_line, cfg->guard, line, len, NULL, &err);
	}
	counters.guard_scans++;
	counters.guard_us += cx_mono_us() - g0;
	return hit != 0; /* -1 (no memory): fail closed */
}

static void handle_agent_line(struct session *s, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *o = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(o)) {
		json_decref(o);
		if (s->turn && s->turn->sent && !s->turn->stopped)
			send_error_to(s, NULL, "agent_output", "the agent printed a line that is not a JSON object");
		return;
	}
	const char *type = jget_str(o, "type");
	if (type && !strncmp(type, "wsa.", 4)) {
		handle_wsa(s, o, type);
	} else if (type && !strcmp(type, "control_response")) {
		handle_control(s, o);
	} else if (type && !strcmp(type, "pong")) {
		/* keepalive answer */
	} else {
		struct turn *t = s->turn;
		if (!t || !t->sent || t->agent_gen != s->ag_gen) {
			/* Between turns (or from a replaced agent): nobody asked. */
			log_debug("session %s: agent line outside a turn dropped", s->id);
			json_decref(o);
			return;
		}
		int is_result = type && !strcmp(type, "result");
		const char *delta = NULL;
		const char *et = NULL;
		if (type && !strcmp(type, "stream_event")) {
			json_t *ev = json_object_get(o, "event");
			et = jget_str(ev, "type");
			json_t *d = json_object_get(ev, "delta");
			if (et && !strcmp(et, "content_block_delta") && !strcmp(jget_str(d, "type") ? jget_str(d, "type") : "", "text_delta"))
				delta = jget_str(d, "text");
		}
		if (!t->stopped && guard_check(s, t, line, len, delta))
			turn_revoke(s);
		if (!t->stopped) {
			forward_line(s, line, len);
			if (delta && t->first_token_ms < 0)
				t->first_token_ms = ms_since(t->t0_us);
			if (s->prof && s->prof->sentences) {
				cx_err err = CX_ERR_INIT;
				if (delta)
					(void)sentencer_feed(&t->sz, delta, strlen(delta), on_sentence, s, &err);
				else if (is_result || (et && (!strcmp(et, "content_block_stop") || !strcmp(et, "message_stop"))))
					(void)sentencer_flush(&t->sz, on_sentence, s);
			}
		}
		if (is_result && !t->result_seen) {
			t->result_seen = 1;
			int is_error = json_is_true(json_object_get(o, "is_error"));
			if (!is_error) {
				s->had_success = 1;
				s->ag_crashes = 0;
			}
			if (t->stopped) {
				turn_end(s); /* cortex.revoked / the provider error was its last frame */
			} else {
				const char *res = jget_str(o, "result");
				if (res)
					transcript_append(s, "assistant", res, t->id);
				send_done(s, is_error);
				turn_end(s);
			}
		}
	}
	json_decref(o);
}

/* ---- the model gateway's view of a session ---- */

int stream_session_provider(struct session *s, char *url, size_t ucap, char *key, size_t kcap)
{
	const cconfig *c = s->cc.cfg;
	const char *u = c && c->prov_url[0] ? c->prov_url : D.cfg.provider_base_url;
	snprintf(url, ucap, "%s", u[0] ? u : "https://api.anthropic.com");
	if (c && c->prov_key) {
		if (c->prov_key_len >= kcap)
			return -1;
		memcpy(key, c->prov_key, c->prov_key_len);
		key[c->prov_key_len] = '\0';
	} else {
		snprintf(key, kcap, "%s", D.cfg.provider_api_key);
	}
	return key[0] ? 0 : -1;
}

/* A provider request of this session ended.  Usage adds up over the turn's
 * requests (tool use makes several).  A provider failure reaches the client as
 * cortex.error with the provider's status, and the turn is stopped: the agent
 * would otherwise retry 429/5xx with backoff for minutes. */
void stream_gateway_report(struct session *s, const struct gw_report *r)
{
	struct turn *t = s->turn;
	/* A request that began before this turn's message belongs to an earlier
	 * turn (e.g. one the agent abandoned on an interrupt): not this one's. */
	if (!t || !t->sent || t->stopped || r->recv_us < t->sent_us)
		return;
	t->model_requests++;
	t->usage.input += r->usage.input;
	t->usage.output += r->usage.output;
	t->usage.cache_read += r->usage.cache_read;
	t->usage.cache_creation += r->usage.cache_creation;
	if (t->model_ttfb_ms < 0 && r->status >= 200 && r->status < 300)
		t->model_ttfb_ms = r->ttfb_ms;
	if (r->model[0])
		snprintf(t->model, sizeof t->model, "%s", r->model);
	const char *code = NULL;
	if (r->agent_gone)
		return; /* the agent hung up (cancel, crash): its own exit tells the story */
	if (r->status == 0)
		code = r->curl_code == 28 /* CURLE_OPERATION_TIMEDOUT */ ? "provider_timeout" : "provider_unreachable";
	else if (r->status >= 400)
		code = "provider_error";
	else if (r->cut)
		code = "provider_stream_cut";
	if (!code)
		return;
	t->provider_status = r->status;
	char msg[800];
	if (r->status)
		snprintf(msg, sizeof msg, "the model provider answered %d%s%s", r->status, r->error[0] ? ": " : "",
			 r->error);
	else
		snprintf(msg, sizeof msg, "the model provider could not be reached%s%s", r->error[0] ? ": " : "",
			 r->error);
	if (r->cut && r->status < 400)
		snprintf(msg, sizeof msg, "the model provider's stream was cut after %u chunks%s%s", r->events,
			 r->error[0] ? ": " : "", r->error);
	json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg);
	if (r->status)
		json_object_set_new(o, "status", json_integer(r->status));
	send_obj(s, o);
	snprintf(t->outcome, sizeof t->outcome, "%s", code);
	t->stopped = 1;
	turn_interrupt(s, INTERRUPT_GRACE_MS);
}

/* ---- client messages ---- */

static void client_resume(struct session *s, struct client *c, json_t *o)
{
	json_t *a = json_object_get(o, "after_seq");
	if (!json_is_integer(a) || json_integer_value(a) < 0) {
		send_error_to(s, c, "bad_frame", "\"resume\" needs a non-negative integer \"after_seq\"");
		return;
	}
	uint64_t after = (uint64_t)json_integer_value(a);
	if (s->replay_dropped > after) {
		char msg[200];
		snprintf(msg, sizeof msg, "frames up to seq %llu are no longer kept (replay cap); replaying from there",
			 (unsigned long long)s->replay_dropped);
		send_error_to(s, c, "resume_gap", msg);
	}
	/* Exactly once: never a frame this client was already given. */
	uint64_t from = after > c->last_seq ? after : c->last_seq;
	if (c->held)
		from = after;
	c->held = 0;
	for (struct frame *f = s->replay.head; f; f = f->next)
		if (f->seq > from)
			client_send(c, (const char *)f->buf + LWS_PRE, f->len, f->seq);
	update_flow(s);
}

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
		else if (strlen(text) != json_string_length(tv))
			send_error_to(s, c, "bad_frame", "\"text\" must not contain NUL characters");
		else if (s->turn && s->turn->stopped && !s->next_text)
			s->next_text = strdup(text); /* starts once the revoked turn has stopped */
		else if (s->turn)
			send_error_to(s, c, "busy", "a turn is running on this session; cancel it or wait for cortex.done");
		else
			turn_start(s, text);
	} else if (!strcmp(type, "cancel")) {
		if (s->turn && s->turn->sent)
			turn_interrupt(s, INTERRUPT_GRACE_MS);
		else if (s->turn)
			turn_fail(s, "cancelled", "the turn was cancelled before the agent started");
		else
			send_error_to(s, c, "no_turn", "no turn is running");
	} else if (!strcmp(type, "resume")) {
		client_resume(s, c, o);
	} else {
		char msg[200];
		snprintf(msg, sizeof msg, "unknown frame type \"%.64s\"", type);
		send_error_to(s, c, "bad_frame", msg);
	}
	json_decref(o);
}

/* A turn with no client left keeps running for turn_grace_s, then stops. */
static void sul_grace_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, sul_grace);
	if (s->clients || !s->turn)
		return;
	log_info("session %s: no client for %d s; cancelling turn %llu", s->id, D.cfg.turn_grace_s,
		 (unsigned long long)s->turn->id);
	if (s->turn->sent)
		turn_interrupt(s, INTERRUPT_GRACE_MS);
	else
		turn_fail(s, "cancelled", "no client was connected");
}

void stream_session_timers_cancel(struct session *s)
{
	lws_sul_cancel(&s->sul_idle);
	lws_sul_cancel(&s->sul_agent);
	lws_sul_cancel(&s->sul_grace);
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
		/* Joining mid-turn: that turn's frames come after "resume", exactly once. */
		c->held = s->turn != NULL;
		lws_sul_cancel(&s->sul_grace);
		/* Speculative warm-up: a client that connects will send a message soon.
		 * Thaw, wake, and start the agent now, so the message finds it hot. */
		s->want_agent = 1;
		session_touch(s);
		if (s->job_running)
			s->wake_pending = 1; /* a pause or sleep is under way: undo it after */
		if (s->state == SS_PAUSED && !s->job_running) {
			cx_err err = CX_ERR_INIT;
			if (session_thaw(s, &err) < 0)
				log_error("session %s: thaw: %s", s->id, err.msg);
		}
		if (!s->sb || !s->agent_up)
			session_ensure_ready(s);
		else
			session_config_kick(s);
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
			if (!s->clients && s->turn && D.cfg.turn_grace_s > 0)
				lws_sul_schedule(D.ctx, 0, &s->sul_grace, sul_grace_cb,
						 (lws_usec_t)D.cfg.turn_grace_s * LWS_US_PER_SEC);
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

/* No keepalive pings: it is a Unix socket (ws-agent's death closes it), and a
 * paused sandbox cannot answer a ping — it must not be hung up on. */
static const lws_retry_bo_t agent_retry = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};

void stream_agent_connect(struct session *s)
{
	if (s->agent_wsi || !s->sb || D.stop)
		return;
	/* A Unix socket path must fit sun_path (108 bytes); a deep data dir would
	 * not.  Connect through /proc/self/fd/<dirfd>/agent.sock instead: short,
	 * and the same inode. */
	char run[4200], addr[64];
	snprintf(run, sizeof run, "%s/run", s->dir);
	if (s->agent_dirfd >= 0)
		close(s->agent_dirfd);
	s->agent_dirfd = open(run, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->agent_dirfd < 0) {
		s->state = SS_ERROR;
		snprintf(s->error, sizeof s->error, "cannot open %s: %s", run, strerror(errno));
		stream_session_failed(s, "agent_unreachable", s->error);
		return;
	}
	snprintf(addr, sizeof addr, "+/proc/self/fd/%d/agent.sock", s->agent_dirfd);
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
		snprintf(s->error, sizeof s->error, "cannot connect to ws-agent at %s/agent.sock", run);
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
	s->ag_state = AG_NONE; /* ws-agent stops its agents when the connection goes */
	lws_sul_cancel(&s->sul_agent);
	if (s->agent_dirfd >= 0) {
		close(s->agent_dirfd);
		s->agent_dirfd = -1;
	}
	fq_clear(&s->agent_out);
	free(s->agent_rx);
	s->agent_rx = NULL;
	s->agent_rx_len = 0;
	if (!s->deleted && s->turn)
		turn_fail(s, "agent_lost", why);
	/* Lost while ready is an error; lost because a stop job is taking the
	 * sandbox down is the plan (that job sets the state when it is done). */
	if (!s->deleted && s->state == SS_READY && !s->job_running) {
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

/* The sandbox is going away (sleep, delete): end the turn, drop the ws-agent
 * connection.  Clients stay: a message on their socket wakes the session. */
void stream_agent_detach(struct session *s)
{
	free(s->next_text);
	s->next_text = NULL;
	if (s->turn) {
		send_error_to(s, NULL, "session_stopped", "the session was stopped");
		turn_end(s);
	}
	if (s->agent_wsi) {
		struct lws *w = s->agent_wsi;
		agent_gone(s, w, "session stopped");
		lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
	s->ag_state = AG_NONE;
	lws_sul_cancel(&s->sul_agent);
}

void stream_session_detach(struct session *s)
{
	stream_agent_detach(s);
	for (struct client *c = s->clients; c; c = c->next) {
		c->sess = NULL;
		c->closing = 1;
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
	s->clients = NULL;
	fq_clear(&s->replay);
}
