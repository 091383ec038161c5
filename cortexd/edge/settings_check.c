/* settings_check.c — see settings_check.h.  The messages name the rule that
 * was broken: a request is refused as a whole, before anything is stored. */
#include "settings_check.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "npmspec.h"

#define SET_STR_MAX   (16u << 10) /* command, url, one arg, one env or header value */
#define SET_MODEL_MAX 127
#define SET_FILE_MAX  255 /* a secret's "~/path" */
#define SET_VAR_MAX   128 /* env var and header names */

/* ---- value rules ---- */

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

/* ---- names ---- */

int settings_check_name(const char *kind, const char *name, struct api_resp *resp)
{
	if (valid_name(name))
		return 0;
	api_error(resp, 400, "bad_request",
		  "bad %s name \"%.80s\": 1-%d chars of A-Z a-z 0-9 _ . -, starting with a "
		  "letter or digit",
		  kind, name, SET_NAME_MAX);
	return -1;
}

/* ---- the kinds ---- */

static int check_stdio(json_t *b, struct api_resp *resp)
{
	static const char *const allowed[] = {"type", "command", "args", "env", "package", NULL};
	const char *cmd, *pkg;
	if (api_only_keys(b, allowed, "a stdio MCP server", resp) < 0 ||
	    get_string(b, "command", SET_STR_MAX, 0, &cmd, resp) < 0 ||
	    get_string(b, "package", NPM_NAME_MAX + 1 + NPM_VERSION_MAX, 0, &pkg, resp) < 0 ||
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
	return 0;
}

static int check_remote(json_t *b, struct api_resp *resp)
{
	static const char *const allowed[] = {"type", "url", "headers", NULL};
	const char *url;
	if (api_only_keys(b, allowed, "an http/sse MCP server", resp) < 0 ||
	    get_string(b, "url", SET_STR_MAX, 1, &url, resp) < 0 ||
	    check_url("url", url, resp) < 0 || check_map(b, "headers", MAP_HEADERS, resp) < 0)
		return -1;
	return 0;
}

int settings_check_mcp(json_t *b, const char **type, struct api_resp *resp)
{
	static const char *const types[] = {"stdio", "http", "sse"};
	json_t *tv = json_object_get(b, "type");
	*type = NULL;
	if (!tv && (json_object_get(b, "command") || json_object_get(b, "package")))
		*type = types[0];
	for (size_t i = 0; tv && i < sizeof types / sizeof *types; i++)
		if (json_is_string(tv) && !strcmp(json_string_value(tv), types[i]))
			*type = types[i];
	if (!*type && tv) {
		api_error(resp, 400, "bad_request",
			  "\"type\" must be \"stdio\", \"http\" or \"sse\"");
		return -1;
	}
	if (!*type) {
		api_error(
		    resp, 400, "bad_request",
		    "\"type\" is required (\"stdio\", \"http\" or \"sse\") unless \"command\" or "
		    "\"package\" is given");
		return -1;
	}
	return *type == types[0] ? check_stdio(b, resp) : check_remote(b, resp);
}

/* A broker host: a DNS name, or "*." and one with two labels at least; each
 * label 1-63 of a-z 0-9 - _ (lowercased in place), not starting or ending
 * in '-'; 253 chars at most. */
static int valid_broker_host(char *h)
{
	size_t n = strlen(h);
	if (!n || n > SET_BROKER_HOST_MAX)
		return 0;
	char *d = h;
	int wild = !strncmp(h, "*.", 2);
	if (wild)
		d += 2;
	size_t labels = 0, ll = 0;
	for (char *c = d;; c++) {
		if (*c == '.' || !*c) {
			if (!ll || c[-1] == '-')
				return 0;
			labels++;
			ll = 0;
			if (!*c)
				break;
			continue;
		}
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
		if (!is_alnum(*c) && *c != '-' && *c != '_')
			return 0;
		if (!ll && *c == '-')
			return 0;
		if (++ll > 63)
			return 0;
	}
	return !wild || labels >= 2;
}

/* "broker":{"hosts":[...]}: replaced in b by its normalized form (lowercase,
 * duplicates dropped). */
static int check_broker(json_t *b, struct api_resp *resp)
{
	json_t *br = json_object_get(b, "broker");
	if (!br)
		return 0;
	static const char *const allowed[] = {"hosts", NULL};
	if (!json_is_object(br)) {
		api_error(resp, 400, "bad_request", "\"broker\" must be an object {\"hosts\":[...]}");
		return -1;
	}
	if (api_only_keys(br, allowed, "\"broker\"", resp) < 0)
		return -1;
	json_t *hosts = json_object_get(br, "hosts");
	size_t n = json_array_size(hosts);
	if (!json_is_array(hosts) || n < 1 || n > SET_BROKER_HOSTS) {
		api_error(resp, 400, "bad_request",
			  "\"broker\".\"hosts\" must be an array of 1-%d host names",
			  SET_BROKER_HOSTS);
		return -1;
	}
	json_t *norm = json_array();
	size_t i;
	json_t *h;
	json_array_foreach(hosts, i, h)
	{
		char host[SET_BROKER_HOST_MAX + 1];
		const char *s = json_string_value(h);
		int ok = s && strlen(s) == json_string_length(h) && strlen(s) < sizeof host;
		if (ok) {
			memcpy(host, s, strlen(s) + 1);
			ok = valid_broker_host(host);
		}
		if (!ok) {
			json_decref(norm);
			api_error(resp, 400, "bad_request",
				  "\"broker\".\"hosts\"[%zu] must be a host name or *.domain "
				  "(labels of a-z 0-9 - _, %d chars at most)",
				  i, SET_BROKER_HOST_MAX);
			return -1;
		}
		int dup = 0;
		size_t j;
		json_t *x;
		json_array_foreach(norm, j, x) dup |= !strcmp(json_string_value(x), host);
		if (!dup)
			json_array_append_new(norm, json_string(host));
	}
	json_object_set_new(b, "broker", json_pack("{s:o}", "hosts", norm));
	return 0;
}

/* A brokered value goes into request headers: no control characters (a line
 * break would add a header of the sandbox's choosing), and long enough that
 * masking it in responses does not hit ordinary text. */
static int check_broker_value(const char *v, size_t len, struct api_resp *resp)
{
	int ok = len >= SET_BROKER_VALUE_MIN && len <= SET_BROKER_VALUE_MAX;
	for (size_t i = 0; ok && i < len; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			ok = 0;
	if (!ok)
		api_error(resp, 400, "bad_request",
			  "a brokered \"value\" must be %d-%d bytes without control characters "
			  "(it goes into request headers)",
			  SET_BROKER_VALUE_MIN, SET_BROKER_VALUE_MAX);
	return ok ? 0 : -1;
}

int settings_check_secret(json_t *b, const char **value, size_t *len, struct api_resp *resp)
{
	static const char *const allowed[] = {"value", "env", "file", "broker", NULL};
	const char *env, *file;
	if (api_only_keys(b, allowed, "a secret", resp) < 0 ||
	    get_string(b, "value", SET_SECRET_MAX, 1, value, resp) < 0 ||
	    get_string(b, "env", SIZE_MAX, 0, &env, resp) < 0 ||
	    (env && check_env_name("\"env\"", env, 1, resp) < 0) ||
	    get_string(b, "file", SIZE_MAX, 0, &file, resp) < 0 ||
	    (file && check_home_file(file, resp) < 0) || check_broker(b, resp) < 0)
		return -1;
	*len = json_string_length(json_object_get(b, "value"));
	if (json_object_get(b, "broker") && check_broker_value(*value, *len, resp) < 0)
		return -1;
	return 0;
}

const char *const settings_plugin_dirs[] = {"agents", "commands", "rules", NULL};

/* [A-Za-z0-9][A-Za-z0-9_.-]{0,63} ending in ".md", no "..": it becomes a file name. */
static int valid_plugin_file(const char *f)
{
	size_t n = strlen(f);
	return valid_name(f) && n > 3 && !strcmp(f + n - 3, ".md") && !strstr(f, "..");
}

/* One plugin file; *total counts the files of the whole plugin. */
static int check_plugin_file(const char *dir, const char *f, json_t *v, size_t *total,
			     struct api_resp *resp)
{
	if (!valid_plugin_file(f)) {
		api_error(resp, 400, "bad_request",
			  "%s: \"%.80s\" is not a file name (1-%d chars of A-Z a-z 0-9 _ . -, "
			  "starting with a letter or digit, ending in .md)",
			  dir, f, SET_NAME_MAX);
		return -1;
	}
	if (!json_is_string(v)) {
		api_error(resp, 400, "bad_request", "%s/%s must be a string", dir, f);
		return -1;
	}
	if (json_string_length(v) > SET_TEXT_MAX) {
		api_error(resp, 413, "too_large", "%s/%s is %zu bytes; the limit is %u", dir, f,
			  json_string_length(v), SET_TEXT_MAX);
		return -1;
	}
	if (++*total > SET_MAX_PLUGIN_FILES) {
		api_error(resp, 413, "too_large", "a plugin holds at most %d files",
			  SET_MAX_PLUGIN_FILES);
		return -1;
	}
	return 0;
}

int settings_check_plugin(json_t *b, struct api_resp *resp)
{
	if (api_only_keys(b, settings_plugin_dirs, "a plugin", resp) < 0)
		return -1;
	size_t total = 0;
	for (const char *const *d = settings_plugin_dirs; *d; d++) {
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
			if (check_plugin_file(*d, f, v, &total, resp) < 0)
				return -1;
		}
	}
	return 0;
}

int settings_check_provider(json_t *b, const char **key, size_t *len, struct api_resp *resp)
{
	static const char *const allowed[] = {"kind", "base_url", "api_key", "model", NULL};
	const char *kind, *url;
	if (api_only_keys(b, allowed, "an ai provider", resp) < 0 ||
	    get_string(b, "kind", SIZE_MAX, 1, &kind, resp) < 0)
		return -1;
	if (strcmp(kind, "anthropic")) {
		api_error(resp, 400, "bad_request", "\"kind\" must be \"anthropic\"");
		return -1;
	}
	if (get_string(b, "base_url", SET_STR_MAX, 1, &url, resp) < 0 ||
	    check_url("base_url", url, resp) < 0 ||
	    get_string(b, "api_key", SET_SECRET_MAX, 1, key, resp) < 0 || check_model(b, resp) < 0)
		return -1;
	if (!**key) {
		api_error(resp, 400, "bad_request", "\"api_key\" must not be empty");
		return -1;
	}
	*len = json_string_length(json_object_get(b, "api_key"));
	return 0;
}

/* Claude Code's --permission-mode values a user may pick ("auto" needs an
 * account feature, so it is left out). */
static int check_permission_mode(json_t *o, struct api_resp *resp)
{
	static const char *const modes[] = {"default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", NULL};
	const char *m;
	if (get_string(o, "permission_mode", 32, 0, &m, resp) < 0)
		return -1;
	for (const char *const *v = modes; m && *v; v++)
		if (!strcmp(m, *v))
			return 0;
	if (m)
		api_error(resp, 400, "bad_request",
			  "\"permission_mode\" must be one of default, acceptEdits, plan, bypassPermissions, dontAsk");
	return m ? -1 : 0;
}

int settings_check_user(json_t *b, struct api_resp *resp)
{
	static const char *const allowed[] = {"claude_md", "model", "env", "permission_mode", NULL};
	const char *md;
	if (api_only_keys(b, allowed, "user settings", resp) < 0 ||
	    get_string(b, "claude_md", SET_TEXT_MAX, 0, &md, resp) < 0 ||
	    check_model(b, resp) < 0 || check_permission_mode(b, resp) < 0 ||
	    check_map(b, "env", MAP_ENV_USER, resp) < 0)
		return -1;
	return 0;
}
