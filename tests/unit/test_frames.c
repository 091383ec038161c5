/* Unit tests: frames.h — "seq" spliced into an agent line without touching
 * its bytes, frame queues that count their bytes, and the capped reassembly
 * buffer of fragmented messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "frames.h"
#include "unit_util.h"

/* ---- helpers ---- */

/* The frame's payload as a string (tests free it). */
static char *payload(const struct frame *f)
{
	char *p = malloc(f->len + 1);
	assert_non_null(p);
	memcpy(p, frame_data(f), f->len);
	p[f->len] = '\0';
	return p;
}

static void assert_payload(const struct frame *f, const char *want)
{
	char *got = payload(f);
	if (f->len != strlen(want) || memcmp(got, want, f->len))
		fail_msg("payload: expected '%s', got '%s'", want, got);
	free(got);
}

/* splice(line) is {"seq":N, then every byte after the line's '{' unchanged,
 * it parses, "seq" is its first member and every member of line is intact. */
static void check_splice(const char *line, uint64_t seq)
{
	struct frame *f = frame_splice_seq(line, strlen(line), seq);
	if (!f)
		fail_msg("splice of '%s': expected a frame, got NULL", line);
	assert_int_eq_msg(f->seq, seq, "frame seq");

	const char *brace = strchr(line, '{');
	const char *rest = brace + 1;
	size_t k = strspn(rest, " \t\r\n");
	int empty = rest[k] == '}';
	char want[4096];
	snprintf(want, sizeof want, "{\"seq\":%llu%s%s", (unsigned long long)seq, empty ? "" : ",",
		 empty ? rest + k : rest);
	assert_payload(f, want);

	/* UINT64_MAX does not fit jansson's integers: read it as a real then. */
	json_error_t je;
	json_t *got = json_loadb(frame_data(f), f->len, JSON_DECODE_INT_AS_REAL, &je);
	if (!got)
		fail_msg("spliced '%s' does not parse: %s", want, je.text);
	json_t *orig = json_loads(line, JSON_DECODE_INT_AS_REAL, NULL);
	assert_non_null(orig);
	void *it = json_object_iter(got);
	assert_non_null(it);
	assert_string_equal(json_object_iter_key(it), "seq");
	assert_int_eq_msg(json_object_size(got), json_object_size(orig) + 1,
			  "members after the splice");
	const char *key;
	json_t *v;
	json_object_foreach(orig, key, v)
	{
		if (!json_equal(v, json_object_get(got, key)))
			fail_msg("member '%s' changed by the splice of '%s'", key, line);
	}
	json_decref(orig);
	json_decref(got);
	frame_unref(f);
}

/* ---- frame_splice_seq ---- */

static void test_splice_plain(void **state)
{
	(void)state;
	check_splice("{\"type\":\"stream_event\",\"n\":1}", 7);
	check_splice("{\"a\":\"x\"}\n", 1); /* a trailing newline stays too */
}

static void test_splice_leading_blanks(void **state)
{
	(void)state;
	check_splice("  \t\r\n{\"a\":1}", 3);
	/* Blanks inside the braces are kept as they were. */
	check_splice("{ \"a\" : 1 , \"b\" :[ ] }", 4);
	struct frame *f = frame_splice_seq(" {\"a\":1}", 8, 9);
	assert_non_null(f);
	assert_payload(f, "{\"seq\":9,\"a\":1}");
	frame_unref(f);
}

static void test_splice_empty_object(void **state)
{
	(void)state;
	const char *lines[] = {"{}", "{ }", " {\t\n}", "{}\n"};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
		check_splice(lines[i], 12);
	struct frame *f = frame_splice_seq("{ }", 3, 12);
	assert_non_null(f);
	assert_payload(f, "{\"seq\":12}"); /* no dangling comma */
	frame_unref(f);
}

static void test_splice_nested(void **state)
{
	(void)state;
	/* Braces and commas inside strings and nested values are not looked at. */
	check_splice(
	    "{\"event\":{\"delta\":{\"text\":\"}{,\\\"\"},\"i\":[1,{\"x\":{}}]},\"z\":null}", 42);
	check_splice("{\"u\":\"h\\u00e9llo \xe2\x82\xac\",\"t\":true,\"f\":1.5e3}", 5);
}

