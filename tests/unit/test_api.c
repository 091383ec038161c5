/* Unit tests: auth (tokens, hashing, names, admin token file), the API's JSON
 * handling (bad input -> 4xx JSON, nothing stored half-way) and config parsing. */
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
#include "edge.h"
#include "lifecycle.h"
#include "unit_util.h"

static char tmpdir[4096];


static int setup(void **state)
{
	(void)state;
	if (unit_tmpdir("api", tmpdir, sizeof tmpdir) < 0)
		return -1;
	char db[4200];
	snprintf(db, sizeof db, "%s/t.db", tmpdir);
	cx_err err = CX_ERR_INIT;
	memset(&D, 0, sizeof D);
	config_defaults(&D.cfg);
	if (store_open(&D.st, "sqlite", db, &err) < 0)
		return -1;
	unsetenv("CORTEX_ADMIN_TOKEN");
	if (auth_admin_init(tmpdir, D.admin_token, &err) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	store_close(D.st);
	D.st = NULL;
	return 0;
}


/* The error code of a 4xx body, checking the body's shape on the way. */
static const char *err_code(struct api_resp *r, json_t **keep)
{
	json_t *o = json_loads(r->body ? r->body : "", 0, NULL);
	*keep = o;
	json_t *e = json_object_get(o, "error");
	if (!json_is_string(json_object_get(e, "message")))
		fail_msg("error body lacks error.message: %s", r->body ? r->body : "(none)");
	return json_string_value(json_object_get(e, "code"));
}

static void expect_error(const char *method, const char *path, const char *token, const char *body,
			 int status, const char *code)
{
	struct api_resp r = unit_call(method, path, token, body);
	if (r.status != status)
		fail_msg("%s %s body=%s: expected %d, got %d (%s)", method, path, body ? body : "-", status,
			 r.status, r.body ? r.body : "");
	json_t *o;
	const char *c = err_code(&r, &o);
	if (!c || strcmp(c, code))
		fail_msg("%s %s: expected code %s, got %s", method, path, code, c ? c : "(none)");
	json_decref(o);
	free(r.body);
}

static void test_token_shape_and_hash(void **state)
{
	(void)state;
	char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1], h1[AUTH_HASH_HEX], h2[AUTH_HASH_HEX];
	auth_token_new(a);
	auth_token_new(b);
	assert_int_eq_msg(strlen(a), AUTH_TOKEN_LEN, "token length");
	assert_true(!strncmp(a, "cx_", 3));
	assert_string_not_equal(a, b);
	auth_token_hash(a, h1);
	auth_token_hash(a, h2);
	assert_string_equal(h1, h2);
	auth_token_hash(b, h2);
	assert_string_not_equal(h1, h2);
	/* SHA-256 of "abc" — the hash is the standard one, not something home-made. */
	auth_token_hash("abc", h1);
	assert_string_equal(h1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_names(void **state)
{
	(void)state;
	assert_true(auth_valid_name("alice"));
	assert_true(auth_valid_name("a-1_b"));
	assert_false(auth_valid_name(""));
	assert_false(auth_valid_name("-a"));
	assert_false(auth_valid_name("Alice"));
	assert_false(auth_valid_name("../x"));
	assert_false(auth_valid_name("a/b"));
	char longname[80];
	memset(longname, 'a', 65);
	longname[65] = '\0';
	assert_false(auth_valid_name(longname));
}

static void test_admin_token_file(void **state)
{
	(void)state;
	char path[4200], again[256];
	snprintf(path, sizeof path, "%s/admin.token", tmpdir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_eq_msg(st.st_mode & 0777, 0600, "admin.token mode");
	cx_err err = CX_ERR_INIT;
	assert_int_equal(auth_admin_init(tmpdir, again, &err), 0); /* re-read, not regenerated */
	assert_string_equal(again, D.admin_token);
	assert_true(auth_is_admin(D.admin_token));
	assert_false(auth_is_admin("cx_nope"));
	assert_false(auth_is_admin(NULL));
}

static void test_user_create_and_lookup(void **state)
{
	(void)state;
	char body[64];
	snprintf(body, sizeof body, "{\"name\":\"alice\"}");
	struct api_resp r = unit_call("POST", "/v1/users", D.admin_token, body);
	assert_int_eq_msg(r.status, 201, "create alice");
	json_t *o = json_loads(r.body, 0, NULL);
	const char *tok = json_string_value(json_object_get(o, "token"));
	assert_non_null(tok);
	char user[80];
	assert_int_eq_msg(api_auth(&D, tok, user, sizeof user), 0, "user token resolves");
	assert_string_equal(user, "alice");
	assert_int_eq_msg(api_auth(&D, D.admin_token, user, sizeof user), 1, "admin resolves");
	assert_int_eq_msg(api_auth(&D, "cx_0000", user, sizeof user), -1, "junk token");
	/* The token itself is never stored: only its hash. */
	store_kv *kv;
	size_t n;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, "", 0, &kv, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		if (strstr(kv[i].key, tok) || strstr(kv[i].val, tok))
			fail_msg("token stored in clear under %s", kv[i].key);
	store_kv_free(kv, n);
	expect_error("POST", "/v1/users", D.admin_token, body, 409, "exists");
	json_decref(o);
	free(r.body);
}

static void test_bad_input(void **state)
{
	(void)state;
	const char *adm = D.admin_token;
	expect_error("POST", "/v1/users", NULL, "{\"name\":\"x\"}", 401, "unauthorized");
	expect_error("POST", "/v1/users", "wrong", "{\"name\":\"x\"}", 401, "unauthorized");
	expect_error("POST", "/v1/users", adm, "{\"name\":", 400, "bad_json");
	expect_error("POST", "/v1/users", adm, "[1,2]", 400, "bad_request");
	expect_error("POST", "/v1/users", adm, "{\"name\":5}", 400, "bad_request");
	expect_error("POST", "/v1/users", adm, "{\"name\":\"x\",\"name\":\"y\"}", 400, "bad_json");
	expect_error("POST", "/v1/users", adm, "{\"name\":\"x\",\"admin\":true}", 400, "bad_request");
	expect_error("POST", "/v1/users", adm, NULL, 400, "bad_request");
	expect_error("GET", "/v1/users", adm, NULL, 405, "method_not_allowed");
	expect_error("GET", "/v1/nothing", adm, NULL, 404, "not_found");
	expect_error("GET", "/v1/sessions", adm, NULL, 403, "forbidden");
	expect_error("GET", "/metrics", "cx_nobody", NULL, 401, "unauthorized");
	/* Nothing was stored by any of the rejected requests. */
	store_kv *kv;
	size_t n;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(store_list(D.st, "users/", 0, &kv, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i].key, "users/x"))
			fail_msg("rejected request stored users/x");
	store_kv_free(kv, n);
}

static void test_sessions_of_other_users_are_404(void **state)
{
	(void)state;
	struct api_resp r = unit_call("POST", "/v1/users", D.admin_token, "{\"name\":\"bob\"}");
	json_t *o = json_loads(r.body, 0, NULL);
	char bob[AUTH_TOKEN_LEN + 1];
	snprintf(bob, sizeof bob, "%s", json_string_value(json_object_get(o, "token")));
	json_decref(o);
	free(r.body);
	expect_error("GET", "/v1/sessions/s_doesnotexist", bob, NULL, 404, "not_found");
	expect_error("GET", "/v1/sessions/s_x/messages", bob, NULL, 404, "not_found");
	expect_error("POST", "/v1/sessions", bob, "{\"surface\":\"tv\"}", 400, "bad_request");
	expect_error("POST", "/v1/sessions", bob, "{\"idle_sleep_s\":-1}", 400, "bad_request");
	expect_error("POST", "/v1/sessions", bob, "{\"bogus\":1}", 400, "bad_request");
	r = unit_call("GET", "/v1/sessions", bob, NULL);
	assert_int_eq_msg(r.status, 200, "list");
	assert_string_equal(r.body, "[]");
	free(r.body);
}

/* GET /v1/openapi.json: no token, the built-in spec, its ETag; 304 when
 * If-None-Match names it (alone or in a list), 200 for another tag. */
static void test_openapi(void **state)
{
	(void)state;
	struct api_resp r = unit_call("GET", "/v1/openapi.json", NULL, NULL);
	assert_int_eq_msg(r.status, 200, "the spec without a token");
	json_t *o = json_loads(r.body, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "openapi")), "3.1.0");
	assert_non_null(json_object_get(json_object_get(o, "paths"), "/v1/openapi.json"));
	json_decref(o);
	assert_non_null(r.etag);
	assert_int_equal(strlen(r.etag), 34);
	char list[128];
	snprintf(list, sizeof list, "\"x\", W/%s", r.etag);
	const char *tags[] = {r.etag, list, "*", "\"other\"", "x"};
	const int want[] = {304, 304, 304, 200, 200};
	for (int i = 0; i < 5; i++) {
		struct api_req q = {.method = "GET", .path = "/v1/openapi.json", .if_none_match = tags[i]};
		struct api_resp x = {0};
		api_handle(&D, &q, &x);
		assert_int_eq_msg(x.status, want[i], tags[i]);
		assert_true(x.status == 304 ? !x.body : x.body && !strcmp(x.body, r.body));
		assert_string_equal(x.etag, r.etag);
		free(x.body);
	}
	free(r.body);
	expect_error("POST", "/v1/openapi.json", NULL, "{}", 405, "method_not_allowed");
}

