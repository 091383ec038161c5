/* cmd_settings.c — per-user settings: mcp, secrets, user, plugins,
 * providers, network (docs/configuration.md).  Secret values and API keys
 * come from stdin or a file, never from argv (argv is visible in ps). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "cli.h"

#define SETTING_CAP CX_CAP_HTTP_BODY

static int kind_path(char *buf, size_t cap, const char *kind, const char *name)
{
	char prefix[64];
	snprintf(prefix, sizeof prefix, "/v1/settings/%s/", kind);
	return path_join(buf, cap, prefix, name, NULL);
}

/* GET /v1/settings/KIND: [{"name",...view}]: one line each, the name and the rest. */
static void names_human(json_t *v)
{
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e)
	{
		json_t *rest = json_deep_copy(e);
		json_object_del(rest, "name");
		char *s = json_dumps(rest, JSON_COMPACT);
		printf("%-20s %s\n", json_string_value(json_object_get(e, "name")), s ? s : "");
		free(s);
		json_decref(rest);
	}
}

static int settings_ls(const struct cli *cli, const char *kind)
{
	char path[64];
	snprintf(path, sizeof path, "/v1/settings/%s", kind);
	return api_print(cli, "GET", path, NULL, names_human);
}

static int settings_one(const struct cli *cli, const char *method, const char *kind,
			const char *name, json_t *body)
{
	char path[160];
	if (kind_path(path, sizeof path, kind, name) < 0)
		return EXIT_USAGE;
	return api_print(cli, method, path, body, method[0] == 'D' ? NULL : out_object);
}

/* KEY=VALUE flags (repeatable) into an object; -1 printed. */
static int pairs_of(const struct opts *o, const char *flag, json_t **out)
{
	const char *v;
	for (int i = 0; (v = opt_nth(o, flag, i)); i++) {
		const char *eq = strchr(v, '=');
		if (!eq || eq == v) {
			fprintf(stderr, "cortexctl: --%s wants KEY=VALUE, not '%s'\n", flag, v);
			return -1;
		}
		if (!*out)
			*out = json_object();
		char key[256];
		snprintf(key, sizeof key, "%.*s", (int)(eq - v), v);
		json_object_set_new(*out, key, json_string(eq + 1));
	}
	return 0;
}

static json_t *load_json_file(const char *path)
{
	size_t n;
	char *t = read_input(path, SETTING_CAP, &n);
	if (!t)
		return NULL;
	json_error_t je;
	json_t *v = json_loadb(t, n, 0, &je);
	free(t);
	if (!json_is_object(v)) {
		fprintf(stderr, "cortexctl: %s: not a JSON object%s%s (line %d)\n", path,
			v ? "" : ": ", v ? "" : je.text, je.line);
		json_decref(v);
		return NULL;
	}
	return v;
}

/* ---- mcp ---- */

static json_t *mcp_body(const struct opts *o)
{
	if (opt_get(o, "from-file")) {
		if (opt_get(o, "command") || opt_get(o, "url")) {
			fprintf(stderr, "cortexctl: --from-file or flags, not both\n");
			return NULL;
		}
		return load_json_file(opt_get(o, "from-file"));
	}
	const char *cmd = opt_get(o, "command"), *url = opt_get(o, "url"),
		   *type = opt_get(o, "type");
	if (!cmd == !url) {
		fprintf(stderr, "cortexctl: mcp put needs --command (stdio), --url (http/sse) or "
				"--from-file\n");
		return NULL;
	}
	json_t *b = json_pack("{s:s}", "type", type ? type : cmd ? "stdio" : "http"), *m = NULL;
	if (cmd) {
		json_t *args = json_array();
		const char *a;
		for (int i = 0; (a = opt_nth(o, "arg", i)); i++)
			json_array_append_new(args, json_string(a));
		json_object_set_new(b, "command", json_string(cmd));
		json_object_set_new(b, "args", args);
	} else {
		json_object_set_new(b, "url", json_string(url));
	}
	if ((cmd && opt_get(o, "header")) || (url && opt_get(o, "env"))) {
		fprintf(stderr, "cortexctl: --env goes with --command, --header with --url\n");
		json_decref(b);
		return NULL;
	}
	if (pairs_of(o, cmd ? "env" : "header", &m) < 0) {
		json_decref(b);
		return NULL;
	}
	if (m)
		json_object_set_new(b, cmd ? "env" : "headers", m);
	if (opt_get(o, "package"))
		json_object_set_new(b, "package", json_string(opt_get(o, "package")));
	return b;
}

int cmd_mcp_put(const struct cli *cli, struct opts *o)
{
	json_t *b = mcp_body(o);
	if (!b)
		return EXIT_USAGE;
	int rc = settings_one(cli, "PUT", "mcp", o->pos[0], b);
	json_decref(b);
	return rc;
}