static void test_splice_seq_bounds(void **state)
{
	(void)state;
	check_splice("{\"a\":1}", 0);
	check_splice("{\"a\":1}", UINT64_MAX);
	check_splice("{}", UINT64_MAX);
	struct frame *f = frame_splice_seq("{\"a\":1}", 7, UINT64_MAX);
	assert_non_null(f);
	assert_payload(f, "{\"seq\":18446744073709551615,\"a\":1}");
	frame_unref(f);
}

static void test_splice_not_an_object(void **state)
{
	(void)state;
	const char *lines[] = {"",   " ",    "\n\t ", "[1,2]", "\"{}\"", "42",
			       "null", "true",  "x{}",   " [{}]", "{",     "{\"a\":1"};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		struct frame *f = frame_splice_seq(lines[i], strlen(lines[i]), 1);
		if (f)
			fail_msg("splice of '%s': expected NULL, got a frame", lines[i]);
	}
	/* The length is honoured: the object starts past it. */
	assert_null(frame_splice_seq("  {}", 2, 1));
}

/* ---- frame queues ---- */

static void test_fq_bytes(void **state)
{
	(void)state;
	struct fqueue q = {0};
	assert_null(fq_pop(&q));
	struct frame *a = frame_new("abc", 3), *b = frame_new("", 0), *c = frame_new("hello", 5);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	fq_push(&q, a);
	assert_int_eq_msg(q.bytes, 3, "bytes after one push");
	fq_push(&q, b);
	fq_push(&q, c);
	assert_int_eq_msg(q.bytes, 8, "bytes after three pushes");

	struct frame *f = fq_pop(&q);
	assert_ptr_equal(f, a); /* FIFO */
	assert_int_eq_msg(q.bytes, 5, "bytes after a pop");
	assert_payload(f, "abc");
	frame_unref(f);
	f = fq_pop(&q);
	assert_ptr_equal(f, b);
	assert_int_eq_msg(q.bytes, 5, "an empty frame counts 0 bytes");
	frame_unref(f);
	f = fq_pop(&q);
	assert_ptr_equal(f, c);
	assert_int_eq_msg(q.bytes, 0, "bytes once empty");
	assert_null(fq_peek(&q));
	frame_unref(f);

	/* Pushing after it emptied starts afresh. */
	fq_push(&q, frame_new("xy", 2));
	assert_int_eq_msg(q.n, 1, "frames after refill");
	assert_int_eq_msg(q.bytes, 2, "bytes after refill");
	fq_clear(&q);
}

/* One frame in many queues: one allocation, counted once in the live bytes,
 * freed when the last queue lets it go; the ring keeps FIFO order across its
 * growth and wrap-around. */
static void test_fq_shared(void **state)
{
	(void)state;
	size_t live0 = frames_live_bytes();
	struct fqueue qs[5] = {{0}};
	struct frame *f = frame_new("shared", 6);
	assert_non_null(f);
	for (int i = 0; i < 5; i++)
		assert_int_equal(fq_push(&qs[i], frame_ref(f)), 0);
	frame_unref(f); /* the queues hold it now */
	assert_int_eq_msg(f->refs, 5, "one reference per queue");
	assert_int_eq_msg(frames_live_bytes() - live0, 6, "one copy, however many queues");
	for (int i = 0; i < 4; i++) {
		assert_ptr_equal(fq_peek(&qs[i]), f);
		fq_clear(&qs[i]);
	}
	assert_int_eq_msg(f->refs, 1, "the last queue still holds it");
	assert_payload(fq_peek(&qs[4]), "shared");
	fq_clear(&qs[4]);
	assert_int_eq_msg(frames_live_bytes(), live0, "freed with its last reference");

	/* Interleaved pushes and pops wrap the ring while it grows. */
	struct fqueue q = {0};
	int next_in = 0, next_out = 0;
	for (int round = 0; round < 50; round++) {
		for (int k = 0; k < round % 7 + 3; k++) {
			char buf[16];
			int n = snprintf(buf, sizeof buf, "%d", next_in++);
			assert_int_equal(fq_push(&q, frame_new(buf, (size_t)n)), 0);
		}
		for (int k = 0; k < round % 5 + 1 && q.n; k++) {
			struct frame *g = fq_pop(&q);
			char want[16];
			snprintf(want, sizeof want, "%d", next_out++);
			assert_payload(g, want);
			frame_unref(g);
		}
		assert_int_eq_msg(q.n, (size_t)(next_in - next_out), "frames queued");
		for (size_t i = 0; i < q.n; i++) {
			char want[16];
			snprintf(want, sizeof want, "%d", next_out + (int)i);
			assert_payload(fq_at(&q, i), want);
		}
	}
	assert_null(fq_at(&q, q.n));
	fq_clear(&q);
	assert_int_eq_msg(frames_live_bytes(), live0, "every frame freed");
}

