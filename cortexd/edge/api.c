/* api.c — the HTTP routes of docs/protocol.md: a request in, a status and a
 * JSON body out.  Every 4xx carries {"error":{"code","message"}}.  Validation
 * happens before anything is stored, so a bad request changes nothing. */
#include "edge.h"
#include "owner.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "auth.h"
#include "caps.h"
#include "log.h"
#include "lifecycle.h"
#include "images.h"
#include "network.h"
#include "refuse.h"
#include "repo.h"
#include "settings.h"
#include "ui.h"

/* ---- users ---- */

struct user_write {
	store *st;
	char name[CX_CAP_NAME + 8];
	char token[AUTH_TOKEN_LEN + 1];
};

static int user_run(void *arg, cx_err *err)
{
	struct user_write *w = arg;
	return auth_create_user(w->st, w->name, w->token, err);
}

static void user_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct user_write *w = arg;
	if (rc == 0)
		log_info("created user %s", w->name);
	if (resp && rc == 0)
		api_reply(resp, 201, json_pack("{s:s,s:s}", "name", w->name, "token", w->token));
	else if (resp && err->code == EEXIST)
		api_error(resp, 409, "exists", "%s", err->msg);
	else if (resp)
		api_error(resp, 500, "internal", "%s", err->msg);
	sodium_memzero(w, sizeof *w);
	free(w);
}

static void post_user(struct cortexd *d, const struct api_req *req, struct api_resp *resp)
{
	json_t *o = api_body_object(req, resp, 0);
	if (!o)
		return;
	static const char *const allowed[] = {"name", NULL};
	const char *name = json_string_value(json_object_get(o, "name"));
	if (api_only_keys(o, allowed, "a user", resp) < 0) {
	} else if (!name) {
		api_error(resp, 400, "bad_request", "\"name\" must be a string");
	} else if (!auth_valid_name(name)) {
		api_error(resp, 400, "bad_request",
			  "\"name\" must be 1-%u chars of a-z 0-9 _ -, starting with a letter or digit",
			  CX_CAP_NAME);
	} else {
		struct user_write *w = calloc(1, sizeof *w);
		if (!w) {
			api_error(resp, 500, "internal", "out of memory");
		} else {
			w->st = d->st;
			snprintf(w->name, sizeof w->name, "%s", name);
			api_defer(resp, user_run, user_then, w);
		}
	}
	json_decref(o);
}

static int user_del_run(void *arg, cx_err *err)
{
	struct user_write *w = arg;
	return auth_delete_user(w->st, w->name, err);
}

static void user_del_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct user_write *w = arg;
	if (rc == 0)
		log_info("deleted user %s", w->name);
	if (resp && rc == 0)
		api_reply(resp, 204, NULL);
	else if (resp && rc == CX_NOTFOUND)
		api_error(resp, 404, "not_found", "no user '%s'", w->name);
	else if (resp)
		api_error(resp, 500, "internal", "%s", err->msg);
	free(w);
}

/* DELETE /v1/users/{name} (admin): the user and its token go; the token stops
 * working here at once and on the other nodes when the delete's watch event
 * arrives (auth.h: the token cache). */
static void delete_user(struct cortexd *d, const char *name, struct api_resp *resp)
{
	if (!auth_valid_name(name)) {
		api_error(resp, 404, "not_found", "no such user");
		return;
	}
	struct user_write *w = calloc(1, sizeof *w);
	if (!w) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	w->st = d->st;
	snprintf(w->name, sizeof w->name, "%s", name);
	api_defer(resp, user_del_run, user_del_then, w);
}

/* ---- sessions ---- */

/* A session row written (create) or removed with its transcript (delete). */
struct sess_write {
	store *st;
	struct session *s; /* a reference; the worker reads only id, copied here */
	char id[40];
	char key[200];
	char *val;         /* create: the row */
	uid_t uid;         /* the session's sandbox uid (its uids/ key with etcd) */
};

/* Stored: the session starts (even when the client has gone); not stored:
 * nothing of it is left. */
