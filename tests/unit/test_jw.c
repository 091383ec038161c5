/* Unit tests: jw (common/jw.h) against jansson.  Every object written is
 * compared byte for byte with json_dumps(JSON_COMPACT) of the same members
 * packed by jansson, reals over many magnitudes and random bit patterns;
 * what jansson refuses (a string not UTF-8, a non-finite real) fails the
 * writer, as does a value past its capacity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jw.h"

static void expect_bytes(const char *what, const char *got, json_t *want_obj)
{
	char *want = json_dumps(want_obj, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(want_obj);
	assert_non_null(want);
	if (!got || strcmp(got, want))
		fail_msg("%s: expected %s, got %s", what, want, got ? got : "(failed)");
	free(want);
}

static void same_real(double v)
{
	char b[32];
	size_t n = jw_real_fmt(b, v);
	json_t *j = json_real(v);
	if (!j) {
		if (n)
			fail_msg("%.17g: jansson refuses it, jw wrote %s", v, b);
		return;
	}
	char *want = json_dumps(j, JSON_ENCODE_ANY);
	json_decref(j);
	assert_non_null(want);
	if (!n || n != strlen(b) || strcmp(b, want))
		fail_msg("%.17g: expected %s, got %s (%zu)", v, want, n ? b : "(none)", n);
	free(want);
}

static void test_reals(void **state)
{
	(void)state;
	const double fixed[] = {0.0, -0.0, 1.0, -1.0, 0.1, 1.312, 100.0, 1e15, 1e16, 1e17, 1e21, 1e22,
				123456789012345678.0, 1e-4, 1e-5, 1.5e-7, 2.5e-300, 1.7976931348623157e308,
				4.9e-324, -3.25e-12, 0.001, 999.999, 30000.0, 12.5};
	for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
		same_real(fixed[i]);
	same_real(NAN);
	same_real(INFINITY);
	same_real(-INFINITY);
	/* Random bit patterns (every exponent), and durations as cortexd makes them. */
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 20000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double d;
		memcpy(&d, &x, sizeof d);
		same_real(d);
		same_real((double)(x % 100000000) / 1000.0);
		same_real((double)(x % 1000) / 1e6);
	}
}

static void test_object_as_jansson(void **state)
{
	(void)state;
	const char *text = "say \"hi\" \\ / \n\t\x01\x1f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
	struct jw w;
	assert_int_equal(jw_init(&w, 1024), 0);
	jw_str(&w, "type", "cortex.done");
	jw_open(&w, "timings");
	jw_real(&w, "first_token_ms", 1.312);
	jw_real(&w, "total_ms", 100);
	jw_close(&w);
	jw_str(&w, "text", text);
	jw_bool(&w, "cancelled", 0);
	jw_bool(&w, "is_error", 1);
	jw_null(&w, "model");
	jw_open(&w, "empty");
	jw_close(&w);
	jw_int(&w, "seq", 42);
	jw_int(&w, "neg", -7);
	jw_close(&w);
	size_t len = 0;
	char *got = jw_take(&w, &len);
	assert_non_null(got);
	assert_int_equal(len, strlen(got));
	expect_bytes("object", got,
		     json_pack("{s:s,s:{s:f,s:f},s:s,s:b,s:b,s:n,s:{},s:I,s:I}", "type", "cortex.done", "timings",
			       "first_token_ms", 1.312, "total_ms", 100.0, "text", text, "cancelled", 0, "is_error", 1,
			       "model", "empty", "seq", (json_int_t)42, "neg", (json_int_t)-7));
	free(got);
	/* An empty object. */
	assert_int_equal(jw_init(&w, 8), 0);
	jw_close(&w);
	got = jw_take(&w, NULL);
	assert_string_equal(got, "{}");
	free(got);
}

/* What jansson refuses fails the writer; so does running out of room. */
static void test_refusals(void **state)
{
	(void)state;
	struct jw w;
	assert_int_equal(jw_init(&w, 256), 0);
	jw_str(&w, "a", "ok");
	jw_str(&w, "b", "cut \xe2\x82");
	jw_close(&w);
	assert_null(jw_take(&w, NULL));
	assert_null(json_pack("{s:s}", "b", "cut \xe2\x82")); /* (as jansson) */

	assert_int_equal(jw_init(&w, 256), 0);
	jw_str(&w, "a", NULL);
	jw_close(&w);
	assert_null(jw_take(&w, NULL));

	assert_int_equal(jw_init(&w, 256), 0);
	jw_real(&w, "r", NAN);
	jw_close(&w);
	assert_null(jw_take(&w, NULL));

	/* Capacity: exactly enough works, a byte less fails. */
	for (size_t cap = 12; cap <= 14; cap++) {
		assert_int_equal(jw_init(&w, cap), 0);
		jw_str(&w, "k", "abcd"); /* {"k":"abcd"} = 12 bytes + NUL */
		jw_close(&w);
		char *got = jw_take(&w, NULL);
		if (cap < 13)
			assert_null(got);
		else
			assert_string_equal(got, "{\"k\":\"abcd\"}");
		free(got);
	}

	/* Nesting past JW_DEPTH fails rather than writing past first[]. */
	assert_int_equal(jw_init(&w, 256), 0);
	for (int i = 0; i < JW_DEPTH + 1; i++)
		jw_open(&w, "x");
	assert_null(jw_take(&w, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reals),
	    cmocka_unit_test(test_object_as_jansson),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
