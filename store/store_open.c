/* store_open.c — the backends by kind: the one place that knows them all.
 * Above the front (store.c) and every backend, so neither calls the other
 * back: a backend only uses store_new(); adding one is one branch here. */
#include "store.h"

#include <errno.h>
#include <string.h>

int store_open(store **out, const char *kind, const char *target, cx_err *err)
{
	*out = NULL;
	if (!kind || !*kind)
		return cx_err_set(err, EINVAL, "store: no store kind given (expected \"sqlite\" or \"etcd\")");
	if (strcmp(kind, "sqlite") == 0) {
		if (!target || !*target)
			return cx_err_set(err, EINVAL, "store: sqlite store needs a database path");
		return store_open_sqlite(out, target, err);
	}
	if (strcmp(kind, "etcd") == 0) {
		struct store_etcd_opts o = {.endpoints = target};
		return store_open_etcd(out, &o, err);
	}
	return cx_err_set(err, EINVAL,
			  "store: unknown store kind '%s' (expected \"sqlite\" or \"etcd\")", kind);
}
