/* Fuzz target: a client WebSocket frame (cortexd/edge/client_frame.c). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client_frame.h"
#include "fuzz.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The edge's cap, and a tiny one so the too_large path is reached too. */
	static const size_t caps[] = {256u << 10, 8};
	for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
		struct client_frame f;
		const char *code = NULL;
		char msg[256];
		if (client_frame_parse((const char *)data, size, caps[i], &f, &code, msg, sizeof msg) == 0) {
			if (f.type == CF_MESSAGE) {
				size_t n = strlen(f.text); /* NUL-terminated, within the cap */
				if (n > caps[i])
					FUZZ_FAIL();
			}
			client_frame_free(&f);
		} else {
			/* the cortex.error frame fanout_error() builds from it */
			json_t *o = code && memchr(msg, 0, sizeof msg)
					? json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg)
					: NULL;
			if (!o)
				FUZZ_FAIL();
			json_decref(o);
		}
	}
	return 0;
}
