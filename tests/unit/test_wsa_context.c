/* test_wsa_context.c — the ws-agent context file parser and reader, and the
 * line splitter the agent's output goes through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "wsa.h"

/* Expected against actual, with the parser's message on failure. */
#define assert_parse_fails(json, needle)                                                     \
	do {                                                                                 \
		struct wsa_context c_ = {0};                                                 \
		cx_err e_ = CX_ERR_INIT;                                                     \
		const char *j_ = (json);                                                     \
		int rc_ = wsa_context_parse(j_, strlen(j_), &c_, &e_);                       \
		if (rc_ == 0)                                                                \
			fail_msg("expected failure for %s, parse succeeded", j_);            \
		if (!strstr(e_.msg, (needle)))                                               \
			fail_msg("for %s\n  expected message containing: %s\n  actual: %s",  \
				 j_, (needle), e_.msg);                                      \
		assert_null(c_.argv);                                                        \
	} while (0)

static void test_valid(void **state)
{
	(void)state;
	const char *j = "{\"argv\":[\"/usr/bin/claude\",\"-p\",\"--output-format\",\"stream-json\"],"
			"\"env\":{\"HOME\":\"/home/u\",\"EMPTY\":\"\",\"UNI\":\"h\\u00e9\"},"
			"\"cwd\":\"/workspace\"}";
	struct wsa_context c = {0};
	cx_err err = CX_ERR_INIT;
	if (wsa_context_parse(j, strlen(j), &c, &err) < 0)
		fail_msg("parse failed: %s", err.msg);
	assert_string_equal(c.argv[0], "/usr/bin/claude");
	assert_string_equal(c.argv[3], "stream-json");
	assert_null(c.argv[4]);
	assert_string_equal(c.envp[0], "HOME=/home/u");
	assert_string_equal(c.envp[1], "EMPTY=");
	assert_string_equal(c.envp[2], "UNI=h\xc3\xa9");
	assert_null(c.envp[3]);
	assert_string_equal(c.cwd, "/workspace");
	wsa_context_free(&c);
	wsa_context_free(&c); /* idempotent */
}

static void test_defaults(void **state)
{
	(void)state;
	const char *j = "{\"argv\":[\"/bin/true\"]}";
	struct wsa_context c = {0};
	cx_err err = CX_ERR_INIT;
	assert_int_equal(wsa_context_parse(j, strlen(j), &c, &err), 0);
	assert_null(c.envp[0]); /* no env given: an empty environment, not ours */
	assert_string_equal(c.cwd, "/");
	wsa_context_free(&c);
}

static void test_missing_argv(void **state)
{
	(void)state;
	assert_parse_fails("{\"env\":{},\"cwd\":\"/\"}", "\"argv\"");
	assert_parse_fails("{\"argv\":[],\"cwd\":\"/\"}", "non-empty");
	assert_parse_fails("{\"argv\":\"/bin/sh\"}", "\"argv\"");
	assert_parse_fails("{\"argv\":[\"/bin/sh\", 3]}", "\"argv\"[1]");
	assert_parse_fails("{\"argv\":[\"/bin/sh\", \"a\\u0000b\"]}", "NUL");
}

static void test_argv0_not_absolute(void **state)
{
	(void)state;
	assert_parse_fails("{\"argv\":[\"claude\"]}", "absolute");
	assert_parse_fails("{\"argv\":[\"./claude\"]}", "absolute");
	assert_parse_fails("{\"argv\":[\"\"]}", "absolute");
}

static void test_bad_env(void **state)
{
	(void)state;
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"N\":1}}", "\"env\".N");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"N\":null}}", "\"env\".N");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"N\":[\"x\"]}}", "\"env\".N");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"A=B\":\"x\"}}", "variable name");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"\":\"x\"}}", "variable name");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":[\"A=B\"]}", "\"env\" must be an object");
	assert_parse_fails("{\"argv\":[\"/a\"],\"env\":{\"K\":\"a\\u0000b\"}}", "NUL");
}

static void test_bad_shape(void **state)
{
	(void)state;
	assert_parse_fails("", "not JSON");
	assert_parse_fails("{\"argv\":[\"/a\"]", "not JSON");
	assert_parse_fails("[\"/a\"]", "JSON object");
	assert_parse_fails("{\"argv\":[\"/a\"],\"cwd\":\"rel\"}", "\"cwd\"");
	assert_parse_fails("{\"argv\":[\"/a\"],\"cwd\":7}", "\"cwd\"");
	assert_parse_fails("{\"argv\":[\"/a\"],\"argv\":[\"/b\"]}", "duplicate");
}

