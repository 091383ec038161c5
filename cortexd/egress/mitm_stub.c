/* mitm_stub.c — placeholder until the broker's TLS side lands (mitm.c):
 * no CA, so no tunnel is ever intercepted. */
#include <errno.h>

#include "egress.h"

int mitm_ca_open(const char *dir, struct mitm_ca **out, cx_err *err)
{
	(void)dir;
	*out = NULL;
	(void)err;
	return 0;
}

void mitm_ca_free(struct mitm_ca *ca)
{
	(void)ca;
}

const char *mitm_ca_pem(const struct mitm_ca *ca)
{
	(void)ca;
	return NULL;
}

int mitm_relay(struct mitm_ca *ca, int cfd, int ufd, const char *host, const struct mitm_swap *sw,
	       size_t nsw, const char *upstream_ca_file, struct mitm_stats *st, cx_err *err)
{
	(void)ca, (void)cfd, (void)ufd, (void)host, (void)sw, (void)nsw, (void)upstream_ca_file,
	    (void)st;
	return cx_err_set(err, ENOTSUP, "broker: not built");
}
