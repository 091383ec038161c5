/* settings.c — the /v1/settings/... routes of the contract; records as in settings.h.
 *
 * Routes (the user always comes from the token; a route never names a user):
 *   GET    <kind>             200 [view, ...] in name order
 *   PUT    <kind>/<name>      201 view when created, 200 view when replaced
 *   GET    <kind>/<name>      200 view
 *   DELETE <kind>/<name>      204
 *   PUT    user               201 / 200 record (replaces the whole record)
 *   GET    user               200 record, {} when never set
 * <kind> is mcp, secrets, plugins or ai-providers.  A view is {"name", ...} plus
 * the stored record, minus anything secret: secrets show env, file, broker
 * ({"hosts","placeholder"}) and updated_at (never the value or its sealed text); ai-providers show kind,
 * base_url, model and "has_key":true (never the key).  The plugins list shows
 * file names only ({"agents":["a.md"],...}); GET plugins/<name> has the contents.
 *
 * Errors, all {"error":{"code","message"}}; a refused request stores nothing:
 *   400 bad_json            malformed JSON (or a duplicate member)
 *   400 bad_request         not an object, unknown field, wrong type, bad name,
 *                           bad value; identifiers over their length (names,
 *                           env var names, model, file paths) are 400 too
 *   413 too_large           a size limit of one request: a free-form string over
 *                           its byte limit, too many args/env/headers entries,
 *                           too many plugin files
 *   409 limit               a per-user count (SET_MAX_*) is reached; replacing an
 *                           existing name never counts as new
 *   404 not_found           unknown kind or route, no such name
 *   405 method_not_allowed
 *   500 internal            store or crypto failure only
 * Every successful PUT or DELETE calls lifecycle_settings_written(); one of a
 * secret also hands the user's brokered secrets to the egress proxy
 * (broker_sync_user(), egress/broker.h), so the next proxied connection of a
 * running sandbox uses them.
 *
 * Service thread only: a count check and the put that follows it cannot
 * interleave with another request. */
#include "settings.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "lifecycle.h"
#include "log.h"
#include "network.h"
#include "settings_check.h"

#define SET_KEY_MAX 256 /* "settings/<user>/<kind>/<name>" */

/* ---- records ---- */

/* Copy the members that are present, in this order. */
static void copy_fields(json_t *dst, json_t *src, const char *const *fields)
{
	for (const char *const *f = fields; *f; f++) {
		json_t *v = json_object_get(src, *f);
		if (v)
			json_object_set(dst, *f, v);
	}
}

/* Seal value for (user, ad_kind + name); 500 on failure (the message holds no secret). */
static char *seal(struct cortexd *d, const char *user, const char *ad_kind, const char *name, const char *value,
		  size_t len, struct api_resp *resp)
{
	char ad[SET_NAME_MAX + 32];
	snprintf(ad, sizeof ad, "%s%s", ad_kind, name);
	char *out = NULL;
	cx_err err = CX_ERR_INIT;
	if (secrets_seal(&d->skey, user, ad, value, len, &out, &err) < 0) {
		log_error("sealing %s of %s: %s", ad, user, err.msg);
		api_error(resp, 500, "internal", "could not encrypt the value: %s", err.msg);
		return NULL;
	}
	return out;
}

/* ---- the kinds: build = a checked body into the record to store; view = public fields ---- */

static int mcp_build(struct cortexd *d, const char *user, const char *name, json_t *b, json_t **rec,
		     struct api_resp *resp)
{
	(void)d;
	(void)user;
	(void)name;
	const char *type;
	if (settings_check_mcp(b, &type, resp) < 0)
		return -1;
	static const char *const order[] = {"command", "args",	  "env", "package",
					    "url",     "headers", NULL};
	*rec = json_pack("{s:s}", "type", type);
	copy_fields(*rec, b, order);
	return 0;
}

