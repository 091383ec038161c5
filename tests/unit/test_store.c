/* test_store.c — the store contract (store.h), run against every backend.
 *
 * Each backend is one line of `backends` below.  CMake reads that table and
 * registers unit.store.<name>, which runs this binary with the name as argv[1]
 * (no argument: every backend).  Each case gets a fresh, empty store.  What only
 * one backend can show (files, WAL, reopening) lives in test_store_<name>.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etcd_fixture.h"
#include "store.h"
#include "unit_util.h"

/* Open a new, empty store whose files (if any) go under dir, a fresh directory
 * removed after the case. */
typedef int (*backend_open_fn)(store **out, const char *dir, cx_err *err);

static int open_sqlite(store **out, const char *dir, cx_err *err)
{
	char path[600];
	if ((size_t)snprintf(path, sizeof path, "%s/cortex.db", dir) >= sizeof path)
		return cx_err_set(err, ENAMETOOLONG, "sqlite path under %s", dir);
	return store_open(out, "sqlite", path, err);
}

/* A real single-member etcd on loopback, its data under dir (etcd_fixture.h). */
static int open_etcd(store **out, const char *dir, cx_err *err)
{
	return etcd_fixture_open(out, dir, err);
}

struct backend {
	const char *name;
	backend_open_fn open;
};

/* One line per backend, in this form: CMake registers a ctest per line. */
static const struct backend backends[] = {
    {"sqlite", open_sqlite},
    {"etcd", open_etcd},
};

static const struct backend *backend; /* the one under test */

struct fx {
	char dir[512];
	store *s;
	cx_err err;
};

/* ---- assertions: the call, expected and actual, and the error text ---- */

#define EXPECT_RC(want, call)                                                                      \
	do {                                                                                       \
		int got_ = (call);                                                                 \
		if (got_ != (want))                                                                \
			fail_msg("%s\n  expected rc %d, got %d (err: \"%s\")", #call, (want),      \
				 got_, f->err.msg);                                                \
	} while (0)
#define OK(call) EXPECT_RC(0, call)

/* A refused call: -1, this errno-style code, and a message naming the cause. */
#define EXPECT_REFUSED(code_, needle, call)                                                        \
	do {                                                                                       \
		cx_err_clear(&f->err);                                                             \
		EXPECT_RC(-1, call);                                                               \
		if (f->err.code != (code_))                                                        \
			fail_msg("%s\n  expected err.code %d, got %d (\"%s\")", #call, (code_),    \
				 f->err.code, f->err.msg);                                         \
		EXPECT_MSG_HAS(needle);                                                            \
	} while (0)

#define EXPECT_MSG_HAS(needle)                                                                     \
	do {                                                                                       \
		if (!strstr(f->err.msg, (needle)))                                                 \
			fail_msg("error message should mention \"%s\"\n  actual: \"%s\"",          \
				 (needle), f->err.msg);                                            \
	} while (0)

#define EXPECT_SIZE(want, got)                                                                     \
	do {                                                                                       \
		size_t w_ = (want), g_ = (got);                                                    \
		if (w_ != g_)                                                                      \
			fail_msg("%s: expected %zu, got %zu", #got, w_, g_);                       \
	} while (0)

#define EXPECT_REV(want)                                                                           \
	do {                                                                                       \
		int64_t w_ = (want), g_ = revision(f);                                             \
		if (w_ != g_)                                                                      \
			fail_msg("revision: expected %lld, got %lld", (long long)w_,               \
				 (long long)g_);                                                   \
	} while (0)

/* ---- fixture ---- */

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	char prefix[64];
	snprintf(prefix, sizeof prefix, "store-%s", backend->name);
	if (unit_tmpdir(prefix, f->dir, sizeof f->dir) < 0) {
		free(f);
		return -1;
	}
	if (backend->open(&f->s, f->dir, &f->err) < 0) {
		fprintf(stderr, "opening a %s store: %s\n", backend->name, f->err.msg);
		cx_rm_rf(f->dir);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	store_close(f->s);
	cx_rm_rf(f->dir);
	free(f);
	return 0;
}

/* ---- helpers ---- */

static void put_str(struct fx *f, const char *key, const char *val)
{
	OK(store_put(f->s, key, val, strlen(val), &f->err));
}

static void check_value(struct fx *f, const char *key, const void *want, size_t want_len)
{
	char *got = NULL;
	size_t got_len = 0;
	OK(store_get(f->s, key, &got, &got_len, &f->err));
	EXPECT_SIZE(want_len, got_len);
	assert_memory_equal(want, got, want_len);
	if (got[got_len] != '\0')
		fail_msg("value of '%s' is not NUL-terminated", key);
	free(got);
}

static void check_str(struct fx *f, const char *key, const char *want)
{
	check_value(f, key, want, strlen(want));
}

/* Absent: CX_NOTFOUND, *out NULL, *out_len 0, and no error text (not an error). */
static void check_absent(struct fx *f, const char *key)
{
	char *got = (char *)"sentinel";
	size_t got_len = 99;
	cx_err_clear(&f->err);
	EXPECT_RC(CX_NOTFOUND, store_get(f->s, key, &got, &got_len, &f->err));
	assert_null(got);
	EXPECT_SIZE(0, got_len);
	if (f->err.code || f->err.msg[0])
		fail_msg("CX_NOTFOUND for '%s' came with an error: %d \"%s\"", key, f->err.code,
			 f->err.msg);
}

static int64_t revision(struct fx *f)
{
	int64_t rev = -1;
	OK(store_revision(f->s, &rev, &f->err));
	return rev;
}

/* The keys under prefix, in the order listed, as one "k1|k2|..." string. */
static void list_keys(struct fx *f, const char *prefix, size_t limit, char *out, size_t cap)
{
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, prefix, limit, &kv, &n, &f->err));
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int w = snprintf(out + used, cap - used, "%s%s", i ? "|" : "", kv[i].key);
		if (w < 0 || (size_t)w >= cap - used)
			fail_msg("list_keys: %zu keys do not fit in %zu bytes", n, cap);
		used += (size_t)w;
	}
	store_kv_free(kv, n);
}

