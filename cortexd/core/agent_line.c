/* agent_line.c — see agent_line.h. */
#include "agent_line.h"

#include <string.h>

static const char *str_of(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int eq(const char *a, const char *b) { return a && !strcmp(a, b); }

static void parse_wsa(struct agent_line *l)
{
	const char *t = l->type + 4;
	l->wsa = eq(t, "started") ? WSA_STARTED
		 : eq(t, "exit")   ? WSA_EXIT
		 : eq(t, "stderr") ? WSA_STDERR
		 : eq(t, "error")  ? WSA_ERROR
				   : WSA_OTHER;
	json_t *g = json_object_get(l->o, "gen");
	if (json_is_integer(g) && json_integer_value(g) >= 0) {
		l->has_gen = 1;
		l->gen = (uint64_t)json_integer_value(g);
	}
}

static void parse_output(struct agent_line *l)
{
	if (eq(l->type, "result")) {
		l->is_result = 1;
		l->is_error = json_is_true(json_object_get(l->o, "is_error"));
		l->result = str_of(l->o, "result");
		return;
	}
	if (!eq(l->type, "stream_event"))
		return;
	json_t *ev = json_object_get(l->o, "event");
	const char *et = str_of(ev, "type");
	if (eq(et, "content_block_delta")) {
		json_t *d = json_object_get(ev, "delta");
		json_t *txt = json_object_get(d, "text");
		if (eq(str_of(d, "type"), "text_delta") && json_is_string(txt)) {
			l->delta = json_string_value(txt);
			l->delta_len = json_string_length(txt);
		}
	} else if (eq(et, "content_block_stop") || eq(et, "message_stop")) {
		l->block_end = 1;
	}
}

void agent_line_parse(struct agent_line *out, const char *line, size_t len)
{
	memset(out, 0, sizeof *out);
	/* \u0000 in a string (a text delta, a tool result, the result) is still
	 * an object: refused, a result line would never end its turn. */
	json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		out->kind = AL_BAD;
		return;
	}
	out->o = o;
	out->type = str_of(o, "type");
	if (out->type && !strncmp(out->type, "wsa.", 4)) {
		out->kind = AL_WSA;
		parse_wsa(out);
	} else if (eq(out->type, "control_response")) {
		out->kind = AL_CONTROL_RESPONSE;
		out->request_id = str_of(json_object_get(o, "response"), "request_id");
	} else if (eq(out->type, "pong")) {
		out->kind = AL_PONG;
	} else {
		out->kind = AL_OUTPUT;
		parse_output(out);
	}
}

void agent_line_free(struct agent_line *l)
{
	json_decref(l->o);
	l->o = NULL;
}

const char *agent_line_str(const struct agent_line *l, const char *k) { return str_of(l->o, k); }
