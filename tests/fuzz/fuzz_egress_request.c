/* Fuzz target: the request head a sandbox sends the egress proxy, CONNECT or
 * absolute-form (cortexd/egress/egress_req.c), as egress.c hands it over:
 * up to the first "\r\n\r\n", NUL-terminated after what was read. */
#include <stdlib.h>
#include <string.h>

#include "egress_req.h"
#include "fuzz.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (16u << 10) - 1) /* EG_HEAD_MAX */
		return 0;
	char *buf = malloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *end = strstr(buf, "\r\n\r\n");
	if (!end) {
		free(buf);
		return 0;
	}
	size_t hl = (size_t)(end - buf) + 4;
	struct egress_req r = {0};
	char why[128];
	if (egress_req_parse(buf, hl, &r, why, sizeof why) == 0) {
		if (r.port < 1 || r.port > 65535 || !r.host[0] || !memchr(r.method, 0, sizeof r.method))
			FUZZ_FAIL();
		if (!r.is_connect) {
			/* origin-form, ends with our Connection: close and the blank line */
			static const char tail[] = "Connection: close\r\n\r\n";
			if (!r.head || r.head_len < sizeof tail - 1 ||
			    memcmp(r.head + r.head_len - (sizeof tail - 1), tail, sizeof tail - 1))
				FUZZ_FAIL();
		}
	}
	free(r.head);
	free(buf);
	return 0;
}