#define EXPECT_KEYS(want, prefix, limit)                                                           \
	do {                                                                                       \
		char got_[4096];                                                                   \
		list_keys(f, (prefix), (limit), got_, sizeof got_);                                \
		if (strcmp((want), got_) != 0)                                                     \
			fail_msg("list(\"%s\", limit %zu)\n  expected: %s\n  actual:   %s",        \
				 (prefix), (size_t)(limit), (want), got_);                         \
	} while (0)

/* ---- get / put / delete ---- */

static void test_put_get_round_trip(void **state)
{
	struct fx *f = *state;
	put_str(f, "users/alice", "hello");
	check_str(f, "users/alice", "hello");
	char *v = NULL;
	OK(store_get(f->s, "users/alice", &v, NULL, &f->err)); /* out_len may be NULL */
	assert_string_equal("hello", v);
	free(v);
}

static void test_overwrite(void **state)
{
	struct fx *f = *state;
	put_str(f, "k", "first value");
	put_str(f, "k", "2nd");
	check_str(f, "k", "2nd");
	put_str(f, "k", "a longer third value");
	check_str(f, "k", "a longer third value");
}

static void test_binary_values(void **state)
{
	struct fx *f = *state;
	char all[256];
	for (size_t i = 0; i < sizeof all; i++)
		all[i] = (char)(255 - i); /* starts with 0xff, ends with a NUL */
	OK(store_put(f->s, "bin/all", all, sizeof all, &f->err));
	const char nuls[] = {0, 0, 'a', 0};
	OK(store_put(f->s, "bin/nuls", nuls, sizeof nuls, &f->err));
	size_t big_len = 1u << 20;
	char *big = malloc(big_len);
	assert_non_null(big);
	uint32_t x = 2463534242u; /* xorshift: every byte value, no pattern */
	for (size_t i = 0; i < big_len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		big[i] = (char)(x & 0xff);
	}
	OK(store_put(f->s, "bin/big", big, big_len, &f->err));
	check_value(f, "bin/all", all, sizeof all);
	check_value(f, "bin/nuls", nuls, sizeof nuls);
	check_value(f, "bin/big", big, big_len);

	/* list hands back the same bytes and lengths */
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "bin/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(3, n);
	assert_string_equal("bin/all", kv[0].key);
	EXPECT_SIZE(sizeof all, kv[0].len);
	assert_memory_equal(all, kv[0].val, sizeof all);
	assert_string_equal("bin/big", kv[1].key);
	EXPECT_SIZE(big_len, kv[1].len);
	assert_memory_equal(big, kv[1].val, big_len);
	assert_string_equal("bin/nuls", kv[2].key);
	EXPECT_SIZE(sizeof nuls, kv[2].len);
	assert_memory_equal(nuls, kv[2].val, sizeof nuls);
	for (size_t i = 0; i < n; i++)
		if (kv[i].val[kv[i].len] != '\0')
			fail_msg("listed value of '%s' is not NUL-terminated", kv[i].key);
	store_kv_free(kv, n);
	free(big);
}

static void test_empty_value(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "e/null", NULL, 0, &f->err));
	OK(store_put(f->s, "e/str", "", 0, &f->err));
	check_value(f, "e/null", "", 0);
	check_value(f, "e/str", "", 0);
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "e/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(2, n);
	for (size_t i = 0; i < n; i++) {
		EXPECT_SIZE(0, kv[i].len);
		assert_non_null(kv[i].val);
		assert_string_equal("", kv[i].val);
	}
	store_kv_free(kv, n);
}

/* Keys are byte strings: near-identical keys are distinct, any non-NUL byte works. */
static void test_keys_are_bytes(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {"k",     "K",  "k ",  " k", "k\x01", "k\x7f", "k\x80", "k\xc3\xa9",
			      "k\xff", "k/", "k\\", "k'", "k\"",   "k%",    "k_",    "k*"};
	size_t nk = sizeof keys / sizeof *keys;
	for (size_t i = 0; i < nk; i++) {
		char v[16];
		snprintf(v, sizeof v, "v%zu", i);
		put_str(f, keys[i], v);
	}
	for (size_t i = 0; i < nk; i++) {
		char v[16];
		snprintf(v, sizeof v, "v%zu", i);
		check_str(f, keys[i], v);
	}
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "", 0, &kv, &n, &f->err));
	EXPECT_SIZE(nk, n);
	store_kv_free(kv, n);
}

static void test_get_absent(void **state)
{
	struct fx *f = *state;
	check_absent(f, "nope");
	put_str(f, "nope/child", "x"); /* a longer key is not the key */
	put_str(f, "nop", "x");	       /* nor a shorter one */
	check_absent(f, "nope");
}

static void test_delete(void **state)
{
	struct fx *f = *state;
	cx_err_clear(&f->err);
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "k", &f->err));
	if (f->err.code || f->err.msg[0])
		fail_msg("CX_NOTFOUND from delete came with an error: \"%s\"", f->err.msg);
	put_str(f, "k", "v");
	put_str(f, "k/child", "v");
	put_str(f, "j", "v");
	OK(store_delete(f->s, "k", &f->err));
	check_absent(f, "k");
	check_str(f, "k/child", "v"); /* delete is by exact key, not prefix */
	check_str(f, "j", "v");
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "k", &f->err));
	put_str(f, "k", "again"); /* a deleted key can come back */
	check_str(f, "k", "again");
}

