/* mitm_head.c — what the broker changes in an intercepted exchange: the
 * request head (placeholders → values, one request per connection) and the
 * response bytes (values → '*').  Pure functions over buffers; see
 * mitm-internal.h.
 *
 * Why `Connection: close`: only the first request head of a connection is
 * read and rewritten; after it, bytes flow untouched in both directions (no
 * HTTP framing is parsed: bodies, chunking and pipelining stay the client's
 * and the server's business).  A second request on a kept-alive connection
 * would therefore reach the upstream with its placeholders unreplaced, so the
 * upstream is told to close after its answer, and the client opens a new
 * (again intercepted) connection for its next request. */
#include "mitm-internal.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <strings.h>

#define B64 sodium_base64_VARIANT_ORIGINAL

void mitm_free_secret(char *p, size_t len)
{
	if (!p)
		return;
	sodium_memzero(p, len);
	free(p);
}

/* A growing output that never leaves a copy of a value behind when it moves. */
struct obuf {
	char *p;
	size_t len, cap, max;
};

static int ob_put(struct obuf *b, const void *s, size_t n)
{
	if (n == 0)
		return 0; /* nothing to copy (b->p may still be NULL: no arithmetic on it) */
	if (n > b->max - b->len)
		return -1;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + n)
			cap *= 2;
		if (cap > b->max)
			cap = b->max;
		char *p = malloc(cap);
		if (!p)
			return -1;
		if (b->len)
			memcpy(p, b->p, b->len);
		mitm_free_secret(b->p, b->cap);
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

static int ob_puts(struct obuf *b, const char *s)
{
	return ob_put(b, s, strlen(s));
}

/* s[0..n) with every placeholder replaced, appended to b. */
static int put_swapped(struct obuf *b, const char *s, size_t n, const struct mitm_swap *sw,
		       size_t nsw, unsigned *count)
{
	size_t i = 0;
	for (;;) {
		const char *best = NULL;
		size_t bi = 0;
		for (size_t k = 0; k < nsw; k++) {
			size_t pl = strlen(sw[k].placeholder);
			if (!pl || pl > n - i)
				continue;
			const char *at = memmem(s + i, n - i, sw[k].placeholder, pl);
			if (at && (!best || at < best)) {
				best = at;
				bi = k;
			}
		}
		if (!best)
			return ob_put(b, s + i, n - i);
		size_t pre = (size_t)(best - (s + i));
		if (ob_put(b, s + i, pre) < 0 || ob_puts(b, sw[bi].value) < 0)
			return -1;
		(*count)++;
		i += pre + strlen(sw[bi].placeholder);
	}
}

static int name_is(const char *line, size_t nlen, const char *name)
{
	return nlen == strlen(name) && strncasecmp(line, name, nlen) == 0;
}

/* Does a Connection header's value list the token "upgrade"? */
static int lists_upgrade(const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == 7 && strncasecmp(v + s, "upgrade", 7) == 0)
			return 1;
	}
	return 0;
}

/* `Authorization: Basic <b64>`: swap inside the decoded user:password.
 * 1 if it was written to b (something was swapped), 0 if the caller should
 * treat the line as any other, -1 on overflow. */
static int put_basic(struct obuf *b, const char *line, size_t nlen, const char *v, size_t vn,
		     const struct mitm_swap *sw, size_t nsw, unsigned *count)
{
	if (vn < 6 || strncasecmp(v, "basic ", 6) != 0)
		return 0;
	const char *b64 = v + 6;
	size_t bn = vn - 6;
	while (bn && *b64 == ' ')
		b64++, bn--;
	while (bn && (b64[bn - 1] == ' ' || b64[bn - 1] == '\t'))
		bn--;
	size_t cap = bn / 4 * 3 + 3, bin_len = 0;
	char *bin = malloc(cap);
	if (!bin)
		return -1;
	const char *end = NULL;
	if (sodium_base642bin((unsigned char *)bin, cap, b64, bn, NULL, &bin_len, &end, B64) != 0 ||
	    end != b64 + bn) {
		mitm_free_secret(bin, cap);
		return 0;
	}
	struct obuf dec = {NULL, 0, 0, b->max};
	unsigned n = 0;
	int r = put_swapped(&dec, bin, bin_len, sw, nsw, &n);
	mitm_free_secret(bin, cap);
	if (r < 0 || n == 0) {
		mitm_free_secret(dec.p, dec.cap);
		return r < 0 ? -1 : 0;
	}
	size_t elen = sodium_base64_encoded_len(dec.len, B64);
	char *enc = elen <= b->max ? malloc(elen) : NULL;
	if (!enc) {
		mitm_free_secret(dec.p, dec.cap);
		return -1;
	}
	sodium_bin2base64(enc, elen, (const unsigned char *)dec.p, dec.len, B64);
	mitm_free_secret(dec.p, dec.cap);
	r = ob_put(b, line, nlen) < 0 || ob_puts(b, ": Basic ") < 0 || ob_puts(b, enc) < 0 ||
		    ob_puts(b, "\r\n") < 0
		? -1
		: 1;
	mitm_free_secret(enc, elen);
	*count += n;
	return r;
}

