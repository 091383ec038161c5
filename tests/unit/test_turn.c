/* Unit tests: turns (turn.h) driven without a sandbox or an lws context.
 *
 * The session's agent link is a fake (s->link.io) that records every JSON
 * line the turn writes to the agent; clients are struct client with no
 * socket, so their frames only queue in c->out, where the tests read them.
 * The daemon's hooks are the test's: reconcile sends the waiting turn (all
 * steps ready), agent_output is turn_output.  Transcripts and turn records
 * go through the worker pool into a real SQLite store in a temp dir.
 *
 * Covered: a normal turn, resume exactly once (held clients, replay cap),
 * the stream guard's revoke, cancel, the agent going down mid-turn, busy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "agent.h"
#include "caps.h"
#include "agent_line.h"
#include "fanout.h"
#include "lifecycle.h"
#include "log.h"
#include "turn.h"
#include "turnlog.h"
#include "turnlog_ring.h"
#include "unit_util.h"
#include "work.h"

static struct cortexd D;
static char tmpdir[4096];
static cconfig CC; /* the config every step finds ready */

/* ---- the fake agent link ---- */

#define MAX_SENT 32
static char *sent[MAX_SENT];
static size_t n_sent;

static void fake_send(struct session *s, const char *txt, size_t len)
{
	(void)s;
	if (n_sent == MAX_SENT)
		fail_msg("more than %d lines sent to the agent", MAX_SENT);
	sent[n_sent] = strndup(txt, len);
	assert_non_null(sent[n_sent]);
	n_sent++;
}
static const struct agent_io fake_io = {fake_send};

static void sent_clear(void)
{
	for (size_t i = 0; i < n_sent; i++)
		free(sent[i]);
	n_sent = 0;
}

/* Line i to the agent: an "input" frame of gen 1; its stdin line parsed. */
static json_t *sent_line(size_t i)
{
	if (i >= n_sent)
		fail_msg("line %zu to the agent: expected one, %zu sent", i, n_sent);
	json_t *o = json_loads(sent[i], 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "input");
	assert_int_eq_msg(json_integer_value(json_object_get(o, "gen")), 1, "input gen");
	const char *data = json_string_value(json_object_get(o, "data"));
	assert_non_null(data);
	json_t *in = json_loads(data, 0, NULL);
	assert_non_null(in);
	json_decref(o);
	return in;
}

static void expect_user_line(size_t i, const char *text)
{
	json_t *in = sent_line(i);
	assert_string_equal(json_string_value(json_object_get(in, "type")), "user");
	json_t *m = json_object_get(in, "message");
	assert_string_equal(json_string_value(json_object_get(m, "role")), "user");
	json_t *c0 = json_array_get(json_object_get(m, "content"), 0);
	assert_string_equal(json_string_value(json_object_get(c0, "type")), "text");
	assert_string_equal(json_string_value(json_object_get(c0, "text")), text);
	json_decref(in);
}

static void expect_interrupt(size_t i)
{
	json_t *in = sent_line(i);
	assert_string_equal(json_string_value(json_object_get(in, "type")), "control_request");
	assert_non_null(json_string_value(json_object_get(in, "request_id")));
	json_t *rq = json_object_get(in, "request");
	assert_string_equal(json_string_value(json_object_get(rq, "subtype")), "interrupt");
	json_decref(in);
}

/* ---- the daemon's hooks ---- */

/* Every lifecycle step is ready: a waiting turn is sent. */
static void hook_reconcile(struct session *s)
{
	if (s->turn && !s->turn->sent)
		turn_send(s, &CC);
}

static void hook_agent_down(struct session *s, int why, const char *code, const char *msg)
{
	turn_agent_down(s, why, code, msg);
}

/* ---- sessions and clients ---- */

static struct session *sess_new(const char *id, const char *surface)
{
	struct session *s = session_new(&D, id, "alice", surface);
	assert_non_null(s);
	(void)mkdir(s->dir, 0711); /* as the prepare job makes it: the turn log lives there */
	s->link.io = &fake_io;
	s->link.state = AG_HOT;
	s->link.up = 1;
	s->link.gen = 1;
	memcpy(s->link.hash, CC.all_hash, sizeof s->link.hash);
	return s;
}

static void sess_free(struct session *s, struct client **cs, size_t n)
{
	turn_stop_session(s);
	for (size_t i = 0; i < n; i++)
		fanout_detach(cs[i]);
	s->cc.cfg = NULL; /* borrowed from the test */
	session_unlink(s);
	session_unref(s);
	sent_clear();
}

/* The next frame queued to c, parsed (NULL when none); its seq is checked
 * against the frame's and against the client's previous one. */
static json_t *next_frame(struct client *c, uint64_t *prev_seq)
{
	struct frame *f = fq_pop(&c->out);
	if (!f)
		return NULL;
	json_error_t je;
	json_t *o = json_loadb(frame_data(f), f->len, JSON_ALLOW_NUL, &je);
	if (!json_is_object(o))
		fail_msg("frame is not a JSON object (%s): %.*s", je.text, (int)f->len,
			 frame_data(f));
	json_int_t seq = json_integer_value(json_object_get(o, "seq"));
	assert_int_eq_msg(seq, f->seq, "seq in the frame vs the frame's seq");
	if (prev_seq) {
		if ((uint64_t)seq <= *prev_seq)
			fail_msg("seq: expected > %llu, got %lld", (unsigned long long)*prev_seq,
				 (long long)seq);
		*prev_seq = (uint64_t)seq;
	}
	frame_unref(f);
	return o;
}

static const char *type_of(json_t *o)
{
	return json_string_value(json_object_get(o, "type"));
}

/* The next frame of c must have this type; the caller decrefs. */
static json_t *expect_frame(struct client *c, uint64_t *prev_seq, const char *type)
{
	json_t *o = next_frame(c, prev_seq);
	if (!o)
		fail_msg("expected a %s frame, got none", type);
	if (!type_of(o) || strcmp(type_of(o), type))
		fail_msg("expected a %s frame, got %s", type,
			 type_of(o) ? type_of(o) : "(no type)");
	return o;
}

static void expect_error(struct client *c, uint64_t *prev_seq, const char *code)
{
	json_t *o = expect_frame(c, prev_seq, "cortex.error");
	const char *got = json_string_value(json_object_get(o, "code"));
	if (!got || strcmp(got, code))
		fail_msg("cortex.error code: expected %s, got %s", code, got ? got : "(none)");
	const char *msg = json_string_value(json_object_get(o, "message"));
	if (!msg || !*msg)
		fail_msg("cortex.error %s: expected a message, got none", code);
	json_decref(o);
}

static void expect_no_frame(struct client *c, const char *when)
{
	if (fq_peek(&c->out))
		fail_msg("%s: expected no frame, got %.*s", when, (int)fq_peek(&c->out)->len,
			 frame_data(fq_peek(&c->out)));
}

/* The next frame is the agent's line raw, with only the seq spliced in. */
static void expect_line(struct client *c, uint64_t *prev_seq, const char *raw)
{
	struct frame *f = fq_peek(&c->out);
	if (!f)
		fail_msg("expected the agent line %s, got no frame", raw);
	char head[40];
	int hn = snprintf(head, sizeof head, "{\"seq\":%llu,", (unsigned long long)f->seq);
	size_t want = (size_t)hn + strlen(raw) - 1;
	if (f->len != want || memcmp(frame_data(f), head, (size_t)hn) ||
	    memcmp(frame_data(f) + hn, raw + 1, strlen(raw) - 1))
		fail_msg("expected %s%s, got %.*s", head, raw + 1, (int)f->len, frame_data(f));
	json_decref(next_frame(c, prev_seq));
}

/* ---- agent lines ---- */

static void feed(struct session *s, const char *line)
{
	struct agent_line l;
	agent_line_parse(&l, line, strlen(line));
	D.agent_output(s, &l, line, strlen(line));
	agent_line_free(&l);
}

#define DELTA(text)                                                                                \
	"{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"      \
	"\"delta\":{\"type\":\"text_delta\",\"text\":\"" text "\"}}}"
#define BLOCK_STOP                                                                                 \
	"{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_stop\",\"index\":0}}"
#define RESULT(text)                                                                               \
	"{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"" text "\"}"
#define SYSTEM_INIT "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"x\"}"

/* A message that finds everything ready: one input line to the agent. */
static void start_turn(struct session *s, const char *text)
{
	size_t before = n_sent;
	assert_int_equal(turn_begin(s, text), 0);
	assert_non_null(s->turn);
	assert_int_equal(s->turn->sent, 0);
	D.reconcile(s);
	assert_int_equal(s->turn->sent, 1);
	assert_int_eq_msg(n_sent, before + 1, "lines sent to the agent for a message");
	expect_user_line(before, text);
}

/* ---- the store (written by the worker pool) ---- */

/* The row under prefix whose key contains part, parsed; waits for the
 * worker that writes it. */
static json_t *wait_row(const char *prefix, const char *part)
{
	for (int i = 0; i < 500; i++) {
		store_kv *kv = NULL;
		size_t n = 0;
		cx_err err = CX_ERR_INIT;
		assert_int_equal(store_list(D.st, prefix, 0, &kv, &n, &err), 0);
		json_t *o = NULL;
		for (size_t k = 0; k < n && !o; k++)
			if (strstr(kv[k].key, part))
				o = json_loadb(kv[k].val, kv[k].len, 0, NULL);
		store_kv_free(kv, n);
		if (o)
			return o;
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
		work_drain_done(); /* as the service loop: a finished group commit starts the next */
	}
	fail_msg("no row %s*%s* within 5 s", prefix, part);
	return NULL;
}

/* The turn record of session sid's turn n: its outcome. */
static void expect_record(const char *sid, unsigned n, const char *outcome)
{
	char part[80];
	snprintf(part, sizeof part, "-%s-%06u", sid, n);
	json_t *o = wait_row("turns/alice/", part);
	const char *got = json_string_value(json_object_get(o, "outcome"));
	if (!got || strcmp(got, outcome))
		fail_msg("turn record %s: expected outcome %s, got %s", part, outcome,
			 got ? got : "(none)");
	json_decref(o);
}

