/* npmcache.c — STUB, being replaced (helper C). */
#include "npmcache.h"
#include <errno.h>
#include <string.h>
int npmcache_init(store *st, const char *root, const char *npm, uid_t uid, gid_t gid, uint64_t budget, cx_err *err)
{ (void)st; (void)root; (void)npm; (void)uid; (void)gid; (void)budget; (void)err; return 0; }
void npmcache_shutdown(void) {}
const npm_pkg *npmcache_lookup(const char *spec) { (void)spec; return NULL; }
int npmcache_ensure(const char *spec, npm_ready_fn cb, void *arg, const npm_pkg **out, cx_err *err)
{ (void)spec; (void)cb; (void)arg; (void)out; return cx_err_set(err, ENOSYS, "npm cache: stub"); }
void npmcache_pin(const char *key) { (void)key; }
void npmcache_unpin(const char *key) { (void)key; }
void npmcache_get_stats(npmcache_stats *out) { memset(out, 0, sizeof *out); }
int npmcache_node_major(void) { return 0; }