static void sess_put_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct sess_write *w = arg;
	if (rc == 0) {
		lifecycle_start(w->s);
		if (resp)
			api_reply(resp, 201, session_to_json(w->s));
	} else {
		owner_forget_async(w->st, w->id, w->uid, 1); /* nothing of it is left */
		session_unref(w->s);
		if (resp)
			api_error(resp, 500, "internal", "%s", err->msg);
	}
	free(w->val);
	free(w);
}

static int sess_del_run(void *arg, cx_err *err)
{
	struct sess_write *w = arg;
	char prefix[80];
	snprintf(prefix, sizeof prefix, "transcripts/%s/", w->id);
	if (store_delete(w->st, w->key, err) == -1)
		return -1;
	owner_forget(w->st, w->id);
	owner_uid_forget(w->st, w->uid, w->id);
	char state[80];
	snprintf(state, sizeof state, "turnstate/%s", w->id);
	if (store_delete(w->st, state, err) == -1)
		log_error("delete turn state of %s: %s", w->id, err->msg);
	if (store_delete_prefix(w->st, prefix, NULL, err) < 0)
		log_error("delete transcripts of %s: %s", w->id, err->msg); /* the row is gone: deleted */
	return 0;
}

static void sess_del_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct sess_write *w = arg;
	if (rc == 0 && !w->s->deleted) {
		log_info("deleting session %s", w->s->id);
		lifecycle_delete(w->s);
	}
	if (resp && rc == 0)
		api_reply(resp, 204, NULL);
	else if (resp)
		api_error(resp, 500, "internal", "%s", err->msg);
	session_unref(w->s);
	free(w);
}

/* "limits" of a create: the contract's disk_mb, memory_mb, pids and cpu (CPUs,
 * a number), plus cortexd's cpu_weight and cpu_max_millicpu (cpu in
 * thousandths; give one of the two).  Each is bounded by the config: a
 * session may ask for less than the operator's maximum, never more. */
static int session_limits_parse(json_t *l, const config *c, struct session_spec *p, struct api_resp *resp)
{
	static const char *const lk[] = {"disk_mb", "memory_mb", "pids", "cpu", "cpu_weight", "cpu_max_millicpu", NULL};
	if (!json_is_object(l)) {
		api_error(resp, 400, "bad_request", "\"limits\" must be an object");
		return -1;
	}
	if (api_only_keys(l, lk, "limits", resp) < 0)
		return -1;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	long long cpu_cap = c->sandbox_cpu_max_millicpu ? (long long)c->sandbox_cpu_max_millicpu
							: (ncpu > 0 ? ncpu : 1) * 1000LL;
	const struct {
		const char *k;
		long long lo, hi;
	} r[] = {{"disk_mb", 16, (long long)c->sandbox_disk_max_mb},
		 {"memory_mb", 64, c->sandbox_memory_max ? (long long)(c->sandbox_memory_max >> 20) : 1LL << 24},
		 {"pids", 16, c->sandbox_pids_max ? (long long)c->sandbox_pids_max : 1LL << 22},
		 {"cpu_weight", 1, 10000},
		 {"cpu_max_millicpu", c->sandbox_cpu_max_millicpu ? 10 : 0, cpu_cap}};
	long long val[5] = {(long long)p->disk_mb, (long long)p->memory_mb, (long long)p->pids, p->cpu_weight,
			    p->cpu_max_milli};
	for (int i = 0; i < 5; i++) {
		json_t *x = json_object_get(l, r[i].k);
		if (!x)
			continue;
		if (!json_is_integer(x) || json_integer_value(x) < r[i].lo || json_integer_value(x) > r[i].hi) {
			api_error(resp, 400, "bad_request", "\"limits.%s\" must be an integer from %lld to %lld",
				  r[i].k, r[i].lo, r[i].hi);
			return -1;
		}
		val[i] = json_integer_value(x);
	}
	json_t *cpu = json_object_get(l, "cpu");
	if (cpu) {
		double v = json_number_value(cpu), hi = (double)cpu_cap / 1000.0;
		if (json_object_get(l, "cpu_max_millicpu")) {
			api_error(resp, 400, "bad_request", "\"limits\": give \"cpu\" or \"cpu_max_millicpu\", not both");
			return -1;
		}
		if (!json_is_number(cpu) || !(v >= 0.01 && v <= hi)) {
			api_error(resp, 400, "bad_request", "\"limits.cpu\" must be a number of CPUs from 0.01 to %g", hi);
			return -1;
		}
		val[4] = (long long)(v * 1000.0 + 0.5);
	}
	p->disk_mb = (uint64_t)val[0];
	p->memory_mb = (uint64_t)val[1];
	p->pids = (uint64_t)val[2];
	p->cpu_weight = (uint32_t)val[3];
	p->cpu_max_milli = (uint32_t)val[4];
	return 0;
}

