/* secrets.c — STUB, being replaced (helper A). */
#include "secrets.h"
#include <errno.h>
#include <string.h>
int secrets_key_load(secrets_key *k, const char *path, int create, cx_err *err)
{ (void)k; (void)create; return cx_err_set(err, ENOSYS, "secrets_key_load %s: stub", path); }
void secrets_key_wipe(secrets_key *k) { memset(k, 0, sizeof *k); }
int secrets_seal(const secrets_key *k, const char *user, const char *name, const void *pt, size_t len, char **out, cx_err *err)
{ (void)k; (void)user; (void)name; (void)pt; (void)len; (void)out; return cx_err_set(err, ENOSYS, "stub"); }
int secrets_open(const secrets_key *k, const char *user, const char *name, const char *sealed, char **out, size_t *out_len, cx_err *err)
{ (void)k; (void)user; (void)name; (void)sealed; (void)out; (void)out_len; return cx_err_set(err, ENOSYS, "stub"); }
void secrets_free(char *pt, size_t len) { (void)len; free(pt); }