int cmd_mcp_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return settings_ls(cli, "mcp");
}

int cmd_mcp_show(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "GET", "mcp", o->pos[0], NULL);
}

int cmd_mcp_rm(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "DELETE", "mcp", o->pos[0], NULL);
}

/* ---- secrets ---- */

/* The value from --FLAG FILE or stdin; one trailing newline dropped (what
 * `echo` and most editors add). */
static char *secret_input(const struct opts *o, const char *flag, const char *what)
{
	const char *from = opt_get(o, flag) ? opt_get(o, flag) : "-";
	if (!strcmp(from, "-") && isatty(0))
		fprintf(stderr, "%s (end with Ctrl-D): ", what);
	size_t n;
	char *v = read_input(from, SETTING_CAP, &n);
	if (!v)
		return NULL;
	if (n && v[n - 1] == '\n')
		v[--n] = '\0';
	if (n && v[n - 1] == '\r')
		v[--n] = '\0';
	if (!n || strlen(v) != n) {
		fprintf(stderr, "cortexctl: the %s is %s\n", what,
			n ? "binary (a NUL byte)" : "empty");
		free(v);
		return NULL;
	}
	return v;
}

int cmd_secrets_put(const struct cli *cli, struct opts *o)
{
	char *v = secret_input(o, "from-file", "secret value");
	if (!v)
		return EXIT_USAGE;
	json_t *b = json_pack("{s:s}", "value", v);
	memset(v, 0, strlen(v));
	free(v);
	if (!b) {
		fprintf(stderr, "cortexctl: the secret value is not valid UTF-8\n");
		return EXIT_USAGE;
	}
	if (opt_get(o, "env"))
		json_object_set_new(b, "env", json_string(opt_get(o, "env")));
	if (opt_get(o, "file"))
		json_object_set_new(b, "file", json_string(opt_get(o, "file")));
	if (opt_get(o, "broker-host")) {
		json_t *h = json_array();
		const char *x;
		for (int i = 0; (x = opt_nth(o, "broker-host", i)); i++)
			json_array_append_new(h, json_string(x));
		json_object_set_new(b, "broker", json_pack("{s:o}", "hosts", h));
	}
	int rc = settings_one(cli, "PUT", "secrets", o->pos[0], b);
	json_decref(b);
	return rc;
}

int cmd_secrets_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return settings_ls(cli, "secrets");
}

int cmd_secrets_rm(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "DELETE", "secrets", o->pos[0], NULL);
}

/* ---- user ---- */

int cmd_user_show(const struct cli *cli, struct opts *o)
{
	(void)o;
	return api_print(cli, "GET", "/v1/settings/user", NULL, out_object);
}

/* PUT replaces the whole record: read it, change the fields asked, write it. */
int cmd_user_set(const struct cli *cli, struct opts *o)
{
	json_t *cur = NULL;
	int rc = EXIT_OK;
	if (!opt_has(o, "clear") && (rc = api_json(cli, "GET", "/v1/settings/user", NULL, &cur)))
		return rc;
	if (!json_is_object(cur)) {
		json_decref(cur);
		cur = json_object();
	}
	json_object_del(cur, "source"); /* a view field, if any */
	if (opt_get(o, "claude-md")) {
		size_t n;
		char *t = read_input(opt_get(o, "claude-md"), SETTING_CAP, &n);
		json_t *s = t ? json_stringn(t, n) : NULL;
		free(t);
		if (!s) {
			fprintf(stderr, "cortexctl: --claude-md: %s\n",
				t ? "not UTF-8 text" : "cannot read");
			json_decref(cur);
			return EXIT_USAGE;
		}
		json_object_set_new(cur, "claude_md", s);
	}
	if (opt_get(o, "model"))
		json_object_set_new(cur, "model", json_string(opt_get(o, "model")));
	if (opt_get(o, "permission-mode"))
		json_object_set_new(cur, "permission_mode",
				    json_string(opt_get(o, "permission-mode")));
	json_t *env = json_object_get(cur, "env"), *add = NULL;
	if (pairs_of(o, "env", &add) < 0) {
		json_decref(cur);
		return EXIT_USAGE;
	}
	if (add || opt_get(o, "unset-env")) {
		if (!json_is_object(env))
			json_object_set_new(cur, "env", env = json_object());
		json_object_update(env, add);
		const char *k;
		for (int i = 0; (k = opt_nth(o, "unset-env", i)); i++)
			json_object_del(env, k);
	}
	json_decref(add);
	rc = api_print(cli, "PUT", "/v1/settings/user", cur, out_object);
	json_decref(cur);
	return rc;
}

/* ---- plugins ---- */

