/* Unit tests: agent_line_parse — how each line on the ws-agent link is
 * classified (wsa.* events, control responses, pong, the agent's output) and
 * what the message path gets out of it (text deltas, block ends, results). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "agent_line.h"
#include "../fuzz/agent_line_oracle.h"
#include "unit_util.h"

/* ---- helpers ---- */

static void parse(struct agent_line *l, const char *line)
{
	agent_line_parse(l, line, strlen(line));
}

/* Nothing of the output fields is set. */
static void assert_nothing_extracted(const struct agent_line *l, const char *line)
{
	size_t dn;
	const char *d = agent_line_delta(l, &dn);
	if (l->is_delta || d || dn || l->is_result || l->is_error || l->result || l->block_end)
		fail_msg("'%s': expected nothing extracted, got delta=%.*s len=%zu result=%d "
			 "error=%d text=%s end=%d",
			 line, d ? (int)dn : 6, d ? d : "(null)", dn, l->is_result,
			 l->is_error, l->result ? l->result : "(null)", l->block_end);
}

static void expect_wsa(const char *line, enum al_wsa want, int has_gen, uint64_t gen)
{
	struct agent_line l;
	parse(&l, line);
	assert_int_eq_msg(l.kind, AL_WSA, line);
	assert_int_eq_msg(l.wsa, want, line);
	assert_int_eq_msg(l.has_gen, has_gen, line);
	if (has_gen)
		assert_int_eq_msg(l.gen, gen, line);
	else
		assert_int_eq_msg(l.gen, 0, line);
	assert_null(l.request_id);
	assert_nothing_extracted(&l, line);
	agent_line_free(&l);
	assert_null(l.o);
}

static void expect_delta(const char *line, const char *want, size_t want_len)
{
	struct agent_line l;
	parse(&l, line);
	assert_int_eq_msg(l.kind, AL_OUTPUT, line);
	assert_string_equal(l.type, "stream_event");
	size_t dn;
	const char *d = agent_line_delta(&l, &dn);
	if (!d)
		fail_msg("'%s': expected a delta, got none", line);
	assert_int_eq_msg(dn, want_len, "delta_len (bytes)");
	if (memcmp(d, want, want_len))
		fail_msg("'%s': delta bytes differ", line);
	assert_int_equal(l.block_end, 0);
	assert_int_equal(l.is_result, 0);
	agent_line_free(&l);
}

#define DELTA(text)                                                                                \
	"{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"      \
	"\"delta\":{\"type\":\"text_delta\",\"text\":\"" text "\"}}}"


/* ---- the fast path (agent_line.c parse_fast) ---- */

#define CC_TAIL ",\"session_id\":\"6f1c2a5e-4b7d-4e0a-9c3f-1d2e3f4a5b6c\",\"parent_tool_use_id\":null," \
		"\"uuid\":\"0b5e7c1d-2f3a-4c6b-8d9e-000000000001\""
#define CC_DELTA(text)                                                                             \
	"{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"      \
	"\"delta\":{\"type\":\"text_delta\",\"text\":\"" text "\"}}" CC_TAIL "}\n"

/* What the line's text is to jansson (what a client's JSON.parse reads), or
 * NULL when it is no text delta. */
static json_t *jansson_text(const char *line)
{
	json_t *o = json_loads(line, JSON_ALLOW_NUL, NULL);
	json_t *t = json_object_get(json_object_get(json_object_get(o, "event"), "delta"), "text");
	json_incref(t);
	json_decref(o);
	return t;
}

static void expect_same_as_jansson(const char *line, int want_fast)
{
	struct agent_line l;
	parse(&l, line);
	json_t *t = jansson_text(line);
	size_t dn;
	const char *d = agent_line_delta(&l, &dn);
	if (!t) {
		if (d || l.is_delta)
			fail_msg("'%s': a delta jansson does not see", line);
	} else {
		if (!d || dn != json_string_length(t) || memcmp(d, json_string_value(t), dn))
			fail_msg("'%s': delta differs from jansson's text", line);
	}
	if (want_fast >= 0 && l.fast != want_fast)
		fail_msg("'%s': expected the %s path", line, want_fast ? "fast" : "slow");
	json_decref(t);
	agent_line_free(&l);
}

