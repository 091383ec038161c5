/* Unit tests: the /v1/settings/... routes through api_handle() — happy paths,
 * secrets never leaving in clear (responses or the database file), per-user
 * isolation, count limits, and bad input refused with a 4xx JSON error that
 * leaves the store untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "broker.h"
#include "edge.h"
#include "lifecycle.h"
#include "unit_util.h"
#include "settings.h"

static char tmpdir[4096], dbpath[4200];
static char tok_alice[AUTH_TOKEN_LEN + 1], tok_bob[AUTH_TOKEN_LEN + 1],
    tok_carol[AUTH_TOKEN_LEN + 1];

/* Distinctive plaintexts to hunt for in responses and on disk. */
#define PLAIN_GH  "ghp_PLAINTEXT_e1f8c0a7d3b94c2e"
#define PLAIN_SSH "ssh-PLAINTEXT-77a1b2c3d4e5f6"
#define PLAIN_KEY "sk-ant-PLAINTEXT-9d8c7b6a5f4e"



static void make_user(const char *name, char tok[AUTH_TOKEN_LEN + 1])
{
	char body[80];
	snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
	struct api_resp r = unit_call("POST", "/v1/users", D.admin_token, body);
	assert_int_eq_msg(r.status, 201, "create user");
	json_t *o = json_loads(r.body, 0, NULL);
	snprintf(tok, AUTH_TOKEN_LEN + 1, "%s", json_string_value(json_object_get(o, "token")));
	json_decref(o);
	free(r.body);
}

static int setup(void **state)
{
	(void)state;
	if (unit_tmpdir("settings", tmpdir, sizeof tmpdir) < 0)
		return -1;
	snprintf(dbpath, sizeof dbpath, "%s/t.db", tmpdir);
	cx_err err = CX_ERR_INIT;
	memset(&D, 0, sizeof D);
	config_defaults(&D.cfg);
	if (store_open(&D.st, "sqlite", dbpath, &err) < 0)
		return -1;
	unsetenv("CORTEX_ADMIN_TOKEN");
	if (auth_admin_init(tmpdir, D.admin_token, &err) < 0)
		return -1;
	char kp[4200];
	snprintf(kp, sizeof kp, "%s/master.key", tmpdir);
	if (secrets_key_load(&D.skey, kp, 1, &err) < 0)
		return -1;
	make_user("alice", tok_alice);
	make_user("bob", tok_bob);
	make_user("carol", tok_carol);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	store_close(D.st);
	D.st = NULL;
	secrets_key_wipe(&D.skey);
	return 0;
}

/* Call and expect a status; returns the parsed body (NULL when empty). */
static json_t *expect(const char *method, const char *path, const char *token, const char *body,
		      int status)
{
	struct api_resp r = unit_call(method, path, token, body);
	if (r.status != status)
		fail_msg("%s %s body=%.200s: expected %d, got %d (%.300s)", method, path,
			 body ? body : "-", status, r.status, r.body ? r.body : "");
	json_t *o = r.body ? json_loads(r.body, 0, NULL) : NULL;
	if (r.body && !o)
		fail_msg("%s %s: response is not JSON: %.200s", method, path, r.body);
	free(r.body);
	return o;
}

static void expect_ok(const char *method, const char *path, const char *token, const char *body,
		      int status)
{
	json_decref(expect(method, path, token, body, status));
}

/* The whole settings/ range (keys and values) plus the store revision. */
struct snap {
	char *bytes;
	size_t len;
	int64_t rev;
};

static struct snap snapshot(void)
{
	struct snap s = {NULL, 0, 0};
	store_kv *kv;
	size_t n;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, "settings/", 0, &kv, &n, &err), 0);
	FILE *f = open_memstream(&s.bytes, &s.len);
	for (size_t i = 0; i < n; i++) {
		fwrite(kv[i].key, 1, strlen(kv[i].key) + 1, f);
		fwrite(kv[i].val, 1, kv[i].len + 1, f);
	}
	fclose(f);
	store_kv_free(kv, n);
	assert_int_equal(store_revision(D.st, &s.rev, &err), 0);
	return s;
}

static int64_t revision(void)
{
	int64_t rev = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_revision(D.st, &rev, &err), 0);
	return rev;
}

/* A refused request: status, {"error":{"code","message"}}, and nothing stored. */
static void bad(const char *method, const char *path, const char *token, const char *body,
		int status, const char *code)
{
	struct snap before = snapshot();
	struct api_resp r = unit_call(method, path, token, body);
	if (r.status != status)
		fail_msg("%s %s body=%.200s: expected %d, got %d (%.300s)", method, path,
			 body ? body : "-", status, r.status, r.body ? r.body : "");
	json_t *o = json_loads(r.body ? r.body : "", 0, NULL);
	json_t *e = json_object_get(o, "error");
	const char *c = json_string_value(json_object_get(e, "code"));
	if (!json_is_string(json_object_get(e, "message")) || !c)
		fail_msg("%s %s: error body lacks code/message: %s", method, path,
			 r.body ? r.body : "-");
	if (strcmp(c, code))
		fail_msg("%s %s body=%.200s: expected code %s, got %s (%s)", method, path,
			 body ? body : "-", code, c, r.body);
	json_decref(o);
	free(r.body);
	struct snap after = snapshot();
	if (after.rev != before.rev || after.len != before.len ||
	    memcmp(after.bytes, before.bytes, before.len))
		fail_msg("%s %s body=%.200s: refused, but the store changed", method, path,
			 body ? body : "-");
	free(before.bytes);
	free(after.bytes);
}

static json_t *stored(const char *key)
{
	char *val = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	int rc = store_get(D.st, key, &val, &len, &err);
	if (rc == CX_NOTFOUND)
		return NULL;
	assert_int_equal(rc, 0);
	json_t *o = json_loadb(val, len, 0, NULL);
	free(val);
	assert_non_null(o);
	return o;
}

static int contains(json_t *o, const char *needle)
{
	char *s = json_dumps(o, JSON_COMPACT);
	int r = s && strstr(s, needle);
	free(s);
	return r;
}

/* A body {"<field>":"aaa..."} of n chars, inside prefix/suffix JSON. */
static char *big_body(const char *pre, size_t n, const char *post)
{
	size_t pl = strlen(pre), sl = strlen(post);
	char *b = malloc(pl + n + sl + 1);
	memcpy(b, pre, pl);
	memset(b + pl, 'a', n);
	memcpy(b + pl + n, post, sl + 1);
	return b;
}

