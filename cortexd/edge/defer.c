/* defer.c — replies that wait for a store write on a worker (see edge.h). */
#include "edge.h"

#include <string.h>

#include "log.h"
#include "work.h"

struct api_defer {
	api_run_fn run;
	api_then_fn then;
	void *arg;
	int rc;
	cx_err err;
	struct api_resp *resp;    /* the connection's reply, NULL once it has gone */
	struct lws *wsi;
	struct api_defer **slot;  /* the connection's pointer to this job */
	int started;              /* api_defer_start ran (an event reply) */
	int done_early;           /* api_defer_complete came first */
};

void api_defer(struct api_resp *resp, api_run_fn run, api_then_fn then, void *arg)
{
	struct api_defer *j = calloc(1, sizeof *j);
	if (!j) {
		then(arg, -1, &(cx_err){ENOMEM, "out of memory"}, resp);
		return;
	}
	j->run = run;
	j->then = then;
	j->arg = arg;
	resp->defer = j;
}

static void defer_run(void *arg)
{
	struct api_defer *j = arg;
	cx_err_clear(&j->err);
	j->rc = j->run(j->arg, &j->err);
}

static void defer_done(void *arg)
{
	struct api_defer *j = arg;
	if (j->slot)
		*j->slot = NULL;
	j->then(j->arg, j->rc, &j->err, j->resp);
	if (j->resp && j->wsi)
		lws_callback_on_writable(j->wsi);
	free(j);
}

void api_defer_start(struct api_resp *resp, struct lws *wsi, struct api_defer **slot)
{
	struct api_defer *j = resp->defer;
	resp->defer = NULL;
	j->resp = resp;
	j->wsi = wsi;
	j->slot = slot;
	j->started = 1;
	*slot = j;
	if (j->run)
		work_submit(defer_run, defer_done, j);
	else if (j->done_early) /* completed before the connection took it */
		defer_done(j);
}

struct api_defer *api_defer_event(struct api_resp *resp, api_then_fn then, void *arg)
{
	api_defer(resp, NULL, then, arg);
	return resp->defer;
}

void api_defer_complete(struct api_defer *j, int rc, const cx_err *err)
{
	j->rc = rc;
	if (err)
		j->err = *err;
	if (!j->started) {
		j->done_early = 1; /* api_defer_start sends it */
		return;
	}
	defer_done(j);
}

void api_defer_detach(struct api_defer *j)
{
	j->resp = NULL;
	j->wsi = NULL;
	j->slot = NULL;
}

void api_defer_finish(struct api_resp *resp)
{
	struct api_defer *j = resp->defer;
	if (!j)
		return;
	resp->defer = NULL;
	j->resp = resp;
	if (!j->run) { /* an event reply in a unit test: answered when it comes */
		j->started = 1;
		if (j->done_early)
			defer_done(j);
		return;
	}
	defer_run(j);
	defer_done(j);
}