/* A record holding one sealed value (field) and the body's public fields. */
static int sealed_record(struct cortexd *d, const char *user, const char *ad_kind, const char *name,
			 const char *value, size_t len, const char *field, json_t *b,
			 const char *const *order, json_t **rec, struct api_resp *resp)
{
	cleanup_free char *sealed = seal(d, user, ad_kind, name, value, len, resp);
	if (!sealed)
		return -1;
	*rec = json_object();
	copy_fields(*rec, b, order);
	json_object_set_new(*rec, field, json_string(sealed));
	return 0;
}

static int secret_build(struct cortexd *d, const char *user, const char *name, json_t *b, json_t **rec,
			struct api_resp *resp)
{
	static const char *const order[] = {"env", "file", "broker", NULL};
	const char *value;
	size_t len;
	if (settings_check_secret(b, &value, &len, resp) < 0 ||
	    sealed_record(d, user, SET_AD_SECRET, name, value, len, "sealed", b, order, rec, resp) < 0)
		return -1;
	json_object_set_new(*rec, "updated_at", json_integer(cx_wall_ms()));
	json_t *br = json_object_get(*rec, "broker");
	if (br) {
		/* Shown in the view: what the sandbox holds instead of the value. */
		char ph[SECRETS_PLACEHOLDER_LEN + 1];
		cx_err err = CX_ERR_INIT;
		if (secrets_placeholder(&d->skey, user, name, ph, &err) < 0) {
			json_decref(*rec);
			*rec = NULL;
			api_error(resp, 500, "internal", "broker placeholder: %s", err.msg);
			return -1;
		}
		br = json_deep_copy(br); /* the body's object is shared with rec */
		json_object_set_new(br, "placeholder", json_string(ph));
		json_object_set_new(*rec, "broker", br);
	}
	return 0;
}

static int plugin_build(struct cortexd *d, const char *user, const char *name, json_t *b, json_t **rec,
			struct api_resp *resp)
{
	(void)d;
	(void)user;
	(void)name;
	if (settings_check_plugin(b, resp) < 0)
		return -1;
	*rec = json_object();
	copy_fields(*rec, b, settings_plugin_dirs);
	return 0;
}

static int provider_build(struct cortexd *d, const char *user, const char *name, json_t *b, json_t **rec,
			  struct api_resp *resp)
{
	static const char *const order[] = {"kind", "base_url", "model", NULL};
	const char *key;
	size_t len;
	if (settings_check_provider(b, &key, &len, resp) < 0)
		return -1;
	return sealed_record(d, user, SET_AD_PROVIDER, name, key, len, "sealed_key", b, order, rec, resp);
}

static int user_build(json_t *b, json_t **rec, struct api_resp *resp)
{
	static const char *const order[] = {"claude_md", "model", "permission_mode", "env", NULL};
	if (settings_check_user(b, resp) < 0)
		return -1;
	*rec = json_object();
	copy_fields(*rec, b, order);
	return 0;
}

/* Views: a new object of the record's public fields; list = the list's (shorter) form. */
static json_t *view_as_stored(json_t *rec, int list)
{
	(void)list;
	return json_copy(rec);
}

static json_t *secret_view(json_t *rec, int list)
{
	(void)list;
	static const char *const pub[] = {"env", "file", "broker", "updated_at", NULL};
	json_t *v = json_object();
	copy_fields(v, rec, pub);
	return v;
}

static json_t *provider_view(json_t *rec, int list)
{
	(void)list;
	static const char *const pub[] = {"kind", "base_url", "model", NULL};
	json_t *v = json_object();
	copy_fields(v, rec, pub);
	json_object_set_new(v, "has_key",
			    json_boolean(json_is_string(json_object_get(rec, "sealed_key"))));
	return v;
}

/* In the list, file names only: 32 plugins of up to 64 files each would be too much text. */
static json_t *plugin_view(json_t *rec, int list)
{
	if (!list)
		return json_copy(rec);
	json_t *v = json_object();
	for (const char *const *d = settings_plugin_dirs; *d; d++) {
		json_t *m = json_object_get(rec, *d);
		if (!json_is_object(m))
			continue;
		json_t *names = json_array();
		const char *f;
		json_t *x;
		json_object_foreach(m, f, x)
		{
			json_array_append_new(names, json_string(f));
		}
		json_object_set_new(v, *d, names);
	}
	return v;
}

