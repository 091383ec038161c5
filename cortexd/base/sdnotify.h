/* sdnotify.h — systemd's service notification protocol (sd_notify(3)), for
 * contrib/cortexd.service (Type=notify): READY=1 once cortexd accepts
 * connections, WATCHDOG=1 from the service loop every half of
 * $WATCHDOG_USEC, STOPPING=1 when shutdown begins.  The protocol is one
 * datagram of newline-separated assignments to the Unix socket named by
 * $NOTIFY_SOCKET ('@' = abstract); systemd documents it as stable for
 * reimplementation, so no libsystemd dependency.  Without $NOTIFY_SOCKET
 * everything here is a no-op. */
#ifndef CORTEX_SDNOTIFY_H
#define CORTEX_SDNOTIFY_H

#include <stdint.h>

/* Send state; 0 sent, 1 not under systemd (no $NOTIFY_SOCKET), -1 failed. */
int sdnotify(const char *state);
/* The watchdog interval to ping at (half of $WATCHDOG_USEC) in microseconds,
 * 0 when no watchdog is asked for this process ($WATCHDOG_PID, if set, must
 * be ours). */
uint64_t sdnotify_watchdog_us(void);

#endif