static void test_config(void **state)
{
	(void)state;
	config c;
	config_defaults(&c);
	cx_err err = CX_ERR_INIT;
	char *argv1[] = {"cortexd", "--listen", "0.0.0.0:0", "--log-format", "json", NULL};
	assert_int_equal(config_parse_args(&c, 5, argv1, &err), 0);
	assert_string_equal(c.listen_host, "0.0.0.0");
	assert_int_equal(c.listen_port, 0);
	assert_int_equal(c.log_json, 1);
	char *argv2[] = {"cortexd", "--listen", "nohostport", NULL};
	assert_int_equal(config_parse_args(&c, 3, argv2, &err), -1);
	assert_non_null(strstr(err.msg, "HOST:PORT"));
	char *argv3[] = {"cortexd", "--store", "redis", NULL};
	assert_int_equal(config_parse_args(&c, 3, argv3, &err), -1);
	char path[4200];
	snprintf(path, sizeof path, "%s/c.json", tmpdir);
	FILE *f = fopen(path, "w");
	fputs("{\"listen\":\"127.0.0.1:9999\",\"sandbox\":{\"uid\":1234,\"memory_max_mb\":64},"
	      "\"provider\":{\"base_url\":\"http://x\"}}",
	      f);
	fclose(f);
	config_defaults(&c);
	assert_int_equal(config_load_file(&c, path, &err), 0);
	assert_int_equal(c.listen_port, 9999);
	assert_int_equal(c.sandbox_uid, 1234);
	assert_true(c.sandbox_memory_max == 64ull << 20);
	assert_string_equal(c.provider_base_url, "http://x");
	f = fopen(path, "w");
	fputs("{\"sandbox\":{\"uid\":\"root\"}}", f);
	fclose(f);
	assert_int_equal(config_load_file(&c, path, &err), -1);
	assert_non_null(strstr(err.msg, "uid"));

	/* The event loop: epoll by default, one of four names, nothing else. */
	const char *loops[][2] = {{"{}", "epoll"},
				  {"{\"http\":{\"event_loop\":\"poll\"}}", "poll"},
				  {"{\"http\":{\"event_loop\":\"epoll\"}}", "epoll"},
				  {"{\"http\":{\"event_loop\":\"libuv\"}}", "libuv"},
				  {"{\"http\":{\"event_loop\":\"select\"}}", NULL},
				  {"{\"http\":{\"event_loop\":1}}", NULL}};
	for (size_t i = 0; i < sizeof loops / sizeof loops[0]; i++) {
		f = fopen(path, "w");
		fputs(loops[i][0], f);
		fclose(f);
		config_defaults(&c);
		int rc = config_load_file(&c, path, &err);
		if (!loops[i][1]) {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err.msg, "http.event_loop"));
		} else {
			assert_int_equal(rc, 0);
			assert_string_equal(c.http_event_loop, loops[i][1]);
		}
	}

	/* Own network namespace: by default; not without the gateway (the agent
	 * would reach no model): off by default then, an error when asked for. */
	const char *net[][2] = {{"{}", "1"},
				{"{\"sandbox\":{\"net_isolated\":false}}", "0"},
				{"{\"gateway\":{\"enabled\":false}}", "0"},
				{"{\"gateway\":{\"enabled\":false},\"sandbox\":{\"net_isolated\":true}}", "err"},
				{"{\"sandbox\":{\"net_isolated\":1}}", "err"}};
	for (size_t i = 0; i < sizeof net / sizeof net[0]; i++) {
		f = fopen(path, "w");
		fputs(net[i][0], f);
		fclose(f);
		config_defaults(&c);
		int rc = config_load_file(&c, path, &err);
		if (!strcmp(net[i][1], "err")) {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err.msg, "net_isolated"));
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(c.sandbox_net_isolated, net[i][1][0] == '1');
		}
	}

	/* The gateway's in-flight pool: in all, and one user's share of it. */
	const struct {
		const char *json;
		int ok;
		unsigned max, per_user, deadline, queued, qwait;
	} gw[] = {
	    {"{}", 1, 32, 8, 60, 256, 30000},
	    {"{\"gateway\":{\"max_inflight\":64,\"max_inflight_per_user\":16,"
	     "\"body_deadline_s\":5,\"max_queued\":0,\"queue_timeout_ms\":1500}}",
	     1, 64, 16, 5, 0, 1500},
	    {"{\"gateway\":{\"max_inflight\":4}}", 1, 4, 4, 60, 256, 30000}, /* the default share, clamped */
	    {"{\"gateway\":{\"max_inflight_per_user\":33}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"max_inflight\":0}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"max_inflight\":1025}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"max_inflight_per_user\":\"8\"}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"body_deadline_s\":0}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"max_queued\":4097}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"max_queued\":-1}}", 0, 0, 0, 0, 0, 0},
	    {"{\"gateway\":{\"queue_timeout_ms\":0}}", 0, 0, 0, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof gw / sizeof gw[0]; i++) {
		f = fopen(path, "w");
		fputs(gw[i].json, f);
		fclose(f);
		config_defaults(&c);
		int rc = config_load_file(&c, path, &err);
		if (!gw[i].ok) {
			assert_int_equal(rc, -1);
			assert_true(strstr(err.msg, "max_inflight") ||
				    strstr(err.msg, "body_deadline_s") ||
				    strstr(err.msg, "max_queued") || strstr(err.msg, "queue_timeout_ms"));
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(c.gateway_max_inflight, gw[i].max);
		assert_int_equal(c.gateway_max_inflight_per_user, gw[i].per_user);
		assert_int_equal(c.gateway_body_deadline_s, gw[i].deadline);
		assert_int_equal(c.gateway_max_queued, gw[i].queued);
		assert_int_equal(c.gateway_queue_timeout_ms, gw[i].qwait);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_shape_and_hash),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_admin_token_file),
		cmocka_unit_test(test_user_create_and_lookup),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_sessions_of_other_users_are_404),
		cmocka_unit_test(test_openapi),
		cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
