/* wslink.h — the client half of the WebSocket to ws-agent, as pure code.
 *
 * Why not lws's client role: libwebsockets 4.1 (Debian 12) parses a client's
 * incoming frames one byte at a time through its state machine; with the
 * agent link carrying every delta that was 60% of cortexd's CPU at 4 KB
 * deltas (bench/flood.js, BENCH_FLOOD_PERF).  The link stays a standard
 * WebSocket (ws-agent is an lws server; any client works, the e2e tests use
 * Node's ws), but cortexd reads it as a raw socket: this parser walks frame
 * headers and hands each payload run over in place, without a copy.
 *
 * Scope: what a client of ws-agent needs.  The handshake (RFC 6455 §4.1:
 * request with a random key and the subprotocol; the 101 reply must carry
 * the matching Sec-WebSocket-Accept), server frames (unmasked, RSV bits 0,
 * control frames whole and <= 125 bytes), and client frame headers (masked,
 * the caller masks the payload with wsl_mask).  No extensions. */
#ifndef CORTEX_WSLINK_H
#define CORTEX_WSLINK_H

#include <stddef.h>
#include <stdint.h>

#define WSL_HEAD_MAX 4096 /* the server's handshake reply */

/* The request for path/protocol with key (16 random bytes, base64, 24 chars
 * + NUL).  Returns its length, or -1 if it does not fit cap. */
int wsl_request(char *buf, size_t cap, const char *protocol, const char *key_b64);
/* A new key: 16 random bytes in base64 (25 bytes with the NUL). */
void wsl_new_key(char key_b64[25]);

/* The server's reply head (up to and including the blank line): 0 if it is a
 * 101 with Upgrade/Connection and the accept value key_b64 asks for, -1
 * otherwise (why says which check failed). */
int wsl_check_reply(const char *head, size_t len, const char *key_b64, const char **why);

/* Incremental parser of server frames. */
enum wsl_event { WSL_DATA, WSL_CLOSE, WSL_PING };
struct wsl_rx {
	uint8_t hdr[14];
	unsigned hdr_have;
	uint64_t left;     /* payload bytes of the current frame still to come */
	uint8_t opcode;    /* of the current frame */
	uint8_t ctl[125];  /* a control frame's payload, gathered */
	unsigned ctl_have;
	int in_frame;      /* header parsed, payload pending */
};
/* Deliver: data runs of text/binary/continuation frames (WSL_DATA, any
 * number of calls per frame), a close (WSL_CLOSE, its payload) or a ping
 * (WSL_PING, its payload, for the pong).  Pongs are dropped.  A non-zero
 * return stops wsl_feed, which returns it. */
typedef int (*wsl_deliver)(void *arg, enum wsl_event ev, const uint8_t *p, size_t n);
/* Feed received bytes.  0, the deliver callback's non-zero value, or -1 for
 * a protocol error (*why set): a masked server frame, RSV bits, an unknown
 * opcode, a fragmented or oversized control frame, a 64-bit length with the
 * top bit set. */
int wsl_feed(struct wsl_rx *rx, const uint8_t *p, size_t n, wsl_deliver cb, void *arg, const char **why);

/* A client frame header for a payload of len bytes (FIN set), masked with
 * mask: written to hdr (up to 14 bytes); returns its length. */
size_t wsl_header(uint8_t hdr[14], uint8_t opcode, uint64_t len, const uint8_t mask[4]);
/* XOR the payload with the mask (RFC 6455 §5.3), in place. */
void wsl_mask(uint8_t *p, size_t n, const uint8_t mask[4]);

#endif
