/* ws_client.c — the client WebSocket (/v1/sessions/{id}/ws): authorize the
 * upgrade, parse each frame (client_frame.c) and hand it to the lifecycle;
 * write queued frames when lws says the socket is writeable. */
#include "edge.h"
#include "owner.h"

#include <string.h>

#include "caps.h"
#include "client_frame.h"
#include "exec.h"
#include "fanout.h"
#include "fswatch.h"
#include "lifecycle.h"
#include "log.h"
#include "refuse.h"

static int parse_ws_path(const char *uri, char *out_id, size_t cap)
{
	static const char pre[] = "/v1/sessions/";
	if (strncmp(uri, pre, sizeof pre - 1))
		return -1;
	const char *id = uri + sizeof pre - 1;
	const char *slash = strchr(id, '/');
	if (!slash || strcmp(slash, "/ws") || slash == id || (size_t)(slash - id) >= cap)
		return -1;
	memcpy(out_id, id, (size_t)(slash - id));
	out_id[slash - id] = '\0';
	return 0;
}

/* The token from "Authorization: Bearer X" (then *in_header, if given) or,
 * for browsers, ?token=X.  Shared by every WebSocket and preview route. */
void ws_token(struct lws *wsi, char *out, int cap, int *in_header)
{
	char hdr[400];
	if (in_header)
		*in_header = 0;
	if (lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 && !strncasecmp(hdr, "Bearer ", 7)) {
		snprintf(out, (size_t)cap, "%s", hdr + 7);
		if (in_header)
			*in_header = 1;
		return;
	}
	const char *v = lws_get_urlarg_by_name(wsi, "token=", out, cap);
	if (v)
		memmove(out, v, strlen(v) + 1);
	else
		out[0] = '\0';
}

/* Refuse an upgrade with a real HTTP status and the JSON error shape.  Only
 * from HTTP_CONFIRM_UPGRADE: there lws lets the callback answer the request
 * itself (headers and body, one lws_write) and return >0; lws then finishes
 * the HTTP transaction. */
int ws_reject_upgrade(struct lws *wsi, int status, const char *code, const char *msg)
{
	return ws_reject_upgrade_retry(wsi, status, code, msg, 0);
}

int ws_reject_upgrade_retry(struct lws *wsi, int status, const char *code, const char *msg, int retry_s)
{
	unsigned char buf[LWS_PRE + 1024];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	char body[600];
	json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	int blen = o ? (int)json_dumpb(o, body, sizeof body, JSON_COMPACT) : 0;
	json_decref(o);
	if (blen <= 0 || (size_t)blen > sizeof body)
		return -1;
	if (lws_add_http_common_headers(wsi, (unsigned int)status, "application/json", (lws_filepos_t)blen, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end))
		return -1;
	char ra[16];
	int ral = snprintf(ra, sizeof ra, "%d", retry_s);
	if ((retry_s > 0 && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER, (const unsigned char *)ra, ral,
							 &p, end)) ||
	    lws_finalize_http_header(wsi, &p, end) || end - p < blen)
		return -1; /* cannot happen with these sizes: close without a reply */
	memcpy(p, body, (size_t)blen);
	p += blen;
	if (lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS) < 0)
		return -1;
	return 1;
}

/* A 307 to the node that owns the session (owner.h): ws clients that follow
 * redirects connect there. */
static int ws_redirect_upgrade(struct lws *wsi, const char *where)
{
	unsigned char buf[LWS_PRE + 1200];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	if (lws_add_http_common_headers(wsi, 307, NULL, 0, &p, end) ||
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"location:", (const unsigned char *)where,
					(int)strlen(where), &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end))
		return -1;
	if (lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS) < 0)
		return -1;
	return 1;
}

/* where (700 bytes, or NULL): set to the owner node's URL (for a 307) when
 * another node serves the session. */
static struct session *ws_authorize(struct cortexd *d, struct lws *wsi, int *status, const char **code,
				    const char **msg, char *where)
{
	char uri[512], id[64], token[300], user[80];
	*status = 404;
	*code = "not_found";
	*msg = "no such session";
	if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || parse_ws_path(uri, id, sizeof id) < 0)
		return NULL;
	ws_token(wsi, token, sizeof token, NULL);
	enum api_who who = api_auth(d, token[0] ? token : NULL, user, sizeof user);
	if (who == WHO_NONE) {
		*status = 401;
		*code = "unauthorized";
		*msg = "missing or invalid token";
		return NULL;
	}
	struct session *s = session_find(d, id);
	if (!s && who == WHO_USER && owner_enabled() && where) {
		/* another node's (307 there), or one whose node is gone (taken over) */
		char url[512];
		cx_err err = CX_ERR_INIT;
		int rc = owner_route(d, user, id, &s, url, sizeof url, &err);
		if (rc == 1 && !d->cfg.cluster_redirect) {
			/* proxy mode, the owner known from the store but not yet from the
			 * owner cache (nproxy_target): a moment */
			*status = 503;
			*code = "unavailable";
			*msg = "the session's owner is not known here yet; try again";
			return NULL;
		}
		if (rc == 1) {
			owner_redirected();
			char args[400] = "";
			for (int i = 0; i < 8; i++) { /* the query (a ?token=), as sent */
				char v[300];
				int n = lws_hdr_copy_fragment(wsi, v, sizeof v, WSI_TOKEN_HTTP_URI_ARGS, i);
				if (n <= 0)
					break;
				size_t al = strlen(args);
				snprintf(args + al, sizeof args - al, "%c%s", al ? '&' : '?', v);
			}
			snprintf(where, 700, "%s%s%s", url, uri, args);
			*status = 307;
			*code = "other_node";
			*msg = "the session is served by another node: see Location";
			return NULL;
		}
		if (rc == -1) {
			*status = 503;
			*code = "unavailable";
			*msg = "the session's owner is changing; try again";
			return NULL;
		}
	}
	if (!s || who != WHO_USER || strcmp(s->user, user))
		return NULL; /* another user's session looks exactly like a missing one */
	return s;
}