static void test_oversized(void **state)
{
	(void)state;
	size_t n = CX_CAP_CONTEXT_FILE + 100;
	char *big = malloc(n + 1);
	assert_non_null(big);
	/* Valid JSON, only too big: the cap is checked before parsing. */
	memset(big, ' ', n);
	memcpy(big, "{\"argv\":[\"/a\"]}", 15);
	big[n] = '\0';
	struct wsa_context c = {0};
	cx_err err = CX_ERR_INIT;
	assert_int_equal(wsa_context_parse(big, n, &c, &err), -1);
	assert_int_equal(err.code, EFBIG);
	assert_null(c.argv);

	/* And through the file reader, which must still delete it. */
	const char *tmp = getenv("CORTEX_TEST_TMP");
	char path[512];
	snprintf(path, sizeof path, "%s/wsa-ctx-big-%d.json", tmp ? tmp : "/tmp", (int)getpid());
	mkdir(tmp ? tmp : "/tmp", 0755);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(big, 1, n, f), n);
	fclose(f);
	free(big);
	cx_err_clear(&err);
	assert_int_equal(wsa_context_take(path, &c, &err), -1);
	assert_int_equal(err.code, EFBIG);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_take(void **state)
{
	(void)state;
	const char *tmp = getenv("CORTEX_TEST_TMP");
	char path[512];
	snprintf(path, sizeof path, "%s/wsa-ctx-%d.json", tmp ? tmp : "/tmp", (int)getpid());
	mkdir(tmp ? tmp : "/tmp", 0755);
	struct wsa_context c = {0};
	cx_err err = CX_ERR_INIT;

	unlink(path);
	assert_int_equal(wsa_context_take(path, &c, &err), CX_NOTFOUND);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"argv\":[\"/bin/echo\",\"hi\"],\"env\":{\"A\":\"1\"},\"cwd\":\"/tmp\"}", f);
	fclose(f);
	if (wsa_context_take(path, &c, &err) < 0)
		fail_msg("take failed: %s", err.msg);
	assert_string_equal(c.argv[1], "hi");
	assert_int_equal(access(path, F_OK), -1); /* read once, deleted at once */
	wsa_context_free(&c);

	/* Not a regular file: refused (and a FIFO must not block). */
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(wsa_context_take(path, &c, &err), -1);
	assert_non_null(strstr(err.msg, "not a regular file"));
	unlink(path);
}

/* ---- line splitter ---- */

struct collected {
	char lines[16][64];
	bool too_long[16];
	int n;
};

static int collect(void *arg, const char *line, size_t len, bool too_long)
{
	struct collected *c = arg;
	assert_true(c->n < 16);
	snprintf(c->lines[c->n], sizeof c->lines[c->n], "%.*s", (int)len, line ? line : "");
	c->too_long[c->n++] = too_long;
	return 0;
}

static void test_lines_drop(void **state)
{
	(void)state;
	struct cx_lines l;
	struct collected c = {0};
	cx_err err = CX_ERR_INIT;
	cx_lines_init(&l, 8, false);
	/* "ab" split across feeds, an over-long line spanning feeds, a line at the cap. */
	const char *feeds[] = {"a", "b\n\n012345", "6789xyz", "\n12345678\ntail"};
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(cx_lines_feed(&l, feeds[i], strlen(feeds[i]), collect, &c, &err), 0);
	assert_int_equal(cx_lines_finish(&l, collect, &c), 0);
	assert_int_equal(c.n, 5);
	assert_string_equal(c.lines[0], "ab");
	assert_string_equal(c.lines[1], ""); /* empty lines reach the callback; it skips them */
	assert_true(c.too_long[2]);
	assert_string_equal(c.lines[3], "12345678");
	assert_false(c.too_long[3]);
	assert_string_equal(c.lines[4], "tail");
	cx_lines_free(&l);
}

