/* sentence.c — sentence splitter (see sentence.h).
 *
 * find_end() looks for the first sentence end in the pending text.  Where a
 * decision needs bytes that have not arrived (a closer or the next word may
 * follow, a UTF-8 character is incomplete) it answers MORE with the place to
 * look again, and never decides from the end of the data unless told it is
 * final.  So its answer on a longer text always agrees with its answer on a
 * shorter prefix — which is what makes the output independent of how the text
 * is split into deltas.  The cap is part of the same rule: the scan never
 * looks past SENTENCE_MAX + 1 bytes of a pending sentence. */
#include "sentence.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

enum { END_NONE, END_FOUND, END_MORE };
enum { RULE_SPLIT, RULE_KEEP, RULE_NEXT_WORD };

/* One literal at b[i..len) (i < len): its length if it is there, 0 if not,
 * -1 if the data ends inside a prefix of it (0 when final). */
static int lit(const unsigned char *b, size_t len, size_t i, const char *s, int final)
{
	if (b[i] != (unsigned char)s[0])
		return 0;
	size_t n = strlen(s);
	size_t have = len - i < n ? len - i : n;
	if (memcmp(b + i, s, have) != 0)
		return 0;
	if (have < n)
		return final ? 0 : -1;
	return (int)n;
}

/* The first of the literals at b[i..]: its length, 0, or -1 (see lit()).
 * *which gets its index. */
static int lit_any(const unsigned char *b, size_t len, size_t i, const char *const *set, int final,
		   int *which)
{
	int more = 0;
	for (int k = 0; set[k]; k++) {
		int r = lit(b, len, i, set[k], final);
		if (r > 0) {
			if (which)
				*which = k;
			return r;
		}
		if (r < 0)
			more = 1;
	}
	return more ? -1 : 0;
}

/* Terminators: . ! ? … and the CJK 。！？, which end a sentence with no
 * space after them. */
static const char *const TERMS[] = {
    ".", "!", "?", "\xe2\x80\xa6", "\xe3\x80\x82", "\xef\xbc\x81", "\xef\xbc\x9f", NULL};
enum { T_DOT, T_BANG, T_QUESTION, T_ELLIPSIS, T_CJK0 };

/* The first bytes of TERMS. */
static int may_start_term(unsigned char c)
{
	return c == '.' || c == '!' || c == '?' || c == 0xe2 || c == 0xe3 || c == 0xef;
}

/* Closing quotes and brackets (and markdown emphasis) that stay with the
 * sentence they close: " ' ) ] } * _ ” ’ » › 」 』 】 ） */
static const char *const CLOSERS[] = {"\"",
				      "'",
				      ")",
				      "]",
				      "}",
				      "*",
				      "_",
				      "\xe2\x80\x9d",
				      "\xe2\x80\x99",
				      "\xc2\xbb",
				      "\xe2\x80\xba",
				      "\xe3\x80\x8d",
				      "\xe3\x80\x8f",
				      "\xe3\x80\x91",
				      "\xef\xbc\x89",
				      NULL};

/* Whitespace, with the ideographic space U+3000. */
static const char *const SPACES[] = {" ", "\t", "\n", "\r", "\f", "\v", "\xe3\x80\x80", NULL};

static int is_ascii_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}
static int is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Abbreviations after which a single dot never ends a sentence. */
static const char *const ABBR_KEEP[] = {"mr", "mrs", "ms",  "mx", "dr",	 "prof",   "st",
					"vs", "e.g", "i.e", "cf", "fig", "approx", NULL};
/* ... and those that end one unless the next word goes on in lowercase. */
static const char *const ABBR_NEXT[] = {"etc", "al", "a.m", "p.m",  "inc", "ltd",
					"co",  "jr", "sr",  "corp", NULL};

static int in_list(const char *const *list, const unsigned char *w, size_t n)
{
	for (int k = 0; list[k]; k++) {
		size_t m = strlen(list[k]);
		if (m != n)
			continue;
		size_t i = 0;
		while (i < n && (w[i] | 0x20) == (unsigned char)list[k][i])
			i++;
		if (i == n)
			return 1;
	}
	return 0;
}

/* Only spaces/tabs between b[w] and the start of its line (or of the text). */
static int at_line_start(const unsigned char *b, size_t w)
{
	while (w > 0 && (b[w - 1] == ' ' || b[w - 1] == '\t'))
		w--;
	return w == 0 || b[w - 1] == '\n';
}