/* The create body's image, limits and repo into spec (defaults from the
 * config).  0, or -1 with a 400 already in resp. */
static int parse_spec(struct cortexd *d, const char *user, json_t *o, struct session_spec *p,
		      struct api_resp *resp)
{
	const config *c = &d->cfg;
	json_t *v = json_object_get(o, "image");
	if (v) {
		const char *n = json_string_value(v);
		if (!n || !n[0] || strlen(n) >= sizeof p->image) {
			api_error(resp, 400, "bad_request", "\"image\" must be an image name");
			return -1;
		}
		if (!strcmp(n, "host") && !c->sandbox_allow_host_root) {
			api_error(resp, 400, "bad_request",
				  "\"image\": \"host\" (the host's root) is not enabled on this server");
			return -1;
		}
		snprintf(p->image, sizeof p->image, "%s", n);
	}
	p->disk_mb = c->sandbox_disk_mb;
	p->cpu_weight = c->sandbox_cpu_weight;
	p->cpu_max_milli = c->sandbox_cpu_max_millicpu;
	p->memory_mb = c->sandbox_memory_max >> 20;
	p->pids = c->sandbox_pids_max;
	json_t *l = json_object_get(o, "limits");
	if (l && session_limits_parse(l, c, p, resp) < 0)
		return -1;
	json_t *r = json_object_get(o, "repo");
	if (r) {
		static const char *const rk[] = {"url", "ref", "secret", NULL};
		if (!json_is_object(r)) {
			api_error(resp, 400, "bad_request", "\"repo\" must be an object {\"url\",\"ref\",\"secret\"}");
			return -1;
		}
		if (api_only_keys(r, rk, "repo", resp) < 0)
			return -1;
		const char *url = json_string_value(json_object_get(r, "url"));
		json_t *ref = json_object_get(r, "ref"), *sec = json_object_get(r, "secret");
		cx_err err = CX_ERR_INIT;
		if (!url || repo_url_ok(url, &err) < 0) {
			api_error(resp, 400, "bad_request", "\"repo.url\": %s", url ? err.msg : "required (a string)");
			return -1;
		}
		if ((ref && (!json_is_string(ref) || !json_string_length(ref) ||
			     json_string_length(ref) >= sizeof p->repo_ref)) ||
		    (sec && (!json_is_string(sec) || !json_string_length(sec) ||
			     json_string_length(sec) >= sizeof p->repo_secret))) {
			api_error(resp, 400, "bad_request", "\"repo.ref\" and \"repo.secret\" must be non-empty strings");
			return -1;
		}
		if (sec) {
			char key[400], *row = NULL;
			size_t rl = 0;
			snprintf(key, sizeof key, "settings/%s/secrets/%s", user, json_string_value(sec));
			if (store_get(d->st, key, &row, &rl, &err) < 0) {
				api_error(resp, 400, "bad_request", "\"repo.secret\": you have no secret named '%s'",
					  json_string_value(sec));
				return -1;
			}
			free(row);
		}
		snprintf(p->repo_url, sizeof p->repo_url, "%s", url);
		snprintf(p->repo_ref, sizeof p->repo_ref, "%s", ref ? json_string_value(ref) : "");
		snprintf(p->repo_secret, sizeof p->repo_secret, "%s", sec ? json_string_value(sec) : "");
	}
	return 0;
}

/* Sessions user holds (deleted ones on their way out not counted). */
static unsigned user_sessions(struct cortexd *d, const char *user)
{
	unsigned n = 0;
	for (struct session *s = d->sessions; s; s = s->next)
		n += !s->deleted && !strcmp(s->user, user);
	return n;
}

