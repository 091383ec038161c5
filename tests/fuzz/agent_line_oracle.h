/* agent_line_oracle.h — what agent_line_parse() must say of a line, from
 * jansson alone (a whole tree, as before the fast path and the skim).  Used
 * by fuzz_agent_line and unit.test_agent_line: the two tree-free paths must
 * give every field the message path reads exactly as jansson's tree would. */
#ifndef CORTEX_AGENT_LINE_ORACLE_H
#define CORTEX_AGENT_LINE_ORACLE_H

#include <string.h>

#include <jansson.h>

#include "agent_line.h"

static int oracle_same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* NULL when l says what jansson's tree says, else what differs. */
static inline const char *agent_line_oracle(const struct agent_line *l, const char *line, size_t len)
{
	json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	const char *why = NULL;
	if (!json_is_object(o)) {
		why = l->kind != AL_BAD ? "jansson refuses the line" : NULL;
		json_decref(o);
		return why;
	}
	const char *type = json_string_value(json_object_get(o, "type"));
	enum al_kind kind = type && !strncmp(type, "wsa.", 4)	     ? AL_WSA
			    : oracle_same_str(type, "control_response") ? AL_CONTROL_RESPONSE
			    : oracle_same_str(type, "pong")		     ? AL_PONG
									     : AL_OUTPUT;
	json_t *ev = json_object_get(o, "event");
	const char *et = json_string_value(json_object_get(ev, "type"));
	int stream = oracle_same_str(type, "stream_event"), result = oracle_same_str(type, "result");
	json_t *d = json_object_get(ev, "delta"), *txt = json_object_get(d, "text");
	int delta = stream && oracle_same_str(et, "content_block_delta") &&
		    oracle_same_str(json_string_value(json_object_get(d, "type")), "text_delta") && json_is_string(txt);
	int end = stream && (oracle_same_str(et, "content_block_stop") || oracle_same_str(et, "message_stop"));
	size_t dn = 0;
	const char *dt = agent_line_delta(l, &dn);
	if (l->kind != kind)
		why = "kind";
	else if (!oracle_same_str(l->type, type))
		why = "type";
	else if (kind != AL_OUTPUT)
		why = NULL; /* the rest is the tree's (l->o) */
	else if (l->is_delta != delta || l->block_end != end || l->is_result != result)
		why = "delta, block end or result";
	else if (delta && (!dt || dn != json_string_length(txt) || memcmp(dt, json_string_value(txt), dn)))
		why = "delta text";
	else if (result && (l->is_error != json_is_true(json_object_get(o, "is_error")) ||
			    !oracle_same_str(l->result, json_string_value(json_object_get(o, "result")))))
		why = "is_error or result text";
	else if ((l->fast || l->skim) && (l->o || json_object_get(o, "seq")))
		why = "a tree-free line with a tree, or with a \"seq\" (turn.c needs the tree)";
	json_decref(o);
	return why;
}

#endif