/* CX_NOTFOUND comes from get and delete of an absent key, and from nothing else. */
static void test_notfound_only_where_documented(void **state)
{
	struct fx *f = *state;
	OK(store_put(f->s, "new", "v", 1, &f->err)); /* creating is not "not found" */
	store_kv *kv = NULL;
	size_t n = 99;
	OK(store_list(f->s, "absent/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(0, n);
	store_kv_free(kv, n);
	n = 99;
	OK(store_delete_prefix(f->s, "absent/", &n, &f->err));
	EXPECT_SIZE(0, n);
	store_op del[] = {{STORE_DEL, "absent/1", NULL, 0}, {STORE_DEL, "absent/2", NULL, 0}};
	OK(store_txn(f->s, del, 2, &f->err));
	/* a refused key is an error, not "not found" */
	EXPECT_RC(-1, store_get(f->s, "", &(char *){NULL}, NULL, &f->err));
	EXPECT_RC(-1, store_delete(f->s, "", &f->err));
}

/* ---- list ---- */

/* Keys chosen so a LIKE-based or off-by-one range scan would get them wrong. */
static void test_list_prefix_boundaries(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {
	    "a",  "a/", "a/%", "a/_x", "a/b",  "a/b/c",	     "a/\xff", "a/\xff\xff", "a0",   "a.",
	    "b/", "ab", "A/x", "a/z",  "\xff", "\xff\xff/1", "a%/x",   "a_/x",	     "aa/x",
	};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		put_str(f, keys[i], keys[i]);

	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "a/", 0, &kv, &n, &f->err));
	const char *want[] = {"a/", "a/%", "a/_x", "a/b", "a/b/c", "a/z", "a/\xff", "a/\xff\xff"};
	EXPECT_SIZE(sizeof want / sizeof *want, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(want[i], kv[i].key);
		EXPECT_SIZE(strlen(want[i]), kv[i].len);
		assert_memory_equal(want[i], kv[i].val, kv[i].len);
	}
	store_kv_free(kv, n);

	EXPECT_KEYS("a%/x", "a%", 0); /* % and _ are bytes, not wildcards */
	EXPECT_KEYS("a_/x", "a_", 0);
	EXPECT_KEYS("a/\xff|a/\xff\xff", "a/\xff", 0); /* the successor carries */
	EXPECT_KEYS("\xff|\xff\xff/1", "\xff", 0);     /* all 0xff: open-ended */
	EXPECT_KEYS("a/b|a/b/c", "a/b", 0);	       /* the key equal to the prefix is in */
	EXPECT_KEYS("", "zzz", 0);
	EXPECT_KEYS("", "a/b/c/", 0);
}

/* Key order is byte order (unsigned, like memcmp), whatever the insert order. */
static void test_list_key_order(void **state)
{
	struct fx *f = *state;
	const char *sorted[] = {"\x01", " ", "0", "A",	  "Z",	  "a",	      "a\x01",
				"ab",	"b", "z", "\x7f", "\x80", "\xc3\xa9", "\xff"};
	size_t n = sizeof sorted / sizeof *sorted;
	for (size_t i = 0; i < n; i++) /* insert in a scrambled order */
		put_str(f, sorted[(i * 5 + 3) % n], "v");
	store_kv *kv = NULL;
	size_t got = 0;
	OK(store_list(f->s, "", 0, &kv, &got, &f->err));
	EXPECT_SIZE(n, got);
	for (size_t i = 0; i < got; i++)
		if (strcmp(sorted[i], kv[i].key) != 0)
			fail_msg("key %zu: expected \"%s\", got \"%s\"", i, sorted[i], kv[i].key);
	store_kv_free(kv, got);
}

static void test_list_limit(void **state)
{
	struct fx *f = *state;
	put_str(f, "s/before", "x"); /* outside the prefix, on both sides */
	put_str(f, "u/after", "x");
	for (int i = 9; i >= 0; i--) {
		char k[32];
		snprintf(k, sizeof k, "t/%02d", i);
		put_str(f, k, "x");
	}
	EXPECT_KEYS("t/00", "t/", 1);
	EXPECT_KEYS("t/00|t/01|t/02", "t/", 3);
	const char *all = "t/00|t/01|t/02|t/03|t/04|t/05|t/06|t/07|t/08|t/09";
	EXPECT_KEYS(all, "t/", 10);
	EXPECT_KEYS(all, "t/", 11);
	EXPECT_KEYS(all, "t/", 0); /* 0 = no limit */
	EXPECT_KEYS(all, "t/", SIZE_MAX);
	EXPECT_KEYS("s/before|t/00", "", 2);
}

/* Paging with a cursor: only keys after it, still inside the prefix. */
static void test_list_after(void **state)
{
	struct fx *f = *state;
	put_str(f, "s/before", "x");
	put_str(f, "u/after", "x");
	for (int i = 0; i < 5; i++) {
		char k[32];
		snprintf(k, sizeof k, "t/%02d", i);
		put_str(f, k, "x");
	}
	const char *want[] = {"t/02|t/03", "t/04", ""};
	const char *after = "t/01";
	char got[256];
	for (int page = 0; page < 3; page++) {
		store_kv *kv = NULL;
		size_t n = 0;
		OK(store_list_after(f->s, "t/", after, 2, &kv, &n, &f->err));
		got[0] = '\0';
		for (size_t i = 0; i < n; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? "|" : "", kv[i].key);
		if (strcmp(got, want[page]))
			fail_msg("page %d after %s: expected %s, got %s", page, after, want[page], got);
		static char last[64];
		if (n)
			snprintf(last, sizeof last, "%s", kv[n - 1].key);
		after = last;
		store_kv_free(kv, n);
	}
	/* NULL and "" are "from the start"; a cursor past the prefix gives nothing. */
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list_after(f->s, "t/", NULL, 0, &kv, &n, &f->err));
	assert_int_equal(n, 5);
	store_kv_free(kv, n);
	OK(store_list_after(f->s, "t/", "", 0, &kv, &n, &f->err));
	assert_int_equal(n, 5);
	store_kv_free(kv, n);
	OK(store_list_after(f->s, "t/", "t/99", 0, &kv, &n, &f->err));
	assert_int_equal(n, 0);
	store_kv_free(kv, n);
	OK(store_list_after(f->s, "t/", "a", 0, &kv, &n, &f->err)); /* before the prefix: all of it */
	assert_int_equal(n, 5);
	store_kv_free(kv, n);
}

/* ---- txn ---- */