/* ---- group setup ---- */

static int group_setup(void **state)
{
	(void)state;
	if (sodium_init() < 0 || unit_tmpdir("turn", tmpdir, sizeof tmpdir) < 0)
		return -1;
	log_set_level(LOG_ERROR);
	memset(&D, 0, sizeof D);
	config_defaults(&D.cfg);
	snprintf(D.cfg.data_dir, sizeof D.cfg.data_dir, "%s", tmpdir);
	snprintf(D.cfg.sessions_dir, sizeof D.cfg.sessions_dir, "%s/sessions", tmpdir);
	(void)mkdir(D.cfg.sessions_dir, 0700);
	char db[4200];
	snprintf(db, sizeof db, "%s/t.db", tmpdir);
	cx_err err = CX_ERR_INIT;
	if (store_open(&D.st, "sqlite", db, &err) < 0)
		return -1;
	if (work_start(NULL, 1, &err) < 0) /* no context: wait_row drains finished jobs */
		return -1;
	D.reconcile = hook_reconcile;
	D.agent_output = turn_output;
	D.agent_down = hook_agent_down;
	CC.refs = 1;
	snprintf(CC.all_hash, sizeof CC.all_hash, "%064d", 1);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	work_stop(); /* runs every queued store write first */
	store_close(D.st);
	D.st = NULL;
	return 0;
}

/* ---- group commit of off-path puts (session.c) ---- */

/* Drain finished jobs until every queued put is written. */
static void puts_settle(void)
{
	for (int i = 0; i < 500 && (D.puts.inflight || D.puts.head); i++) {
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
		work_drain_done();
	}
	assert_false(D.puts.inflight);
	assert_null(D.puts.head);
}

static void test_group_commit(void **state)
{
	(void)state;
	puts_settle();
	uint64_t b0 = D.puts.batches, w0 = D.puts.written, f0 = D.store_write_failures;
	char key[64];
	/* 150 puts queued at once: the first goes alone, the rest gather behind
	 * it into one batch (at most PUT_BATCH_MAX), one transaction. */
	for (int i = 0; i < 150; i++) {
		snprintf(key, sizeof key, "gc/k%03d", i);
		store_put_later(&D, "", key, json_pack("{s:i}", "i", i));
	}
	puts_settle();
	assert_int_equal(D.puts.written - w0, 150);
	assert_in_range(D.puts.batches - b0, 2, 3);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, "gc/", 0, &kv, &n, &err), 0);
	assert_int_equal(n, 150);
	store_kv_free(kv, n);
	assert_int_equal(D.store_write_failures, f0);
	/* One put the store refuses (a value over STORE_VAL_MAX) in a batch
	 * with good ones: it fails alone, counted once; the others are written. */
	store_put_later(&D, "", "gc/first", json_pack("{s:i}", "i", 1));
	char *big = malloc(STORE_VAL_MAX + 1);
	assert_non_null(big);
	memset(big, 'x', STORE_VAL_MAX);
	big[STORE_VAL_MAX] = 0;
	store_put_later(&D, "", "gc/big", json_pack("{s:s}", "v", big));
	free(big);
	store_put_later(&D, "", "gc/after", json_pack("{s:i}", "i", 2));
	puts_settle();
	assert_int_equal(D.store_write_failures, f0 + 1);
	char *v = NULL;
	size_t len = 0;
	assert_int_equal(store_get(D.st, "gc/after", &v, &len, &err), 0);
	free(v);
	assert_int_not_equal(store_get(D.st, "gc/big", &v, &len, &err), 0);
	D.store_failing = 0;
	/* The same key twice in one batch: only the last value is written (one
	 * put folded, counted), the others as usual.  The first put goes alone
	 * and stays in flight until its job is drained, so the next four gather
	 * into one batch. */
	uint64_t c0 = D.puts.coalesced;
	int64_t r0 = 0, r1 = 0;
	assert_int_equal(store_revision(D.st, &r0, &err), 0);
	store_put_later(&D, "", "gc/alone", json_pack("{s:i}", "i", 0));
	assert_true(D.puts.inflight);
	store_put_later(&D, "", "gc/dup", json_pack("{s:s}", "state", "running"));
	store_put_later(&D, "", "gc/between", json_pack("{s:i}", "i", 1));
	store_put_later(&D, "", "gc/dup", json_pack("{s:s}", "state", "idle"));
	store_put_later(&D, "", "gc/last", json_pack("{s:i}", "i", 2));
	puts_settle();
	assert_int_equal(D.puts.coalesced - c0, 1);
	assert_int_equal(D.store_write_failures, f0 + 1);
	assert_int_equal(store_get(D.st, "gc/dup", &v, &len, &err), 0);
	assert_string_equal(v, "{\"state\":\"idle\"}");
	free(v);
	assert_int_equal(store_get(D.st, "gc/between", &v, &len, &err), 0);
	free(v);
	assert_int_equal(store_get(D.st, "gc/last", &v, &len, &err), 0);
	free(v);
	/* Two commits: the lone put, then the four (three rows) in one txn. */
	assert_int_equal(store_revision(D.st, &r1, &err), 0);
	assert_int_equal(r1 - r0, 2);
}

/* A failed test leaves its lines behind. */
static int test_setup(void **state)
{
	(void)state;
	sent_clear();
	return 0;
}

/* ---- a normal turn ---- */

static void test_normal_turn(void **state)
{
	(void)state;
	struct session *s = sess_new("s_normal", "chat");
	struct client a = {0}, b = {0};
	fanout_attach(s, &a);
	fanout_attach(s, &b);
	assert_int_equal(a.held, 0);

	start_turn(s, "hello there");
	struct turn *t = s->turn;
	assert_int_eq_msg(t->id, 1, "first turn id");
	assert_int_eq_msg(t->agent_gen, 1, "turn's agent gen");
	expect_no_frame(&a, "after the message is sent");

	const char *lines[] = {SYSTEM_INIT, DELTA("Hi"), DELTA(" the\\u00e9re"), BLOCK_STOP};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
		feed(s, lines[i]);
	assert_true(t->first_token_ms >= 0);
	feed(s, RESULT("Hi th\\u00e9re"));
	assert_null(s->turn);
	assert_int_equal(s->link.had_success, 1);

	/* Both clients: every line verbatim with increasing seq, then done. */
	struct client *cs[] = {&a, &b};
	for (size_t k = 0; k < 2; k++) {
		uint64_t seq = 0;
		for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
			expect_line(cs[k], &seq, lines[i]);
		expect_line(cs[k], &seq, RESULT("Hi th\\u00e9re"));
		json_t *d = expect_frame(cs[k], &seq, "cortex.done");
		assert_int_eq_msg(json_integer_value(json_object_get(d, "turn")), 1, "done: turn");
		assert_string_equal(json_string_value(json_object_get(d, "path")), "warm");
		assert_string_equal(json_string_value(json_object_get(d, "agent")), "hot");
		assert_string_equal(json_string_value(json_object_get(d, "surface")), "chat");
		assert_true(json_is_false(json_object_get(d, "cancelled")));
		assert_true(json_is_false(json_object_get(d, "is_error")));
		assert_null(json_object_get(d, "wake"));
		json_t *tm = json_object_get(d, "timings");
		const char *keys[] = {"first_token_ms", "total_ms",   "wait_sandbox_ms",
				      "config_ms",	"install_ms", "sync_ms",
				      "agent_start_ms", "context_ms"};
		for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
			json_t *v = json_object_get(tm, keys[i]);
			if (!json_is_real(v) || json_real_value(v) < 0)
				fail_msg("timings.%s: expected a number >= 0", keys[i]);
		}
		assert_true(json_real_value(json_object_get(tm, "first_token_ms")) <=
			    json_real_value(json_object_get(tm, "total_ms")));
		json_decref(d);
		assert_int_eq_msg(seq, s->fan.seq, "client saw every seq up to the session's");
		expect_no_frame(cs[k], "after cortex.done");
	}

	/* Between turns the agent's lines go nowhere. */
	feed(s, DELTA("late"));
	expect_no_frame(&a, "a line between turns");
	assert_int_eq_msg(n_sent, 1, "lines sent to the agent");

	/* What is stored: the transcript (user, assistant) and the record. */
	json_t *u = wait_row("transcripts/s_normal/", "-000001-0");
	assert_string_equal(json_string_value(json_object_get(u, "text")), "hello there");
	json_decref(u);
	json_t *as = wait_row("transcripts/s_normal/", "-000001-1");
	assert_string_equal(json_string_value(json_object_get(as, "role")), "assistant");
	assert_string_equal(json_string_value(json_object_get(as, "text")), "Hi th\xc3\xa9re");
	json_decref(as);
	expect_record("s_normal", 1, "ok");

	struct client *all[] = {&a, &b};
	sess_free(s, all, 2);
}

/* The raw value of the first row under prefix whose key holds part (after
 * waiting for it, as wait_row); the caller frees it. */
static char *wait_raw(const char *prefix, const char *part)
{
	json_decref(wait_row(prefix, part));
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, prefix, 0, &kv, &n, &err), 0);
	char *v = NULL;
	for (size_t k = 0; k < n && !v; k++)
		if (strstr(kv[k].key, part))
			v = strndup(kv[k].val, kv[k].len);
	store_kv_free(kv, n);
	assert_non_null(v);
	return v;
}

/* json_dumps(o, JSON_COMPACT), o consumed. */
static char *dump(json_t *o)
{
	assert_non_null(o);
	char *v = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	assert_non_null(v);
	return v;
}

static void expect_bytes(const char *what, const char *got, char *want)
{
	if (strcmp(got, want))
		fail_msg("%s: expected %s, got %s", what, want, got);
	free(want);
}

