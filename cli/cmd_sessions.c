/* cmd_sessions.c — health, metrics, users, sessions and files. */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "caps.h"
#include "cli.h"

/* ---- health, metrics ---- */

int cmd_health(const struct cli *cli, struct opts *o)
{
	(void)o;
	struct http_req rq = {.method = "GET", .path = "/healthz", .no_token = 1};
	struct http_resp rs;
	int rc = http_do(cli, &rq, &rs);
	if (rc)
		return rc;
	rc = http_exit_code(rs.status);
	if (cli->json)
		printf("%s\n", rs.body ? rs.body : "");
	else if (rc == EXIT_OK)
		printf("ok\n");
	else
		fprintf(stderr, "cortexctl: not healthy (HTTP %ld): %s\n", rs.status,
			rs.body ? rs.body : "");
	http_resp_free(&rs);
	return rc;
}

int cmd_metrics(const struct cli *cli, struct opts *o)
{
	(void)o;
	return api_stream_get(cli, "/metrics");
}

/* ?since=..&session=..&limit=.. from the flags that are set. */
static int metrics_query(char *buf, size_t cap, const struct opts *o, const char *base)
{
	long long since = -1, limit = -1;
	if (opt_int(o, "since", 0, (long long)1 << 53, &since) < 0 ||
	    opt_int(o, "limit", 1, 1000, &limit) < 0)
		return -1;
	const char *s = opt_get(o, "session");
	char sess[80] = "";
	if (s && path_join(sess, sizeof sess, "&session=", s, NULL) < 0)
		return -1;
	char a[40] = "", b[40] = "";
	if (since >= 0)
		snprintf(a, sizeof a, "&since=%lld", since);
	if (limit >= 0)
		snprintf(b, sizeof b, "&limit=%lld", limit);
	snprintf(buf, cap, "%s?x=1%s%s%s", base, a, b, sess);
	return 0;
}

int cmd_metrics_summary(const struct cli *cli, struct opts *o)
{
	char path[256];
	if (metrics_query(path, sizeof path, o, "/v1/metrics/summary") < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, NULL);
}

static void turns_human(json_t *v)
{
	static const char *const cols[] = {"TIME",	     "SESSION",	 "TURN",
					   "SURFACE",	     "PATH",	 "OUTCOME",
					   "FIRST_TOKEN_MS", "TOTAL_MS", NULL};
	static const char *const keys[] = {"ts",   "session", "turn",		"surface",
					   "path", "outcome", "first_token_ms", "total_ms"};
	out_table(v, cols, keys);
}

int cmd_metrics_turns(const struct cli *cli, struct opts *o)
{
	char path[256];
	if (metrics_query(path, sizeof path, o, "/v1/metrics/turns") < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, turns_human);
}

/* ---- users ---- */

static void user_human(json_t *v)
{
	printf("user %s created; its token (shown once):\n%s\n",
	       json_string_value(json_object_get(v, "name")),
	       json_string_value(json_object_get(v, "token")));
}

int cmd_users_create(const struct cli *cli, struct opts *o)
{
	json_t *b = json_pack("{s:s}", "name", o->pos[0]);
	if (!b) {
		fprintf(stderr, "cortexctl: the user name is not valid UTF-8\n");
		return EXIT_USAGE;
	}
	int rc = api_print(cli, "POST", "/v1/users", b, user_human);
	json_decref(b);
	return rc;
}

/* ---- sessions ---- */

static void sessions_human(json_t *v)
{
	static const char *const cols[] = {"ID",    "STATE", "SURFACE", "AGENT",
					   "IMAGE", "TURNS", "CREATED", NULL};
	static const char *const keys[] = {"id",    "state", "surface",	  "agent",
					   "image", "turns", "created_at"};
	if (json_is_object(v)) {
		out_object(v);
		return;
	}
	out_table(v, cols, keys);
}

/* --limit disk_mb=512 --limit cpu=0.5 ... into {"disk_mb":512,"cpu":0.5,...}:
 * an integer stays one, anything else with a '.' is a number (cpu). */
