/* Fuzz target: the gateway's reading of a provider response (SSE or one JSON
 * body, in any chunk split) and of the agent's request body (cortexd/gateway/gw_sse.c).
 * Input: byte 0 = SSE or JSON and the HTTP status class, byte 1 = chunk size;
 * the rest up to a first NUL is the response, after it the request body. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gw_sse.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	int sse = data[0] & 1;
	int status = (data[0] & 2) ? 529 : 200;
	size_t chunk = (size_t)data[1] + 1;
	const char *body = (const char *)data + 2;
	size_t n = size - 2;
	const char *nul = memchr(body, 0, n);
	size_t rlen = nul ? (size_t)(nul - body) : n;
	struct gw_sse p;
	gw_sse_init(&p, sse);
	for (size_t off = 0; off < rlen; off += chunk)
		gw_sse_feed(&p, body + off, rlen - off < chunk ? rlen - off : chunk);
	gw_sse_finish(&p, status);
	if (nul)
		gw_sse_request(&p, nul + 1, n - rlen - 1);
	if (!memchr(p.model, 0, sizeof p.model) || !memchr(p.error, 0, sizeof p.error))
		FUZZ_FAIL();
	gw_sse_free(&p);
	return 0;
}
