/* agent_line.c — see agent_line.h. */
#include "agent_line.h"

#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static const char *str_of(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int eq(const char *a, const char *b) { return a && !strcmp(a, b); }

static void parse_wsa(struct agent_line *l)
{
	const char *t = l->type + 4;
	l->wsa = eq(t, "started") ? WSA_STARTED
		 : eq(t, "exit")   ? WSA_EXIT
		 : eq(t, "stderr") ? WSA_STDERR
		 : eq(t, "error")  ? WSA_ERROR
		 : eq(t, "detached") ? WSA_DETACHED
		 : eq(t, "attached") ? WSA_ATTACHED
				   : WSA_OTHER;
	json_t *g = json_object_get(l->o, "gen");
	if (json_is_integer(g) && json_integer_value(g) >= 0) {
		l->has_gen = 1;
		l->gen = (uint64_t)json_integer_value(g);
	}
}

static void parse_output(struct agent_line *l)
{
	if (eq(l->type, "result")) {
		l->is_result = 1;
		l->is_error = json_is_true(json_object_get(l->o, "is_error"));
		l->result = str_of(l->o, "result");
		return;
	}
	if (!eq(l->type, "stream_event"))
		return;
	json_t *ev = json_object_get(l->o, "event");
	const char *et = str_of(ev, "type");
	if (eq(et, "content_block_delta")) {
		json_t *d = json_object_get(ev, "delta");
		json_t *txt = json_object_get(d, "text");
		if (eq(str_of(d, "type"), "text_delta") && json_is_string(txt)) {
			l->is_delta = 1;
			l->delta_text = json_string_value(txt);
			l->delta_len = json_string_length(txt);
		}
	} else if (eq(et, "content_block_stop") || eq(et, "message_stop")) {
		l->block_end = 1;
	}
}

/* ---- the fast path: a text delta exactly as Claude Code writes it ----
 *
 * Most of a turn's lines are text deltas, and parsing each whole with jansson
 * was ~40% of cortexd's CPU in a flood (bench/flood.js).  A line of exactly
 * this shape is taken apart here, without building a tree:
 *
 *   {"type":"stream_event","event":{"type":"content_block_delta","index":N,
 *    "delta":{"type":"text_delta","text":"S"}}[,"session_id":"ID",
 *    "parent_tool_use_id":null|"ID","uuid":"ID"]}
 *
 * So are the three structural events around a text block (parse_fast_structural):
 *
 *   {"type":"stream_event","event":{"type":"content_block_start","index":N,
 *    "content_block":{"type":"text","text":""}}[tail]}
 *   {"type":"stream_event","event":{"type":"content_block_stop","index":N}[tail]}
 *   {"type":"stream_event","event":{"type":"message_stop"}[tail]}
 *
 * Every byte is matched: no key can repeat (a client's JSON.parse keeps the
 * last duplicate; the stream guard must scan what clients read) and no "seq"
 * can hide.  Anything else -- another order, other keys, a control byte, a
 * lone surrogate, bad UTF-8 -- takes the slow path (jansson), which decides
 * as before.  A hostile agent can only choose the slow path. */

static int lit(const char **p, const char *end, const char *s)
{
	size_t n = strlen(s);
	if ((size_t)(end - *p) < n || memcmp(*p, s, n))
		return 0;
	*p += n;
	return 1;
}

/* "ID": [A-Za-z0-9_-]{0,128} in quotes. */
static int id_str(const char **p, const char *end)
{
	const char *q = *p;
	if (q >= end || *q++ != '"')
		return 0;
	const char *start = q;
	while (q < end && q - start <= 128 &&
	       ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-' || *q == '_'))
		q++;
	if (q >= end || *q != '"' || q - start > 128)
		return 0;
	*p = q + 1;
	return 1;
}

static int hex4(const char *q, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = q[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
			     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
						    : 16u;
		if (d > 15)
			return 0;
		*v = *v << 4 | d;
	}
	return 1;
}

/* Length of the valid UTF-8 sequence at s (non-ASCII lead), or 0. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
	unsigned c = s[0];
	size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
	if (!n || (size_t)(end - s) < n)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
	    (c == 0xf4 && s[1] > 0x8f))
		return 0; /* overlong, surrogate, past U+10FFFF */
	return n;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Eight bytes that need no attention: all ASCII, none a control byte, a
 * quote or a backslash (SWAR: "has a byte less than n" is exact for any
 * byte below 0x80, and the top bits are checked first). */
#define B8(x) (0x0101010101010101ull * (uint64_t)(x))
static int plain8(uint64_t w)
{
	uint64_t ctl = (w - B8(0x20)) & ~w;
	uint64_t q = w ^ B8(0x22), bs = w ^ B8(0x5c);
	return !((w | ctl | ((q - B8(1)) & ~q) | ((bs - B8(1)) & ~bs)) & B8(0x80));
}

/* Past the bytes from q on that need no attention: the first one that does
 * (a quote, a backslash, a control byte or a high bit), or within 8 bytes
 * of end.  SSE2 (every x86-64) takes 16 at a time: a signed "less than
 * 0x20" is true for the control bytes and for every byte with its high bit
 * set at once; elsewhere, or for the last blocks, plain8. */
static const char *plain_run(const char *q, const char *end)
{
#if defined(__SSE2__)
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
	while (end - q >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
		__m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
					 _mm_cmplt_epi8(v, space));
		unsigned mask = (unsigned)_mm_movemask_epi8(m);
		if (mask)
			return q + __builtin_ctz(mask);
		q += 16;
	}
#endif
	uint64_t w;
	while (end - q >= 8 && (memcpy(&w, q, 8), plain8(w)))
		q += 8;
	return q;
}