static void test_txn_commits_all(void **state)
{
	struct fx *f = *state;
	put_str(f, "x/old", "o");
	put_str(f, "x/2", "before");
	int64_t rev0 = revision(f);
	store_op ops[] = {
	    {STORE_PUT, "x/1", "one", 3},      {STORE_PUT, "x/2", "two", 3},
	    {STORE_DEL, "x/old", NULL, 0},     {STORE_DEL, "x/never-existed", NULL, 0},
	    {STORE_PUT, "x/bin", "\0\xff", 2}, {STORE_PUT, "x/empty", NULL, 0},
	};
	OK(store_txn(f->s, ops, sizeof ops / sizeof *ops, &f->err));
	check_str(f, "x/1", "one");
	check_str(f, "x/2", "two");
	check_absent(f, "x/old");
	check_absent(f, "x/never-existed");
	check_value(f, "x/bin", "\0\xff", 2);
	check_value(f, "x/empty", "", 0);
	EXPECT_REV(rev0 + 1); /* one revision per transaction, like etcd */
}

static void test_txn_many_ops(void **state)
{
	struct fx *f = *state;
	enum { N = 100 };
	char keys[N][16];
	store_op ops[N];
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof keys[i], "m/%03d", i);
		ops[i] = (store_op){STORE_PUT, keys[i], keys[i], strlen(keys[i])};
	}
	int64_t rev0 = revision(f);
	OK(store_txn(f->s, ops, N, &f->err));
	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "m/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(N, n);
	store_kv_free(kv, n);
	EXPECT_REV(rev0 + 1);
}

/* A refused op refuses the whole transaction, before anything is applied. */
static void test_txn_invalid_op_stores_nothing(void **state)
{
	struct fx *f = *state;
	put_str(f, "x/keep", "kept");
	int64_t rev0 = revision(f);
	char long_key[STORE_KEY_MAX + 2];
	memset(long_key, 'k', sizeof long_key - 1);
	long_key[sizeof long_key - 1] = '\0';
	static char big[1]; /* never read: the length is refused first */
	struct {
		store_op bad;
		int code;
		const char *msg;
	} cases[] = {
	    {{STORE_PUT, "", "bad", 3}, EINVAL, "empty key"},
	    {{STORE_DEL, NULL, NULL, 0}, EINVAL, "empty key"},
	    {{STORE_PUT, long_key, "v", 1}, EINVAL, "longer than 1024"},
	    {{STORE_DEL, long_key, NULL, 0}, EINVAL, "longer than 1024"},
	    {{STORE_PUT, "x/big", big, STORE_VAL_MAX + 1u}, EFBIG, "max 16777216"},
	    {{STORE_PUT, "x/null", NULL, 3}, EINVAL, "NULL value"},
	    {{(store_op_kind)7, "x/kind", NULL, 0}, EINVAL, "unknown op kind 7"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		store_op ops[] = {
		    {STORE_PUT, "x/1", "one", 3},
		    {STORE_DEL, "x/keep", NULL, 0},
		    cases[i].bad,
		    {STORE_PUT, "x/4", "four", 4},
		};
		EXPECT_REFUSED(cases[i].code, cases[i].msg, store_txn(f->s, ops, 4, &f->err));
		EXPECT_MSG_HAS("op 3 of 4");
		check_absent(f, "x/1");
		check_str(f, "x/keep", "kept");
		check_absent(f, "x/4");
		EXPECT_REV(rev0);
	}
	EXPECT_REFUSED(EINVAL, "no op array", store_txn(f->s, NULL, 2, &f->err));
	EXPECT_REV(rev0);
}

static void test_txn_empty(void **state)
{
	struct fx *f = *state;
	put_str(f, "k", "v");
	int64_t rev0 = revision(f);
	OK(store_txn(f->s, NULL, 0, &f->err));
	store_op unused = {STORE_DEL, "k", NULL, 0};
	OK(store_txn(f->s, &unused, 0, &f->err));
	check_str(f, "k", "v");
	EXPECT_REV(rev0); /* nothing committed, nothing to count */
}

/* ---- delete_prefix ---- */

static void test_delete_prefix(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {"s/u/1", "s/u/2", "s/u/3/x", "s/u", "s/v/1", "s/u0", "s/t"};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		put_str(f, keys[i], "v");
	int64_t rev0 = revision(f);
	size_t n = 99;
	OK(store_delete_prefix(f->s, "s/u/", &n, &f->err));
	EXPECT_SIZE(3, n);
	EXPECT_REV(rev0 + 1); /* three keys, one revision */
	EXPECT_KEYS("s/t|s/u|s/u0|s/v/1", "s/", 0);

	n = 99;
	OK(store_delete_prefix(f->s, "s/u/", &n, &f->err));
	EXPECT_SIZE(0, n);
	EXPECT_REV(rev0 + 1); /* removed nothing: no bump */

	OK(store_delete_prefix(f->s, "s/u", NULL, &f->err)); /* out_n may be NULL */
	EXPECT_KEYS("s/t|s/v/1", "s/", 0);
	EXPECT_REV(rev0 + 2);
}

static void test_delete_prefix_byte_edges(void **state)
{
	struct fx *f = *state;
	const char *keys[] = {"\xfe", "\xff", "\xff\xff/1", "a/\xff", "a/\xff\xff", "a0", "a/z"};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		put_str(f, keys[i], "v");
	size_t n = 0;
	OK(store_delete_prefix(f->s, "\xff", &n, &f->err));
	EXPECT_SIZE(2, n);
	OK(store_delete_prefix(f->s, "a/\xff", &n, &f->err));
	EXPECT_SIZE(2, n);
	OK(store_delete_prefix(f->s, "a%", &n, &f->err)); /* % is a byte, not a wildcard */
	EXPECT_SIZE(0, n);
	EXPECT_KEYS("a/z|a0|\xfe", "", 0);
}

static void test_delete_prefix_empty_refused(void **state)
{
	struct fx *f = *state;
	put_str(f, "a", "v");
	put_str(f, "b/c", "v");
	int64_t rev0 = revision(f);
	size_t n = 99;
	EXPECT_REFUSED(EINVAL, "empty prefix", store_delete_prefix(f->s, "", &n, &f->err));
	EXPECT_SIZE(0, n);
	EXPECT_KEYS("a|b/c", "", 0);
	EXPECT_REV(rev0);
}

/* ---- revision ---- */

static void test_revision_starts_at_zero(void **state)
{
	struct fx *f = *state;
	EXPECT_REV(0);
}

/* Bumped once per committed write: put, delete that removed something, txn,
 * delete_prefix that removed something.  Reads and refusals leave it alone. */
static void test_revision_rules(void **state)
{
	struct fx *f = *state;
	int64_t r = revision(f);
	put_str(f, "r/1", "a");
	EXPECT_REV(++r);
	put_str(f, "r/1", "b"); /* overwrite */
	EXPECT_REV(++r);
	put_str(f, "r/1", "b"); /* same value again: still a write */
	EXPECT_REV(++r);

	char *v = NULL;
	OK(store_get(f->s, "r/1", &v, NULL, &f->err));
	free(v);
	check_absent(f, "r/none");
	EXPECT_KEYS("r/1", "r/", 0);
	EXPECT_REV(r);

	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "r/none", &f->err));
	EXPECT_REV(r);
	OK(store_delete(f->s, "r/1", &f->err));
	EXPECT_REV(++r);

	store_op ops[] = {{STORE_PUT, "r/2", "x", 1}, {STORE_PUT, "r/3", "y", 1}};
	OK(store_txn(f->s, ops, 2, &f->err));
	EXPECT_REV(++r);
	store_op dels[] = {{STORE_DEL, "r/none", NULL, 0}};
	OK(store_txn(f->s, dels, 1, &f->err)); /* a committed txn counts, removed or not */
	EXPECT_REV(++r);

	OK(store_delete_prefix(f->s, "r/none/", NULL, &f->err));
	EXPECT_REV(r);
	OK(store_delete_prefix(f->s, "r/", NULL, &f->err));
	EXPECT_REV(++r);

	EXPECT_RC(-1, store_put(f->s, "", "v", 1, &f->err));
	EXPECT_RC(-1, store_delete_prefix(f->s, "", NULL, &f->err));
	EXPECT_REV(r);
}