/* Transcript and turn-state values are written as strings (session.c,
 * turn.c): byte for byte what json_pack + json_dumps wrote before, with text
 * that needs every kind of escape. */
static void test_store_values_as_jansson(void **state)
{
	(void)state;
	struct session *s = sess_new("s_bytes", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	const char *text = "say \"hi\" \\ / \n\t\x01\x1f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
	start_turn(s, text);
	/* The user message to the agent (agent_user_line), and its refusal of
	 * text that is not UTF-8, as jansson's. */
	json_t *f = json_loads(sent[n_sent - 1], 0, NULL);
	assert_non_null(f);
	expect_bytes("user line to the agent", json_string_value(json_object_get(f, "data")),
		     dump(json_pack("{s:s,s:{s:s,s:[{s:s,s:s}]}}", "type", "user", "message", "role", "user",
				    "content", "type", "text", "text", text)));
	json_decref(f);
	assert_null(agent_user_line("caf\xe9"));
	assert_null(json_pack("{s:s}", "text", "caf\xe9"));
	char *st = wait_raw("turnstate/", "turnstate/s_bytes");
	json_t *o = json_loads(st, 0, NULL);
	json_int_t ts = json_integer_value(json_object_get(json_object_get(o, "running"), "ts"));
	json_decref(o);
	assert_true(ts > 0);
	expect_bytes("turn state, running", st,
		     dump(json_pack("{s:I,s:{s:I,s:s}}", "turn", (json_int_t)1, "running", "ts", ts, "surface", "chat")));
	free(st);
	char *u = wait_raw("transcripts/s_bytes/", "-000001-0");
	o = json_loads(u, 0, NULL);
	ts = json_integer_value(json_object_get(o, "ts"));
	json_decref(o);
	expect_bytes("user transcript", u,
		     dump(json_pack("{s:s,s:s,s:I,s:I}", "role", "user", "text", text, "ts", ts, "turn", (json_int_t)1)));
	free(u);
	feed(s, RESULT("a\\\"b\\u0002"));
	assert_null(s->turn);
	char *as = wait_raw("transcripts/s_bytes/", "-000001-1");
	o = json_loads(as, 0, NULL);
	ts = json_integer_value(json_object_get(o, "ts"));
	json_decref(o);
	expect_bytes("assistant transcript", as,
		     dump(json_pack("{s:s,s:s,s:I,s:I}", "role", "assistant", "text", "a\"b\x02", "ts", ts, "turn",
				    (json_int_t)1)));
	free(as);
	puts_settle();
	st = wait_raw("turnstate/", "turnstate/s_bytes");
	expect_bytes("turn state, idle", st, dump(json_pack("{s:I}", "turn", (json_int_t)1)));
	free(st);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* The raw text of the next cortex.done frame queued for c (the frames
 * before it are dropped). */
static char *raw_done(struct client *c)
{
	for (struct frame *f; (f = fq_pop(&c->out));) {
		char *t = strndup(frame_data(f), f->len);
		frame_unref(f);
		assert_non_null(t);
		if (strstr(t, "\"type\":\"cortex.done\""))
			return t;
		free(t);
	}
	fail_msg("no cortex.done frame queued");
	return NULL;
}

static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* cortex.done and the turn record are written with jw (turn.c, records.c):
 * byte for byte what json_pack + json_dumps wrote before.  The expected text
 * is packed here from the values parsed out of what was written, in the
 * order the jansson code packed them; a turn without and one with model
 * requests (usage, model name, model_ttfb_ms). */
static void test_done_and_record_as_jansson(void **state)
{
	(void)state;
	struct session *s = sess_new("s_jw", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	for (int turn = 1; turn <= 2; turn++) {
		start_turn(s, "hello");
		uint64_t tid = s->turn->id;
		if (turn == 2) {
			struct gw_report r = {.status = 200, .recv_us = cx_mono_us(), .ttfb_ms = 12.25,
					      .usage = {.input = 11, .output = 22, .cache_read = 33, .cache_creation = 44}};
			snprintf(r.model, sizeof r.model, "claude-\"q\"-\xc3\xa9");
			turn_gateway_report(s, &r);
		}
		feed(s, RESULT("done"));
		char *got = raw_done(&a);
		json_t *d = json_loads(got, 0, NULL);
		assert_non_null(d);
		json_t *tm = json_object_get(d, "timings");
		json_t *want = json_pack("{s:s,s:{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f},s:s,s:s,s:s,s:s,s:b,s:b}", "type",
					 "cortex.done", "timings", "first_token_ms", num(tm, "first_token_ms"),
					 "total_ms", num(tm, "total_ms"), "wait_sandbox_ms", num(tm, "wait_sandbox_ms"),
					 "config_ms", num(tm, "config_ms"), "install_ms", num(tm, "install_ms"),
					 "sync_ms", num(tm, "sync_ms"), "agent_start_ms", num(tm, "agent_start_ms"),
					 "context_ms", num(tm, "context_ms"), "path",
					 json_string_value(json_object_get(d, "path")), "agent", "hot", "config_cache",
					 json_string_value(json_object_get(d, "config_cache")), "surface", "chat",
					 "cancelled", 0, "is_error", 0);
		assert_non_null(want);
		if (json_object_get(d, "first_token_budget_ms"))
			json_object_set_new(want, "first_token_budget_ms",
					    json_integer(json_integer_value(json_object_get(d, "first_token_budget_ms"))));
		if (turn == 2) {
			json_object_set_new(json_object_get(want, "timings"), "model_ttfb_ms", json_real(12.25));
			json_object_set_new(want, "usage",
					    json_pack("{s:I,s:I,s:I,s:I,s:i}", "input_tokens", (json_int_t)11,
						      "output_tokens", (json_int_t)22, "cache_read_input_tokens",
						      (json_int_t)33, "cache_creation_input_tokens", (json_int_t)44,
						      "model_requests", 1));
		} else {
			assert_null(json_object_get(d, "usage"));
		}
		json_object_set_new(want, "seq", json_integer(json_integer_value(json_object_get(d, "seq"))));
		json_object_set_new(want, "turn", json_integer((json_int_t)tid));
		expect_bytes("cortex.done", got, dump(want));
		json_decref(d);
		free(got);

		char part[80];
		snprintf(part, sizeof part, "-s_jw-%06llu", (unsigned long long)tid);
		char *rec = wait_raw("turns/alice/", part);
		json_t *o = json_loads(rec, 0, NULL);
		assert_non_null(o);
		json_t *ph = json_object_get(o, "phases");
		json_t *phases = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "wait_sandbox_ms", num(ph, "wait_sandbox_ms"),
					   "config_ms", num(ph, "config_ms"), "install_ms", num(ph, "install_ms"),
					   "sync_ms", num(ph, "sync_ms"), "agent_start_ms", num(ph, "agent_start_ms"),
					   "context_ms", num(ph, "context_ms"));
		json_t *wr = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:o,s:f,s:f,s:I,s:I,s:I,s:I,s:i,s:i}",
				       "session", "s_jw", "user", "alice", "surface", "chat", "turn", (json_int_t)tid,
				       "ts", json_integer_value(json_object_get(o, "ts")), "path",
				       json_string_value(json_object_get(o, "path")), "outcome", "ok", "agent", "hot",
				       "phases", phases, "first_token_ms", num(o, "first_token_ms"), "total_ms",
				       num(o, "total_ms"), "input_tokens", (json_int_t)(turn == 2 ? 11 : 0),
				       "output_tokens", (json_int_t)(turn == 2 ? 22 : 0), "cache_read_tokens",
				       (json_int_t)(turn == 2 ? 33 : 0), "cache_creation_tokens",
				       (json_int_t)(turn == 2 ? 44 : 0), "model_requests", turn == 2 ? 1 : 0,
				       "provider_status", 0);
		assert_non_null(wr);
		json_object_set_new(wr, "model", turn == 2 ? json_string("claude-\"q\"-\xc3\xa9") : json_null());
		json_object_set_new(wr, "model_ttfb_ms", turn == 2 ? json_real(12.25) : json_null());
		json_object_set_new(wr, "cost_usd",
				    json_is_null(json_object_get(o, "cost_usd")) ? json_null()
										  : json_real(num(o, "cost_usd")));
		expect_bytes("turn record", rec, dump(wr));
		json_decref(o);
		free(rec);
	}
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* A second turn: seq goes on, the id too; a changed config shows in path. */
static void test_turns_in_a_row(void **state)
{
	(void)state;
	struct session *s = sess_new("s_row", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;

	start_turn(s, "one");
	feed(s, RESULT("1"));
	expect_line(&a, &seq, RESULT("1"));
	json_decref(expect_frame(&a, &seq, "cortex.done"));

	start_turn(s, "two");
	assert_int_eq_msg(s->turn->id, 2, "second turn id");
	feed(s, DELTA("2"));
	feed(s, RESULT("2"));
	expect_line(&a, &seq, DELTA("2"));
	expect_line(&a, &seq, RESULT("2"));
	json_t *d = expect_frame(&a, &seq, "cortex.done");
	assert_int_eq_msg(json_integer_value(json_object_get(d, "turn")), 2, "done: turn");
	assert_string_equal(json_string_value(json_object_get(d, "path")), "warm");
	json_decref(d);

	/* The agent now runs another config. */
	snprintf(CC.all_hash, sizeof CC.all_hash, "%064d", 2);
	start_turn(s, "three");
	feed(s, RESULT("3"));
	expect_line(&a, &seq, RESULT("3"));
	d = expect_frame(&a, &seq, "cortex.done");
	assert_string_equal(json_string_value(json_object_get(d, "path")), "config_changed");
	json_decref(d);
	snprintf(CC.all_hash, sizeof CC.all_hash, "%064d", 1);

	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* A delta or a result holding \u0000: forwarded as it is, and the result
 * still ends the turn. */
static void test_nul_in_output(void **state)
{
	(void)state;
	struct session *s = sess_new("s_nul", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "binary please");
	feed(s, DELTA("a\\u0000b"));
	feed(s, RESULT("x\\u0000y"));
	assert_null(s->turn);
	expect_line(&a, &seq, DELTA("a\\u0000b"));
	expect_line(&a, &seq, RESULT("x\\u0000y"));
	json_decref(expect_frame(&a, &seq, "cortex.done"));
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* A line that is not JSON: the clients are told, the turn goes on. */
static void test_bad_line(void **state)
{
	(void)state;
	struct session *s = sess_new("s_badline", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "hi");
	feed(s, "not json at all");
	expect_error(&a, &seq, "agent_output");
	assert_non_null(s->turn);
	feed(s, RESULT("ok"));
	expect_line(&a, &seq, RESULT("ok"));
	json_decref(expect_frame(&a, &seq, "cortex.done"));
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* Lines before the message is written, or from a replaced agent, are not the turn's. */
static void test_output_not_of_the_turn(void **state)
{
	(void)state;
	struct session *s = sess_new("s_stale", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	assert_int_equal(turn_begin(s, "waiting"), 0);
	feed(s, DELTA("too early"));
	feed(s, RESULT("too early"));
	expect_no_frame(&a, "output before the message is sent");
	assert_non_null(s->turn);
	D.reconcile(s);
	expect_user_line(0, "waiting");

	s->link.gen = 2; /* another agent now */
	feed(s, DELTA("old agent"));
	feed(s, RESULT("old agent"));
	expect_no_frame(&a, "output of a replaced agent");
	assert_non_null(s->turn);
	s->link.gen = 1;
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* voice: text deltas also come as sentences. */
static void test_sentences(void **state)
{
	(void)state;
	struct session *s = sess_new("s_voice", "voice");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "talk");
	feed(s, DELTA("Hello there. How"));
	feed(s, DELTA(" are you"));
	feed(s, RESULT("Hello there. How are you"));
	expect_line(&a, &seq, DELTA("Hello there. How"));
	json_t *o = expect_frame(&a, &seq, "cortex.sentence");
	assert_string_equal(json_string_value(json_object_get(o, "text")), "Hello there.");
	json_decref(o);
	expect_line(&a, &seq, DELTA(" are you"));
	expect_line(&a, &seq, RESULT("Hello there. How are you"));
	o = expect_frame(&a, &seq, "cortex.sentence");
	assert_string_equal(json_string_value(json_object_get(o, "text")), "How are you");
	json_decref(o);
	o = expect_frame(&a, &seq, "cortex.done");
	assert_string_equal(json_string_value(json_object_get(o, "surface")), "voice");
	json_decref(o);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* ---- resume ---- */

/* Frames after seq from, each once, in order; the last seq seen. */
static uint64_t expect_replay(struct client *c, uint64_t from, uint64_t to)
{
	uint64_t seq = from;
	for (uint64_t want = from + 1; want <= to; want++) {
		json_t *o = next_frame(c, &seq);
		if (!o)
			fail_msg("replay: expected seq %llu, got no frame",
				 (unsigned long long)want);
		assert_int_eq_msg(seq, want, "replayed seq");
		json_decref(o);
	}
	return seq;
}

static void test_resume_exactly_once(void **state)
{
	(void)state;
	struct session *s = sess_new("s_resume", "chat");
	struct client a = {0}, b = {0}, c = {0}, late = {0};
	fanout_attach(s, &a);
	start_turn(s, "go");
	feed(s, DELTA("1"));
	feed(s, DELTA("2"));
	feed(s, DELTA("3"));

	/* b and c join mid-turn: held, nothing until they resume. */
	fanout_attach(s, &b);
	fanout_attach(s, &c);
	assert_int_equal(b.held, 1);
	assert_int_equal(c.held, 1);
	feed(s, DELTA("4"));
	expect_no_frame(&b, "a held client");
	expect_no_frame(&c, "a held client");
	expect_replay(&a, 0, 4);

	/* b resumes from the start: 1..4 once, then live. */
	fanout_resume(s, &b, 0);
	assert_int_equal(b.held, 0);
	uint64_t sb = expect_replay(&b, 0, 4);
	expect_no_frame(&b, "after the replay");
	/* c has seen up to 2 elsewhere: 3..4. */
	fanout_resume(s, &c, 2);
	uint64_t sc = expect_replay(&c, 2, 4);
	expect_no_frame(&c, "after the replay");

	feed(s, DELTA("5"));
	expect_replay(&a, 4, 5);
	sb = expect_replay(&b, sb, 5);
	sc = expect_replay(&c, sc, 5);

	/* Resuming again, or after a lower seq than given: no duplicate. */
	fanout_resume(s, &b, 0);
	expect_no_frame(&b, "a second resume");
	fanout_resume(s, &a, 2);
	expect_no_frame(&a, "a resume after a lower seq");
	fanout_resume(s, &c, 5);
	expect_no_frame(&c, "a resume after the last seq");
	/* Past the end: nothing (and live frames follow). */
	fanout_resume(s, &a, 1000);
	expect_no_frame(&a, "a resume past the end");

	feed(s, RESULT("done"));
	assert_null(s->turn);
	struct client *live[] = {&a, &b, &c};
	for (size_t k = 0; k < 3; k++) {
		uint64_t seq = 5;
		expect_line(live[k], &seq, RESULT("done"));
		json_decref(expect_frame(live[k], &seq, "cortex.done"));
		expect_no_frame(live[k], "after done");
	}

	/* A client that comes after the turn ended: not held; resume gives the
	 * whole last turn, once. */
	fanout_attach(s, &late);
	assert_int_equal(late.held, 0);
	fanout_resume(s, &late, 0);
	expect_replay(&late, 0, s->fan.seq);
	expect_no_frame(&late, "after the replay");
	fanout_resume(s, &late, 0);
	expect_no_frame(&late, "a second resume");

	/* An error to that client alone is not part of the stream: a client
	 * told no_turn still gets the whole last turn on resume. */
	struct client asked = {0};
	fanout_attach(s, &asked);
	uint64_t sk = 0;
	lifecycle_cancel(s, &asked);
	expect_error(&asked, &sk, "no_turn");
	fanout_resume(s, &asked, 0);
	expect_replay(&asked, 0, 7);
	expect_no_frame(&asked, "after the replay");

	/* The next turn: everyone follows it live. */
	start_turn(s, "again");
	feed(s, DELTA("x"));
	struct client *all[] = {&a, &b, &c, &late, &asked};
	for (size_t k = 0; k < 5; k++) {
		json_t *o = next_frame(all[k], NULL);
		assert_non_null(o);
		json_decref(o);
	}
	sess_free(s, all, 5);
}

/* The replay is capped: a client resuming from before what is kept is told
 * resume_gap, then gets everything still kept, once; a client that has every
 * frame is told nothing. */
/* The client's queue emptied, as its socket would (frames released). */
static void drain(struct client *c)
{
	struct frame *f;
	while ((f = fq_pop(&c->out)))
		frame_unref(f);
}

/* One copy of each frame however many clients queue it; a client over
 * ws.client_queue_max_bytes behind a faster one is cut off (its frames let
 * go at once), while the fastest client is never cut, only paced. */
static void test_slow_client_cut(void **state)
{
	(void)state;
	size_t cap_was = D.cfg.ws_client_queue_max_bytes;
	D.cfg.ws_client_queue_max_bytes = 1u << 20;
	struct session *s = sess_new("s_slow", "chat");
	struct client a = {0}, b = {0}, c = {0};
	fanout_attach(s, &a);
	fanout_attach(s, &b);
	fanout_attach(s, &c);
	start_turn(s, "flood");
	drain(&a);
	drain(&b);
	drain(&c);
	uint64_t cut0 = fanout_clients_cut();
	size_t live0 = frames_live_bytes();

	size_t big = 64u << 10;
	const char *pre = "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"
			  "\"delta\":{\"type\":\"text_delta\",\"text\":\"";
	const char *post = "\"}}}";
	char *line = malloc(strlen(pre) + big + strlen(post) + 1);
	assert_non_null(line);
	strcpy(line, pre);
	memset(line + strlen(pre), 'y', big);
	strcpy(line + strlen(pre) + big, post);
	size_t framelen = 0;
	for (int i = 0; i < 8; i++) { /* half the cap: everyone keeps up */
		feed(s, line);
		framelen = fq_peek(&a.out)->len;
		drain(&a);
	}
	assert_int_eq_msg(b.out.bytes, 8 * framelen, "b's queue");
	assert_int_eq_msg(frames_live_bytes() - live0, 8 * framelen,
			  "live frame bytes: one copy for the replay and b and c");
	assert_false(b.cut);
	for (int i = 0; i < 16; i++) {
		feed(s, line);
		drain(&a);
	}
	assert_true(b.cut && b.closing);
	assert_true(c.cut && c.closing);
	assert_int_eq_msg(fanout_clients_cut() - cut0, 2, "clients cut");
	assert_int_eq_msg(b.out.n, 0, "a cut client's queue is let go");
	assert_false(a.cut || a.closing);
	assert_true(s->fan.replay.bytes <= (size_t)CX_CAP_REPLAY);
	assert_int_eq_msg(frames_live_bytes() - live0, s->fan.replay.bytes, "only the replay holds frames");
	feed(s, line);
	expect_no_frame(&b, "a cut client gets nothing more");

	/* Now a stops reading too: the slowest of one is never cut, whatever
	 * it holds (the agent link is paused for it instead). */
	for (int i = 0; i < 24; i++)
		feed(s, line);
	assert_true(a.out.bytes > D.cfg.ws_client_queue_max_bytes);
	assert_false(a.cut || a.closing);
	free(line);
	struct client *cs[] = {&a, &b, &c};
	sess_free(s, cs, 3);
	D.cfg.ws_client_queue_max_bytes = cap_was;
}

/* The daemon's count of turns waiting for their first token (work.h: the
 * background lane's writes wait for it): one when the message went to the
 * agent, none once its first text delta is out -- and none when a turn ends
 * without one. */
static void test_first_token_count(void **state)
{
	(void)state;
	int n0 = work_first_tokens_pending();
	struct session *s = sess_new("s_ftc", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	assert_int_equal(work_first_tokens_pending(), n0 + 1);
	feed(s, SYSTEM_INIT);
	assert_int_equal(work_first_tokens_pending(), n0 + 1); /* not a text delta */
	feed(s, DELTA("hi"));
	assert_int_equal(work_first_tokens_pending(), n0);
	feed(s, DELTA(" there"));
	feed(s, RESULT("hi there"));
	assert_int_equal(work_first_tokens_pending(), n0);
	/* a turn that ends with no text at all */
	start_turn(s, "two");
	assert_int_equal(work_first_tokens_pending(), n0 + 1);
	feed(s, RESULT(""));
	assert_null(s->turn);
	assert_int_equal(work_first_tokens_pending(), n0);
	/* a turn the session's end takes with it */
	start_turn(s, "three");
	assert_int_equal(work_first_tokens_pending(), n0 + 1);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	assert_int_equal(work_first_tokens_pending(), n0);
}

static void test_resume_gap(void **state)
{
	(void)state;
	struct session *s = sess_new("s_gap", "chat");
	struct client a = {0}, b = {0};
	fanout_attach(s, &a);
	start_turn(s, "big");
	fanout_attach(s, &b);

	/* Ten lines of 1 MiB: past the 8 MiB replay cap. */
	size_t big = 1u << 20;
	const char *pre =
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"
	    "\"delta\":{\"type\":\"text_delta\",\"text\":\"";
	const char *post = "\"}}}";
	char *line = malloc(strlen(pre) + big + strlen(post) + 1);
	assert_non_null(line);
	strcpy(line, pre);
	memset(line + strlen(pre), 'x', big);
	strcpy(line + strlen(pre) + big, post);
	for (int i = 0; i < 10; i++)
		feed(s, line);
	free(line);
	uint64_t dropped = s->fan.replay_dropped;
	assert_true(dropped > 0);
	assert_true(dropped < 10);

	/* a got everything live; asking again says nothing is missing. */
	uint64_t sa = expect_replay(&a, 0, 10);
	fanout_resume(s, &a, 0);
	expect_no_frame(&a, "a resume by a client that has every frame");

	fanout_resume(s, &b, 0);
	uint64_t sb = 0;
	json_t *e = expect_frame(&b, &sb, "cortex.error");
	assert_string_equal(json_string_value(json_object_get(e, "code")), "resume_gap");
	/* Its seq is the last one dropped: the replay goes on from it (a seq of
	 * its own, after the kept frames', would have a client that skips what
	 * it has seen skip them all). */
	assert_int_eq_msg(sb, dropped, "resume_gap's seq");
	char want[40];
	snprintf(want, sizeof want, "seq %llu", (unsigned long long)dropped);
	if (!strstr(json_string_value(json_object_get(e, "message")), want))
		fail_msg("resume_gap: expected the message to name %s, got %s", want,
			 json_string_value(json_object_get(e, "message")));
	json_decref(e);
	/* The kept frames follow in their order. */
	uint64_t seq = dropped;
	for (uint64_t want_seq = dropped + 1; want_seq <= 10; want_seq++) {
		json_t *o = next_frame(&b, NULL);
		assert_non_null(o);
		seq = (uint64_t)json_integer_value(json_object_get(o, "seq"));
		assert_int_eq_msg(seq, want_seq, "replayed seq after the gap");
		json_decref(o);
	}
	expect_no_frame(&b, "after the replay");
	fanout_resume(s, &b, 0);
	expect_no_frame(&b, "a second resume");

	/* Live again for both. */
	feed(s, RESULT("ok"));
	json_t *o = next_frame(&a, &sa);
	assert_string_equal(type_of(o), "result");
	json_decref(o);
	o = next_frame(&b, NULL);
	assert_string_equal(type_of(o), "result");
	json_decref(o);
	o = next_frame(&a, &sa);
	assert_string_equal(type_of(o), "cortex.done");
	json_decref(o);

	/* A client that joins after the turn ended is not held: resume from 0
	 * says resume_gap, then replays what is kept (to cortex.done), once. */
	struct client late = {0};
	fanout_attach(s, &late);
	fanout_resume(s, &late, 0);
	uint64_t sl = 0;
	expect_error(&late, &sl, "resume_gap");
	sl = dropped;
	size_t n = 0;
	for (;; n++) {
		o = next_frame(&late, &sl);
		if (!o)
			fail_msg(
			    "late client: expected the replay up to cortex.done, got %zu frames",
			    n);
		if (n == 0)
			assert_int_eq_msg(sl, dropped + 1, "first replayed seq");
		int done = !strcmp(type_of(o), "cortex.done");
		json_decref(o);
		if (done)
			break;
	}
	expect_no_frame(&late, "after the replay");
	fanout_resume(s, &late, 0);
	expect_no_frame(&late, "a second resume");
	struct client *all[] = {&a, &b, &late};
	sess_free(s, all, 3);
}

/* ---- the stream guard ---- */

#define SECRET "hunter2-sekrit"

static guard *guard_one(const char *v)
{
	guard *g = NULL;
	size_t len = strlen(v);
	cx_err err = CX_ERR_INIT;
	assert_int_equal(guard_build(&g, &v, &len, 1, &err), 0);
	assert_non_null(g);
	return g;
}

/* A session whose config guards SECRET. */
static struct session *guarded(const char *id, cconfig *cc)
{
	*cc = CC;
	cc->guard = guard_one(SECRET);
	struct session *s = sess_new(id, "chat");
	s->cc.cfg = cc;
	return s;
}

static void expect_revoked(struct client *c, uint64_t *seq)
{
	json_t *o = expect_frame(c, seq, "cortex.revoked");
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "secret_in_output");
	assert_non_null(json_string_value(json_object_get(o, "message")));
	assert_int_eq_msg(json_integer_value(json_object_get(o, "turn")), 1, "revoked: turn");
	json_decref(o);
}

static void test_revoke(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	feed(s, DELTA("nothing to see"));
	expect_line(&a, &seq, DELTA("nothing to see"));

	feed(s, DELTA("the key is " SECRET " ok"));
	expect_revoked(&a, &seq);
	expect_no_frame(&a, "the delta holding the secret");
	struct turn *t = s->turn;
	assert_non_null(t);
	assert_int_equal(t->revoked, 1);
	assert_int_equal(t->stopped, 1);
	assert_int_equal(t->cancelled, 1);
	assert_int_eq_msg(n_sent, 2, "lines sent to the agent");
	expect_interrupt(1);

	/* Nothing more of the turn goes out: deltas, other lines, bad lines, the result. */
	feed(s, DELTA("more"));
	feed(s, BLOCK_STOP);
	feed(s, "not json");
	feed(s, RESULT("the key is " SECRET));
	expect_no_frame(&a, "after cortex.revoked");
	assert_null(s->turn);
	assert_int_eq_msg(n_sent, 2, "no second interrupt");
	expect_record("s_revoke", 1, "revoked");

	/* The assistant's text is not stored. */
	json_t *u = wait_row("transcripts/s_revoke/", "-000001-0");
	json_decref(u);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, "transcripts/s_revoke/", 0, &kv, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		if (strstr(kv[i].val, SECRET))
			fail_msg("transcript row %s holds the secret", kv[i].key);
	assert_int_eq_msg(n, 1, "transcript rows (the user's only)");
	store_kv_free(kv, n);

	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* After cortex.revoked the turn says nothing more, whatever ends it. */
static void test_revoke_then_link_lost(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke_lost", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	feed(s, DELTA("the key is " SECRET));
	expect_revoked(&a, &seq);
	turn_agent_down(s, DOWN_LINK_LOST, "agent_lost", "the ws-agent connection closed");
	expect_no_frame(&a, "after cortex.revoked, the link lost");
	assert_null(s->turn);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* The secret spelled with JSON escapes (the fast path decodes such a delta
 * only when the guard asks): what a client's JSON.parse would read is what
 * is scanned, so it is caught; the same text unescaped passes through. */
static void test_revoke_escaped(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke_escaped", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	feed(s, DELTA("a\\nb \\\"hunter2\\u002Dsekri\\\" no"));
	expect_line(&a, &seq, DELTA("a\\nb \\\"hunter2\\u002Dsekri\\\" no"));
	feed(s, DELTA("key: hunter2\\u002dsek\\u0072it!"));
	expect_revoked(&a, &seq);
	expect_no_frame(&a, "after cortex.revoked");
	expect_interrupt(1);
	D.agent_down(s, DOWN_EXITED, "agent_crashed", "the agent exited (code 0, signal 0)");
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* The secret split across deltas: the first part went out, the delta that
 * completes it does not. */
static void test_revoke_split(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke_split", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	feed(s, DELTA("it is hunt"));
	feed(s, DELTA("er2-sek"));
	feed(s, DELTA("rit, bye"));
	expect_line(&a, &seq, DELTA("it is hunt"));
	expect_line(&a, &seq, DELTA("er2-sek"));
	expect_revoked(&a, &seq);
	expect_no_frame(&a, "after cortex.revoked");
	expect_interrupt(1);

	/* The agent stops without a result: the turn ends quietly. */
	D.agent_down(s, DOWN_EXITED, "agent_crashed", "the agent exited (code 0, signal 0)");
	assert_null(s->turn);
	expect_no_frame(&a, "the agent's exit after cortex.revoked");
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* The secret in a line other than a text delta (a tool call, a message). */
static void test_revoke_other_line(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke_line", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	const char *line =
	    "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"input\":{"
	    "\"command\":\"echo " SECRET "\"}}]}}";
	feed(s, line);
	expect_revoked(&a, &seq);
	expect_no_frame(&a, "the line holding the secret");
	/* A line without it, after: dropped too. */
	feed(s, SYSTEM_INIT);
	expect_no_frame(&a, "after cortex.revoked");
	feed(s, RESULT(""));
	assert_null(s->turn);
	expect_no_frame(&a, "the result of a revoked turn");
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* A message sent after cortex.revoked runs once the stopped turn has ended;
 * one more is busy. */
static void test_message_after_revoke(void **state)
{
	(void)state;
	cconfig cc;
	struct session *s = guarded("s_revoke_next", &cc);
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "tell me");
	feed(s, DELTA(SECRET));
	expect_revoked(&a, &seq);

	lifecycle_message(s, &a, "next one");
	expect_no_frame(&a, "a message after cortex.revoked");
	assert_non_null(s->next_text);
	lifecycle_message(s, &a, "and another");
	expect_error(&a, &seq, "busy");

	feed(s, RESULT(""));
	assert_non_null(s->turn); /* the next message's turn, waiting */
	assert_int_eq_msg(s->turn->id, 2, "the next turn's id");
	assert_null(s->next_text);
	D.reconcile(s);
	expect_user_line(2, "next one");
	feed(s, DELTA("fine"));
	feed(s, RESULT("fine"));
	expect_line(&a, &seq, DELTA("fine"));
	expect_line(&a, &seq, RESULT("fine"));
	json_t *d = expect_frame(&a, &seq, "cortex.done");
	assert_int_eq_msg(json_integer_value(json_object_get(d, "turn")), 2, "done: turn");
	json_decref(d);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	guard_free(cc.guard);
}

/* ---- cancel ---- */

static void test_cancel_after_send(void **state)
{
	(void)state;
	struct session *s = sess_new("s_cancel", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	start_turn(s, "long task");
	feed(s, DELTA("working"));
	expect_line(&a, &seq, DELTA("working"));

	turn_cancel(s);
	assert_int_equal(s->turn->cancelled, 1);
	assert_int_eq_msg(n_sent, 2, "lines sent to the agent");
	expect_interrupt(1);
	expect_no_frame(&a, "a cancel (the agent ends the turn)");
	turn_cancel(s);
	assert_int_eq_msg(n_sent, 2, "one interrupt for two cancels");

	/* What the agent still prints goes out; its result ends the turn. */
	feed(s, DELTA("stopping"));
	feed(s, "{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":false}");
	assert_null(s->turn);
	expect_line(&a, &seq, DELTA("stopping"));
	json_decref(expect_frame(&a, &seq, "result"));
	json_t *d = expect_frame(&a, &seq, "cortex.done");
	assert_true(json_is_true(json_object_get(d, "cancelled")));
	json_decref(d);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

static void test_cancel_before_send(void **state)
{
	(void)state;
	struct session *s = sess_new("s_cancel_early", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	assert_int_equal(turn_begin(s, "never sent"), 0);
	turn_cancel(s);
	assert_null(s->turn);
	expect_error(&a, &seq, "cancelled");
	assert_int_eq_msg(n_sent, 0, "lines sent to the agent");
	expect_record("s_cancel_early", 1, "cancelled");

	/* Nothing to cancel: only the asking client hears it. */
	struct client b = {0};
	fanout_attach(s, &b);
	uint64_t sb = 0;
	lifecycle_cancel(s, &b);
	expect_error(&b, &sb, "no_turn");
	expect_no_frame(&a, "another client's no_turn");
	struct client *all[] = {&a, &b};
	sess_free(s, all, 2);
}

/* ---- the agent goes down ---- */

static void agent_down_case(const char *id, int why, const char *code, int before_send)
{
	struct session *s = sess_new(id, "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	uint64_t seq = 0;
	if (before_send)
		assert_int_equal(turn_begin(s, "hi"), 0);
	else
		start_turn(s, "hi");
	feed(s, DELTA("par"));
	if (!before_send)
		expect_line(&a, &seq, DELTA("par"));
	D.agent_down(s, why, code, "what happened, for the client");
	if (s->turn)
		fail_msg("%s: expected the turn over", code);
	json_t *o = expect_frame(&a, &seq, "cortex.error");
	assert_string_equal(json_string_value(json_object_get(o, "code")), code);
	assert_string_equal(json_string_value(json_object_get(o, "message")),
			    "what happened, for the client");
	assert_int_eq_msg(json_integer_value(json_object_get(o, "turn")), 1, "error: turn");
	json_decref(o);
	expect_no_frame(&a, "after the error");
	/* A result from nowhere now changes nothing. */
	feed(s, RESULT("late"));
	expect_no_frame(&a, "a result after the turn failed");
	expect_record(id, 1, code);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* cortexd dies mid-turn: the turn state it left tells the next one the turn
 * count and which turn was lost; that turn gets a record (cortexd_restarted),
 * a resume hears of it, and the numbers go on. */
static void test_restore_lost_turn(void **state)
{
	(void)state;
	struct session *s = sess_new("s_restore", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	feed(s, DELTA("par"));
	/* While it runs the state names it ... */
	json_t *st = wait_row("turnstate/", "turnstate/s_restore");
	assert_int_eq_msg(json_integer_value(json_object_get(st, "turn")), 1, "turn state: turn");
	if (!json_is_object(json_object_get(st, "running")))
		fail_msg("turn state while the turn runs: %s", json_dumps(st, 0));
	json_decref(st);
	/* ... and the daemon dies here: a new session object reads it back. */
	for (int i = 0; i < 500 && (D.puts.inflight || D.puts.head); i++) {
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
		work_drain_done();
	}
	struct session *s2 = session_new(&D, "s_restore", "alice", "chat");
	assert_non_null(s2);
	turn_restore(s2);
	assert_int_eq_msg(s2->turns, 1, "turn count restored");
	assert_int_eq_msg(s2->lost_turn, 1, "lost turn");
	expect_record("s_restore", 1, "cortexd_restarted");
	st = wait_row("turnstate/", "turnstate/s_restore");
	assert_null(json_object_get(st, "running"));
	json_decref(st);
	/* A resume on the new one hears of the lost turn. */
	struct client b = {0};
	fanout_attach(s2, &b);
	uint64_t sb = 0;
	fanout_resume(s2, &b, 7);
	json_t *o = expect_frame(&b, &sb, "cortex.error");
	assert_string_equal(json_string_value(json_object_get(o, "code")), "cortexd_restarted");
	assert_int_eq_msg(json_integer_value(json_object_get(o, "turn")), 1, "lost turn in the error");
	json_decref(o);
	/* Restored twice (no turn since): nothing recorded twice. */
	struct session *s3 = session_new(&D, "s_restore", "alice", "chat");
	turn_restore(s3);
	assert_int_eq_msg(s3->lost_turn, 0, "the lost turn is recorded once");
	session_unref(s3);
	fanout_detach(&b);
	session_unref(s2);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	/* The old object's turn ended at its stop: turn 1 is not lost again. */
}

/* The durable turn log: a session object made after "the daemon died"
 * gets the dead one's frames back from SESSION_DIR/turn.log with the same
 * seqs, plus the error ending the lost turn; a client that joins is held and
 * its resume gives every frame after its seq exactly once, in order.  A
 * third object (a second crash) reads the same, the end not added twice. */
static void test_turnlog_replay(void **state)
{
	(void)state;
	struct session *s = sess_new("s_tlog", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	feed(s, DELTA("1"));
	feed(s, DELTA("2"));
	feed(s, DELTA("3"));
	uint64_t last = s->fan.seq;
	turnlog_flush(s); /* what a client's WRITEABLE (or the link's batch end) does */
	for (int round = 0; round < 2; round++) {
		struct session *s2 = session_new(&D, "s_tlog", "alice", "chat");
		assert_non_null(s2);
		int ended = -1;
		uint64_t turn = turnlog_restore(s2, &ended);
		assert_int_eq_msg(turn, 1, "the logged turn");
		assert_int_eq_msg(ended, round, "the turn ended (its end logged by the first restore)");
		if (!ended)
			fanout_lost_turn(s2, turn);
		assert_int_eq_msg(s2->fan.seq, last + 1, "seq goes on after the logged frames and the end");
		struct client b = {0};
		fanout_attach(s2, &b);
		assert_int_eq_msg(b.held, 1, "a client joining while restored frames are kept is held");
		uint64_t sb = last - 2;
		fanout_resume(s2, &b, last - 2);
		expect_replay(&b, last - 2, last); /* deltas 2 and 3, once */
		json_t *o = expect_frame(&b, &sb, "cortex.error");
		assert_string_equal(json_string_value(json_object_get(o, "code")), "cortexd_restarted");
		assert_int_eq_msg(json_integer_value(json_object_get(o, "turn")), 1, "the lost turn");
		json_decref(o);
		expect_no_frame(&b, "after the replay");
		fanout_resume(s2, &b, 0);
		expect_no_frame(&b, "a second resume");
		fanout_detach(&b);
		turnlog_close(s2, 0);
		session_unref(s2);
	}
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* Run one sync pass of the turn logs and wait for its end. */
static void sync_pass_wait(void)
{
	struct turnlog_counters c0, c1;
	turnlog_get_counters(&c0);
	assert_int_equal(turnlog_sync_now(&D), 0);
	for (int i = 0; i < 500; i++) {
		turnlog_get_counters(&c1);
		if (c1.passes > c0.passes)
			return;
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
		work_drain_done();
	}
	fail_msg("no sync pass within 5 s");
}

/* The sync pass: a log that grew gets an fdatasync, after which what it
 * holds is durable (dur); a log written only below that since is an
 * overwrite, synced with sync_file_range (on ext4 without data=journal; the
 * test dir's file system and mount say which).  A slot grows TURNLOG_GROW at a time
 * with zeros past its records, which a restore reads past. */
static void test_turnlog_sync_modes(void **state)
{
	(void)state;
	struct statfs sf;
	struct stat dst;
	assert_int_equal(statfs(tmpdir, &sf), 0);
	assert_int_equal(stat(tmpdir, &dst), 0);
	/* ext4 without data=journal (the mount's options, as /proc/self/mountinfo has them) */
	int ext4 = sf.f_type == EXT4_SUPER_MAGIC;
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	char mline[4096];
	while (ext4 && mi && fgets(mline, sizeof mline, mi)) {
		unsigned maj, mnr;
		if (sscanf(mline, "%*s %*s %u:%u", &maj, &mnr) == 2 && makedev(maj, mnr) == dst.st_dev &&
		    strstr(mline, "data=journal"))
			ext4 = 0;
	}
	if (mi)
		fclose(mi);
	struct session *s = sess_new("s_tsync", "chat");
	session_link(s); /* the pass walks the daemon's sessions */
	struct client a = {0};
	fanout_attach(s, &a);
	struct turnlog_state *t = &s->fan.tlog;
	struct turnlog_counters c0, c1;

	start_turn(s, "one");
	feed(s, DELTA("1"));
	feed(s, RESULT("1"));
	turnlog_flush(s);
	assert_int_eq_msg(t->range_ok, ext4, "range sync allowed (ext4, not data=journal)");
	struct stat st;
	assert_int_equal(fstat(t->fd, &st), 0);
	assert_int_eq_msg(st.st_size, TURNLOG_GROW, "file size after the first turn (slot 0 grown one step)");
	assert_int_eq_msg(t->ext[0], TURNLOG_GROW, "slot 0 written through");
	assert_int_eq_msg(t->dur[0], 0, "nothing durable before a pass");
	turnlog_get_counters(&c0);
	sync_pass_wait();
	turnlog_get_counters(&c1);
	assert_int_eq_msg(c1.full - c0.full, 1, "a grown log: fdatasync");
	assert_int_eq_msg(c1.ranged - c0.ranged, 0, "a grown log: no range sync");
	assert_int_eq_msg(t->dur[0], TURNLOG_GROW, "durable after the fdatasync");
	assert_int_eq_msg(t->dirty, 0, "clean after the pass");

	/* Nothing written: no pass at all. */
	turnlog_get_counters(&c0);
	assert_int_equal(turnlog_sync_now(&D), 0);
	turnlog_get_counters(&c1);
	assert_int_eq_msg(c1.passes, c0.passes, "a pass with nothing dirty");

	/* A second small turn: an overwrite below dur. */
	start_turn(s, "two");
	feed(s, DELTA("2"));
	feed(s, RESULT("2"));
	turnlog_flush(s);
	assert_int_eq_msg(t->ext[0], TURNLOG_GROW, "no growth for a small turn");
	turnlog_get_counters(&c0);
	sync_pass_wait();
	turnlog_get_counters(&c1);
	assert_int_eq_msg(c1.ranged - c0.ranged, ext4, "an overwrite: range sync (ext4)");
	assert_int_eq_msg(c1.full - c0.full, !ext4, "an overwrite: fdatasync (not ext4)");
	assert_int_eq_msg(c1.failed - c0.failed, 0, "failed syncs");

	/* A frame past the grown end: the slot grows a step, fdatasync again. */
	static char line[80000];
	int n = snprintf(line, sizeof line, "%s", DELTA("@"));
	char *at = strchr(line, '@');
	size_t big = 70000, tail = strlen(at + 1);
	memmove(at + big, at + 1, tail + 1);
	memset(at, 'x', big);
	assert_true((size_t)n + big < sizeof line);
	start_turn(s, "three");
	feed(s, line);
	uint64_t last = s->fan.seq;
	turnlog_flush(s);
	assert_int_eq_msg(t->ext[0], 2 * TURNLOG_GROW, "slot 0 grown a second step");
	turnlog_get_counters(&c0);
	sync_pass_wait();
	turnlog_get_counters(&c1);
	assert_int_eq_msg(c1.full - c0.full, 1, "grown again: fdatasync");
	assert_int_eq_msg(t->dur[0], 2 * TURNLOG_GROW, "durable through the second step");

	/* The zeros past the records end the read: turn 3 and its frame back. */
	struct session *s2 = session_new(&D, "s_tsync", "alice", "chat");
	assert_non_null(s2);
	int ended = -1;
	assert_int_eq_msg(turnlog_restore(s2, &ended), 3, "the logged turn");
	assert_int_eq_msg(ended, 0, "turn 3 did not end");
	assert_int_eq_msg(s2->fan.seq, last, "seq of the big frame");
	assert_true(s2->fan.replay.n >= 1);
	turnlog_close(s2, 0);
	session_unref(s2);
	session_unlink(s);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* Small turns follow each other in one log file (no cut per turn): the
 * restore keeps only the last turn's frames, with their seqs. */
static void test_turnlog_two_turns(void **state)
{
	(void)state;
	struct session *s = sess_new("s_tlog2", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	feed(s, DELTA("1"));
	feed(s, RESULT("1"));
	turnlog_flush(s);
	uint64_t size1 = s->fan.tlog.off;
	start_turn(s, "two");
	uint64_t first2 = s->fan.seq + 1;
	feed(s, DELTA("2"));
	feed(s, DELTA("3"));
	uint64_t last = s->fan.seq;
	turnlog_flush(s);
	assert_true(s->fan.tlog.off > size1); /* appended, not cut */
	struct session *s2 = session_new(&D, "s_tlog2", "alice", "chat");
	assert_non_null(s2);
	int ended = -1;
	uint64_t turn = turnlog_restore(s2, &ended);
	assert_int_eq_msg(turn, 2, "the last turn of the file");
	assert_int_eq_msg(ended, 0, "turn 2 did not end");
	assert_int_eq_msg(s2->fan.seq, last, "seq from the last turn's frames");
	assert_int_eq_msg(s2->fan.replay.n, last - first2 + 1, "only turn 2's frames are kept");
	turnlog_close(s2, 0);
	session_unref(s2);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* The whole turn.ring of s, read (freed by the caller). */
static char *ring_read(struct session *s, size_t *len)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/turn.ring", s->dir);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char *b = malloc(1 << 20);
	assert_non_null(b);
	*len = fread(b, 1, 1 << 20, f);
	fclose(f);
	return b;
}

static void ring_write(struct session *s, const char *b, size_t len)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/turn.ring", s->dir);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	fclose(f);
}

/* A new session object restores s's log: its frames must be consecutive seqs
 * ending at last; returns the first. */
static uint64_t restore_check(const char *id, uint64_t last, uint64_t turn_want, int ended_want)
{
	struct session *s2 = session_new(&D, id, "alice", "chat");
	assert_non_null(s2);
	int ended = -1;
	uint64_t turn = turnlog_restore(s2, &ended);
	assert_int_eq_msg(turn, turn_want, "the logged turn");
	assert_int_eq_msg(ended, ended_want, "the turn ended");
	assert_int_eq_msg(s2->fan.seq, last, "the last seq restored");
	uint64_t first = 0, prev = 0;
	for (size_t i = 0; i < s2->fan.replay.n; i++) {
		const struct frame *f = fq_at(&s2->fan.replay, i);
		if (!first)
			first = f->seq;
		else
			assert_int_eq_msg(f->seq, prev + 1, "restored frames are consecutive");
		prev = f->seq;
	}
	assert_int_eq_msg(prev, last, "the restored frames end at the last one");
	turnlog_close(s2, 0);
	session_unref(s2);
	return first;
}

/* Slots are reused in place: a turn far longer than the ring keeps its
 * newest frames, in order, and nothing of an older pass (stale records of
 * the slot that was overwritten) comes back; the first frames are reported
 * dropped.  A restarted cortexd that goes on with the turn writes after them
 * and a later restore gets both. */
static void test_turnlog_ring_wrap(void **state)
{
	(void)state;
	turnlog_test_slot_bytes(4096);
	struct session *s = sess_new("s_tlring", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	for (int i = 0; i < 120; i++) { /* ~100 bytes a frame: ~3 passes over 2 slots */
		feed(s, DELTA("abcdefghijklmnopqrstuvwxyz"));
		if (i % 7 == 0)
			turnlog_flush(s);
	}
	turnlog_flush(s);
	uint64_t last = s->fan.seq;
	assert_true(s->fan.tlog.gen >= 4); /* wrapped: the slots were each written twice */
	uint64_t first = restore_check("s_tlring", last, 1, 0);
	assert_true(first > 1 && first < last - 10); /* older frames dropped, a slot and more kept */
	{
		struct session *s2 = session_new(&D, "s_tlring", "alice", "chat");
		int ended = 0;
		(void)turnlog_restore(s2, &ended);
		assert_int_eq_msg(s2->fan.replay_dropped, first - 1, "the gap before the oldest kept");
		/* The restarted cortexd's frames of the same turn. */
		struct frame *f = frame_new("{\"seq\":0}", 9);
		assert_non_null(f);
		f->seq = last + 1;
		turnlog_frame(s2, f);
		turnlog_flush(s2);
		frame_unref(f);
		turnlog_close(s2, 0);
		session_unref(s2);
	}
	uint64_t first2 = restore_check("s_tlring", last + 1, 1, 0);
	assert_true(first2 <= last); /* the slot before (of this turn) is read first */
	struct client *all[] = {&a};
	sess_free(s, all, 1);
	turnlog_test_slot_bytes(0);
}

/* A crash mid-write: a record cut short, or one whose payload did not reach
 * the disk (a torn page holding an older pass), ends the slot there; every
 * record before it is restored. */
static void test_turnlog_torn(void **state)
{
	(void)state;
	struct session *s = sess_new("s_tltorn", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	start_turn(s, "one");
	feed(s, DELTA("first"));
	feed(s, DELTA("second"));
	feed(s, DELTA("third-torn"));
	turnlog_flush(s);
	uint64_t last = s->fan.seq;
	size_t len;
	char *b = ring_read(s, &len);
	assert_true(s->fan.tlog.slot == 0 && s->fan.tlog.off <= len);
	len = s->fan.tlog.off; /* the records' end (zeros follow, to TURNLOG_GROW) */
	/* Cut inside the last record. */
	ring_write(s, b, len - 5);
	restore_check("s_tltorn", last - 1, 1, 0);
	/* A byte of the second frame's payload changed (a torn page). */
	char *p = memmem(b, len, "second", 6);
	assert_non_null(p);
	p[0] = 'S';
	ring_write(s, b, len);
	restore_check("s_tltorn", last - 2, 1, 0);
	/* A header changed: the same. */
	p[0] = 's';
	char *h = p;
	while (h > b && memcmp(h, "{\"seq\"", 6))
		h--;
	h[8 - (ptrdiff_t)TLR_HDR] ^= 1; /* that frame's seq in its header */
	ring_write(s, b, len);
	restore_check("s_tltorn", last - 2, 1, 0);
	free(b);
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* The text format of before (turn.log, a line a record, its last line cut
 * by a crash) is restored; the next turn removes it. */
static void test_turnlog_legacy_text(void **state)
{
	(void)state;
	struct session *s = sess_new("s_tltext", "chat");
	char path[4200];
	snprintf(path, sizeof path, "%s/turn.log", s->dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("T 7\nL 3\n1 {\"seq\":1,\"type\":\"a\"}\n2 {\"seq\":2,\"type\":\"b\"}\n3 {\"seq\":3", f);
	fclose(f);
	struct session *s2 = session_new(&D, "s_tltext", "alice", "chat");
	int ended = -1;
	assert_int_eq_msg(turnlog_restore(s2, &ended), 7, "the text log's turn");
	assert_int_eq_msg(ended, 0, "not ended");
	assert_int_eq_msg(s2->fan.replay.n, 2, "the whole lines");
	assert_int_eq_msg(s2->fan.seq, 2, "seq");
	assert_int_eq_msg(s2->link.logged_seq, 3, "the link seq");
	turnlog_begin(s2, 8);
	assert_int_equal(access(path, F_OK), -1); /* gone with the next turn */
	turnlog_flush(s2);
	turnlog_close(s2, 0);
	session_unref(s2);
	s2 = session_new(&D, "s_tltext", "alice", "chat");
	assert_int_eq_msg(turnlog_restore(s2, &ended), 8, "the ring's turn");
	assert_int_eq_msg(s2->fan.replay.n, 0, "no frame of turn 8");
	turnlog_close(s2, 1);
	session_unref(s2);
	struct client *all[] = {NULL};
	sess_free(s, all, 0);
}

static void test_agent_down_mid_turn(void **state)
{
	(void)state;
	agent_down_case("s_killed", DOWN_KILLED, "agent_killed", 0);
	agent_down_case("s_crashed", DOWN_EXITED, "agent_crashed", 0);
	agent_down_case("s_lost", DOWN_LINK_LOST, "agent_lost", 0);
	agent_down_case("s_pipe", DOWN_PIPE, "agent_lost", 0);
	/* Before the message is written: only what cannot give it an agent. */
	agent_down_case("s_lost_early", DOWN_LINK_LOST, "agent_lost", 1);
	agent_down_case("s_never", DOWN_NEVER_STARTED, "agent_failed", 1);
	agent_down_case("s_boot", DOWN_BOOT_TIMEOUT, "agent_start_timeout", 1);
}

/* A waiting turn outlives an agent exit: it gets a fresh agent. */
static void test_agent_down_waiting_turn(void **state)
{
	(void)state;
	struct session *s = sess_new("s_waiting", "chat");
	struct client a = {0};
	fanout_attach(s, &a);
	assert_int_equal(turn_begin(s, "hi"), 0);
	int whys[] = {DOWN_EXITED, DOWN_KILLED, DOWN_PIPE};
	for (size_t i = 0; i < sizeof whys / sizeof *whys; i++)
		D.agent_down(s, whys[i], "agent_crashed", "exited");
	assert_non_null(s->turn);
	expect_no_frame(&a, "an agent exit while the turn waits");
	D.reconcile(s);
	expect_user_line(0, "hi");
	/* After the result, a late exit is not the turn's. */
	feed(s, RESULT("ok"));
	assert_null(s->turn);
	D.agent_down(s, DOWN_EXITED, "agent_crashed", "exited");
	uint64_t seq = 0;
	json_decref(expect_frame(&a, &seq, "result"));
	json_decref(expect_frame(&a, &seq, "cortex.done"));
	expect_no_frame(&a, "an exit after the turn");
	struct client *all[] = {&a};
	sess_free(s, all, 1);
}

/* The agent goes without a word of the turn (it exited after its last
 * answer, or ws-agent found no agent for the message): the message goes to
 * the next agent, once; a second silent end fails the turn. */
static void test_agent_down_before_a_word(void **state)
{
	(void)state;
	int whys[] = {DOWN_EXITED, DOWN_PIPE};
	for (size_t i = 0; i < sizeof whys / sizeof *whys; i++) {
		char id[32];
		snprintf(id, sizeof id, "s_silent%zu", i);
		struct session *s = sess_new(id, "chat");
		struct client a = {0};
		fanout_attach(s, &a);
		uint64_t seq = 0;
		start_turn(s, "again");
		D.agent_down(s, whys[i], "agent_crashed", "the agent exited (code 0, signal 0)");
		assert_non_null(s->turn);
		assert_int_eq_msg(s->turn->sent, 0, "the message waits for the next agent");
		expect_no_frame(&a, "an agent that went before a word of the turn");
		size_t before = n_sent;
		D.reconcile(s); /* the same agent still counted as hot: not to it */
		assert_int_eq_msg(n_sent, before, "the message written to the agent that went");
		s->link.gen++; /* the next agent */
		D.reconcile(s);
		assert_int_eq_msg(n_sent, before + 1, "the message written to the next agent");
		json_t *in = json_loads(sent[before], 0, NULL);
		assert_non_null(in);
		assert_int_eq_msg(json_integer_value(json_object_get(in, "gen")), 2, "input gen: the next agent");
		assert_non_null(strstr(json_string_value(json_object_get(in, "data")), "\"text\":\"again\""));
		json_decref(in);
		/* Silent again: the turn fails. */
		D.agent_down(s, whys[i], "agent_crashed", "the agent exited (code 0, signal 0)");
		assert_null(s->turn);
		json_decref(expect_frame(&a, &seq, "cortex.error"));
		struct client *all[] = {&a};
		sess_free(s, all, 1);
	}
}

/* ---- busy ---- */

static void test_busy(void **state)
{
	(void)state;
	struct session *s = sess_new("s_busy", "chat");
	struct client a = {0}, b = {0};
	fanout_attach(s, &a);
	fanout_attach(s, &b);
	uint64_t sa = 0, sb = 0;

	/* Waiting for the agent, then running: busy either way, to the sender only. */
	assert_int_equal(turn_begin(s, "first"), 0);
	lifecycle_message(s, &b, "second");
	expect_error(&b, &sb, "busy");
	expect_no_frame(&a, "another client's busy");
	D.reconcile(s);
	lifecycle_message(s, &b, "third");
	expect_error(&b, &sb, "busy");
	expect_no_frame(&a, "another client's busy");
	assert_int_eq_msg(n_sent, 1, "lines sent to the agent");
	expect_user_line(0, "first");
	assert_int_eq_msg(s->turn->id, 1, "the running turn");
	assert_string_equal(s->turn->text, "first");

	feed(s, RESULT("1"));
	assert_null(s->turn);
	expect_line(&a, &sa, RESULT("1"));
	json_decref(expect_frame(&a, &sa, "cortex.done"));
	expect_line(&b, &sb, RESULT("1"));
	json_decref(expect_frame(&b, &sb, "cortex.done"));
	struct client *all[] = {&a, &b};
	sess_free(s, all, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_normal_turn, test_setup),
	    cmocka_unit_test_setup(test_turns_in_a_row, test_setup),
	    cmocka_unit_test_setup(test_store_values_as_jansson, test_setup),
	    cmocka_unit_test_setup(test_done_and_record_as_jansson, test_setup),
	    cmocka_unit_test_setup(test_nul_in_output, test_setup),
	    cmocka_unit_test_setup(test_bad_line, test_setup),
	    cmocka_unit_test_setup(test_output_not_of_the_turn, test_setup),
	    cmocka_unit_test_setup(test_sentences, test_setup),
	    cmocka_unit_test_setup(test_resume_exactly_once, test_setup),
	    cmocka_unit_test_setup(test_resume_gap, test_setup),
	    cmocka_unit_test_setup(test_first_token_count, test_setup),
	    cmocka_unit_test_setup(test_slow_client_cut, test_setup),
	    cmocka_unit_test_setup(test_revoke, test_setup),
	    cmocka_unit_test_setup(test_revoke_then_link_lost, test_setup),
	    cmocka_unit_test_setup(test_revoke_split, test_setup),
	    cmocka_unit_test_setup(test_revoke_escaped, test_setup),
	    cmocka_unit_test_setup(test_revoke_other_line, test_setup),
	    cmocka_unit_test_setup(test_message_after_revoke, test_setup),
	    cmocka_unit_test_setup(test_cancel_after_send, test_setup),
	    cmocka_unit_test_setup(test_cancel_before_send, test_setup),
	    cmocka_unit_test_setup(test_agent_down_mid_turn, test_setup),
	    cmocka_unit_test_setup(test_restore_lost_turn, test_setup),
	    cmocka_unit_test_setup(test_turnlog_replay, test_setup),
	    cmocka_unit_test_setup(test_turnlog_two_turns, test_setup),
	    cmocka_unit_test_setup(test_turnlog_sync_modes, test_setup),
	    cmocka_unit_test_setup(test_turnlog_ring_wrap, test_setup),
	    cmocka_unit_test_setup(test_turnlog_torn, test_setup),
	    cmocka_unit_test_setup(test_turnlog_legacy_text, test_setup),
	    cmocka_unit_test_setup(test_agent_down_waiting_turn, test_setup),
	    cmocka_unit_test_setup(test_agent_down_before_a_word, test_setup),
	    cmocka_unit_test_setup(test_busy, test_setup),
	    cmocka_unit_test_setup(test_group_commit, test_setup),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