size_t mitm_head_end(const char *buf, size_t len)
{
	for (const char *p = buf; (p = memchr(p, '\n', len - (size_t)(p - buf))); p++) {
		size_t i = (size_t)(p - buf);
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
		if (i + 1 >= len)
			break;
	}
	return 0;
}

int mitm_head_rewrite(const char *head, size_t len, const struct mitm_swap *sw, size_t nsw,
		      size_t cap, char **out, size_t *out_len, unsigned *swapped, cx_err *err)
{
	*out = NULL;
	*out_len = 0;
	struct obuf b = {NULL, 0, 0, cap};
	unsigned count = 0;
	int upgrade = 0, first = 1, dropping = 0;
	size_t i = 0;
	while (i < len) {
		const char *nl = memchr(head + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - head) : len, next = nl ? e + 1 : len;
		size_t n = e - i;
		if (n && head[e - 1] == '\r')
			n--;
		const char *line = head + i;
		i = next;
		if (n == 0)
			break; /* the blank line: the head ends */
		int r = 0;
		if (first) {
			first = 0;
			r = put_swapped(&b, line, n, sw, nsw, &count) < 0 || ob_puts(&b, "\r\n") < 0;
			if (r)
				goto overflow;
			continue;
		}
		if (line[0] == ' ' || line[0] == '\t') { /* obsolete line folding */
			if (!dropping && (put_swapped(&b, line, n, sw, nsw, &count) < 0 ||
					  ob_puts(&b, "\r\n") < 0))
				goto overflow;
			continue;
		}
		const char *colon = memchr(line, ':', n);
		if (!colon) {
			mitm_free_secret(b.p, b.cap);
			return mitm_fail(err, EINVAL, "broker: a request header line has no colon");
		}
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		size_t vn = n - nlen - 1;
		while (vn && (*v == ' ' || *v == '\t'))
			v++, vn--;
		dropping = 0;
		if (name_is(line, nlen, "connection")) {
			upgrade |= lists_upgrade(v, vn);
			dropping = 1;
			continue;
		}
		if (name_is(line, nlen, "proxy-connection") || name_is(line, nlen, "keep-alive")) {
			dropping = 1;
			continue;
		}
		if (name_is(line, nlen, "authorization") ||
		    name_is(line, nlen, "proxy-authorization")) {
			r = put_basic(&b, line, nlen, v, vn, sw, nsw, &count);
			if (r < 0)
				goto overflow;
			if (r > 0)
				continue;
		}
		if (put_swapped(&b, line, n, sw, nsw, &count) < 0 || ob_puts(&b, "\r\n") < 0)
			goto overflow;
	}
	if (first) {
		mitm_free_secret(b.p, b.cap);
		return mitm_fail(err, EINVAL, "broker: empty request head");
	}
	if (ob_puts(&b, upgrade ? "Connection: upgrade, close\r\n\r\n" : "Connection: close\r\n\r\n") <
	    0)
		goto overflow;
	*out = b.p;
	*out_len = b.len;
	*swapped += count;
	return 0;
overflow:
	mitm_free_secret(b.p, b.cap);
	return mitm_fail(err, EMSGSIZE, "broker: request head over %zu bytes", cap);
}

unsigned mitm_redact(char *buf, size_t len, const struct mitm_swap *sw, size_t nsw)
{
	unsigned n = 0;
	for (size_t k = 0; k < nsw; k++) {
		size_t vl = strlen(sw[k].value);
		if (!vl)
			continue;
		char *p = buf;
		while ((size_t)(p - buf) + vl <= len &&
		       (p = memmem(p, len - (size_t)(p - buf), sw[k].value, vl))) {
			memset(p, '*', vl);
			p += vl;
			n++;
		}
	}
	return n;
}

size_t mitm_partial_tail(const char *buf, size_t len, const struct mitm_swap *sw, size_t nsw)
{
	size_t hold = 0;
	for (size_t k = 0; k < nsw; k++) {
		size_t vl = strlen(sw[k].value);
		if (vl < 2)
			continue;
		/* Start positions inside the last vl-1 bytes, furthest first: the
		 * first that matches is the longest. */
		size_t from = len > vl - 1 ? len - (vl - 1) : 0;
		for (size_t p = from; p < len && len - p > hold; p++)
			if (buf[p] == sw[k].value[0] && !memcmp(buf + p, sw[k].value, len - p)) {
				hold = len - p;
				break;
			}
	}
	return hold;
}

size_t mitm_swap_max_value(const struct mitm_swap *sw, size_t nsw)
{
	size_t m = 0;
	for (size_t k = 0; k < nsw; k++) {
		size_t vl = strlen(sw[k].value);
		if (vl > m)
			m = vl;
	}
	return m;
}
