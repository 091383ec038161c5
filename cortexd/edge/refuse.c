/* refuse.c — counters of what the edge refused (refuse.h). */
#include "refuse.h"

#include <stdint.h>

#include "door.h"
#include "metrics.h"

static uint64_t refused[REFUSE_N], rejected[REJECT_N], ws_protocol_errors;

void refuse_count(enum refuse_pool p)
{
	if (p < REFUSE_N)
		refused[p]++;
}

void reject_count(enum reject_reason r)
{
	if (r < REJECT_N)
		rejected[r]++;
}

void ws_protocol_error_count(void)
{
	ws_protocol_errors++;
}

void refuse_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	static const char *const pools[REFUSE_N] = {
	    "http", "http_ip", "ws_session", "ws_user", "sessions_user", "image_builds", "preview"};
	static const char *const reasons[REJECT_N] = {"uri_too_long", "headers_too_large",
						      "bad_request", "head_timeout", "dropped"};
	metrics_gauge(f, "cortex_http_connections", "Client connections open (counted by the door).", door_conns());
	metrics_counter_by(f, "cortex_refused_total",
			   "Requests and connections refused because a pool was full.", "pool",
			   pools, refused, REFUSE_N);
	metrics_counter_by(f, "cortex_http_rejected_total",
			   "Connections answered at the door for a bad request head.", "reason",
			   reasons, rejected, REJECT_N);
	metrics_counter(f, "cortex_ws_protocol_errors_total",
			"Client WebSockets libwebsockets closed with 1002 (protocol error): an unmasked frame "
			"(RFC 6455 5.1), a bad opcode, continuation or reserved bits.",
			ws_protocol_errors);
}
