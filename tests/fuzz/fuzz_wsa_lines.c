/* Fuzz target: ws-agent's line splitting of an agent's stdout (any chunking,
 * both over-long modes), the wsa.* spoof check and UTF-8 repair (ws-agent/lines.c).
 * Input: byte 0 = line cap (1..64) and mode, byte 1 = chunk size, then the stream. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "wsa.h"

FUZZ_NO_INIT

struct seen {
	size_t cap;
	bool split;
	size_t lines;
};

static int on_line(void *arg, const char *line, size_t len, bool too_long)
{
	struct seen *s = arg;
	s->lines++;
	if (len > s->cap || (!line && !(too_long && !s->split)))
		FUZZ_FAIL();
	if (!line)
		return 0;
	if (memchr(line, '\n', len))
		FUZZ_FAIL();
	(void)cx_line_spoofs_event(line, len);
	size_t n = 0;
	char *fixed = cx_utf8_sanitize(line, len, &n);
	if (!fixed)
		FUZZ_FAIL();
	if (!cx_utf8_valid(fixed, n) || fixed[n] != '\0')
		FUZZ_FAIL();
	if (cx_utf8_valid(line, len) && (n != len || memcmp(fixed, line, len)))
		FUZZ_FAIL(); /* valid text comes back unchanged */
	free(fixed);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct seen s = {.cap = (size_t)(data[0] & 63) + 1, .split = data[0] & 64};
	size_t chunk = (size_t)data[1] + 1;
	data += 2, size -= 2;
	struct cx_lines l;
	cx_lines_init(&l, s.cap, s.split);
	cx_err err = {0};
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (cx_lines_feed(&l, (const char *)data + off, n, on_line, &s, &err) != 0)
			FUZZ_FAIL();
	}
	if (cx_lines_finish(&l, on_line, &s) != 0)
		FUZZ_FAIL();
	cx_lines_free(&l);
	/* the whole input at once, too: the spoof check sees any line */
	(void)cx_line_spoofs_event((const char *)data, size);
	return 0;
}
