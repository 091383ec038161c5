/* test_npmcache.c — the npm package cache against tests/fixtures/fake-npm.sh,
 * a real SQLite store and a temp root in $CORTEX_TEST_TMP.
 *
 * The cache reports on the service thread through work_submit(NULL, done);
 * here the test is the service thread: it polls work_drain_done() until the
 * callbacks it waits for arrive (bounded).  npm gets a small environment, so
 * the fixture's knobs reach it through a wrapper script per test that sources
 * a knobs file the test rewrites. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "npmcache.h"
#include "store.h"
#include "work.h"
#include "unit_util.h"

#define WAIT_MS 20000 /* for callbacks; an install by the fixture takes ~10 ms */

struct fx {
	char dir[512];
	char root[PATH_MAX]; /* realpath, as the cache reports it */
	char db[600], log[600], knobs[600], npm[600];
	store *st;
	cx_err err;
};

static char fixture[PATH_MAX];

#define EXPECT_RC(want, call)                                                                      \
	do {                                                                                       \
		int got_ = (call);                                                                 \
		if (got_ != (want))                                                                \
			fail_msg("%s\n  expected rc %d, got %d (err: \"%s\")", #call, (want),      \
				 got_, f->err.msg);                                                \
	} while (0)
#define OK(call) EXPECT_RC(0, call)

#define EXPECT_STR_HAS(hay, needle)                                                                \
	do {                                                                                       \
		if (!strstr((hay), (needle)))                                                      \
			fail_msg("%s should contain \"%s\"\n  actual: \"%s\"", #hay, (needle),     \
				 (hay));                                                           \
	} while (0)

