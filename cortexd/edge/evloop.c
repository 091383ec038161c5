/* evloop.c — see evloop.h. */
#include "evloop.h"

#include "log.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const names[] = {"poll", "libev", "libuv", "epoll"};

int evloop_kind_of_name(const char *name)
{
	for (int i = 0; name && i < (int)(sizeof names / sizeof names[0]); i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

const char *evloop_name(enum evloop_kind kind)
{
	return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

int evloop_open(struct evloop *l, enum evloop_kind kind, struct lws_context_creation_info *info,
		cx_err *err)
{
	memset(l, 0, sizeof *l);
	l->kind = kind;
	switch (kind) {
	case EVLOOP_POLL:
		return 0;
	case EVLOOP_EPOLL:
#ifdef LWS_SERVER_OPTION_EPOLL
		info->options |= LWS_SERVER_OPTION_EPOLL;
#else /* CORTEX_SYSTEM_LWS: a libwebsockets without our patch 0004 */
		log_warn("event loop: epoll needs our libwebsockets patch 0004; this build links the "
			 "system's: poll");
		l->kind = EVLOOP_POLL;
#endif
		return 0;
	case EVLOOP_LIBEV:
		/* epoll only: no signal or child watchers of libev's (cortexd's
		 * own handlers stay; lws adds none to a foreign loop). */
		if (!(l->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK)))
			return cx_err_set(err, 0, "event loop: libev's epoll loop could not be made");
		info->options |= LWS_SERVER_OPTION_LIBEV;
		break;
	case EVLOOP_LIBUV: {
		uv_loop_t *uv = calloc(1, sizeof *uv);
		int rc = uv ? uv_loop_init(uv) : UV_ENOMEM;
		if (rc) {
			free(uv);
			return cx_err_set(err, 0, "event loop: libuv: %s", uv_strerror(rc));
		}
		l->loop = uv;
		info->options |= LWS_SERVER_OPTION_LIBUV;
		break;
	}
	default:
		return cx_err_set(err, 0, "event loop: unknown kind %d", (int)kind);
	}
	l->foreign[0] = l->loop;
	info->foreign_loops = l->foreign;
	return 0;
}

int evloop_service(struct evloop *l, struct lws_context *ctx)
{
	switch (l->kind) {
	case EVLOOP_LIBEV:
		ev_run(l->loop, EVRUN_ONCE);
		return 0;
	case EVLOOP_LIBUV:
		uv_run(l->loop, UV_RUN_ONCE);
		return 0;
	default:
		return lws_service(ctx, 0) < 0 ? -1 : 0;
	}
}

/* libuv closes handles in callbacks: turn the loop until they ran
 * (bounded, as lws does for its internal loops). */
static void uv_settle(uv_loop_t *uv)
{
	for (int budget = 10000; budget-- && uv_run(uv, UV_RUN_NOWAIT);)
		;
}

void evloop_close(struct evloop *l, struct lws_context *ctx)
{
	switch (l->kind) {
	case EVLOOP_LIBEV:
		lws_context_destroy(ctx); /* a foreign libev loop: done in one call */
		ev_loop_destroy(l->loop);
		break;
	case EVLOOP_LIBUV:
		/* 1: every wsi's handle closes; 2: the context goes (lws 4.1's
		 * foreign-loop sequence), then its own static handles. */
		if (ctx) {
			lws_context_destroy(ctx);
			uv_settle(l->loop);
			lws_context_destroy(ctx);
		}
		uv_settle(l->loop);
		uv_loop_close(l->loop);
		free(l->loop);
		break;
	default:
		lws_context_destroy(ctx);
		break;
	}
	l->loop = NULL;
}
