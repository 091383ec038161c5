/* fswatch.h — watches of a session's files for its clients (docs/protocol.md
 * "Files"): {"type":"watch","path":"/workspace"} on the session WebSocket,
 * then cortex.fs frames (created / modified / deleted / moved, coalesced per
 * path within files.coalesce_ms; "overflow" when the kernel's queue or ours
 * overflowed: the client re-lists).
 *
 * One inotify instance per watched root (/workspace, /home/agent) and session,
 * shared by its watching clients, adopted into the lws loop.  Recursive: a
 * watch on every dir, at most files.max_watches per session.  The watch is on
 * the host side of the session's disk; every dir is opened with
 * files_open_beneath (no symlink followed, no other mount) and watched
 * through /proc/self/fd/N, so a name the sandbox swaps is never followed.
 * The first scan runs on a worker; dirs that appear later are added on the
 * service thread (bounded by the cap).  The disk is off the host while the
 * session sleeps: the watch ends ("unwatched") and is set again when the
 * sandbox is back ("watching").  Service thread only; owned by this module:
 * s->fsw[], c->watch. */
#ifndef CORTEX_FSWATCH_H
#define CORTEX_FSWATCH_H

#include "session.h"

/* A client's "watch" / "unwatch" frame. */
void fswatch_client_watch(struct session *s, struct client *c, const char *path, int on);
/* The client has gone (after fanout_detach). */
void fswatch_client_left(struct session *s, struct client *c);
/* The sandbox is up (its disk mounted): set the watches clients want. */
void fswatch_session_up(struct session *s);
/* The disk is about to come off the host (sleep, delete): end every watch. */
void fswatch_session_down(struct session *s, const char *why);
/* lws callback of the adopted inotify fds ("cortex-fswatch"). */
int fswatch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

#endif
