/* test_turnlog_ring.c — the turn log's file format (turnlog_ring.c): the
 * checksum is stable (a file written by one build is read by the next), and
 * the scan stops at a stale, cut or torn record and reads the slot before
 * the newest only when the newest continues it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "turnlog_ring.h"

#define SLOT 256u

/* Records appended to a slot of buf: at is where the next one goes. */
static size_t put(unsigned char *buf, size_t at, char type, uint8_t flags, uint64_t gen,
		  uint64_t val, const char *data)
{
	size_t len = data ? strlen(data) : 0;
	tlr_head(buf + at, type, flags, gen, val, len, tlr_sum(data, len));
	if (len)
		memcpy(buf + at + TLR_HDR, data, len);
	return at + TLR_HDR + len;
}

struct seen {
	char types[32];
	uint64_t vals[32];
	size_t n;
};

static void on_rec(void *arg, const struct tlr_rec *r)
{
	struct seen *s = arg;
	if (s->n < 31) {
		s->types[s->n] = r->type;
		s->vals[s->n] = r->val;
	}
	s->n++;
}

static void scan(const unsigned char *b, size_t len, struct seen *out)
{
	memset(out, 0, sizeof *out);
	size_t n = tlr_scan((const char *)b, len, SLOT, on_rec, out);
	assert_int_equal(n, out->n);
}

static void test_sum_stable(void **state)
{
	(void)state;
	unsigned char b[1000];
	for (int i = 0; i < 1000; i++)
		b[i] = (unsigned char)(i * 7 + 3);
	/* Values of the first build of the format: the SSE2 path and plain C
	 * agree with them, so files stay readable across builds. */
	assert_int_equal(tlr_sum(b, 0), 0xac2ceed6u);
	assert_int_equal(tlr_sum(b, 5), 0xd052ca48u);
	assert_int_equal(tlr_sum(b, 37), 0x1cfec360u);
	assert_int_equal(tlr_sum(b, 1000), 0x30c6dbf5u);
	b[600] ^= 1;
	assert_int_not_equal(tlr_sum(b, 1000), 0x30c6dbf5u);
}

/* A slot overwritten from its start: past the newest record lie records of
 * the older generation, whole and summing right; none is read. */
static void test_stale_after_head(void **state)
{
	(void)state;
	unsigned char b[2 * SLOT];
	memset(b, 0, sizeof b);
	size_t at = put(b, 0, 'S', 0, 1, 5, NULL);
	at = put(b, at, 'T', 0, 1, 5, NULL);
	for (uint64_t seq = 1; seq <= 4; seq++)
		at = put(b, at, 'F', 0, 1, seq, "{\"old\":1}");
	/* generation 3 over generation 1, shorter */
	at = put(b, 0, 'S', 0, 3, 6, NULL);
	at = put(b, at, 'T', 0, 3, 6, NULL);
	at = put(b, at, 'F', 0, 3, 1, "{\"new\":1}");
	struct seen s;
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 3);
	assert_memory_equal(s.types, "STF", 3);
	assert_int_equal(s.vals[1], 6);
}

/* Slot 1 newer than slot 0: slot 0 is read first only when slot 1 continues
 * it (flag) and is its next generation. */
static void test_predecessor(void **state)
{
	(void)state;
	unsigned char b[2 * SLOT];
	memset(b, 0, sizeof b);
	size_t at = put(b, 0, 'S', 0, 4, 9, NULL);
	at = put(b, at, 'T', 0, 4, 9, NULL);
	(void)put(b, at, 'F', 0, 4, 1, "{\"a\":1}");
	at = put(b, SLOT, 'S', TLR_CONT, 5, 9, NULL);
	(void)put(b, at, 'F', 0, 5, 2, "{\"b\":2}");
	struct seen s;
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 5);
	assert_memory_equal(s.types, "STFSF", 5);
	assert_int_equal(s.vals[2], 1);
	assert_int_equal(s.vals[4], 2);
	/* not continued: slot 1 alone */
	(void)put(b, SLOT, 'S', 0, 5, 9, NULL);
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 2);
	/* continued, but slot 0 is two generations older (a pass in between) */
	(void)put(b, SLOT, 'S', TLR_CONT, 6, 9, NULL);
	(void)put(b, SLOT + TLR_HDR, 'F', 0, 6, 2, "{\"b\":2}");
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 2);
	assert_memory_equal(s.types, "SF", 2);
}

/* Cut inside a record's payload or header, a payload byte changed, a header
 * byte changed, a record running past its slot: the slot ends before it. */
static void test_cut_and_torn(void **state)
{
	(void)state;
	unsigned char b[2 * SLOT];
	memset(b, 0, sizeof b);
	size_t at = put(b, 0, 'S', 0, 2, 1, NULL);
	at = put(b, at, 'F', 0, 2, 1, "{\"x\":1}");
	size_t third = at;
	at = put(b, at, 'F', 0, 2, 2, "{\"x\":2}");
	struct seen s;
	scan(b, at, &s);
	assert_int_equal(s.n, 3);
	scan(b, at - 1, &s); /* cut in the payload */
	assert_int_equal(s.n, 2);
	scan(b, third + 10, &s); /* cut in the header */
	assert_int_equal(s.n, 2);
	b[at - 2] ^= 0x20; /* payload torn */
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 2);
	b[at - 2] ^= 0x20;
	b[third + 3] ^= 1; /* header torn */
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 2);
	b[third + 3] ^= 1;
	/* a record claiming more bytes than its slot has left */
	tlr_head(b + third, 'F', 0, 2, 2, SLOT, 0);
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 2);
	/* no whole S: nothing */
	memset(b, 0, TLR_HDR);
	scan(b, sizeof b, &s);
	assert_int_equal(s.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sum_stable),
	    cmocka_unit_test(test_stale_after_head),
	    cmocka_unit_test(test_predecessor),
	    cmocka_unit_test(test_cut_and_torn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