/* DIR/SUB/(*.md) into {"file.md":"text"}; 0, or -1 printed.  Nothing else is read. */
static int plugin_dir(const char *dir, const char *sub, json_t *body, int *files)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir, sub);
	DIR *d = opendir(p);
	if (!d)
		return 0; /* a missing kind is just empty */
	json_t *obj = json_object();
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] == '.' || l < 4 || strcmp(e->d_name + l - 3, ".md"))
			continue;
		char f[4400];
		size_t n;
		snprintf(f, sizeof f, "%s/%s", p, e->d_name);
		char *t = read_input(f, SETTING_CAP, &n);
		json_t *s = t ? json_stringn(t, n) : NULL;
		free(t);
		if (!s) {
			fprintf(stderr, "cortexctl: %s: %s\n", f,
				t ? "not UTF-8 text" : "cannot read");
			rc = -1;
			break;
		}
		json_object_set_new(obj, e->d_name, s);
		(*files)++;
	}
	closedir(d);
	if (json_object_size(obj))
		json_object_set(body, sub, obj);
	json_decref(obj);
	return rc;
}

int cmd_plugins_put(const struct cli *cli, struct opts *o)
{
	struct stat st;
	if (stat(o->pos[1], &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "cortexctl: %s: not a directory\n", o->pos[1]);
		return EXIT_USAGE;
	}
	json_t *b = json_object();
	int files = 0;
	if (plugin_dir(o->pos[1], "agents", b, &files) < 0 ||
	    plugin_dir(o->pos[1], "commands", b, &files) < 0 ||
	    plugin_dir(o->pos[1], "rules", b, &files) < 0 || !files) {
		if (!files)
			fprintf(stderr,
				"cortexctl: %s has no agents/*.md, commands/*.md or rules/*.md\n",
				o->pos[1]);
		json_decref(b);
		return EXIT_USAGE;
	}
	int rc = settings_one(cli, "PUT", "plugins", o->pos[0], b);
	json_decref(b);
	return rc;
}

int cmd_plugins_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return settings_ls(cli, "plugins");
}

int cmd_plugins_show(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "GET", "plugins", o->pos[0], NULL);
}

int cmd_plugins_rm(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "DELETE", "plugins", o->pos[0], NULL);
}

/* ---- providers ---- */

int cmd_providers_put(const struct cli *cli, struct opts *o)
{
	if (!opt_get(o, "base-url")) {
		fprintf(stderr, "cortexctl: providers put needs --base-url\n");
		return EXIT_USAGE;
	}
	char *key = secret_input(o, "key-file", "API key");
	if (!key)
		return EXIT_USAGE;
	json_t *b = json_pack("{s:s,s:s,s:s}", "kind",
			      opt_get(o, "kind") ? opt_get(o, "kind") : "anthropic", "base_url",
			      opt_get(o, "base-url"), "api_key", key);
	memset(key, 0, strlen(key));
	free(key);
	if (!b) {
		fprintf(stderr, "cortexctl: a value is not valid UTF-8\n");
		return EXIT_USAGE;
	}
	if (opt_get(o, "model"))
		json_object_set_new(b, "model", json_string(opt_get(o, "model")));
	int rc = settings_one(cli, "PUT", "ai-providers", o->pos[0], b);
	json_decref(b);
	return rc;
}

int cmd_providers_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return settings_ls(cli, "ai-providers");
}

int cmd_providers_show(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "GET", "ai-providers", o->pos[0], NULL);
}

int cmd_providers_rm(const struct cli *cli, struct opts *o)
{
	return settings_one(cli, "DELETE", "ai-providers", o->pos[0], NULL);
}

/* ---- network ---- */

static int network_path(char *buf, size_t cap, const struct opts *o)
{
	if (!opt_get(o, "session")) {
		snprintf(buf, cap, "/v1/settings/network");
		return 0;
	}
	return path_join(buf, cap, "/v1/sessions/", opt_get(o, "session"), "/network");
}

int cmd_network_show(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (network_path(path, sizeof path, o) < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, out_object);
}

int cmd_network_set(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (network_path(path, sizeof path, o) < 0)
		return EXIT_USAGE;
	if (!opt_get(o, "mode")) {
		fprintf(stderr, "cortexctl: network set needs --mode none|allowlist|open\n");
		return EXIT_USAGE;
	}
	json_t *b = json_pack("{s:s,s:[],s:[]}", "mode", opt_get(o, "mode"), "allow", "deny");
	static const char *const lists[] = {"allow", "deny"};
	for (int l = 0; l < 2; l++) {
		const char *x;
		for (int i = 0; (x = opt_nth(o, lists[l], i)); i++)
			json_array_append_new(json_object_get(b, lists[l]), json_string(x));
	}
	int rc = api_print(cli, "PUT", path, b, out_object);
	json_decref(b);
	return rc;
}

int cmd_network_rm(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (network_path(path, sizeof path, o) < 0)
		return EXIT_USAGE;
	return api_print(cli, "DELETE", path, NULL, NULL);
}
