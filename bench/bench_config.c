/* bench_config — the config cache, measured on the product code: ccache_get()
 * on a session whose entry is current (hit) against one marked dirty (a
 * reload: one range read of the user's settings from SQLite, secrets opened,
 * files and hashes built).  Settings: 4 MCP servers, 6 secrets (2 files),
 * user CLAUDE.md, 2 plugins, 1 provider — a realistic user.
 * Prints a table and writes build/bench-config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

static struct cortexd D;
#include "settings.h"


static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}
static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof *v, cmp);
	size_t i = (size_t)(p / 100.0 * (double)n + 0.5);
	return v[i >= n ? n - 1 : i ? i - 1 : 0];
}

static void put(const char *key, const char *json)
{
	cx_err err = CX_ERR_INIT;
	if (store_put(D.st, key, json, strlen(json), &err) < 0) {
		fprintf(stderr, "put %s: %s\n", key, err.msg);
		exit(1);
	}
}

static void put_secret(const char *name, const char *value, const char *env, const char *file)
{
	char ad[128], key[256], buf[2048];
	snprintf(ad, sizeof ad, SET_AD_SECRET "%s", name);
	char *sealed = NULL;
	cx_err err = CX_ERR_INIT;
	if (secrets_seal(&D.skey, "bench", ad, value, strlen(value), &sealed, &err) < 0) {
		fprintf(stderr, "seal: %s\n", err.msg);
		exit(1);
	}
	snprintf(buf, sizeof buf, "{\"sealed\":\"%s\"%s%s%s%s%s%s}", sealed, env ? ",\"env\":\"" : "",
		 env ? env : "", env ? "\"" : "", file ? ",\"file\":\"" : "", file ? file : "", file ? "\"" : "");
	snprintf(key, sizeof key, "settings/bench/secrets/%s", name);
	put(key, buf);
	free(sealed);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	size_t n_hit = 20000, n_miss = 2000;
	char path[4200];
	cx_err err = CX_ERR_INIT;
	config_defaults(&D.cfg);
	snprintf(path, sizeof path, "%s/bench-config.db", dir);
	unlink(path);
	if (store_open(&D.st, "sqlite", path, &err) < 0) {
		fprintf(stderr, "store: %s\n", err.msg);
		return 1;
	}
	snprintf(path, sizeof path, "%s/bench-master.key", dir);
	unlink(path);
	if (secrets_key_load(&D.skey, path, 1, &err) < 0) {
		fprintf(stderr, "key: %s\n", err.msg);
		return 1;
	}
	for (int i = 0; i < 4; i++) {
		char k[128];
		snprintf(k, sizeof k, "settings/bench/mcp/server%d", i);
		put(k, "{\"type\":\"stdio\",\"command\":\"/usr/bin/node\",\"args\":[\"/opt/x/index.js\",\"--root\",\"/workspace\"],\"env\":{\"LOG\":\"info\"}}");
	}
	put_secret("gh", "ghp_0123456789abcdef0123456789abcdef0123", "GH_TOKEN", NULL);
	put_secret("npm", "npm_0123456789abcdef", "NPM_TOKEN", NULL);
	put_secret("aws", "AKIA0123456789ABCDEF", "AWS_ACCESS_KEY_ID", NULL);
	put_secret("aws2", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY", NULL);
	put_secret("npmrc", "//registry.npmjs.org/:_authToken=npm_0123456789abcdef", NULL, "~/.npmrc");
	put_secret("netrc", "machine github.com login x password ghp_0123", NULL, "~/.netrc");
	char md[8192];
	memset(md, 'x', sizeof md - 1);
	md[sizeof md - 1] = '\0';
	char user[8300];
	snprintf(user, sizeof user, "{\"claude_md\":\"%s\",\"model\":\"claude-test\",\"env\":{\"TZ\":\"UTC\"}}", md);
	put("settings/bench/user", user);
	put("settings/bench/plugins/review", "{\"agents\":{\"reviewer.md\":\"Review code.\"},\"commands\":{\"review.md\":\"Run a review.\"}}");
	put("settings/bench/plugins/style", "{\"rules\":{\"style.md\":\"Use tabs.\"}}");
	char *sealed = NULL;
	secrets_seal(&D.skey, "bench", SET_AD_PROVIDER "default", "sk-ant-0123", 11, &sealed, &err);
	char prov[1024];
	snprintf(prov, sizeof prov, "{\"kind\":\"anthropic\",\"base_url\":\"http://127.0.0.1:1/\",\"sealed_key\":\"%s\"}", sealed);
	free(sealed);
	put("settings/bench/ai-providers/default", prov);

	struct ccache_entry e;
	memset(&e, 0, sizeof e);
	struct ccache_src src = {D.st, &D.skey, &D.cfg};
	enum ccache_how how;
	cconfig *c = ccache_get(&e, &src, "bench", &how, &err); /* warm the SQLite page cache */
	if (!c) {
		fprintf(stderr, "assemble: %s\n", err.msg);
		return 1;
	}
	double *hit = calloc(n_hit, sizeof *hit), *miss = calloc(n_miss, sizeof *miss);
	for (size_t i = 0; i < n_miss; i++) {
		e.dirty = 1;
		uint64_t t0 = cx_mono_us();
		c = ccache_get(&e, &src, "bench", &how, &err);
		miss[i] = (double)(cx_mono_us() - t0);
		if (!c || how != CC_DIRTY)
			return 1;
	}
	for (size_t i = 0; i < n_hit; i++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		c = ccache_get(&e, &src, "bench", &how, &err);
		clock_gettime(CLOCK_MONOTONIC, &b);
		hit[i] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
		if (!c || how != CC_HIT)
			return 1;
	}
	double h50 = pct(hit, n_hit, 50), h95 = pct(hit, n_hit, 95);
	double m50 = pct(miss, n_miss, 50), m95 = pct(miss, n_miss, 95);
	printf("\nConfig cache: one session's config (4 MCP servers, 6 secrets, CLAUDE.md 8 KiB, 2 plugins, 1 provider)\n");
	printf("| lookup                                  |     n |   p50 µs |   p95 µs |\n");
	printf("|-----------------------------------------|-------|----------|----------|\n");
	printf("| hit (entry current)                     | %5zu | %8.3f | %8.3f |\n", n_hit, h50, h95);
	printf("| miss/dirty (store read + assemble)      | %5zu | %8.1f | %8.1f |\n", n_miss, m50, m95);
	printf("miss/hit ratio at p50: %.0fx; files assembled: %zu\n", m50 / (h50 > 0 ? h50 : 0.001), c->n_files);
	FILE *f = fopen("build/bench-config.json", "w");
	if (f) {
		fprintf(f, "{\"hit_p50_us\":%.3f,\"hit_p95_us\":%.3f,\"miss_p50_us\":%.1f,\"miss_p95_us\":%.1f,\"n_hit\":%zu,\"n_miss\":%zu}\n",
			h50, h95, m50, m95, n_hit, n_miss);
		fclose(f);
	}
	ccache_drop(&e);
	store_close(D.st);
	free(hit);
	free(miss);
	return 0;
}