/* The JSON string at *p (after its opening quote), checked and, when o is
 * not NULL, unescaped into o (unescaping never grows: o needs end - *p
 * bytes).  1: *p is past the closing quote, *out_len the unescaped length,
 * *escaped whether it had an escape.  0: not a string this path takes (a
 * control byte, bad UTF-8, \u0000 or a lone surrogate among them: jansson
 * decides).  The check is the same with o or without: a string that passed
 * once decodes. */
static int text_scan(const char **p, const char *end, char *o, size_t *out_len, int *escaped)
{
	const char *q = *p;
	size_t n_out = 0;
	*escaped = 0;
	while (q < end) {
		/* Runs of plain ASCII (nearly all of a text delta), 16 or 8 at a time. */
		const char *run = q;
		q = plain_run(q, end);
		if (o && q > run)
			memcpy(o + n_out, run, (size_t)(q - run));
		n_out += (size_t)(q - run);
		if (q >= end)
			break;
		unsigned char c = (unsigned char)*q;
		if (c == '"') {
			*out_len = n_out;
			*p = q + 1;
			return 1;
		}
		if (c < 0x20)
			break;
		if (c < 0x80 && c != '\\') {
			if (o)
				o[n_out] = (char)c;
			n_out++;
			q++;
		} else if (c >= 0x80) {
			size_t n = utf8_len((const unsigned char *)q, (const unsigned char *)end);
			if (!n)
				break;
			if (o)
				memcpy(o + n_out, q, n);
			n_out += n;
			q += n;
		} else { /* an escape */
			*escaped = 1;
			if (end - q < 2)
				break;
			char e = q[1];
			q += 2;
			static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
			const char *simple = e ? strchr(from, e) : NULL;
			if (simple) {
				if (o)
					o[n_out] = to[simple - from];
				n_out++;
				continue;
			}
			unsigned cp, lo;
			if (e != 'u' || end - q < 4 || !hex4(q, &cp))
				break;
			q += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				break; /* a lone low surrogate */
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (end - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xdc00 ||
				    lo > 0xdfff)
					break;
				q += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (cp == 0)
				break; /* \u0000: the slow path's JSON_ALLOW_NUL decides */
			char u[4];
			size_t un = put_utf8(u, cp);
			if (o)
				memcpy(o + n_out, u, un);
			n_out += un;
		}
	}
	return 0;
}

/* Claude Code's tail of a line: nothing, or its ids in its order. */
static int cc_tail(const char **p, const char *end)
{
	if (*p < end && **p == ',')
		return lit(p, end, ",\"session_id\":") && id_str(p, end) && lit(p, end, ",\"parent_tool_use_id\":") &&
		       (lit(p, end, "null") || id_str(p, end)) && lit(p, end, ",\"uuid\":") && id_str(p, end);
	return 1;
}

/* ,"index":N with N a small decimal. */
static int index_num(const char **p, const char *end)
{
	if (!lit(p, end, ",\"index\":"))
		return 0;
	const char *d0 = *p;
	while (*p < end && **p >= '0' && **p <= '9' && *p - d0 < 9)
		(*p)++;
	return *p != d0;
}

/* The structural events around a text block, as Claude Code writes them:
 * content_block_start of a text block, content_block_stop, message_stop.
 * They carry nothing cortexd reads but "a block ended" (sentences), so
 * they need no tree either; any other shape takes the slow path. */
