/* guard.c — the stream guard (see guard.h).
 *
 * Matching: every pattern is at least GUARD_MIN_LEN (> 4) bytes, so a hash
 * of a pattern's first 4 bytes picks a short chain of candidates, behind an
 * 8 KB bit filter on the same hash; a scan looks up each start position once
 * and compares only on a head hit.  A feed
 * scans the starts in the kept tail (for matches that end in the new chunk)
 * in a window tail || chunk-prefix, then the starts in the chunk in place. */
#include "guard.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sodium.h>

#define GOLDEN	    0x9E3779B1u
#define FILTER_BITS 16 /* 8 KB: few patterns' heads set a bit, so most starts stop here */

struct gpat {
	const unsigned char *p; /* into guard.arena */
	uint32_t len;
	uint32_t head;	/* first 4 bytes */
	uint32_t which; /* index of the secret value */
	uint32_t next;	/* next pattern in the same bucket, + 1; 0 ends the chain */
};

struct guard {
	struct gpat *pat;
	size_t npat, max_len, min_len;
	uint32_t *bucket;			   /* first pattern + 1 per head hash; 0 = empty */
	unsigned shift;				   /* bucket index = head * GOLDEN >> shift */
	uint64_t filter[(1u << FILTER_BITS) / 64]; /* bit (head * GOLDEN >> (32 - FILTER_BITS)) */
	unsigned char *arena;
	size_t arena_len;
};

static inline uint32_t load32(const unsigned char *p)
{
	uint32_t w;
	memcpy(&w, p, sizeof w);
	return w;
}

static inline uint32_t bucket_of(const guard *g, uint32_t head)
{
	return (uint32_t)(head * GOLDEN) >> g->shift;
}

static inline uint32_t filter_of(uint32_t head)
{
	return (uint32_t)(head * GOLDEN) >> (32 - FILTER_BITS);
}

/* ---- building ---- */

struct cand {
	unsigned char *p; /* malloc'd */
	size_t len, which;
};

struct cands {
	struct cand *v;
	size_t n, cap;
};

static void cands_wipe(struct cands *c)
{
	for (size_t i = 0; i < c->n; i++) {
		sodium_memzero(c->v[i].p, c->v[i].len);
		free(c->v[i].p);
	}
	free(c->v);
	c->v = NULL;
	c->n = c->cap = 0;
}

/* Take a copy of p[0..len) as a candidate (skipped when too short). */
static int cands_add(struct cands *c, const unsigned char *p, size_t len, size_t which, cx_err *err)
{
	if (len < GUARD_MIN_LEN)
		return 0;
	if (len > UINT32_MAX)
		return cx_err_set(err, EOVERFLOW, "guard: pattern too long");
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct cand *v = realloc(c->v, cap * sizeof *v);
		if (!v)
			return cx_err_set(err, ENOMEM, "guard: pattern list");
		c->v = v;
		c->cap = cap;
	}
	unsigned char *q = malloc(len);
	if (!q)
		return cx_err_set(err, ENOMEM, "guard: pattern");
	memcpy(q, p, len);
	c->v[c->n++] = (struct cand){q, len, which};
	return 0;
}

/* The base64 characters that depend only on v when v sits at byte offset k
 * (0..2) of an encoded string: encode k zero bytes || v, keep characters
 * [ceil(8k/6), floor(8(k+len)/6)). */
static int add_core(struct cands *c, const unsigned char *v, size_t len, size_t which, int k,
		    int variant, unsigned char *scratch, char *enc, cx_err *err)
{
	size_t blen = (size_t)k + len;
	memset(scratch, 0, (size_t)k);
	memcpy(scratch + k, v, len);
	sodium_bin2base64(enc, sodium_base64_encoded_len(blen, variant), scratch, blen, variant);
	size_t lead = ((size_t)k * 8 + 5) / 6, end = blen * 8 / 6;
	return cands_add(c, (const unsigned char *)enc + lead, end - lead, which, err);
}

/* v and its encodings at offsets 0, 1, 2 in both alphabets.  v is at most
 * GUARD_PIECE bytes, so the buffers are fixed-size. */