static void test_fast_path(void **state)
{
	(void)state;
	/* Claude Code's lines: fast, and the same text as jansson's. */
	expect_same_as_jansson(CC_DELTA("Hello"), 1);
	expect_same_as_jansson(CC_DELTA(""), 1);
	expect_same_as_jansson(CC_DELTA("a\\nb\\\"c\\\\d\\/e\\b\\f\\r\\t"), 1);
	expect_same_as_jansson(CC_DELTA("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"), 1);
	expect_same_as_jansson(CC_DELTA("\\u00e9\\u20AC\\ud83d\\ude00"), 1);
	expect_same_as_jansson(DELTA("no tail"), 1);
	expect_same_as_jansson("{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":12,"
			       "\"delta\":{\"type\":\"text_delta\",\"text\":\"sub\"}},\"session_id\":\"s\","
			       "\"parent_tool_use_id\":\"toolu_01ABC\",\"uuid\":\"u\"}",
			       1);
	/* Everything else is the slow path's, which decides as before. */
	expect_same_as_jansson(CC_DELTA("a\\u0000b"), 0);  /* NUL: JSON_ALLOW_NUL there */
	expect_same_as_jansson(CC_DELTA("\\ud83d"), 0);   /* lone high surrogate: bad JSON */
	expect_same_as_jansson(CC_DELTA("\\ude00x"), 0);  /* lone low surrogate */
	expect_same_as_jansson(CC_DELTA("\xc3"), 0);      /* bad UTF-8 */
	expect_same_as_jansson(CC_DELTA("\xed\xa0\x80"), 0); /* a surrogate in UTF-8 */
	expect_same_as_jansson(CC_DELTA("\xc0\xaf"), 0);  /* overlong */
	expect_same_as_jansson(CC_DELTA("tab\there"), 0); /* a raw control byte */
	expect_same_as_jansson(CC_DELTA("\\x"), 0);       /* a bad escape */
	/* A repeated key: a client reads the last one, and so must the guard. */
	const char *dup = "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"
			  "\"delta\":{\"type\":\"text_delta\",\"text\":\"harmless\",\"text\":\"SECRET\"}}}";
	expect_same_as_jansson(dup, 0);
	struct agent_line l;
	parse(&l, dup);
	size_t dn;
	const char *d = agent_line_delta(&l, &dn);
	assert_non_null(d);
	assert_int_equal(dn, 6);
	assert_memory_equal(d, "SECRET", 6);
	agent_line_free(&l);
	const char *dup2 = "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"
			   "\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}},\"event\":{\"type\":\"x\"}}";
	expect_same_as_jansson(dup2, 0);
	/* A "seq" of the agent's own: the slow path (turn.c re-encodes it). */
	parse(&l, "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,"
		  "\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}},\"seq\":7}");
	assert_int_equal(l.fast, 0);
	assert_non_null(l.o);
	assert_non_null(json_object_get(l.o, "seq"));
	agent_line_free(&l);
	/* Truncated anywhere: never a delta. */
	const char *full = CC_DELTA("abc\\u00e9");
	for (size_t n = 0; n + 2 < strlen(full); n++) {
		char cut[512];
		memcpy(cut, full, n);
		cut[n] = 0;
		parse(&l, cut);
		if (l.is_delta)
			fail_msg("a line cut at %zu gave a delta", n);
		agent_line_free(&l);
	}
}

/* The structural events around a text block: fast when exactly Claude Code's
 * shape, with what the slow path would say (a block ended or not); any other
 * shape is the slow path's. */
static void expect_structural(const char *line, int want_fast)
{
	struct agent_line l;
	parse(&l, line);
	json_t *o = json_loads(line, 0, NULL);
	const char *et = json_string_value(json_object_get(json_object_get(o, "event"), "type"));
	int end = et && (!strcmp(et, "content_block_stop") || !strcmp(et, "message_stop"));
	if (l.fast != want_fast)
		fail_msg("'%s': expected the %s path", line, want_fast ? "fast" : "slow");
	if (o && (l.kind != AL_OUTPUT || l.block_end != end || l.is_delta || strcmp(l.type, "stream_event")))
		fail_msg("'%s': kind %d block_end %d, jansson says block_end %d", line, (int)l.kind, l.block_end, end);
	json_decref(o);
	agent_line_free(&l);
}

