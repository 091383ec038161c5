/* peerwatch.h — settings written on other nodes that share the store (etcd).
 *
 * A store watch on "settings/" delivers every settings write of the cluster
 * (this node's own too) on the store's watch thread; each becomes a job whose
 * `done` runs on the service thread (work_submit: a queue and
 * lws_cancel_service) and does what a local write does:
 * lifecycle_settings_written(user) — that user's cached configs dirty, live
 * sessions reconciled.  Missed events (STORE_EV_RESYNC) mark every user with
 * a session here.  docs/scale-out.md. */
#ifndef CORTEX_PEERWATCH_H
#define CORTEX_PEERWATCH_H

#include "session.h"

/* After work_start; 0 or -1 with err. */
int peerwatch_start(struct cortexd *d, cx_err *err);
/* Before work_stop: no event is queued after it returns. */
void peerwatch_stop(void);

#endif