/* A single dot at b[r], followed by whitespace: what the word before says. */
static int dot_rule(const unsigned char *b, size_t r)
{
	size_t w = r;
	if (w > 0 && is_digit(b[w - 1])) { /* "1. First" (a list item) */
		while (w > 0 && is_digit(b[w - 1]))
			w--;
		return r - w <= 3 && at_line_start(b, w) ? RULE_KEEP : RULE_SPLIT;
	}
	while (w > 0 && (is_alpha(b[w - 1]) || b[w - 1] == '.'))
		w--;
	if (w > 0 && (b[w - 1] >= 0x80 || is_digit(b[w - 1]) || b[w - 1] == '-' ||
		      b[w - 1] == '_' || b[w - 1] == '/'))
		return RULE_SPLIT; /* part of a longer word */
	while (w < r && b[w] == '.')
		w++;
	size_t n = r - w;
	if (n == 1 && b[w] >= 'A' && b[w] <= 'Z')
		return RULE_KEEP; /* an initial: "J. Smith" */
	if (in_list(ABBR_KEEP, b + w, n))
		return RULE_KEEP;
	if (in_list(ABBR_NEXT, b + w, n))
		return RULE_NEXT_WORD;
	return RULE_SPLIT;
}

/* Does a word that goes on the sentence start at b[j]: a lowercase letter
 * (ASCII or Latin-1) or a digit.  1, 0, or -1 if the character is incomplete. */
static int goes_on(const unsigned char *b, size_t len, size_t j, int final)
{
	unsigned char c = b[j];
	if ((c >= 'a' && c <= 'z') || is_digit(c))
		return 1;
	if (c != 0xc3)
		return 0;
	if (j + 1 == len)
		return final ? 0 : -1;
	return b[j + 1] >= 0x9f && b[j + 1] <= 0xbf && b[j + 1] != 0xb7; /* ß..ÿ but ÷ */
}

/* The first sentence end in b[0..len), scanning from `from` (b[0..from)
 * holds none).  END_FOUND: the sentence is b[0..*end).  END_MORE: undecided
 * for lack of data; scan again from *resume.  END_NONE: none; *resume = len. */
static int find_end(const unsigned char *b, size_t len, size_t from, int final, size_t *end,
		    size_t *resume)
{
	size_t i = from;
	while (i < len) {
		if (b[i] == '\n') { /* a blank line: newline, blanks, newline */
			size_t j = i + 1;
			while (j < len && b[j] != '\n' && is_ascii_space(b[j]))
				j++;
			if (j == len && !final) {
				*resume = i;
				return END_MORE;
			}
			if (j < len && b[j] == '\n') {
				*end = i;
				return END_FOUND;
			}
			i++;
			continue;
		}
		if (!may_start_term(b[i])) { /* the common case, cheaply */
			i++;
			continue;
		}
		int kind = 0;
		int tl = lit_any(b, len, i, TERMS, final, &kind);
		if (tl < 0) {
			*resume = i;
			return END_MORE;
		}
		if (tl == 0) {
			i++;
			continue;
		}
		/* A run of terminators, then closers. */
		size_t r = i;
		int bang = 0, cjk = 0, dots = 0, ellipsis = 0;
		while (tl > 0) {
			bang |= kind == T_BANG || kind == T_QUESTION;
			cjk |= kind >= T_CJK0;
			ellipsis |= kind == T_ELLIPSIS;
			dots += kind == T_DOT;
			i += (size_t)tl;
			tl = i < len ? lit_any(b, len, i, TERMS, final, &kind) : 0;
		}
		int cl = tl < 0 ? -1 : 1;
		while (cl > 0 && i < len) {
			cl = lit_any(b, len, i, CLOSERS, final, NULL);
			if (cl > 0)
				i += (size_t)cl;
		}
		if (cl < 0 || (i == len && !final)) {
			*resume = r;
			return END_MORE;
		}
		size_t e = i;
		if (cjk || e == len) {
			*end = e;
			return END_FOUND;
		}
		int sp = lit_any(b, len, e, SPACES, final, NULL);
		if (sp < 0) {
			*resume = r;
			return END_MORE;
		}
		if (sp == 0)
			continue; /* "3.14", "example.com", "?!x" */
		int rule = bang			    ? RULE_SPLIT
			   : (ellipsis || dots > 1) ? RULE_NEXT_WORD
						    : dot_rule(b, r);
		if (rule == RULE_KEEP)
			continue;
		if (rule == RULE_NEXT_WORD) {
			size_t j = e;
			int newlines = 0;
			while (j < len) {
				sp = lit_any(b, len, j, SPACES, final, NULL);
				if (sp <= 0)
					break;
				newlines += b[j] == '\n';
				j += (size_t)sp;
			}
			int on = 0;
			if (sp >= 0 && j < len && newlines < 2)
				on = goes_on(b, len, j, final);
			if (!final && (sp < 0 || on < 0 || (j == len && newlines < 2))) {
				*resume = r;
				return END_MORE;
			}
			if (on > 0)
				continue;
		}
		*end = e;
		return END_FOUND;
	}
	*resume = len;
	return END_NONE;
}

