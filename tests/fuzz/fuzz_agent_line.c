/* Fuzz target: one line from ws-agent, wsa.* or the agent's stream-json
 * (cortexd/core/agent_line.c, with its fast path for text deltas). */
#include <stdlib.h>
#include <string.h>

#include "agent_line.h"
#include "fuzz.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_line l;
	agent_line_parse(&l, (const char *)data, size);
	volatile size_t sink = 0;
	if (l.delta) /* every byte of the delta is readable */
		for (size_t i = 0; i < l.delta_len; i++)
			sink += (unsigned char)l.delta[i];
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
	(void)sink;
	agent_line_free(&l);
	return 0;
}