static int parse_fast_structural(struct agent_line *out, const char *p, const char *end)
{
	int block_end;
	if (lit(&p, end, "content_block_stop\"")) {
		if (!index_num(&p, end))
			return 0;
		block_end = 1;
	} else if (lit(&p, end, "message_stop\"")) {
		block_end = 1;
	} else if (lit(&p, end, "content_block_start\"")) {
		if (!index_num(&p, end) || !lit(&p, end, ",\"content_block\":{\"type\":\"text\",\"text\":\"\"}"))
			return 0;
		block_end = 0;
	} else {
		return 0;
	}
	if (!lit(&p, end, "}") || !cc_tail(&p, end) || !lit(&p, end, "}") || p != end)
		return 0;
	out->kind = AL_OUTPUT;
	out->type = "stream_event";
	out->fast = 1;
	out->block_end = block_end;
	return 1;
}

static int parse_fast(struct agent_line *out, const char *line, size_t len)
{
	const char *p = line, *end = line + len;
	while (end > p && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	if (!lit(&p, end, "{\"type\":\"stream_event\",\"event\":{\"type\":\""))
		return 0;
	if (!lit(&p, end, "content_block_delta\""))
		return parse_fast_structural(out, p, end);
	if (!index_num(&p, end) || !lit(&p, end, ",\"delta\":{\"type\":\"text_delta\",\"text\":\""))
		return 0;
	const char *raw = p;
	size_t tl = 0;
	int escaped = 0;
	if (!text_scan(&p, end, NULL, &tl, &escaped))
		return 0;
	size_t raw_len = (size_t)(p - 1 - raw);
	if (!lit(&p, end, "}}") || !cc_tail(&p, end) || !lit(&p, end, "}") || p != end)
		return 0;
	out->kind = AL_OUTPUT;
	out->type = "stream_event";
	out->fast = 1;
	out->is_delta = 1;
	out->delta_raw = raw;
	out->delta_raw_len = raw_len;
	out->delta_escaped = escaped;
	out->delta_len = tl;
	if (!escaped)
		out->delta_text = raw; /* the text is its JSON string's bytes */
	return 1;
}

/* ---- the skim: the other output lines, checked without a tree ----
 *
 * A turn's other lines (Claude Code's system, message_start, assistant,
 * user, result, ...) went to jansson whole: a tree built and freed per line,
 * ~12% of the service thread at 100 busy sessions (bench/concurrency.js,
 * mini part).  Of them cortexd reads the "type", a result's "is_error" and
 * "result", a stream_event's event type, and whether there is a "seq".
 * parse_skim() walks the line once, checking it as jansson does, and keeps
 * those.  It takes a line only when jansson would surely make the same
 * object of it; at any doubt jansson decides, as before:
 *   - a key it reads that repeats (jansson keeps the last) or is escaped;
 *   - a "seq" (turn.c re-encodes that line from its tree);
 *   - a string text_scan does not take (a control byte, bad UTF-8, \u0000,
 *     a lone surrogate);
 *   - a number jansson could refuse (strtoll's or strtod's overflow);
 *   - nesting past SKIM_DEPTH;
 *   - a wsa.*, control_response or pong line (their handlers read the tree),
 *     and a content_block_delta (the fast path's shape, or jansson's). */

#define SKIM_DEPTH 64

static void skip_ws(const char **p, const char *end)
{
	while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
		(*p)++;
}

static size_t digits(const char **p, const char *end)
{
	const char *d0 = *p;
	while (*p < end && **p >= '0' && **p <= '9')
		(*p)++;
	return (size_t)(*p - d0);
}

/* A number jansson surely takes: an integer of at most 18 digits (within
 * strtoll's range), a real with at most 200 digits before its point and an
 * exponent of at most 2 digits (never past DBL_MAX).  A leading zero ends
 * the number (what follows it is then not JSON). */
static int skim_number(const char **p, const char *end)
{
	const char *q = *p;
	if (q < end && *q == '-')
		q++;
	size_t n_int = 1;
	if (q < end && *q == '0')
		q++;
	else if (!(n_int = digits(&q, end)))
		return 0;
	int real = 0;
	if (q < end && *q == '.') {
		q++;
		real = 1;
		if (!digits(&q, end))
			return 0;
	}
	if (q < end && (*q == 'e' || *q == 'E')) {
		q++;
		real = 1;
		if (q < end && (*q == '+' || *q == '-'))
			q++;
		size_t ne = digits(&q, end);
		if (!ne || ne > 2)
			return 0;
	}
	if (real ? n_int > 200 : n_int > 18)
		return 0;
	*p = q;
	return 1;
}

/* The string at *p (its opening quote), as text_scan checks it; *raw and
 * *raw_len its bytes between the quotes, *escaped whether it has an escape. */
static int skim_string(const char **p, const char *end, const char **raw, size_t *raw_len, int *escaped)
{
	if (*p >= end || **p != '"')
		return 0;
	const char *q = *p + 1;
	size_t n;
	if (!text_scan(&q, end, NULL, &n, escaped))
		return 0;
	*raw = *p + 1;
	*raw_len = (size_t)(q - 1 - *raw);
	*p = q;
	return 1;
}

/* After a member or an element: ',' (1: past it and the blanks after it),
 * the closing bracket (2: past it), else 0. */
static int next_or_close(const char **q, const char *end, char close)
{
	skip_ws(q, end);
	if (*q < end && **q == ',') {
		(*q)++;
		skip_ws(q, end);
		return 1;
	}
	if (*q < end && **q == close) {
		(*q)++;
		return 2;
	}
	return 0;
}

/* A member skim_object looks for: its value's span [v, v_end), or v NULL. */
struct want {
	const char *name;
	const char *v, *v_end;
};

static int skim_value(const char **p, const char *end, int depth);

/* The object at *p ('{') at nesting depth; the values of the keys in w
 * (nw of them) are kept as spans.  Where w is given, every key must be
 * unescaped and each of w's at most once. */
static int skim_object(const char **p, const char *end, int depth, struct want *w, size_t nw)
{
	const char *q = *p + 1;
	if (depth > SKIM_DEPTH)
		return 0;
	skip_ws(&q, end);
	if (q < end && *q == '}') {
		*p = q + 1;
		return 1;
	}
	for (;;) {
		const char *k;
		size_t kn;
		int kesc;
		if (!skim_string(&q, end, &k, &kn, &kesc) || (nw && kesc))
			return 0;
		struct want *hit = NULL;
		for (size_t i = 0; i < nw && !hit; i++)
			if (strlen(w[i].name) == kn && !memcmp(w[i].name, k, kn))
				hit = &w[i];
		if (hit && hit->v)
			return 0; /* repeated: jansson keeps the last */
		skip_ws(&q, end);
		if (q >= end || *q++ != ':')
			return 0;
		skip_ws(&q, end);
		const char *v = q;
		if (!skim_value(&q, end, depth))
			return 0;
		if (hit) {
			hit->v = v;
			hit->v_end = q;
		}
		int next = next_or_close(&q, end, '}');
		if (next == 1)
			continue;
		if (next == 2)
			*p = q;
		return next == 2;
	}
}

static int skim_value(const char **p, const char *end, int depth)
{
	const char *q = *p, *raw;
	size_t n;
	int esc;
	if (q >= end)
		return 0;
	switch (*q) {
	case '{':
		if (!skim_object(&q, end, depth + 1, NULL, 0))
			return 0;
		break;
	case '[':
		if (depth + 1 > SKIM_DEPTH)
			return 0;
		q++;
		skip_ws(&q, end);
		if (q < end && *q == ']') {
			q++;
			break;
		}
		for (;;) {
			if (!skim_value(&q, end, depth + 1))
				return 0;
			int next = next_or_close(&q, end, ']');
			if (next == 2)
				break;
			if (next != 1)
				return 0;
		}
		break;
	case '"':
		if (!skim_string(&q, end, &raw, &n, &esc))
			return 0;
		break;
	case 't':
		if (!lit(&q, end, "true"))
			return 0;
		break;
	case 'f':
		if (!lit(&q, end, "false"))
			return 0;
		break;
	case 'n':
		if (!lit(&q, end, "null"))
			return 0;
		break;
	default:
		if (!skim_number(&q, end))
			return 0;
	}
	*p = q;
	return 1;
}

/* A kept value that is a string with no escape: its bytes, else NULL. */
static const char *plain_str(const struct want *w, size_t *n)
{
	if (!w->v || *w->v != '"')
		return NULL;
	*n = (size_t)(w->v_end - w->v) - 2;
	return memchr(w->v + 1, '\\', *n) ? NULL : w->v + 1;
}

static int span_is(const char *s, size_t n, const char *want) { return s && n == strlen(want) && !memcmp(s, want, n); }

static int parse_skim(struct agent_line *out, const char *line, size_t len)
{
	const char *p = line, *end = line + len;
	skip_ws(&p, end);
	if (p >= end || *p != '{')
		return 0;
	enum { W_TYPE, W_SEQ, W_IS_ERROR, W_RESULT, W_EVENT, W_N };
	struct want top[W_N] = {{.name = "type"}, {.name = "seq"}, {.name = "is_error"}, {.name = "result"},
				{.name = "event"}};
	if (!skim_object(&p, end, 1, top, W_N))
		return 0;
	skip_ws(&p, end);
	if (p != end || top[W_SEQ].v)
		return 0;
	size_t tn = 0;
	const char *t = plain_str(&top[W_TYPE], &tn);
	if (top[W_TYPE].v && *top[W_TYPE].v == '"' && (!t || tn >= sizeof out->type_buf))
		return 0; /* an escaped or long type: jansson's */
	if (t && ((tn >= 4 && !memcmp(t, "wsa.", 4)) || span_is(t, tn, "control_response") || span_is(t, tn, "pong")))
		return 0;
	int block_end = 0;
	char *result = NULL;
	if (span_is(t, tn, "stream_event") && top[W_EVENT].v && *top[W_EVENT].v == '{') {
		struct want ev = {.name = "type"};
		const char *q = top[W_EVENT].v;
		if (!skim_object(&q, end, 2, &ev, 1))
			return 0;
		size_t en = 0;
		const char *et = plain_str(&ev, &en);
		if ((ev.v && *ev.v == '"' && !et) || span_is(et, en, "content_block_delta"))
			return 0;
		block_end = span_is(et, en, "content_block_stop") || span_is(et, en, "message_stop");
	} else if (span_is(t, tn, "result") && top[W_RESULT].v && *top[W_RESULT].v == '"') {
		const char *q = top[W_RESULT].v + 1;
		size_t rn = 0;
		int esc;
		result = malloc((size_t)(top[W_RESULT].v_end - q));
		if (!result || !text_scan(&q, end, result, &rn, &esc)) {
			free(result);
			return 0;
		}
		result[rn] = '\0';
	}
	out->kind = AL_OUTPUT;
	out->skim = 1;
	if (t) {
		memcpy(out->type_buf, t, tn);
		out->type_buf[tn] = '\0';
		out->type = out->type_buf;
	}
	out->block_end = block_end;
	if (span_is(t, tn, "result")) {
		out->is_result = 1;
		const struct want *e = &top[W_IS_ERROR];
		out->is_error = span_is(e->v, e->v ? (size_t)(e->v_end - e->v) : 0, "true");
		out->result = out->result_buf = result;
	}
	return 1;
}

void agent_line_parse(struct agent_line *out, const char *line, size_t len)
{
	memset(out, 0, sizeof *out);
	if (parse_fast(out, line, len) || parse_skim(out, line, len))
		return;
	/* \u0000 in a string (a text delta, a tool result, the result) is still
	 * an object: refused, a result line would never end its turn. */
	json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		out->kind = AL_BAD;
		return;
	}
	out->o = o;
	out->type = str_of(o, "type");
	if (out->type && !strncmp(out->type, "wsa.", 4)) {
		out->kind = AL_WSA;
		parse_wsa(out);
	} else if (eq(out->type, "control_response")) {
		out->kind = AL_CONTROL_RESPONSE;
		out->request_id = str_of(json_object_get(o, "response"), "request_id");
	} else if (eq(out->type, "pong")) {
		out->kind = AL_PONG;
	} else {
		out->kind = AL_OUTPUT;
		parse_output(out);
	}
}