/* ---- happy paths ---- */

static void test_mcp(void **state)
{
	(void)state;
	const char *a = tok_alice;
	int64_t r0 = revision();
	json_t *o = expect(
	    "PUT", "/v1/settings/mcp/fs", a,
	    "{\"command\":\"npx\",\"args\":[\"-y\",\"srv\"],\"env\":{\"ROOT\":\"/w\"}}", 201);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "fs");
	assert_string_equal(json_string_value(json_object_get(o, "type")), "stdio");
	assert_string_equal(json_string_value(json_object_get(o, "command")), "npx");
	json_decref(o);
	assert_true(revision() > r0);
	/* The record is exactly the documented layout. */
	o = stored("settings/alice/mcp/fs");
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "stdio");
	assert_int_equal(json_array_size(json_object_get(o, "args")), 2);
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "env"), "ROOT")),
			    "/w");
	assert_null(json_object_get(o, "name"));
	json_decref(o);
	/* Replacing: 200, whole record replaced. */
	expect_ok("PUT", "/v1/settings/mcp/fs", a, "{\"type\":\"stdio\",\"command\":\"node\"}",
		  200);
	o = stored("settings/alice/mcp/fs");
	assert_string_equal(json_string_value(json_object_get(o, "command")), "node");
	assert_null(json_object_get(o, "args"));
	json_decref(o);
	expect_ok("PUT", "/v1/settings/mcp/web", a,
		  "{\"type\":\"http\",\"url\":\"https://mcp.example.com/"
		  "v1\",\"headers\":{\"X-Api-Key\":\"k\"}}",
		  201);
	expect_ok("PUT", "/v1/settings/mcp/events", a,
		  "{\"type\":\"sse\",\"url\":\"http://127.0.0.1:9/sse\"}", 201);
	o = expect(
	    "PUT", "/v1/settings/mcp/pkg", a,
	    "{\"package\":\"@modelcontextprotocol/server-filesystem@2025.1.14\",\"args\":[\"/w\"]}",
	    201);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "stdio");
	json_decref(o);
	o = stored("settings/alice/mcp/pkg");
	assert_string_equal(json_string_value(json_object_get(o, "package")),
			    "@modelcontextprotocol/server-filesystem@2025.1.14");
	assert_null(json_object_get(o, "command"));
	json_decref(o);
	/* List: an array of views in name order. */
	o = expect("GET", "/v1/settings/mcp", a, NULL, 200);
	assert_true(json_is_array(o));
	assert_int_equal(json_array_size(o), 4);
	const char *order[] = {"events", "fs", "pkg", "web"};
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(
		    json_string_value(json_object_get(json_array_get(o, i), "name")), order[i]);
	assert_string_equal(json_string_value(json_object_get(json_array_get(o, 3), "url")),
			    "https://mcp.example.com/v1");
	json_decref(o);
	o = expect("GET", "/v1/settings/mcp/web", a, NULL, 200);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "http");
	json_decref(o);
	/* Delete: 204, then 404. */
	int64_t r1 = revision();
	expect_ok("DELETE", "/v1/settings/mcp/events", a, NULL, 204);
	assert_true(revision() > r1);
	assert_null(stored("settings/alice/mcp/events"));
	bad("DELETE", "/v1/settings/mcp/events", a, NULL, 404, "not_found");
	bad("GET", "/v1/settings/mcp/events", a, NULL, 404, "not_found");
	/* No npm cache here: drop the package server so later writes don't retry its install. */
	expect_ok("DELETE", "/v1/settings/mcp/pkg", a, NULL, 204);
}

static void test_secrets(void **state)
{
	(void)state;
	const char *a = tok_alice;
	json_t *o = expect("PUT", "/v1/settings/secrets/gh", a,
			   "{\"value\":\"" PLAIN_GH "\",\"env\":\"GH_TOKEN\"}", 201);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "gh");
	assert_string_equal(json_string_value(json_object_get(o, "env")), "GH_TOKEN");
	assert_true(json_is_integer(json_object_get(o, "updated_at")));
	assert_false(contains(o, PLAIN_GH));
	assert_false(contains(o, "cx1:"));
	assert_null(json_object_get(o, "value"));
	json_decref(o);
	expect_ok("PUT", "/v1/settings/secrets/ssh", a,
		  "{\"value\":\"" PLAIN_SSH "\",\"file\":\"~/.ssh/id_ed25519\"}", 201);
	expect_ok(
	    "PUT", "/v1/settings/secrets/both", a,
	    "{\"value\":\"v\\u00e9\\n\",\"env\":\"X_1\",\"file\":\"~/.config/tool/token.txt\"}",
	    201);
	o = expect("PUT", "/v1/settings/secrets/gh", a,
		   "{\"value\":\"" PLAIN_GH "\",\"env\":\"GH_TOKEN\"}", 200);
	json_decref(o);
	/* The list: names, env/file, updated_at; never a value or its sealed text. */
	o = expect("GET", "/v1/settings/secrets", a, NULL, 200);
	assert_int_equal(json_array_size(o), 3);
	assert_false(contains(o, PLAIN_GH));
	assert_false(contains(o, PLAIN_SSH));
	assert_false(contains(o, "cx1:"));
	assert_false(contains(o, "sealed"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(o, 2), "file")),
			    "~/.ssh/id_ed25519");
	json_decref(o);
	o = expect("GET", "/v1/settings/secrets/ssh", a, NULL, 200);
	assert_false(contains(o, PLAIN_SSH));
	assert_false(contains(o, "cx1:"));
	json_decref(o);
	/* The row: sealed for (alice, "secrets/gh") and nothing else. */
	o = stored("settings/alice/secrets/gh");
	const char *sealed = json_string_value(json_object_get(o, "sealed"));
	assert_non_null(sealed);
	assert_null(strstr(sealed, PLAIN_GH));
	char *pt = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(
	    secrets_open(&D.skey, "alice", SET_AD_SECRET "gh", sealed, &pt, &len, &err), 0);
	assert_string_equal(pt, PLAIN_GH);
	secrets_free(pt, len);
	assert_int_equal(secrets_open(&D.skey, "bob", SET_AD_SECRET "gh", sealed, &pt, &len, &err),
			 -1);
	assert_int_equal(
	    secrets_open(&D.skey, "alice", SET_AD_SECRET "ssh", sealed, &pt, &len, &err), -1);
	assert_string_equal(json_string_value(json_object_get(o, "env")), "GH_TOKEN");
	json_decref(o);
	o = stored("settings/alice/secrets/both");
	assert_int_equal(secrets_open(&D.skey, "alice", SET_AD_SECRET "both",
				      json_string_value(json_object_get(o, "sealed")), &pt, &len,
				      &err),
			 0);
	assert_string_equal(pt, "v\xc3\xa9\n");
	secrets_free(pt, len);
	json_decref(o);
	expect_ok("DELETE", "/v1/settings/secrets/both", a, NULL, 204);
	bad("DELETE", "/v1/settings/secrets/both", a, NULL, 404, "not_found");
}