/* ---- limits, enforced by the front for every backend ---- */

static void test_key_limits(void **state)
{
	struct fx *f = *state;
	char key[STORE_KEY_MAX + 2];
	memset(key, 'k', sizeof key - 1);
	key[STORE_KEY_MAX] = '\0'; /* exactly the maximum: allowed everywhere */
	put_str(f, key, "v");
	check_str(f, key, "v");
	EXPECT_KEYS(key, key, 0);
	OK(store_delete(f->s, key, &f->err));
	put_str(f, key, "v");
	size_t n = 0;
	OK(store_delete_prefix(f->s, key, &n, &f->err));
	EXPECT_SIZE(1, n);

	key[STORE_KEY_MAX] = 'k'; /* one over: refused everywhere */
	key[STORE_KEY_MAX + 1] = '\0';
	int64_t rev0 = revision(f);
	char *v = NULL;
	store_kv *kv = NULL;
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_put(f->s, key, "v", 1, &f->err));
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_get(f->s, key, &v, NULL, &f->err));
	assert_null(v);
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_delete(f->s, key, &f->err));
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_list(f->s, key, 0, &kv, &n, &f->err));
	assert_null(kv);
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_delete_prefix(f->s, key, &n, &f->err));
	store_op op = {STORE_PUT, key, "v", 1};
	EXPECT_REFUSED(EINVAL, "longer than 1024", store_txn(f->s, &op, 1, &f->err));

	EXPECT_REFUSED(EINVAL, "empty key", store_put(f->s, "", "v", 1, &f->err));
	EXPECT_REFUSED(EINVAL, "empty key", store_put(f->s, NULL, "v", 1, &f->err));
	EXPECT_REFUSED(EINVAL, "empty key", store_get(f->s, "", &v, NULL, &f->err));
	EXPECT_REFUSED(EINVAL, "empty key", store_delete(f->s, "", &f->err));
	EXPECT_REFUSED(EINVAL, "NULL prefix", store_list(f->s, NULL, 0, &kv, &n, &f->err));
	EXPECT_REV(rev0);
	EXPECT_KEYS("", "", 0);
}

static void test_value_limits(void **state)
{
	struct fx *f = *state;
	put_str(f, "big", "old");
	int64_t rev0 = revision(f);
	size_t over = STORE_VAL_MAX + 1u;
	char *val = malloc(over);
	assert_non_null(val);
	memset(val, 'v', over);
	EXPECT_REFUSED(EFBIG, "max 16777216", store_put(f->s, "big", val, over, &f->err));
	check_str(f, "big", "old"); /* a refused overwrite keeps the old value */
	EXPECT_REFUSED(EINVAL, "NULL value", store_put(f->s, "big", NULL, 1, &f->err));
	check_str(f, "big", "old");
	EXPECT_REV(rev0);

	val[0] = 'A'; /* exactly the maximum: stored and read back whole */
	val[STORE_VAL_MAX - 1] = 'Z';
	OK(store_put(f->s, "big", val, STORE_VAL_MAX, &f->err));
	char *got = NULL;
	size_t got_len = 0;
	OK(store_get(f->s, "big", &got, &got_len, &f->err));
	EXPECT_SIZE(STORE_VAL_MAX, got_len);
	assert_memory_equal(val, got, STORE_VAL_MAX);
	free(got);
	free(val);
}

/* ---- several threads on one store ---- */

#define CC_WRITERS  3
#define CC_PUTS	    150
#define CC_TXNS	    150
#define CC_DELETES  60
#define CC_READERS  2
#define CC_TORN_LEN 97

struct cc {
	store *s;
	int id;
	int stop; /* readers run until the writers are done; atomic */
	int failures;
	int64_t writes;
	char first_err[512];
};

static void cc_fail(struct cc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cc_fail(struct cc *c, const char *fmt, ...)
{
	if (c->failures++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->first_err, sizeof c->first_err, fmt, ap);
		va_end(ap);
	}
}

/* Own keys c/<id>/<i>, plus overwrites of one shared key with values a reader
 * can check for tearing: CC_TORN_LEN + k bytes, all equal to 'a' + k. */
