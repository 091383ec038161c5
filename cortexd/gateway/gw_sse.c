/* gw_sse.c — usage, model and error from a provider response (see gw_sse.h). */
#include "gw_sse.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_sse_init(struct gw_sse *p, int sse)
{
	memset(p, 0, sizeof *p);
	p->sse = sse;
}

void gw_sse_free(struct gw_sse *p)
{
	free(p->line);
	free(p->jbuf);
	p->line = p->jbuf = NULL;
	p->line_len = p->jlen = 0;
}

static uint64_t ju64(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

static void take_usage(struct gw_sse *p, json_t *u)
{
	if (!json_is_object(u))
		return;
	uint64_t v;
	if (json_object_get(u, "output_tokens"))
		p->usage.output = ju64(u, "output_tokens");
	/* message_start carries input and cache counts; newer message_delta
	 * events repeat them cumulatively (take them when present). */
	if ((v = ju64(u, "input_tokens")))
		p->usage.input = v;
	if ((v = ju64(u, "cache_read_input_tokens")))
		p->usage.cache_read = v;
	if ((v = ju64(u, "cache_creation_input_tokens")))
		p->usage.cache_creation = v;
}

static void take_error(struct gw_sse *p, json_t *o)
{
	json_t *e = json_object_get(o, "error");
	const char *m = json_string_value(json_object_get(e, "message"));
	if (m)
		snprintf(p->error, sizeof p->error, "%s", m);
}

static void take_model(struct gw_sse *p, json_t *o)
{
	const char *m = json_string_value(json_object_get(o, "model"));
	if (m && *m)
		snprintf(p->model, sizeof p->model, "%s", m);
}

/* memmem of a literal; a function so gcc's -Wnonnull under sanitizers keeps quiet. */
static __attribute__((noinline)) int has(const char *h, size_t n, const char *lit)
{
	size_t ln = strlen(lit);
	return h && n >= ln && memmem(h, n, lit, ln) != NULL;
}

/* One SSE line (no "\n").  Only data lines that can matter are decoded. */
static void sse_line(struct gw_sse *p, const char *l, size_t n)
{
	if (n && l[n - 1] == '\r')
		n--;
	if (n < 5 || memcmp(l, "data:", 5))
		return;
	l += 5, n -= 5;
	while (n && *l == ' ')
		l++, n--;
	if (has(l, n, "message_stop")) {
		p->saw_stop = 1;
		return;
	}
	if (!has(l, n, "message_start") && !has(l, n, "message_delta") && !has(l, n, "\"error\""))
		return;
	json_t *o = json_loadb(l, n, 0, NULL);
	const char *t = json_string_value(json_object_get(o, "type"));
	if (!t) {
		/* not an event */
	} else if (!strcmp(t, "message_start")) {
		json_t *m = json_object_get(o, "message");
		take_model(p, m);
		take_usage(p, json_object_get(m, "usage"));
	} else if (!strcmp(t, "message_delta")) {
		take_usage(p, json_object_get(o, "usage"));
	} else if (!strcmp(t, "error")) {
		take_error(p, o);
	}
	json_decref(o);
}

/* Append to the line being assembled; past the cap the line is skipped. */
static void line_append(struct gw_sse *p, const char *b, size_t n)
{
	if (p->line_skip || !n)
		return;
	if (p->line_len + n > GW_SSE_CAP_LINE) {
		p->line_skip = 1;
		return;
	}
	char *nb = realloc(p->line, p->line_len + n + 1);
	if (!nb) {
		p->line_skip = 1;
		return;
	}
	p->line = nb;
	memcpy(p->line + p->line_len, b, n);
	p->line_len += n;
}

static void sse_feed(struct gw_sse *p, const char *b, size_t n)
{
	while (n) {
		const char *nl = memchr(b, '\n', n);
		size_t take = nl ? (size_t)(nl - b) : n;
		line_append(p, b, take);
		if (!nl)
			return;
		if (!p->line_skip && p->line_len)
			sse_line(p, p->line, p->line_len);
		p->line_len = 0;
		p->line_skip = 0;
		b = nl + 1;
		n -= take + 1;
	}
}

static void json_feed(struct gw_sse *p, const char *b, size_t n)
{
	if (p->jover || p->jlen + n > GW_SSE_CAP_JSON) {
		p->jover = 1;
		return;
	}
	char *nb = realloc(p->jbuf, p->jlen + n);
	if (!nb) {
		p->jover = 1;
		return;
	}
	p->jbuf = nb;
	memcpy(p->jbuf + p->jlen, b, n);
	p->jlen += n;
}

void gw_sse_feed(struct gw_sse *p, const char *b, size_t n)
{
	if (!b || !n)
		return;
	if (p->sse)
		sse_feed(p, b, n);
	else
		json_feed(p, b, n);
}

void gw_sse_finish(struct gw_sse *p, int status)
{
	if (p->sse && p->line_len && !p->line_skip)
		sse_line(p, p->line, p->line_len);
	p->line_len = 0;
	if (!p->sse && p->jbuf && !p->jover) {
		json_t *o = json_loadb(p->jbuf, p->jlen, 0, NULL);
		if (json_is_object(o)) {
			take_model(p, o);
			take_usage(p, json_object_get(o, "usage"));
			if (status >= 400)
				take_error(p, o);
		}
		json_decref(o);
	}
}

void gw_sse_request(struct gw_sse *p, const char *body, size_t n)
{
	p->req_stream = has(body, n, "\"stream\":true");
	/* Bodies are usually a few hundred KiB; this runs off the service thread. */
	if (!p->model[0] && body && n <= GW_SSE_CAP_JSON) {
		json_t *o = json_loadb(body, n, 0, NULL);
		take_model(p, o);
		json_decref(o);
	}
}