/* A secret with "broker": hosts normalized, the view shows them and the
 * placeholder (never the value); broker_entries(), what the egress proxy is
 * given after every write, holds placeholder, value and hosts of brokered
 * secrets only. */
static void test_broker_secrets(void **state)
{
	(void)state;
	const char *a = tok_alice;
	json_t *o = expect("PUT", "/v1/settings/secrets/ghb", a,
			   "{\"value\":\"" PLAIN_GH "\",\"env\":\"GH_TOKEN\",\"broker\":{\"hosts\":"
			   "[\"API.GitHub.com\",\"*.Example.com\",\"api.github.com\",\"127.0.0.1\"]}}",
			   201);
	char ph[SECRETS_PLACEHOLDER_LEN + 1];
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_placeholder(&D.skey, "alice", "ghb", ph, &err), 0);
	json_t *br = json_object_get(o, "broker");
	assert_string_equal(json_string_value(json_object_get(br, "placeholder")), ph);
	json_t *hosts = json_object_get(br, "hosts");
	assert_int_equal(json_array_size(hosts), 3);
	assert_string_equal(json_string_value(json_array_get(hosts, 0)), "api.github.com");
	assert_string_equal(json_string_value(json_array_get(hosts, 1)), "*.example.com");
	assert_string_equal(json_string_value(json_array_get(hosts, 2)), "127.0.0.1");
	assert_false(contains(o, PLAIN_GH));
	json_decref(o);
	o = expect("GET", "/v1/settings/secrets/ghb", a, NULL, 200);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "broker"), "placeholder")), ph);
	assert_false(contains(o, PLAIN_GH));
	assert_false(contains(o, "cx1:"));
	json_decref(o);
	expect_ok("PUT", "/v1/settings/secrets/plainone", a, "{\"value\":\"" PLAIN_SSH "\"}", 201);

	json_t *arr = NULL;
	assert_int_equal(broker_entries(D.st, &D.skey, "alice", &arr, &err), 0);
	assert_int_equal(json_array_size(arr), 1);
	json_t *e = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(e, "placeholder")), ph);
	assert_string_equal(json_string_value(json_object_get(e, "value")), PLAIN_GH);
	assert_int_equal(json_array_size(json_object_get(e, "hosts")), 3);
	broker_entries_free(arr);
	assert_int_equal(broker_entries(D.st, &D.skey, "bob", &arr, &err), 0);
	assert_int_equal(json_array_size(arr), 0);
	broker_entries_free(arr);

	/* Replaced without "broker": no longer brokered; deleted: gone. */
	expect_ok("PUT", "/v1/settings/secrets/ghb", a, "{\"value\":\"" PLAIN_GH "\"}", 200);
	assert_int_equal(broker_entries(D.st, &D.skey, "alice", &arr, &err), 0);
	assert_int_equal(json_array_size(arr), 0);
	broker_entries_free(arr);
	expect_ok("DELETE", "/v1/settings/secrets/ghb", a, NULL, 204);
	expect_ok("DELETE", "/v1/settings/secrets/plainone", a, NULL, 204);
}

static void test_user(void **state)
{
	(void)state;
	const char *b = tok_bob;
	json_t *o = expect("GET", "/v1/settings/user", b, NULL, 200);
	assert_true(json_is_object(o));
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
	o = expect("PUT", "/v1/settings/user", b,
		   "{\"claude_md\":\"# Bob\\nBe "
		   "brief.\",\"model\":\"claude-sonnet-4-5\",\"env\":{\"TZ\":\"UTC\"}}",
		   201);
	assert_string_equal(json_string_value(json_object_get(o, "model")), "claude-sonnet-4-5");
	json_decref(o);
	o = stored("settings/bob/user");
	assert_string_equal(json_string_value(json_object_get(o, "claude_md")), "# Bob\nBe brief.");
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "env"), "TZ")),
			    "UTC");
	json_decref(o);
	/* PUT replaces the whole record. */
	expect_ok("PUT", "/v1/settings/user", b, "{\"model\":\"us.anthropic.claude:v1\"}", 200);
	o = expect("GET", "/v1/settings/user", b, NULL, 200);
	assert_int_equal(json_object_size(o), 1);
	assert_string_equal(json_string_value(json_object_get(o, "model")),
			    "us.anthropic.claude:v1");
	json_decref(o);
	expect_ok("PUT", "/v1/settings/user", b, "{}", 200);
	o = stored("settings/bob/user");
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
}

static void test_plugins(void **state)
{
	(void)state;
	const char *a = tok_alice;
	json_t *o = expect(
	    "PUT", "/v1/settings/plugins/review", a,
	    "{\"agents\":{\"reviewer.md\":\"# Reviewer\"},\"commands\":{\"lint.md\":\"run lint\","
	    "\"fmt-all.md\":\"x\"},\"rules\":{}}",
	    201);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "review");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "agents"), "reviewer.md")),
	    "# Reviewer");
	json_decref(o);
	expect_ok("PUT", "/v1/settings/plugins/empty", a, "{}", 201);
	o = stored("settings/alice/plugins/review");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "commands"), "lint.md")),
	    "run lint");
	json_decref(o);
	/* The list names the files; the single GET has their text. */
	o = expect("GET", "/v1/settings/plugins", a, NULL, 200);
	assert_int_equal(json_array_size(o), 2);
	json_t *rv = json_array_get(o, 1);
	assert_string_equal(json_string_value(json_object_get(rv, "name")), "review");
	assert_string_equal(json_string_value(json_array_get(json_object_get(rv, "agents"), 0)),
			    "reviewer.md");
	assert_int_equal(json_array_size(json_object_get(rv, "commands")), 2);
	json_decref(o);
	o = expect("GET", "/v1/settings/plugins/review", a, NULL, 200);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(o, "commands"), "fmt-all.md")), "x");
	json_decref(o);
	expect_ok("PUT", "/v1/settings/plugins/review", a, "{\"rules\":{\"style.md\":\"tabs\"}}",
		  200);
	expect_ok("DELETE", "/v1/settings/plugins/empty", a, NULL, 204);
	bad("GET", "/v1/settings/plugins/empty", a, NULL, 404, "not_found");
}