static void *cc_writer(void *arg)
{
	struct cc *c = arg;
	char torn[CC_TORN_LEN + 26];
	for (int i = 0; i < CC_PUTS; i++) {
		char key[64], val[64];
		snprintf(key, sizeof key, "c/%d/%04d", c->id, i);
		int n = snprintf(val, sizeof val, "w%d-%d", c->id, i);
		cx_err err = CX_ERR_INIT;
		if (store_put(c->s, key, val, (size_t)n, &err) < 0)
			cc_fail(c, "put %s: %s", key, err.msg);
		else
			c->writes++;
		if (i % 10 == 0) {
			int k = (c->id * 7 + i) % 26;
			memset(torn, 'a' + k, sizeof torn);
			if (store_put(c->s, "torn", torn, (size_t)(CC_TORN_LEN + k), &err) < 0)
				cc_fail(c, "put torn: %s", err.msg);
			else
				c->writes++;
		}
	}
	return NULL;
}

/* Pairs p/a and p/b always written together, with the same value. */
static void *cc_txn(void *arg)
{
	struct cc *c = arg;
	for (int i = 1; i <= CC_TXNS; i++) {
		char v[32];
		int n = snprintf(v, sizeof v, "%06d", i);
		store_op ops[] = {{STORE_PUT, "p/a", v, (size_t)n},
				  {STORE_PUT, "p/b", v, (size_t)n}};
		cx_err err = CX_ERR_INIT;
		if (store_txn(c->s, ops, 2, &err) < 0)
			cc_fail(c, "txn %d: %s", i, err.msg);
		else
			c->writes++;
	}
	return NULL;
}

/* Put then delete its own keys; each delete must find the key it put. */
static void *cc_deleter(void *arg)
{
	struct cc *c = arg;
	for (int i = 0; i < CC_DELETES; i++) {
		char key[32];
		snprintf(key, sizeof key, "d/%04d", i);
		cx_err err = CX_ERR_INIT;
		if (store_put(c->s, key, "x", 1, &err) < 0) {
			cc_fail(c, "put %s: %s", key, err.msg);
			continue;
		}
		c->writes++;
		int r = store_delete(c->s, key, &err);
		if (r != 0)
			cc_fail(c, "delete %s: rc %d (%s)", key, r, err.msg);
		else
			c->writes++;
	}
	return NULL;
}

static void cc_read_once(struct cc *c, int64_t *last_rev)
{
	cx_err err = CX_ERR_INIT;
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(c->s, "p/", 0, &kv, &n, &err) < 0) {
		cc_fail(c, "list p/: %s", err.msg);
		return;
	}
	if (n == 1 ||
	    (n == 2 && (kv[0].len != kv[1].len || memcmp(kv[0].val, kv[1].val, kv[0].len) != 0)))
		cc_fail(c, "half a txn seen: %zu keys, %s", n, n ? kv[0].val : "");
	store_kv_free(kv, n);

	char *v = NULL;
	size_t len = 0;
	int r = store_get(c->s, "torn", &v, &len, &err);
	if (r == 0) {
		size_t k = len - CC_TORN_LEN;
		if (len < CC_TORN_LEN || k >= 26)
			cc_fail(c, "torn value of %zu bytes", len);
		else
			for (size_t i = 0; i < len; i++)
				if (v[i] != (char)('a' + k)) {
					cc_fail(c, "torn value: byte %zu is '%c' in %zu bytes", i,
						v[i], len);
					break;
				}
		free(v);
	} else if (r != CX_NOTFOUND) {
		cc_fail(c, "get torn: rc %d (%s)", r, err.msg);
	}

	char key[32];
	snprintf(key, sizeof key, "c/%d/%04d", c->id % CC_WRITERS, (int)(*last_rev % CC_PUTS));
	r = store_get(c->s, key, &v, NULL, &err);
	if (r == 0)
		free(v);
	else if (r != CX_NOTFOUND)
		cc_fail(c, "get %s: rc %d (%s)", key, r, err.msg);

	int64_t rev = 0;
	if (store_revision(c->s, &rev, &err) < 0)
		cc_fail(c, "revision: %s", err.msg);
	else if (rev < *last_rev)
		cc_fail(c, "revision went back: %lld after %lld", (long long)rev,
			(long long)*last_rev);
	else
		*last_rev = rev;
}

static void *cc_reader(void *arg)
{
	struct cc *c = arg;
	int64_t last_rev = 0;
	int rounds = 0;
	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) || rounds == 0) {
		cc_read_once(c, &last_rev);
		rounds++;
	}
	return NULL;
}

static void test_concurrent_use(void **state)
{
	struct fx *f = *state;
	int64_t rev0 = revision(f);
	enum { NW = CC_WRITERS + 2, NT = NW + CC_READERS };
	struct cc c[NT];
	pthread_t th[NT];
	for (int i = 0; i < NT; i++) {
		c[i] = (struct cc){.s = f->s, .id = i};
		void *(*fn)(void *) = i < CC_WRITERS	    ? cc_writer
				      : i == CC_WRITERS	    ? cc_txn
				      : i == CC_WRITERS + 1 ? cc_deleter
							    : cc_reader;
		assert_int_equal(0, pthread_create(&th[i], NULL, fn, &c[i]));
	}
	for (int i = 0; i < NW; i++)
		pthread_join(th[i], NULL);
	for (int i = NW; i < NT; i++) {
		__atomic_store_n(&c[i].stop, 1, __ATOMIC_RELEASE);
		pthread_join(th[i], NULL);
	}
	int64_t writes = 0;
	for (int i = 0; i < NT; i++) {
		if (c[i].failures)
			fail_msg("thread %d: %d failures, first: %s", i, c[i].failures,
				 c[i].first_err);
		writes += c[i].writes;
	}

	store_kv *kv = NULL;
	size_t n = 0;
	OK(store_list(f->s, "c/", 0, &kv, &n, &f->err));
	EXPECT_SIZE(CC_WRITERS * CC_PUTS, n);
	for (size_t i = 0; i < n; i++) {
		char want[64];
		snprintf(want, sizeof want, "w%zu-%zu", i / CC_PUTS, i % CC_PUTS);
		assert_string_equal(want, kv[i].val);
	}
	store_kv_free(kv, n);
	char last[32];
	snprintf(last, sizeof last, "%06d", CC_TXNS);
	check_str(f, "p/a", last);
	check_str(f, "p/b", last);
	EXPECT_KEYS("", "d/", 0);
	EXPECT_REV(rev0 + writes); /* no write lost or counted twice */
}