static int limits_of(const struct opts *o, json_t *body)
{
	const char *v;
	json_t *l = NULL;
	for (int i = 0; (v = opt_nth(o, "limit", i)); i++) {
		const char *eq = strchr(v, '=');
		char *end = NULL, *fend = NULL;
		long long x = eq ? strtoll(eq + 1, &end, 10) : 0;
		double f = eq ? strtod(eq + 1, &fend) : 0;
		if (!eq || eq == v || !eq[1] || (*end && *fend)) {
			fprintf(stderr,
				"cortexctl: --limit wants KEY=NUMBER (disk_mb, memory_mb, pids, cpu, "
				"cpu_weight, cpu_max_millicpu), not '%s'\n",
				v);
			json_decref(l);
			return -1;
		}
		if (!l)
			l = json_object();
		char key[64];
		snprintf(key, sizeof key, "%.*s", (int)(eq - v), v);
		json_object_set_new(l, key, *end ? json_real(f) : json_integer(x));
	}
	if (l)
		json_object_set_new(body, "limits", l);
	return 0;
}

static json_t *create_body(const struct opts *o)
{
	const char *surface = opt_get(o, "surface");
	if (o->npos > 0) {
		if (surface || (strcmp(o->pos[0], "chat") && strcmp(o->pos[0], "voice")))
			return NULL;
		surface = o->pos[0];
	}
	json_t *b = json_object();
	if (surface)
		json_object_set_new(b, "surface", json_string(surface));
	if (opt_get(o, "image"))
		json_object_set_new(b, "image", json_string(opt_get(o, "image")));
	long long idle = -1;
	if (opt_int(o, "idle", 0, 7 * 86400, &idle) < 0 || limits_of(o, b) < 0) {
		json_decref(b);
		return NULL;
	}
	if (idle >= 0)
		json_object_set_new(b, "idle_sleep_s", json_integer(idle));
	if (opt_get(o, "repo")) {
		json_t *r = json_pack("{s:s}", "url", opt_get(o, "repo"));
		if (opt_get(o, "ref"))
			json_object_set_new(r, "ref", json_string(opt_get(o, "ref")));
		if (opt_get(o, "repo-secret"))
			json_object_set_new(r, "secret", json_string(opt_get(o, "repo-secret")));
		json_object_set_new(b, "repo", r);
	} else if (opt_get(o, "ref") || opt_get(o, "repo-secret")) {
		fprintf(stderr, "cortexctl: --ref and --repo-secret need --repo\n");
		json_decref(b);
		return NULL;
	}
	return b;
}

/* Polls the session until it is ready with its agent hot (0), or in error
 * (EXIT_SERVER). */
static int wait_ready(const struct cli *cli, const char *path, json_t **last)
{
	for (int i = 0; i < 1200; i++) { /* 10 minutes */
		json_t *v = NULL;
		int rc = api_json(cli, "GET", path, NULL, &v);
		if (rc)
			return rc;
		const char *st = json_string_value(json_object_get(v, "state"));
		const char *ag = json_string_value(json_object_get(v, "agent"));
		json_decref(*last);
		*last = v;
		if (st && !strcmp(st, "ready") && ag && (!strcmp(ag, "hot") || !strcmp(ag, "busy")))
			return 0;
		if (st && !strcmp(st, "error")) {
			fprintf(stderr, "cortexctl: the session failed: %s\n",
				json_string_value(json_object_get(v, "error"))
				    ? json_string_value(json_object_get(v, "error"))
				    : "(no reason given)");
			return EXIT_SERVER;
		}
		usleep(500 * 1000);
	}
	fprintf(stderr, "cortexctl: the session is not ready after 10 minutes\n");
	return EXIT_SERVER;
}

int cmd_sessions_create(const struct cli *cli, struct opts *o)
{
	json_t *b = create_body(o), *v = NULL;
	if (!b)
		return CMD_BAD_ARGS;
	int rc = api_json(cli, "POST", "/v1/sessions", b, &v);
	json_decref(b);
	if (rc == EXIT_OK && opt_has(o, "wait")) {
		char path[128];
		if (path_join(path, sizeof path, "/v1/sessions/",
			      json_string_value(json_object_get(v, "id")), NULL) < 0)
			rc = EXIT_SERVER;
		else
			rc = wait_ready(cli, path, &v);
	}
	if (v && (rc == EXIT_OK || rc == EXIT_SERVER)) {
		if (cli->json) {
			char *s = json_dumps(v, JSON_COMPACT);
			printf("%s\n", s ? s : "{}");
			free(s);
		} else {
			printf("%s\n", json_string_value(json_object_get(v, "id")));
		}
	}
	json_decref(v);
	return rc;
}

int cmd_sessions_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return api_print(cli, "GET", "/v1/sessions", NULL, sessions_human);
}

