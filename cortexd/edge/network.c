/* network.c — the egress policy routes (docs/network.md, docs/protocol.md):
 *
 *   GET|PUT|DELETE /v1/settings/network     the user's policy; GET without
 *                                           one: the default {"mode":...}
 *   GET|PUT|DELETE /v1/sessions/{id}/network  a session's own (wins over the user's)
 *   GET /v1/sessions/{id}/egress?limit=N    the session's audit trail, last N
 *                                           decisions (1..1000, default 100)
 *
 * A policy is {"mode":"none"|"allowlist"|"open","allow":[...],"deny":[...]};
 * a bad one is a 400 naming the entry, and nothing is stored.  A stored
 * change reaches the proxy at once: the next connection of a running
 * sandbox follows it. */
#include "network.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress.h"
#include "lifecycle.h"
#include "log.h"

struct pol_write {
	store *st;
	char key[256];
	char owner[80]; /* user (settings) or session id */
	int is_session;
	struct session *s; /* a reference, for is_session */
	json_t *policy;	   /* NULL: delete */
	char *row;	   /* is_session: the session row to put under key */
};

static int pol_write_run(void *arg, cx_err *err)
{
	struct pol_write *w = arg;
	if (w->row)
		return store_put(w->st, w->key, w->row, strlen(w->row), err);
	if (!w->policy) {
		int rc = store_delete(w->st, w->key, err);
		return rc == CX_NOTFOUND ? 0 : rc < 0 ? -1 : 0;
	}
	char *v = json_dumps(w->policy, JSON_COMPACT | JSON_SORT_KEYS);
	if (!v)
		return cx_err_set(err, ENOMEM, "policy");
	int rc = store_put(w->st, w->key, v, strlen(v), err);
	free(v);
	return rc;
}

static json_t *effective(const char *source, json_t *p)
{
	json_t *o = json_deep_copy(p);
	if (o)
		json_object_set_new(o, "source", json_string(source));
	return o;
}

static void pol_write_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct pol_write *w = arg;
	cx_err e2 = CX_ERR_INIT;
	if (rc == 0) {
		/* Stored: the proxy follows it from the next connection on. */
		int prc = w->is_session ? egress_set_session_policy(w->owner, w->policy, &e2)
					: egress_set_user_policy(w->owner, w->policy, &e2);
		if (prc < 0)
			log_error("egress policy of %s: %s", w->owner, e2.msg);
		if (w->is_session && !w->s->deleted) {
			json_decref(w->s->network);
			w->s->network = json_incref(w->policy);
		}
	}
	if (resp && rc == 0)
		api_reply(resp, w->policy ? 200 : 204,
			  w->policy ? json_deep_copy(w->policy) : NULL);
	else if (resp && w->is_session && w->s->deleted)
		api_error(resp, 404, "not_found", "no such session");
	else if (resp)
		api_error(resp, 500, "internal", "%s", err->msg);
	if (w->s)
		session_unref(w->s);
	json_decref(w->policy);
	free(w->row);
	free(w);
}

/* The body as a normalised policy, or NULL with a 400 in resp. */
static json_t *policy_body(const struct api_req *req, struct api_resp *resp)
{
	json_t *b = api_body_object(req, resp, 0);
	if (!b)
		return NULL;
	cx_err err = CX_ERR_INIT;
	if (!json_object_get(b, "mode")) {
		api_error(resp, 400, "bad_request",
			  "\"mode\" is required: \"none\", \"allowlist\" or \"open\"");
		json_decref(b);
		return NULL;
	}
	if (egress_policy_check_json(b, &err) < 0) {
		api_error(resp, 400, "bad_request", "%s", err.msg);
		json_decref(b);
		return NULL;
	}
	json_t *n = egress_policy_normalise(b);
	json_decref(b);
	if (!n)
		api_error(resp, 500, "internal", "out of memory");
	return n;
}

static void write_policy(struct cortexd *d, struct pol_write *w, const struct api_req *req,
			 struct api_resp *resp)
{
	w->st = d->st;
	if (!strcmp(req->method, "PUT") && !(w->policy = policy_body(req, resp))) {
		free(w);
		return;
	}
	api_defer(resp, pol_write_run, pol_write_then, w);
}

static int method_ok(const char *m, struct api_resp *resp)
{
	if (strcmp(m, "GET") && strcmp(m, "PUT") && strcmp(m, "DELETE")) {
		api_error(resp, 405, "method_not_allowed", "use GET, PUT or DELETE");
		return 0;
	}
	return 1;
}

static json_t *default_policy(const config *c)
{
	static const char *const names[] = {"none", "allowlist", "open"};
	return json_pack("{s:s,s:[],s:[]}", "mode", names[c->egress_default_mode], "allow", "deny");
}

