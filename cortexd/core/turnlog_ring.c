/* turnlog_ring.c — see turnlog_ring.h. */
#include "turnlog_ring.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "turn.ring is little-endian: headers are copied as they lie");

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

/* Fletcher-like over four 64-bit lanes (a position-weighted sum per lane, so
 * swapped or replaced pages change it), then mixed down to 32 bits.  SSE2
 * where there is SSE2 (the lanes two by two, the same sums), else plain C. */
uint32_t tlr_sum(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t a[4] = {1, 2, 3, 4}, b[4] = {0, 0, 0, 0};
	size_t i = 0;
#ifdef __SSE2__
	__m128i a01 = _mm_set_epi64x(2, 1), a23 = _mm_set_epi64x(4, 3);
	__m128i b01 = _mm_setzero_si128(), b23 = _mm_setzero_si128();
	for (; i + 32 <= n; i += 32) {
		a01 = _mm_add_epi64(a01, _mm_loadu_si128((const __m128i *)(const void *)(c + i)));
		a23 = _mm_add_epi64(a23, _mm_loadu_si128((const __m128i *)(const void *)(c + i + 16)));
		b01 = _mm_add_epi64(b01, a01);
		b23 = _mm_add_epi64(b23, a23);
	}
	_mm_storeu_si128((__m128i *)(void *)a, a01);
	_mm_storeu_si128((__m128i *)(void *)(a + 2), a23);
	_mm_storeu_si128((__m128i *)(void *)b, b01);
	_mm_storeu_si128((__m128i *)(void *)(b + 2), b23);
#endif
	for (; i + 32 <= n; i += 32) {
		for (int k = 0; k < 4; k++) {
			uint64_t w;
			memcpy(&w, c + i + 8 * k, 8);
			a[k] += w;
			b[k] += a[k];
		}
	}
	while (i < n) {
		uint64_t w = 0;
		size_t m = n - i < 8 ? n - i : 8;
		memcpy(&w, c + i, m);
		a[0] += w;
		b[0] += a[0];
		i += m;
	}
	uint64_t h = mix(0x243f6a8885a308d3ull, n);
	for (int k = 0; k < 4; k++)
		h = mix(mix(h, a[k]), b[k]);
	return (uint32_t)(h ^ (h >> 32));
}

void tlr_head(unsigned char out[TLR_HDR], char type, uint8_t flags, uint64_t gen, uint64_t val,
	      size_t len, uint32_t sum)
{
	uint32_t len32 = (uint32_t)len;
	memcpy(out, &gen, 8);
	memcpy(out + 8, &val, 8);
	memcpy(out + 16, &len32, 4);
	out[20] = (unsigned char)type;
	out[21] = flags;
	out[22] = out[23] = 0;
	memcpy(out + 24, &sum, 4);
	uint32_t hsum = tlr_sum(out, 28);
	memcpy(out + 28, &hsum, 4);
}

int tlr_head_parse(const unsigned char h[TLR_HDR], struct tlr_rec *out)
{
	uint32_t hsum, len32;
	memcpy(&hsum, h + 28, 4);
	if (hsum != tlr_sum(h, 28) || h[22] || h[23])
		return -1;
	char type = (char)h[20];
	if (!strchr("STLEF", type) || !type)
		return -1;
	memcpy(&out->gen, h, 8);
	memcpy(&out->val, h + 8, 8);
	memcpy(&len32, h + 16, 4);
	out->type = type;
	out->flags = h[21];
	out->len = len32;
	out->data = NULL;
	if (!out->gen || (type != 'F' && out->len))
		return -1; /* generations start at 1; only frames carry bytes */
	return 0;
}

/* The S record at a slot's start, or -1. */
static int slot_head(const char *b, size_t len, size_t slot, unsigned i, struct tlr_rec *out)
{
	size_t at = (size_t)i * slot;
	if (slot < TLR_HDR || at > len || len - at < TLR_HDR)
		return -1;
	if (tlr_head_parse((const unsigned char *)b + at, out) < 0 || out->type != 'S')
		return -1;
	return 0;
}

int tlr_newest(const char *b, size_t len, size_t slot, uint64_t *gen_out)
{
	int best = -1;
	uint64_t gen = 0;
	for (unsigned i = 0; i < TLR_SLOTS; i++) {
		struct tlr_rec r;
		if (slot_head(b, len, slot, i, &r) == 0 && r.gen > gen) {
			gen = r.gen;
			best = (int)i;
		}
	}
	*gen_out = gen;
	return best;
}

/* One slot's records, the S first, to fn. */
static size_t scan_slot(const char *b, size_t len, size_t slot, unsigned i, tlr_fn fn, void *arg)
{
	struct tlr_rec r;
	if (slot_head(b, len, slot, i, &r) < 0)
		return 0;
	uint64_t gen = r.gen;
	size_t at = (size_t)i * slot, end = at + slot < len ? at + slot : len;
	size_t n = 0;
	for (;;) {
		r.data = (const char *)b + at + TLR_HDR;
		fn(arg, &r);
		n++;
		at += TLR_HDR + r.len;
		if (at > end || end - at < TLR_HDR)
			break;
		if (tlr_head_parse((const unsigned char *)b + at, &r) < 0 || r.gen != gen ||
		    r.type == 'S' || r.len > end - at - TLR_HDR)
			break; /* stale (an older pass), cut or torn: the slot ends here */
		uint32_t sum;
		memcpy(&sum, b + at + 24, 4);
		if (sum != tlr_sum(b + at + TLR_HDR, r.len))
			break;
	}
	return n;
}

size_t tlr_scan(const char *b, size_t len, size_t slot, tlr_fn fn, void *arg)
{
	uint64_t gen;
	int newest = tlr_newest(b, len, slot, &gen);
	if (newest < 0)
		return 0;
	size_t n = 0;
	struct tlr_rec head, prev;
	(void)slot_head(b, len, slot, (unsigned)newest, &head);
	for (unsigned i = 0; i < TLR_SLOTS; i++) {
		if ((int)i != newest && (head.flags & TLR_CONT) && slot_head(b, len, slot, i, &prev) == 0 &&
		    prev.gen == gen - 1)
			n += scan_slot(b, len, slot, i, fn, arg);
	}
	return n + scan_slot(b, len, slot, (unsigned)newest, fn, arg);
}
