/* clone.h — the lifecycle's repo step: check the session's repo
 * ({"repo":{"url","ref","secret"}} at create) out into /workspace, once.
 *
 * The clone runs on a thread of its own (minutes, at worst: it must not hold
 * one of the two workers) through repo_clone(): a helper process as the
 * session's uid writes into disk/stage, then root moves the tree into
 * workspace without following anything the sandbox planted.  The token is
 * read from the user's secret on that thread and handed to the helper over a
 * pipe; it is never written into the sandbox.  Progress and the result reach
 * the service thread through work_submit(); clients see cortex.progress
 * {"phase":"cloning"} frames. */
#ifndef CORTEX_CLONE_H
#define CORTEX_CLONE_H

#include "session.h"

/* Start the clone (the sandbox's disk is mounted: the sandbox step is ready). */
int clone_start(struct session *s, cx_err *err);

#endif
