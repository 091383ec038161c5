/* Fuzz target: one protocol message from cortexd to ws-agent (ws-agent/proto.c). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "wsa.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wsa_msg m;
	int64_t egen = -1;
	char why[256];
	if (wsa_msg_parse((const char *)data, size, &m, &egen, why, sizeof why) < 0) {
		if (egen < 0 || !memchr(why, 0, sizeof why))
			FUZZ_FAIL();
		return 0;
	}
	/* ping, detach, attach and ack carry no generation; the others a positive one */
	int genless = m.type == WSA_MSG_PING || m.type == WSA_MSG_DETACH || m.type == WSA_MSG_ATTACH ||
		      m.type == WSA_MSG_ACK;
	if ((!genless && m.gen <= 0) || (genless && m.gen != 0))
		FUZZ_FAIL();
	/* a link seq only where one belongs (an input's optional "ack"); ack always has one */
	if ((m.has_seq && m.type != WSA_MSG_ATTACH && m.type != WSA_MSG_ACK && m.type != WSA_MSG_INPUT) ||
	    (m.type == WSA_MSG_ACK && !m.has_seq) || (!m.has_seq && m.seq != 0))
		FUZZ_FAIL();
	if (m.type == WSA_MSG_INPUT && (!m.data || memchr(m.data, '\n', m.data_len)))
		FUZZ_FAIL();
	wsa_msg_free(&m);
	return 0;
}
