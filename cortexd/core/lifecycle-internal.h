/* lifecycle-internal.h — what the lifecycle's engine (lifecycle.c) offers
 * its event side (lifecycle_events.c).  Not for other modules. */
#ifndef CORTEX_LIFECYCLE_INTERNAL_H
#define CORTEX_LIFECYCLE_INTERNAL_H

#include "session.h"

/* A request or a message wants the session hot again (clears a failure). */
void lc_want_hot(struct session *s);
/* Activity: re-arm the idle timers. */
void lc_touch(struct session *s);
void lc_set_error(struct session *s, const char *msg);
/* msg as a client may see it: host paths (data, images dirs) as placeholders. */
void lc_client_msg(const struct session *s, const char *msg, char *out, size_t cap);

#endif