static void test_fq_clear(void **state)
{
	(void)state;
	struct fqueue q = {0};
	fq_clear(&q); /* empty: nothing to do */
	for (int i = 0; i < 100; i++) {
		char buf[16];
		int n = snprintf(buf, sizeof buf, "frame %d", i);
		fq_push(&q, frame_new(buf, (size_t)n));
	}
	assert_true(q.bytes > 0);
	fq_clear(&q);
	assert_int_eq_msg(q.bytes, 0, "bytes after clear");
	assert_int_eq_msg(q.n, 0, "frames after clear");
	assert_null(fq_peek(&q));
}

static void test_frame_new_copies(void **state)
{
	(void)state;
	char src[] = "payload";
	struct frame *f = frame_new(src, 7);
	assert_non_null(f);
	src[0] = 'X';
	assert_payload(f, "payload");
	assert_int_eq_msg(f->seq, 0, "a new frame has no seq");
	assert_int_eq_msg(f->refs, 1, "a new frame has the caller's reference");
	frame_unref(f);
}

/* ---- rxbuf ---- */

static void test_rxbuf_append(void **state)
{
	(void)state;
	struct rxbuf r = {0};
	assert_int_equal(rxbuf_append(&r, 10, "abc", 3), 0);
	assert_int_equal(rxbuf_append(&r, 10, "defg", 4), 0);
	assert_int_eq_msg(r.len, 7, "length after two fragments");
	assert_string_equal(r.buf, "abcdefg"); /* NUL-terminated */
	assert_int_equal(r.overflow, 0);
	/* Exactly at the cap is fine. */
	assert_int_equal(rxbuf_append(&r, 10, "hij", 3), 0);
	assert_int_eq_msg(r.len, 10, "length at the cap");
	assert_int_equal(r.overflow, 0);
	assert_int_equal(rxbuf_append(&r, 10, "", 0), 0);
	assert_int_equal(r.overflow, 0);
	rxbuf_reset(&r);
}

static void test_rxbuf_overflow(void **state)
{
	(void)state;
	struct rxbuf r = {0};
	assert_int_equal(rxbuf_append(&r, 8, "12345", 5), 0);
	/* One byte past the cap: flagged, and what came is not kept. */
	assert_int_equal(rxbuf_append(&r, 8, "6789", 4), 0);
	assert_int_equal(r.overflow, 1);
	assert_int_eq_msg(r.len, 5, "length kept at overflow");
	/* Later fragments are discarded, even small ones. */
	assert_int_equal(rxbuf_append(&r, 8, "x", 1), 0);
	assert_int_equal(r.overflow, 1);
	assert_int_eq_msg(r.len, 5, "length after a discarded fragment");

	/* Reset: empty, not overflowing, usable again. */
	rxbuf_reset(&r);
	assert_null(r.buf);
	assert_int_eq_msg(r.len, 0, "length after reset");
	assert_int_equal(r.overflow, 0);
	assert_int_equal(rxbuf_append(&r, 8, "ok", 2), 0);
	assert_string_equal(r.buf, "ok");
	rxbuf_reset(&r);
	rxbuf_reset(&r); /* twice is fine */

	/* A single fragment over the cap overflows at once. */
	assert_int_equal(rxbuf_append(&r, 4, "12345", 5), 0);
	assert_int_equal(r.overflow, 1);
	assert_int_eq_msg(r.len, 0, "nothing kept of a fragment over the cap");
	rxbuf_reset(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_splice_plain),
	    cmocka_unit_test(test_splice_leading_blanks),
	    cmocka_unit_test(test_splice_empty_object),
	    cmocka_unit_test(test_splice_nested),
	    cmocka_unit_test(test_splice_seq_bounds),
	    cmocka_unit_test(test_splice_not_an_object),
	    cmocka_unit_test(test_fq_bytes),
	    cmocka_unit_test(test_fq_clear),
	    cmocka_unit_test(test_fq_shared),
	    cmocka_unit_test(test_frame_new_copies),
	    cmocka_unit_test(test_rxbuf_append),
	    cmocka_unit_test(test_rxbuf_overflow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
