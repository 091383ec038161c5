/* reply.c — what every route shares: the caller's identity, request bodies
 * and query arguments, and the reply shapes (every 4xx carries
 * {"error":{"code","message"}}). */
#include "edge.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "log.h"

void api_error(struct api_resp *resp, int status, const char *code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cx_utf8_fix(msg); /* quoted client bytes, or a cut: still a JSON string */
	json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	free(resp->body);
	resp->status = status;
	resp->body = json_dumps(o, JSON_COMPACT);
	resp->body_len = 0;
	resp->content_range[0] = '\0';
	resp->ctype = NULL;
	resp->etag = NULL;
	json_decref(o);
}

void api_reply(struct api_resp *resp, int status, json_t *o /* consumed; may be NULL */)
{
	free(resp->body);
	resp->status = status;
	resp->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	resp->body_len = 0;
	resp->content_range[0] = '\0';
	resp->ctype = NULL;
	resp->etag = NULL;
	json_decref(o);
}

enum api_who api_auth(struct cortexd *d, const char *token, char *out_user, size_t cap)
{
	if (!token || !*token)
		return WHO_NONE;
	if (auth_is_admin(token))
		return WHO_ADMIN;
	cx_err err = CX_ERR_INIT;
	int rc = auth_lookup_user(d->st, token, out_user, cap, &err);
	if (rc < 0 && rc != CX_NOTFOUND)
		log_error("token lookup: %s", err.msg);
	return rc == 0 ? WHO_USER : WHO_NONE;
}

int api_query_arg(const char *q, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > n && !strncmp(p, name, n) && p[n] == '=') {
			size_t vl = len - n - 1;
			if (vl >= cap)
				vl = cap - 1;
			memcpy(out, p + n + 1, vl);
			out[vl] = '\0';
			return 1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

int api_parse_int(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || !*v || *end || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

/* Parse a JSON object body; an empty body is {} when allow_empty.  A
 * well-formed scalar is bad_request (not an object), a syntax error bad_json. */
json_t *api_body_object(const struct api_req *req, struct api_resp *resp, int allow_empty)
{
	if (!req->body || !req->body_len) {
		if (allow_empty)
			return json_object();
		api_error(resp, 400, "bad_request", "a JSON object body is required");
		return NULL;
	}
	json_error_t jerr;
	json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!o) {
		api_error(resp, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
			  jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		api_error(resp, 400, "bad_request", "the body must be a JSON object");
		return NULL;
	}
	return o;
}

/* Fail on members outside the allowed list: a typo should not be silently
 * ignored.  what names the object in the message. */
int api_only_keys(json_t *o, const char *const *allowed, const char *what, struct api_resp *resp)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		int ok = 0;
		for (const char *const *a = allowed; *a; a++)
			if (!strcmp(*a, k))
				ok = 1;
		if (!ok) {
			api_error(resp, 400, "bad_request", "unknown field \"%.64s\" in %s", k, what);
			return -1;
		}
	}
	return 0;
}