static int session_call(const struct cli *cli, const char *method, const char *id, const char *tail)
{
	char path[160];
	if (path_join(path, sizeof path, "/v1/sessions/", id, tail) < 0)
		return EXIT_USAGE;
	return api_print(cli, method, path, NULL, sessions_human);
}

int cmd_sessions_show(const struct cli *cli, struct opts *o)
{
	return session_call(cli, "GET", o->pos[0], NULL);
}

int cmd_sessions_sleep(const struct cli *cli, struct opts *o)
{
	return session_call(cli, "POST", o->pos[0], "/sleep");
}

int cmd_sessions_pause(const struct cli *cli, struct opts *o)
{
	return session_call(cli, "POST", o->pos[0], "/pause");
}

int cmd_sessions_wake(const struct cli *cli, struct opts *o)
{
	return session_call(cli, "POST", o->pos[0], "/wake");
}

int cmd_sessions_rm(const struct cli *cli, struct opts *o)
{
	return session_call(cli, "DELETE", o->pos[0], NULL);
}

static void messages_human(json_t *v)
{
	size_t i;
	json_t *m;
	json_array_foreach(v, i, m)
	{
		char ts[40];
		out_value(ts, sizeof ts, json_object_get(m, "ts"), "ts");
		printf("[%s] %s: %s\n", ts, json_string_value(json_object_get(m, "role")),
		       json_string_value(json_object_get(m, "text"))
			   ? json_string_value(json_object_get(m, "text"))
			   : "");
	}
}

int cmd_sessions_messages(const struct cli *cli, struct opts *o)
{
	long long limit = -1;
	const char *after = opt_get(o, "after");
	if (opt_int(o, "limit", 1, 1000, &limit) < 0)
		return EXIT_USAGE;
	char q[600] = "", path[800];
	char *ea = after ? curl_easy_escape(NULL, after, 0) : NULL;
	snprintf(q, sizeof q, "/messages?x=1%s%.400s", ea ? "&after=" : "", ea ? ea : "");
	curl_free(ea);
	if (limit > 0)
		snprintf(q + strlen(q), sizeof q - strlen(q), "&limit=%lld", limit);
	if (path_join(path, sizeof path, "/v1/sessions/", o->pos[0], q) < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, messages_human);
}

/* ---- what a session did on the network, and its preview ports ---- */

static void egress_human(json_t *v)
{
	static const char *const cols[] = {"TIME", "DECISION", "METHOD", "HOST", "PORT", "RULE", "MS", NULL};
	static const char *const keys[] = {"ts", "decision", "method", "host", "port", "rule", "ms", NULL};
	out_table(json_object_get(v, "entries"), cols, keys);
}

int cmd_sessions_egress(const struct cli *cli, struct opts *o)
{
	long long limit = -1;
	if (opt_int(o, "limit", 1, 1000, &limit) < 0)
		return EXIT_USAGE;
	char q[64] = "/egress", path[256];
	if (limit > 0)
		snprintf(q, sizeof q, "/egress?limit=%lld", limit);
	if (path_join(path, sizeof path, "/v1/sessions/", o->pos[0], q) < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, egress_human);
}

/* GET a preview port's PATH; the body streams to stdout as it comes. */
int cmd_ports_get(const struct cli *cli, struct opts *o)
{
	char *end = NULL;
	long port = strtol(o->pos[1], &end, 10);
	const char *p = o->npos > 2 ? o->pos[2] : "/";
	if (*end || port < 1 || port > 65535) {
		fprintf(stderr, "cortexctl: PORT must be 1-65535, not '%s'\n", o->pos[1]);
		return EXIT_USAGE;
	}
	char tail[CX_CAP_HTTP_URI], path[CX_CAP_HTTP_URI + 128];
	int n = snprintf(tail, sizeof tail, "/ports/%ld%s%s", port, p[0] == '/' ? "" : "/", p);
	if (n < 0 || (size_t)n >= sizeof tail || strpbrk(p, " \r\n")) {
		fprintf(stderr, "cortexctl: PATH must be a URL path without spaces, at most %u bytes\n",
			CX_CAP_HTTP_URI - 32);
		return EXIT_USAGE;
	}
	if (path_join(path, sizeof path, "/v1/sessions/", o->pos[0], tail) < 0)
		return EXIT_USAGE;
	return api_stream_get(cli, path);
}

/* ---- files (docs/protocol.md "Files") ---- */