/* Where to cut a pending text of more than SENTENCE_MAX bytes with no
 * sentence end: after the last whitespace before the cap, else at the last
 * UTF-8 character boundary before it. */
static size_t cap_cut(const unsigned char *b)
{
	for (size_t p = SENTENCE_MAX; p > 0; p--)
		if (is_ascii_space(b[p]))
			return p;
	size_t p = SENTENCE_MAX;
	while (p > 0 && (b[p] & 0xc0) == 0x80)
		p--;
	return p ? p : SENTENCE_MAX;
}

/* Trim b[0..n) and hand it to fn when something is left. */
static int emit(const unsigned char *b, size_t n, sentence_fn fn, void *arg)
{
	for (;;) {
		if (n && is_ascii_space(b[n - 1]))
			n--;
		else if (n >= 3 && memcmp(b + n - 3, "\xe3\x80\x80", 3) == 0)
			n -= 3;
		else
			break;
	}
	for (;;) {
		if (n && is_ascii_space(b[0]))
			b++, n--;
		else if (n >= 3 && memcmp(b, "\xe3\x80\x80", 3) == 0)
			b += 3, n -= 3;
		else
			break;
	}
	return n ? fn(arg, (const char *)b, n) : 0;
}

/* Emit every sentence that is complete (all of them when final), then drop
 * the emitted text from the buffer. */
static int drain(struct sentencer *z, sentence_fn fn, void *arg, int final)
{
	const unsigned char *b = (const unsigned char *)z->buf;
	size_t off = 0, scan = z->scan;
	int rc = 0;
	while (rc == 0) {
		while (off < z->len && is_ascii_space(b[off]))
			off++;
		if (scan < off)
			scan = off;
		size_t rest = z->len - off;
		if (rest == 0)
			break;
		size_t win = rest < SENTENCE_MAX + 1 ? rest : SENTENCE_MAX + 1;
		size_t end = 0, resume = 0;
		int r = find_end(b + off, win, scan - off, final && win == rest, &end, &resume);
		if (r != END_FOUND && win > SENTENCE_MAX) {
			end = cap_cut(b + off);
			r = END_FOUND;
		}
		if (r != END_FOUND) {
			scan = off + resume;
			if (final) { /* the rest is the last sentence */
				rc = emit(b + off, rest, fn, arg);
				off = scan = z->len;
			}
			break;
		}
		rc = emit(b + off, end, fn, arg);
		off += end;
		scan = off;
	}
	if (off) {
		memmove(z->buf, z->buf + off, z->len - off);
		z->len -= off;
		scan = scan > off ? scan - off : 0;
	}
	z->scan = scan;
	return rc;
}

void sentencer_init(struct sentencer *z)
{
	z->buf = NULL;
	z->len = z->cap = z->scan = 0;
}

void sentencer_free(struct sentencer *z)
{
	free(z->buf);
	sentencer_init(z);
}

int sentencer_feed(struct sentencer *z, const char *text, size_t n, sentence_fn fn, void *arg,
		   cx_err *err)
{
	if (n > z->cap - z->len) {
		size_t cap = z->cap ? z->cap : 256;
		while (cap - z->len < n) {
			if (cap > SIZE_MAX / 2)
				return cx_err_set(err, ENOMEM, "sentencer: text too long");
			cap *= 2;
		}
		char *nb = realloc(z->buf, cap);
		if (!nb)
			return cx_err_set(err, ENOMEM, "sentencer: buffer");
		z->buf = nb;
		z->cap = cap;
	}
	if (n)
		memcpy(z->buf + z->len, text, n);
	z->len += n;
	return drain(z, fn, arg, 0);
}

int sentencer_flush(struct sentencer *z, sentence_fn fn, void *arg)
{
	int rc = z->len ? drain(z, fn, arg, 1) : 0;
	z->len = z->scan = 0;
	return rc;
}
