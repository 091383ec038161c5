/* proto.c — one message from cortexd (protocol v2, docs/protocol.md):
 * {"type":"start"|"input"|"stop","gen":G,...}, {"type":"ping"|"detach"},
 * {"type":"attach"[,"seq":K]} or {"type":"ack","seq":K} (an input may carry
 * "ack":K too), parsed
 * without acting on it (server.c acts).  A fuzz target (tests/fuzz). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsa.h"

void wsa_msg_free(struct wsa_msg *m)
{
	json_decref(m->root);
	m->root = NULL;
	free(m->partial);
	m->partial = NULL;
}

__attribute__((format(printf, 4, 5))) static int fail(json_t *root, char *why, size_t cap,
						     const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, cap, fmt, ap);
	va_end(ap);
	json_decref(root);
	return -1;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* detach's "stdout":{"gen":G,"partial":"<hex>","dropping":B} (all optional
 * but gen): the partial line goes back to ws-agent's splitter, so it is
 * held to what cortexd's splitter could have held (no '\n', a line cap). */
static int parse_detach_stdout(struct wsa_msg *out, char *why, size_t cap)
{
	json_t *o = json_object_get(out->root, "stdout");
	if (!o)
		return 0;
	json_t *g = json_object_get(o, "gen"), *h = json_object_get(o, "partial");
	if (!json_is_object(o) || !json_is_integer(g) || json_integer_value(g) <= 0 || (h && !json_is_string(h)))
		return fail(out->root, why, cap, "%s", "\"detach\": bad \"stdout\"");
	out->out_gen = (int64_t)json_integer_value(g);
	out->partial_dropping = json_is_true(json_object_get(o, "dropping"));
	size_t n = h ? json_string_length(h) : 0;
	if (n % 2 || n / 2 > CX_CAP_AGENT_LINE)
		return fail(out->root, why, cap, "%s", "\"detach\": bad \"stdout\" partial");
	if (!n)
		return 0;
	const char *x = json_string_value(h);
	if (!(out->partial = malloc(n / 2)))
		return fail(out->root, why, cap, "%s", "out of memory");
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(x[2 * i]), lo = hexval(x[2 * i + 1]);
		if (hi < 0 || lo < 0 || (out->partial[i] = (char)(hi << 4 | lo)) == '\n') {
			free(out->partial);
			out->partial = NULL;
			return fail(out->root, why, cap, "%s", "\"detach\": bad \"stdout\" partial");
		}
	}
	out->partial_len = n / 2;
	return 0;
}

int wsa_msg_parse(const char *buf, size_t len, struct wsa_msg *out, int64_t *err_gen, char *why,
		  size_t cap)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, 0, &jerr);
	*err_gen = 0;
	if (!root)
		return fail(NULL, why, cap, "%s", jerr.text);
	if (!json_is_object(root))
		return fail(root, why, cap, "%s", "frame must be a JSON object");
	const char *type = json_string_value(json_object_get(root, "type"));
	if (!type)
		return fail(root, why, cap, "%s", "missing string field \"type\"");
	*out = (struct wsa_msg){.root = root};
	if (!strcmp(type, "ping")) {
		out->type = WSA_MSG_PING;
		return 0;
	}
	if (!strcmp(type, "detach")) {
		out->type = WSA_MSG_DETACH;
		return parse_detach_stdout(out, why, cap);
	}
	if (!strcmp(type, "attach") || !strcmp(type, "ack")) {
		/* attach: "seq" (optional) is the last line of ours cortexd has
		 * durably; ack: the lines up to "seq" need not be kept. */
		out->type = type[1] == 't' ? WSA_MSG_ATTACH : WSA_MSG_ACK;
		json_t *j = json_object_get(root, "seq");
		if (j && (!json_is_integer(j) || json_integer_value(j) < 0))
			return fail(root, why, cap, "\"%s\": \"seq\" must be a non-negative integer", type);
		if (!j && out->type == WSA_MSG_ACK)
			return fail(root, why, cap, "%s", "\"ack\" needs \"seq\"");
		out->has_seq = j != NULL;
		out->seq = j ? (uint64_t)json_integer_value(j) : 0;
		return 0;
	}
	if (!strcmp(type, "input"))
		out->type = WSA_MSG_INPUT;
	else if (!strcmp(type, "start"))
		out->type = WSA_MSG_START;
	else if (!strcmp(type, "stop"))
		out->type = WSA_MSG_STOP;
	else if (!strcmp(type, "stdout_back"))
		out->type = WSA_MSG_STDOUT_BACK;
	else
		return fail(root, why, cap, "unknown type \"%.64s\"", type);
	json_t *j = json_object_get(root, "gen");
	if (!json_is_integer(j) || json_integer_value(j) <= 0)
		return fail(root, why, cap, "\"%s\" needs a positive integer \"gen\"", type);
	out->gen = (int64_t)json_integer_value(j);
	if (out->type == WSA_MSG_START)
		out->want_stdout = json_is_true(json_object_get(root, "stdout"));
	if (out->type != WSA_MSG_INPUT)
		return 0;
	*err_gen = out->gen;
	json_t *jdata = json_object_get(root, "data");
	if (!json_is_string(jdata))
		return fail(root, why, cap, "%s", "\"input\" needs a string \"data\"");
	out->data = json_string_value(jdata);
	out->data_len = json_string_length(jdata);
	if (memchr(out->data, '\n', out->data_len))
		return fail(root, why, cap, "%s", "\"data\" must be one line (no newline)");
	/* "ack" (optional): an ack riding along, as {"type":"ack"} */
	json_t *ja = json_object_get(root, "ack");
	if (ja && (!json_is_integer(ja) || json_integer_value(ja) < 0))
		return fail(root, why, cap, "%s", "\"input\": \"ack\" must be a non-negative integer");
	out->has_seq = ja != NULL;
	out->seq = ja ? (uint64_t)json_integer_value(ja) : 0;
	return 0;
}
