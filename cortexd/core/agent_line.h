/* agent_line.h — what one line from ws-agent is, without acting on it.
 *
 * ws-agent sends two kinds of lines on the session's link: its own wsa.*
 * events (started, exit, stderr, error) and the agent's stream-json output,
 * verbatim.  agent_line_parse() classifies a line and pulls out what the
 * message path needs (text delta, result, block ends, control response id);
 * it does no I/O and keeps no state, so it is unit-tested and fuzzed alone.
 * Three ways in, one answer: a fast path for Claude Code's text deltas, a
 * skim for the other output lines (both without a tree), jansson for the
 * rest and for any line either is unsure of. */
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
	json_t *o;            /* the parsed line (owned; agent_line_free), NULL when fast or skim */
	const char *type;     /* "type" member, or NULL (borrowed from o or type_buf) */
	/* AL_WSA */
	enum al_wsa wsa;
	int has_gen;
	uint64_t gen;
	/* AL_CONTROL_RESPONSE */
	const char *request_id;
	/* AL_OUTPUT */
	int is_delta;         /* a content_block_delta/text_delta: its text is agent_line_delta() */
	int is_result;        /* the turn's last line */
	int is_error;         /* result with is_error:true */
	const char *result;   /* result text, or NULL */
	int block_end;        /* content_block_stop / message_stop: a sentence may end */
	int fast;             /* taken apart by the fast path (no jansson tree) */
	int skim;             /* checked by the skim (no jansson tree): o is NULL */
	char type_buf[32];    /* the skim's type (type points here) */
	char *result_buf;     /* the skim's result text (owned; result points here) */
	/* The delta's text, for agent_line_delta() only.  The fast path validates
	 * the JSON string in place (raw: its bytes between the quotes, in the
	 * caller's line) and decodes it only when asked and only if it has an
	 * escape: a flood's frame is the line itself, never the decoded text. */
	const char *delta_raw;
	size_t delta_raw_len;
	int delta_escaped;
	const char *delta_text; /* decoded (jansson's, raw, or delta_buf), else NULL */
	size_t delta_len;
	char *delta_buf;      /* the unescaped delta (owned), else NULL */
};

/* Always fills out (kind AL_BAD when the line is not an object).  line must
 * outlive l (a fast-path delta points into it). */
void agent_line_parse(struct agent_line *out, const char *line, size_t len);
void agent_line_free(struct agent_line *l);
/* The text of a text delta (decoded JSON string, valid UTF-8, no NUL; not
 * NUL-terminated), *len its bytes; NULL when the line is no text delta, or
 * when decoding it found no memory (l->is_delta says which: the stream guard
 * fails closed).  Decodes at most once per line (l is a cache: the const is
 * the caller's view). */
const char *agent_line_delta(const struct agent_line *l, size_t *len);
/* String member k of the line's object, or NULL. */
const char *agent_line_str(const struct agent_line *l, const char *k);

#endif
