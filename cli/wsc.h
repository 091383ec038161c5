/* wsc.h — a small blocking WebSocket client for cortexctl (RFC 6455, client
 * side): plain http:// URLs, text frames, masked sends, ping answered,
 * fragmented messages reassembled up to a cap.  Enough for the session
 * WebSocket (docs/protocol.md); no TLS (put cortexd behind a local URL). */
#ifndef CORTEX_WSC_H
#define CORTEX_WSC_H

#include <stddef.h>

#define WSC_MAX_MESSAGE (16u << 20) /* one message from cortexd */

struct wsc {
	int fd;
	unsigned char *buf; /* bytes read, not yet a whole frame */
	size_t len, cap;
	char *msg;          /* a fragmented message being reassembled */
	size_t msg_len;
};

/* Connect to base (http://host[:port]) and upgrade path with the bearer
 * token.  0, or -1 with a message in err (an HTTP refusal quotes its body). */
int wsc_connect(struct wsc *w, const char *base, const char *path, const char *token, char *err, size_t ecap);
/* One text frame.  0 or -1. */
int wsc_send_text(struct wsc *w, const char *data, size_t len);
/* The next text message: 1 and *out (malloc'd, NUL-terminated) with *len;
 * 0 when the peer closed; -1 on an error.  Blocks until one is whole. */
int wsc_recv(struct wsc *w, char **out, size_t *len);
/* A message already read (no need to poll the fd first). */
int wsc_pending(const struct wsc *w);
void wsc_close(struct wsc *w);

#endif
