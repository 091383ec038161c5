/* Fuzz target: one line from ws-agent, wsa.* or the agent's stream-json
 * (cortexd/core/agent_line.c, with its fast path for text deltas and the
 * structural events around a text block, and its skim for the other output
 * lines).  Every line's fields must be what jansson's tree says
 * (agent_line_oracle.h). */
#include <stdlib.h>
#include <string.h>

#include "agent_line.h"
#include "agent_line_oracle.h"
#include "fuzz.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_line l;
	agent_line_parse(&l, (const char *)data, size);
	volatile size_t sink = 0;
	size_t dn = 0;
	const char *d = agent_line_delta(&l, &dn);
	if (d) /* every byte of the delta is readable */
		for (size_t i = 0; i < dn; i++)
			sink += (unsigned char)d[i];
	if (l.is_delta && !d)
		FUZZ_FAIL(); /* only out of memory could leave a delta without its text */
	if (l.fast) {
		/* The fast path agrees with jansson on what it takes: a delta's
		 * text, or a structural event and whether it ends a block. */
		json_t *o = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
		json_t *ev = json_object_get(o, "event");
		const char *et = json_string_value(json_object_get(ev, "type"));
		if (!json_is_object(o) || strcmp(json_string_value(json_object_get(o, "type")) ?: "", "stream_event"))
			FUZZ_FAIL();
		if (l.is_delta) {
			json_t *t = json_object_get(json_object_get(ev, "delta"), "text");
			if (!json_is_string(t) || json_string_length(t) != dn || memcmp(json_string_value(t), d, dn))
				FUZZ_FAIL();
		} else {
			int end = et && (!strcmp(et, "content_block_stop") || !strcmp(et, "message_stop"));
			if (!et || (!end && strcmp(et, "content_block_start")) || l.block_end != end ||
			    json_object_get(ev, "delta"))
				FUZZ_FAIL();
		}
		json_decref(o);
	}
	if (l.type)
		sink += strlen(l.type);
	if (l.result)
		sink += strlen(l.result);
	if (l.request_id)
		sink += strlen(l.request_id);
	const char *s = agent_line_str(&l, "session_id");
	if (s)
		sink += strlen(s);
	if (l.kind == AL_BAD && l.o)
		FUZZ_FAIL();
	const char *why = agent_line_oracle(&l, (const char *)data, size);
	if (why) {
		fprintf(stderr, "fuzz: %s differs from jansson's\n", why);
		FUZZ_FAIL();
	}
	(void)sink;
	agent_line_free(&l);
	return 0;
}
