/* Unit tests: config assembly (settings rows -> files, env, packages, hashes)
 * and the cache's hit/miss/dirty/expired decision.  No daemon: assembly is a
 * pure function of the rows, a key and a package lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cconfig.h"
#include "secrets.h"
#include "unit_util.h"

static secrets_key K;
static char keyfile[4200];

static int setup(void **state)
{
	(void)state;
	char dir[4096];
	if (unit_tmpdir("cconfig", dir, sizeof dir) < 0)
		return -1;
	snprintf(keyfile, sizeof keyfile, "%s/master.key", dir);
	cx_err err = CX_ERR_INIT;
	if (secrets_key_load(&K, keyfile, 1, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	return 0;
}

/* A small row table built per test. */
struct rows {
	store_kv kv[32];
	size_t n;
};

static void row(struct rows *r, const char *key, const char *json)
{
	r->kv[r->n].key = strdup(key);
	r->kv[r->n].val = strdup(json);
	r->kv[r->n].len = strlen(json);
	r->n++;
}

static void secret_row(struct rows *r, const char *user, const char *name, const char *value,
		       const char *env, const char *file)
{
	char ad[128], key[256];
	snprintf(ad, sizeof ad, "secrets/%s", name);
	char *sealed = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, user, ad, value, strlen(value), &sealed, &err), 0);
	json_t *o = json_pack("{s:s}", "sealed", sealed);
	if (env)
		json_object_set_new(o, "env", json_string(env));
	if (file)
		json_object_set_new(o, "file", json_string(file));
	char *txt = json_dumps(o, JSON_COMPACT);
	snprintf(key, sizeof key, "settings/alice/secrets/%s", name);
	row(r, key, txt);
	free(txt);
	free(sealed);
	json_decref(o);
}

static void rows_free(struct rows *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->kv[i].key);
		free(r->kv[i].val);
	}
	r->n = 0;
}

static int installed(struct cpkg *p, char bin[128])
{
	if (strncmp(p->spec, "@modelcontextprotocol/server-filesystem@", 40))
		return 0;
	snprintf(p->key, sizeof p->key, "%064d", 7);
	snprintf(p->dir, sizeof p->dir, "/var/cache/x/%s", p->key);
	snprintf(bin, 128, "mcp-server-filesystem");
	return 1;
}

static cconfig *assemble(struct rows *r, cpkg_lookup_fn lookup)
{
	cconfig *c = NULL;
	cx_err err = CX_ERR_INIT;
	if (cconfig_assemble("alice", r->kv, r->n, &K, lookup, &c, &err) < 0)
		fail_msg("assemble: %s", err.msg);
	return c;
}

static const struct cfile *file_at(const cconfig *c, const char *path)
{
	for (size_t i = 0; i < c->n_files; i++)
		if (!strcmp(c->files[i].path, path))
			return &c->files[i];
	return NULL;
}

/* The file at path, or the test fails (abort() tells the compiler it does). */
static const struct cfile *must_file(const cconfig *c, const char *path)
{
	const struct cfile *f = file_at(c, path);
	if (!f) {
		fail_msg("no file %s in the assembled config", path);
		abort();
	}
	return f;
}

static json_t *mcp_servers(const cconfig *c)
{
	const struct cfile *f = must_file(c, "/home/agent/.claude.json");
	json_t *o = json_loadb(f->data, f->len, 0, NULL);
	assert_non_null(o);
	return o;
}

static void test_empty_is_deterministic(void **state)
{
	(void)state;
	struct rows r = {0};
	cconfig *a = assemble(&r, NULL), *b = assemble(&r, NULL);
	assert_int_equal(a->n_files, 1); /* ~/.claude.json with no servers */
	json_t *o = mcp_servers(a);
	assert_int_equal(json_object_size(json_object_get(o, "mcpServers")), 0);
	json_decref(o);
	assert_string_equal(a->all_hash, b->all_hash);
	assert_int_equal(strlen(a->all_hash), 64);
	assert_string_equal(json_string_value(json_object_get(a->env, "PATH")), "/usr/local/bin:/usr/bin:/bin");
	cconfig_unref(a);
	cconfig_unref(b);
}

