/* files_route.c — GET|PUT|DELETE /v1/sessions/{id}/files?path= (docs/protocol.md
 * "Files").  The route checks the path and the caps here; the file work runs
 * on a worker (core/files.c), which never wakes the session.  A session has
 * at most files.max_inflight operations running (429 past it). */
#include "edge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "log.h"
#include "metrics.h"

static uint64_t ops_total[3], errors_total, attached_total;
static double ms_sum[3];

static void files_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	static const char *const names[] = {"get", "put", "delete"};
	uint64_t us[3];
	for (int i = 0; i < 3; i++)
		us[i] = (uint64_t)(ms_sum[i] * 1000.0);
	metrics_counter_by(f, "cortex_files_ops_total", "files API operations by method", "op", names, ops_total, 3);
	metrics_counter_by(f, "cortex_files_op_microseconds_total", "time in files API operations (worker side)", "op",
			   names, us, 3);
	metrics_counter(f, "cortex_files_errors_total", "files API operations answered with an error", errors_total);
	metrics_counter(f, "cortex_files_disk_attached_total",
			"operations that attached a sleeping session's disk for themselves", attached_total);
}

void files_route_init(void)
{
	metrics_register("files", files_metrics_write, NULL);
}

struct files_req {
	struct session *s; /* a reference; the worker never touches it */
	struct files_job j;
};

static int files_do(void *arg, cx_err *err)
{
	struct files_req *r = arg;
	(void)err;
	files_run(&r->j);
	return 0;
}

static void files_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct files_req *r = arg;
	struct files_job *j = &r->j;
	(void)rc;
	(void)err;
	r->s->files_inflight--;
	session_unref(r->s);
	ops_total[j->op]++;
	ms_sum[j->op] += j->ms;
	attached_total += (uint64_t)j->attached;
	if (j->status >= 400)
		errors_total++;
	if (!resp) {
	} else if (j->status >= 400) {
		api_error(resp, j->status, j->code ? j->code : "internal", "%s", j->err.msg);
	} else if (j->json) {
		api_reply(resp, j->status, json_incref(j->json));
	} else if (j->op == FILES_GET) {
		free(resp->body);
		resp->status = j->status;
		resp->body = j->bytes;
		resp->body_len = j->nbytes;
		resp->ctype = "application/octet-stream";
		j->bytes = NULL;
		if (j->status == 206)
			snprintf(resp->content_range, sizeof resp->content_range, "bytes %llu-%llu/%llu",
				 (unsigned long long)j->off, (unsigned long long)(j->off + j->nbytes - 1),
				 (unsigned long long)j->size);
		if (!resp->body_len) { /* an empty file: no body at all */
			free(resp->body);
			resp->body = NULL;
		}
	} else {
		api_reply(resp, j->status, NULL);
	}
	files_job_clear(j);
	free(r);
}

size_t files_route_body_cap(struct cortexd *d, const char *m, const char *path)
{
	if (strcmp(m, "PUT") || strncmp(path, "/v1/sessions/", 13))
		return 0;
	const char *slash = strchr(path + 13, '/');
	return slash && !strcmp(slash, "/files") ? (size_t)d->cfg.files_max_write : 0;
}

void files_route(struct cortexd *d, struct session *s, const struct api_req *req, struct api_resp *resp)
{
	const char *m = req->method;
	enum files_op op = !strcmp(m, "GET") ? FILES_GET : !strcmp(m, "PUT") ? FILES_PUT : FILES_DELETE;
	if (strcmp(m, "GET") && strcmp(m, "PUT") && strcmp(m, "DELETE")) {
		api_error(resp, 405, "method_not_allowed", "use GET, PUT or DELETE");
		return;
	}
	char path[FILES_PATH_MAX + 1] = "", v[16] = "";
	cx_err err = CX_ERR_INIT;
	if (!api_query_arg(req->query, "path", path, sizeof path) || !path[0]) {
		api_error(resp, 400, "bad_request", "?path= is required (/workspace/... or /home/agent/...)");
		return;
	}
	if (files_path_ok(path, &err) < 0) {
		api_error(resp, 400, "bad_path", "%s", err.msg);
		return;
	}
	if (s->deleted) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	if (s->files_inflight >= d->cfg.files_max_inflight) {
		api_error(resp, 429, "too_many", "%u file operations of this session are running; retry",
			  s->files_inflight);
		return;
	}
	struct files_req *r = calloc(1, sizeof *r);
	if (!r) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	struct files_job *j = &r->j;
	j->op = op;
	snprintf(j->dir, sizeof j->dir, "%s", s->dir);
	snprintf(j->path, sizeof j->path, "%s", path);
	j->uid = s->spec.uid;
	j->max_read = d->cfg.files_max_read;
	j->max_entries = d->cfg.files_max_entries;
	if (op == FILES_GET && req->range && req->range[0] && files_parse_range(req->range, j) < 0) {
		free(r);
		api_error(resp, 416, "range_not_satisfiable", "Range must be one bytes=first-last, bytes=first- or bytes=-n");
		return;
	}
	if (op == FILES_DELETE && api_query_arg(req->query, "recursive", v, sizeof v))
		j->recursive = !strcmp(v, "1") || !strcmp(v, "true");
	if (op == FILES_PUT) {
		j->len = req->body_len;
		j->data = malloc(j->len ? j->len : 1);
		if (!j->data) {
			free(r);
			api_error(resp, 500, "internal", "out of memory");
			return;
		}
		if (j->len)
			memcpy(j->data, req->body, j->len);
	}
	r->s = s;
	s->refs++;
	s->files_inflight++;
	api_defer(resp, files_do, files_then, r);
}
