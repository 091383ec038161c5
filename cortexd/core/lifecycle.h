/* lifecycle.h — the one owner of a session's state machine.
 *
 * Every request and every event ends in lifecycle_reconcile(s), which drives
 * the session towards its goal (lc.goal) by running ordered steps:
 *
 *   sandbox -> link -> config -> packages -> sync -> agent
 *
 * Each step is a small {ready?, busy?, start} unit in one table
 * (lifecycle.c); a step whose work runs on a worker finishes in that job's
 * done, which applies the job's result and reconciles again.  A turn waiting
 * to be sent is told which step it waits for, and is sent when all are
 * ready; it never drives the lifecycle itself.  docs/architecture.md has the
 * states and steps as a table. */
#ifndef CORTEX_LIFECYCLE_H
#define CORTEX_LIFECYCLE_H

#include "session.h"

/* Set the hooks lower modules report through; register metrics. */
void lifecycle_init(struct cortexd *d);
/* Sessions from the store (all sleeping); sandboxes a dead cortexd left are reaped. */
int lifecycle_load(struct cortexd *d, cx_err *err);
/* Load the one stored session at key (sessions/<user>/<id>), sleeping: a
 * session taken over from a node that is gone (owner.c).  0, CX_NOTFOUND, -1. */
int lifecycle_load_one(struct cortexd *d, const char *key, cx_err *err);
/* The same with the record already read (takeover.c reads it on a worker). */
int lifecycle_load_record(struct cortexd *d, const char *key, const char *val, size_t len, cx_err *err);
/* On exit: every sandbox is stopped synchronously (the workers are gone). */
void lifecycle_shutdown(struct cortexd *d);

void lifecycle_reconcile(struct session *s);

/* ---- requests (edge) ---- */
/* A new session, not yet stored nor registered: the caller stores its
 * record (session_record) off the service thread, then lifecycle_start()s
 * it — or session_unref()s it when the write failed, leaving nothing. */
struct session *lifecycle_new(struct cortexd *d, const char *user, const char *surface, int idle_sleep_s,
			      const struct session_spec *spec /* may be NULL: defaults */,
			      cx_err *err);
void lifecycle_start(struct session *s);
void lifecycle_delete(struct session *s);
/* Another node owns s now (this node's lease had lapsed and the session was
 * taken over): torn down here as a delete is — clients cut off, sandbox
 * stopped, disk detached — but its files, turn log and store rows stay for
 * the new owner. */
void lifecycle_release(struct session *s);
/* 0, or -1 with err (code EBUSY: try again; the route answers 409). */
int lifecycle_wake(struct session *s, cx_err *err);
int lifecycle_sleep(struct session *s, cx_err *err);
int lifecycle_pause(struct session *s, cx_err *err);
/* Activity that is not a turn (preview-port traffic): the idle timers restart. */
void lifecycle_touch(struct session *s);
/* A lifecycle or sync job owns the sandbox right now. */
int lifecycle_busy(const struct session *s);

/* ---- client events (edge) ---- */
void lifecycle_client_joined(struct session *s, struct client *c);
void lifecycle_client_left(struct client *c);
/* A "message" frame: start a turn, or answer busy to c. */
void lifecycle_message(struct session *s, struct client *c, const char *text);
void lifecycle_cancel(struct session *s, struct client *c);

/* ---- config events ---- */
/* A settings write for user (settings API): configs dirty, failed installs retried. */
void lifecycle_settings_written(struct cortexd *d, const char *user);

#endif