static void test_fast_structural(void **state)
{
	(void)state;
	const char *ev = "{\"type\":\"stream_event\",\"event\":{\"type\":";
	char b[512];
#define S(mid, tail) (snprintf(b, sizeof b, "%s%s%s}", ev, mid, tail), b)
	expect_structural(S("\"content_block_stop\",\"index\":0}", ""), 1);
	expect_structural(S("\"content_block_stop\",\"index\":3}", CC_TAIL), 1);
	expect_structural(S("\"message_stop\"}", ""), 1);
	expect_structural(S("\"message_stop\"}", CC_TAIL), 1);
	expect_structural(S("\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}", ""), 1);
	expect_structural(S("\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}", CC_TAIL), 1);
	/* other shapes: the slow path, which decides as before */
	expect_structural(S("\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\"}}", ""), 0);
	expect_structural(S("\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"x\"}}", ""), 0);
	expect_structural(S("\"content_block_stop\"}", ""), 0);                   /* no index */
	expect_structural(S("\"content_block_stop\",\"index\":0,\"x\":1}", ""), 0); /* another key */
	expect_structural(S("\"message_stop\",\"type\":\"content_block_delta\"}", ""), 0); /* repeated */
	expect_structural(S("\"message_stop\"}", ",\"seq\":7"), 0);
	expect_structural(S("\"message_delta\"}", ""), 0);
	expect_structural(S("\"message_stopx\"}", ""), 0);
#undef S
	/* cut anywhere: never taken for a whole structural line */
	const char *full = "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_stop\",\"index\":0}}";
	for (size_t n = 0; n + 1 < strlen(full); n++) {
		char cut[256];
		struct agent_line l;
		memcpy(cut, full, n);
		cut[n] = 0;
		parse(&l, cut);
		if (l.fast || l.block_end)
			fail_msg("a line cut at %zu was taken as a structural event", n);
		agent_line_free(&l);
	}
}

/* A fast delta's text is its JSON string in the line itself when it has no
 * escape (nothing copied), and decoded once, when first asked, when it has. */
static void test_fast_path_lazy(void **state)
{
	(void)state;
	const char *plain = CC_DELTA("plain ASCII and h\xc3\xa9llo, nothing escaped");
	struct agent_line l;
	parse(&l, plain);
	assert_int_equal(l.fast, 1);
	assert_int_equal(l.is_delta, 1);
	size_t dn;
	const char *d = agent_line_delta(&l, &dn);
	assert_non_null(d);
	assert_true(d > plain && d + dn < plain + strlen(plain)); /* in the line */
	assert_int_equal(dn, strlen("plain ASCII and h\xc3\xa9llo, nothing escaped"));
	assert_memory_equal(d, "plain ASCII and h\xc3\xa9llo, nothing escaped", dn);
	assert_null(l.delta_buf);
	agent_line_free(&l);

	const char *esc = CC_DELTA("line one\\nline \\\"two\\\" \\u00e9");
	parse(&l, esc);
	assert_int_equal(l.fast, 1);
	assert_null(l.delta_buf); /* not decoded until asked */
	d = agent_line_delta(&l, &dn);
	assert_non_null(d);
	assert_ptr_equal(d, l.delta_buf);
	assert_int_equal(dn, strlen("line one\nline \"two\" \xc3\xa9"));
	assert_memory_equal(d, "line one\nline \"two\" \xc3\xa9", dn);
	size_t dn2;
	assert_ptr_equal(agent_line_delta(&l, &dn2), d); /* once */
	assert_int_equal(dn2, dn);
	agent_line_free(&l);
	assert_null(l.delta_buf);

	/* Not a delta: no text, and nothing to decode. */
	parse(&l, "{\"type\":\"result\",\"result\":\"x\"}");
	assert_null(agent_line_delta(&l, &dn));
	assert_int_equal(dn, 0);
	agent_line_free(&l);
}

/* Random texts (every byte value, escapes, surrogate pairs) through jansson's
 * encoder: the fast path must read back exactly what jansson reads. */
static void test_fast_path_random(void **state)
{
	(void)state;
	uint64_t x = 0x243f6a8885a308d3u;
	int fast = 0;
	for (int round = 0; round < 3000; round++) {
		char txt[256];
		size_t n = 0, len = (size_t)(x % 200);
		while (n < len) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			unsigned r = (unsigned)(x >> 24) % 10;
			if (r < 6)
				txt[n++] = (char)(0x01 + (x >> 40) % 0x7f); /* ASCII, controls too */
			else if (r < 8 && n + 2 <= len)
				n += (size_t)snprintf(txt + n, 3, "\xc3\xa9");
			else if (n + 4 <= len)
				memcpy(txt + n, "\xf0\x9f\x98\x80", 4), n += 4;
			else
				txt[n++] = 'z';
		}
		json_t *o = json_pack("{s:s,s:{s:s,s:i,s:{s:s,s:s%}},s:s,s:n,s:s}", "type", "stream_event", "event",
				      "type", "content_block_delta", "index", 0, "delta", "type", "text_delta", "text",
				      txt, n, "session_id", "abc", "parent_tool_use_id", "uuid", "def");
		char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | (round % 2 ? JSON_ENSURE_ASCII : 0));
		struct agent_line l;
		parse(&l, line);
		fast += l.fast;
		agent_line_free(&l);
		expect_same_as_jansson(line, -1);
		free(line);
		json_decref(o);
	}
	/* jansson writes Claude Code's layout: every one of them took the fast path. */
	assert_int_equal(fast, 3000);
}

