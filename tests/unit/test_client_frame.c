/* Unit tests: client_frame_parse — every frame type a client may send, and
 * every way a frame is refused, each with its cortex.error code and a
 * message for the client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "client_frame.h"
#include "unit_util.h"

#define CAP 16 /* message text cap for these tests, in bytes */

/* ---- helpers ---- */

static void parse_ok(const char *data, struct client_frame *out)
{
	const char *code = NULL;
	char msg[300] = "";
	int rc = client_frame_parse(data, strlen(data), CAP, out, &code, msg, sizeof msg);
	if (rc != 0)
		fail_msg("'%s': expected 0, got %d (%s: %s)", data, rc, code ? code : "?", msg);
}

/* data (len bytes) is refused with want_code; returns the message. */
static const char *parse_bad_n(const char *data, size_t len, const char *want_code)
{
	static char msg[300];
	const char *code = NULL;
	struct client_frame f;
	msg[0] = '\0';
	int rc = client_frame_parse(data, len, CAP, &f, &code, msg, sizeof msg);
	if (rc != -1)
		fail_msg("'%.*s': expected -1, got %d", (int)len, data, rc);
	if (!code || strcmp(code, want_code))
		fail_msg("'%.*s': expected code %s, got %s", (int)len, data, want_code,
			 code ? code : "(null)");
	if (!msg[0])
		fail_msg("'%.*s': expected a message for the client, got none", (int)len, data);
	assert_null(f.text); /* nothing to free on failure */
	client_frame_free(&f);
	return msg;
}

static const char *parse_bad(const char *data, const char *want_code)
{
	return parse_bad_n(data, strlen(data), want_code);
}

/* ---- the frame types ---- */

static void test_message(void **state)
{
	(void)state;
	struct client_frame f;
	parse_ok("{\"type\":\"message\",\"text\":\"hello\"}", &f);
	assert_int_eq_msg(f.type, CF_MESSAGE, "type");
	assert_string_equal(f.text, "hello");
	client_frame_free(&f);
	assert_null(f.text);
	client_frame_free(&f); /* twice is fine */

	/* Members it does not know are ignored. */
	parse_ok("{\"text\":\"h\\u00e9\",\"extra\":[1],\"type\":\"message\"}", &f);
	assert_string_equal(f.text, "h\xc3\xa9");
	client_frame_free(&f);
}

static void test_message_at_cap(void **state)
{
	(void)state;
	struct client_frame f;
	/* The cap is in bytes: 16 bytes of text, 8 of them two-byte characters. */
	parse_ok("{\"type\":\"message\",\"text\":\"0123456789abcdef\"}", &f);
	assert_int_eq_msg(strlen(f.text), CAP, "text length at the cap");
	client_frame_free(&f);
	parse_ok("{\"type\":\"message\",\"text\":"
		 "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
		 &f);
	assert_int_eq_msg(strlen(f.text), CAP, "multi-byte text length at the cap");
	client_frame_free(&f);
}

static void test_cancel(void **state)
{
	(void)state;
	struct client_frame f;
	parse_ok("{\"type\":\"cancel\"}", &f);
	assert_int_eq_msg(f.type, CF_CANCEL, "type");
	assert_null(f.text);
	client_frame_free(&f);
	parse_ok(" {\"type\":\"cancel\",\"turn\":3}\n", &f);
	assert_int_eq_msg(f.type, CF_CANCEL, "type with blanks and extra members");
	client_frame_free(&f);
}

static void test_exec_frames(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		enum cf_type type;
	} ok[] = {
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"]}", CF_EXEC},
	    {"{\"type\":\"stdin\",\"id\":\"a\",\"data\":\"x\"}", CF_STDIN},
	    {"{\"type\":\"resize\",\"id\":\"a\",\"cols\":1,\"rows\":1}", CF_RESIZE},
	    {"{\"type\":\"exec_cancel\",\"id\":\"a\"}", CF_EXEC_CANCEL},
	};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		struct client_frame f;
		parse_ok(ok[i].json, &f);
		assert_int_eq_msg(f.type, ok[i].type, ok[i].json);
		assert_non_null(f.obj); /* the members are exec.c's to check */
		assert_string_equal(json_string_value(json_object_get(f.obj, "id")), "a");
		client_frame_free(&f);
		assert_null(f.obj);
	}
	/* The id: a string of 1..64 bytes without NUL. */
	parse_bad("{\"type\":\"exec\",\"cmd\":[\"ls\"]}", "bad_frame");
	parse_bad("{\"type\":\"stdin\",\"id\":\"\"}", "bad_frame");
	parse_bad("{\"type\":\"resize\",\"id\":7}", "bad_frame");
	parse_bad("{\"type\":\"exec_cancel\",\"id\":\"0123456789012345678901234567890123456789012345678901234567890123x\"}",
		  "bad_frame");
}

