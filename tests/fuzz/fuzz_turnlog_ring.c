/* Fuzz target: the turn log's scan of a turn.ring (cortexd/core/turnlog_ring.c),
 * the file a restore reads after a crash (torn, cut, or of an older pass).
 * Input: byte 0 picks the slot size (32 + 32 * byte: 32 B to 8 KiB), the rest
 * is the file.  Invariants: every record handed out lies inside the file and
 * inside one slot, slots start with their S record, and a slot's records are
 * of its generation. */
#include <string.h>

#include "fuzz.h"
#include "turnlog_ring.h"

FUZZ_NO_INIT

struct ctx {
	const char *b;
	size_t len, slot;
	uint64_t gen; /* of the slot being read */
	size_t n;
};

static void on_rec(void *arg, const struct tlr_rec *r)
{
	struct ctx *c = arg;
	if (r->data < c->b || (size_t)(r->data - c->b) > c->len || r->len > c->len - (size_t)(r->data - c->b))
		FUZZ_FAIL();
	size_t at = (size_t)(r->data - c->b) - TLR_HDR;
	if (at / c->slot != (at + TLR_HDR + r->len - 1) / c->slot)
		FUZZ_FAIL(); /* a record across a slot's end */
	if (r->type == 'S') {
		if (at % c->slot)
			FUZZ_FAIL();
		c->gen = r->gen;
	} else if (r->gen != c->gen || !strchr("TLEF", r->type) || (r->type != 'F' && r->len)) {
		FUZZ_FAIL();
	}
	c->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct ctx c = {(const char *)data + 1, size - 1, 32 + 32 * (size_t)data[0], 0, 0};
	size_t n = tlr_scan(c.b, c.len, c.slot, on_rec, &c);
	if (n != c.n)
		FUZZ_FAIL();
	uint64_t gen;
	int newest = tlr_newest(c.b, c.len, c.slot, &gen);
	if ((newest < 0) != (n == 0) || (newest >= 0 && gen != c.gen))
		FUZZ_FAIL(); /* the newest slot is read last */
	return 0;
}
