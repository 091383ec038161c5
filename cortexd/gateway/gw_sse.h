/* gw_sse.h — what the gateway learns from a provider response while it
 * streams through: token usage, the model, the provider's error message.
 *
 * A pure unit: bytes in (in any chunk split), fields out; no I/O, no locks,
 * no threads.  An SSE body (text/event-stream) is read line by line and only
 * the data lines of message_start / message_delta / message_stop / error
 * events are decoded; any other body is kept (up to GW_SSE_CAP_JSON) and
 * decoded as one JSON document at the end.
 *
 *   struct gw_sse p;
 *   gw_sse_init(&p, is_event_stream);
 *   gw_sse_feed(&p, bytes, n);  ... as often as bytes arrive
 *   gw_sse_finish(&p, http_status);
 *   gw_sse_request(&p, request_body, len);  (optional)
 *   ... read p.usage, p.model, p.error, p.saw_stop, p.req_stream
 *   gw_sse_free(&p);
 */
#ifndef CORTEX_GW_SSE_H
#define CORTEX_GW_SSE_H

#include <stddef.h>
#include <stdint.h>

#define GW_SSE_CAP_LINE (256u << 10) /* one SSE line kept for decoding (longer: skipped) */
#define GW_SSE_CAP_JSON (1u << 20)   /* a non-SSE body kept for decoding (longer: ignored) */

struct gw_usage {
	uint64_t input, output, cache_read, cache_creation;
};

struct gw_sse {
	int sse;    /* the body is an event stream, else one JSON document */
	char *line; /* the SSE line being assembled (owned) */
	size_t line_len;
	int line_skip; /* the current line is over GW_SSE_CAP_LINE */
	char *jbuf;    /* a non-SSE body (owned) */
	size_t jlen;
	int jover; /* over GW_SSE_CAP_JSON: not decoded */

	/* results */
	int saw_stop;	       /* a message_stop event arrived */
	int req_stream;	       /* the request asked for "stream":true (gw_sse_request) */
	struct gw_usage usage; /* from message_start / message_delta, or the JSON body */
	char model[128];       /* from the response, else the request */
	char error[512]; /* an SSE error event's message, or an error body's (status >= 400) */
};

void gw_sse_init(struct gw_sse *p, int sse);
/* The next n bytes of the response body. */
void gw_sse_feed(struct gw_sse *p, const char *b, size_t n);
/* End of the body: a last unterminated line, or the JSON body. */
void gw_sse_finish(struct gw_sse *p, int status);
/* The agent's request body: "stream":true, and its model when the response
 * named none (error responses).  After gw_sse_finish. */
void gw_sse_request(struct gw_sse *p, const char *body, size_t n);
void gw_sse_free(struct gw_sse *p);

#endif