/* ---- watch ---- */

#define WATCH_MAX 64

struct wlog {
	pthread_mutex_t mu;
	int n;
	struct {
		store_event_kind kind;
		char key[64];
		char val[64];
		int64_t rev;
	} ev[WATCH_MAX];
};

static void wlog_cb(void *arg, const store_event *ev)
{
	struct wlog *l = arg;
	pthread_mutex_lock(&l->mu);
	if (l->n < WATCH_MAX) {
		l->ev[l->n].kind = ev->kind;
		snprintf(l->ev[l->n].key, sizeof l->ev[0].key, "%s", ev->key ? ev->key : "");
		snprintf(l->ev[l->n].val, sizeof l->ev[0].val, "%.*s", (int)ev->len,
			 ev->val ? ev->val : "");
		l->ev[l->n].rev = ev->rev;
	}
	l->n++;
	pthread_mutex_unlock(&l->mu);
}

/* Wait (up to 10 s) until the watch saw n events; then how many it saw. */
static int wlog_wait(struct wlog *l, int n)
{
	for (int i = 0; i < 1000; i++) {
		pthread_mutex_lock(&l->mu);
		int got = l->n;
		pthread_mutex_unlock(&l->mu);
		if (got >= n)
			return got;
		usleep(10 * 1000);
	}
	return l->n;
}

/* "P:key=val@rev|D:key@rev|..." of what was seen. */
static void wlog_str(struct wlog *l, int64_t base, char *out, size_t cap)
{
	size_t used = 0;
	out[0] = '\0';
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n && i < WATCH_MAX; i++) {
		int w;
		if (l->ev[i].kind == STORE_EV_PUT)
			w = snprintf(out + used, cap - used, "%sP:%s=%s@%lld", i ? "|" : "",
				     l->ev[i].key, l->ev[i].val, (long long)(l->ev[i].rev - base));
		else
			w = snprintf(out + used, cap - used, "%s%c:%s@%lld", i ? "|" : "",
				     l->ev[i].kind == STORE_EV_DEL ? 'D' : 'R', l->ev[i].key,
				     (long long)(l->ev[i].rev - base));
		if (w < 0 || (size_t)w >= cap - used)
			break;
		used += (size_t)w;
	}
	pthread_mutex_unlock(&l->mu);
}

#define EXPECT_EVENTS(want, l, base)                                                               \
	do {                                                                                       \
		char got_[2048];                                                                   \
		wlog_str((l), (base), got_, sizeof got_);                                          \
		if (strcmp((want), got_) != 0)                                                     \
			fail_msg("watch events (revisions relative)\n  expected: %s\n  actual:   %s", \
				 (want), got_);                                                    \
	} while (0)

/* Every committed write under the prefix, in order, with its revision; one
 * revision for all events of a txn or delete_prefix; nothing from outside. */
static void test_watch_events(void **state)
{
	struct fx *f = *state;
	put_str(f, "w/old", "before"); /* before the watch: not seen */
	int64_t base = revision(f);
	struct wlog l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	store_watch *w = NULL;
	OK(store_watch_start(f->s, "w/", 0, wlog_cb, &l, &w, &f->err));
	put_str(f, "w/a", "1");
	put_str(f, "x/a", "outside");
	put_str(f, "w", "not under w/");
	OK(store_delete(f->s, "w/a", &f->err));
	EXPECT_RC(CX_NOTFOUND, store_delete(f->s, "w/a", &f->err)); /* no write, no event */
	store_op ops[] = {{STORE_PUT, "w/b", "2", 1}, {STORE_PUT, "w/c", "3", 1},
			  {STORE_DEL, "w/none", NULL, 0}};
	OK(store_txn(f->s, ops, 3, &f->err));
	OK(store_delete_prefix(f->s, "w/", NULL, &f->err));
	assert_int_equal(7, wlog_wait(&l, 7));
	usleep(100 * 1000); /* nothing more comes */
	EXPECT_EVENTS("P:w/a=1@1|D:w/a@4|P:w/b=2@5|P:w/c=3@5|D:w/b@6|D:w/c@6|D:w/old@6", &l, base);
	store_watch_cancel(w);
}

/* from_rev replays what was written since; cancel stops delivery. */
static void test_watch_from_rev_and_cancel(void **state)
{
	struct fx *f = *state;
	struct wlog keep = {.mu = PTHREAD_MUTEX_INITIALIZER};
	store_watch *kw = NULL; /* an unrelated watch stays open meanwhile */
	OK(store_watch_start(f->s, "zz/", 0, wlog_cb, &keep, &kw, &f->err));
	put_str(f, "h/0", "zero");
	int64_t from = revision(f) + 1;
	put_str(f, "h/1", "one");
	put_str(f, "h/2", "two");
	struct wlog l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	store_watch *w = NULL;
	OK(store_watch_start(f->s, "h/", from, wlog_cb, &l, &w, &f->err));
	assert_int_equal(2, wlog_wait(&l, 2));
	EXPECT_EVENTS("P:h/1=one@0|P:h/2=two@1", &l, from);
	store_watch_cancel(w);
	put_str(f, "h/3", "after cancel");
	usleep(200 * 1000);
	EXPECT_EVENTS("P:h/1=one@0|P:h/2=two@1", &l, from);
	store_watch_cancel(kw);
	store_watch_cancel(NULL);
	EXPECT_REFUSED(EINVAL, "revision >= 0",
		       store_watch_start(f->s, "h/", -1, wlog_cb, &l, &w, &f->err));
}

/* ---- leases ---- */

