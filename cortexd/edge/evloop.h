/* evloop.h — the service thread's event loop under libwebsockets (config
 * `http.event_loop`, docs/architecture.md "Event loop").
 *
 * lws 4.1's own loop is poll(): every wake-up walks every descriptor
 * (clients, agent links, gateway connections, exec pipes, watches), so each
 * event costs O(connections).  With libev (epoll) a wake-up costs
 * O(ready descriptors).  The loop is "foreign" to lws: cortexd makes it,
 * hands it to lws_create_context() (info.foreign_loops) and runs it one
 * wake-up at a time, so the daemon's `while (!stop)` and the handover drain
 * keep their shape.  lws loads its event-lib plugin (libwebsockets-evlib-ev
 * / -uv, Debian's build of lws 4.1 with LWS_WITH_EVLIB_PLUGINS) by the
 * option bit.  Default poll: lws 4.1.6's libev plugin re-arms its timer
 * with ev_timer_set on an active watcher (ignored by libev), so a sul
 * scheduled while a later one is armed fires late (docs/architecture.md). */
#ifndef CORTEX_EVLOOP_H
#define CORTEX_EVLOOP_H

#include <libwebsockets.h>

#include "cx.h"

enum evloop_kind { EVLOOP_POLL, EVLOOP_LIBEV, EVLOOP_LIBUV };

struct evloop {
	enum evloop_kind kind;
	void *loop;         /* struct ev_loop * / uv_loop_t *; NULL with poll */
	void *foreign[1];   /* info->foreign_loops points here during create */
};

/* "poll" | "libev" | "libuv" -> kind; -1 when unknown. */
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
