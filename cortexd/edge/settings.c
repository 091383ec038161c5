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
 * the stored record, minus anything secret: secrets show env, file and
 * updated_at (never the value or its sealed text); ai-providers show kind,
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
 * Every successful PUT or DELETE calls settings_changed(user).
 *
 * Service thread only: a count check and the put that follows it cannot
 * interleave with another request. */
#include "settings.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "lifecycle.h"
#include "log.h"
#include "npmspec.h"

/* The daemon of the request being served (service thread; set by settings_route). */
static struct cortexd *cur_d;

#define SET_STR_MAX   (16u << 10) /* command, url, one arg, one env or header value */
#define SET_MODEL_MAX 127
#define SET_FILE_MAX  255 /* a secret's "~/path" */
#define SET_VAR_MAX   128 /* env var and header names */
#define SET_KEY_MAX   256 /* "settings/<user>/<kind>/<name>" */

/* ---- responses and body parsing (same shape as api.c's) ---- */

/* ---- value rules; each check returns 0, or -1 with resp set ---- */

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9][A-Za-z0-9_.-]{0,63}: the first-char rule already excludes "." and "..". */
static int valid_name(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > SET_NAME_MAX || !is_alnum(s[0]))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return 0;
	return 1;
}

static int valid_var(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > SET_VAR_MAX || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(s[i]) && s[i] != '_')
			return 0;
	return 1;
}

/* Variables cortexd sets itself for the agent. */
static int reserved_var(const char *s)
{
	return !strcmp(s, "HOME") || !strcmp(s, "PATH") || !strncmp(s, "ANTHROPIC_", 10);
}

/* An HTTP header name: RFC 9110 token characters. */
static int valid_header_name(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > SET_VAR_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i]))
			return 0;
	return 1;
}

