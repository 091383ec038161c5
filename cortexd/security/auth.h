/* auth.h — tokens.  A token is "cx_" + 64 random hex chars; only its SHA-256
 * is stored (tokens/<hex>), so a stolen database holds no usable token. */
#ifndef CORTEX_AUTH_H
#define CORTEX_AUTH_H

#include <stddef.h>
#include "cx.h"
#include "store.h"

#define AUTH_TOKEN_LEN 67 /* "cx_" + 64 hex */
#define AUTH_HASH_HEX 65  /* 64 hex + NUL */

void auth_token_new(char out[AUTH_TOKEN_LEN + 1]);
void auth_token_hash(const char *token, char out[AUTH_HASH_HEX]);

/* The admin token: CORTEX_ADMIN_TOKEN, else DATA_DIR/admin.token (generated 0600
 * on first start).  out gets the token itself (printed once by `make run`). */
int auth_admin_init(const char *data_dir, char out[256], cx_err *err);
/* Constant-time check against the admin token set by auth_admin_init(). */
int auth_is_admin(const char *token);

/* Resolve a user token to its user name: 0 (name copied), CX_NOTFOUND, or -1. */
int auth_lookup_user(store *s, const char *token, char *out_name, size_t cap, cx_err *err);

/* Create a user and its token atomically: 0, or -1 with err->code EEXIST if taken. */
int auth_create_user(store *s, const char *name, char out_token[AUTH_TOKEN_LEN + 1], cx_err *err);

/* Delete a user and its token (users/<name>, tokens/<hash>) in one txn: 0,
 * CX_NOTFOUND, or -1.  Its sessions stay in the store (an admin deletes them). */
int auth_delete_user(store *s, const char *name, cx_err *err);

/* The token cache (auth.c): tokens/ listed, then followed by a store watch, so
 * auth_lookup_user answers a known token without a store read; a deleted token
 * leaves the cache when its watch event arrives.  Started on a shared store
 * (etcd) only: on SQLite a read is local and the lookup stays as it was. */
int auth_cache_start(store *s, cx_err *err);
void auth_cache_stop(void);

/* Names: [a-z0-9][a-z0-9_-]{0,63}. */
int auth_valid_name(const char *name);

#endif
