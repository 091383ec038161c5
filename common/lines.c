/* lines.c — split the agent's output into lines, with a cap per line, and
 * UTF-8 helpers (WebSocket text frames must be valid UTF-8, or the peer drops
 * the whole connection). */
#include "lines.h"

#include <stdint.h>
#include <stdlib.h>

#include <errno.h>
#include <jansson.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

void cx_lines_init(struct cx_lines *l, size_t cap, bool split)
{
	*l = (struct cx_lines){.cap = cap, .split = split};
}

void cx_lines_free(struct cx_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->alloc = 0;
	l->dropping = false;
}

static int append(struct cx_lines *l, const char *data, size_t n, cx_err *err)
{
	if (l->len + n > l->alloc) {
		size_t want = l->alloc ? l->alloc : 4096;
		while (want < l->len + n)
			want *= 2;
		if (want > l->cap)
			want = l->cap;
		char *nb = realloc(l->buf, want);
		if (!nb)
			return cx_err_set(err, ENOMEM, "line buffer");
		l->buf = nb;
		l->alloc = want;
	}
	memcpy(l->buf + l->len, data, n);
	l->len += n;
	return 0;
}

int cx_lines_feed(struct cx_lines *l, const char *data, size_t n, cx_line_fn fn, void *arg,
		   cx_err *err)
{
	while (n) {
		const char *nl = memchr(data, '\n', n);
		size_t seg = nl ? (size_t)(nl - data) : n;
		int rc;

		if (l->dropping) {
			/* Still inside an over-long line: skip to its end. */
			if (nl)
				l->dropping = false;
		} else if (l->len + seg > l->cap) {
			size_t take = l->cap - l->len;
			if (l->split) {
				if (append(l, data, take, err) < 0)
					return -1;
				rc = fn(arg, l->buf, l->len, true);
				l->len = 0;
				if (rc)
					return rc;
				data += take;
				n -= take;
				continue; /* the rest of the line is a new piece */
			}
			l->len = 0;
			l->dropping = !nl;
			if ((rc = fn(arg, NULL, 0, true)))
				return rc;
		} else if (nl) {
			const char *line = data;
			size_t len = seg;
			if (l->len) {
				if (append(l, data, seg, err) < 0)
					return -1;
				line = l->buf;
				len = l->len;
			}
			l->len = 0;
			if ((rc = fn(arg, line, len, false)))
				return rc;
		} else if (append(l, data, seg, err) < 0) {
			return -1;
		}
		if (!nl)
			break;
		data += seg + 1;
		n -= seg + 1;
	}
	return 0;
}

int cx_lines_preload(struct cx_lines *l, const char *data, size_t n, bool dropping, cx_err *err)
{
	l->len = 0;
	l->dropping = dropping;
	if (dropping || !n)
		return 0;
	if (n > l->cap || memchr(data, '\n', n))
		return cx_err_set(err, EINVAL, "a partial line of %zu bytes (cap %zu)", n, l->cap);
	return append(l, data, n, err);
}

int cx_lines_finish(struct cx_lines *l, cx_line_fn fn, void *arg)
{
	int rc = 0;
	if (l->len && !l->dropping)
		rc = fn(arg, l->buf, l->len, false);
	l->len = 0;
	l->dropping = false;
	return rc;
}

bool cx_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		/* ASCII 16 (SSE2, every x86-64) or eight bytes at a time (most of
		 * an agent's output): the per-byte walk was a large part of
		 * ws-agent's CPU in a flood. */
#if defined(__SSE2__)
		while (n - i >= 16 &&
		       !_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + i))))
			i += 16;
		if (i == n)
			break;
#endif
		if (n - i >= 8) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			if (!(w & 0x8080808080808080ull)) {
				i += 8;
				continue;
			}
		}
		size_t k = cx_utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

char *cx_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
	/* Worst case: every byte becomes the 3-byte U+FFFD. */
	char *out = malloc(n * 3 + 1);
	if (!out)
		return NULL;
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, o = 0;
	while (i < n) {
		size_t k = cx_utf8_seq(p + i, n - i);
		if (k) {
			memcpy(out + o, p + i, k);
			o += k;
			i += k;
		} else {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	if (out_len)
		*out_len = o;
	return out;
}

bool cx_line_spoofs_event(const char *line, size_t len)
{
	/* Only a line mentioning "wsa. at all is parsed.  Found quote by quote
	 * with memchr (vectorised): glibc's memmem for this needle was 7-9 % of
	 * ws-agent's CPU in a flood of 64 KB deltas, whose text has no quote. */
	bool mentions = false, escaped = false;
	const char *end = line + len;
	for (const char *q = line; !mentions && (q = memchr(q, '"', (size_t)(end - q))); q++)
		mentions = (size_t)(end - q) >= 5 && !memcmp(q + 1, "wsa.", 4);
	/* The type (or its key) spelt with \u escapes decodes to "wsa." too
	 * without those bytes appearing: a line with a \u escape is parsed
	 * as well (a backslash and the byte it escapes are skipped together). */
	for (const char *q = line; !mentions && !escaped && (q = memchr(q, '\\', (size_t)(end - q))); q += 2)
		escaped = end - q >= 2 && q[1] == 'u';
	if (!mentions && !escaped)
		return false;
	json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	const char *t = json_string_value(json_object_get(o, "type"));
	bool wsa_type = json_is_object(o) && t && !strncmp(t, "wsa.", 4);
	bool spoof = wsa_type || (mentions && !json_is_object(o));
	json_decref(o);
	return spoof; /* unparsable with "wsa. inside: cortexd could not read it either */
}