/* A string member: *out = its value, or NULL when absent and not required. */
static int get_string(json_t *o, const char *field, size_t max, int required, const char **out,
		      struct api_resp *resp)
{
	*out = NULL;
	json_t *v = json_object_get(o, field);
	if (!v) {
		if (required)
			api_error(resp, 400, "bad_request", "\"%s\" is required", field);
		return required ? -1 : 0;
	}
	if (!json_is_string(v)) {
		api_error(resp, 400, "bad_request", "\"%s\" must be a string", field);
		return -1;
	}
	if (json_string_length(v) > max) {
		api_error(resp, 413, "too_large", "\"%s\" is %zu bytes; the limit is %zu", field,
			  json_string_length(v), max);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

static int check_url(const char *field, const char *v, struct api_resp *resp)
{
	size_t skip = !strncmp(v, "https://", 8) ? 8 : !strncmp(v, "http://", 7) ? 7 : 0;
	int ok = skip && v[skip] && v[skip] != '/';
	for (const char *c = v; ok && *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			ok = 0;
	if (!ok)
		api_error(resp, 400, "bad_request",
			  "\"%s\" must be an http:// or https:// URL with a host and no spaces",
			  field);
	return ok ? 0 : -1;
}

static int check_model(json_t *o, struct api_resp *resp)
{
	const char *m;
	if (get_string(o, "model", SIZE_MAX, 0, &m, resp) < 0)
		return -1;
	if (!m)
		return 0;
	size_t n = strlen(m);
	int ok = n >= 1 && n <= SET_MODEL_MAX;
	for (size_t i = 0; ok && i < n; i++)
		if (!is_alnum(m[i]) && !strchr("._:-", m[i]))
			ok = 0;
	if (!ok)
		api_error(resp, 400, "bad_request",
			  "\"model\" must be 1-%d chars of A-Z a-z 0-9 . _ : -", SET_MODEL_MAX);
	return ok ? 0 : -1;
}

/* "~/" then components of [A-Za-z0-9_.-]+, none "." or "..", nothing cortexd manages. */
static int check_home_file(const char *f, struct api_resp *resp)
{
	size_t n = strlen(f);
	int ok = n > 2 && n <= SET_FILE_MAX && !strncmp(f, "~/", 2);
	const char *p = f + 2;
	while (ok) {
		size_t len = strcspn(p, "/");
		if (!len || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
			ok = 0;
		for (size_t i = 0; ok && i < len; i++)
			if (!is_alnum(p[i]) && !strchr("_.-", p[i]))
				ok = 0;
		if (!p[len])
			break;
		p += len + 1;
	}
	if (!ok) {
		api_error(
		    resp, 400, "bad_request",
		    "\"file\" must be \"~/\" and a relative path (components of A-Z a-z 0-9 _ . -, "
		    "no \".\" or \"..\", at most %d chars)",
		    SET_FILE_MAX);
		return -1;
	}
	if (!strcmp(f, "~/.claude.json") || !strcmp(f, "~/.claude") ||
	    !strncmp(f, "~/.claude/", 10)) {
		api_error(
		    resp, 400, "bad_request",
		    "\"file\" may not be ~/.claude.json or under ~/.claude/: cortexd writes those");
		return -1;
	}
	return 0;
}

static int check_env_name(const char *field, const char *k, int no_reserved, struct api_resp *resp)
{
	if (!valid_var(k)) {
		api_error(resp, 400, "bad_request",
			  "%s: \"%.64s\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most "
			  "%d chars)",
			  field, k, SET_VAR_MAX);
		return -1;
	}
	if (no_reserved && reserved_var(k)) {
		api_error(resp, 400, "bad_request",
			  "%s: %.64s is set by cortexd and cannot be overridden", field, k);
		return -1;
	}
	return 0;
}

/* An object of at most SET_ARGS_MAX string values; names are env vars or header names. */
enum map_kind { MAP_ENV, MAP_ENV_USER, MAP_HEADERS };
static int check_map(json_t *o, const char *field, enum map_kind kind, struct api_resp *resp)
{
	json_t *m = json_object_get(o, field);
	if (!m)
		return 0;
	if (!json_is_object(m)) {
		api_error(resp, 400, "bad_request", "\"%s\" must be an object of strings", field);
		return -1;
	}
	if (json_object_size(m) > SET_ARGS_MAX) {
		api_error(resp, 413, "too_large", "\"%s\" has %zu entries; the limit is %d", field,
			  json_object_size(m), SET_ARGS_MAX);
		return -1;
	}
	const char *k;
	json_t *v;
	json_object_foreach(m, k, v)
	{
		if (kind == MAP_HEADERS) {
			if (!valid_header_name(k)) {
				api_error(resp, 400, "bad_request",
					  "headers: \"%.64s\" is not a header name", k);
				return -1;
			}
		} else if (check_env_name(field, k, kind == MAP_ENV_USER, resp) < 0) {
			return -1;
		}
		if (!json_is_string(v)) {
			api_error(resp, 400, "bad_request", "%s: \"%.64s\" must be a string", field,
				  k);
			return -1;
		}
		if (json_string_length(v) > SET_STR_MAX) {
			api_error(resp, 413, "too_large",
				  "%s: \"%.64s\" is %zu bytes; the limit is %u", field, k,
				  json_string_length(v), SET_STR_MAX);
			return -1;
		}
		/* A line break would split the HTTP request: header injection. */
		if (kind == MAP_HEADERS && strpbrk(json_string_value(v), "\r\n")) {
			api_error(resp, 400, "bad_request",
				  "headers: \"%.64s\" contains a line break", k);
			return -1;
		}
	}
	return 0;
}

static int check_args(json_t *o, struct api_resp *resp)
{
	json_t *a = json_object_get(o, "args");
	if (!a)
		return 0;
	if (!json_is_array(a)) {
		api_error(resp, 400, "bad_request", "\"args\" must be an array of strings");
		return -1;
	}
	if (json_array_size(a) > SET_ARGS_MAX) {
		api_error(resp, 413, "too_large", "\"args\" has %zu entries; the limit is %d",
			  json_array_size(a), SET_ARGS_MAX);
		return -1;
	}
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v)) {
			api_error(resp, 400, "bad_request", "\"args\"[%zu] must be a string", i);
			return -1;
		}
		if (json_string_length(v) > SET_STR_MAX) {
			api_error(resp, 413, "too_large",
				  "\"args\"[%zu] is %zu bytes; the limit is %u", i,
				  json_string_length(v), SET_STR_MAX);
			return -1;
		}
	}
	return 0;
}

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
static char *seal(const char *user, const char *ad_kind, const char *name, const char *value,
		  size_t len, struct api_resp *resp)
{
	char ad[SET_NAME_MAX + 32];
	snprintf(ad, sizeof ad, "%s%s", ad_kind, name);
	char *out = NULL;
	cx_err err = CX_ERR_INIT;
	if (secrets_seal(&cur_d->skey, user, ad, value, len, &out, &err) < 0) {
		log_error("sealing %s of %s: %s", ad, user, err.msg);
		api_error(resp, 500, "internal", "could not encrypt the value: %s", err.msg);
		return NULL;
	}
	return out;
}

/* ---- the kinds: build = validate a body into the record to store; view = public fields ---- */

static int mcp_build(const char *user, const char *name, json_t *b, json_t **rec,
		     struct api_resp *resp)
{
	(void)user;
	(void)name;
	json_t *tv = json_object_get(b, "type");
	const char *type;
	if (tv) {
		type = json_string_value(tv);
		if (!type ||
		    (strcmp(type, "stdio") && strcmp(type, "http") && strcmp(type, "sse"))) {
			api_error(resp, 400, "bad_request",
				  "\"type\" must be \"stdio\", \"http\" or \"sse\"");
			return -1;
		}
	} else if (json_object_get(b, "command") || json_object_get(b, "package")) {
		type = "stdio";
	} else {
		api_error(
		    resp, 400, "bad_request",
		    "\"type\" is required (\"stdio\", \"http\" or \"sse\") unless \"command\" or "
		    "\"package\" is given");
		return -1;
	}
	if (!strcmp(type, "stdio")) {
		static const char *const allowed[] = {"type", "command", "args",
						      "env",  "package", NULL};
		const char *cmd, *pkg;
		if (api_only_keys(b, allowed, "a stdio MCP server", resp) < 0 ||
		    get_string(b, "command", SET_STR_MAX, 0, &cmd, resp) < 0 ||
		    get_string(b, "package", NPM_NAME_MAX + 1 + NPM_VERSION_MAX, 0, &pkg, resp) <
			0 ||
		    check_args(b, resp) < 0 || check_map(b, "env", MAP_ENV, resp) < 0)
			return -1;
		if (cmd && !*cmd) {
			api_error(resp, 400, "bad_request", "\"command\" must not be empty");
			return -1;
		}
		if (!cmd && !pkg) {
			api_error(resp, 400, "bad_request",
				  "a stdio MCP server needs \"command\" or \"package\"");
			return -1;
		}
		if (pkg) {
			char pn[NPM_NAME_MAX + 1], pv[NPM_VERSION_MAX + 1], why[256];
			if (npm_spec_parse(pkg, pn, pv, why, sizeof why) < 0) {
				api_error(resp, 400, "bad_request", "\"package\": %s", why);
				return -1;
			}
		}
	} else {
		static const char *const allowed[] = {"type", "url", "headers", NULL};
		const char *url;
		if (api_only_keys(b, allowed, "an http/sse MCP server", resp) < 0 ||
		    get_string(b, "url", SET_STR_MAX, 1, &url, resp) < 0 ||
		    check_url("url", url, resp) < 0 ||
		    check_map(b, "headers", MAP_HEADERS, resp) < 0)
			return -1;
	}
	static const char *const order[] = {"command", "args",	  "env", "package",
					    "url",     "headers", NULL};
	*rec = json_pack("{s:s}", "type", type);
	copy_fields(*rec, b, order);
	return 0;
}

static int secret_build(const char *user, const char *name, json_t *b, json_t **rec,
			struct api_resp *resp)
{
	static const char *const allowed[] = {"value", "env", "file", NULL};
	const char *value, *env, *file;
	if (api_only_keys(b, allowed, "a secret", resp) < 0 ||
	    get_string(b, "value", SET_SECRET_MAX, 1, &value, resp) < 0 ||
	    get_string(b, "env", SIZE_MAX, 0, &env, resp) < 0 ||
	    (env && check_env_name("\"env\"", env, 1, resp) < 0) ||
	    get_string(b, "file", SIZE_MAX, 0, &file, resp) < 0 ||
	    (file && check_home_file(file, resp) < 0))
		return -1;
	json_t *vv = json_object_get(b, "value");
	cleanup_free char *sealed =
	    seal(user, SET_AD_SECRET, name, value, json_string_length(vv), resp);
	if (!sealed)
		return -1;
	static const char *const order[] = {"env", "file", NULL};
	*rec = json_pack("{s:s}", "sealed", sealed);
	copy_fields(*rec, b, order);
	json_object_set_new(*rec, "updated_at", json_integer(cx_wall_ms()));
	return 0;
}

/* [A-Za-z0-9][A-Za-z0-9_.-]{0,63} ending in ".md", no "..": it becomes a file name. */
static int valid_plugin_file(const char *f)
{
	size_t n = strlen(f);
	return valid_name(f) && n > 3 && !strcmp(f + n - 3, ".md") && !strstr(f, "..");
}

static const char *const plugin_dirs[] = {"agents", "commands", "rules", NULL};

static int plugin_build(const char *user, const char *name, json_t *b, json_t **rec,
			struct api_resp *resp)
{
	(void)user;
	(void)name;
	if (api_only_keys(b, plugin_dirs, "a plugin", resp) < 0)
		return -1;
	size_t total = 0;
	for (const char *const *d = plugin_dirs; *d; d++) {
		json_t *m = json_object_get(b, *d);
		if (!m)
			continue;
		if (!json_is_object(m)) {
			api_error(resp, 400, "bad_request",
				  "\"%s\" must be an object of file name -> text", *d);
			return -1;
		}
		const char *f;
		json_t *v;
		json_object_foreach(m, f, v)
		{
			if (!valid_plugin_file(f)) {
				api_error(resp, 400, "bad_request",
					  "%s: \"%.80s\" is not a file name (1-%d chars of A-Z a-z "
					  "0-9 _ . -, "
					  "starting with a letter or digit, ending in .md)",
					  *d, f, SET_NAME_MAX);
				return -1;
			}
			if (!json_is_string(v)) {
				api_error(resp, 400, "bad_request", "%s/%s must be a string", *d,
					  f);
				return -1;
			}
			if (json_string_length(v) > SET_TEXT_MAX) {
				api_error(resp, 413, "too_large",
					  "%s/%s is %zu bytes; the limit is %u", *d, f,
					  json_string_length(v), SET_TEXT_MAX);
				return -1;
			}
			if (++total > SET_MAX_PLUGIN_FILES) {
				api_error(resp, 413, "too_large", "a plugin holds at most %d files",
					  SET_MAX_PLUGIN_FILES);
				return -1;
			}
		}
	}
	*rec = json_object();
	copy_fields(*rec, b, plugin_dirs);
	return 0;
}

static int provider_build(const char *user, const char *name, json_t *b, json_t **rec,
			  struct api_resp *resp)
{
	static const char *const allowed[] = {"kind", "base_url", "api_key", "model", NULL};
	const char *kind, *url, *key;
	if (api_only_keys(b, allowed, "an ai provider", resp) < 0 ||
	    get_string(b, "kind", SIZE_MAX, 1, &kind, resp) < 0)
		return -1;
	if (strcmp(kind, "anthropic")) {
		api_error(resp, 400, "bad_request", "\"kind\" must be \"anthropic\"");
		return -1;
	}
	if (get_string(b, "base_url", SET_STR_MAX, 1, &url, resp) < 0 ||
	    check_url("base_url", url, resp) < 0 ||
	    get_string(b, "api_key", SET_SECRET_MAX, 1, &key, resp) < 0 || check_model(b, resp) < 0)
		return -1;
	json_t *kv = json_object_get(b, "api_key");
	if (!*key) {
		api_error(resp, 400, "bad_request", "\"api_key\" must not be empty");
		return -1;
	}
	cleanup_free char *sealed =
	    seal(user, SET_AD_PROVIDER, name, key, json_string_length(kv), resp);
	if (!sealed)
		return -1;
	static const char *const order[] = {"kind", "base_url", "model", NULL};
	*rec = json_object();
	copy_fields(*rec, b, order);
	json_object_set_new(*rec, "sealed_key", json_string(sealed));
	return 0;
}

static int user_build(json_t *b, json_t **rec, struct api_resp *resp)
{
	static const char *const allowed[] = {"claude_md", "model", "env", NULL};
	const char *md;
	if (api_only_keys(b, allowed, "user settings", resp) < 0 ||
	    get_string(b, "claude_md", SET_TEXT_MAX, 0, &md, resp) < 0 ||
	    check_model(b, resp) < 0 || check_map(b, "env", MAP_ENV_USER, resp) < 0)
		return -1;
	*rec = json_object();
	copy_fields(*rec, b, allowed);
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
	static const char *const pub[] = {"env", "file", "updated_at", NULL};
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
	for (const char *const *d = plugin_dirs; *d; d++) {
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
	int (*build)(const char *user, const char *name, json_t *body, json_t **rec,
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

static void list_kind(const struct kind *k, const char *user, struct api_resp *resp)
{
	char prefix[SET_KEY_MAX];
	int plen = snprintf(prefix, sizeof prefix, "settings/%s/%s/", user, k->name);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list(cur_d->st, prefix, 0, &kv, &n, &err) < 0) {
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

static void get_named(const struct kind *k, const char *key, const char *name,
		      struct api_resp *resp)
{
	cleanup_free char *val = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	int rc = store_get(cur_d->st, key, &val, &len, &err);
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

static void delete_named(const struct kind *k, const char *user, const char *key, const char *name,
			 struct api_resp *resp)
{
	cx_err err = CX_ERR_INIT;
	int rc = store_delete(cur_d->st, key, &err);
	if (rc == CX_NOTFOUND) {
		api_error(resp, 404, "not_found", "no %s setting named \"%s\"", k->name, name);
		return;
	}
	if (rc < 0) {
		internal(resp, "deleting a setting", &err);
		return;
	}
	lifecycle_settings_written(cur_d, user);
	api_reply(resp, 204, NULL);
}

/* Store rec (not consumed) under key and tell the config cache. */
static int put_record(const char *user, const char *key, json_t *rec, struct api_resp *resp)
{
	cleanup_free char *txt = json_dumps(rec, JSON_COMPACT);
	cx_err err = CX_ERR_INIT;
	if (!txt) {
		api_error(resp, 500, "internal", "out of memory");
		return -1;
	}
	if (store_put(cur_d->st, key, txt, strlen(txt), &err) < 0) {
		internal(resp, "storing a setting", &err);
		return -1;
	}
	lifecycle_settings_written(cur_d, user);
	return 0;
}

static void put_named(const struct kind *k, const char *user, const char *key, const char *name,
		      const struct api_req *req, struct api_resp *resp)
{
	json_t *b = api_body_object(req, resp, 0);
	if (!b)
		return;
	json_t *rec = NULL;
	int rc = k->build(user, name, b, &rec, resp);
	/* The parsed copy of a plaintext dies with the body: zero it first,
	 * whether or not the request was accepted. */
	json_t *pt = k->secret ? json_object_get(b, k->secret) : NULL;
	if (json_is_string(pt))
		sodium_memzero((char *)json_string_value(pt), json_string_length(pt));
	json_decref(b);
	if (rc < 0)
		return;

	/* Count this user's rows of the kind; replacing one is not a new one. */
	char prefix[SET_KEY_MAX];
	int plen = snprintf(prefix, sizeof prefix, "settings/%s/%s/", user, k->name);
	store_kv *kv = NULL;
	size_t n = 0;
	int exists = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list(cur_d->st, prefix, 0, &kv, &n, &err) < 0) {
		internal(resp, "counting settings", &err);
		json_decref(rec);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i].key + plen, name))
			exists = 1;
	store_kv_free(kv, n);
	if (!exists && n >= k->max) {
		api_error(resp, 409, "limit",
			  "you have %zu %s settings; the limit is %u: delete one first", n, k->name,
			  k->max);
	} else if (put_record(user, key, rec, resp) == 0) {
		api_reply(resp, exists ? 200 : 201, named_view(k, name, rec, 0));
	}
	json_decref(rec);
}

static void user_route(const char *user, const struct api_req *req, struct api_resp *resp)
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
	int rc = store_get(cur_d->st, key, &val, &len, &err);
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
	if (put_record(user, key, rec, resp) == 0)
		api_reply(resp, rc == CX_NOTFOUND ? 201 : 200, json_incref(rec));
	json_decref(rec);
}

void settings_route(struct cortexd *d, const char *user, const struct api_req *req, const char *rest,
		    struct api_resp *resp)
{
	cur_d = d;
	const char *slash = strchr(rest, '/');
	size_t klen = slash ? (size_t)(slash - rest) : strlen(rest);
	if (klen == 4 && !strncmp(rest, "user", 4)) {
		if (slash)
			api_error(resp, 404, "not_found", "no such route: /v1/settings/%.200s",
				  rest);
		else
			user_route(user, req, resp);
		return;
	}
	const struct kind *k = NULL;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strlen(kinds[i].name) == klen && !strncmp(rest, kinds[i].name, klen))
			k = &kinds[i];
	if (!k) {
		api_error(resp, 404, "not_found",
			  "no such route: /v1/settings/%.200s (kinds: mcp, secrets, plugins, "
			  "ai-providers, user)",
			  rest);
		return;
	}
	const char *m = req->method;
	if (!slash) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed",
				  "use GET (PUT and DELETE take /%s/{name})", k->name);
		else
			list_kind(k, user, resp);
		return;
	}
	const char *name = slash + 1;
	if (strcmp(m, "GET") && strcmp(m, "PUT") && strcmp(m, "DELETE")) {
		api_error(resp, 405, "method_not_allowed", "use GET, PUT or DELETE");
		return;
	}
	if (!valid_name(name)) {
		api_error(resp, 400, "bad_request",
			  "bad %s name \"%.80s\": 1-%d chars of A-Z a-z 0-9 _ . -, starting with a "
			  "letter or digit",
			  k->name, name, SET_NAME_MAX);
		return;
	}
	char key[SET_KEY_MAX];
	snprintf(key, sizeof key, "settings/%s/%s/%s", user, k->name, name);
	if (!strcmp(m, "GET"))
		get_named(k, key, name, resp);
	else if (!strcmp(m, "PUT"))
		put_named(k, user, key, name, req, resp);
	else
		delete_named(k, user, key, name, resp);
}