static int add_forms(struct cands *c, const unsigned char *v, size_t len, size_t which, cx_err *err)
{
	static const int variants[] = {sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
				       sodium_base64_VARIANT_URLSAFE_NO_PADDING};
	unsigned char scratch[GUARD_PIECE + 2];
	char enc[(GUARD_PIECE + 2) / 3 * 4 + 8];
	int rc = cands_add(c, v, len, which, err);
	for (size_t i = 0; rc == 0 && i < sizeof variants / sizeof *variants; i++)
		for (int k = 0; rc == 0 && k < 3; k++)
			rc = add_core(c, v, len, which, k, variants[i], scratch, enc, err);
	sodium_memzero(scratch, sizeof scratch);
	sodium_memzero(enc, sizeof enc);
	return rc;
}

static int add_value(struct cands *c, const unsigned char *v, size_t len, size_t which, cx_err *err)
{
	if (len < GUARD_MIN_LEN)
		return 0;
	if (len <= GUARD_PIECE)
		return add_forms(c, v, len, which, err);
	for (size_t off = 0; off + GUARD_PIECE < len; off += GUARD_PIECE)
		if (add_forms(c, v + off, GUARD_PIECE, which, err) < 0)
			return -1;
	return add_forms(c, v + len - GUARD_PIECE, GUARD_PIECE, which, err);
}

/* Order: length, then bytes, then secret index — equal patterns end up
 * adjacent with the lowest index first. */
static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	int d = memcmp(x->p, y->p, x->len);
	if (d)
		return d;
	return (x->which > y->which) - (x->which < y->which);
}

int guard_build(guard **out, const char *const *values, const size_t *lens, size_t n, cx_err *err)
{
	*out = NULL;
	struct cands c = {NULL, 0, 0};
	for (size_t i = 0; i < n; i++)
		if (add_value(&c, (const unsigned char *)values[i], lens[i], i, err) < 0) {
			cands_wipe(&c);
			return cx_err_wrap(err, "secret %zu", i);
		}
	if (c.n)
		qsort(c.v, c.n, sizeof *c.v, cand_cmp);
	/* Drop duplicates (sorted: equal patterns are adjacent). */
	size_t kept = 0, bytes = 0;
	for (size_t i = 0; i < c.n; i++) {
		if (kept && c.v[kept - 1].len == c.v[i].len &&
		    memcmp(c.v[kept - 1].p, c.v[i].p, c.v[i].len) == 0) {
			sodium_memzero(c.v[i].p, c.v[i].len);
			free(c.v[i].p);
			continue;
		}
		c.v[kept++] = c.v[i];
		bytes += c.v[i].len;
	}
	c.n = kept;

	size_t nb = 64;
	unsigned shift = 26;
	while (nb < 4 * c.n && shift > 8) {
		nb *= 2;
		shift--;
	}
	guard *g = calloc(1, sizeof *g);
	if (g) {
		g->pat = calloc(c.n ? c.n : 1, sizeof *g->pat);
		g->bucket = calloc(nb, sizeof *g->bucket);
		g->arena = malloc(bytes ? bytes : 1);
	}
	if (!g || !g->pat || !g->bucket || !g->arena) {
		guard_free(g);
		cands_wipe(&c);
		return cx_err_set(err, ENOMEM, "guard: build");
	}
	g->npat = c.n;
	g->shift = shift;
	g->arena_len = bytes;
	g->min_len = c.n ? SIZE_MAX : 0;
	unsigned char *a = g->arena;
	/* Insert longest first so each chain lists shorter patterns first:
	 * the earliest-ending candidate at a position is tried first. */
	for (size_t i = c.n; i-- > 0;) {
		struct gpat *p = &g->pat[i];
		memcpy(a, c.v[i].p, c.v[i].len);
		p->p = a;
		a += c.v[i].len;
		p->len = (uint32_t)c.v[i].len;
		p->head = load32(p->p);
		p->which = (uint32_t)c.v[i].which;
		uint32_t b = bucket_of(g, p->head);
		uint32_t f = filter_of(p->head);
		g->filter[f / 64] |= (uint64_t)1 << (f % 64);
		p->next = g->bucket[b];
		g->bucket[b] = (uint32_t)i + 1;
		if (p->len > g->max_len)
			g->max_len = p->len;
		if (p->len < g->min_len)
			g->min_len = p->len;
	}
	cands_wipe(&c);
	*out = g;
	return 0;
}