static void test_providers(void **state)
{
	(void)state;
	const char *a = tok_alice;
	json_t *o =
	    expect("PUT", "/v1/settings/ai-providers/main", a,
		   "{\"kind\":\"anthropic\",\"base_url\":\"https://"
		   "api.example.com\",\"api_key\":\"" PLAIN_KEY "\",\"model\":\"claude-opus-4\"}",
		   201);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "main");
	assert_string_equal(json_string_value(json_object_get(o, "base_url")),
			    "https://api.example.com");
	assert_true(json_is_true(json_object_get(o, "has_key")));
	assert_false(contains(o, PLAIN_KEY));
	assert_false(contains(o, "cx1:"));
	assert_null(json_object_get(o, "api_key"));
	json_decref(o);
	o = expect("GET", "/v1/settings/ai-providers", a, NULL, 200);
	assert_int_equal(json_array_size(o), 1);
	assert_false(contains(o, PLAIN_KEY));
	assert_false(contains(o, "cx1:"));
	assert_false(contains(o, "sealed"));
	assert_true(json_is_true(json_object_get(json_array_get(o, 0), "has_key")));
	assert_string_equal(json_string_value(json_object_get(json_array_get(o, 0), "model")),
			    "claude-opus-4");
	json_decref(o);
	o = expect("GET", "/v1/settings/ai-providers/main", a, NULL, 200);
	assert_false(contains(o, PLAIN_KEY));
	json_decref(o);
	o = stored("settings/alice/ai-providers/main");
	assert_string_equal(json_string_value(json_object_get(o, "kind")), "anthropic");
	assert_null(json_object_get(o, "api_key"));
	char *pt = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_open(&D.skey, "alice", SET_AD_PROVIDER "main",
				      json_string_value(json_object_get(o, "sealed_key")), &pt,
				      &len, &err),
			 0);
	assert_string_equal(pt, PLAIN_KEY);
	secrets_free(pt, len);
	json_decref(o);
	expect_ok(
	    "PUT", "/v1/settings/ai-providers/local", a,
	    "{\"kind\":\"anthropic\",\"base_url\":\"http://127.0.0.1:4000\",\"api_key\":\"x\"}",
	    201);
	expect_ok("DELETE", "/v1/settings/ai-providers/local", a, NULL, 204);
	bad("DELETE", "/v1/settings/ai-providers/local", a, NULL, 404, "not_found");
}

/* Runs after the writes above: no plaintext in the SQLite files on disk
 * (the main file and its WAL, read as raw bytes). */
static void test_no_plaintext_on_disk(void **state)
{
	(void)state;
	const char *suffixes[] = {"", "-wal", "-journal", NULL};
	const char *plains[] = {PLAIN_GH, PLAIN_SSH, PLAIN_KEY, NULL};
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	for (const char **s = suffixes; *s; s++) {
		char p[4300];
		snprintf(p, sizeof p, "%s%s", dbpath, *s);
		FILE *f = fopen(p, "rb");
		if (!f)
			continue;
		char chunk[65536];
		size_t n;
		while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
			fwrite(chunk, 1, n, m);
		fclose(f);
	}
	fclose(m);
	/* The rows are in these bytes, so the search looked at real data. */
	const char *row = "settings/alice/secrets/gh";
	if (!memmem(buf, len, row, strlen(row)))
		fail_msg("%s not found in %s or its WAL (%zu bytes read)", row, dbpath, len);
	if (!memmem(buf, len, "cx1:", 4))
		fail_msg("no sealed value found on disk");
	for (const char **pl = plains; *pl; pl++)
		if (memmem(buf, len, *pl, strlen(*pl)))
			fail_msg("plaintext %s found in the database files", *pl);
	free(buf);
}

static void test_isolation(void **state)
{
	(void)state;
	const char *b = tok_bob;
	const char *kinds[] = {"mcp", "secrets", "plugins", "ai-providers", NULL};
	for (const char **k = kinds; *k; k++) {
		char p[128];
		snprintf(p, sizeof p, "/v1/settings/%s", *k);
		json_t *o = expect("GET", p, b, NULL, 200);
		if (json_array_size(o) != 0)
			fail_msg("bob sees rows in %s: %s", *k, json_dumps(o, JSON_COMPACT));
		json_decref(o);
	}
	/* Alice's names do not exist for bob: GET and DELETE are 404, and her rows stay. */
	bad("GET", "/v1/settings/secrets/gh", b, NULL, 404, "not_found");
	bad("DELETE", "/v1/settings/secrets/gh", b, NULL, 404, "not_found");
	bad("DELETE", "/v1/settings/mcp/fs", b, NULL, 404, "not_found");
	bad("DELETE", "/v1/settings/plugins/review", b, NULL, 404, "not_found");
	bad("DELETE", "/v1/settings/ai-providers/main", b, NULL, 404, "not_found");
	bad("GET", "/v1/settings/ai-providers/main", b, NULL, 404, "not_found");
	json_t *o = stored("settings/alice/secrets/gh");
	assert_non_null(o);
	json_decref(o);
	/* Bob writing the same name makes his own row, not a change to alice's. */
	expect_ok("PUT", "/v1/settings/secrets/gh", b, "{\"value\":\"bobs\"}", 201);
	o = stored("settings/bob/secrets/gh");
	assert_non_null(o);
	json_decref(o);
	o = expect("GET", "/v1/settings/secrets", tok_alice, NULL, 200);
	assert_int_equal(json_array_size(o), 2);
	json_decref(o);
	/* Alice's user record is hers alone. */
	expect_ok("PUT", "/v1/settings/user", tok_alice, "{\"model\":\"alice-model\"}", 201);
	o = expect("GET", "/v1/settings/user", b, NULL, 200);
	assert_false(contains(o, "alice-model"));
	json_decref(o);
	expect_ok("DELETE", "/v1/settings/secrets/gh", b, NULL, 204);
	o = stored("settings/alice/secrets/gh");
	assert_non_null(o);
	json_decref(o);
	/* Settings are per user: the admin token and no token are refused. */
	bad("GET", "/v1/settings/mcp", D.admin_token, NULL, 403, "forbidden");
	bad("PUT", "/v1/settings/mcp/x", D.admin_token, "{\"command\":\"x\"}", 403, "forbidden");
	bad("GET", "/v1/settings/mcp", NULL, NULL, 401, "unauthorized");
	bad("PUT", "/v1/settings/mcp/x", "cx_bogus", "{\"command\":\"x\"}", 401, "unauthorized");
}