static void test_lease_revoke(void **state)
{
	struct fx *f = *state;
	int64_t id = 0, ttl = 0;
	OK(store_lease_grant(f->s, 30, &id, &f->err));
	assert_true(id > 0);
	OK(store_put_lease(f->s, "l/a", "leased", 6, id, &f->err));
	OK(store_put_lease(f->s, "l/b", "leased", 6, id, &f->err));
	OK(store_put_lease(f->s, "l/c", "leased", 6, id, &f->err));
	put_str(f, "l/b", "plain"); /* a put without the lease detaches the key */
	put_str(f, "l/d", "plain");
	OK(store_lease_keepalive(f->s, id, &ttl, &f->err));
	assert_int_equal(30, ttl);
	int64_t rev0 = revision(f);
	OK(store_lease_revoke(f->s, id, &f->err));
	EXPECT_REV(rev0 + 1); /* its keys go in one revision */
	EXPECT_KEYS("l/b|l/d", "l/", 0);
	check_str(f, "l/b", "plain");
	cx_err_clear(&f->err);
	EXPECT_RC(CX_NOTFOUND, store_lease_revoke(f->s, id, &f->err));
	EXPECT_RC(CX_NOTFOUND, store_lease_keepalive(f->s, id, &ttl, &f->err));
	EXPECT_RC(CX_NOTFOUND, store_put_lease(f->s, "l/e", "x", 1, id, &f->err));
	check_absent(f, "l/e");
	EXPECT_REFUSED(EINVAL, "TTL", store_lease_grant(f->s, 0, &id, &f->err));
	EXPECT_REFUSED(EINVAL, "lease id", store_put_lease(f->s, "l/f", "x", 1, 0, &f->err));
}

/* Put if absent (session owners, docs/scale-out.md): one winner, the loser
 * leaves the value alone; the key goes with its lease, then can be created
 * again; a dead lease is CX_NOTFOUND and writes nothing. */
static void test_create_lease(void **state)
{
	struct fx *f = *state;
	int64_t id = 0;
	OK(store_lease_grant(f->s, 30, &id, &f->err));
	OK(store_create_lease(f->s, "c/a", "node-1", 6, id, &f->err));
	check_str(f, "c/a", "node-1");
	int64_t rev0 = revision(f);
	EXPECT_RC(1, store_create_lease(f->s, "c/a", "node-2", 6, id, &f->err));
	EXPECT_RC(1, store_create_lease(f->s, "c/a", "node-2", 6, 0, &f->err));
	check_str(f, "c/a", "node-1");
	EXPECT_REV(rev0); /* nothing written */
	OK(store_lease_revoke(f->s, id, &f->err));
	check_absent(f, "c/a");
	EXPECT_RC(CX_NOTFOUND, store_create_lease(f->s, "c/a", "node-2", 6, id, &f->err));
	check_absent(f, "c/a");
	OK(store_create_lease(f->s, "c/a", "node-2", 6, 0, &f->err)); /* no lease */
	check_str(f, "c/a", "node-2");
}

/* An expired lease takes its keys, seen by a watch as deletes. */
static void test_lease_expiry(void **state)
{
	struct fx *f = *state;
	int64_t id = 0, ttl = 0;
	OK(store_lease_grant(f->s, 1, &id, &f->err));
	OK(store_put_lease(f->s, "e/a", "x", 1, id, &f->err));
	put_str(f, "e/b", "kept");
	struct wlog l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	store_watch *w = NULL;
	OK(store_watch_start(f->s, "e/", 0, wlog_cb, &l, &w, &f->err));
	int64_t base = revision(f);
	assert_int_equal(1, wlog_wait(&l, 1)); /* within ~1 s of TTL (etcd checks twice a second) */
	EXPECT_EVENTS("D:e/a@1", &l, base);
	check_absent(f, "e/a");
	check_str(f, "e/b", "kept");
	cx_err_clear(&f->err);
	EXPECT_RC(CX_NOTFOUND, store_lease_keepalive(f->s, id, &ttl, &f->err));
	store_watch_cancel(w);
}

/* ---- runner ---- */

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

static int run_backend(const struct backend *b)
{
	const struct CMUnitTest tests[] = {
	    T(test_put_get_round_trip),
	    T(test_overwrite),
	    T(test_binary_values),
	    T(test_empty_value),
	    T(test_keys_are_bytes),
	    T(test_get_absent),
	    T(test_delete),
	    T(test_notfound_only_where_documented),
	    T(test_list_prefix_boundaries),
	    T(test_list_key_order),
	    T(test_list_limit),
	    T(test_list_after),
	    T(test_txn_commits_all),
	    T(test_txn_many_ops),
	    T(test_txn_invalid_op_stores_nothing),
	    T(test_txn_empty),
	    T(test_delete_prefix),
	    T(test_delete_prefix_byte_edges),
	    T(test_delete_prefix_empty_refused),
	    T(test_revision_starts_at_zero),
	    T(test_revision_rules),
	    T(test_key_limits),
	    T(test_value_limits),
	    T(test_concurrent_use),
	    T(test_watch_events),
	    T(test_watch_from_rev_and_cancel),
	    T(test_lease_revoke),
	    T(test_create_lease),
	    T(test_lease_expiry),
	};
	char group[64];
	snprintf(group, sizeof group, "store/%s", b->name);
	backend = b;
	return _cmocka_run_group_tests(group, tests, sizeof tests / sizeof *tests, NULL, NULL);
}

int main(int argc, char **argv)
{
	size_t nb = sizeof backends / sizeof *backends;
	if (argc > 2) {
		fprintf(stderr, "usage: %s [BACKEND]\n", argv[0]);
		return 2;
	}
	int failed = 0, found = 0;
	for (size_t i = 0; i < nb; i++) {
		if (argc == 2 && strcmp(argv[1], backends[i].name) != 0)
			continue;
		found = 1;
		failed |= run_backend(&backends[i]) != 0;
	}
	if (!found) {
		fprintf(stderr, "%s: no backend '%s'; known:", argv[0], argv[1]);
		for (size_t i = 0; i < nb; i++)
			fprintf(stderr, " %s", backends[i].name);
		fputc('\n', stderr);
		return 2;
	}
	return failed;
}