#define EXPECT_U64(want, got)                                                                      \
	do {                                                                                       \
		unsigned long long w_ = (want), g_ = (got);                                        \
		if (w_ != g_)                                                                      \
			fail_msg("%s: expected %llu, got %llu", #got, w_, g_);                     \
	} while (0)

/* ---- fixture ---- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");
	if (!fp)
		fail_msg("fopen %s: %s", path, strerror(errno));
	fputs(text, fp);
	fclose(fp);
	chmod(path, mode);
}

static void set_knobs(struct fx *f, const char *text)
{
	write_file(f->knobs, text, 0644);
}

static int group_setup(void **state)
{
	(void)state;
	const char *tests = getenv("TESTS_DIR");
	char src[PATH_MAX], path[PATH_MAX + 64];
	if (tests && *tests) {
		snprintf(path, sizeof path, "%s/fixtures/fake-npm.sh", tests);
	} else {
		snprintf(src, sizeof src, "%s", __FILE__);
		snprintf(path, sizeof path, "%s/../fixtures/fake-npm.sh", dirname(src));
	}
	if (!realpath(path, fixture) || access(fixture, X_OK) < 0) {
		fprintf(stderr, "fixture %s: %s\n", path, strerror(errno));
		return -1;
	}
	cx_err err = CX_ERR_INIT;
	if (work_start(NULL, 2, &err) < 0) {
		fprintf(stderr, "work_start: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	work_stop();
	return 0;
}

static int init_cache(struct fx *f, uint64_t budget)
{
	return npmcache_init(f->st, f->root, f->npm, getuid(), getgid(), budget, &f->err);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	if (unit_tmpdir("npmcache", f->dir, sizeof f->dir) < 0) {
		free(f);
		return -1;
	}
	char root[600];
	snprintf(root, sizeof root, "%s/root", f->dir);
	snprintf(f->db, sizeof f->db, "%s/store.db", f->dir);
	snprintf(f->log, sizeof f->log, "%s/npm.log", f->dir);
	snprintf(f->knobs, sizeof f->knobs, "%s/knobs", f->dir);
	snprintf(f->npm, sizeof f->npm, "%s/npm", f->dir);
	set_knobs(f, "");
	char wrapper[4096];
	snprintf(wrapper, sizeof wrapper,
		 "#!/bin/sh\nFAKE_NPM_LOG='%s'\nexport FAKE_NPM_LOG\n. '%s'\nexec '%s' \"$@\"\n",
		 f->log, f->knobs, fixture);
	write_file(f->npm, wrapper, 0755);
	snprintf(f->root, sizeof f->root, "%s", root);
	if (store_open_sqlite(&f->st, f->db, &f->err) < 0 || init_cache(f, 0) < 0) {
		fprintf(stderr, "setup: %s\n", f->err.msg);
		return -1;
	}
	if (!realpath(root, f->root)) /* compare with what the cache reports */
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	npmcache_shutdown();
	work_drain_done();
	store_close(f->st);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* ---- helpers ---- */

struct rec {
	int calls, ok;
	char msg[8192];
	npm_pkg pkg;
};

static void on_ready(void *arg, const npm_pkg *pkg, int ok, const char *msg)
{
	struct rec *r = arg;
	r->calls++;
	r->ok = ok;
	snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "(null)");
	if (ok && !pkg)
		fail_msg("callback: ok without a package");
	if (pkg)
		r->pkg = *pkg;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Be the service thread until *counter reaches n (1) or ms pass (0). */
static int drain_until(const int *counter, int n, long ms)
{
	uint64_t deadline = now_ms() + (uint64_t)ms;
	for (;;) {
		work_drain_done();
		if (counter && *counter >= n)
			return 1;
		if (now_ms() >= deadline)
			return 0;
		sleep_ms(5);
	}
}

static void wait_calls(struct rec *r, int n)
{
	if (!drain_until(&r->calls, n, WAIT_MS))
		fail_msg("waited %d ms for %d callback(s), got %d", WAIT_MS, n, r->calls);
}

static int log_lines(struct fx *f)
{
	FILE *fp = fopen(f->log, "r");
	if (!fp)
		return 0;
	int n = 0, c;
	while ((c = fgetc(fp)) != EOF)
		n += c == '\n';
	fclose(fp);
	return n;
}

static void log_text(struct fx *f, char *out, size_t cap)
{
	out[0] = '\0';
	FILE *fp = fopen(f->log, "r");
	if (!fp)
		return;
	size_t n = fread(out, 1, cap - 1, fp);
	out[n] = '\0';
	fclose(fp);
}

/* Install spec (must not be there yet) and return the package. */
static npm_pkg install(struct fx *f, const char *spec)
{
	struct rec r = {0};
	const npm_pkg *out = NULL;
	EXPECT_RC(0, npmcache_ensure(spec, on_ready, &r, &out, &f->err));
	assert_null(out);
	wait_calls(&r, 1);
	if (!r.ok)
		fail_msg("install %s failed: %s", spec, r.msg);
	return r.pkg;
}

static void reinit(struct fx *f, uint64_t budget)
{
	npmcache_shutdown();
	work_drain_done();
	OK(init_cache(f, budget));
}

static json_t *row_get(struct fx *f, const char *key)
{
	char rowkey[128], *val = NULL;
	snprintf(rowkey, sizeof rowkey, "npm/%s", key);
	int rc = store_get(f->st, rowkey, &val, NULL, &f->err);
	if (rc == CX_NOTFOUND)
		return NULL;
	if (rc < 0)
		fail_msg("store_get %s: %s", rowkey, f->err.msg);
	json_t *o = json_loads(val, 0, NULL);
	free(val);
	if (!o)
		fail_msg("row %s is not JSON", rowkey);
	return o;
}

static long long row_int(json_t *row, const char *field)
{
	json_t *v = json_object_get(row, field);
	if (!json_is_integer(v))
		fail_msg("row field %s is not an integer", field);
	return (long long)json_integer_value(v);
}

static size_t count_rows(struct fx *f)
{
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->st, "npm/", 0, &kv, &n, &f->err));
	store_kv_free(kv, n);
	return n;
}

/* Entries of ROOT other than .npm and .home, joined by spaces. */
static int root_entries(struct fx *f, char *out, size_t cap)
{
	DIR *d = opendir(f->root);
	if (!d)
		fail_msg("opendir %s: %s", f->root, strerror(errno));
	int n = 0;
	size_t len = 0;
	out[0] = '\0';
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		if (!strcmp(nm, ".") || !strcmp(nm, "..") || !strcmp(nm, ".npm") ||
		    !strcmp(nm, ".home"))
			continue;
		int w = snprintf(out + len, cap - len, "%s ", nm);
		if (w > 0 && (size_t)w < cap - len)
			len += (size_t)w;
		n++;
	}
	closedir(d);
	return n;
}