/* ---- bad input: each a 4xx JSON error, and nothing stored ---- */

struct bad_case {
	const char *method, *path, *body;
	int status;
	const char *code;
};

static void run_cases(const struct bad_case *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bad(c[i].method, c[i].path, tok_alice, c[i].body, c[i].status, c[i].code);
}

static void test_bad_routes_and_names(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
	    {"GET", "/v1/settings/", NULL, 404, "not_found"},
	    {"GET", "/v1/settings/nothing", NULL, 404, "not_found"},
	    {"GET", "/v1/settings/mcpx", NULL, 404, "not_found"},
	    {"GET", "/v1/settings/user/x", NULL, 404, "not_found"},
	    {"PUT", "/v1/settings/users", "{}", 404, "not_found"},
	    {"POST", "/v1/settings/mcp/x", "{\"command\":\"x\"}", 405, "method_not_allowed"},
	    {"PATCH", "/v1/settings/secrets/x", "{\"value\":\"x\"}", 405, "method_not_allowed"},
	    {"PUT", "/v1/settings/mcp", "{\"command\":\"x\"}", 405, "method_not_allowed"},
	    {"DELETE", "/v1/settings/secrets", NULL, 405, "method_not_allowed"},
	    {"DELETE", "/v1/settings/user", NULL, 405, "method_not_allowed"},
	    {"POST", "/v1/settings/user", "{}", 405, "method_not_allowed"},
	    {"PUT", "/v1/settings/mcp/../x", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/a/b", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/..", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/.", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/.hidden", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/-x", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/a b", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/a%2fb", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/mcp/\xc3\xa9", "{\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/secrets/../x", "{\"value\":\"x\"}", 400, "bad_request"},
	    {"PUT", "/v1/settings/plugins/a/b", "{}", 400, "bad_request"},
	    {"PUT", "/v1/settings/ai-providers/../x",
	     "{\"kind\":\"anthropic\",\"base_url\":\"https://a\",\"api_key\":\"k\"}", 400,
	     "bad_request"},
	    {"GET", "/v1/settings/mcp/../x", NULL, 400, "bad_request"},
	    {"DELETE", "/v1/settings/secrets/a/b", NULL, 400, "bad_request"},
	    {"PUT",
	     "/v1/settings/mcp/"
	     "a1234567890123456789012345678901234567890123456789012345678901234",
	     "{\"command\":\"x\"}", 400, "bad_request"},
	};
	run_cases(cases, sizeof cases / sizeof cases[0]);
	/* 64 chars is fine. */
	expect_ok(
	    "PUT",
	    "/v1/settings/mcp/a123456789012345678901234567890123456789012345678901234567890123",
	    tok_alice, "{\"command\":\"x\"}", 201);
	expect_ok(
	    "DELETE",
	    "/v1/settings/mcp/a123456789012345678901234567890123456789012345678901234567890123",
	    tok_alice, NULL, 204);
}

static void test_bad_bodies(void **state)
{
	(void)state;
	const char *paths[] = {
	    "/v1/settings/mcp/fs",	   "/v1/settings/secrets/gh",	     "/v1/settings/user",
	    "/v1/settings/plugins/review", "/v1/settings/ai-providers/main", NULL};
	for (const char **p = paths; *p; p++) {
		bad("PUT", *p, tok_alice, "{", 400, "bad_json");
		bad("PUT", *p, tok_alice, "{\"a\":1,}", 400, "bad_json");
		bad("PUT", *p, tok_alice, "not json", 400, "bad_json");
		bad("PUT", *p, tok_alice, NULL, 400, "bad_request");
		bad("PUT", *p, tok_alice, "", 400, "bad_request");
		bad("PUT", *p, tok_alice, "[]", 400, "bad_request");
		bad("PUT", *p, tok_alice, "\"s\"", 400, "bad_request");
		bad("PUT", *p, tok_alice, "null", 400, "bad_request");
		bad("PUT", *p, tok_alice, "{\"bogus\":1}", 400, "bad_request");
		bad("PUT", *p, tok_alice, "{\"x\":\"\\u0000\"}", 400, "bad_json");
	}
}

