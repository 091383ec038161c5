/* auth.c — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "log.h"
#include "metrics.h"

static unsigned char admin_hash[crypto_hash_sha256_BYTES];
static int admin_set;

void auth_token_new(char out[AUTH_TOKEN_LEN + 1])
{
	memcpy(out, "cx_", 3);
	cx_random_hex(out + 3, 32);
}

void auth_token_hash(const char *token, char out[AUTH_HASH_HEX])
{
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
	sodium_bin2hex(out, AUTH_HASH_HEX, h, sizeof h);
}

int auth_valid_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > CX_CAP_NAME)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
			 (i > 0 && (ch == '_' || ch == '-'));
		if (!ok)
			return 0;
	}
	return 1;
}

int auth_admin_init(const char *data_dir, char out[256], cx_err *err)
{
	const char *env = getenv("CORTEX_ADMIN_TOKEN");
	if (env && *env) {
		if (strlen(env) >= 256)
			return cx_err_set(err, 0, "CORTEX_ADMIN_TOKEN too long");
		strcpy(out, env);
	} else {
		char path[4200];
		snprintf(path, sizeof path, "%s/admin.token", data_dir);
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			ssize_t n = read(fd, out, 255);
			close(fd);
			if (n <= 0)
				return cx_err_set(err, errno, "read %s", path);
			out[n] = '\0';
			out[strcspn(out, "\r\n")] = '\0';
		} else {
			if (errno != ENOENT)
				return cx_err_set(err, errno, "open %s", path);
			auth_token_new(out);
			fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (fd < 0)
				return cx_err_set(err, errno, "create %s", path);
			char line[300];
			int len = snprintf(line, sizeof line, "%s\n", out);
			int rc = cx_write_all(fd, line, (size_t)len, err);
			close(fd);
			if (rc < 0)
				return cx_err_wrap(err, "write %s", path);
		}
	}
	crypto_hash_sha256(admin_hash, (const unsigned char *)out, strlen(out));
	admin_set = 1;
	return 0;
}

int auth_is_admin(const char *token)
{
	if (!admin_set || !token)
		return 0;
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
	return sodium_memcmp(h, admin_hash, sizeof h) == 0;
}

/* ---- the token cache (auth_cache_start) ----
 *
 * tokens/<sha256> → user, listed once and then followed by a store watch (the
 * store's watch thread applies each event under tc_mu), so that a request's
 * token check is a hash probe: not an etcd round trip on a node of a cluster,
 * and not a SQLite read on one node, which waits for the store's lock while
 * the put worker's group commit (its fdatasync included) holds it, with
 * every stream on the service thread waiting too.
 * A delete (DELETE /v1/users/{name}, or any removal of tokens/<hash>) drops the
 * entry when its watch event arrives: a revoked token stops working on every
 * node within the watch latency.  A miss still reads the store (a token created
 * on another node a moment ago, whose event has not arrived yet, must work):
 * the read gives the store's answer, never a stale one. */

#define TC_BUCKETS 4096
#define TC_USER_MAX (CX_CAP_NAME + 8)

struct tc_ent {
	struct tc_ent *next;
	char hash[AUTH_HASH_HEX];
	char user[TC_USER_MAX];
};

static pthread_mutex_t tc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tc_ent *tc_tab[TC_BUCKETS];
static int tc_on;
static store *tc_st;
static store_watch *tc_watch;
static const char tc_prefix[] = "tokens/";
static uint64_t tc_hits, tc_reads, tc_size;
/* Misses read the store on the caller's thread (the service thread): anyone
 * can send random tokens, so at most 100 reads a second (bursts of 200; ~1 ms
 * each on loopback etcd: a tenth of the thread); past it a miss is a 401. */
static struct cx_budget tc_miss_budget = CX_BUDGET_INIT(100, 200);

static unsigned tc_bucket(const char *hash)
{
	return cx_fnv1a(hash, strlen(hash)) % TC_BUCKETS;
}

