/* turn.c — see turn.h. */
#include "turn.h"
#include "turnlog.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent_line.h"
#include "fanout.h"
#include "handover.h"
#include "jw.h"
#include "log.h"
#include "records.h"
#include "work.h"

#define INTERRUPT_GRACE_MS 5000

static struct turn_counters counters;
void turn_get_counters(struct turn_counters *out) { *out = counters; }

static double ms_since(uint64_t us) { return (double)(cx_mono_us() - us) / 1000.0; }

/* ---- per surface figures ---- */

static struct surf_ring {
	double ft[TURN_FT_RING];
	size_t n, next;
	struct surface_stats st;
} surf[SURF_N];

static int surface_index(const struct session *s)
{
	int i = s->prof ? surface_of_name(s->prof->name) : SURF_CHAT;
	return i < 0 ? SURF_CHAT : i;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void turn_surface_stats(int surface, struct surface_stats *out)
{
	struct surf_ring *r = &surf[surface];
	*out = r->st;
	out->p50 = out->p95 = 0;
	if (!r->n)
		return;
	double tmp[TURN_FT_RING];
	memcpy(tmp, r->ft, r->n * sizeof *tmp);
	qsort(tmp, r->n, sizeof *tmp, cmp_double);
	out->p50 = tmp[(r->n * 50 + 99) / 100 - 1];
	out->p95 = tmp[(r->n * 95 + 99) / 100 - 1];
}

static void surface_record(const struct session *s, double first_token, double total, enum turn_path path)
{
	struct surf_ring *r = &surf[surface_index(s)];
	r->ft[r->next] = first_token;
	r->next = (r->next + 1) % TURN_FT_RING;
	if (r->n < TURN_FT_RING)
		r->n++;
	r->st.turns++;
	r->st.by_path[path]++;
	if (s->prof && s->prof->first_token_budget_ms && first_token > s->prof->first_token_budget_ms)
		r->st.over_first_token++;
	if (s->prof && s->prof->response_budget_ms && total > s->prof->response_budget_ms)
		r->st.over_response++;
}

/* ---- begin / end ---- */

/* cold: the sandbox had to be created, woken or thawed, or the agent started
 * for this message; config_changed: the agent runs a changed config. */
static enum turn_path path_of(const struct turn *t)
{
	return t->config_changed ? PATH_CONFIG_CHANGED : (t->wake || t->agent_cold) ? PATH_COLD : PATH_WARM;
}

/* The daemon's count of turns waiting for their first token (work.h: the
 * background lane's writes wait for it to be 0). */
static void awaiting_first(struct turn *t, int on)
{
	if (t->awaiting_first == on)
		return;
	t->awaiting_first = on;
	work_first_tokens_add(on ? 1 : -1);
}

static void turn_free(struct turn *t)
{
	awaiting_first(t, 0);
	free(t->text);
	guard_scan_free(&t->gs_text);
	guard_scan_free(&t->gs_line);
	sentencer_free(&t->sz);
	lws_sul_cancel(&t->sul_int);
	free(t);
}

static void record(struct session *s, const struct turn *t)
{
	double total = ms_since(t->t0_us);
	struct turn_record r = {
		.session = s->id, .user = s->user, .surface = s->prof ? s->prof->name : s->surface, .turn = t->id,
		.path = turn_path_name(path_of(t)), .outcome = t->outcome[0] ? t->outcome : "ended",
		.agent_cold = t->agent_cold, .wake = t->wake, .wait_sandbox_ms = t->wait_sandbox_ms,
		.config_ms = t->config_ms, .install_ms = t->install_ms, .sync_ms = t->sync_ms,
		.agent_start_ms = t->agent_start_ms, .context_ms = t->context_ms,
		.first_token_ms = t->first_token_ms < 0 ? total : t->first_token_ms, .total_ms = total,
		.model_ttfb_ms = t->model_ttfb_ms, .model = t->model, .usage = t->usage,
		.model_requests = t->model_requests, .provider_status = t->provider_status,
	};
	char key[300];
	char *v = records_build(&s->d->cfg, &r, key, sizeof key);
	if (v)
		store_put_later_str(s->d, s->id, key, v);
	else
		log_error("session %s: turn record: out of memory", s->id);
}

/* ---- the turn state kept in the store ----
 *
 * turnstate/<session>: {"turn":N}, the number of the session's last turn,
 * and while a turn runs "running":{"ts","surface"}.  A cortexd killed in the
 * middle of a turn leaves "running" behind: the next one records that turn
 * (turn_restore) and numbers the next turns from N + 1. */

static void state_key(const struct session *s, char *key, size_t cap) { snprintf(key, cap, "turnstate/%s", s->id); }

/* Two puts a turn ("running" at its start, idle at its end), so the value
 * is written as a string (the bytes json_dumps made: a test compares them)
 * rather than built as an object and dumped on the service thread. */
static void state_put(struct session *s, const struct turn *t, int running)
{
	if (s->deleted)
		return; /* its row is being deleted with the session */
	char key[80];
	state_key(s, key, sizeof key);
	const char *surface = s->prof ? s->prof->name : s->surface;
	size_t ls = running ? cx_json_str_len(surface) : 0;
	if (!ls) /* (a surface name not UTF-8: jansson left "running" out) */
		running = 0;
	size_t cap = 96 + ls;
	char *v = malloc(cap);
	if (v && !running)
		snprintf(v, cap, "{\"turn\":%lld}", (long long)t->id);
	else if (v) {
		int n = snprintf(v, cap, "{\"turn\":%lld,\"running\":{\"ts\":%lld,\"surface\":", (long long)t->id,
				 (long long)cx_wall_ms());
		memcpy(cx_json_str_put(v + n, surface), "}}", 3);
	}
	store_put_later_str(s->d, s->id, key, v);
}

void turn_restore(struct session *s)
{
	char key[80], *val = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	state_key(s, key, sizeof key);
	int rc = store_get(s->d->st, key, &val, &len, &err);
	if (rc != 0) {
		if (rc != CX_NOTFOUND)
			log_warn("session %s: turn state: %s", s->id, err.msg);
		return;
	}
	json_t *o = json_loadb(val, len, 0, NULL);
	free(val);
	json_int_t n = json_integer_value(json_object_get(o, "turn"));
	json_t *run = json_object_get(o, "running");
	if (n > 0)
		s->turns = (uint64_t)n;
	if (n > 0 && json_is_object(run) && !s->turn) { /* (an adopted turn goes on) */
		const char *sname = json_string_value(json_object_get(run, "surface"));
		struct turn_record r = {
			.session = s->id, .user = s->user, .surface = sname ? sname : s->surface, .turn = (uint64_t)n,
			.path = "unknown", .outcome = "cortexd_restarted",
			.ts = json_integer_value(json_object_get(run, "ts")), .model_ttfb_ms = -1, .model = "",
		};
		char rkey[300], idle[40];
		char *rv = records_build(&s->d->cfg, &r, rkey, sizeof rkey);
		snprintf(idle, sizeof idle, "{\"turn\":%lld}", (long long)n);
		store_op ops[2] = {{.kind = STORE_PUT, .key = rkey, .val = rv, .len = rv ? strlen(rv) : 0},
				   {.kind = STORE_PUT, .key = key, .val = idle, .len = strlen(idle)}};
		if (rv && store_txn(s->d->st, ops, 2, &err) == 0) {
			s->lost_turn = (uint64_t)n;
			log_warn("session %s: turn %lld was running when the previous cortexd stopped: recorded as "
				 "cortexd_restarted", s->id, (long long)n);
		} else {
			log_error("session %s: recording lost turn %lld: %s", s->id, (long long)n,
				  rv ? err.msg : "out of memory");
		}
		free(rv);
	}
	json_decref(o);
}

/* The turn is over: the agent's result came, or it can never come.
 * in_link_read: its result line came in a read of the agent link, which
 * writes the turn log once at its end (the "E" goes with it). */
static void turn_end_as(struct session *s, int in_link_read)
{
	struct turn *t = s->turn;
	if (!t)
		return;
	if (in_link_read)
		turnlog_end_batched(s);
	else
		turnlog_end(s);
	s->turn = NULL;
	record(s, t);
	state_put(s, t, 0);
	turn_free(t);
	handover_keep_note(s); /* a crash now finds no turn running */
	lws_sul_cancel(&s->lc.sul_grace);
	/* A message that came after cortex.revoked, while the agent was stopping. */
	char *next = s->next_text;
	s->next_text = NULL;
	if (next && !s->deleted)
		(void)turn_begin(s, next);
	free(next);
}

static void turn_end(struct session *s) { turn_end_as(s, 0); }

void turn_fail(struct session *s, const char *code, const char *msg)
{
	if (!s->turn)
		return;
	if (!s->turn->outcome[0])
		snprintf(s->turn->outcome, sizeof s->turn->outcome, "%s", code);
	fanout_error(s, NULL, code, msg);
	turn_end(s);
}

int turn_begin(struct session *s, const char *text)
{
	struct turn *t = calloc(1, sizeof *t);
	if (!t || !(t->text = strdup(text))) {
		free(t);
		fanout_error(s, NULL, "internal", "out of memory");
		return -1;
	}
	t->t0_us = cx_mono_us();
	t->first_token_ms = -1;
	t->model_ttfb_ms = -1;
	t->cache_how = -1;
	t->id = ++s->turns;
	t->sess = s;
	guard_scan_init(&t->gs_text);
	guard_scan_init(&t->gs_line);
	sentencer_init(&t->sz);
	fanout_turn_begin(s);
	turnlog_begin(s, t->id);
	s->turn = t;
	s->lost_turn = 0;
	/* The state first: puts are committed in order, so once the message is
	 * in the transcript a crash finds the turn running (a lost turn never
	 * goes unrecorded while its message is kept). */
	state_put(s, t, 1);
	transcript_append(s, "user", text, t->id);
	return 0;
}

/* ---- waiting for the session ---- */

enum { PG_WAKING = 1, PG_INSTALL = 2, PG_CONFIG = 4, PG_AGENT = 8, PG_CLONE = 16 };

/* Each cortex.progress phase once per turn. */
static void progress(struct session *s, unsigned bit, json_t *o)
{
	if (s->turn->progress_sent & bit) {
		json_decref(o);
		return;
	}
	s->turn->progress_sent |= bit;
	fanout_obj(s, o);
}

/* Account the time spent waiting to the phase being waited for. */
static void wait_mark(struct turn *t, enum turn_wait w)
{
	if (t->wait == w)
		return;
	uint64_t now = cx_mono_us();
	double ms = (double)(now - t->wait_since_us) / 1000.0;
	switch (t->wait) {
	case TW_INSTALL: t->install_ms += ms; break;
	case TW_SYNC: t->sync_ms += ms; break;
	case TW_AGENT: t->agent_start_ms += ms; break;
	case TW_NONE: break;
	}
	t->wait = w;
	t->wait_since_us = now;
}

static void sandbox_found(struct turn *t)
{
	if (!t->sandbox_ok) {
		t->sandbox_ok = 1;
		t->wait_sandbox_ms = t->wake ? ms_since(t->t0_us) : 0;
	}
}

void turn_wait(struct session *s, enum lc_step step, const cconfig *cfg, const char *detail)
{
	struct turn *t = s->turn;
	if (!t || t->sent)
		return;
	switch (step) {
	case STEP_SANDBOX:
	case STEP_LINK:
		if (detail && !strcmp(detail, "paused")) {
			t->wake = "paused";
			progress(s, PG_WAKING, json_pack("{s:s,s:s,s:s}", "type", "cortex.progress", "phase", "waking",
							 "from", "paused"));
			break;
		}
		if (!t->wake)
			t->wake = detail && !strcmp(detail, "creating") ? "creating" : "sleeping";
		progress(s, PG_WAKING, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase",
						 detail && !strcmp(detail, "creating") ? "creating" : "waking"));
		break;
	case STEP_CONFIG:
		sandbox_found(t);
		break;
	case STEP_PACKAGES:
		sandbox_found(t);
		wait_mark(t, TW_INSTALL);
		progress(s, PG_INSTALL, json_pack("{s:s,s:s,s:I,s:I}", "type", "cortex.progress", "phase",
						  "installing_packages", "missing", (json_int_t)cfg->pkgs_missing,
						  "total", (json_int_t)cfg->n_pkgs));
		break;
	case STEP_SYNC:
		sandbox_found(t);
		wait_mark(t, TW_SYNC);
		progress(s, PG_CONFIG, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase", "writing_config"));
		break;
	case STEP_REPO:
		sandbox_found(t);
		progress(s, PG_CLONE, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase", "cloning"));
		break;
	case STEP_AGENT:
		sandbox_found(t);
		if (s->link.applying || agent_live_applicable(s, cfg)) {
			/* The hot agent takes the change by control request. */
			wait_mark(t, TW_AGENT);
			progress(s, PG_AGENT, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase", "applying_config"));
			break;
		}
		t->agent_cold = 1;
		wait_mark(t, TW_AGENT);
		progress(s, PG_AGENT, json_pack("{s:s,s:s}", "type", "cortex.progress", "phase", "starting_agent"));
		break;
	case STEP_N:
		break;
	}
}

void turn_config_lookup(struct session *s, enum ccache_how how, double ms)
{
	struct turn *t = s->turn;
	if (!t || t->sent)
		return;
	t->config_ms += ms;
	if (t->cache_how < 0)
		t->cache_how = (int)how;
}

void turn_send(struct session *s, const cconfig *cfg)
{
	struct turn *t = s->turn;
	if (!t || t->sent)
		return;
	if (t->resent && t->agent_gen == s->link.gen)
		return; /* not to the agent that went (its exit is on its way): the next one */
	sandbox_found(t);
	wait_mark(t, TW_NONE);
	if (s->lc.last_turn_hash[0] && strcmp(s->lc.last_turn_hash, cfg->all_hash))
		t->config_changed = 1;
	memcpy(s->lc.last_turn_hash, cfg->all_hash, sizeof s->lc.last_turn_hash);
	t->sent = 1;
	t->sent_us = cx_mono_us();
	if (t->first_token_ms < 0)
		awaiting_first(t, 1);
	counters.messages_sent++;
	t->agent_gen = s->link.gen;
	agent_input_str(s, agent_user_line(t->text));
	handover_keep_note(s); /* a crash now finds this turn going on in the agent */
}

/* ---- stopping a turn ---- */

/* The agent ignored an interrupt: replace it (the next one --continues). */
static void sul_int_cb(lws_sorted_usec_list_t *sul)
{
	struct turn *t = lws_container_of(sul, struct turn, sul_int);
	struct session *s = t->sess;
	if (s->turn != t)
		return;
	agent_stop(s);
	if (t->stopped)
		turn_end(s);
	else
		turn_fail(s, "cancelled", "the agent did not stop within 5 s; it was restarted");
	s->d->reconcile(s);
}

/* Ask the agent to stop the running turn; past the deadline it is replaced. */
static void turn_interrupt(struct session *s)
{
	struct turn *t = s->turn;
	if (!t || !t->sent || t->cancelled)
		return;
	t->cancelled = 1;
	agent_interrupt(s);
	session_timer(s, &t->sul_int, sul_int_cb, (uint64_t)INTERRUPT_GRACE_MS * LWS_US_PER_MS);
}

void turn_cancel(struct session *s)
{
	if (s->turn && s->turn->sent)
		turn_interrupt(s);
	else if (s->turn)
		turn_fail(s, "cancelled", "the turn was cancelled before the agent started");
}

json_t *turn_describe(const struct session *s)
{
	const struct turn *t = s->turn;
	if (!t)
		return NULL;
	return json_pack("{s:I,s:s,s:f,s:f,s:i,s:I,s:i,s:i,s:s}", "id", (json_int_t)t->id, "text", t->text,
			      "elapsed_ms", ms_since(t->t0_us), "first_token_ms", t->first_token_ms, "sent", t->sent,
			      "agent_gen", (json_int_t)t->agent_gen, "agent_cold", t->agent_cold, "cancelled",
			      t->cancelled, "model", t->model);
}

json_t *turn_handover(struct session *s)
{
	struct turn *t = s->turn;
	json_t *o = turn_describe(s);
	if (!t)
		return NULL;
	s->turn = NULL;
	turn_free(t);
	return o;
}

void turn_adopt(struct session *s, json_t *o)
{
	struct turn *t = calloc(1, sizeof *t);
	const char *text = json_string_value(json_object_get(o, "text"));
	if (!t || !(t->text = strdup(text ? text : ""))) {
		free(t);
		return;
	}
	double el = json_number_value(json_object_get(o, "elapsed_ms"));
	uint64_t now = cx_mono_us(), back = (uint64_t)(el > 0 ? el * 1000.0 : 0);
	t->t0_us = back < now ? now - back : now;
	t->sent_us = t->t0_us;
	t->id = (uint64_t)json_integer_value(json_object_get(o, "id"));
	t->first_token_ms = json_number_value(json_object_get(o, "first_token_ms"));
	t->model_ttfb_ms = -1;
	t->cache_how = -1;
	t->sent = (int)json_integer_value(json_object_get(o, "sent"));
	t->agent_gen = (uint64_t)json_integer_value(json_object_get(o, "agent_gen"));
	t->agent_cold = (int)json_integer_value(json_object_get(o, "agent_cold"));
	t->cancelled = (int)json_integer_value(json_object_get(o, "cancelled"));
	t->sandbox_ok = 1;
	const char *m = json_string_value(json_object_get(o, "model"));
	snprintf(t->model, sizeof t->model, "%s", m ? m : "");
	t->sess = s;
	guard_scan_init(&t->gs_text);
	guard_scan_init(&t->gs_line);
	sentencer_init(&t->sz);
	s->turn = t;
	if (t->id > s->turns)
		s->turns = t->id;
}

void turn_stop_session(struct session *s)
{
	free(s->next_text);
	s->next_text = NULL;
	if (s->turn) {
		if (!s->turn->outcome[0])
			snprintf(s->turn->outcome, sizeof s->turn->outcome, "session_stopped");
		fanout_error(s, NULL, "session_stopped", "the session was stopped");
		turn_end(s);
	}
}

/* The agent ended (or ws-agent found none to give the message to) without
 * a word of this turn: it went before it took the message, e.g. one that
 * exits after its answer while the next message is already on its way.  The
 * message goes to a fresh agent, once; 0 when that is not for this turn. */
static int resend(struct session *s, struct turn *t)
{
	if (t->output_seen || t->cancelled || t->resent)
		return 0;
	t->sent = 0;
	t->resent = 1;
	log_info("session %s turn %llu: the agent went before it took the message: it goes to the next agent",
		 s->id, (unsigned long long)t->id);
	return 1;
}

void turn_agent_down(struct session *s, int why, const char *code, const char *msg)
{
	struct turn *t = s->turn;
	if (!t)
		return;
	if (t->stopped && t->sent) {
		turn_end(s); /* cortex.revoked / the provider error stays the turn's last frame */
		return;
	}
	switch ((enum agent_down)why) {
	case DOWN_LINK_LOST:
		turn_fail(s, code, msg);
		break;
	case DOWN_EXITED:
	case DOWN_KILLED:
		if (t->sent && !t->result_seen) {
			if (t->stopped) {
				turn_end(s);
			} else if (why != DOWN_EXITED || !resend(s, t)) {
				turn_fail(s, code, msg);
			}
		}
		break; /* a waiting turn gets a fresh agent */
	case DOWN_NEVER_STARTED:
	case DOWN_BOOT_TIMEOUT:
		if (!t->sent)
			turn_fail(s, code, msg); /* no start loop: the next message tries again */
		break;
	case DOWN_PIPE:
		if (t->sent && !resend(s, t))
			turn_fail(s, code, msg);
		break;
	}
}

/* ---- the agent's output ---- */

static const char *cache_how_name(int h)
{
	static const char *const n[] = {"hit", "miss", "dirty", "expired"};
	return h >= 0 && h <= 3 ? n[h] : "none";
}

/* cortex.done, once a turn: written with jw (the bytes json_pack and
 * fanout_obj made; tests/unit/test_turn.c compares them). */
static void send_done(struct session *s, int is_error)
{
	struct turn *t = s->turn;
	double total = ms_since(t->t0_us);
	double ft = t->first_token_ms < 0 ? total : t->first_token_ms;
	enum turn_path path = path_of(t);
	snprintf(t->outcome, sizeof t->outcome, "%s", is_error ? "agent_error" : "ok");
	struct jw w;
	if (jw_init(&w, 1200 + 6 * (strlen(s->surface) + (t->wake ? strlen(t->wake) : 0))) == 0) {
		jw_str(&w, "type", "cortex.done");
		jw_open(&w, "timings");
		jw_real(&w, "first_token_ms", ft);
		jw_real(&w, "total_ms", total);
		jw_real(&w, "wait_sandbox_ms", t->wait_sandbox_ms);
		jw_real(&w, "config_ms", t->config_ms);
		jw_real(&w, "install_ms", t->install_ms);
		jw_real(&w, "sync_ms", t->sync_ms);
		jw_real(&w, "agent_start_ms", t->agent_start_ms);
		jw_real(&w, "context_ms", t->context_ms);
		if (t->model_requests && isfinite(t->model_ttfb_ms))
			jw_real(&w, "model_ttfb_ms", t->model_ttfb_ms);
		jw_close(&w);
		jw_str(&w, "path", turn_path_name(path));
		jw_str(&w, "agent", t->agent_cold ? "cold" : "hot");
		jw_str(&w, "config_cache", cache_how_name(t->cache_how));
		jw_str(&w, "surface", s->surface);
		jw_bool(&w, "cancelled", t->cancelled);
		jw_bool(&w, "is_error", is_error);
		if (t->wake && cx_json_str_len(t->wake))
			jw_str(&w, "wake", t->wake);
		if (s->prof)
			jw_int(&w, "first_token_budget_ms", s->prof->first_token_budget_ms);
		if (t->model_requests) {
			jw_open(&w, "usage");
			jw_int(&w, "input_tokens", (long long)t->usage.input);
			jw_int(&w, "output_tokens", (long long)t->usage.output);
			jw_int(&w, "cache_read_input_tokens", (long long)t->usage.cache_read);
			jw_int(&w, "cache_creation_input_tokens", (long long)t->usage.cache_creation);
			jw_int(&w, "model_requests", (int)t->model_requests);
			jw_close(&w);
		}
	}
	fanout_jw(s, &w);
	t->done_sent = 1;
	surface_record(s, ft, total, path);
	/* debug: one write(2) per turn; the same figures are in the turn
	 * record, cortex.done and /metrics. */
	log_debug("session %s turn %llu: first token %.1f ms, total %.1f ms (%s, agent %s)", s->id,
		 (unsigned long long)t->id, t->first_token_ms, total, turn_path_name(path),
		 t->agent_cold ? "cold" : "hot");
}

static int on_sentence(void *arg, const char *text, size_t n)
{
	struct session *s = arg;
	fanout_obj(s, json_pack("{s:s,s:s%}", "type", "cortex.sentence", "text", text, n));
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
	fanout_obj(s, json_pack("{s:s,s:s,s:s}", "type", "cortex.revoked", "reason", "secret_in_output", "message",
				"the agent's output contained one of your secret values; the turn was stopped"));
	log_warn("session %s turn %llu: stream guard matched a secret; turn revoked", s->id, (unsigned long long)t->id);
	turn_interrupt(s); /* already interrupted: its deadline is armed */
}

/* 1 when a secret shows in this line (text deltas are scanned as one stream). */
static int guard_check(struct session *s, struct turn *t, const struct agent_line *l, const char *raw, size_t len)
{
	const cconfig *cfg = s->cc.cfg;
	if (!cfg || !cfg->guard || !guard_patterns(cfg->guard))
		return 0;
	uint64_t g0 = cx_mono_us();
	cx_err err = CX_ERR_INIT;
	int hit;
	if (l->is_delta) {
		size_t n;
		const char *txt = agent_line_delta(l, &n);
		hit = txt ? guard_feed(&t->gs_text, cfg->guard, txt, n, NULL, &err) : -1;
	} else {
		guard_scan_reset(&t->gs_line);
		hit = guard_feed(&t->gs_line, cfg->guard, raw, len, NULL, &err);
	}
	counters.guard_scans++;
	counters.guard_us += cx_mono_us() - g0;
	return hit != 0; /* -1 (no memory): fail closed */
}

static void on_result(struct session *s, struct turn *t, const struct agent_line *l)
{
	t->result_seen = 1;
	if (!l->is_error) {
		s->link.had_success = 1;
		s->link.crashes = 0;
	}
	if (!t->stopped) {
		if (l->result)
			transcript_append(s, "assistant", l->result, t->id);
		send_done(s, l->is_error);
	}
	turn_end_as(s, 1); /* when stopped, cortex.revoked / the provider error was its last frame */
}

void turn_output(struct session *s, const struct agent_line *l, const char *raw, size_t len)
{
	struct turn *t = s->turn;
	if (!t || !t->sent || t->agent_gen != s->link.gen) {
		log_debug("session %s: agent line outside a turn dropped", s->id);
		return; /* between turns (or from a replaced agent): nobody asked */
	}
	t->output_seen = 1;
	if (l->kind == AL_BAD) {
		if (!t->stopped)
			fanout_error(s, NULL, "agent_output", "the agent printed a line that is not a JSON object");
		return;
	}
	if (!t->stopped && guard_check(s, t, l, raw, len))
		turn_revoke(s);
	if (!t->stopped) {
		if (json_object_get(l->o, "seq")) {
			/* The agent's own "seq" would shadow the session's in clients that
			 * keep the last duplicate: this rare line is re-encoded without it. */
			json_t *c = json_copy(l->o);
			json_object_del(c, "seq");
			fanout_obj(s, c);
		} else {
			fanout_line(s, raw, len);
		}
		if (l->is_delta && t->first_token_ms < 0) {
			t->first_token_ms = ms_since(t->t0_us);
			awaiting_first(t, 0);
		}
		if (s->prof && s->prof->sentences) {
			cx_err err = CX_ERR_INIT;
			if (l->is_delta) {
				size_t n;
				const char *txt = agent_line_delta(l, &n); /* NULL: no memory to decode it */
				if (txt)
					(void)sentencer_feed(&t->sz, txt, n, on_sentence, s, &err);
			} else if (l->is_result || l->block_end)
				(void)sentencer_flush(&t->sz, on_sentence, s);
		}
	}
	if (l->is_result && !t->result_seen)
		on_result(s, t, l);
}

/* ---- the model gateway's reports ---- */

static void usage_add(struct turn *t, const struct gw_report *r)
{
	t->model_requests++;
	t->usage.input += r->usage.input;
	t->usage.output += r->usage.output;
	t->usage.cache_read += r->usage.cache_read;
	t->usage.cache_creation += r->usage.cache_creation;
	if (t->model_ttfb_ms < 0 && r->status >= 200 && r->status < 300)
		t->model_ttfb_ms = r->ttfb_ms;
	if (r->model[0])
		snprintf(t->model, sizeof t->model, "%s", r->model);
}

/* Usage adds up over the turn's requests (tool use makes several).  A provider
 * failure reaches the client as cortex.error with the provider's status, and
 * the turn is stopped: the agent would otherwise retry 429/5xx with backoff
 * for minutes. */
void turn_gateway_report(struct session *s, const struct gw_report *r)
{
	struct turn *t = s->turn;
	/* A request that began before this turn's message belongs to an earlier
	 * turn (e.g. one the agent abandoned on an interrupt): not this one's. */
	if (!t || !t->sent || t->stopped || r->recv_us < t->sent_us)
		return;
	usage_add(t, r);
	if (r->agent_gone)
		return; /* the agent hung up (cancel, crash): its own exit tells the story */
	const char *code = NULL;
	if (r->status == 0)
		code = r->curl_code == 28 /* CURLE_OPERATION_TIMEDOUT */ ? "provider_timeout" : "provider_unreachable";
	else if (r->status >= 400)
		code = "provider_error";
	else if (r->cut)
		code = "provider_stream_cut";
	if (!code)
		return;
	t->provider_status = r->status;
	const char *sep = r->error[0] ? ": " : "";
	char msg[800];
	if (r->cut && r->status < 400)
		snprintf(msg, sizeof msg, "the model provider's stream was cut after %u chunks%s%s", r->events, sep,
			 r->error);
	else if (r->status)
		snprintf(msg, sizeof msg, "the model provider answered %d%s%s", r->status, sep, r->error);
	else
		snprintf(msg, sizeof msg, "the model provider could not be reached%s%s", sep, r->error);
	json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg);
	if (r->status)
		json_object_set_new(o, "status", json_integer(r->status));
	fanout_obj(s, o);
	snprintf(t->outcome, sizeof t->outcome, "%s", code);
	t->stopped = 1;
	turn_interrupt(s);
}
