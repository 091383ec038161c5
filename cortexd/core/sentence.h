/* sentence.h — sentence splitter for the voice surface: text deltas go in,
 * each sentence comes out the moment it is known to be complete, so a TTS
 * can start on the first one.  Pure: no I/O, no locks.
 *
 * A sentence ends
 *   - after a run of terminators . ! ? … (plus any closing quotes/brackets
 *     right after it) followed by whitespace;
 *   - after a CJK 。！？ (plus closers), whatever follows;
 *   - at a blank line (a newline, optional spaces/tabs, a newline).
 * It does not end at
 *   - a dot not followed by whitespace ("3.14", "v1.2", "example.com");
 *   - a title or list abbreviation ("Mr. Smith", "Dr.", "e.g. this",
 *     "i.e.", "vs."), a single capital initial ("J. Smith"), or a number
 *     at the start of a line ("1. First");
 *   - "etc.", "a.m.", "p.m.", "al.", "Inc." ... followed by a lowercase letter
 *     or a digit (and likewise an ellipsis "..." / "…" mid-sentence);
 *     followed by anything else, they end the sentence.
 * Decisions that need the next word wait for it.
 * Emitted sentences are trimmed of surrounding whitespace and never empty.
 * A "sentence" longer than SENTENCE_MAX bytes is emitted at the last
 * whitespace before the cap, or, with none, at the last UTF-8 character
 * boundary before it.  Valid UTF-8 in gives valid UTF-8 out: a multibyte
 * character is never cut.  The result does not depend on how the text is
 * split into deltas: one byte at a time gives the same sentences as all at
 * once. */
#ifndef CORTEX_SENTENCE_H
#define CORTEX_SENTENCE_H

#include <stddef.h>
#include "cx.h"

#define SENTENCE_MAX                                                                               \
	2048 /* a "sentence" longer than this is emitted at the last space before the cap */

/* s[0..n) is borrowed for the call (not NUL-terminated).  Non-zero stops. */
typedef int (*sentence_fn)(void *arg, const char *s, size_t n);

struct sentencer {
	char *buf; /* pending text, not yet emitted */
	size_t len, cap;
	size_t scan; /* buf[0..scan) is known to hold no sentence end */
};

void sentencer_init(struct sentencer *z);
void sentencer_free(struct sentencer *z);
/* Append n bytes and emit every sentence now complete.  0; -1 on ENOMEM
 * (err set, the text not taken); or fn's non-zero value, passed through
 * unchanged, when fn stops — the sentence given to fn counts as emitted, the
 * rest stays buffered. */
int sentencer_feed(struct sentencer *z, const char *text, size_t n, sentence_fn fn, void *arg,
		   cx_err *err);
/* End of message: emit what is complete, then the rest if non-blank, and
 * empty the buffer.  0, or fn's non-zero value (the buffer is emptied anyway). */
int sentencer_flush(struct sentencer *z, sentence_fn fn, void *arg);

#endif