struct kind {
	const char *name; /* the path segment and the key component */
	unsigned max;	  /* rows per user */
	int (*build)(struct cortexd *d, const char *user, const char *name, json_t *body, json_t **rec,
		     struct api_resp *resp);
	json_t *(*view)(json_t *rec, int list);
	const char *secret; /* the body member holding a plaintext, or NULL */
};

static const struct kind kinds[] = {
    {"mcp", SET_MAX_MCP, mcp_build, view_as_stored, NULL},
    {"secrets", SET_MAX_SECRETS, secret_build, secret_view, "value"},
    {"plugins", SET_MAX_PLUGINS, plugin_build, plugin_view, NULL},
    {"ai-providers", SET_MAX_PROVIDERS, provider_build, provider_view, "api_key"},
};

static json_t *named_view(const struct kind *k, const char *name, json_t *rec, int list)
{
	json_t *v = json_pack("{s:s}", "name", name);
	json_t *pub = k->view(rec, list);
	json_object_update(v, pub);
	json_decref(pub);
	return v;
}

/* ---- handlers ---- */

static void internal(struct api_resp *resp, const char *what, const cx_err *err)
{
	log_error("settings: %s: %s", what, err->msg);
	api_error(resp, 500, "internal", "%s: %s", what, err->msg);
}

static json_t *parse_row(const char *key, const char *val, size_t len)
{
	json_t *o = json_loadb(val, len, 0, NULL);
	if (!json_is_object(o)) {
		log_error("settings: row %s is not a JSON object; skipped", key);
		json_decref(o);
		return NULL;
	}
	return o;
}

static void list_kind(struct cortexd *d, const struct kind *k, const char *user, struct api_resp *resp)
{
	char prefix[SET_KEY_MAX];
	int plen = snprintf(prefix, sizeof prefix, "settings/%s/%s/", user, k->name);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list(d->st, prefix, 0, &kv, &n, &err) < 0) {
		internal(resp, "listing settings", &err);
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		const char *name = kv[i].key + plen;
		json_t *rec = parse_row(kv[i].key, kv[i].val, kv[i].len);
		if (!rec)
			continue;
		json_array_append_new(arr, named_view(k, name, rec, 1));
		json_decref(rec);
	}
	store_kv_free(kv, n);
	api_reply(resp, 200, arr);
}

static void get_named(struct cortexd *d, const struct kind *k, const char *key, const char *name,
		      struct api_resp *resp)
{
	cleanup_free char *val = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	int rc = store_get(d->st, key, &val, &len, &err);
	if (rc == CX_NOTFOUND) {
		api_error(resp, 404, "not_found", "no %s setting named \"%s\"", k->name, name);
		return;
	}
	if (rc < 0) {
		internal(resp, "reading a setting", &err);
		return;
	}
	json_t *rec = parse_row(key, val, len);
	if (!rec) {
		api_error(resp, 500, "internal", "the stored %s setting \"%s\" is unreadable",
			  k->name, name);
		return;
	}
	api_reply(resp, 200, named_view(k, name, rec, 0));
	json_decref(rec);
}

/* ---- writes: validated on the service thread, stored by a worker ---- */

/* Serializes count-then-write on the workers, so two PUTs cannot both pass
 * the per-user limit. */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

struct set_write {
	struct cortexd *d;
	char user[SET_KEY_MAX];
	char key[SET_KEY_MAX];
	char *txt;           /* the record (a PUT), NULL for a DELETE */
	json_t *view;        /* the reply body of a PUT, NULL for a DELETE */
	/* limit check of a named PUT: rows under prefix, name's row replaced */
	char prefix[SET_KEY_MAX];
	const char *kind;
	char name[SET_KEY_MAX];
	unsigned max;
	int created_status;  /* a PUT's status when the row is new (replaced: 200) */
	/* result (worker) */
	int exists;
	size_t n;
};