static int tmp_dirs_left(struct fx *f)
{
	char names[4096];
	root_entries(f, names, sizeof names);
	return strstr(names, ".tmp-") != NULL;
}

static void wait_no_tmp(struct fx *f)
{
	uint64_t deadline = now_ms() + 5000;
	while (tmp_dirs_left(f) && now_ms() < deadline)
		drain_until(NULL, 0, 10);
	char names[4096];
	root_entries(f, names, sizeof names);
	if (strstr(names, ".tmp-"))
		fail_msg("leftover temp dirs under ROOT: %s", names);
}

static int exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

static void expected_key(const char *spec, char out[65])
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "%s%cnode%d", spec, '\0', npmcache_node_major());
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)buf, (unsigned long long)n);
	sodium_bin2hex(out, 65, h, sizeof h);
}

/* ---- tests ---- */

static void test_key_is_content_address(void **state)
{
	struct fx *f = *state;
	assert_true(npmcache_node_major() > 0); /* node is on PATH for the test suite */
	npm_pkg a = install(f, "keytest@1.0.0");
	npm_pkg b = install(f, "keytest@1.0.1");
	char want_a[65], want_b[65];
	expected_key("keytest@1.0.0", want_a);
	expected_key("keytest@1.0.1", want_b);
	assert_string_equal(want_a, a.key);
	assert_string_equal(want_b, b.key);
	assert_string_not_equal(a.key, b.key);
	/* deterministic: lookup agrees, and again after a restart */
	assert_string_equal(want_a, npmcache_lookup("keytest@1.0.0")->key);
	reinit(f, 0);
	assert_string_equal(want_a, npmcache_lookup("keytest@1.0.0")->key);
	assert_string_equal(want_b, npmcache_lookup("keytest@1.0.1")->key);
}

static void test_invalid_spec_no_run(void **state)
{
	struct fx *f = *state;
	npmcache_stats s0, s1;
	npmcache_get_stats(&s0);
	const char *bad[] = {"",
			     "left-pad",
			     "left-pad@latest",
			     "left-pad@^1.0.0",
			     "Left-Pad@1.0.0",
			     "@scope@1.0.0",
			     "left-pad@1.0",
			     "../x@1.0.0"};
	struct rec r = {0};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const npm_pkg *out = (const npm_pkg *)&r; /* must be reset */
		cx_err_clear(&f->err);
		EXPECT_RC(-1, npmcache_ensure(bad[i], on_ready, &r, &out, &f->err));
		assert_null(out);
		if (!f->err.msg[0])
			fail_msg("no reason for \"%s\"", bad[i]);
		assert_null(npmcache_lookup(bad[i]));
	}
	EXPECT_RC(-1, npmcache_ensure(NULL, on_ready, &r, NULL, &f->err));
	drain_until(NULL, 0, 50);
	assert_int_equal(0, r.calls);
	assert_int_equal(0, log_lines(f));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.npm_runs, s1.npm_runs);
}

