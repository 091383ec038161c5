/* evloop.h — the service thread's event loop under libwebsockets (config
 * `http.event_loop`, docs/architecture.md "The event loop").
 *
 * lws 4.1's own loop is poll(): every wake-up walks every descriptor
 * (clients, agent links and stdout pipes, gateway connections, exec pipes,
 * watches), so each event costs O(connections).  The default, epoll, is
 * the same loop waiting with epoll_wait() (our lws patch 0004,
 * LWS_SERVER_OPTION_EPOLL): O(ready descriptors).  libev and libuv are
 * "foreign" loops: cortexd makes them, hands them to lws_create_context()
 * (info.foreign_loops) and runs them one wake-up at a time, so the daemon's
 * `while (!stop)` and the handover drain keep their shape; lws loads its
 * event-lib plugin by the option bit. */
#ifndef CORTEX_EVLOOP_H
#define CORTEX_EVLOOP_H

#include <libwebsockets.h>

#include "cx.h"

/* EVLOOP_EPOLL: lws's own loop waiting with epoll_wait() instead of
 * poll() (our lws patch 0004, LWS_SERVER_OPTION_EPOLL): O(ready) like
 * libev, but the epoll set changes exactly where lws's pollfd table does,
 * before lws closes a descriptor, on the service thread. */
enum evloop_kind { EVLOOP_POLL, EVLOOP_LIBEV, EVLOOP_LIBUV, EVLOOP_EPOLL };

struct evloop {
	enum evloop_kind kind;
	void *loop;         /* struct ev_loop * / uv_loop_t *; NULL with poll */
	void *foreign[1];   /* info->foreign_loops points here during create */
};

/* "poll" | "libev" | "libuv" | "epoll" -> kind; -1 when unknown. */
int evloop_kind_of_name(const char *name);
const char *evloop_name(enum evloop_kind kind);

/* Makes the loop of `kind` and sets info's option bit and foreign loop. */
int evloop_open(struct evloop *l, enum evloop_kind kind, struct lws_context_creation_info *info,
		cx_err *err);

/* One wake-up: waits for an event (or lws's next timer), handles what is
 * ready.  < 0: the loop failed. */
int evloop_service(struct evloop *l, struct lws_context *ctx);

/* Destroys ctx (may be NULL), then the loop. */
void evloop_close(struct evloop *l, struct lws_context *ctx);

#endif
