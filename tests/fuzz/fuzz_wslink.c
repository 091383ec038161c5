/* Fuzz target: the ws-agent link's WebSocket client (cortexd/core/wslink.c):
 * the handshake reply check and the frame parser, the input fed whole and
 * again cut at every byte boundary given by the first byte (a parser state
 * carried across reads must give the same deliveries). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "wslink.h"

FUZZ_NO_INIT

struct out {
	uint8_t data[1 << 16];
	size_t n, events;
	int closed;
};

static int deliver(void *arg, enum wsl_event ev, const uint8_t *p, size_t n)
{
	struct out *o = arg;
	o->events++;
	if (ev == WSL_CLOSE) {
		o->closed = 1;
		return 1;
	}
	if (n > 125 && ev != WSL_DATA)
		FUZZ_FAIL(); /* a control payload is at most 125 bytes */
	if (ev == WSL_DATA) {
		size_t take = n < sizeof o->data - o->n ? n : sizeof o->data - o->n;
		memcpy(o->data + o->n, p, take);
		o->n += take;
	}
	return 0;
}

static int run(const uint8_t *d, size_t n, size_t step, struct out *o)
{
	struct wsl_rx rx;
	memset(&rx, 0, sizeof rx);
	memset(o, 0, sizeof *o);
	const char *why = NULL;
	for (size_t off = 0; off < n;) {
		size_t k = n - off < step ? n - off : step;
		int rc = wsl_feed(&rx, d + off, k, deliver, o, &why);
		if (rc < 0 && !why)
			FUZZ_FAIL(); /* a protocol error always says why */
		if (rc)
			return rc;
		off += k;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *why = NULL;
	(void)wsl_check_reply((const char *)data + 1, size - 1, "dGhlIHNhbXBsZSBub25jZQ==", &why);
	size_t step = data[0] ? data[0] : 1;
	static struct out whole, cut;
	int a = run(data + 1, size - 1, size, &whole);
	int b = run(data + 1, size - 1, step, &cut);
	/* The same bytes, however they were cut, give the same result (an
	 * error may come at a different point only if it is the same error). */
	if ((a < 0) != (b < 0))
		FUZZ_FAIL();
	if (a >= 0 && (whole.n != cut.n || memcmp(whole.data, cut.data, whole.n) || whole.closed != cut.closed))
		FUZZ_FAIL();
	return 0;
}
