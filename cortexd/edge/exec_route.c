/* exec_route.c — POST /v1/sessions/{id}/exec (docs/protocol.md "Exec"): one
 * command, its output in the reply.  The body is checked here (the same
 * rules as the WebSocket's exec frame); the command runs through core/exec.c
 * and the reply waits for its end on the service thread (api_defer_event),
 * never blocking it.  stdout and stderr are kept up to exec.max_output_kb
 * each ("truncated"); timeout_s defaults to exec.default_timeout_s.  A client
 * that hangs up does not stop the command: its timeout does. */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

#include "exec.h"

struct exec_req {
	struct api_defer *j;
	int base64;
	json_t *reply; /* filled by done */
	int status;
	char code[32], msg[300];
};

static json_t *out_json(const char *b, size_t n, int base64)
{
	if (!n)
		return json_string("");
	if (base64) {
		size_t cap = (n + 2) / 3 * 4 + 4;
		char *o = malloc(cap);
		int l = o ? lws_b64_encode_string(b, (int)n, o, (int)cap) : -1;
		json_t *s = l < 0 ? NULL : json_stringn(o, (size_t)l);
		free(o);
		return s;
	}
	char *c = malloc(n + 1);
	if (!c)
		return NULL;
	memcpy(c, b, n);
	c[n] = '\0';
	for (size_t i = 0; i < n; i++) /* NUL bytes would cut the fix below */
		if (!c[i])
			c[i] = '?';
	cx_utf8_fix(c);
	json_t *s = json_stringn(c, n);
	free(c);
	return s;
}

static void on_done(void *arg, const struct exec_result *r)
{
	struct exec_req *q = arg;
	if (r->fail_code) {
		q->status = !strcmp(r->fail_code, "session_unavailable") ? 503
			    : !strcmp(r->fail_code, "not_found") ? 404 : !strcmp(r->fail_code, "exec_not_found") ? 400 : 500;
		snprintf(q->code, sizeof q->code, "%s", r->fail_code);
		snprintf(q->msg, sizeof q->msg, "%s", r->fail_msg ? r->fail_msg : r->fail_code);
	} else {
		q->status = 200;
		q->reply = json_pack("{s:o,s:o,s:o,s:o,s:b,s:b,s:f}", "code", r->code >= 0 ? json_integer(r->code) : json_null(),
				     "signal", r->signal ? json_string(r->signal) : json_null(), "stdout",
				     out_json(r->out, r->nout, q->base64), "stderr", out_json(r->err, r->nerr, q->base64),
				     "timed_out", r->timed_out, "truncated", r->truncated, "ms", r->ms);
		if (!q->reply) {
			q->status = 500;
			snprintf(q->code, sizeof q->code, "internal");
			snprintf(q->msg, sizeof q->msg, "out of memory");
		}
	}
	api_defer_complete(q->j, 0, NULL);
}

static void then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct exec_req *q = arg;
	(void)rc;
	(void)err;
	if (resp && q->status == 200)
		api_reply(resp, 200, q->reply);
	else if (resp)
		api_error(resp, q->status, q->code, "%s", q->msg);
	if (!resp || q->status != 200)
		json_decref(q->reply);
	free(q);
}

void exec_route(struct cortexd *d, struct session *s, const struct api_req *req, struct api_resp *resp)
{
	if (strcmp(req->method, "POST")) {
		api_error(resp, 405, "method_not_allowed", "use POST (or the \"exec\" frame of the session WebSocket)");
		return;
	}
	if (s->deleted) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	json_t *o = api_body_object(req, resp, 0);
	if (!o)
		return;
	struct exec_spec sp;
	char msg[300];
	int status = 0;
	if (exec_spec_parse(o, 1, &d->cfg, &sp, msg, sizeof msg) < 0) {
		json_decref(o);
		exec_spec_clear(&sp);
		cx_utf8_fix(msg);
		api_error(resp, 400, "bad_request", "%s", msg);
		return;
	}
	json_decref(o);
	struct exec_req *q = calloc(1, sizeof *q);
	if (!q) {
		exec_spec_clear(&sp);
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	q->base64 = sp.base64;
	q->j = api_defer_event(resp, then, q);
	if (!q->j) /* then ran (out of memory) and freed q */
		return exec_spec_clear(&sp);
	if (exec_oneshot(s, &sp, on_done, q, &status, msg, sizeof msg) < 0) {
		q->status = status;
		snprintf(q->code, sizeof q->code, "%s", status == 429 ? "too_many_execs" : "internal");
		snprintf(q->msg, sizeof q->msg, "%s", msg);
		api_defer_complete(q->j, 0, NULL);
	}
}
