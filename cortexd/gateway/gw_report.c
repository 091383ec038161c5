/* gw_report.c — the requests in flight: moving curl's data to the sockets
 * (gateway_service), finishing a request and reporting it to its session,
 * and the stats.  Below the vhost (gw_http.c) and the public side. */
#include "gw_internal.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

struct gw_state gw_state;

static const unsigned ttfb_bounds_ms[12] = GW_TTFB_BOUNDS_MS;

static double us_to_ms(uint64_t us)
{
	return (double)us / 1000.0;
}

static void stats_add(const struct gw_report *r)
{
	struct gw_stats *s = &gw_state.stats;
	int cls = r->status / 100;
	s->by_class[cls >= 0 && cls < 6 ? cls : 0]++;
	if (r->ttfb_ms > 0) {
		uint64_t us = (uint64_t)(r->ttfb_ms * 1000.0);
		s->ttfb_us_sum += us;
		s->ttfb_count++;
		/* cumulative (Prometheus "le" buckets); +Inf is ttfb_count */
		for (unsigned i = 0; i < 12; i++)
			if (r->ttfb_ms <= ttfb_bounds_ms[i])
				s->ttfb_bucket[i]++;
	}
	s->fwd_us_sum += (uint64_t)r->fwd_us_sum;
	s->fwd_events += r->events;
}

void gw_report_send(const char *sess_id, const struct gw_report *r)
{
	stats_add(r);
	if (gw_state.ops.report)
		gw_state.ops.report(gw_state.ops.arg, sess_id, r);
}

/* What the finished request q tells its session. */
static void report_fill(struct gw_report *r, const struct gw_req *q)
{
	const struct gw_sse *p = &q->parse;
	memset(r, 0, sizeof *r);
	r->status = q->queue.hdr_done || q->t_first_us ? q->status : 0;
	r->curl_code = q->curl_code;
	r->stream = p->sse || p->req_stream;
	r->agent_gone = !q->conn;
	r->recv_us = q->t_recv_us;
	/* Cut: curl failed after the response began, the agent left early, or an
	 * SSE 200 stream ended without message_stop (a close-delimited response
	 * cut by the provider looks complete to curl). */
	r->cut = r->status && (q->curl_code != 0 ||
			       (p->sse && q->status == 200 && !p->saw_stop && !p->error[0]));
	r->ttfb_ms = q->t_first_us ? us_to_ms(q->t_first_us - q->t_recv_us) : 0;
	r->total_ms = us_to_ms((q->t_last_us ? q->t_last_us : cx_mono_us()) - q->t_recv_us);
	r->events = q->events;
	r->fwd_us_sum = q->fwd_us_sum;
	r->fwd_us_max = q->fwd_us_max;
	r->usage = p->usage;
	snprintf(r->model, sizeof r->model, "%s", p->model);
	if (p->error[0] && q->status >= 400)
		snprintf(r->error, sizeof r->error, "%s", p->error);
	else if (q->curl_code)
		snprintf(r->error, sizeof r->error, "%s", gw_req_strerror(q));
	else if (p->error[0])
		snprintf(r->error, sizeof r->error, "%s", p->error);
	if (r->cut && !q->conn && !r->error[0])
		snprintf(r->error, sizeof r->error, "the agent closed the connection");
}

void gw_req_finalize(struct gw_req *q)
{
	pthread_join(q->thr, NULL);
	struct gw_report r;
	report_fill(&r, q);
	log_debug("gateway: %s %s -> %d (curl %d%s) ttfb %.1f ms total %.1f ms, %u chunks",
		  q->method, q->sess_id, r.status, r.curl_code, r.cut ? ", cut" : "", r.ttfb_ms,
		  r.total_ms, r.events);

	for (struct gw_req **pp = &gw_state.inflight; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	gw_pool_put(q->user);
	if (q->conn)
		q->conn->req = NULL;
	gw_report_send(q->sess_id, &r);
	gw_req_free(q);
}

void gateway_service(void)
{
	for (struct gw_req *q = gw_state.inflight, *next; q; q = next) {
		next = q->next;
		struct gw_queue_state st;
		gw_queue_pop(&q->queue, 0, &st);
		int pending = (st.hdr_done && !q->hdr_sent) || st.more || st.finished;
		if (q->wsi) {
			if (pending)
				lws_callback_on_writable(q->wsi);
		} else if (st.finished) {
			gw_req_finalize(q); /* the agent left: nothing to send */
		}
	}
}

void gateway_get_stats(struct gw_stats *out)
{
	*out = gw_state.stats;
}
