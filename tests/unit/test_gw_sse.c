/* Unit tests: the gateway's response parser (gw_sse.h) — usage, model and
 * error from SSE streams split at every byte, CRLF and LF line ends, lines
 * over the cap, error events, streams without usage, and JSON bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_sse.h"
#include "unit_util.h"

/* A stream as the provider sends it: the usage of message_start, a text
 * delta, then message_delta's output count. */
static const char STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"claude-test-1\","
    "\"usage\":{\"input_tokens\":11,\"cache_read_input_tokens\":7,"
    "\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
    "\"usage\":{\"output_tokens\":42}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

/* s with every "\n" turned into "\r\n" (the caller frees it). */
static char *crlf(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(2 * n + 1);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			out[o++] = '\r';
		out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

static void feed_str(struct gw_sse *p, const char *s)
{
	gw_sse_feed(p, s, strlen(s));
}

/* Feed s in pieces of the given sizes (cycled), then finish. */
static void run(struct gw_sse *p, int sse, const char *s, size_t n, const size_t *cuts,
		size_t ncuts, int status)
{
	gw_sse_init(p, sse);
	size_t off = 0, k = 0;
	while (off < n) {
		size_t step = ncuts ? cuts[k++ % ncuts] : n;
		if (step > n - off)
			step = n - off;
		gw_sse_feed(p, s + off, step);
		off += step;
	}
	gw_sse_finish(p, status);
}

static void assert_stream_usage(const struct gw_sse *p, const char *what)
{
	assert_int_eq_msg(p->usage.input, 11, what);
	assert_int_eq_msg(p->usage.output, 42, what);
	assert_int_eq_msg(p->usage.cache_read, 7, what);
	assert_int_eq_msg(p->usage.cache_creation, 5, what);
	assert_int_eq_msg(p->saw_stop, 1, what);
	if (strcmp(p->model, "claude-test-1"))
		fail_msg("%s: model '%s'", what, p->model);
	if (p->error[0])
		fail_msg("%s: unexpected error '%s'", what, p->error);
}

/* ---- tests ---- */

static void test_whole_stream(void **state)
{
	(void)state;
	struct gw_sse p;
	run(&p, 1, STREAM, strlen(STREAM), NULL, 0, 200);
	assert_stream_usage(&p, "one chunk");
	gw_sse_free(&p);
}

/* Two pieces, split at every byte; the same with CRLF line ends. */
static void test_split_every_byte(void **state)
{
	(void)state;
	char *cr = crlf(STREAM);
	const char *variants[] = {STREAM, cr};
	for (int v = 0; v < 2; v++) {
		const char *s = variants[v];
		size_t n = strlen(s);
		for (size_t cut = 0; cut <= n; cut++) {
			struct gw_sse p;
			size_t cuts[2] = {cut, n};
			run(&p, 1, s, n, cut ? cuts : cuts + 1, 1 + (cut != 0), 200);
			char what[64];
			snprintf(what, sizeof what, "%s split at %zu", v ? "CRLF" : "LF", cut);
			assert_stream_usage(&p, what);
			gw_sse_free(&p);
		}
	}
	free(cr);
}

/* One byte at a time, and in runs of small odd sizes. */
static void test_small_pieces(void **state)
{
	(void)state;
	static const size_t sizes[][3] = {{1, 1, 1}, {2, 3, 5}, {7, 1, 13}, {64, 3, 1}};
	char *cr = crlf(STREAM);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct gw_sse p;
		run(&p, 1, STREAM, strlen(STREAM), sizes[i], 3, 200);
		assert_stream_usage(&p, "LF pieces");
		gw_sse_free(&p);
		run(&p, 1, cr, strlen(cr), sizes[i], 3, 200);
		assert_stream_usage(&p, "CRLF pieces");
		gw_sse_free(&p);
	}
	free(cr);
}

/* A data: line cut in the middle of its JSON, the rest later. */
static void test_data_split_mid_json(void **state)
{
	(void)state;
	struct gw_sse p;
	gw_sse_init(&p, 1);
	feed_str(&p, "data: {\"type\":\"message_del");
	feed_str(&p, "ta\",\"usage\":{\"output_");
	assert_int_eq_msg(p.usage.output, 0, "nothing before the newline");
	feed_str(&p, "tokens\":9}}\n");
	assert_int_eq_msg(p.usage.output, 9, "output after the newline");
	gw_sse_finish(&p, 200);
	gw_sse_free(&p);
}