static void test_order_independent_and_other_users_ignored(void **state)
{
	(void)state;
	struct rows r = {0}, q = {0};
	row(&r, "settings/alice/mcp/a", "{\"type\":\"stdio\",\"command\":\"/bin/a\"}");
	row(&r, "settings/alice/plugins/p", "{\"agents\":{\"x.md\":\"X\"}}");
	row(&r, "settings/alice/user", "{\"claude_md\":\"hello\"}");
	row(&q, "settings/alice/user", "{\"claude_md\":\"hello\"}");
	row(&q, "settings/alice/plugins/p", "{\"agents\":{\"x.md\":\"X\"}}");
	row(&q, "settings/alice/mcp/a", "{\"type\":\"stdio\",\"command\":\"/bin/a\"}");
	row(&q, "settings/alicex/mcp/evil", "{\"type\":\"stdio\",\"command\":\"/bin/evil\"}");
	row(&q, "settings/bob/user", "{\"claude_md\":\"bob's\"}");
	cconfig *a = assemble(&r, NULL), *b = assemble(&q, NULL);
	assert_string_equal(a->all_hash, b->all_hash);
	json_t *o = mcp_servers(b);
	assert_null(json_object_get(json_object_get(o, "mcpServers"), "evil"));
	json_decref(o);
	assert_string_equal(must_file(b, "/home/agent/.claude/CLAUDE.md")->data, "hello");
	assert_non_null(file_at(b, "/home/agent/.claude/agents/p/x.md"));
	cconfig_unref(a);
	cconfig_unref(b);
	rows_free(&r);
	rows_free(&q);
}

static void test_package_missing_then_installed(void **state)
{
	(void)state;
	struct rows r = {0};
	row(&r, "settings/alice/mcp/fs",
	    "{\"type\":\"stdio\",\"command\":\"npx\",\"args\":[\"-y\",\"@modelcontextprotocol/server-filesystem\",\"/workspace\"],"
	    "\"package\":\"@modelcontextprotocol/server-filesystem@2025.8.21\"}");
	cconfig *a = assemble(&r, NULL);
	assert_int_equal(a->n_pkgs, 1);
	assert_int_equal(a->pkgs_missing, 1);
	json_t *o = mcp_servers(a);
	assert_null(json_object_get(json_object_get(o, "mcpServers"), "fs")); /* left out until installed */
	json_decref(o);

	cconfig *b = assemble(&r, installed);
	assert_int_equal(b->pkgs_missing, 0);
	o = mcp_servers(b);
	json_t *fs = json_object_get(json_object_get(o, "mcpServers"), "fs");
	char want[300];
	snprintf(want, sizeof want, "/cortex/mcp/p-%.16s/node_modules/.bin/mcp-server-filesystem", b->pkgs[0].key);
	assert_string_equal(json_string_value(json_object_get(fs, "command")), want);
	json_t *args = json_object_get(fs, "args");
	assert_int_equal(json_array_size(args), 1); /* -y and the package are gone */
	assert_string_equal(json_string_value(json_array_get(args, 0)), "/workspace");
	assert_null(json_object_get(fs, "package"));
	json_decref(o);
	assert_non_null(strstr(json_string_value(json_object_get(b->env, "PATH")), "/node_modules/.bin:/usr/local/bin"));
	assert_string_not_equal(a->pkgs_hash, b->pkgs_hash);
	assert_string_not_equal(a->files_hash, b->files_hash);
	cconfig_unref(a);
	cconfig_unref(b);
	rows_free(&r);
}