static void test_resume(void **state)
{
	(void)state;
	struct client_frame f;
	parse_ok("{\"type\":\"resume\",\"after_seq\":0}", &f);
	assert_int_eq_msg(f.type, CF_RESUME, "type");
	assert_int_eq_msg(f.after_seq, 0, "after_seq");
	client_frame_free(&f);
	parse_ok("{\"type\":\"resume\",\"after_seq\":41}", &f);
	assert_int_eq_msg(f.after_seq, 41, "after_seq");
	client_frame_free(&f);
	/* The largest integer JSON gives us is accepted (it just replays nothing). */
	parse_ok("{\"type\":\"resume\",\"after_seq\":9223372036854775807}", &f);
	if (f.after_seq != (uint64_t)INT64_MAX)
		fail_msg("after_seq: expected %lld, got %llu", (long long)INT64_MAX,
			 (unsigned long long)f.after_seq);
	client_frame_free(&f);
}

/* ---- refused frames ---- */

static void test_bad_json(void **state)
{
	(void)state;
	const char *bad[] = {"",
			     "{",
			     "{\"type\":\"message\"",
			     "not json",
			     "{\"type\":'cancel'}",
			     "{\"type\":\"cancel\"} {}",
			     "{\"type\":\"cancel\",}"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		parse_bad(bad[i], "bad_frame");
	/* The length given is the frame: bytes past it are not read. */
	parse_bad_n("{\"type\":\"cancel\"}", 5, "bad_frame");
	/* Raw bytes that are not UTF-8. */
	parse_bad("{\"type\":\"message\",\"text\":\"\xff\xfe\"}", "bad_frame");
}

static void test_not_an_object(void **state)
{
	(void)state;
	/* An array parses, and is told it needs a "type". */
	const char *arrays[] = {"[]", "[{\"type\":\"cancel\"}]"};
	for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
		const char *m = parse_bad(arrays[i], "bad_frame");
		if (!strstr(m, "type"))
			fail_msg("'%s': expected a message naming \"type\", got '%s'", arrays[i],
				 m);
	}
	/* A bare scalar is not a JSON text the parser accepts. */
	const char *scalars[] = {"\"cancel\"", "42", "null", "true"};
	for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++)
		parse_bad(scalars[i], "bad_frame");
}