static void set_write_free(struct set_write *w)
{
	if (w->txt)
		sodium_memzero(w->txt, strlen(w->txt)); /* sealed, but no copy lingers */
	free(w->txt);
	json_decref(w->view);
	free(w);
}

static int count_rows(struct set_write *w, cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(w->d->st, w->prefix, 0, &kv, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i].key, w->key))
			w->exists = 1;
	store_kv_free(kv, n);
	w->n = n;
	return 0;
}

#define SET_LIMIT (-3) /* the write would pass the per-user limit */

static int write_run(void *arg, cx_err *err)
{
	struct set_write *w = arg;
	if (!w->txt) {
		return store_delete(w->d->st, w->key, err);
	}
	pthread_mutex_lock(&write_mu);
	int rc = 0;
	if (w->prefix[0]) {
		rc = count_rows(w, err);
		if (rc == 0 && !w->exists && w->n >= w->max)
			rc = SET_LIMIT;
	} else {
		char *old = NULL;
		rc = store_get(w->d->st, w->key, &old, NULL, err);
		free(old);
		w->exists = rc == 0;
		rc = rc == CX_NOTFOUND ? 0 : rc;
	}
	if (rc == 0)
		rc = store_put(w->d->st, w->key, w->txt, strlen(w->txt), err);
	pthread_mutex_unlock(&write_mu);
	return rc;
}

static void write_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct set_write *w = arg;
	if (rc == 0)
		lifecycle_settings_written(w->d, w->user);
	if (rc == 0 && w->kind && !strcmp(w->kind, "secrets")) {
		/* The proxy's copy of the user's brokered secrets: the next
		 * connection of a running sandbox uses the new set. */
		cx_err berr = CX_ERR_INIT;
		if (broker_sync_user(w->d->st, &w->d->skey, w->user, &berr) < 0)
			log_error("settings: brokered secrets of %s not updated: %s", w->user, berr.msg);
	}
	if (!resp) {
	} else if (rc == 0 && !w->txt) {
		api_reply(resp, 204, NULL);
	} else if (rc == 0) {
		api_reply(resp, w->exists ? 200 : w->created_status, json_incref(w->view));
	} else if (rc == CX_NOTFOUND) {
		api_error(resp, 404, "not_found", "no %s setting named \"%s\"", w->kind, w->name);
	} else if (rc == SET_LIMIT) {
		api_error(resp, 409, "limit", "you have %zu %s settings; the limit is %u: delete one first", w->n,
			  w->kind, w->max);
	} else {
		internal(resp, w->txt ? "storing a setting" : "deleting a setting", err);
	}
	set_write_free(w);
}

