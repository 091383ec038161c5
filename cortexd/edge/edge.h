/* edge.h — the daemon's edge: HTTP routes (api.c, settings.c,
 * routes_metrics.c), client WebSockets (ws_client.c), replies.  The edge
 * validates and answers; what happens to a session is the lifecycle's. */
#ifndef CORTEX_EDGE_H
#define CORTEX_EDGE_H

#include "session.h"

struct api_req {
	const char *method;  /* GET POST PUT DELETE */
	const char *path;
	const char *token;   /* may be NULL */
	const char *body;    /* may be NULL */
	size_t body_len;
	const char *query;   /* URI args "a=1&b=2", may be NULL */
	const char *body_file; /* a body streamed to this file (images_upload_route), or NULL; the route owns it */
	const char *range;   /* the Range header, or NULL */
	const char *if_none_match; /* the If-None-Match header, or NULL */
};
struct api_defer;
struct api_resp {
	int status;
	char *body;          /* malloc'd JSON, or NULL for an empty body */
	size_t body_len;     /* 0 = strlen(body); else body is these bytes (binary, ctype set) */
	char content_range[96]; /* "bytes a-b/size" for a 206, "" = none */
	const char *ctype;   /* NULL = application/json */
	const char *etag;    /* a static ETag to send ("\"...\""), or NULL */
	struct api_defer *defer; /* set by api_defer(): the reply waits for a job */
	char stream_file[1024];  /* non-empty: the body is this file, sent chunked and followed while */
	char stream_name[128];   /* the build of image stream_name runs (GET /v1/images/{name}/log) */
	const char *const *headers; /* static: more header "name:", "value" pairs, NULL-ended (ui.c) */
	char location[700];         /* non-empty: a Location header (307 to a session's owner node) */
	int forward;                /* proxy the request to the node at location (nproxy.h), not a reply */
};

/* Store writes never run on the service thread (SQLite fsyncs): a route that
 * writes validates first, then hands the write to api_defer().  run runs on a
 * worker (it may only touch arg and the store); then runs on the service
 * thread with run's result and fills resp — or gets resp NULL when the client
 * has gone (the side effects still happen).  then frees arg. */
typedef int (*api_run_fn)(void *arg, cx_err *err);
typedef void (*api_then_fn)(void *arg, int rc, const cx_err *err, struct api_resp *resp);
void api_defer(struct api_resp *resp, api_run_fn run, api_then_fn then, void *arg);
/* Start the deferred job of resp (http.c); the reply is written when it is
 * done, unless api_defer_detach() said the connection went away. */
void api_defer_start(struct api_resp *resp, struct lws *wsi, struct api_defer **slot);
void api_defer_detach(struct api_defer *j);
/* A reply that waits for an event on the service thread instead of a job:
 * then is called (resp NULL if the client has gone) once the owner calls
 * api_defer_complete(j, ...), which may come before or after the connection
 * starts waiting. */
struct api_defer *api_defer_event(struct api_resp *resp, api_then_fn then, void *arg);
void api_defer_complete(struct api_defer *j, int rc, const cx_err *err);
/* create_commit.c: a created session's row (key, val: alive until then runs)
 * committed with the rows of other creates in one store transaction (group
 * commit); then runs once that commit returned, as with api_defer. */
void create_commit(store *st, const char *key, const char *val, struct api_resp *resp, api_then_fn then,
		   void *arg);
/* Run it here and now (unit tests, which have no worker pool). */
void api_defer_finish(struct api_resp *resp);
void api_handle(struct cortexd *d, const struct api_req *req, struct api_resp *resp);
void api_error(struct api_resp *resp, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* status and a JSON body (o consumed; NULL = empty body). */
void api_reply(struct api_resp *resp, int status, json_t *o);
/* Request bodies, shared by every route: a JSON object or a 4xx in resp (NULL). */
json_t *api_body_object(const struct api_req *req, struct api_resp *resp, int allow_empty);
/* -1 with a 400 in resp when o has a member outside allowed (NULL-terminated). */
int api_only_keys(json_t *o, const char *const *allowed, const char *what, struct api_resp *resp);
/* Who is calling. */
enum api_who { WHO_NONE = -1, WHO_USER = 0, WHO_ADMIN = 1 };
/* WHO_USER with the name in out, WHO_ADMIN, or WHO_NONE (no or bad token). */
enum api_who api_auth(struct cortexd *d, const char *token, char *out_user, size_t cap);
/* One query argument ("name=value&..."), copied into out; 0 if absent. */
int api_query_arg(const char *q, const char *name, char *out, size_t cap);
/* An integer query value in [lo, hi]: 0, or -1. */
int api_parse_int(const char *v, long long lo, long long hi, long long *out);

/* openapi.c: GET /v1/openapi.json (no auth), docs/openapi.json as built in. */
void openapi_route(const struct api_req *req, struct api_resp *resp);

/* routes_metrics.c: /metrics, /v1/metrics/turns, /v1/metrics/summary */
void routes_metrics(struct cortexd *d, const char *user, enum api_who who, const struct api_req *req,
		    struct api_resp *resp);

/* files_route.c: registers its /metrics writer. */
void files_route_init(void);
/* files_route.c: GET|PUT|DELETE /v1/sessions/{id}/files?path= (s is the caller's). */
void files_route(struct cortexd *d, struct session *s, const struct api_req *req, struct api_resp *resp);
/* The body cap of a request to path with method m: files.max_write_mb for a
 * files PUT, 0 when the route is not that. */
size_t files_route_body_cap(struct cortexd *d, const char *m, const char *path);

/* exec_route.c: POST /v1/sessions/{id}/exec (s is the caller's). */
void exec_route(struct cortexd *d, struct session *s, const struct api_req *req, struct api_resp *resp);

/* settings.c: rest is the path after "/v1/settings/"; user a user (never admin). */
void settings_route(struct cortexd *d, const char *user, const struct api_req *req, const char *rest,
		    struct api_resp *resp);

/* ws_client.c: the "cortex" protocol's WebSocket callbacks. */
/* Refuse an upgrade from LWS_CALLBACK_HTTP_CONFIRM_UPGRADE with status and the
 * JSON error shape; returns what the callback returns. */
int ws_reject_upgrade(struct lws *wsi, int status, const char *code, const char *msg);
/* ... with a Retry-After of retry_s seconds (0: none). */
int ws_reject_upgrade_retry(struct lws *wsi, int status, const char *code, const char *msg, int retry_s);
/* The request's token: "Authorization: Bearer X" (*in_header = 1 if given)
 * or ?token=X; "" when neither. */
void ws_token(struct lws *wsi, char *out, int cap, int *in_header);
int ws_client_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason, struct client *c,
		       void *in, size_t len);

#endif