static void test_bad_mcp(void **state)
{
	(void)state;
	const char *P = "/v1/settings/mcp/fs"; /* exists: a refused replace leaves it as it was */
	static const struct bad_case cases[] = {
	    {"PUT", NULL, "{\"command\":\"a\",\"command\":\"b\"}", 400, "bad_json"},
	    {"PUT", NULL, "{}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"stdio\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"tcp\",\"url\":\"http://a\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":5,\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":null,\"command\":\"x\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":5}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":[\"x\"]}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"args\":\"-y\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"args\":[1]}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"args\":[\"a\",null]}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"env\":[]}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"env\":{\"A\":1}}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"env\":{\"1A\":\"v\"}}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"env\":{\"A-B\":\"v\"}}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"env\":{\"\":\"v\"}}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"bogus\":1}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"url\":\"http://a\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"x\",\"headers\":{}}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":5}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"ftp://a\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"http://\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"https:///path\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"https://a b\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"example.com\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"https://a\",\"headers\":[]}", 400,
	     "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"https://a\",\"headers\":{\"X\":1}}", 400,
	     "bad_request"},
	    {"PUT", NULL,
	     "{\"type\":\"http\",\"url\":\"https://a\",\"headers\":{\"X\":\"a\\r\\nB: c\"}}", 400,
	     "bad_request"},
	    {"PUT", NULL,
	     "{\"type\":\"http\",\"url\":\"https://a\",\"headers\":{\"Bad Name\":\"x\"}}", 400,
	     "bad_request"},
	    {"PUT", NULL, "{\"type\":\"sse\",\"url\":\"https://a\",\"command\":\"x\"}", 400,
	     "bad_request"},
	    {"PUT", NULL, "{\"type\":\"http\",\"url\":\"https://a\",\"package\":\"a@1.0.0\"}", 400,
	     "bad_request"},
	    {"PUT", NULL, "{\"package\":\"foo\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"foo@^1.0.0\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"Foo@1.0.0\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"foo@latest\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"foo@1.0\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"@scope@1.0.0\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":\"\"}", 400, "bad_request"},
	    {"PUT", NULL, "{\"package\":5}", 400, "bad_request"},
	    {"PUT", NULL, "{\"command\":\"npx\",\"package\":\"foo@1.x\"}", 400, "bad_request"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		bad("PUT", P, tok_alice, cases[i].body, cases[i].status, cases[i].code);
	bad("PUT", "/v1/settings/mcp/new", tok_alice, "{\"package\":\"foo\"}", 400, "bad_request");

	/* Sizes: SET_ARGS_MAX entries pass, one more is 413; a string over its limit is 413. */
	char *args = NULL, *env = NULL, *hdr = NULL;
	size_t al, el, hl;
	for (int extra = 0; extra <= 1; extra++) {
		FILE *fa = open_memstream(&args, &al), *fe = open_memstream(&env, &el),
		     *fh = open_memstream(&hdr, &hl);
		fputs("{\"command\":\"x\",\"args\":[", fa);
		fputs("{\"command\":\"x\",\"env\":{", fe);
		fputs("{\"type\":\"http\",\"url\":\"https://a\",\"headers\":{", fh);
		for (int i = 0; i < SET_ARGS_MAX + extra; i++) {
			fprintf(fa, "%s\"a%d\"", i ? "," : "", i);
			fprintf(fe, "%s\"V%d\":\"x\"", i ? "," : "", i);
			fprintf(fh, "%s\"H%d\":\"x\"", i ? "," : "", i);
		}
		fputs("]}", fa);
		fputs("}}", fe);
		fputs("}}", fh);
		fclose(fa);
		fclose(fe);
		fclose(fh);
		if (!extra) {
			expect_ok("PUT", "/v1/settings/mcp/many", tok_alice, args, 201);
			expect_ok("PUT", "/v1/settings/mcp/many", tok_alice, env, 200);
			expect_ok("PUT", "/v1/settings/mcp/many", tok_alice, hdr, 200);
			expect_ok("DELETE", "/v1/settings/mcp/many", tok_alice, NULL, 204);
		} else {
			bad("PUT", P, tok_alice, args, 413, "too_large");
			bad("PUT", P, tok_alice, env, 413, "too_large");
			bad("PUT", P, tok_alice, hdr, 413, "too_large");
		}
		free(args);
		free(env);
		free(hdr);
	}
	char *big = big_body("{\"command\":\"", 20000, "\"}");
	bad("PUT", P, tok_alice, big, 413, "too_large");
	free(big);
	big = big_body("{\"command\":\"x\",\"args\":[\"", 20000, "\"]}");
	bad("PUT", P, tok_alice, big, 413, "too_large");
	free(big);
}