static void test_secrets_land_in_env_and_files(void **state)
{
	(void)state;
	struct rows r = {0};
	secret_row(&r, "alice", "gh", "ghp_secret_value_1", "GITHUB_TOKEN", NULL);
	secret_row(&r, "alice", "npmrc", "//registry/:_authToken=abc", NULL, "~/.npmrc");
	cconfig *c = assemble(&r, NULL);
	assert_string_equal(json_string_value(json_object_get(c->env, "GITHUB_TOKEN")), "ghp_secret_value_1");
	const struct cfile *f = must_file(c, "/home/agent/.npmrc");
	assert_int_equal(f->mode, 0600);
	assert_int_equal(f->secret, 1);
	assert_string_equal(f->data, "//registry/:_authToken=abc");
	cconfig_unref(c);
	rows_free(&r);
}

/* A brokered secret: the sandbox's env and files hold the placeholder, the
 * value appears nowhere in what the sandbox gets. */
static void test_brokered_secret_is_a_placeholder(void **state)
{
	(void)state;
	const char *value = "ghp_BROKERED_value_93a1c7";
	char ad[64], *sealed = NULL;
	cx_err err = CX_ERR_INIT;
	snprintf(ad, sizeof ad, "secrets/gh");
	assert_int_equal(secrets_seal(&K, "alice", ad, value, strlen(value), &sealed, &err), 0);
	json_t *o = json_pack("{s:s, s:s, s:s, s:{s:[s]}}", "sealed", sealed, "env", "GH_TOKEN",
			      "file", "~/.config/gh/token", "broker", "hosts", "api.github.com");
	char *txt = json_dumps(o, JSON_COMPACT);
	struct rows r = {0};
	row(&r, "settings/alice/secrets/gh", txt);
	secret_row(&r, "alice", "plain", "not_brokered_value", "PLAIN", NULL);
	free(txt);
	free(sealed);
	json_decref(o);

	char ph[SECRETS_PLACEHOLDER_LEN + 1], other[SECRETS_PLACEHOLDER_LEN + 1];
	assert_int_equal(secrets_placeholder(&K, "alice", "gh", ph, &err), 0);
	assert_int_equal(strlen(ph), 46);
	assert_int_equal(strncmp(ph, "cortex-broker-", 14), 0);
	cconfig *c = assemble(&r, NULL);
	assert_string_equal(json_string_value(json_object_get(c->env, "GH_TOKEN")), ph);
	assert_string_equal(json_string_value(json_object_get(c->env, "PLAIN")),
			    "not_brokered_value");
	const struct cfile *f = must_file(c, "/home/agent/.config/gh/token");
	assert_string_equal(f->data, ph);
	assert_int_equal(f->mode, 0600);
	char *env = json_dumps(c->env, 0);
	assert_null(strstr(env, value));
	free(env);
	for (size_t i = 0; i < c->n_files; i++)
		assert_null(memmem(c->files[i].data, c->files[i].len, value, strlen(value)));

	/* Stable per (user, name), different for another name or user. */
	cconfig *again = assemble(&r, NULL);
	assert_string_equal(json_string_value(json_object_get(again->env, "GH_TOKEN")), ph);
	assert_string_equal(c->all_hash, again->all_hash);
	assert_int_equal(secrets_placeholder(&K, "alice", "gh2", other, &err), 0);
	assert_string_not_equal(other, ph);
	assert_int_equal(secrets_placeholder(&K, "bob", "gh", other, &err), 0);
	assert_string_not_equal(other, ph);
	cconfig_unref(again);
	cconfig_unref(c);
	rows_free(&r);
}

static void test_secret_of_another_user_fails_without_leaking(void **state)
{
	(void)state;
	struct rows r = {0};
	/* sealed for bob, stored in alice's row: must not open */
	secret_row(&r, "bob", "gh", "bobs_token_value", "GITHUB_TOKEN", NULL);
	cconfig *c = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(cconfig_assemble("alice", r.kv, r.n, &K, NULL, &c, &err), -1);
	assert_null(c);
	assert_non_null(strstr(err.msg, "secret gh"));
	assert_null(strstr(err.msg, "bobs_token_value"));
	rows_free(&r);
}