static void test_install_then_hit(void **state)
{
	struct fx *f = *state;
	setenv("FAKE_NPM_LEAK", "daemon-secret", 1); /* must not reach npm */
	npmcache_stats s0, s1;
	npmcache_get_stats(&s0);
	npm_pkg p = install(f, "@acme/tool@1.2.3");
	unsetenv("FAKE_NPM_LEAK");
	assert_string_equal("@acme/tool", p.name);
	assert_string_equal("1.2.3", p.version);
	assert_string_equal("tool", p.bin);
	char want[PATH_MAX + 80], path[PATH_MAX + 200];
	snprintf(want, sizeof want, "%s/%s", f->root, p.key);
	assert_string_equal(want, p.dir);
	snprintf(path, sizeof path, "%s/node_modules/@acme/tool/package.json", p.dir);
	if (!exists(path))
		fail_msg("missing %s", path);
	snprintf(path, sizeof path, "%s/node_modules/.bin/tool", p.dir);
	if (!exists(path))
		fail_msg("missing %s", path);
	if (p.bytes == 0)
		fail_msg("bytes not counted");
	wait_no_tmp(f);

	/* the second time: a hit, no callback, no npm */
	struct rec r = {0};
	const npm_pkg *out = NULL;
	EXPECT_RC(1, npmcache_ensure("@acme/tool@1.2.3", on_ready, &r, &out, &f->err));
	assert_non_null(out);
	assert_ptr_equal(out, npmcache_lookup("@acme/tool@1.2.3"));
	assert_string_equal(p.key, out->key);
	drain_until(NULL, 0, 50);
	assert_int_equal(0, r.calls);
	assert_int_equal(1, log_lines(f));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.npm_runs + 1, s1.npm_runs);
	EXPECT_U64(s0.installs_ok + 1, s1.installs_ok);
	EXPECT_U64(s0.hits + 1, s1.hits);
	EXPECT_U64(p.bytes, s1.bytes);

	/* what npm was given: the flags, HOME and cache under ROOT, a temp prefix,
	 * none of the daemon's environment */
	char line[8192], frag[PATH_MAX + 200];
	log_text(f, line, sizeof line);
	snprintf(frag, sizeof frag, "install --prefix %s/.tmp-%s-", f->root, p.key);
	EXPECT_STR_HAS(line, frag);
	EXPECT_STR_HAS(line, " --ignore-scripts --no-audit --no-fund --omit=dev "
			     "--no-package-lock --loglevel=warn @acme/tool@1.2.3 ");
	snprintf(frag, sizeof frag, "HOME=%s/.home cache=%s/.npm cwd=%s/.tmp-%s-", f->root, f->root,
		 f->root, p.key);
	EXPECT_STR_HAS(line, frag);
	EXPECT_STR_HAS(line, "leak=\n");

	/* the row */
	json_t *row = row_get(f, p.key);
	assert_non_null(row);
	assert_string_equal("@acme/tool", json_string_value(json_object_get(row, "name")));
	assert_string_equal("1.2.3", json_string_value(json_object_get(row, "version")));
	assert_int_equal(npmcache_node_major(), row_int(row, "node_major"));
	EXPECT_U64(p.bytes, (unsigned long long)row_int(row, "bytes"));
	assert_int_equal(0, row_int(row, "use_count"));
	assert_string_equal(
	    "index.js", json_string_value(json_object_get(json_object_get(row, "bins"), "tool")));
	json_decref(row);

	/* npm's own dirs */
	struct stat sb;
	snprintf(path, sizeof path, "%s/.npm", f->root);
	assert_int_equal(0, stat(path, &sb));
	assert_int_equal(0700, sb.st_mode & 0777);
	assert_int_equal(getuid(), sb.st_uid);
	assert_int_equal(0, stat(f->root, &sb));
	assert_int_equal(0755, sb.st_mode & 0777);
}

static void test_concurrent_ensures_share_one_run(void **state)
{
	struct fx *f = *state;
	set_knobs(f, "export FAKE_NPM_DELAY=0.5\n");
	npmcache_stats s0, s1;
	npmcache_get_stats(&s0);
	struct rec a = {0}, b = {0};
	const npm_pkg *out = NULL;
	EXPECT_RC(0, npmcache_ensure("slow@1.0.0", on_ready, &a, &out, &f->err));
	EXPECT_RC(0, npmcache_ensure("slow@1.0.0", on_ready, &b, &out, &f->err));
	assert_null(npmcache_lookup("slow@1.0.0")); /* not yet */
	wait_calls(&a, 1);
	wait_calls(&b, 1);
	drain_until(NULL, 0, 100);
	assert_int_equal(1, a.calls);
	assert_int_equal(1, b.calls);
	assert_true(a.ok && b.ok);
	assert_string_equal(a.pkg.key, b.pkg.key);
	assert_string_equal("slow", a.pkg.bin);
	assert_int_equal(1, log_lines(f));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.joins + 1, s1.joins);
	EXPECT_U64(s0.npm_runs + 1, s1.npm_runs);
}

