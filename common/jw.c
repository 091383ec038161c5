/* jw.c — see jw.h. */
#include "jw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx.h"

int jw_init(struct jw *w, size_t cap)
{
	memset(w, 0, sizeof *w);
	w->buf = malloc(cap);
	if (!w->buf || cap < 2) {
		free(w->buf);
		w->buf = NULL;
		w->failed = 1;
		return -1;
	}
	w->cap = cap;
	w->buf[w->len++] = '{';
	w->first[0] = 1;
	return 0;
}

void jw_free(struct jw *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

/* Room for n more bytes and the NUL, else the writer fails. */
static int room(struct jw *w, size_t n)
{
	if (w->failed || w->len + n + 1 > w->cap) {
		w->failed = 1;
		return 0;
	}
	return 1;
}

static void put(struct jw *w, const char *s, size_t n)
{
	if (room(w, n)) {
		memcpy(w->buf + w->len, s, n);
		w->len += n;
	}
}

/* ,"key": (no comma before a level's first member) */
static void key(struct jw *w, const char *k)
{
	size_t kl = strlen(k);
	if (!room(w, kl + 4))
		return;
	if (!w->first[w->depth])
		w->buf[w->len++] = ',';
	w->first[w->depth] = 0;
	w->buf[w->len++] = '"';
	memcpy(w->buf + w->len, k, kl);
	w->len += kl;
	w->buf[w->len++] = '"';
	w->buf[w->len++] = ':';
}

void jw_str(struct jw *w, const char *k, const char *s)
{
	size_t n = s ? cx_json_str_len(s) : 0;
	if (!n) { /* NULL or not UTF-8: json_pack's "s" refuses both */
		w->failed = 1;
		return;
	}
	key(w, k);
	if (room(w, n))
		w->len = (size_t)(cx_json_str_put(w->buf + w->len, s) - w->buf);
}

void jw_int(struct jw *w, const char *k, long long v)
{
	char b[24];
	int n = snprintf(b, sizeof b, "%lld", v);
	key(w, k);
	put(w, b, (size_t)n);
}

size_t jw_real_fmt(char *buf, double v)
{
	if (!isfinite(v))
		return 0;
	int n = snprintf(buf, 32, "%.17g", v);
	if (n <= 0 || n >= 29)
		return 0; /* (cannot happen: %.17g is at most 24 bytes) */
	/* jansson: a real always shows as one (".0" when %g wrote an integer),
	 * and its exponent has no '+' and no leading zeros. */
	char *e = strchr(buf, 'e');
	if (!e && !strchr(buf, '.')) {
		memcpy(buf + n, ".0", 3);
		return (size_t)n + 2;
	}
	if (e) {
		char *from = e + 1, *to = e + 1;
		if (*from == '-')
			from++, to++;
		else if (*from == '+')
			from++;
		while (*from == '0' && from[1])
			from++;
		memmove(to, from, strlen(from) + 1);
		return strlen(buf);
	}
	return (size_t)n;
}

void jw_real(struct jw *w, const char *k, double v)
{
	char b[32];
	size_t n = jw_real_fmt(b, v);
	if (!n) {
		w->failed = 1;
		return;
	}
	key(w, k);
	put(w, b, n);
}

void jw_bool(struct jw *w, const char *k, int v)
{
	key(w, k);
	if (v)
		put(w, "true", 4);
	else
		put(w, "false", 5);
}

void jw_null(struct jw *w, const char *k)
{
	key(w, k);
	put(w, "null", 4);
}

void jw_open(struct jw *w, const char *k)
{
	if (w->depth + 1 >= JW_DEPTH) {
		w->failed = 1;
		return;
	}
	key(w, k);
	put(w, "{", 1);
	w->first[++w->depth] = 1;
}

void jw_close(struct jw *w)
{
	put(w, "}", 1);
	if (w->depth > 0)
		w->depth--;
}

char *jw_take(struct jw *w, size_t *len)
{
	char *b = NULL;
	if (!w->failed && w->buf) {
		b = w->buf;
		b[w->len] = '\0';
		if (len)
			*len = w->len;
		w->buf = NULL;
	}
	jw_free(w);
	return b;
}
