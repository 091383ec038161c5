/* Fuzz target: the egress broker's rewrite of a request head inside an
 * intercepted TLS connection (cortexd/egress/mitm_head.c): placeholders
 * swapped for brokered values (also inside Basic credentials), hop-by-hop
 * headers dropped, Connection: close added; then the response-side
 * redaction over the same bytes. */
#include <string.h>

#include "egress.h"
#include "fuzz.h"
#include "mitm-internal.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct mitm_swap sw[] = {
	    {"CORTEX_PLACEHOLDER_1", "ghp_realtokenvalue0123456789"},
	    {"ph2", "v"},
	};
	const char *in = (const char *)data;
	size_t end = mitm_head_end(in, size);
	if (end > size)
		FUZZ_FAIL();
	if (end) {
		char *out = NULL;
		size_t olen = 0;
		unsigned swapped = 0;
		cx_err err = {0};
		if (mitm_head_rewrite(in, end, sw, 2, 64u << 10, &out, &olen, &swapped, &err) == 0) {
			if (!out || olen > (64u << 10) || olen < 4 || memcmp(out + olen - 4, "\r\n\r\n", 4))
				FUZZ_FAIL();
			mitm_free_secret(out, olen);
		}
	}
	char *copy = malloc(size ? size : 1);
	memcpy(copy, data, size);
	(void)mitm_redact(copy, size, sw, 2);
	if (mitm_partial_tail(copy, size, sw, 2) > size)
		FUZZ_FAIL();
	free(copy);
	return 0;
}
