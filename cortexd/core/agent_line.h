/* agent_line.h — what one line from ws-agent is, without acting on it.
 *
 * ws-agent sends two kinds of lines on the session's link: its own wsa.*
 * events (started, exit, stderr, error) and the agent's stream-json output,
 * verbatim.  agent_line_parse() classifies a line and pulls out what the
 * message path needs (text delta, result, block ends, control response id);
 * it does no I/O and keeps no state, so it is unit-tested and fuzzed alone. */
#ifndef CORTEX_AGENT_LINE_H
#define CORTEX_AGENT_LINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum al_kind {
	AL_BAD,              /* not a JSON object */
	AL_WSA,              /* ws-agent's own event: wsa.* */
	AL_CONTROL_RESPONSE, /* the agent answering one of cortexd's control requests */
	AL_PONG,
	AL_OUTPUT,           /* the agent's output: forwarded to clients during a turn */
};
enum al_wsa { WSA_OTHER, WSA_STARTED, WSA_EXIT, WSA_STDERR, WSA_ERROR, WSA_DETACHED, WSA_ATTACHED };

struct agent_line {
	enum al_kind kind;
	json_t *o;            /* the parsed line (owned; agent_line_free) */
	const char *type;     /* "type" member, or NULL (borrowed from o) */
	/* AL_WSA */
	enum al_wsa wsa;
	int has_gen;
	uint64_t gen;
	/* AL_CONTROL_RESPONSE */
	const char *request_id;
	/* AL_OUTPUT */
	const char *delta;    /* text of a content_block_delta/text_delta, else NULL */
	size_t delta_len;
	int is_result;        /* the turn's last line */
	int is_error;         /* result with is_error:true */
	const char *result;   /* result text, or NULL */
	int block_end;        /* content_block_stop / message_stop: a sentence may end */
	char *delta_buf;      /* the fast path's unescaped delta (owned), else NULL */
};

/* Always fills out (kind AL_BAD when the line is not an object). */
void agent_line_parse(struct agent_line *out, const char *line, size_t len);
void agent_line_free(struct agent_line *l);
/* String member k of the line's object, or NULL. */
const char *agent_line_str(const struct agent_line *l, const char *k);

#endif