/* The ws.max_clients_* caps, at the upgrade: 0, or what the callback returns
 * after a 429.  (lws calls ESTABLISHED right after CONFIRM_UPGRADE, so the
 * counts include every upgrade accepted before this one.) */
static int ws_caps(struct cortexd *d, struct lws *wsi, struct session *s)
{
	char msg[200];
	if (s->fan.nclients >= d->cfg.ws_max_clients_per_session) {
		refuse_count(REFUSE_WS_SESSION);
		snprintf(msg, sizeof msg, "session %s has %u clients connected (cap ws.max_clients_per_session)", s->id,
			 s->fan.nclients);
		return ws_reject_upgrade_retry(wsi, 429, "too_many_clients", msg, 5);
	}
	unsigned n = fanout_user_clients(d, s->user);
	if (n >= d->cfg.ws_max_clients_per_user) {
		refuse_count(REFUSE_WS_USER);
		snprintf(msg, sizeof msg, "%u clients of yours are connected (cap ws.max_clients_per_user)", n);
		return ws_reject_upgrade_retry(wsi, 429, "too_many_clients", msg, 5);
	}
	return 0;
}

static void on_frame(struct client *c, const char *data, size_t len)
{
	struct session *s = c->sess;
	struct client_frame f;
	const char *code = NULL;
	char msg[300];
	if (client_frame_parse(data, len, CX_CAP_MESSAGE_TEXT, &f, &code, msg, sizeof msg) < 0) {
		fanout_error(s, c, code, msg);
		return;
	}
	switch (f.type) {
	case CF_MESSAGE: lifecycle_message(s, c, f.text); break;
	case CF_CANCEL: lifecycle_cancel(s, c); break;
	case CF_RESUME: fanout_resume(s, c, f.after_seq); break;
	case CF_WATCH: fswatch_client_watch(s, c, f.text, 1); break;
	case CF_UNWATCH: fswatch_client_watch(s, c, f.text, 0); break;
	case CF_EXEC: exec_client_frame(s, c, EXEC_FRAME_START, f.obj); break;
	case CF_STDIN: exec_client_frame(s, c, EXEC_FRAME_STDIN, f.obj); break;
	case CF_RESIZE: exec_client_frame(s, c, EXEC_FRAME_RESIZE, f.obj); break;
	case CF_EXEC_CANCEL: exec_client_frame(s, c, EXEC_FRAME_CANCEL, f.obj); break;
	}
	client_frame_free(&f);
}

int ws_client_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason, struct client *c,
		       void *in, size_t len)
{
	int status;
	const char *code, *msg;
	switch (reason) {
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
		if (d->stop) /* stopping, or an upgrade restart draining: the next process takes it */
			return ws_reject_upgrade_retry(wsi, 503, "restarting", "cortexd is restarting; connect again", 1);
		char where[700] = "";
		struct session *s = ws_authorize(d, wsi, &status, &code, &msg, where);
		if (!s && where[0])
			return ws_redirect_upgrade(wsi, where);
		if (!s)
			return ws_reject_upgrade(wsi, status, code, msg);
		return ws_caps(d, wsi, s);
	}
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		/* Answered at CONFIRM_UPGRADE already; a second look only hangs up. */
		return ws_authorize(d, wsi, &status, &code, &msg, NULL) ? 0 : -1;
	case LWS_CALLBACK_ESTABLISHED: {
		if (!c)
			return -1;
		memset(c, 0, sizeof *c);
		c->wsi = wsi;
		struct session *s = ws_authorize(d, wsi, &status, &code, &msg, NULL);
		if (!s)
			return -1;
		lifecycle_client_joined(s, c);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE:
		if (!c || !c->sess)
			return -1;
		if (lws_frame_is_binary(wsi)) {
			fanout_error(c->sess, c, "bad_frame", "binary frames are not accepted");
			return 0;
		}
		if (rxbuf_append(&c->rx, CX_CAP_CLIENT_FRAME, in, len) < 0)
			return -1;
		if (!lws_is_final_fragment(wsi))
			return 0;
		if (c->rx.overflow)
			fanout_error(c->sess, c, "too_large", "frame over the size cap");
		else
			on_frame(c, c->rx.buf, c->rx.len);
		rxbuf_reset(&c->rx);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE: {
		int rc = c ? fanout_writeable(c) : -1;
		if (rc == 0 && c->sess && c->sess->execs)
			exec_client_drained(c);
		return rc;
	}
	case LWS_CALLBACK_CLOSED:
		/* lws's own close reason stays in its close buffer: 1002 when it
		 * closed for a protocol error of the client's (an unmasked frame,
		 * third_party/lws).  Empty when the client closed first. */
		if (lws_get_close_length(wsi) >= 2) {
			const unsigned char *cp = lws_get_close_payload(wsi);
			if (((cp[0] << 8) | cp[1]) == LWS_CLOSE_STATUS_PROTOCOL_ERR)
				ws_protocol_error_count();
		}
		if (c) {
			exec_client_left(c); /* its commands are killed */
			lifecycle_client_left(c);
		}
		return 0;
	default:
		return 0;
	}
}