static void post_session(struct cortexd *d, const char *user, const struct api_req *req, struct api_resp *resp)
{
	unsigned max = d->cfg.sessions_max_per_user;
	if (max && user_sessions(d, user) >= max) {
		refuse_count(REFUSE_SESSIONS_USER);
		api_error(resp, 429, "too_many_sessions",
			  "you hold %u sessions (cap sessions.max_per_user): delete one first", max);
		return;
	}
	json_t *o = api_body_object(req, resp, 1);
	if (!o)
		return;
	static const char *const allowed[] = {"surface", "repo", "idle_sleep_s", "image", "limits", "network", NULL};
	json_t *net = NULL;
	json_t *sv = json_object_get(o, "surface"), *iv = json_object_get(o, "idle_sleep_s");
	const char *surface = sv ? json_string_value(sv) : surface_name(SURF_CHAT);
	struct session_spec spec = {0};
	if (api_only_keys(o, allowed, "a session", resp) < 0) {
	} else if (surface_of_name(surface) < 0) {
		api_error(resp, 400, "bad_request", "\"surface\" must be \"chat\" or \"voice\"");
	} else if (iv && (!json_is_integer(iv) || json_integer_value(iv) < 0 ||
			  json_integer_value(iv) > 7 * 86400)) {
		api_error(resp, 400, "bad_request", "\"idle_sleep_s\" must be an integer from 0 to 604800");
	} else if (parse_spec(d, user, o, &spec, resp) < 0) {
	} else if (network_session_body(json_object_get(o, "network"), &net, resp) < 0) {
	} else {
		cx_err err = CX_ERR_INIT;
		struct session *s =
			lifecycle_new(d, user, surface, iv ? (int)json_integer_value(iv) : 0, &spec, &err);
		if (s)
			s->network = json_incref(net);
		struct sess_write *w = s ? calloc(1, sizeof *w) : NULL;
		if (w && !(w->val = session_record(s, w->key, sizeof w->key))) {
			free(w);
			w = NULL;
		}
		if (!w) {
			if (s) {
				owner_forget_async(d->st, s->id, s->spec.uid, 1);
				session_unref(s);
			}
			api_error(resp, s ? 500 : 503, s ? "internal" : "unavailable", "%s", s ? "out of memory" : err.msg);
		} else {
			w->st = d->st;
			w->s = s;
			w->uid = s->spec.uid;
			snprintf(w->id, sizeof w->id, "%s", s->id);
			create_commit(d->st, w->key, w->val, resp, sess_put_then, w); /* group commit */
		}
	}
	json_decref(net);
	json_decref(o);
}

static void list_sessions(struct cortexd *d, const char *user, struct api_resp *resp)
{
	json_t *arr = json_array();
	for (struct session *s = d->sessions; s; s = s->next)
		if (!s->deleted && !strcmp(s->user, user))
			json_array_append_new(arr, session_to_json(s));
	/* A shared store: the user's sessions on other nodes too (their stored
	 * records; "node": the owner, null while none holds it). */
	store_kv *kv = NULL;
	size_t n = 0;
	char prefix[128];
	cx_err err = CX_ERR_INIT;
	snprintf(prefix, sizeof prefix, "sessions/%s/", user);
	if (owner_enabled() && store_list(d->st, prefix, 0, &kv, &n, &err) < 0)
		log_warn("listing %s: %s", prefix, err.msg);
	for (size_t i = 0; i < n; i++) {
		const char *id = kv[i].key + strlen(prefix);
		if (session_find(d, id))
			continue;
		json_t *o = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (!json_is_object(o)) {
			json_decref(o);
			continue;
		}
		char okey[128], *node = NULL;
		snprintf(okey, sizeof okey, "owners/%s", id);
		int rc = store_get(d->st, okey, &node, NULL, &err);
		json_object_set_new(o, "node", rc == 0 ? json_string(node) : json_null());
		free(node);
		json_array_append_new(arr, o);
	}
	store_kv_free(kv, n);
	api_reply(resp, 200, arr);
}

/* Transcript rows in order, a page at a time: ?limit= (1..1000, default
 * 1000) and ?after=<cursor of the last row seen>; a page shorter than limit
 * is the last.  One bounded range read: the whole transcript is never loaded
 * on the service thread. */