/* Store rec (not consumed) under key off the service thread; the reply is view. */
static void put_record(struct cortexd *d, const char *user, const char *key, json_t *rec, json_t *view,
		       const struct kind *k, struct api_resp *resp)
{
	struct set_write *w = calloc(1, sizeof *w);
	char *txt = json_dumps(rec, JSON_COMPACT);
	if (!w || !txt) {
		free(w);
		free(txt);
		json_decref(view);
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	w->d = d;
	snprintf(w->user, sizeof w->user, "%s", user);
	snprintf(w->key, sizeof w->key, "%s", key);
	w->txt = txt;
	w->view = view;
	w->created_status = 201;
	if (k) {
		snprintf(w->prefix, sizeof w->prefix, "settings/%s/%s/", user, k->name);
		w->kind = k->name;
		w->max = k->max;
	}
	api_defer(resp, write_run, write_then, w);
}

static void delete_named(struct cortexd *d, const struct kind *k, const char *user, const char *key,
			 const char *name, struct api_resp *resp)
{
	struct set_write *w = calloc(1, sizeof *w);
	if (!w) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	w->d = d;
	w->kind = k->name;
	snprintf(w->name, sizeof w->name, "%s", name);
	snprintf(w->user, sizeof w->user, "%s", user);
	snprintf(w->key, sizeof w->key, "%s", key);
	api_defer(resp, write_run, write_then, w);
}

static void put_named(struct cortexd *d, const struct kind *k, const char *user, const char *key, const char *name,
		      const struct api_req *req, struct api_resp *resp)
{
	json_t *b = api_body_object(req, resp, 0);
	if (!b)
		return;
	json_t *rec = NULL;
	int rc = k->build(d, user, name, b, &rec, resp);
	/* The parsed copy of a plaintext dies with the body: zero it first,
	 * whether or not the request was accepted. */
	json_t *pt = k->secret ? json_object_get(b, k->secret) : NULL;
	if (json_is_string(pt))
		sodium_memzero((char *)json_string_value(pt), json_string_length(pt));
	json_decref(b);
	if (rc < 0)
		return;

	/* The per-user count is checked by the write itself (one at a time). */
	put_record(d, user, key, rec, named_view(k, name, rec, 0), k, resp);
	json_decref(rec);
}

static void user_route(struct cortexd *d, const char *user, const struct api_req *req, struct api_resp *resp)
{
	char key[SET_KEY_MAX];
	snprintf(key, sizeof key, "settings/%s/user", user);
	const char *m = req->method;
	if (strcmp(m, "GET") && strcmp(m, "PUT")) {
		api_error(resp, 405, "method_not_allowed", "use GET or PUT");
		return;
	}
	cleanup_free char *val = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	int rc = store_get(d->st, key, &val, &len, &err);
	if (rc < 0 && rc != CX_NOTFOUND) {
		internal(resp, "reading user settings", &err);
		return;
	}
	if (!strcmp(m, "GET")) {
		json_t *rec = rc == CX_NOTFOUND ? json_object() : parse_row(key, val, len);
		if (!rec)
			api_error(resp, 500, "internal", "the stored user settings are unreadable");
		else
			api_reply(resp, 200, rec);
		return;
	}
	json_t *b = api_body_object(req, resp, 0);
	if (!b)
		return;
	json_t *rec = NULL;
	int bad = user_build(b, &rec, resp);
	json_decref(b);
	if (bad < 0)
		return;
	put_record(d, user, key, rec, json_incref(rec), NULL, resp);
	json_decref(rec);
}

void settings_route(struct cortexd *d, const char *user, const struct api_req *req, const char *rest,
		    struct api_resp *resp)
{
	const char *slash = strchr(rest, '/');
	size_t klen = slash ? (size_t)(slash - rest) : strlen(rest);
	if (klen == 7 && !strncmp(rest, "network", 7)) {
		if (slash)
			api_error(resp, 404, "not_found", "no such route: /v1/settings/%.200s", rest);
		else
			network_settings_route(d, user, req, resp);
		return;
	}
	if (klen == 4 && !strncmp(rest, "user", 4)) {
		if (slash)
			api_error(resp, 404, "not_found", "no such route: /v1/settings/%.200s",
				  rest);
		else
			user_route(d, user, req, resp);
		return;
	}
	const struct kind *k = NULL;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strlen(kinds[i].name) == klen && !strncmp(rest, kinds[i].name, klen))
			k = &kinds[i];
	if (!k) {
		api_error(resp, 404, "not_found",
			  "no such route: /v1/settings/%.200s (kinds: mcp, secrets, plugins, "
			  "ai-providers, user, network)",
			  rest);
		return;
	}
	const char *m = req->method;
	if (!slash) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed",
				  "use GET (PUT and DELETE take /%s/{name})", k->name);
		else
			list_kind(d, k, user, resp);
		return;
	}
	const char *name = slash + 1;
	if (strcmp(m, "GET") && strcmp(m, "PUT") && strcmp(m, "DELETE")) {
		api_error(resp, 405, "method_not_allowed", "use GET, PUT or DELETE");
		return;
	}
	if (settings_check_name(k->name, name, resp) < 0)
		return;
	char key[SET_KEY_MAX];
	snprintf(key, sizeof key, "settings/%s/%s/%s", user, k->name, name);
	if (!strcmp(m, "GET"))
		get_named(d, k, key, name, resp);
	else if (!strcmp(m, "PUT"))
		put_named(d, k, user, key, name, req, resp);
	else
		delete_named(d, k, user, key, name, resp);
}
