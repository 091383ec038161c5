/* gwlink.h — the model gateway's view of sessions (struct gateway_ops):
 * a token to its session and provider, and provider reports to the turn. */
#ifndef CORTEX_GWLINK_H
#define CORTEX_GWLINK_H

#include "session.h"

/* The ops the gateway is started with (arg = d). */
void gwlink_ops(struct cortexd *d, struct gateway_ops *out);

#endif