static void list_messages(struct session *s, const struct api_req *req, struct api_resp *resp)
{
	char prefix[80], v[300] = "", after[400] = "";
	long long limit = 1000;
	const char *q = req->query ? req->query : "";
	if (api_query_arg(q, "limit", v, sizeof v) && api_parse_int(v, 1, 1000, &limit) < 0) {
		api_error(resp, 400, "bad_request", "\"limit\" must be an integer from 1 to 1000");
		return;
	}
	snprintf(prefix, sizeof prefix, "transcripts/%s/", s->id);
	if (api_query_arg(q, "after", v, sizeof v)) {
		if (!v[0] || strchr(v, '/')) {
			api_error(resp, 400, "bad_request", "\"after\" must be a cursor from an earlier page");
			return;
		}
		snprintf(after, sizeof after, "%s%s", prefix, v);
	}
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list_after(s->d->st, prefix, after, (size_t)limit, &kv, &n, &err) < 0) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (json_is_object(m)) /* its cursor: ?after= it gives the rows after it */
			json_object_set_new(m, "cursor", json_string(kv[i].key + strlen(prefix)));
		if (m)
			json_array_append_new(arr, m);
	}
	store_kv_free(kv, n);
	api_reply(resp, 200, arr);
}

static void delete_session(struct cortexd *d, struct session *s, struct api_resp *resp)
{
	struct sess_write *w = calloc(1, sizeof *w);
	if (!w) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	w->st = d->st;
	w->s = s;
	s->refs++;
	w->uid = s->spec.uid;
	snprintf(w->id, sizeof w->id, "%s", s->id);
	snprintf(w->key, sizeof w->key, "sessions/%s/%s", s->user, s->id);
	api_defer(resp, sess_del_run, sess_del_then, w);
}

/* POST sleep | wake | pause: 202 and the session as it is now; 409 while a
 * job or (for sleep and pause) a turn owns it. */
static void control(struct session *s, const char *m, const char *sub, struct api_resp *resp)
{
	cx_err err = CX_ERR_INIT;
	int rc;
	if (strcmp(m, "POST")) {
		api_error(resp, 405, "method_not_allowed", "use POST");
		return;
	}
	if (!strcmp(sub, "sleep"))
		rc = lifecycle_sleep(s, &err);
	else if (!strcmp(sub, "wake"))
		rc = lifecycle_wake(s, &err);
	else
		rc = lifecycle_pause(s, &err);
	if (rc == 0)
		api_reply(resp, 202, session_to_json(s));
	else if (err.code == EBUSY)
		api_error(resp, 409, "busy", "%s", err.msg);
	else if (!strcmp(sub, "pause"))
		api_error(resp, 409, "not_ready", "%s", err.msg);
	else
		api_error(resp, 500, "sandbox_failed", "%s", err.msg);
}

static void session_route(struct cortexd *d, const char *user, const struct api_req *req, const char *rest,
			  struct api_resp *resp)
{
	char id[64];
	const char *slash = strchr(rest, '/');
	size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
	const char *sub = slash ? slash + 1 : "";
	if (!idlen || idlen >= sizeof id) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	memcpy(id, rest, idlen);
	id[idlen] = '\0';
	struct session *s = session_find(d, id);
	/* Not here: another node's (a shared store), or one whose node is gone. */
	if (!s && owner_enabled()) {
		char url[512];
		cx_err err = CX_ERR_INIT;
		int rc = owner_route(d, user, id, &s, url, sizeof url, &err);
		if (rc == 1 && !d->cfg.cluster_redirect) { /* http.c proxies it there (or 508s a second hop) */
			resp->forward = 1;
			snprintf(resp->location, sizeof resp->location, "%s", url);
			return;
		}
		if (rc == 1) {
			owner_redirected();
			const char *q = req->query && req->query[0] ? req->query : NULL;
			int n = snprintf(resp->location, sizeof resp->location, "%s%s%s%s", url, req->path, q ? "?" : "",
					 q ? q : "");
			if (n < 0 || (size_t)n >= sizeof resp->location) {
				resp->location[0] = '\0';
				api_error(resp, 414, "uri_too_long", "the request's URI is too long to send to its node");
			} else {
				api_error(resp, 307, "other_node", "session %s is served by another node: %s", id, url);
			}
			return;
		}
		if (rc == -1) {
			api_error(resp, 503, "unavailable", "session %s: %s", id, err.msg);
			return;
		}
	}
	/* Another user's session is indistinguishable from a missing one. */
	if (!s || strcmp(s->user, user)) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	const char *m = req->method;
	if (!*sub) {
		if (!strcmp(m, "GET"))
			api_reply(resp, 200, session_to_json(s));
		else if (!strcmp(m, "DELETE"))
			delete_session(d, s, resp);
		else
			api_error(resp, 405, "method_not_allowed", "use GET or DELETE");
	} else if (!strcmp(sub, "messages")) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else
			list_messages(s, req, resp);
	} else if (!strcmp(sub, "sleep") || !strcmp(sub, "wake") || !strcmp(sub, "pause")) {
		control(s, m, sub, resp);
	} else if (!strcmp(sub, "files")) {
		files_route(d, s, req, resp);
	} else if (!strcmp(sub, "exec")) {
		exec_route(d, s, req, resp);
	} else if (!strcmp(sub, "network") || !strcmp(sub, "egress")) {
		network_session_route(d, s, req, sub, resp);
	} else if (!strcmp(sub, "ws")) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET with an Upgrade: websocket");
		else
			api_error(resp, 400, "upgrade_required", "this route is a WebSocket; send an Upgrade request");
	} else {
		api_error(resp, 404, "not_found", "no such route");
	}
}