static void test_bad_secrets(void **state)
{
	(void)state;
	const char *P = "/v1/settings/secrets/gh";
	static const char *const bodies[] = {
	    "{}",
	    "{\"value\":5}",
	    "{\"value\":null}",
	    "{\"value\":[\"x\"]}",
	    "{\"env\":\"X\"}",
	    "{\"value\":\"x\",\"bogus\":1}",
	    "{\"value\":\"x\",\"sealed\":\"cx1:\"}",
	    "{\"value\":\"x\",\"env\":5}",
	    "{\"value\":\"x\",\"env\":\"PATH\"}",
	    "{\"value\":\"x\",\"env\":\"HOME\"}",
	    "{\"value\":\"x\",\"env\":\"ANTHROPIC_API_KEY\"}",
	    "{\"value\":\"x\",\"env\":\"ANTHROPIC_BASE_URL\"}",
	    "{\"value\":\"x\",\"env\":\"1X\"}",
	    "{\"value\":\"x\",\"env\":\"A-B\"}",
	    "{\"value\":\"x\",\"env\":\"A B\"}",
	    "{\"value\":\"x\",\"env\":\"\"}",
	    "{\"value\":\"x\",\"file\":5}",
	    "{\"value\":\"x\",\"file\":\"/etc/passwd\"}",
	    "{\"value\":\"x\",\"file\":\"~/../x\"}",
	    "{\"value\":\"x\",\"file\":\"~/a/../../x\"}",
	    "{\"value\":\"x\",\"file\":\"~/./x\"}",
	    "{\"value\":\"x\",\"file\":\"~/.claude.json\"}",
	    "{\"value\":\"x\",\"file\":\"~/.claude\"}",
	    "{\"value\":\"x\",\"file\":\"~/.claude/settings.json\"}",
	    "{\"value\":\"x\",\"file\":\"~/.claude/agents/a.md\"}",
	    "{\"value\":\"x\",\"file\":\"~/\"}",
	    "{\"value\":\"x\",\"file\":\"~\"}",
	    "{\"value\":\"x\",\"file\":\"~//x\"}",
	    "{\"value\":\"x\",\"file\":\"~/a/\"}",
	    "{\"value\":\"x\",\"file\":\"~/a b\"}",
	    "{\"value\":\"x\",\"file\":\"~/a\\\\b\"}",
	    "{\"value\":\"x\",\"file\":\"~user/x\"}",
	    "{\"value\":\"x\",\"file\":\"x\"}",
	    "{\"value\":\"x\",\"file\":\"$HOME/x\"}",
	};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
		bad("PUT", P, tok_alice, bodies[i], 400, "bad_request");
	static const char *const brokers[] = {
	    "5",
	    "{}",
	    "{\"hosts\":[]}",
	    "{\"hosts\":\"api.github.com\"}",
	    "{\"hosts\":[5]}",
	    "{\"hosts\":[\"a b.com\"]}",
	    "{\"hosts\":[\"*.com\"]}",
	    "{\"hosts\":[\"*\"]}",
	    "{\"hosts\":[\"-a.com\"]}",
	    "{\"hosts\":[\"a-.com\"]}",
	    "{\"hosts\":[\"a..com\"]}",
	    "{\"hosts\":[\".a.com\"]}",
	    "{\"hosts\":[\"a.com.\"]}",
	    "{\"hosts\":[\"a.com:443\"]}",
	    "{\"hosts\":[\"a.*.com\"]}",
	    "{\"hosts\":[\"https://a.com\"]}",
	    "{\"hosts\":[\"a.com\"],\"x\":1}",
	};
	char body[600];
	for (size_t i = 0; i < sizeof brokers / sizeof brokers[0]; i++) {
		snprintf(body, sizeof body, "{\"value\":\"long_enough_value\",\"broker\":%s}",
			 brokers[i]);
		bad("PUT", P, tok_alice, body, 400, "bad_request");
	}
	/* A brokered value goes into headers: 8+ bytes, no control characters. */
	bad("PUT", P, tok_alice, "{\"value\":\"short\",\"broker\":{\"hosts\":[\"a.com\"]}}", 400,
	    "bad_request");
	bad("PUT", P, tok_alice,
	    "{\"value\":\"long_enough\\r\\nX-Evil: 1\",\"broker\":{\"hosts\":[\"a.com\"]}}", 400,
	    "bad_request");
	/* 32 hosts pass, 33 do not; a 253-char host passes, 254 does not. */
	char *hb = malloc(33 * 16 + 200);
	int n = sprintf(hb, "{\"value\":\"long_enough_value\",\"broker\":{\"hosts\":[");
	for (int i = 0; i < 33; i++)
		n += sprintf(hb + n, "%s\"h%d.example.com\"", i ? "," : "", i);
	strcpy(hb + n, "]}}");
	bad("PUT", P, tok_alice, hb, 400, "bad_request");
	char *cut = strstr(hb, ",\"h32.");
	strcpy(cut, "]}}");
	expect_ok("PUT", "/v1/settings/secrets/hosts32", tok_alice, hb, 201);
	expect_ok("DELETE", "/v1/settings/secrets/hosts32", tok_alice, NULL, 204);
	free(hb);
	char host[300];
	for (int len = 253; len <= 254; len++) {
		/* labels of 63 chars and dots, ending ".com" */
		int m = 0;
		while (m < len - 4) {
			int l = len - 4 - m > 63 ? 63 : len - 4 - m;
			memset(host + m, 'a', (size_t)l);
			m += l;
			if (m < len - 4) {
				host[m - 1] = '.';
			}
		}
		memcpy(host + m, ".com", 5);
		assert_int_equal(strlen(host), (size_t)len);
		snprintf(body, sizeof body,
			 "{\"value\":\"long_enough_value\",\"broker\":{\"hosts\":[\"%s\"]}}", host);
		if (len == 253) {
			expect_ok("PUT", "/v1/settings/secrets/longhost", tok_alice, body, 201);
			expect_ok("DELETE", "/v1/settings/secrets/longhost", tok_alice, NULL, 204);
		} else {
			bad("PUT", P, tok_alice, body, 400, "bad_request");
		}
	}
	/* A 255-char file path passes, 256 does not. */
	char *ok = big_body("{\"value\":\"x\",\"file\":\"~/", 253, "\"}");
	expect_ok("PUT", "/v1/settings/secrets/longpath", tok_alice, ok, 201);
	expect_ok("DELETE", "/v1/settings/secrets/longpath", tok_alice, NULL, 204);
	free(ok);
	char *b = big_body("{\"value\":\"x\",\"file\":\"~/", 254, "\"}");
	bad("PUT", P, tok_alice, b, 400, "bad_request");
	free(b);
	/* SET_SECRET_MAX bytes pass, one more is 413. */
	b = big_body("{\"value\":\"", SET_SECRET_MAX, "\"}");
	expect_ok("PUT", "/v1/settings/secrets/big", tok_alice, b, 201);
	expect_ok("DELETE", "/v1/settings/secrets/big", tok_alice, NULL, 204);
	free(b);
	b = big_body("{\"value\":\"", SET_SECRET_MAX + 1, "\"}");
	bad("PUT", P, tok_alice, b, 413, "too_large");
	free(b);
}

static void test_bad_user(void **state)
{
	(void)state;
	const char *P = "/v1/settings/user";
	static const char *const bodies[] = {
	    "{\"theme\":\"dark\"}",
	    "{\"claude_md\":5}",
	    "{\"claude_md\":null}",
	    "{\"model\":5}",
	    "{\"model\":\"\"}",
	    "{\"model\":\"bad model\"}",
	    "{\"model\":\"a/b\"}",
	    "{\"env\":\"A=B\"}",
	    "{\"env\":{\"A\":5}}",
	    "{\"env\":{\"PATH\":\"/x\"}}",
	    "{\"env\":{\"HOME\":\"/x\"}}",
	    "{\"env\":{\"ANTHROPIC_API_KEY\":\"x\"}}",
	    "{\"env\":{\"9\":\"x\"}}",
	};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
		bad("PUT", P, tok_alice, bodies[i], 400, "bad_request");
	char *b = big_body("{\"model\":\"", 128, "\"}");
	bad("PUT", P, tok_alice, b, 400, "bad_request");
	free(b);
	b = big_body("{\"claude_md\":\"", SET_TEXT_MAX + 1, "\"}");
	bad("PUT", P, tok_alice, b, 413, "too_large");
	free(b);
	b = big_body("{\"env\":{\"A\":\"", 20000, "\"}}");
	bad("PUT", P, tok_alice, b, 413, "too_large");
	free(b);
}

