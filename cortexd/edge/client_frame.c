/* client_frame.c — see client_frame.h. */
#include "client_frame.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx.h"

static int bad(const char **code, const char *c, char *msg, size_t mcap, const char *m)
{
	*code = c;
	snprintf(msg, mcap, "%s", m);
	return -1;
}

static int parse_message(json_t *o, size_t text_cap, struct client_frame *out, const char **code, char *msg,
			 size_t mcap)
{
	json_t *tv = json_object_get(o, "text");
	const char *text = json_string_value(tv);
	if (!text || !*text)
		return bad(code, "bad_frame", msg, mcap, "\"message\" needs a non-empty string \"text\"");
	if (json_string_length(tv) > text_cap)
		return bad(code, "too_large", msg, mcap, "message text over the size cap");
	if (strlen(text) != json_string_length(tv))
		return bad(code, "bad_frame", msg, mcap, "\"text\" must not contain NUL characters");
	if (!(out->text = strdup(text)))
		return bad(code, "internal", msg, mcap, "out of memory");
	out->type = CF_MESSAGE;
	return 0;
}

int client_frame_parse(const char *data, size_t len, size_t text_cap, struct client_frame *out, const char **code,
		       char *msg, size_t mcap)
{
	memset(out, 0, sizeof *out);
	json_error_t jerr;
	json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = json_is_object(o) ? json_string_value(json_object_get(o, "type")) : NULL;
	int rc = 0;
	if (!type) {
		rc = bad(code, "bad_frame", msg, mcap, o ? "frame needs a string \"type\"" : jerr.text);
	} else if (!strcmp(type, "message")) {
		rc = parse_message(o, text_cap, out, code, msg, mcap);
	} else if (!strcmp(type, "cancel")) {
		out->type = CF_CANCEL;
	} else if (!strcmp(type, "watch") || !strcmp(type, "unwatch")) {
		json_t *pv = json_object_get(o, "path");
		const char *p = json_string_value(pv);
		if (!p || !*p || json_string_length(pv) > 1024 || strlen(p) != json_string_length(pv))
			rc = bad(code, "bad_frame", msg, mcap, "\"watch\" needs a string \"path\" (\"/workspace\" or \"/home/agent\")");
		else if (!(out->text = strdup(p)))
			rc = bad(code, "internal", msg, mcap, "out of memory");
		else
			out->type = type[0] == 'w' ? CF_WATCH : CF_UNWATCH;
	} else if (!strcmp(type, "exec") || !strcmp(type, "stdin") || !strcmp(type, "resize") ||
		   !strcmp(type, "exec_cancel")) {
		json_t *iv = json_object_get(o, "id");
		const char *id = json_string_value(iv);
		if (!id || !*id || json_string_length(iv) > 64 || strlen(id) != json_string_length(iv)) {
			*code = "bad_frame";
			snprintf(msg, mcap, "\"%s\" needs a string \"id\" of 1 to 64 bytes", type);
			rc = -1;
		} else {
			out->type = type[0] == 'e' ? (type[4] ? CF_EXEC_CANCEL : CF_EXEC) : type[0] == 's' ? CF_STDIN : CF_RESIZE;
			out->obj = json_incref(o);
		}
	} else if (!strcmp(type, "resume")) {
		json_t *a = json_object_get(o, "after_seq");
		if (!json_is_integer(a) || json_integer_value(a) < 0) {
			rc = bad(code, "bad_frame", msg, mcap, "\"resume\" needs a non-negative integer \"after_seq\"");
		} else {
			out->type = CF_RESUME;
			out->after_seq = (uint64_t)json_integer_value(a);
		}
	} else {
		*code = "bad_frame";
		snprintf(msg, mcap, "unknown frame type \"%.64s\"", type);
		rc = -1;
	}
	json_decref(o);
	if (rc < 0)
		cx_utf8_fix(msg); /* the type cut at 64 bytes, or the parser's quote of the input */
	return rc;
}

void client_frame_free(struct client_frame *f)
{
	free(f->text);
	f->text = NULL;
	json_decref(f->obj);
	f->obj = NULL;
}
