/* guard.h — the stream guard: a parallel safety check over the agent's
 * streamed text.  It finds the user's own secret values in outgoing text
 * deltas, also in their base64 / base64url forms and when a match is split
 * across deltas.  Pure: no I/O, no locks; a built guard is immutable and may
 * be shared by any number of streams (each with its own guard_scan).
 *
 * Patterns, per secret value v (binary-safe) of at least GUARD_MIN_LEN bytes:
 *   - v itself;
 *   - for each of standard base64 and base64url (no padding): the characters
 *     of the encoding that depend on v alone, for v at byte offset 0, 1 and 2
 *     (mod 3) inside a longer encoded string.  At offset 0 this is v's own
 *     encoding when |v| % 3 == 0, and otherwise that encoding minus its last,
 *     neighbour-dependent character — a prefix of it, so "v encoded alone"
 *     is found too (at the end of that prefix).
 * Patterns shorter than GUARD_MIN_LEN are skipped, duplicates removed.
 *
 * A value longer than GUARD_PIECE bytes is guarded as pieces of GUARD_PIECE
 * bytes (at offsets 0, GUARD_PIECE, 2*GUARD_PIECE, ... and the last
 * GUARD_PIECE bytes), each with all the forms above.  This bounds the per-delta
 * cost and the tail kept per stream, and still finds the whole value, its
 * encodings, and any contiguous leak of 2*GUARD_PIECE - 1 bytes or more of it.
 *
 * Not found: other encodings (hex, JSON or URL escapes, base64 with line
 * breaks), or a value split by inserted characters. */
#ifndef CORTEX_GUARD_H
#define CORTEX_GUARD_H

#include <stddef.h>
#include "cx.h"

#define GUARD_MIN_LEN 6	 /* shorter secret values are not guarded (would match everywhere) */
#define GUARD_PIECE   64 /* longer values are guarded as pieces of this many bytes */

typedef struct guard guard; /* immutable once built */

/* Build from n secret values (values[i] is lens[i] bytes, binary-safe).
 * n == 0 gives a valid empty guard that matches nothing.  *out is NULL on
 * failure. */
int guard_build(guard **out, const char *const *values, const size_t *lens, size_t n, cx_err *err);
/* Wipe the patterns and free; NULL is fine. */
void guard_free(guard *g);
size_t guard_patterns(const guard *g); /* how many patterns (for tests / metrics) */
size_t guard_max_len(const guard *g);  /* longest pattern, 0 for an empty guard */

/* Per-stream scan state: keeps the last (max_len - 1) bytes of the text so
 * a match split across feeds is found.  Holds user text: wiped by reset/free. */
struct guard_scan {
	char *tail;
	size_t tail_len, cap;
};
void guard_scan_init(struct guard_scan *s);
void guard_scan_reset(struct guard_scan *s); /* new text block/turn: forget (and wipe) the tail */
void guard_scan_free(struct guard_scan *s);
/* Scan the next n bytes of the stream.  1 if a pattern ends inside this
 * chunk (a match completes now), 0 if not, -1 on ENOMEM (err set).  which
 * (optional) gets the index in values[] of the matched secret.  Allocates
 * only when the tail first needs room (or a guard with longer patterns is
 * used); the tail is updated whatever the result, so the stream can go on. */
int guard_feed(struct guard_scan *s, const guard *g, const char *text, size_t n, size_t *which,
	       cx_err *err);

#endif