/* ---- wsa.* ---- */

static void test_wsa_events(void **state)
{
	(void)state;
	expect_wsa("{\"type\":\"wsa.started\",\"gen\":3,\"pid\":12}", WSA_STARTED, 1, 3);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":2,\"code\":1,\"signal\":0}", WSA_EXIT, 1, 2);
	expect_wsa("{\"type\":\"wsa.stderr\",\"gen\":7,\"text\":\"oops\"}", WSA_STDERR, 1, 7);
	expect_wsa("{\"type\":\"wsa.error\",\"code\":\"stdin_full\",\"message\":\"m\"}", WSA_ERROR,
		   0, 0);
	expect_wsa("{\"type\":\"wsa.hello\",\"gen\":1}", WSA_OTHER, 1, 1);
	expect_wsa("{\"type\":\"wsa.\"}", WSA_OTHER, 0, 0);
	expect_wsa("{\"type\":\"wsa.started.x\",\"gen\":1}", WSA_OTHER, 1, 1);
	expect_wsa("{\"type\":\"wsa.EXIT\",\"gen\":1}", WSA_OTHER, 1, 1);

	struct agent_line l;
	parse(&l, "{\"type\":\"wsa.stderr\",\"gen\":1,\"text\":\"boom\"}");
	assert_string_equal(agent_line_str(&l, "text"), "boom");
	assert_null(agent_line_str(&l, "gen")); /* not a string */
	assert_null(agent_line_str(&l, "missing"));
	agent_line_free(&l);
}

static void test_wsa_gen(void **state)
{
	(void)state;
	expect_wsa("{\"type\":\"wsa.started\",\"gen\":0}", WSA_STARTED, 1, 0);
	expect_wsa("{\"type\":\"wsa.started\"}", WSA_STARTED, 0, 0);
	expect_wsa("{\"type\":\"wsa.started\",\"gen\":-1}", WSA_STARTED, 0, 0);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":-9223372036854775808}", WSA_EXIT, 0, 0);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":\"4\"}", WSA_EXIT, 0, 0);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":4.0}", WSA_EXIT, 0, 0);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":null}", WSA_EXIT, 0, 0);
	expect_wsa("{\"type\":\"wsa.exit\",\"gen\":9223372036854775807}", WSA_EXIT, 1,
		   (uint64_t)INT64_MAX);
}

/* ---- control responses, pong ---- */

static void test_control_response(void **state)
{
	(void)state;
	struct agent_line l;
	parse(&l, "{\"type\":\"control_response\",\"response\":{\"subtype\":\"success\",\"request_"
		  "id\":\"cx-init-4\","
		  "\"response\":{}}}");
	assert_int_eq_msg(l.kind, AL_CONTROL_RESPONSE, "kind");
	assert_string_equal(l.request_id, "cx-init-4");
	assert_nothing_extracted(&l, "control_response");
	agent_line_free(&l);

	/* No id, or an id at the wrong level: classified, no id. */
	const char *noid[] = {
	    "{\"type\":\"control_response\"}",
	    "{\"type\":\"control_response\",\"request_id\":\"cx-init-1\"}",
	    "{\"type\":\"control_response\",\"response\":{\"request_id\":7}}",
	    "{\"type\":\"control_response\",\"response\":\"cx-init-1\"}",
	};
	for (size_t i = 0; i < sizeof noid / sizeof *noid; i++) {
		parse(&l, noid[i]);
		assert_int_eq_msg(l.kind, AL_CONTROL_RESPONSE, noid[i]);
		assert_null(l.request_id);
		agent_line_free(&l);
	}
}

static void test_pong(void **state)
{
	(void)state;
	struct agent_line l;
	parse(&l, "{\"type\":\"pong\",\"t\":1}");
	assert_int_eq_msg(l.kind, AL_PONG, "kind");
	assert_nothing_extracted(&l, "pong");
	agent_line_free(&l);
}

