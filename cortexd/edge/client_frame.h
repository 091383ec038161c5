/* client_frame.h — parse one client WebSocket frame (docs/protocol.md).
 * Pure: no session, no I/O; unit-tested and fuzzed alone. */
#ifndef CORTEX_CLIENT_FRAME_H
#define CORTEX_CLIENT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum cf_type { CF_MESSAGE, CF_CANCEL, CF_RESUME, CF_WATCH, CF_UNWATCH, CF_EXEC, CF_STDIN, CF_RESIZE, CF_EXEC_CANCEL };

struct client_frame {
	enum cf_type type;
	char *text;         /* CF_MESSAGE: the message; CF_WATCH, CF_UNWATCH: the path (owned, NUL-free) */
	uint64_t after_seq; /* CF_RESUME */
	json_t *obj;        /* CF_EXEC, CF_STDIN, CF_RESIZE, CF_EXEC_CANCEL: the frame (a reference;
	                       core/exec.c checks its members), with a string "id" */
};

/* 0 and out filled, or -1 with a cortex.error code ("bad_frame",
 * "too_large") and a message for the client. */
int client_frame_parse(const char *data, size_t len, size_t text_cap, struct client_frame *out, const char **code,
		       char *msg, size_t mcap);
void client_frame_free(struct client_frame *f);

#endif