static void test_user_provider_precedence(void **state)
{
	(void)state;
	struct rows r = {0};
	char *sealed = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "alice", "ai-providers/default", "sk-1", 4, &sealed, &err), 0);
	char buf[600];
	snprintf(buf, sizeof buf,
		 "{\"kind\":\"anthropic\",\"base_url\":\"http://127.0.0.1:9/\",\"model\":\"m-prov\",\"sealed_key\":\"%s\"}",
		 sealed);
	row(&r, "settings/alice/ai-providers/aaa", "{\"kind\":\"anthropic\",\"base_url\":\"http://other/\"}");
	row(&r, "settings/alice/ai-providers/default", buf);
	cconfig *c = assemble(&r, NULL);
	/* The provider is kept for the gateway, never in the agent's env. */
	assert_string_equal(c->prov_url, "http://127.0.0.1:9/");
	assert_int_equal(c->prov_key_len, 4);
	assert_memory_equal(c->prov_key, "sk-1", 4);
	assert_null(json_object_get(c->env, "ANTHROPIC_BASE_URL"));
	assert_null(json_object_get(c->env, "ANTHROPIC_API_KEY"));
	assert_string_equal(c->model, "m-prov");
	char before[65];
	memcpy(before, c->files_hash, 65);
	char env_before[65];
	memcpy(env_before, c->env_hash, 65);
	cconfig_unref(c);
	row(&r, "settings/alice/user", "{\"model\":\"m-user\",\"env\":{\"FOO\":\"bar\"}}");
	c = assemble(&r, NULL);
	assert_string_equal(c->model, "m-user");
	assert_string_equal(json_string_value(json_object_get(c->env, "FOO")), "bar");
	/* only the env part moved: no file needs writing */
	assert_string_equal(c->files_hash, before);
	assert_string_not_equal(c->env_hash, env_before);
	cconfig_unref(c);
	free(sealed);
	rows_free(&r);
}

static void test_corrupt_row_is_an_error(void **state)
{
	(void)state;
	struct rows r = {0};
	row(&r, "settings/alice/mcp/x", "not json");
	cconfig *c = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(cconfig_assemble("alice", r.kv, r.n, &K, NULL, &c, &err), -1);
	assert_non_null(strstr(err.msg, "settings/alice/mcp/x"));
	rows_free(&r);
}

static void test_cache_decisions(void **state)
{
	(void)state;
	struct ccache_entry e = {0};
	const uint64_t ttl = 300u * 1000000u;
	assert_int_equal(ccache_check(&e, 1000, ttl), CC_MISS);
	struct rows r = {0};
	e.cfg = assemble(&r, NULL);
	e.at_us = 1000;
	assert_int_equal(ccache_check(&e, 1000, ttl), CC_HIT);
	assert_int_equal(ccache_check(&e, 1000 + ttl - 1, ttl), CC_HIT);
	assert_int_equal(ccache_check(&e, 1000 + ttl, ttl), CC_EXPIRED);
	e.dirty = 1;
	assert_int_equal(ccache_check(&e, 1001, ttl), CC_DIRTY);
	cconfig_unref(e.cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_is_deterministic),
		cmocka_unit_test(test_order_independent_and_other_users_ignored),
		cmocka_unit_test(test_package_missing_then_installed),
		cmocka_unit_test(test_secrets_land_in_env_and_files),
		cmocka_unit_test(test_brokered_secret_is_a_placeholder),
		cmocka_unit_test(test_secret_of_another_user_fails_without_leaking),
		cmocka_unit_test(test_user_provider_precedence),
		cmocka_unit_test(test_corrupt_row_is_an_error),
		cmocka_unit_test(test_cache_decisions),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