/* The last line without a newline counts at the end. */
static void test_last_line_unterminated(void **state)
{
	(void)state;
	static const char s[] =
	    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}";
	struct gw_sse p;
	gw_sse_init(&p, 1);
	gw_sse_feed(&p, s, sizeof s - 1);
	assert_int_eq_msg(p.usage.output, 0, "not yet");
	gw_sse_finish(&p, 200);
	assert_int_eq_msg(p.usage.output, 3, "at finish");
	gw_sse_free(&p);
}

/* A line over the cap is skipped whole; the lines after it still count. */
static void test_line_over_cap(void **state)
{
	(void)state;
	size_t big = GW_SSE_CAP_LINE + 100;
	char *l = malloc(big);
	assert_non_null(l);
	static const char head[] =
	    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":77},\"pad\":\"";
	memcpy(l, head, sizeof head - 1);
	memset(l + sizeof head - 1, 'x', big - (sizeof head - 1));
	struct gw_sse p;
	gw_sse_init(&p, 1);
	for (size_t off = 0; off < big; off += 4096)
		gw_sse_feed(&p, l + off, big - off < 4096 ? big - off : 4096);
	gw_sse_feed(&p, "\"}\n", 3);
	assert_int_eq_msg(p.usage.output, 0, "the long line is skipped");
	assert_true(p.line_len <= GW_SSE_CAP_LINE);
	static const char next[] =
	    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n";
	gw_sse_feed(&p, next, sizeof next - 1);
	assert_int_eq_msg(p.usage.output, 5, "the line after it");
	/* Over the cap and unterminated at the end: skipped too. */
	gw_sse_feed(&p, l, big);
	gw_sse_finish(&p, 200);
	assert_int_eq_msg(p.usage.output, 5, "unterminated long line");
	gw_sse_free(&p);
	free(l);
}

static void test_error_event(void **state)
{
	(void)state;
	static const char s[] =
	    "event: message_start\r\n"
	    "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\","
	    "\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\r\n\r\n"
	    "event: error\r\n"
	    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}\r\n\r\n";
	for (size_t cut = 1; cut < sizeof s - 1; cut += 7) {
		struct gw_sse p;
		size_t cuts[1] = {cut};
		run(&p, 1, s, sizeof s - 1, cuts, 1, 200);
		if (strcmp(p.error, "Overloaded"))
			fail_msg("split %zu: error '%s'", cut, p.error);
		assert_int_eq_msg(p.saw_stop, 0, "no message_stop");
		assert_int_eq_msg(p.usage.input, 4, "input before the error");
		gw_sse_free(&p);
	}
}

/* Events without usage, and lines that only look like events. */
static void test_no_usage(void **state)
{
	(void)state;
	static const char s[] =
	    ": a comment\n"
	    "event: message_start\n"
	    "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n"
	    "data: not json, but mentions message_delta\n"
	    "data:{\"type\":\"message_delta\",\"usage\":null}\n"
	    "id: message_delta\n"
	    "data: [\"message_start\"]\n"
	    "data: {\"type\":\"message_stop\"}\n";
	struct gw_sse p;
	run(&p, 1, s, sizeof s - 1, NULL, 0, 200);
	assert_int_eq_msg(p.usage.input, 0, "input");
	assert_int_eq_msg(p.usage.output, 0, "output");
	assert_int_eq_msg(p.usage.cache_read, 0, "cache_read");
	assert_int_eq_msg(p.usage.cache_creation, 0, "cache_creation");
	assert_int_eq_msg(p.saw_stop, 1, "stop");
	assert_string_equal(p.model, "m");
	assert_string_equal(p.error, "");
	gw_sse_free(&p);

	/* Nothing at all. */
	run(&p, 1, "", 0, NULL, 0, 200);
	assert_int_eq_msg(p.saw_stop, 0, "empty stream");
	assert_string_equal(p.model, "");
	gw_sse_free(&p);
}

/* message_delta may repeat input and cache counts (cumulative). */
static void test_delta_cumulative(void **state)
{
	(void)state;
	static const char s[] =
	    "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
	    "\"output_tokens\":1}}}\n"
	    "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":12,"
	    "\"cache_read_input_tokens\":3,\"output_tokens\":20}}\n"
	    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":25}}\n";
	struct gw_sse p;
	run(&p, 1, s, sizeof s - 1, NULL, 0, 200);
	assert_int_eq_msg(p.usage.input, 12, "input repeated by message_delta");
	assert_int_eq_msg(p.usage.cache_read, 3, "cache_read");
	assert_int_eq_msg(p.usage.output, 25, "output: the last count");
	gw_sse_free(&p);
}

