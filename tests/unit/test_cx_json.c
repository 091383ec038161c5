/* Unit tests: cx_json_str_len / cx_json_str_put (common/cx.h) against
 * jansson, whose output they stand in for in store values (transcripts,
 * turn state): for every string tried, the same bytes as
 * json_dumps(json_string(s), JSON_ENCODE_ANY), and refused (length 0)
 * exactly when jansson refuses the string (not UTF-8). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx.h"

/* s quoted both ways: the same verdict and, when valid, the same bytes. */
static void same_as_jansson(const char *s)
{
	json_t *j = json_string(s);
	size_t n = cx_json_str_len(s);
	if (!j) {
		if (n)
			fail_msg("\"%s\": jansson refuses it, cx_json_str_len gave %zu", s, n);
		return;
	}
	char *want = json_dumps(j, JSON_ENCODE_ANY);
	json_decref(j);
	assert_non_null(want);
	if (n != strlen(want))
		fail_msg("\"%s\": expected length %zu (%s), got %zu", s, strlen(want), want, n);
	char *got = malloc(n + 1);
	assert_non_null(got);
	char *end = cx_json_str_put(got, s);
	*end = 0;
	if ((size_t)(end - got) != n || strcmp(got, want))
		fail_msg("\"%s\": expected %s, got %s", s, want, got);
	free(got);
	free(want);
}

/* Every single byte, and each within text. */
static void test_each_byte(void **state)
{
	(void)state;
	for (int c = 1; c < 256; c++) {
		char one[2] = {(char)c, 0};
		same_as_jansson(one);
		char mid[8] = {'a', (char)c, 'b', (char)c, 0};
		same_as_jansson(mid);
	}
	same_as_jansson("");
}

static void test_cases(void **state)
{
	(void)state;
	const char *cases[] = {
	    "hello there", "quote \" backslash \\ slash / tab \t nl \n cr \r", "\x01\x1f\x7f",
	    "th\xc3\xa9re \xe2\x82\xac \xf0\x9f\x98\x80", /* 2, 3 and 4 byte sequences */
	    "\xc0\x80",				   /* overlong NUL */
	    "\xed\xa0\x80",			   /* a surrogate */
	    "\xf4\x90\x80\x80",			   /* above U+10FFFF */
	    "\xe2\x82",				   /* cut */
	    "\xef\xbb\xbf BOM, U+2028 \xe2\x80\xa8 U+FFFF \xef\xbf\xbf",
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		same_as_jansson(cases[i]);
}

/* Random strings, most of them bytes that make UTF-8 lead and continuation
 * bytes, so that valid and invalid sequences of every length come up. */
static void test_random(void **state)
{
	(void)state;
	static const unsigned char pick[] = {'a', '"', '\\', '\n', 0x01, 0x7f, 0x80, 0xbf, 0xc2, 0xdf,
					      0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xa0, 0x9f, 0x90, 0x8f};
	uint32_t x = 12345;
	for (int k = 0; k < 20000; k++) {
		char s[12];
		x = x * 1103515245u + 12345u;
		size_t len = 1 + (x >> 16) % 10;
		for (size_t i = 0; i < len; i++) {
			x = x * 1103515245u + 12345u;
			s[i] = (char)pick[(x >> 16) % sizeof pick];
		}
		s[len] = 0;
		same_as_jansson(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_each_byte),
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