static void test_at_most_parallel_then_fifo(void **state)
{
	struct fx *f = *state;
	set_knobs(f, "export FAKE_NPM_DELAY=1\n");
	struct rec r[3] = {{0}};
	const char *specs[] = {"q-one@1.0.0", "q-two@1.0.0", "q-three@1.0.0"};
	for (int i = 0; i < 3; i++)
		EXPECT_RC(0, npmcache_ensure(specs[i], on_ready, &r[i], NULL, &f->err));
	/* two start at once; the third waits for a slot */
	uint64_t deadline = now_ms() + 5000;
	while (log_lines(f) < NPMCACHE_PARALLEL && now_ms() < deadline)
		drain_until(NULL, 0, 5);
	assert_int_equal(NPMCACHE_PARALLEL, log_lines(f));
	drain_until(NULL, 0, 300);
	assert_int_equal(NPMCACHE_PARALLEL, log_lines(f));
	for (int i = 0; i < 3; i++)
		wait_calls(&r[i], 1);
	for (int i = 0; i < 3; i++)
		if (!r[i].ok)
			fail_msg("%s: %s", specs[i], r[i].msg);
	assert_int_equal(3, log_lines(f));
	char text[8192];
	log_text(f, text, sizeof text);
	char *third = strstr(text, "q-three@1.0.0");
	assert_non_null(third);
	assert_true(strchr(text, '\n') < third && strchr(strchr(text, '\n') + 1, '\n') < third);
}

static void test_failure_reports_output_leaves_nothing(void **state)
{
	struct fx *f = *state;
	npmcache_stats s0, s1;
	npmcache_get_stats(&s0);
	struct rec r = {0};
	EXPECT_RC(0, npmcache_ensure("will-fail@1.0.0", on_ready, &r, NULL, &f->err));
	wait_calls(&r, 1);
	drain_until(NULL, 0, 50);
	assert_int_equal(1, r.calls);
	assert_int_equal(0, r.ok);
	EXPECT_STR_HAS(r.msg, "will-fail@1.0.0");
	EXPECT_STR_HAS(r.msg, "exit status 1");
	EXPECT_STR_HAS(r.msg, "fake-npm: no such package");
	EXPECT_STR_HAS(r.msg, "some noise on stdout");
	char names[4096];
	if (root_entries(f, names, sizeof names))
		fail_msg("ROOT should hold nothing but .npm and .home, has: %s", names);
	assert_int_equal(0, count_rows(f));
	assert_null(npmcache_lookup("will-fail@1.0.0"));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.installs_failed + 1, s1.installs_failed);
	/* a failure is not remembered: the next ensure tries again */
	EXPECT_RC(0, npmcache_ensure("will-fail@1.0.0", on_ready, &r, NULL, &f->err));
	wait_calls(&r, 2);
	assert_int_equal(2, log_lines(f));
}

static void test_npm_missing(void **state)
{
	struct fx *f = *state;
	npmcache_shutdown();
	work_drain_done();
	char missing[700];
	snprintf(missing, sizeof missing, "%s/no-such-npm", f->dir);
	OK(npmcache_init(f->st, f->root, missing, getuid(), getgid(), 0, &f->err));
	struct rec r = {0};
	EXPECT_RC(0, npmcache_ensure("pkg@1.0.0", on_ready, &r, NULL, &f->err));
	wait_calls(&r, 1);
	assert_int_equal(0, r.ok);
	EXPECT_STR_HAS(r.msg, "no-such-npm");
	EXPECT_STR_HAS(r.msg, "No such file");
	wait_no_tmp(f);
}

