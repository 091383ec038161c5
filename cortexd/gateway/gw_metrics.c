/* gw_metrics.c — /metrics series of the model gateway. */
#include "gw_metrics.h"

#include "gateway.h"

void gateway_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	struct gw_stats gs;
	gateway_get_stats(&gs);
	fprintf(f, "# HELP cortex_gateway_requests_total Model gateway requests by provider status class.\n"
		   "# TYPE cortex_gateway_requests_total counter\n");
	static const char *const cls[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
	for (int i = 0; i < 6; i++)
		fprintf(f, "cortex_gateway_requests_total{status=\"%s\"} %llu\n", cls[i],
			(unsigned long long)gs.by_class[i]);
	fprintf(f, "cortex_gateway_requests_total{status=\"unauthorized\"} %llu\n", (unsigned long long)gs.unauthorized);
	fprintf(f, "cortex_gateway_requests_total{status=\"overloaded\"} %llu\n", (unsigned long long)gs.overloaded);
	fprintf(f,
		"# HELP cortex_gateway_refused_total Gateway requests refused for the in-flight "
		"pool: a user's share (429), all of it with no queue (529), all of it and the "
		"queue (529), or a body too slow (closed).\n"
		"# TYPE cortex_gateway_refused_total counter\n"
		"cortex_gateway_refused_total{reason=\"user_cap\"} %llu\n"
		"cortex_gateway_refused_total{reason=\"global_cap\"} %llu\n"
		"cortex_gateway_refused_total{reason=\"queue_full\"} %llu\n"
		"cortex_gateway_refused_total{reason=\"slow_body\"} %llu\n",
		(unsigned long long)gs.refused_user_cap, (unsigned long long)gs.refused_global_cap,
		(unsigned long long)gs.refused_queue_full, (unsigned long long)gs.slow_body);
	fprintf(f,
		"# HELP cortex_gateway_queued Gateway requests waiting for a slot of the pool.\n"
		"# TYPE cortex_gateway_queued gauge\ncortex_gateway_queued %u\n"
		"# HELP cortex_gateway_queue_limit The queue's length and wait (config).\n"
		"# TYPE cortex_gateway_queue_limit gauge\n"
		"cortex_gateway_queue_limit{bound=\"length\"} %u\n"
		"cortex_gateway_queue_limit{bound=\"wait_seconds\"} %g\n"
		"# HELP cortex_gateway_queue_timeouts_total Queued gateway requests that got no slot "
		"in time (529).\n"
		"# TYPE cortex_gateway_queue_timeouts_total counter\n"
		"cortex_gateway_queue_timeouts_total %llu\n",
		gs.queued, gs.lim.max_queued, gs.lim.queue_timeout_ms / 1000.0,
		(unsigned long long)gs.queue_timeouts);
	fputs("# HELP cortex_gateway_queue_wait_seconds Gateway: queued -> given a slot.\n"
	      "# TYPE cortex_gateway_queue_wait_seconds histogram\n", f);
	static const double qb[] = GW_QUEUE_WAIT_BOUNDS_MS;
	for (size_t i = 0; i < sizeof qb / sizeof qb[0]; i++) /* already cumulative */
		fprintf(f, "cortex_gateway_queue_wait_seconds_bucket{le=\"%g\"} %llu\n", qb[i] / 1000.0,
			(unsigned long long)gs.queue_wait_bucket[i]);
	fprintf(f,
		"cortex_gateway_queue_wait_seconds_bucket{le=\"+Inf\"} %llu\n"
		"cortex_gateway_queue_wait_seconds_sum %.6f\n"
		"cortex_gateway_queue_wait_seconds_count %llu\n",
		(unsigned long long)gs.queue_wait_count, (double)gs.queue_wait_us_sum / 1e6,
		(unsigned long long)gs.queue_wait_count);
	fprintf(
	    f,
	    "# HELP cortex_gateway_inflight Gateway requests holding a slot of the pool (body "
	    "arriving or provider request running).\n"
	    "# TYPE cortex_gateway_inflight gauge\ncortex_gateway_inflight %u\n"
	    "# HELP cortex_gateway_inflight_users Users holding at least one slot of the pool.\n"
	    "# TYPE cortex_gateway_inflight_users gauge\ncortex_gateway_inflight_users %u\n"
	    "# HELP cortex_gateway_inflight_limit The pool's size in all and one user's share "
	    "(config).\n"
	    "# TYPE cortex_gateway_inflight_limit gauge\n"
	    "cortex_gateway_inflight_limit{scope=\"global\"} %u\n"
	    "cortex_gateway_inflight_limit{scope=\"user\"} %u\n",
	    gs.inflight, gs.inflight_users, gs.lim.max_inflight, gs.lim.max_inflight_per_user);
	fputs("# HELP cortex_gateway_ttfb_seconds Gateway: request in -> provider's first byte.\n"
	      "# TYPE cortex_gateway_ttfb_seconds histogram\n", f);
	static const double gb[] = GW_TTFB_BOUNDS_MS;
	for (size_t i = 0; i < sizeof gb / sizeof gb[0]; i++) /* already cumulative */
		fprintf(f, "cortex_gateway_ttfb_seconds_bucket{le=\"%g\"} %llu\n", gb[i] / 1000.0,
			(unsigned long long)gs.ttfb_bucket[i]);
	fprintf(f, "cortex_gateway_ttfb_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)gs.ttfb_count);
	fprintf(f, "cortex_gateway_ttfb_seconds_sum %.6f\ncortex_gateway_ttfb_seconds_count %llu\n",
		(double)gs.ttfb_us_sum / 1e6, (unsigned long long)gs.ttfb_count);
	fprintf(f, "# HELP cortex_gateway_forward_seconds_total Gateway: provider chunk in -> written to the agent, summed.\n"
		   "# TYPE cortex_gateway_forward_seconds_total counter\ncortex_gateway_forward_seconds_total %.6f\n"
		   "# TYPE cortex_gateway_forward_events_total counter\ncortex_gateway_forward_events_total %llu\n",
		(double)gs.fwd_us_sum / 1e6, (unsigned long long)gs.fwd_events);
}