void api_handle(struct cortexd *d, const struct api_req *req, struct api_resp *resp)
{
	const char *p = req->path, *m = req->method;
	if (!strcmp(p, "/healthz")) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else if (d->store_failing)
			api_reply(resp, 503, json_pack("{s:b,s:s}", "ok", 0, "store", "failing"));
		else
			api_reply(resp, 200, json_pack("{s:b}", "ok", 1));
		return;
	}
	if (!strcmp(p, "/v1/openapi.json")) {
		openapi_route(req, resp);
		return;
	}
	if (ui_is_route(p)) { /* the dashboard's static files: no token (it asks for one) */
		ui_route(req, resp);
		return;
	}
	char user[80] = "";
	enum api_who who = api_auth(d, req->token, user, sizeof user);
	if (who == WHO_NONE) {
		api_error(resp, 401, "unauthorized", "missing or invalid token");
		return;
	}
	if (!strcmp(p, "/metrics") || !strncmp(p, "/v1/metrics/", 12)) {
		routes_metrics(d, user, who, req, resp);
		return;
	}
	if (!strcmp(p, "/v1/users")) {
		if (strcmp(m, "POST"))
			api_error(resp, 405, "method_not_allowed", "use POST");
		else if (who != WHO_ADMIN)
			api_error(resp, 403, "forbidden", "admin token required");
		else
			post_user(d, req, resp);
		return;
	}
	if (!strncmp(p, "/v1/users/", 10)) {
		if (strcmp(m, "DELETE"))
			api_error(resp, 405, "method_not_allowed", "use DELETE");
		else if (who != WHO_ADMIN)
			api_error(resp, 403, "forbidden", "admin token required");
		else
			delete_user(d, p + 10, resp);
		return;
	}
	if (!strcmp(p, "/v1/sessions") || !strncmp(p, "/v1/sessions/", 13)) {
		if (who != WHO_USER) {
			api_error(resp, 403, "forbidden", "sessions belong to users; use a user token");
			return;
		}
		if (p[12] == '\0') {
			if (!strcmp(m, "POST"))
				post_session(d, user, req, resp);
			else if (!strcmp(m, "GET"))
				list_sessions(d, user, resp);
			else
				api_error(resp, 405, "method_not_allowed", "use GET or POST");
		} else {
			session_route(d, user, req, p + 13, resp);
		}
		return;
	}
	if (!strncmp(p, "/v1/settings/", 13)) {
		if (who != WHO_USER)
			api_error(resp, 403, "forbidden", "settings belong to users; use a user token");
		else
			settings_route(d, user, req, p + 13, resp);
		return;
	}
	if (!strcmp(p, "/v1/images") || !strncmp(p, "/v1/images/", 11)) {
		images_route(d, user, who, req, resp);
		return;
	}
	api_error(resp, 404, "not_found", "no such route: %.200s", p);
}
