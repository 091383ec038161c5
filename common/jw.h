/* jw.h — a JSON object written as text, member by member.
 *
 * The bytes are those json_dumps(o, JSON_COMPACT) makes of the json_t that
 * json_pack would build from the same members in the same order (jansson
 * keeps insertion order): strings as cx_json_str_put, integers in decimal,
 * reals as jansson's "%.17g" with ".0" added and the exponent trimmed.  It
 * is for values made on the service thread every turn (the turn record,
 * cortex.done), where building a tree and dumping it was most of their cost.
 *
 * A writer has a fixed capacity, given by its caller.  What jansson would
 * refuse fails the writer instead of being written: a string that is not
 * UTF-8 (json_pack fails on it), a non-finite real (json_real refuses it).
 * Overflowing the capacity fails it too.  Keys are the caller's literals
 * (plain ASCII: written as they are).  tests/unit/test_jw.c compares the
 * bytes with jansson's. */
#ifndef CORTEX_JW_H
#define CORTEX_JW_H

#include <stddef.h>
#include <stdint.h>

#define JW_DEPTH 4

struct jw {
	char *buf;        /* owned: jw_take() hands it over */
	size_t len, cap;
	int failed;
	int depth;
	int first[JW_DEPTH]; /* no member yet at that depth */
};

/* A writer of at most cap bytes (the NUL included), with the object opened. */
int jw_init(struct jw *w, size_t cap);
void jw_free(struct jw *w);
void jw_str(struct jw *w, const char *key, const char *s);
void jw_int(struct jw *w, const char *key, long long v);
void jw_real(struct jw *w, const char *key, double v);
void jw_bool(struct jw *w, const char *key, int v);
void jw_null(struct jw *w, const char *key);
void jw_open(struct jw *w, const char *key);  /* a nested object */
void jw_close(struct jw *w);                  /* ends the innermost object */
/* The text (NUL-terminated, owned by the caller), *len its length, or NULL
 * when the writer failed; the writer is left empty either way. */
char *jw_take(struct jw *w, size_t *len);

/* v as jansson writes a real into buf (>= 32 bytes); its length, or 0 when v
 * is not finite. */
size_t jw_real_fmt(char *buf, double v);

#endif