/* ---- the agent's output ---- */

static void test_text_delta(void **state)
{
	(void)state;
	expect_delta(DELTA("Hello"), "Hello", 5);
	expect_delta(DELTA(""), "", 0);
	expect_delta(DELTA("a\\nb\\\"c"), "a\nb\"c", 5);
	/* Multi-byte UTF-8, raw and escaped: the length is in bytes. */
	expect_delta(DELTA("h\xc3\xa9llo \xe2\x82\xac"), "h\xc3\xa9llo \xe2\x82\xac", 10);
	expect_delta(DELTA("\\u00e9\\u20ac\\ud83d\\ude00"), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
		     9);
}

/* A NUL inside a delta is part of the text: delta_len counts past it. */
static void test_text_delta_nul(void **state)
{
	(void)state;
	expect_delta(DELTA("a\\u0000b"), "a\0b", 3);
	expect_delta(DELTA("\\u0000"), "\0", 1);
	expect_delta(DELTA("x\\u0000\xc3\xa9"), "x\0\xc3\xa9", 4);
}

static void test_not_a_text_delta(void **state)
{
	(void)state;
	const char *lines[] = {
	    /* other delta kinds */
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{"
	    "\"type\":"
	    "\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{"
	    "\"type\":"
	    "\"thinking_delta\",\"thinking\":\"hm\",\"text\":\"x\"}}}",
	    /* text that is not a string, or no delta type */
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{"
	    "\"type\":"
	    "\"text_delta\",\"text\":5}}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{"
	    "\"text\":\"x\"}}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\"}}",
	    /* other events */
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_start\",\"message\":{}}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_start\",\"index\":0}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_delta\",\"delta\":{\"stop_"
	    "reason\":\"x\"}}}",
	    "{\"type\":\"stream_event\",\"event\":\"content_block_stop\"}",
	    "{\"type\":\"stream_event\"}",
	    /* a delta shape outside a stream_event */
	    "{\"type\":\"assistant\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{"
	    "\"type\":"
	    "\"text_delta\",\"text\":\"x\"}}}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		struct agent_line l;
		parse(&l, lines[i]);
		assert_int_eq_msg(l.kind, AL_OUTPUT, lines[i]);
		assert_nothing_extracted(&l, lines[i]);
		agent_line_free(&l);
	}
}

static void test_block_end(void **state)
{
	(void)state;
	const char *ends[] = {
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_stop\",\"index\":0}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_stop\"}}",
	};
	for (size_t i = 0; i < sizeof ends / sizeof *ends; i++) {
		struct agent_line l;
		parse(&l, ends[i]);
		assert_int_eq_msg(l.kind, AL_OUTPUT, ends[i]);
		assert_int_eq_msg(l.block_end, 1, ends[i]);
		assert_int_equal(l.is_delta, 0);
		assert_int_equal(l.is_result, 0);
		agent_line_free(&l);
	}
}

static void test_result(void **state)
{
	(void)state;
	struct agent_line l;
	parse(
	    &l,
	    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"Done.\","
	    "\"duration_ms\":12}");
	assert_int_eq_msg(l.kind, AL_OUTPUT, "kind");
	assert_int_equal(l.is_result, 1);
	assert_int_equal(l.is_error, 0);
	assert_string_equal(l.result, "Done.");
	assert_int_equal(l.is_delta, 0);
	assert_int_equal(l.block_end, 0);
	agent_line_free(&l);

	parse(&l, "{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":true}");
	assert_int_equal(l.is_result, 1);
	assert_int_equal(l.is_error, 1);
	assert_null(l.result);
	agent_line_free(&l);

	/* A NUL in the result text: still the turn's last line. */
	parse(&l, "{\"type\":\"result\",\"is_error\":false,\"result\":\"a\\u0000b\"}");
	assert_int_eq_msg(l.kind, AL_OUTPUT, "kind of a result with a NUL");
	assert_int_equal(l.is_result, 1);
	assert_string_equal(l.result, "a");
	agent_line_free(&l);

	/* Only a JSON true is an error. */
	parse(&l, "{\"type\":\"result\",\"is_error\":\"true\",\"result\":7}");
	assert_int_equal(l.is_result, 1);
	assert_int_equal(l.is_error, 0);
	assert_null(l.result);
	agent_line_free(&l);
	parse(&l, "{\"type\":\"result\",\"is_error\":1}");
	assert_int_equal(l.is_error, 0);
	agent_line_free(&l);
}

static void test_other_output(void **state)
{
	(void)state;
	const char *lines[] = {
	    "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"x\"}",
	    "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]"
	    "}}",
	    "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"content\":"
	    "\"a\\u0000b\"}]}}",
	    "{\"type\":\"control_request\",\"request_id\":\"r1\",\"request\":{\"subtype\":\"can_"
	    "use_tool\"}}",
	    "{\"type\":\"Result\",\"result\":\"x\"}",
	    "{\"type\":\"wsa\"}",
	    "{\"type\":\"pong \"}",
	    "{}",
	    "  {\"a\":1}\n",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		struct agent_line l;
		parse(&l, lines[i]);
		assert_int_eq_msg(l.kind, AL_OUTPUT, lines[i]);
		assert_true(l.o || l.skim);
		assert_nothing_extracted(&l, lines[i]);
		assert_null(l.request_id);
		assert_int_eq_msg(l.has_gen, 0, lines[i]);
		agent_line_free(&l);
	}
	/* A type that is not a string: output with no type. */
	struct agent_line l;
	parse(&l, "{\"type\":[\"result\"],\"result\":\"x\"}");
	assert_int_eq_msg(l.kind, AL_OUTPUT, "non-string type");
	assert_null(l.type);
	assert_nothing_extracted(&l, "non-string type");
	agent_line_free(&l);
}

static void test_not_an_object(void **state)
{
	(void)state;
	const char *lines[] = {
	    "",		" ",	     "[]", "[{\"type\":\"result\"}]", "\"result\"",
	    "42",	"null",	     "{",  "{\"type\":\"result\"",    "{\"type\":\"result\"} {}",
	    "not json", "{\"a\":1,}"};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		struct agent_line l;
		memset(&l, 0x5a, sizeof l); /* every field is filled whatever was there */
		parse(&l, lines[i]);
		assert_int_eq_msg(l.kind, AL_BAD, lines[i]);
		assert_null(l.o);
		assert_null(l.type);
		assert_nothing_extracted(&l, lines[i]);
		agent_line_free(&l);
	}
	/* The length given is the line. */
	struct agent_line l;
	agent_line_parse(&l, "{\"type\":\"pong\"}", 6);
	assert_int_eq_msg(l.kind, AL_BAD, "cut line");
	agent_line_free(&l);
}

/* ---- the skim (agent_line.c parse_skim): other output lines, no tree ---- */

/* The line takes the skim (want_skim 1) or jansson (0), and either way says
 * what jansson's tree says. */
static void expect_skim(const char *line, int want_skim)
{
	struct agent_line l;
	parse(&l, line);
	const char *why = agent_line_oracle(&l, line, strlen(line));
	if (why)
		fail_msg("'%s': %s differs from jansson's", line, why);
	if (l.skim != want_skim || (want_skim && l.o))
		fail_msg("'%s': expected %s", line, want_skim ? "the skim" : "jansson");
	agent_line_free(&l);
}

#define CC_IDS ",\"session_id\":\"6f1c2a5e\",\"parent_tool_use_id\":null,\"uuid\":\"0b5e7c1d\""

static void test_skim_takes(void **state)
{
	(void)state;
	const char *lines[] = {
	    /* the mini-agent's (tests/fixtures/mini-agent.c) */
	    "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"mini\",\"tools\":[],\"mcp_servers\":[]}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mini\","
	    "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"mini\",\"content\":[],\"stop_reason\":null,"
	    "\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}}",
	    "{\"type\":\"assistant\",\"message\":{\"id\":\"msg_mini\",\"type\":\"message\",\"role\":\"assistant\","
	    "\"model\":\"mini\",\"content\":[{\"type\":\"text\",\"text\":\"Echo: hi\"}],\"stop_reason\":\"end_turn\"},"
	    "\"session_id\":\"mini\"}",
	    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"Echo: hi\",\"session_id\":"
	    "\"mini\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}",
	    /* Claude Code's, with its ids, reals and escapes */
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
	    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}" CC_IDS "}",
	    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"duration_ms\":2345,\"num_turns\":1,"
	    "\"result\":\"line\\nnext \\\"q\\\" \\u00e9 \\ud83d\\ude00 \\\\ / \\/\",\"total_cost_usd\":0.0123,"
	    "\"usage\":{\"input_tokens\":3,\"cache_read_input_tokens\":0}" CC_IDS "}",
	    "{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":true}",
	    "{\"type\":\"result\",\"is_error\":\"true\",\"result\":7}",
	    "{\"is_error\":true,\"result\":\"\",\"type\":\"result\"}",
	    "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"content\":\"\\u00e9\\t\"}]}}",
	    /* the structural events, not in the fast path's exact layout */
	    "{ \"type\" : \"stream_event\" , \"event\" : { \"type\" : \"content_block_stop\" , \"index\" : 0 } }\r\n",
	    "{\"event\":{\"type\":\"message_stop\"},\"type\":\"stream_event\"}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_start\",\"index\":1,"
	    "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"Read\",\"input\":{}}}}",
	    "{\"type\":\"stream_event\",\"event\":[\"content_block_stop\"]}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":7}}",
	    /* numbers jansson surely takes; repeats of keys the skim does not read */
	    "{\"type\":\"x\",\"n\":[-0,0,0.5e-10,1E+99,123456789012345678,-123456789012345678,1.25,0e0]}",
	    "{\"type\":\"x\",\"a\":1,\"a\":2,\"m\":{\"type\":1,\"type\":2}}",
	    "{\"type\":\"x\",\"m\":{\"k\\u0065y\":1,\"\\\"\":true}}",
	    /* no type, or one that is not a string */
	    "{}",
	    "{\"type\":null}",
	    "{\"type\":[\"result\"],\"result\":\"x\"}",
	    "{\"type\":\"wsa\"}",
	    "{\"type\":\"pong \"}",
	    "{\"type\":\"control_request\",\"request_id\":\"r1\",\"request\":{\"subtype\":\"can_use_tool\"}}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
		expect_skim(lines[i], 1);
}