void network_settings_route(struct cortexd *d, const char *user, const struct api_req *req,
			    struct api_resp *resp)
{
	if (!method_ok(req->method, resp))
		return;
	char key[256];
	snprintf(key, sizeof key, "settings/%s/network", user);
	if (!strcmp(req->method, "GET")) {
		cleanup_free char *val = NULL;
		size_t len = 0;
		cx_err err = CX_ERR_INIT;
		int rc = store_get(d->st, key, &val, &len, &err);
		if (rc < 0 && rc != CX_NOTFOUND) {
			api_error(resp, 500, "internal", "%s", err.msg);
			return;
		}
		json_t *p = rc == CX_NOTFOUND ? NULL : json_loadb(val, len, 0, NULL);
		json_t *def = p ? NULL : default_policy(&d->cfg);
		api_reply(resp, 200, effective(p ? "user" : "default", p ? p : def));
		json_decref(p);
		json_decref(def);
		return;
	}
	struct pol_write *w = calloc(1, sizeof *w);
	if (!w) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	snprintf(w->key, sizeof w->key, "%s", key);
	snprintf(w->owner, sizeof w->owner, "%s", user);
	write_policy(d, w, req, resp);
}

/* GET: the session's own policy, else its user's, else the default, with
 * "source" saying which. */
static void session_policy_get(struct cortexd *d, struct session *s, struct api_resp *resp)
{
	if (s->network) {
		api_reply(resp, 200, effective("session", s->network));
		return;
	}
	struct api_req r = {.method = "GET"};
	network_settings_route(d, s->user, &r, resp);
}

void network_session_route(struct cortexd *d, struct session *s, const struct api_req *req,
			   const char *sub, struct api_resp *resp)
{
	if (!strcmp(sub, "egress")) {
		if (strcmp(req->method, "GET")) {
			api_error(resp, 405, "method_not_allowed", "use GET");
			return;
		}
		char v[32];
		long long limit = 100;
		if (api_query_arg(req->query ? req->query : "", "limit", v, sizeof v) &&
		    api_parse_int(v, 1, 1000, &limit) < 0) {
			api_error(resp, 400, "bad_request",
				  "\"limit\" must be an integer from 1 to 1000");
			return;
		}
		char path[4200];
		snprintf(path, sizeof path, "%s/" EGRESS_AUDIT_FILE, s->dir);
		api_reply(resp, 200,
			  json_pack("{s:o}", "entries", egress_audit_read(path, (size_t)limit)));
		return;
	}
	/* sub == "network" */
	if (!method_ok(req->method, resp))
		return;
	if (!strcmp(req->method, "GET")) {
		session_policy_get(d, s, resp);
		return;
	}
	struct pol_write *w = calloc(1, sizeof *w);
	if (!w) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	/* The policy lives in the session's row ("network"): the row is
	 * rewritten with it, so a create and a later PUT store it alike. */
	cleanup_free char *row = NULL;
	w->is_session = 1;
	w->s = s;
	s->refs++;
	w->st = d->st;
	snprintf(w->owner, sizeof w->owner, "%s", s->id);
	if (!strcmp(req->method, "PUT") && !(w->policy = policy_body(req, resp)))
		goto fail;
	row = session_record(s, w->key, sizeof w->key);
	json_t *o = row ? json_loads(row, 0, NULL) : NULL;
	if (!o) {
		api_error(resp, 500, "internal", "out of memory");
		goto fail;
	}
	if (w->policy)
		json_object_set(o, "network", w->policy);
	else
		json_object_del(o, "network");
	w->row = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!w->row) {
		api_error(resp, 500, "internal", "out of memory");
		goto fail;
	}
	api_defer(resp, pol_write_run, pol_write_then, w);
	return;
fail:
	json_decref(w->policy);
	session_unref(s);
	free(w);
}

int network_session_body(json_t *v, json_t **out, struct api_resp *resp)
{
	*out = NULL;
	if (!v)
		return 0;
	cx_err err = CX_ERR_INIT;
	if (!json_is_object(v) || !json_object_get(v, "mode")) {
		api_error(resp, 400, "bad_request",
			  "\"network\" must be a policy {\"mode\",\"allow\",\"deny\"}");
		return -1;
	}
	if (egress_policy_check_json(v, &err) < 0) {
		api_error(resp, 400, "bad_request", "\"network\": %s", err.msg);
		return -1;
	}
	*out = egress_policy_normalise(v);
	if (!*out) {
		api_error(resp, 500, "internal", "out of memory");
		return -1;
	}
	return 0;
}