/* under tc_mu; val NULL: delete */
static void tc_set(const char *hash, const char *val, size_t len)
{
	if (strlen(hash) != AUTH_HASH_HEX - 1)
		return;
	struct tc_ent **pp = &tc_tab[tc_bucket(hash)];
	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->hash, hash))
			break;
	json_t *o = val ? json_loadb(val, len, 0, NULL) : NULL;
	const char *user = json_string_value(json_object_get(o, "user"));
	if (!user || strlen(user) >= TC_USER_MAX) {
		if (*pp) { /* deleted, or a record we cannot read: no entry */
			struct tc_ent *e = *pp;
			*pp = e->next;
			sodium_memzero(e, sizeof *e);
			free(e);
			tc_size--;
		}
		json_decref(o);
		return;
	}
	struct tc_ent *e = *pp;
	if (!e && (e = calloc(1, sizeof *e))) {
		memcpy(e->hash, hash, AUTH_HASH_HEX);
		*pp = e;
		tc_size++;
	}
	if (e)
		snprintf(e->user, sizeof e->user, "%s", user);
	json_decref(o);
}

static void tc_clear(void)
{
	for (size_t i = 0; i < TC_BUCKETS; i++)
		while (tc_tab[i]) {
			struct tc_ent *e = tc_tab[i];
			tc_tab[i] = e->next;
			free(e);
		}
	tc_size = 0;
}

static int tc_load(cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(tc_st, tc_prefix, 0, &kv, &n, err) < 0)
		return -1;
	pthread_mutex_lock(&tc_mu);
	tc_clear();
	for (size_t i = 0; i < n; i++)
		tc_set(kv[i].key + sizeof tc_prefix - 1, kv[i].val, kv[i].len);
	pthread_mutex_unlock(&tc_mu);
	store_kv_free(kv, n);
	return 0;
}

/* On the store's watch thread. */
static void tc_event(void *arg, const store_event *ev)
{
	(void)arg;
	if (ev->kind == STORE_EV_RESYNC) {
		cx_err err = CX_ERR_INIT;
		if (tc_load(&err) < 0) { /* entries we cannot vouch for: empty, misses read the store */
			log_warn("token cache: re-reading %s: %s", tc_prefix, err.msg);
			pthread_mutex_lock(&tc_mu);
			tc_clear();
			pthread_mutex_unlock(&tc_mu);
		}
		return;
	}
	pthread_mutex_lock(&tc_mu);
	tc_set(ev->key + sizeof tc_prefix - 1, ev->kind == STORE_EV_PUT ? ev->val : NULL, ev->len);
	pthread_mutex_unlock(&tc_mu);
}

static void tc_metrics(FILE *f, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&tc_mu);
	uint64_t size = tc_size;
	pthread_mutex_unlock(&tc_mu);
	metrics_counter(f, "cortex_auth_token_cache_hits_total",
			"User tokens resolved from the token cache (no store read)",
			__atomic_load_n(&tc_hits, __ATOMIC_RELAXED));
	metrics_counter(f, "cortex_auth_token_store_reads_total",
			"User-token checks the cache could not answer, read from the store",
			__atomic_load_n(&tc_reads, __ATOMIC_RELAXED));
	metrics_counter(f, "cortex_auth_token_store_reads_refused_total",
			"Token checks the cache could not answer and refused unread (over 100 store reads a second)",
			cx_budget_refused(&tc_miss_budget));
	metrics_gauge(f, "cortex_auth_token_cache_tokens", "User tokens held by the token cache",
		      (double)size);
}

int auth_cache_start(store *s, cx_err *err)
{
	tc_st = s;
	int64_t rev = 0;
	/* the revision first: the watch replays every write after it */
	if (store_revision(s, &rev, err) < 0 || tc_load(err) < 0 ||
	    store_watch_start(s, tc_prefix, rev + 1, tc_event, NULL, &tc_watch, err) < 0)
		return cx_err_wrap(err, "token cache");
	__atomic_store_n(&tc_on, 1, __ATOMIC_RELEASE);
	metrics_register("auth", tc_metrics, NULL);
	return 0;
}

void auth_cache_stop(void)
{
	__atomic_store_n(&tc_on, 0, __ATOMIC_RELEASE);
	store_watch_cancel(tc_watch);
	tc_watch = NULL;
	pthread_mutex_lock(&tc_mu);
	tc_clear();
	pthread_mutex_unlock(&tc_mu);
}