static void test_bins(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *spec, *bin_json, *want;
	} cases[] = {
	    {"@acme/widget@1.0.0", "\"cli.js\"", "widget"}, /* string: unscoped name */
	    {"widget@1.0.1", "{\"other\":\"a.js\",\"widget\":\"b.js\"}",
	     "widget"},								/* named like it */
	    {"widget@1.0.2", "{\"zeta\":\"z.js\",\"alpha\":\"a.js\"}", "zeta"}, /* else first */
	    {"widget@1.0.3", "{\"solo\":\"s.js\"}", "solo"},			/* the only one */
	    {"widget@1.0.4", "null", ""},					/* none */
	    {"widget@1.0.5", "{\"../evil\":\"x.js\",\"ok\":\"../../y.js\",\"fine\":\"f.js\"}",
	     "fine"}, /* unsafe names and paths left out */
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char knobs[512];
		snprintf(knobs, sizeof knobs, "export FAKE_NPM_BIN='%s'\n", cases[i].bin_json);
		set_knobs(f, knobs);
		npm_pkg p = install(f, cases[i].spec);
		if (strcmp(p.bin, cases[i].want))
			fail_msg("%s with bin %s: main bin \"%s\", want \"%s\"", cases[i].spec,
				 cases[i].bin_json, p.bin, cases[i].want);
	}
	/* the row keeps every bin; a restart picks the same main one */
	const npm_pkg *p = npmcache_lookup("widget@1.0.1");
	json_t *row = row_get(f, p->key);
	assert_int_equal(2, json_object_size(json_object_get(row, "bins")));
	json_decref(row);
	p = npmcache_lookup("widget@1.0.5");
	row = row_get(f, p->key);
	assert_int_equal(1, json_object_size(json_object_get(row, "bins")));
	json_decref(row);
	reinit(f, 0);
	assert_string_equal("widget", npmcache_lookup("widget@1.0.1")->bin);
	assert_string_equal("zeta", npmcache_lookup("widget@1.0.2")->bin);
	assert_string_equal("", npmcache_lookup("widget@1.0.4")->bin);
}

static void test_restart_finds_package(void **state)
{
	struct fx *f = *state;
	npm_pkg p = install(f, "persist@2.0.0");
	reinit(f, 0);
	const npm_pkg *q = npmcache_lookup("persist@2.0.0");
	assert_non_null(q);
	assert_string_equal(p.key, q->key);
	assert_string_equal(p.dir, q->dir);
	assert_string_equal(p.bin, q->bin);
	EXPECT_U64(p.bytes, q->bytes);
	const npm_pkg *out = NULL;
	EXPECT_RC(1, npmcache_ensure("persist@2.0.0", on_ready, NULL, &out, &f->err));
	assert_ptr_equal(q, out);
	assert_int_equal(1, log_lines(f));
	npmcache_stats s;
	npmcache_get_stats(&s);
	EXPECT_U64(p.bytes, s.bytes);
}

static void test_init_drops_row_without_dir(void **state)
{
	struct fx *f = *state;
	npm_pkg p = install(f, "vanish@1.0.0");
	npmcache_shutdown();
	work_drain_done();
	rm_rf(p.dir);
	/* and two rows that never were valid */
	OK(store_put(f->st, "npm/not-a-key", "{}", 2, &f->err));
	char bad[128];
	snprintf(bad, sizeof bad, "npm/%064d", 0);
	OK(store_put(f->st, bad, "not json", 8, &f->err));
	OK(init_cache(f, 0));
	assert_null(npmcache_lookup("vanish@1.0.0"));
	assert_null(row_get(f, p.key));
	assert_int_equal(0, count_rows(f));
	/* installable again */
	install(f, "vanish@1.0.0");
	assert_int_equal(2, log_lines(f));
}

static void test_init_removes_strays(void **state)
{
	struct fx *f = *state;
	npm_pkg p = install(f, "keeper@1.0.0");
	npmcache_shutdown();
	work_drain_done();
	char path[PATH_MAX + 200];
	snprintf(path, sizeof path, "%s/%064d/node_modules/x", f->root, 1);
	char cmd[PATH_MAX + 300];
	snprintf(cmd, sizeof cmd,
		 "mkdir -p '%s' '%s/.tmp-%s-0123456789abcdef/node_modules' "
		 "'%s/.tmp-evict-%s-00/a' '%s/.keep-me'",
		 path, f->root, p.key, f->root, p.key, f->root);
	assert_int_equal(0, system(cmd));
	snprintf(path, sizeof path, "%s/junk-file", f->root);
	write_file(path, "x", 0644);
	OK(init_cache(f, 0));
	char names[4096];
	root_entries(f, names, sizeof names);
	char want[200];
	snprintf(want, sizeof want, "%s ", p.key);
	EXPECT_STR_HAS(names, want);
	EXPECT_STR_HAS(names, ".keep-me ");
	assert_int_equal(2, root_entries(f, names, sizeof names));
	assert_non_null(npmcache_lookup("keeper@1.0.0"));
}