/* A non-streaming response: one JSON body, in any split. */
static void test_json_body(void **state)
{
	(void)state;
	static const char s[] = "{\"id\":\"m2\",\"type\":\"message\",\"model\":\"claude-json-2\","
				"\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":9,"
				"\"cache_read_input_tokens\":2}}";
	for (size_t cut = 1; cut <= sizeof s - 1; cut++) {
		struct gw_sse p;
		size_t cuts[1] = {cut};
		run(&p, 0, s, sizeof s - 1, cuts, 1, 200);
		assert_int_eq_msg(p.usage.input, 3, "json input");
		assert_int_eq_msg(p.usage.output, 9, "json output");
		assert_int_eq_msg(p.usage.cache_read, 2, "json cache_read");
		assert_string_equal(p.model, "claude-json-2");
		assert_string_equal(p.error, "");
		gw_sse_free(&p);
	}
}

/* An error body: its message counts only for an error status. */
static void test_json_error(void **state)
{
	(void)state;
	static const char s[] = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
				"\"message\":\"slow down please\"}}";
	struct gw_sse p;
	run(&p, 0, s, sizeof s - 1, NULL, 0, 429);
	assert_string_equal(p.error, "slow down please");
	assert_string_equal(p.model, "");
	gw_sse_free(&p);
	run(&p, 0, s, sizeof s - 1, NULL, 0, 200);
	assert_string_equal(p.error, "");
	gw_sse_free(&p);
	/* Not JSON: nothing, no crash. */
	run(&p, 0, "<html>bad gateway</html>", 24, NULL, 0, 502);
	assert_string_equal(p.error, "");
	gw_sse_free(&p);
}

/* A JSON body over the cap is not decoded. */
static void test_json_over_cap(void **state)
{
	(void)state;
	static const char head[] = "{\"model\":\"big\",\"usage\":{\"output_tokens\":1},\"pad\":\"";
	size_t big = GW_SSE_CAP_JSON + 10;
	char *b = malloc(big);
	assert_non_null(b);
	memcpy(b, head, sizeof head - 1);
	memset(b + sizeof head - 1, 'x', big - (sizeof head - 1) - 2);
	memcpy(b + big - 2, "\"}", 2);
	struct gw_sse p;
	size_t cuts[1] = {65536};
	run(&p, 0, b, big, cuts, 1, 200);
	assert_int_eq_msg(p.usage.output, 0, "over the cap");
	assert_string_equal(p.model, "");
	assert_true(p.jlen <= GW_SSE_CAP_JSON);
	gw_sse_free(&p);
	free(b);
}

/* The request body: "stream":true, and its model when the response had none. */
static void test_request(void **state)
{
	(void)state;
	static const char req[] = "{\"model\":\"claude-req-0\",\"stream\":true,\"messages\":[]}";
	struct gw_sse p;
	run(&p, 0, "", 0, NULL, 0, 500);
	gw_sse_request(&p, req, sizeof req - 1);
	assert_int_eq_msg(p.req_stream, 1, "stream requested");
	assert_string_equal(p.model, "claude-req-0");
	gw_sse_free(&p);

	run(&p, 1, STREAM, strlen(STREAM), NULL, 0, 200);
	gw_sse_request(&p, req, sizeof req - 1);
	assert_string_equal(p.model, "claude-test-1"); /* the response's wins */
	gw_sse_free(&p);

	gw_sse_init(&p, 0);
	gw_sse_request(&p, NULL, 0);
	assert_int_eq_msg(p.req_stream, 0, "no body");
	assert_string_equal(p.model, "");
	gw_sse_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole_stream),
	    cmocka_unit_test(test_split_every_byte),
	    cmocka_unit_test(test_small_pieces),
	    cmocka_unit_test(test_data_split_mid_json),
	    cmocka_unit_test(test_last_line_unterminated),
	    cmocka_unit_test(test_line_over_cap),
	    cmocka_unit_test(test_error_event),
	    cmocka_unit_test(test_no_usage),
	    cmocka_unit_test(test_delta_cumulative),
	    cmocka_unit_test(test_json_body),
	    cmocka_unit_test(test_json_error),
	    cmocka_unit_test(test_json_over_cap),
	    cmocka_unit_test(test_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