static void test_skim_declines(void **state)
{
	(void)state;
	char deep[400], *p = deep;
	p += sprintf(p, "{\"type\":\"x\",\"d\":");
	for (int i = 0; i < 70; i++)
		*p++ = '[';
	for (int i = 0; i < 70; i++)
		*p++ = ']';
	strcpy(p, "}");
	const char *lines[] = {
	    deep,
	    /* a key it reads, repeated: jansson keeps the last */
	    "{\"type\":\"system\",\"type\":\"result\",\"result\":\"x\"}",
	    "{\"type\":\"result\",\"result\":\"a\",\"result\":\"b\"}",
	    "{\"type\":\"result\",\"is_error\":false,\"is_error\":true}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_start\",\"type\":\"message_stop\"}}",
	    "{\"type\":\"stream_event\",\"event\":{},\"event\":{\"type\":\"message_stop\"}}",
	    /* escaped: a key where it reads keys, the type's value */
	    "{\"typ\\u0065\":\"result\",\"result\":\"x\"}",
	    "{\"type\":\"x\",\"k\\u0065y\":1}",
	    "{\"type\":\"stream_event\",\"event\":{\"typ\\u0065\":\"message_stop\"}}",
	    "{\"type\":\"resul\\u0074\",\"result\":\"x\"}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"message_sto\\u0070\"}}",
	    "{\"type\":\"this type is longer than thirty-one bytes\"}",
	    /* "seq": turn.c re-encodes the line from its tree */
	    "{\"type\":\"assistant\",\"seq\":1}",
	    /* strings the skim leaves to jansson */
	    "{\"type\":\"result\",\"result\":\"a\\u0000b\"}",
	    "{\"type\":\"x\",\"k\":\"\\ud800\"}",
	    /* numbers that could overflow strtoll or strtod */
	    "{\"type\":\"x\",\"n\":1234567890123456789}",
	    "{\"type\":\"x\",\"n\":1e100}",
	    "{\"type\":\"x\",\"n\":1e-100}",
	    /* the lines whose handlers read the tree; a delta not in the fast path's layout */
	    "{\"type\":\"wsa.started\",\"gen\":1}",
	    "{\"type\":\"control_response\",\"response\":{\"request_id\":\"r\"}}",
	    "{\"type\":\"pong\"}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\","
	    "\"text\":\"hi\"},\"index\":0}}",
	    "{\"type\":\"stream_event\",\"event\":{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
	    "\"input_json_delta\",\"partial_json\":\"{\"}}}",
	    /* not JSON, or not an object: jansson says AL_BAD */
	    "{\"a\":01}", "{\"a\":1.}", "{\"a\":tru}", "{\"a\":1,}", "{\"a\" 1}", "{\"a\":[1,]}", "{\"a\":-}",
	    "{\"a\":\"\x01\"}", "{\"a\":\"\xc3\"}", "{\"a\":1}x", "{\"a\":1} {}", "[{\"type\":\"result\"}]", "{\xc3\xa9}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
		expect_skim(lines[i], 0);
}

/* Random objects jansson writes (nested, escaped, with numbers), whole and
 * cut short, and each with one byte changed: whatever the skim takes, it
 * reads as jansson does. */
static json_t *random_value(uint64_t *x, int depth)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	static const char *words[] = {"type", "result", "is_error", "event", "seq", "message_stop", "stream_event",
				      "content_block_stop", "a\"b", "\xc3\xa9\xf0\x9f\x98\x80", "x\ny", "\\", ""};
	unsigned r = (unsigned)(*x >> 20) % (depth > 3 ? 6 : 8);
	switch (r) {
	case 0: return json_string(words[(*x >> 33) % (sizeof words / sizeof *words)]);
	case 1: return json_integer((json_int_t)(*x >> (1 + (*x >> 58) % 63)) * ((*x & 1) ? -1 : 1));
	case 2: return json_real((double)(*x >> 11) / (double)(1 + (*x >> 50)) * (*x & 2 ? 1e-30 : 1e20));
	case 3: return json_boolean(*x & 4);
	case 4: return json_null();
	case 5: return json_string("Echo: hi");
	case 6: {
		json_t *a = json_array();
		for (unsigned i = (unsigned)(*x >> 40) % 4; i > 0; i--)
			json_array_append_new(a, random_value(x, depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (unsigned i = (unsigned)(*x >> 40) % 5; i > 0; i--) {
			*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
			json_object_set_new(o, words[(*x >> 30) % 9], random_value(x, depth + 1));
		}
		return o;
	}
	}
}

static void test_skim_random(void **state)
{
	(void)state;
	uint64_t x = 0x9e3779b97f4a7c15u;
	static const char *types[] = {"result", "stream_event", "assistant", "system", "user", "wsa.exit"};
	int skimmed = 0;
	for (int round = 0; round < 4000; round++) {
		json_t *o = random_value(&x, 1);
		if (!json_is_object(o)) {
			json_decref(o);
			o = json_object();
		}
		json_object_set_new(o, "type", json_string(types[round % 6]));
		if (round % 3 == 0)
			json_object_set_new(o, "event", random_value(&x, 1));
		if (round % 4 == 0)
			json_object_set_new(o, "result", random_value(&x, 3));
		if (round % 5 == 0)
			json_object_set_new(o, "is_error", json_boolean(round % 2));
		json_object_del(o, "seq");
		char *line = json_dumps(o, (round % 2 ? JSON_COMPACT : JSON_INDENT(1)) |
					       (round % 7 ? 0 : JSON_ENSURE_ASCII) | JSON_REAL_PRECISION(round % 18));
		size_t n = strlen(line);
		struct agent_line l;
		for (int cut = 0; cut < 3; cut++) {
			char *v = strdup(line);
			size_t vn = cut == 1 ? (size_t)(x % (n + 1)) : n;
			if (cut == 2 && n)
				v[(x >> 7) % n] = (char)(x >> 17);
			agent_line_parse(&l, v, vn);
			skimmed += l.skim;
			const char *why = agent_line_oracle(&l, v, vn);
			if (why)
				fail_msg("'%.*s': %s differs from jansson's", (int)vn, v, why);
			agent_line_free(&l);
			free(v);
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		}
		free(line);
		json_decref(o);
	}
	/* Most of what jansson writes is the skim's (all but wsa.*, seq, deltas, NULs...). */
	if (skimmed < 4000)
		fail_msg("only %d of 12000 lines took the skim", skimmed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wsa_events),	     cmocka_unit_test(test_wsa_gen),
	    cmocka_unit_test(test_control_response), cmocka_unit_test(test_pong),
	    cmocka_unit_test(test_text_delta),	     cmocka_unit_test(test_text_delta_nul),
	    cmocka_unit_test(test_not_a_text_delta), cmocka_unit_test(test_block_end),
	    cmocka_unit_test(test_result),	     cmocka_unit_test(test_other_output),
	    cmocka_unit_test(test_not_an_object),	     cmocka_unit_test(test_fast_path),
	    cmocka_unit_test(test_fast_structural),
	    cmocka_unit_test(test_fast_path_random), cmocka_unit_test(test_fast_path_lazy),
	    cmocka_unit_test(test_skim_takes),	     cmocka_unit_test(test_skim_declines),
	    cmocka_unit_test(test_skim_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
