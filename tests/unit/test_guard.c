/* Unit tests: the stream guard (guard.h) — secret values and their base64
 * forms found in streamed text however it is split into deltas, and no
 * false positives over megabytes of random text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "unit_util.h"

/* ---- helpers ---- */

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t rnd(void) /* xorshift64*: reproducible */
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 0x2545f4914f6cdd1du) >> 32);
}

/* Base64 written here rather than taken from libsodium, so the test does not
 * share the encoder with the code under test. */
static size_t b64(char *out, const unsigned char *in, size_t n, int url, int pad)
{
	const char *std = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *urls = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *a = url ? urls : std;
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		out[o++] = a[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		if (pad)
			out[o++] = '=', out[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		if (pad)
			out[o++] = '=';
	}
	out[o] = 0;
	return o;
}

static guard *build(const char *const *values, const size_t *lens, size_t n)
{
	guard *g = NULL;
	cx_err err = CX_ERR_INIT;
	if (guard_build(&g, values, lens, n, &err) != 0)
		fail_msg("guard_build: %s", err.msg);
	assert_non_null(g);
	return g;
}

static guard *build1(const char *v, size_t len)
{
	return build(&v, &len, 1);
}

static int feed(struct guard_scan *s, const guard *g, const char *t, size_t n, size_t *which)
{
	cx_err err = CX_ERR_INIT;
	int r = guard_feed(s, g, t, n, which, &err);
	if (r < 0)
		fail_msg("guard_feed: %s", err.msg);
	return r;
}

/* Feed text[0..n) in one go on a fresh scan state. */
static int feed_all(const guard *g, const char *t, size_t n, size_t *which)
{
	struct guard_scan s;
	guard_scan_init(&s);
	int r = feed(&s, g, t, n, which);
	guard_scan_free(&s);
	return r;
}

/* Feed text split at every cut position in two, and (when three != 0) in
 * three; count the feeds that report a match, and check that each split
 * reports at least one (and at most `most`). */
static void every_split(const guard *g, const char *t, size_t n, int three, int most,
			size_t want_which, const char *what)
{
	struct guard_scan s;
	guard_scan_init(&s);
	for (size_t i = 0; i <= n; i++) {
		for (size_t j = three ? i : n; j <= n; j++) {
			guard_scan_reset(&s);
			size_t w = 999;
			int hits = feed(&s, g, t, i, &w) + feed(&s, g, t + i, j - i, &w) +
				   feed(&s, g, t + j, n - j, &w);
			if (hits < 1 || hits > most)
				fail_msg("%s: split %zu/%zu: %d hits", what, i, j, hits);
			assert_int_eq_msg(w, want_which, what);
		}
	}
	guard_scan_free(&s);
}

/* ---- tests ---- */

static void test_exact(void **state)
{
	(void)state;
	const char *v = "sk-live-4f9a8b7c6d5e";
	guard *g = build1(v, strlen(v));
	const char *t = "token is sk-live-4f9a8b7c6d5e, keep it";
	size_t w = 99;
	assert_int_equal(feed_all(g, t, strlen(t), &w), 1);
	assert_int_eq_msg(w, 0, "which");
	assert_int_equal(feed_all(g, v, strlen(v), NULL), 1); /* the whole text, which NULL */
	const char *partial = "token is sk-live-4f9a8b7c6d5, sk-live-f9a8b7c6d5e";
	w = 99;
	assert_int_equal(feed_all(g, partial, strlen(partial), &w), 0);
	assert_int_eq_msg(w, 99, "which untouched without a match");
	guard_free(g);
}

/* Split in two at every position: exactly the feed in which the value's last
 * byte arrives reports it. */
static void test_split_two(void **state)
{
	(void)state;
	const char *v = "hunter2-correct-horse";
	guard *g = build1(v, strlen(v));
	const char *t = "say hunter2-correct-horse now";
	size_t n = strlen(t), end = 4 + strlen(v); /* the match ends at t[end - 1] */
	struct guard_scan s;
	guard_scan_init(&s);
	for (size_t i = 0; i <= n; i++) {
		guard_scan_reset(&s);
		int a = feed(&s, g, t, i, NULL), b = feed(&s, g, t + i, n - i, NULL);
		char what[64];
		snprintf(what, sizeof what, "cut at %zu, first feed", i);
		assert_int_eq_msg(a, i >= end, what);
		snprintf(what, sizeof what, "cut at %zu, second feed", i);
		assert_int_eq_msg(b, i < end, what);
	}
	guard_scan_free(&s);
	guard_free(g);
}

static void test_split_three(void **state)
{
	(void)state;
	const char *v = "ghp_A1b2C3d4E5f6";
	guard *g = build1(v, strlen(v));
	const char *t = "x ghp_A1b2C3d4E5f6 y";
	size_t n = strlen(t), last = 2 + strlen(v) - 1; /* index of the value's last byte */
	struct guard_scan s;
	guard_scan_init(&s);
	for (size_t i = 0; i <= n; i++)
		for (size_t j = i; j <= n; j++) {
			guard_scan_reset(&s);
			int a = feed(&s, g, t, i, NULL);
			int b = feed(&s, g, t + i, j - i, NULL);
			int c = feed(&s, g, t + j, n - j, NULL);
			char what[64];
			snprintf(what, sizeof what, "cuts %zu,%zu", i, j);
			assert_int_eq_msg(a, last < i, what);
			assert_int_eq_msg(b, i <= last && last < j, what);
			assert_int_eq_msg(c, j <= last, what);
		}
	guard_scan_free(&s);
	guard_free(g);
}

/* A value whose encodings hold '+' '/' (std) and '-' '_' (url), alone and
 * inside a longer encoded blob at every byte offset, split across feeds. */
static void test_base64(void **state)
{
	(void)state;
	static const unsigned char v[] = {0xfb, 0xef, 0xbe, 0xff, 's',	'e',  'c',  'r',
					  'e',	't',  0xfb, 0xff, 0xbf, 0x3e, 0x7f, 0x01};
	guard *g = build1((const char *)v, sizeof v);
	char enc[256], text[300];
	for (int url = 0; url <= 1; url++) {
		/* Alone, with and without padding. */
		for (int pad = 0; pad <= 1; pad++) {
			size_t n = b64(enc, v, sizeof v, url, pad);
			every_split(g, enc, n, 0, 1, 0, url ? "url alone" : "std alone");
		}
		/* Embedded: pre bytes before it (offsets 0, 1, 2 mod 3), suf after. */
		for (size_t pre = 0; pre < 6; pre++)
			for (size_t suf = 0; suf < 4; suf++) {
				unsigned char blob[64];
				for (size_t k = 0; k < pre; k++)
					blob[k] = (unsigned char)rnd();
				memcpy(blob + pre, v, sizeof v);
				for (size_t k = 0; k < suf; k++)
					blob[pre + sizeof v + k] = (unsigned char)rnd();
				size_t bl = pre + sizeof v + suf;
				b64(enc, blob, bl, url, 1);
				int tn = snprintf(text, sizeof text, "blob: \"%s\" ok", enc);
				char what[64];
				snprintf(what, sizeof what, "%s, %zu before, %zu after",
					 url ? "url" : "std", pre, suf);
				size_t w = 99;
				if (feed_all(g, text, (size_t)tn, &w) != 1)
					fail_msg("%s: not found in %s", what, text);
				assert_int_eq_msg(w, 0, what);
				every_split(g, text, (size_t)tn, pre == 1 && suf == 1, 1, 0, what);
			}
	}
	/* The other alphabet's text is not mistaken: std text has no url form
	 * of this value, but both are found, and a blob without it is not. */
	unsigned char other[sizeof v];
	memcpy(other, v, sizeof v);
	other[7] ^= 1;
	for (size_t pre = 0; pre < 3; pre++) {
		unsigned char blob[64] = {0};
		memcpy(blob + pre, other, sizeof other);
		size_t n = b64(enc, blob, pre + sizeof other + 2, 0, 1);
		assert_int_eq_msg(feed_all(g, enc, n, NULL), 0, "changed byte not found");
	}
	guard_free(g);
}

static void test_short_values(void **state)
{
	(void)state;
	const char *vals[] = {"abc", "12345", ""};
	size_t lens[] = {3, 5, 0};
	guard *g = build(vals, lens, 3);
	assert_int_eq_msg(guard_patterns(g), 0, "patterns of short values");
	assert_int_eq_msg(guard_max_len(g), 0, "max len");
	const char *t = "abc 12345 YWJj MTIzNDU";
	assert_int_equal(feed_all(g, t, strlen(t), NULL), 0);
	guard_free(g);

	/* GUARD_MIN_LEN bytes are guarded, with all forms at least that long. */
	g = build1("123456", GUARD_MIN_LEN);
	assert_true(guard_patterns(g) >= 4);
	assert_int_equal(feed_all(g, "pin 123456.", 11, NULL), 1);
	assert_int_equal(feed_all(g, "MTIzNDU2", 8, NULL), 1); /* base64("123456") */
	guard_free(g);
}

/* The forms, counted: 9 ASCII bytes whose two encodings agree give the value
 * and 3 offset cores (the alone encoding is the offset-0 core); duplicates
 * (the same value twice) are removed. */
static void test_pattern_count(void **state)
{
	(void)state;
	const char *vals[] = {"abcdefghi", "abcdefghi"};
	size_t lens[] = {9, 9};
	guard *g = build(vals, lens, 2);
	assert_int_eq_msg(guard_patterns(g), 4, "patterns");
	assert_int_eq_msg(guard_max_len(g), 12, "max len (base64 of 9 bytes)");
	size_t w = 99;
	assert_int_equal(feed_all(g, "YWJjZGVmZ2hp", 12, &w), 1);
	assert_int_eq_msg(w, 0, "first of two equal values");
	guard_free(g);

	/* 8 bytes whose encodings hold '+' and '/': the alphabets differ. */
	static const char v8[] = "\xfb\xff\xbf\xfb\xff\xbf\xfb\xff";
	g = build1(v8, 8);
	assert_int_eq_msg(guard_patterns(g), 7, "patterns with std != url");
	guard_free(g);
}

static void test_which(void **state)
{
	(void)state;
	const char *vals[] = {"first-secret-1", "second-secret-2", "third-secret-3"};
	size_t lens[] = {14, 15, 14};
	guard *g = build(vals, lens, 3);
	const char *t = "the key: third-secret-3";
	size_t w = 99;
	assert_int_equal(feed_all(g, t, strlen(t), &w), 1);
	assert_int_eq_msg(w, 2, "which");
	char enc[64];
	size_t n = b64(enc, (const unsigned char *)vals[1], lens[1], 1, 0);
	every_split(g, enc, n, 1, 1, 1, "second, url");
	guard_free(g);
}

static void test_binary(void **state)
{
	(void)state;
	static const char v[] = {'\0', '\x01', '\xff', '\n', '\0', '\x80', '\x7f', 'k', '\0'};
	guard *g = build1(v, sizeof v);
	char t[64];
	memcpy(t, "pre\0", 4);
	memcpy(t + 4, v, sizeof v);
	memcpy(t + 4 + sizeof v, "\0post", 5);
	size_t n = 4 + sizeof v + 5;
	every_split(g, t, n, 1, 1, 0, "binary raw");
	char enc[64];
	size_t en = b64(enc, (const unsigned char *)v, sizeof v, 0, 1);
	every_split(g, enc, en, 0, 1, 0, "binary std");
	/* One differing byte: nothing. */
	t[4 + 3] = '\r';
	assert_int_equal(feed_all(g, t, n, NULL), 0);
	guard_free(g);
}

static void test_empty(void **state)
{
	(void)state;
	guard *g = build(NULL, NULL, 0);
	assert_int_eq_msg(guard_patterns(g), 0, "patterns");
	assert_int_eq_msg(guard_max_len(g), 0, "max len");
	struct guard_scan s;
	guard_scan_init(&s);
	size_t w = 99;
	assert_int_equal(feed(&s, g, "anything at all", 15, &w), 0);
	assert_int_eq_msg(w, 99, "which untouched");
	assert_int_eq_msg(s.cap, 0, "no tail for an empty guard");
	guard_scan_free(&s);
	guard_free(g);
	guard_free(NULL);
	assert_int_eq_msg(guard_patterns(NULL), 0, "patterns of NULL");
}

static void test_reset(void **state)
{
	(void)state;
	const char *v = "reset-me-secret";
	guard *g = build1(v, strlen(v));
	struct guard_scan s;
	guard_scan_init(&s);
	assert_int_equal(feed(&s, g, "reset-me-", 9, NULL), 0);
	assert_int_equal(feed(&s, g, "secret", 6, NULL), 1); /* without reset: found */
	guard_scan_reset(&s);
	assert_int_equal(feed(&s, g, "reset-me-", 9, NULL), 0);
	assert_true(s.tail_len > 0 && s.cap > 0);
	guard_scan_reset(&s);
	assert_int_eq_msg(s.tail_len, 0, "tail length after reset");
	for (size_t i = 0; i < s.cap; i++)
		if (s.tail[i])
			fail_msg("tail byte %zu not wiped: 0x%02x", i, (unsigned char)s.tail[i]);
	assert_int_equal(feed(&s, g, "secret", 6, NULL), 0); /* the tail is forgotten */
	guard_scan_free(&s);
	assert_null(s.tail);
	assert_int_eq_msg(s.cap, 0, "cap after free");
	guard_scan_free(&s); /* twice is fine */
	guard_free(g);
}

/* 20 random secrets, 4 MB of random printable text in 1-40 byte deltas: no
 * match.  Then one secret (raw, then base64) inside the same stream is found. */
static void test_no_false_positive(void **state)
{
	(void)state;
	enum { NSEC = 20, TEXT = 4 << 20 };
	static const char alnum[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	char sec[NSEC][48];
	const char *vals[NSEC];
	size_t lens[NSEC];
	for (int i = 0; i < NSEC; i++) {
		lens[i] = GUARD_MIN_LEN + 2 + rnd() % 32;
		for (size_t k = 0; k < lens[i]; k++)
			sec[i][k] = alnum[rnd() % 62];
		vals[i] = sec[i];
	}
	guard *g = build(vals, lens, NSEC);
	assert_true(guard_patterns(g) >= NSEC * 4);
	char *text = malloc(TEXT);
	assert_non_null(text);
	for (size_t i = 0; i < TEXT; i++)
		text[i] = rnd() % 50 == 0 ? '\n' : (char)(' ' + rnd() % 95);
	struct guard_scan s;
	guard_scan_init(&s);
	size_t hits = 0;
	for (size_t off = 0; off < TEXT;) {
		size_t d = 1 + rnd() % 40;
		if (d > TEXT - off)
			d = TEXT - off;
		hits += (size_t)feed(&s, g, text + off, d, NULL);
		off += d;
	}
	assert_int_eq_msg(hits, 0, "matches in random text");
	size_t w = 99;
	const char *t = "... and the key is ";
	assert_int_equal(feed(&s, g, t, strlen(t), &w), 0);
	hits = (size_t)feed(&s, g, sec[7], 5, &w);
	hits += (size_t)feed(&s, g, sec[7] + 5, lens[7] - 5, &w);
	assert_int_eq_msg(hits, 1, "the secret in the stream");
	assert_int_eq_msg(w, 7, "which");
	char enc[80];
	size_t en = b64(enc, (const unsigned char *)sec[7], lens[7], 0, 1);
	assert_int_equal(feed(&s, g, " b64: ", 6, &w), 0);
	assert_int_equal(feed(&s, g, enc, en, &w), 1);
	guard_scan_free(&s);
	free(text);
	guard_free(g);
}

/* A value longer than GUARD_PIECE: found whole and encoded, and by any long
 * enough slice; the per-stream tail stays bounded. */
static void test_long_value(void **state)
{
	(void)state;
	char v[300];
	for (size_t i = 0; i < sizeof v; i++)
		v[i] = (char)(rnd() % 256);
	guard *g = build1(v, sizeof v);
	assert_true(guard_max_len(g) <= (GUARD_PIECE + 2) / 3 * 4);
	assert_int_equal(feed_all(g, v, sizeof v, NULL), 1);
	assert_int_equal(feed_all(g, v + 100, 2 * GUARD_PIECE - 1, NULL), 1);
	assert_int_equal(feed_all(g, v + 10, 100, NULL), 0); /* holds no whole piece */
	char enc[512];
	size_t en = b64(enc, (const unsigned char *)v, sizeof v, 1, 0);
	assert_int_equal(feed_all(g, enc, en, NULL), 1);
	en = b64(enc, (const unsigned char *)v + 1, sizeof v - 1, 0, 1); /* shifted by one */
	assert_int_equal(feed_all(g, enc, en, NULL), 1);
	guard_free(g);
}

/* One scan state used with a guard of short patterns, then long ones, then
 * short again (the secrets changed mid-stream): the tail grows or is trimmed. */
static void test_guard_change(void **state)
{
	(void)state;
	const char *shortv = "abcdef", *longv = "0123456789-0123456789-0123456789";
	guard *gs = build1(shortv, strlen(shortv)), *gl = build1(longv, strlen(longv));
	struct guard_scan s;
	guard_scan_init(&s);
	assert_int_equal(feed(&s, gs, "xx abc", 6, NULL), 0);
	assert_int_equal(feed(&s, gs, "def", 3, NULL), 1);
	assert_int_equal(feed(&s, gl, "0123456789-0123456789-", 22, NULL), 0);
	assert_int_equal(feed(&s, gl, "0123456789", 10, NULL), 1);
	assert_int_equal(feed(&s, gs, "..ab", 4, NULL), 0);
	assert_int_equal(feed(&s, gs, "cdef", 4, NULL), 1);
	assert_true(s.tail_len < guard_max_len(gs));
	guard_scan_free(&s);
	guard_free(gs);
	guard_free(gl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact),
	    cmocka_unit_test(test_split_two),
	    cmocka_unit_test(test_split_three),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_short_values),
	    cmocka_unit_test(test_pattern_count),
	    cmocka_unit_test(test_which),
	    cmocka_unit_test(test_binary),
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_reset),
	    cmocka_unit_test(test_no_false_positive),
	    cmocka_unit_test(test_long_value),
	    cmocka_unit_test(test_guard_change),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