static void test_eviction_lru_never_pinned(void **state)
{
	struct fx *f = *state;
	set_knobs(f, "export FAKE_NPM_BYTES=200000\n");
	npm_pkg a = install(f, "big-a@1.0.0");
	/* room for one and a half packages */
	reinit(f, a.bytes + a.bytes / 2);
	npmcache_pin(a.key);
	npmcache_stats s0, s1;
	npmcache_get_stats(&s0);
	npm_pkg b = install(f, "big-b@1.0.0"); /* over budget, but a is pinned, b is new */
	assert_non_null(npmcache_lookup("big-a@1.0.0"));
	assert_non_null(npmcache_lookup("big-b@1.0.0"));
	npm_pkg c = install(f, "big-c@1.0.0"); /* b: the unpinned least recently used */
	assert_non_null(npmcache_lookup("big-a@1.0.0"));
	assert_null(npmcache_lookup("big-b@1.0.0"));
	assert_non_null(npmcache_lookup("big-c@1.0.0"));
	assert_false(exists(b.dir));
	/* The row goes on a worker (a commit waits for the disk). */
	json_t *row = row_get(f, b.key);
	for (int i = 0; row && i < 200; i++) {
		json_decref(row);
		drain_until(NULL, 0, 10);
		row = row_get(f, b.key);
	}
	assert_null(row);
	assert_true(exists(a.dir));
	assert_true(exists(c.dir));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.evictions + 1, s1.evictions);
	EXPECT_U64(a.bytes + c.bytes, s1.bytes);
	wait_no_tmp(f);

	/* unpinned, a (used before c was installed) goes first, then c */
	npmcache_unpin(a.key);
	npm_pkg d = install(f, "big-d@1.0.0");
	assert_null(npmcache_lookup("big-a@1.0.0"));
	assert_null(npmcache_lookup("big-c@1.0.0"));
	assert_non_null(npmcache_lookup("big-d@1.0.0"));
	assert_true(exists(d.dir));
	assert_false(exists(a.dir));
	npmcache_get_stats(&s1);
	EXPECT_U64(s0.evictions + 3, s1.evictions);
	EXPECT_U64(d.bytes, s1.bytes);
	for (int i = 0; count_rows(f) > 1 && i < 200; i++) /* row deletes run on a worker */
		drain_until(NULL, 0, 10);
	assert_int_equal(1, count_rows(f));
	wait_no_tmp(f);
}

static void test_pin_persists_use(void **state)
{
	struct fx *f = *state;
	npm_pkg p = install(f, "used@1.0.0");
	json_t *row = row_get(f, p.key);
	long long installed_at = row_int(row, "last_used_at");
	json_decref(row);
	sleep_ms(5);
	npmcache_pin(p.key);
	npmcache_pin(p.key);
	const npm_pkg *q = npmcache_lookup("used@1.0.0");
	assert_int_equal(2, q->use_count);
	/* persisted by a worker */
	uint64_t deadline = now_ms() + 5000;
	long long uses = 0;
	while (now_ms() < deadline) {
		drain_until(NULL, 0, 5);
		row = row_get(f, p.key);
		uses = row_int(row, "use_count");
		long long last = row_int(row, "last_used_at");
		json_decref(row);
		if (uses == 2) {
			assert_true(last > installed_at);
			assert_int_equal(q->last_used_at, last);
			break;
		}
	}
	assert_int_equal(2, uses);
	npmcache_unpin(p.key);
	npmcache_unpin(p.key);
	npmcache_unpin(p.key);		  /* one too many: ignored */
	npmcache_pin("0123456789abcdef"); /* unknown: ignored */
	drain_until(NULL, 0, 50);
	reinit(f, 0);
	assert_int_equal(2, npmcache_lookup("used@1.0.0")->use_count);
}