static void test_bad_plugins(void **state)
{
	(void)state;
	const char *P = "/v1/settings/plugins/review";
	static const char *const bodies[] = {
	    "{\"skills\":{}}",
	    "{\"agents\":[]}",
	    "{\"agents\":\"a.md\"}",
	    "{\"agents\":{\"../x.md\":\"x\"}}",
	    "{\"agents\":{\"x.txt\":\"x\"}}",
	    "{\"agents\":{\"x\":\"x\"}}",
	    "{\"agents\":{\"a/b.md\":\"x\"}}",
	    "{\"agents\":{\".md\":\"x\"}}",
	    "{\"agents\":{\".x.md\":\"x\"}}",
	    "{\"agents\":{\"x..md\":\"x\"}}",
	    "{\"agents\":{\"a b.md\":\"x\"}}",
	    "{\"agents\":{\"x.md\":5}}",
	    "{\"agents\":{\"x.md\":null}}",
	    "{\"commands\":{\"ok.md\":\"x\"},\"rules\":{\"../../etc/passwd.md\":\"x\"}}",
	};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
		bad("PUT", P, tok_alice, bodies[i], 400, "bad_request");
	char *b = big_body("{\"agents\":{\"x.md\":\"", SET_TEXT_MAX + 1, "\"}}");
	bad("PUT", P, tok_alice, b, 413, "too_large");
	free(b);
	/* SET_MAX_PLUGIN_FILES over all three kinds pass; one more is 413. */
	for (int extra = 0; extra <= 1; extra++) {
		char *body = NULL;
		size_t len;
		FILE *f = open_memstream(&body, &len);
		const char *dirs[] = {"agents", "commands", "rules"};
		int total = SET_MAX_PLUGIN_FILES + extra, k = 0;
		fputs("{", f);
		for (int d = 0; d < 3; d++) {
			fprintf(f, "%s\"%s\":{", d ? "," : "", dirs[d]);
			int here = d < 2 ? total / 3 : total - 2 * (total / 3);
			for (int i = 0; i < here; i++, k++)
				fprintf(f, "%s\"f%d.md\":\"x\"", i ? "," : "", k);
			fputs("}", f);
		}
		fputs("}", f);
		fclose(f);
		if (!extra)
			expect_ok("PUT", "/v1/settings/plugins/full", tok_alice, body, 201);
		else
			bad("PUT", P, tok_alice, body, 413, "too_large");
		free(body);
	}
	expect_ok("DELETE", "/v1/settings/plugins/full", tok_alice, NULL, 204);
}

static void test_bad_providers(void **state)
{
	(void)state;
	const char *P = "/v1/settings/ai-providers/main";
#define GOOD_URL "\"base_url\":\"https://a\""
	static const char *const bodies[] = {
	    "{\"base_url\":\"https://a\",\"api_key\":\"k\"}",
	    "{\"kind\":\"openai\"," GOOD_URL ",\"api_key\":\"k\"}",
	    "{\"kind\":5," GOOD_URL ",\"api_key\":\"k\"}",
	    "{\"kind\":\"anthropic\",\"api_key\":\"k\"}",
	    "{\"kind\":\"anthropic\",\"base_url\":\"ftp://a\",\"api_key\":\"k\"}",
	    "{\"kind\":\"anthropic\",\"base_url\":5,\"api_key\":\"k\"}",
	    "{\"kind\":\"anthropic\"," GOOD_URL "}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":5}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":\"\"}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":\"k\",\"model\":\"a b\"}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":\"k\",\"model\":7}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":\"k\",\"sealed_key\":\"cx1:x\"}",
	    "{\"kind\":\"anthropic\"," GOOD_URL ",\"api_key\":\"k\",\"has_key\":true}",
	};
#undef GOOD_URL
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
		bad("PUT", P, tok_alice, bodies[i], 400, "bad_request");
	char *b = big_body("{\"kind\":\"anthropic\",\"base_url\":\"https://a\",\"api_key\":\"",
			   SET_SECRET_MAX + 1, "\"}");
	bad("PUT", P, tok_alice, b, 413, "too_large");
	free(b);
}

/* ---- count limits (carol starts empty) ---- */

static void fill_to_limit(const char *kind, unsigned max, const char *body)
{
	char path[160];
	for (unsigned i = 0; i < max; i++) {
		snprintf(path, sizeof path, "/v1/settings/%s/n%u", kind, i);
		expect_ok("PUT", path, tok_carol, body, 201);
	}
	snprintf(path, sizeof path, "/v1/settings/%s/one-more", kind);
	bad("PUT", path, tok_carol, body, 409, "limit");
	/* Replacing an existing name is not a new row. */
	snprintf(path, sizeof path, "/v1/settings/%s/n0", kind);
	expect_ok("PUT", path, tok_carol, body, 200);
	/* Free one, and there is room again. */
	expect_ok("DELETE", path, tok_carol, NULL, 204);
	snprintf(path, sizeof path, "/v1/settings/%s/one-more", kind);
	expect_ok("PUT", path, tok_carol, body, 201);
	snprintf(path, sizeof path, "/v1/settings/%s", kind);
	json_t *o = expect("GET", path, tok_carol, NULL, 200);
	assert_int_eq_msg(json_array_size(o), max, kind);
	json_decref(o);
}

static void test_count_limits(void **state)
{
	(void)state;
	fill_to_limit("mcp", SET_MAX_MCP, "{\"command\":\"x\"}");
	fill_to_limit("secrets", SET_MAX_SECRETS, "{\"value\":\"v\"}");
	fill_to_limit("plugins", SET_MAX_PLUGINS, "{}");
	fill_to_limit("ai-providers", SET_MAX_PROVIDERS,
		      "{\"kind\":\"anthropic\",\"base_url\":\"https://a\",\"api_key\":\"k\"}");
	/* Another user's rows do not count against carol, nor hers against bob. */
	expect_ok("PUT", "/v1/settings/ai-providers/bobs", tok_bob,
		  "{\"kind\":\"anthropic\",\"base_url\":\"https://a\",\"api_key\":\"k\"}", 201);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mcp),		 cmocka_unit_test(test_secrets),
	    cmocka_unit_test(test_user),	 cmocka_unit_test(test_plugins),
	    cmocka_unit_test(test_providers),	 cmocka_unit_test(test_no_plaintext_on_disk),
	    cmocka_unit_test(test_isolation),	 cmocka_unit_test(test_bad_routes_and_names),
	    cmocka_unit_test(test_bad_bodies),	 cmocka_unit_test(test_bad_mcp),
	    cmocka_unit_test(test_bad_secrets),	 cmocka_unit_test(test_bad_user),
	    cmocka_unit_test(test_bad_plugins),	 cmocka_unit_test(test_bad_providers),
	    cmocka_unit_test(test_count_limits), cmocka_unit_test(test_broker_secrets),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
