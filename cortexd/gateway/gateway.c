/* gateway.c — the model gateway's public side (see gateway.h): start, stop,
 * the session tokens.  The parts are described in gw_internal.h. */
#include "gw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "gw_metrics.h"
#include "log.h"
#include "metrics.h"

int gateway_start(struct lws_context *ctx, const char *host, int port,
		  const struct gateway_ops *ops, const struct gateway_limits *lim, cx_err *err)
{
	if (gw_state.vh)
		return cx_err_set(err, EALREADY, "gateway: already started");
	if (!ops || !ops->authorize)
		return cx_err_set(err, EINVAL, "gateway: no authorize hook");
	if (!lim || !lim->max_inflight_per_user || lim->max_inflight_per_user > lim->max_inflight ||
	    lim->max_inflight > GW_MAX_INFLIGHT_LIMIT || !lim->body_deadline_s ||
	    lim->max_queued > GW_MAX_QUEUED_LIMIT || !lim->queue_timeout_ms)
		return cx_err_set(err, EINVAL,
				  "gateway: limits need 1 <= per user (%u) <= in all (%u) <= %u, "
				  "a queue of %u at most (%u), a body deadline and a queue timeout",
				  lim ? lim->max_inflight_per_user : 0, lim ? lim->max_inflight : 0,
				  GW_MAX_INFLIGHT_LIMIT, GW_MAX_QUEUED_LIMIT, lim ? lim->max_queued : 0);
	if (gw_upstream_init(err) < 0)
		return -1;
	gw_state.ops = *ops;
	gw_state.lim = *lim;
	memset(&gw_state.stats, 0, sizeof gw_state.stats);
	gw_state.stats.lim = *lim;
	if (gw_pool_start(gw_http_granted, err) < 0)
		return -1;
	gw_state.ctx = ctx;
	gw_state.vh = gw_http_listen(ctx, host, port);
	if (!gw_state.vh) {
		gw_pool_clear();
		return cx_err_set(err, 0, "gateway: cannot listen on %s:%d", host, port);
	}
	gw_state.port = lws_get_vhost_listen_port(gw_state.vh);
	metrics_register("gateway", gateway_metrics_write, NULL);
	return 0;
}

int gateway_listen_unix(int dirfd, const char *name, cx_err *err)
{
	if (!gw_state.vh)
		return cx_err_set(err, EINVAL, "gateway: not started");
	/* Any uid may connect: only the root-only dir guards the path, and a
	 * sandbox reaches it only through the O_PATH fd it is handed. */
	int fd = cx_listen_unix_at(dirfd, name, 0666, 128, err);
	if (fd < 0)
		return cx_err_wrap(err, "gateway");
	lws_adopt_desc_t ad = {
	    .vh = gw_state.vh,
	    .type = LWS_ADOPT_RAW_FILE_DESC,
	    .fd.filefd = fd,
	    .vh_prot_name = GW_ACCEPT_PROTOCOL,
	};
	if (!lws_adopt_descriptor_vhost_via_info(&ad)) /* it closed fd */
		return cx_err_set(err, 0, "gateway: cannot adopt the unix listener");
	return 0;
}

int gateway_port(void)
{
	return gw_state.port;
}

void gateway_stop(void)
{
	for (struct gw_req *q = gw_state.inflight; q; q = q->next)
		gw_queue_abort(&q->queue);
	while (gw_state.inflight) {
		struct gw_req *q = gw_state.inflight;
		gw_state.inflight = q->next;
		pthread_join(q->thr, NULL); /* curl notices abort within ~1 s */
		if (q->conn)
			q->conn->req = NULL;
		gw_req_free(q); /* no report: sessions are going away too */
	}
	gw_pool_clear();
	gw_state.vh = NULL; /* destroyed with the context */
	gw_upstream_cleanup();
}

void gateway_token_new(char out[GW_TOKEN_LEN + 1])
{
	unsigned char r[32];
	randombytes_buf(r, sizeof r);
	memcpy(out, "cxg_", 4);
	sodium_bin2hex(out + 4, 65, r, sizeof r);
	sodium_memzero(r, sizeof r);
}