static int files_path(char *buf, size_t cap, const struct opts *o, const char *extra)
{
	char *q = curl_easy_escape(NULL, o->pos[1], 0);
	char tail[CX_CAP_HTTP_URI];
	if (!q)
		return -1;
	int n = snprintf(tail, sizeof tail, "/files?path=%s%s", q, extra);
	curl_free(q);
	if (n < 0 || (size_t)n >= sizeof tail) {
		fprintf(stderr, "cortexctl: path too long\n");
		return -1;
	}
	return path_join(buf, cap, "/v1/sessions/", o->pos[0], tail);
}

static void files_human(json_t *v)
{
	static const char *const cols[] = {"NAME", "TYPE", "SIZE", "MTIME", NULL};
	static const char *const keys[] = {"name", "type", "size", "mtime"};
	json_t *e = json_object_get(v, "entries");
	if (!json_is_array(e)) {
		out_object(v);
		return;
	}
	json_t *rows = json_array();
	size_t i;
	json_t *x;
	json_array_foreach(e, i, x)
	{ /* mtime: seconds with ms, shown as a date */
		json_t *r = json_deep_copy(x);
		double mt = json_number_value(json_object_get(x, "mtime"));
		json_object_set_new(r, "mtime", json_integer((json_int_t)(mt * 1000)));
		json_array_append_new(rows, r);
	}
	out_table(rows, cols, keys);
	json_decref(rows);
	if (json_is_true(json_object_get(v, "truncated")))
		printf("(truncated: more entries than the server lists)\n");
}

int cmd_files_ls(const struct cli *cli, struct opts *o)
{
	char path[CX_CAP_HTTP_URI + 128];
	if (files_path(path, sizeof path, o, "") < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, files_human);
}

int cmd_files_get(const struct cli *cli, struct opts *o)
{
	char path[CX_CAP_HTTP_URI + 128];
	if (files_path(path, sizeof path, o, "") < 0)
		return EXIT_USAGE;
	return api_stream_get(cli, path);
}

int cmd_files_put(const struct cli *cli, struct opts *o)
{
	char path[CX_CAP_HTTP_URI + 128];
	if (files_path(path, sizeof path, o, "") < 0)
		return EXIT_USAGE;
	FILE *f = !strcmp(o->pos[2], "-") ? stdin : fopen(o->pos[2], "rb");
	if (!f) {
		fprintf(stderr, "cortexctl: %s: %s\n", o->pos[2], strerror(errno));
		return EXIT_USAGE;
	}
	struct http_req rq = {.method = "PUT", .path = path, .upload = f};
	struct http_resp rs;
	int rc = http_do(cli, &rq, &rs);
	if (f != stdin)
		fclose(f);
	if (!rc && !(rc = http_report(cli, &rs)) && cli->json && rs.body)
		printf("%s\n", rs.body);
	http_resp_free(&rs);
	return rc;
}

int cmd_files_rm(const struct cli *cli, struct opts *o)
{
	char path[CX_CAP_HTTP_URI + 128];
	if (files_path(path, sizeof path, o, opt_has(o, "recursive") ? "&recursive=1" : "") < 0)
		return EXIT_USAGE;
	return api_print(cli, "DELETE", path, NULL, NULL);
}

/* A GET that stops at the first body byte: a file's type without its bytes. */
static size_t stop_at_body(char *p, size_t n, void *ud)
{
	(void)p, (void)n;
	*(int *)ud = 1;
	return 0;
}

int cmd_files_exists(const struct cli *cli, struct opts *o)
{
	char path[CX_CAP_HTTP_URI + 128];
	if (files_path(path, sizeof path, o, "") < 0)
		return EXIT_USAGE;
	int got = 0;
	struct http_req rq = {.method = "GET", .path = path, .sink = stop_at_body, .sink_ud = &got};
	struct http_resp rs;
	int rc = http_do(cli, &rq, &rs);
	if (rc)
		return rc;
	rc = http_exit_code(rs.status);
	const char *type = strstr(rs.type, "json") ? "dir" : "file";
	if (rc == EXIT_OK || rc == EXIT_NOT_FOUND) {
		if (cli->json)
			printf("{\"exists\":%s%s%s%s}\n", rc ? "false" : "true",
			       rc ? "" : ",\"type\":\"", rc ? "" : type, rc ? "" : "\"");
		else
			printf("%s\n", rc ? "no" : type);
	} else {
		http_report(cli, &rs);
	}
	http_resp_free(&rs);
	return rc;
}