void agent_line_free(struct agent_line *l)
{
	json_decref(l->o);
	l->o = NULL;
	free(l->result_buf);
	l->result_buf = NULL;
	l->result = NULL;
	free(l->delta_buf);
	l->delta_buf = NULL;
	l->delta_text = NULL;
}

const char *agent_line_delta(const struct agent_line *cl, size_t *len)
{
	struct agent_line *l = (struct agent_line *)cl; /* never a const object: link_line's local */
	*len = 0;
	if (!l->is_delta)
		return NULL;
	if (!l->delta_text && l->delta_raw) {
		/* Escapes: decoded once, on the first consumer's ask.  The fast
		 * path checked it, so it decodes (to the same length). */
		const char *q = l->delta_raw, *end = q + l->delta_raw_len + 1; /* its closing quote */
		size_t n = 0;
		int esc = 0;
		char *buf = malloc(l->delta_raw_len + 1);
		if (!buf)
			return NULL;
		if (!text_scan(&q, end, buf, &n, &esc) || n != l->delta_len) {
			free(buf);
			return NULL; /* cannot happen: the same check passed */
		}
		buf[n] = '\0';
		l->delta_buf = buf;
		l->delta_text = buf;
	}
	*len = l->delta_text ? l->delta_len : 0;
	return l->delta_text;
}

const char *agent_line_str(const struct agent_line *l, const char *k) { return str_of(l->o, k); }