static void test_type_missing_or_not_string(void **state)
{
	(void)state;
	const char *bad[] = {"{}",
			     "{\"text\":\"hi\"}",
			     "{\"type\":null}",
			     "{\"type\":1}",
			     "{\"type\":[\"message\"]}",
			     "{\"type\":{\"name\":\"message\"}}",
			     "{\"Type\":\"cancel\"}"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		parse_bad(bad[i], "bad_frame");
}

static void test_unknown_type(void **state)
{
	(void)state;
	const char *m = parse_bad("{\"type\":\"shutdown\"}", "bad_frame");
	if (!strstr(m, "shutdown"))
		fail_msg("expected the message to name the type, got '%s'", m);
	parse_bad("{\"type\":\"\"}", "bad_frame");
	parse_bad("{\"type\":\"Message\",\"text\":\"hi\"}", "bad_frame");
	parse_bad("{\"type\":\"message \",\"text\":\"hi\"}", "bad_frame");
	/* A long type is cut short in the message, which stays in its buffer. */
	char big[600];
	memset(big, 'x', sizeof big);
	int n = snprintf(big, sizeof big, "{\"type\":\"");
	memset(big + n, 'y', 500);
	snprintf(big + n + 500, sizeof big - (size_t)n - 500, "\"}");
	m = parse_bad(big, "bad_frame");
	assert_true(strlen(m) < 300);
}

static void test_message_text(void **state)
{
	(void)state;
	const char *bad[] = {
	    "{\"type\":\"message\"}",
	    "{\"type\":\"message\",\"text\":\"\"}",
	    "{\"type\":\"message\",\"text\":null}",
	    "{\"type\":\"message\",\"text\":42}",
	    "{\"type\":\"message\",\"text\":[\"hi\"]}",
	    "{\"type\":\"message\",\"text\":{\"t\":\"hi\"}}",
	    "{\"type\":\"message\",\"text\":true}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		parse_bad(bad[i], "bad_frame");
}

/* \u0000 is refused by the JSON parser itself (no JSON_ALLOW_NUL), in any
 * string: a C string can never be read shorter than the member. */
static void test_message_nul(void **state)
{
	(void)state;
	const char *m = parse_bad("{\"type\":\"message\",\"text\":\"a\\u0000b\"}", "bad_frame");
	if (!strstr(m, "NUL"))
		fail_msg("expected a message about NUL, got '%s'", m);
	parse_bad("{\"type\":\"message\",\"text\":\"ab\\u0000\"}", "bad_frame");
	parse_bad("{\"type\":\"message\",\"text\":\"\\u0000\"}", "bad_frame");
	/* Over the cap and with a NUL: refused either way. */
	parse_bad("{\"type\":\"message\",\"text\":\"0123456789abcde\\u0000f\"}", "bad_frame");
	/* A NUL cannot cut another member short either ("cancel\0x" is not "cancel"). */
	parse_bad("{\"type\":\"cancel\\u0000x\"}", "bad_frame");
	parse_bad("{\"type\":\"resume\",\"after_seq\":1,\"x\\u0000\":1}", "bad_frame");
}

static void test_message_over_cap(void **state)
{
	(void)state;
	parse_bad("{\"type\":\"message\",\"text\":\"0123456789abcdefg\"}", "too_large");
	/* Nine two-byte characters: 18 bytes, over a cap of 16. */
	parse_bad("{\"type\":\"message\",\"text\":"
		  "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
		  "too_large");
}

static void test_duplicate_keys(void **state)
{
	(void)state;
	/* One member read two ways must not be possible. */
	parse_bad("{\"type\":\"message\",\"type\":\"cancel\"}", "bad_frame");
	parse_bad("{\"type\":\"message\",\"text\":\"a\",\"text\":\"b\"}", "bad_frame");
	parse_bad("{\"type\":\"resume\",\"after_seq\":1,\"after_seq\":2}", "bad_frame");
}

static void test_resume_after_seq(void **state)
{
	(void)state;
	const char *bad[] = {
	    "{\"type\":\"resume\"}",
	    "{\"type\":\"resume\",\"after_seq\":null}",
	    "{\"type\":\"resume\",\"after_seq\":-1}",
	    "{\"type\":\"resume\",\"after_seq\":-9223372036854775808}",
	    "{\"type\":\"resume\",\"after_seq\":1.0}",
	    "{\"type\":\"resume\",\"after_seq\":1.5}",
	    "{\"type\":\"resume\",\"after_seq\":1e3}",
	    "{\"type\":\"resume\",\"after_seq\":\"12\"}",
	    "{\"type\":\"resume\",\"after_seq\":true}",
	    "{\"type\":\"resume\",\"after_seq\":[1]}",
	    /* Past int64: JSON itself is refused. */
	    "{\"type\":\"resume\",\"after_seq\":9223372036854775808}",
	    "{\"type\":\"resume\",\"after_seq\":18446744073709551616}",
	    "{\"type\":\"resume\",\"after_seq\":100000000000000000000000000000}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		parse_bad(bad[i], "bad_frame");
}

static void test_message_buffer_small(void **state)
{
	(void)state;
	/* The message is cut to the caller's buffer and stays a C string. */
	struct client_frame f;
	const char *code = NULL;
	char msg[8];
	memset(msg, 'z', sizeof msg);
	assert_int_equal(client_frame_parse("{}", 2, CAP, &f, &code, msg, sizeof msg), -1);
	assert_string_equal(code, "bad_frame");
	assert_int_eq_msg(strlen(msg), sizeof msg - 1, "message cut to the buffer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_message),
	    cmocka_unit_test(test_message_at_cap),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_resume),
	    cmocka_unit_test(test_exec_frames),
	    cmocka_unit_test(test_bad_json),
	    cmocka_unit_test(test_not_an_object),
	    cmocka_unit_test(test_type_missing_or_not_string),
	    cmocka_unit_test(test_unknown_type),
	    cmocka_unit_test(test_message_text),
	    cmocka_unit_test(test_message_nul),
	    cmocka_unit_test(test_message_over_cap),
	    cmocka_unit_test(test_duplicate_keys),
	    cmocka_unit_test(test_resume_after_seq),
	    cmocka_unit_test(test_message_buffer_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