void guard_free(guard *g)
{
	if (!g)
		return;
	if (g->arena)
		sodium_memzero(g->arena, g->arena_len);
	if (g->pat)
		sodium_memzero(g->pat, g->npat * sizeof *g->pat);
	if (g->bucket)
		sodium_memzero(g->bucket, ((size_t)1 << (32 - g->shift)) * sizeof *g->bucket);
	sodium_memzero(g->filter, sizeof g->filter);
	free(g->arena);
	free(g->pat);
	free(g->bucket);
	free(g);
}

size_t guard_patterns(const guard *g)
{
	return g ? g->npat : 0;
}

size_t guard_max_len(const guard *g)
{
	return g ? g->max_len : 0;
}

/* ---- scanning ---- */

void guard_scan_init(struct guard_scan *s)
{
	s->tail = NULL;
	s->tail_len = s->cap = 0;
}

void guard_scan_reset(struct guard_scan *s)
{
	if (s->tail)
		sodium_memzero(s->tail, s->cap);
	s->tail_len = 0;
}

void guard_scan_free(struct guard_scan *s)
{
	guard_scan_reset(s);
	free(s->tail);
	guard_scan_init(s);
}

/* Look for a pattern starting in [from, to) of buf[0..len) that ends after
 * min_end.  Returns the pattern index + 1, or 0. */
static size_t scan(const guard *g, const unsigned char *buf, size_t len, size_t from, size_t to,
		   size_t min_end)
{
	if (len < g->min_len)
		return 0;
	size_t last = len - g->min_len; /* no pattern fits past here */
	if (to > last + 1)
		to = last + 1;
	for (size_t p = from; p < to; p++) {
		uint32_t head = load32(buf + p), f = filter_of(head);
		if (!(g->filter[f / 64] >> (f % 64) & 1))
			continue;
		for (uint32_t b = g->bucket[bucket_of(g, head)]; b; b = g->pat[b - 1].next) {
			const struct gpat *pt = &g->pat[b - 1];
			size_t end = p + pt->len;
			if (pt->head != head || end > len || end <= min_end)
				continue;
			if (memcmp(buf + p + 4, pt->p + 4, pt->len - 4) == 0)
				return b;
		}
	}
	return 0;
}

int guard_feed(struct guard_scan *s, const guard *g, const char *text, size_t n, size_t *which,
	       cx_err *err)
{
	if (!g || g->npat == 0 || n == 0)
		return 0;
	size_t keep = g->max_len - 1;
	if (s->cap < 2 * keep) {
		char *t = malloc(2 * keep);
		if (!t)
			return cx_err_set(err, ENOMEM, "guard: scan tail");
		if (s->tail) {
			memcpy(t, s->tail, s->tail_len);
			sodium_memzero(s->tail, s->cap);
			free(s->tail);
		}
		s->tail = t;
		s->cap = 2 * keep;
	}
	unsigned char *tail = (unsigned char *)s->tail;
	const unsigned char *t = (const unsigned char *)text;
	size_t tl = s->tail_len;
	if (tl > keep) { /* kept for a guard with longer patterns */
		memmove(tail, tail + tl - keep, keep);
		tl = keep;
	}
	/* Window tail || first bytes of the chunk: starts in the tail. */
	size_t add = n < keep ? n : keep;
	memcpy(tail + tl, t, add);
	size_t hit = tl ? scan(g, tail, tl + add, 0, tl, tl) : 0;
	/* Starts in the chunk, in place. */
	if (!hit)
		hit = scan(g, t, n, 0, n, 0);
	/* The new tail: the last keep bytes of tail || chunk. */
	if (n >= keep) {
		memcpy(tail, t + n - keep, keep);
		s->tail_len = keep;
	} else if (tl + n > keep) {
		memmove(tail, tail + tl + n - keep, keep);
		s->tail_len = keep;
	} else {
		s->tail_len = tl + n;
	}
	if (hit && which)
		*which = g->pat[hit - 1].which;
	return hit ? 1 : 0;
}