static void test_lines_split(void **state)
{
	(void)state;
	struct cx_lines l;
	struct collected c = {0};
	cx_err err = CX_ERR_INIT;
	cx_lines_init(&l, 4, true);
	const char *in = "abcdefghij\nxy\n";
	assert_int_equal(cx_lines_feed(&l, in, strlen(in), collect, &c, &err), 0);
	assert_int_equal(c.n, 4);
	assert_string_equal(c.lines[0], "abcd");
	assert_string_equal(c.lines[1], "efgh");
	assert_string_equal(c.lines[2], "ij");
	assert_string_equal(c.lines[3], "xy");
	cx_lines_free(&l);
}

static void test_utf8(void **state)
{
	(void)state;
	assert_true(cx_utf8_valid("h\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80", 12));
	assert_false(cx_utf8_valid("\xff", 1));
	assert_false(cx_utf8_valid("\xc0\x80", 2));     /* overlong NUL */
	assert_false(cx_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
	assert_false(cx_utf8_valid("\xe2\x9c", 2));     /* truncated */
	/* Every length and every position of a bad or a multi-byte sequence
	 * around the 8- and 16-byte ASCII blocks. */
	char buf[64];
	for (size_t len = 0; len <= 48; len++) {
		memset(buf, 'a', sizeof buf);
		assert_true(cx_utf8_valid(buf, len));
		for (size_t at = 0; at < len; at++) {
			memset(buf, 'a', sizeof buf);
			buf[at] = (char)0xff;
			if (cx_utf8_valid(buf, len))
				fail_msg("a 0xff at %zu of %zu passed", at, len);
			if (at + 2 <= len) {
				memcpy(buf + at, "\xc3\xa9", 2);
				if (!cx_utf8_valid(buf, len))
					fail_msg("an \\u00e9 at %zu of %zu failed", at, len);
			}
			if (at + 1 == len) {
				buf[at] = (char)0xc3; /* cut at the end */
				if (cx_utf8_valid(buf, len))
					fail_msg("a cut sequence at %zu of %zu passed", at, len);
			}
		}
	}
	size_t n;
	char *s = cx_utf8_sanitize("a\xff" "b", 3, &n);
	assert_string_equal(s, "a\xef\xbf\xbd" "b");
	assert_int_equal(n, 5);
	free(s);
}

/* Agent output must never pass for ws-agent's own events. */
static void test_line_spoofs_event(void **state)
{
	(void)state;
	const char *spoof[] = {"{\"type\":\"wsa.exit\",\"gen\":1}", " {\"gen\":1, \"type\" : \"wsa.started\"}",
			       "{\"type\":\"wsa.x\"", "[\"wsa.exit\"]",
			       "{\"a\":\"\\\"\\\"\\\"\",\"type\":\"wsa.y\"}", /* quotes before it */
			       "{\"type\":\"wsa.",                                    /* at the very end */
			       "{\"type\":\"\\u0077sa.exit\",\"gen\":1}",         /* spelt with escapes */
			       "{\"\\u0074ype\":\"ws\\u0061.started\"}"};
	const char *fine2[] = {"{\"type\":\"x\",\"t\":\"wsa\"}", "{\"type\":\"x\",\"t\":\"\\\"wsa\"}", "\"wsa"};
	for (size_t i = 0; i < sizeof fine2 / sizeof *fine2; i++)
		if (cx_line_spoofs_event(fine2[i], strlen(fine2[i])))
			fail_msg("refused: %s", fine2[i]);
	const char *fine[] = {"{\"type\":\"stream_event\",\"text\":\"wsa\"}", "{\"type\":\"result\",\"result\":\"the \\\"wsa.exit\\\" event\"}",
			      "{}", "not json at all", "a \\u path, not JSON",
			      "{\"type\":\"x\",\"t\":\"\\u00e9 \\\\u\"}"};
	for (size_t i = 0; i < sizeof spoof / sizeof *spoof; i++)
		if (!cx_line_spoofs_event(spoof[i], strlen(spoof[i])))
			fail_msg("not caught: %s", spoof[i]);
	for (size_t i = 0; i < sizeof fine / sizeof *fine; i++)
		if (cx_line_spoofs_event(fine[i], strlen(fine[i])))
			fail_msg("refused: %s", fine[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_missing_argv),
		cmocka_unit_test(test_argv0_not_absolute),
		cmocka_unit_test(test_bad_env),
		cmocka_unit_test(test_bad_shape),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_take),
		cmocka_unit_test(test_line_spoofs_event),
	    cmocka_unit_test(test_lines_drop),
		cmocka_unit_test(test_lines_split),
		cmocka_unit_test(test_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