static void test_shutdown_aborts_running_install(void **state)
{
	struct fx *f = *state;
	set_knobs(f, "export FAKE_NPM_DELAY=30\n");
	struct rec r = {0};
	EXPECT_RC(0, npmcache_ensure("stuck@1.0.0", on_ready, &r, NULL, &f->err));
	EXPECT_RC(0, npmcache_ensure("stuck-too@1.0.0", on_ready, &r, NULL, &f->err));
	EXPECT_RC(0, npmcache_ensure("queued@1.0.0", on_ready, &r, NULL, &f->err));
	uint64_t deadline = now_ms() + 5000;
	while (log_lines(f) < 2 && now_ms() < deadline)
		sleep_ms(5);
	assert_int_equal(2, log_lines(f));
	uint64_t t0 = now_ms();
	npmcache_shutdown();
	uint64_t took = now_ms() - t0;
	if (took > 5000)
		fail_msg("shutdown took %llu ms", (unsigned long long)took);
	drain_until(NULL, 0, 50);
	assert_int_equal(0, r.calls); /* dropped, not called */
	assert_int_equal(2, log_lines(f));
	char names[4096];
	if (root_entries(f, names, sizeof names))
		fail_msg("ROOT should hold nothing but .npm and .home, has: %s", names);
	assert_null(npmcache_lookup("stuck@1.0.0"));
	/* and it starts again */
	set_knobs(f, "");
	OK(init_cache(f, 0));
	install(f, "stuck@1.0.0");
}

/* As root, with another uid: npm runs as that uid in a dir it owns, and the
 * installed tree then belongs to root.  Skipped where that cannot be set up. */
static void test_runs_as_given_uid(void **state)
{
	struct fx *f = *state;
	const uid_t nobody = 65534;
	if (geteuid() != 0)
		skip();
	npmcache_shutdown();
	work_drain_done();
	/* the uid must reach the wrapper, the knobs, the fixture and the log */
	chmod(f->dir, 0755);
	write_file(f->log, "", 0666);
	char probe[PATH_MAX + 300];
	snprintf(probe, sizeof probe,
		 "setpriv --reuid=%u --regid=%u --clear-groups sh -c 'test -x \"%s\" && "
		 "test -x \"%s\" && test -w \"%s\"' 2>/dev/null",
		 (unsigned)nobody, (unsigned)nobody, f->npm, fixture, f->log);
	if (system(probe) != 0)
		skip();
	OK(npmcache_init(f->st, f->root, f->npm, nobody, nobody, 0, &f->err));
	npm_pkg p = install(f, "dropped@1.0.0");
	char line[8192];
	log_text(f, line, sizeof line);
	EXPECT_STR_HAS(line, "uid=65534 ");
	struct stat sb;
	char path[PATH_MAX + 200];
	snprintf(path, sizeof path, "%s/.npm", f->root);
	assert_int_equal(0, stat(path, &sb));
	assert_int_equal(nobody, sb.st_uid);
	assert_int_equal(0, lstat(p.dir, &sb));
	assert_int_equal(0, sb.st_uid);
	snprintf(path, sizeof path, "%s/node_modules/dropped/package.json", p.dir);
	assert_int_equal(0, lstat(path, &sb));
	assert_int_equal(0, sb.st_uid);
	assert_int_equal(0644, sb.st_mode & 0777); /* npm ran with umask 022 */
	snprintf(path, sizeof path, "%s/node_modules/.bin/dropped", p.dir);
	assert_int_equal(0, lstat(path, &sb));
	assert_int_equal(0, sb.st_uid);
}

static void test_not_initialized(void **state)
{
	struct fx *f = *state;
	npmcache_shutdown();
	npmcache_shutdown(); /* twice is fine */
	assert_null(npmcache_lookup("x@1.0.0"));
	EXPECT_RC(-1, npmcache_ensure("x@1.0.0", on_ready, NULL, NULL, &f->err));
	OK(init_cache(f, 0));
	EXPECT_RC(-1, init_cache(f, 0));
	EXPECT_STR_HAS(f->err.msg, "already");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_key_is_content_address),
	    T(test_invalid_spec_no_run),
	    T(test_install_then_hit),
	    T(test_concurrent_ensures_share_one_run),
	    T(test_at_most_parallel_then_fifo),
	    T(test_failure_reports_output_leaves_nothing),
	    T(test_npm_missing),
	    T(test_bins),
	    T(test_restart_finds_package),
	    T(test_init_drops_row_without_dir),
	    T(test_init_removes_strays),
	    T(test_eviction_lru_never_pinned),
	    T(test_pin_persists_use),
	    T(test_shutdown_aborts_running_install),
	    T(test_runs_as_given_uid),
	    T(test_not_initialized),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
