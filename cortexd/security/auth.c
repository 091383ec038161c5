/* auth.c — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"

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

int auth_lookup_user(store *s, const char *token, char *out_name, size_t cap, cx_err *err)
{
	if (!token || strncmp(token, "cx_", 3) || strlen(token) != AUTH_TOKEN_LEN)
		return CX_NOTFOUND;
	char hash[AUTH_HASH_HEX], key[80];
	auth_token_hash(token, hash);
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