static int tc_lookup(const char *hash, char *out_name, size_t cap)
{
	int rc = CX_NOTFOUND;
	pthread_mutex_lock(&tc_mu);
	for (struct tc_ent *e = tc_tab[tc_bucket(hash)]; e; e = e->next)
		if (!strcmp(e->hash, hash)) {
			if (strlen(e->user) < cap) {
				strcpy(out_name, e->user);
				rc = 0;
			}
			break;
		}
	pthread_mutex_unlock(&tc_mu);
	return rc;
}

int auth_lookup_user(store *s, const char *token, char *out_name, size_t cap, cx_err *err)
{
	if (!token || strncmp(token, "cx_", 3) || strlen(token) != AUTH_TOKEN_LEN)
		return CX_NOTFOUND;
	char hash[AUTH_HASH_HEX], key[80];
	auth_token_hash(token, hash);
	if (__atomic_load_n(&tc_on, __ATOMIC_ACQUIRE)) {
		if (tc_lookup(hash, out_name, cap) == 0) {
			__atomic_add_fetch(&tc_hits, 1, __ATOMIC_RELAXED);
			return 0;
		}
		if (!cx_budget_take(&tc_miss_budget))
			return CX_NOTFOUND;
		__atomic_add_fetch(&tc_reads, 1, __ATOMIC_RELAXED);
	}
	snprintf(key, sizeof key, "tokens/%s", hash);
	char *val = NULL;
	int rc = store_get(s, key, &val, NULL, err);
	if (rc != 0)
		return rc;
	json_t *o = json_loads(val, 0, NULL);
	free(val);
	const char *user = json_string_value(json_object_get(o, "user"));
	if (!user || strlen(user) >= cap) {
		json_decref(o);
		return cx_err_set(err, 0, "corrupt token record %s", key);
	}
	strcpy(out_name, user);
	json_decref(o);
	return 0;
}

int auth_create_user(store *s, const char *name, char out_token[AUTH_TOKEN_LEN + 1], cx_err *err)
{
	char ukey[128], tkey[80], hash[AUTH_HASH_HEX];
	snprintf(ukey, sizeof ukey, "users/%s", name);
	char *old = NULL;
	int rc = store_get(s, ukey, &old, NULL, err);
	free(old);
	if (rc == 0)
		return cx_err_set(err, EEXIST, "user '%s' already exists", name);
	if (rc != CX_NOTFOUND)
		return -1;
	auth_token_new(out_token);
	auth_token_hash(out_token, hash);
	snprintf(tkey, sizeof tkey, "tokens/%s", hash);
	json_t *u = json_pack("{s:s,s:I,s:s}", "name", name, "created_at", (json_int_t)cx_wall_ms(),
			      "token_sha256", hash);
	json_t *t = json_pack("{s:s}", "user", name);
	char *us = json_dumps(u, JSON_COMPACT), *ts = json_dumps(t, JSON_COMPACT);
	json_decref(u);
	json_decref(t);
	store_op ops[2] = {
		{STORE_PUT, ukey, us, strlen(us)},
		{STORE_PUT, tkey, ts, strlen(ts)},
	};
	rc = store_txn(s, ops, 2, err);
	free(us);
	free(ts);
	return rc;
}

int auth_delete_user(store *s, const char *name, cx_err *err)
{
	char ukey[128], tkey[80];
	snprintf(ukey, sizeof ukey, "users/%s", name);
	char *val = NULL;
	int rc = store_get(s, ukey, &val, NULL, err);
	if (rc != 0)
		return rc;
	json_t *u = json_loads(val, 0, NULL);
	free(val);
	const char *hash = json_string_value(json_object_get(u, "token_sha256"));
	store_op ops[2] = {{STORE_DEL, ukey, NULL, 0}, {STORE_DEL, tkey, NULL, 0}};
	size_t nops = 1;
	if (hash && strlen(hash) == AUTH_HASH_HEX - 1) {
		snprintf(tkey, sizeof tkey, "tokens/%s", hash);
		nops = 2;
	}
	json_decref(u);
	if (store_txn(s, ops, nops, err) < 0)
		return -1;
	if (nops == 2) { /* this node at once; the others when the delete's event arrives */
		pthread_mutex_lock(&tc_mu);
		tc_set(tkey + sizeof tc_prefix - 1, NULL, 0);
		pthread_mutex_unlock(&tc_mu);
	}
	return 0;
}
