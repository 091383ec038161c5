/* routes_metrics.c — GET /metrics (admin; the registry of metrics.h),
 * GET /v1/metrics/turns and /v1/metrics/summary (a user's own turn records;
 * the admin's: everyone's).  Listings are bounded: one page reads at most
 * RECORDS_SCAN_MAX rows and says where the next page starts. */
#include "edge.h"

#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "records.h"

static void metrics_text(struct api_resp *resp)
{
	size_t len = 0;
	char *buf = metrics_render(&len);
	if (!buf) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	free(resp->body);
	resp->status = 200;
	resp->body = buf;
	resp->ctype = "text/plain; version=0.0.4";
}

/* The filter of a query; -1 with a 400 in resp. */
static int filter_of(const char *q, long long dflt_limit, struct records_filter *f, char *sess, size_t scap,
		     char *after, size_t acap, struct api_resp *resp)
{
	char v[200];
	long long since = 0, limit = dflt_limit;
	if (api_query_arg(q, "since", v, sizeof v) && api_parse_int(v, 0, INT64_MAX / 2, &since) < 0) {
		api_error(resp, 400, "bad_request", "\"since\" must be milliseconds since the epoch");
		return -1;
	}
	if (api_query_arg(q, "limit", v, sizeof v) && api_parse_int(v, 1, 100000, &limit) < 0) {
		api_error(resp, 400, "bad_request", "\"limit\" must be an integer from 1 to 100000");
		return -1;
	}
	if (api_query_arg(q, "session", sess, scap) && !sess[0]) {
		api_error(resp, 400, "bad_request", "\"session\" must not be empty");
		return -1;
	}
	if (api_query_arg(q, "after", after, acap) && strncmp(after, "turns/", 6)) {
		api_error(resp, 400, "bad_request", "\"after\" must be a cursor from an earlier answer");
		return -1;
	}
	f->since_ms = since;
	f->limit = (size_t)limit;
	f->session = sess[0] ? sess : NULL;
	f->after = after;
	return 0;
}

static void turns(struct cortexd *d, const char *user, enum api_who who, const struct api_req *req,
		  struct api_resp *resp, int summary)
{
	char sess[64] = "", after[400] = "", next[400] = "";
	struct records_filter f = {.user = who == WHO_ADMIN ? NULL : user};
	if (filter_of(req->query ? req->query : "", summary ? 100000 : 1000, &f, sess, sizeof sess, after,
		      sizeof after, resp) < 0)
		return;
	json_t *arr = NULL;
	cx_err err = CX_ERR_INIT;
	if (records_query(d->st, &f, &arr, next, sizeof next, &err) < 0) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return;
	}
	if (!summary) {
		api_reply(resp, 200, arr);
		return;
	}
	ccache_stats cc;
	ccache_get_stats(&cc);
	uint64_t looks = cc.hits + cc.misses + cc.dirty + cc.expired;
	json_t *o = records_summarize(&d->cfg, arr, looks ? (double)cc.hits / (double)looks : 0.0);
	json_decref(arr);
	if (o && next[0]) /* more rows than one page reads: the summary covers up to here */
		json_object_set_new(o, "next", json_string(next));
	api_reply(resp, 200, o);
}

void routes_metrics(struct cortexd *d, const char *user, enum api_who who, const struct api_req *req,
		    struct api_resp *resp)
{
	const char *p = req->path;
	if (strcmp(req->method, "GET")) {
		api_error(resp, 405, "method_not_allowed", "use GET");
	} else if (!strcmp(p, "/metrics")) {
		if (who != WHO_ADMIN)
			api_error(resp, 403, "forbidden", "admin token required");
		else
			metrics_text(resp);
	} else if (!strcmp(p, "/v1/metrics/turns")) {
		turns(d, user, who, req, resp, 0);
	} else if (!strcmp(p, "/v1/metrics/summary")) {
		turns(d, user, who, req, resp, 1);
	} else {
		api_error(resp, 404, "not_found", "no such route: %.200s", p);
	}
}
