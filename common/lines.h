/* lines.h — an agent's stdout as lines: the cap per line, UTF-8, and the
 * "wsa." spoof check.  One implementation for both readers of an agent's
 * stdout: ws-agent (its link frames) and cortexd (a stdout pipe ws-agent
 * passed it, cortexd/core/agent_stdout.c), so the rules a hostile agent
 * meets are the same whoever reads. */
#ifndef CX_LINES_H
#define CX_LINES_H

#include <stdbool.h>
#include <stddef.h>

#include "cx.h"


/* Called once per line (without '\n').  too_long: the line exceeded the cap;
 * in drop mode line is NULL, in split mode it is the first cap bytes. */
typedef int (*cx_line_fn)(void *arg, const char *line, size_t len, bool too_long);

struct cx_lines {
	char *buf;      /* owned */
	size_t len;     /* bytes of the pending partial line */
	size_t alloc;   /* allocated size of buf */
	size_t cap;     /* longest line accepted */
	bool split;     /* over-long lines: emit in cap-sized pieces instead of dropping */
	bool dropping;  /* inside an over-long line being dropped */
};

void cx_lines_init(struct cx_lines *l, size_t cap, bool split);
void cx_lines_free(struct cx_lines *l);
/* Feed bytes; calls fn for each complete line.  Stops at the first non-zero
 * return of fn and returns it; -1 with err set on allocation failure. */
int cx_lines_feed(struct cx_lines *l, const char *data, size_t n, cx_line_fn fn, void *arg,
		   cx_err *err);
/* A partial line another reader began (no '\n' in data, n <= cap), or the
 * rest of an over-long one it was dropping: the next feed goes on with it. */
int cx_lines_preload(struct cx_lines *l, const char *data, size_t n, bool dropping, cx_err *err);
/* End of stream: a final line without '\n' still counts. */
int cx_lines_finish(struct cx_lines *l, cx_line_fn fn, void *arg);
/* true when an agent stdout line would pass for one of ws-agent's own
 * events (a "wsa.*" type): such a line is never forwarded. */
bool cx_line_spoofs_event(const char *line, size_t len);

bool cx_utf8_valid(const char *s, size_t n);
/* Copy of s with each invalid UTF-8 sequence replaced by U+FFFD; NUL-terminated. */
char *cx_utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
