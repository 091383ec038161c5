/* clone.c — see clone.h. */
#include "clone.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cconfig.h"
#include "fanout.h"
#include "jobs.h"
#include "log.h"
#include "repo.h"
#include "work.h"

struct clone_job {
	struct cortexd *d;      /* not owned; read on the service thread only */
	store *st;              /* thread-safe */
	const secrets_key *skey;
	char sid[40], user[72];
	char url[REPO_URL_MAX], ref[REPO_REF_MAX + 1], secret[128];
	uid_t uid;
	unsigned flags;
	char stage[4300], workspace[4300];
	/* result */
	int rc;
	cx_err err;
	double ms;
};

struct clone_tick {
	struct cortexd *d;
	char sid[40];
	struct repo_progress p;
	char phase[16];
};

/* Service thread: a progress record becomes a frame for the session's clients. */
static void tick_done(void *arg)
{
	struct clone_tick *t = arg;
	struct session *s = session_find(t->d, t->sid);
	if (s && !s->deleted) {
		s->lc.clone_objects = t->p.received_objects;
		s->lc.clone_total = t->p.total_objects;
		fanout_obj(s, json_pack("{s:s,s:s,s:s,s:i,s:i,s:I,s:i,s:i}", "type", "cortex.progress", "phase",
					"cloning", "step", t->phase, "received_objects", (int)t->p.received_objects,
					"total_objects", (int)t->p.total_objects, "received_bytes",
					(json_int_t)t->p.received_bytes, "checkout_done", (int)t->p.checkout_done,
					"checkout_total", (int)t->p.checkout_total));
	}
	free(t);
}

static void on_progress(void *arg, const struct repo_progress *p)
{
	const struct clone_job *j = arg;
	struct clone_tick *t = calloc(1, sizeof *t);
	if (!t)
		return; /* a progress frame less */
	t->d = j->d;
	snprintf(t->sid, sizeof t->sid, "%s", j->sid);
	t->p = *p;
	snprintf(t->phase, sizeof t->phase, "%s", p->phase ? p->phase : "cloning");
	t->p.phase = NULL;
	work_submit(NULL, tick_done, t);
}

static void clone_done(void *arg);

static void *clone_thread(void *arg)
{
	struct clone_job *j = arg;
	uint64_t t0 = cx_mono_us();
	char *token = NULL;
	size_t tlen = 0;
	j->rc = 0;
	if (j->secret[0] && cconfig_secret(j->st, j->skey, j->user, j->secret, &token, &tlen, &j->err) < 0)
		j->rc = cx_err_wrap(&j->err, "repo.secret");
	if (j->rc == 0) {
		struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
		o.url = j->url;
		o.ref = j->ref[0] ? j->ref : NULL;
		o.token = token;
		o.uid = j->uid;
		o.gid = j->uid;
		o.stage_dir = j->stage;
		o.workspace_dir = j->workspace;
		o.progress = on_progress;
		o.arg = j;
		o.flags = j->flags;
		j->rc = repo_clone(&o, &j->err);
	}
	if (token)
		secrets_free(token, tlen);
	j->ms = (double)(cx_mono_us() - t0) / 1000.0;
	work_submit(NULL, clone_done, j);
	return NULL;
}

static void clone_done(void *arg)
{
	struct clone_job *j = arg;
	struct session *s = session_find(j->d, j->sid);
	if (s) {
		s->lc.cloning = 0;
		if (j->rc == 0) {
			log_info("session %s: %s cloned into /workspace in %.0f ms", s->id, j->url, j->ms);
			s->spec.repo_done = 1;
			s->lc.clone_error[0] = '\0';
			char key[300];
			char *v = session_record(s, key, sizeof key);
			json_t *rec = v ? json_loads(v, 0, NULL) : NULL;
			free(v);
			if (rec)
				store_put_later(s->d, s->id, key, rec);
			fanout_obj(s, json_pack("{s:s,s:s,s:s}", "type", "cortex.progress", "phase", "cloning",
						"step", "done"));
		} else {
			log_warn("session %s: clone %s: %s", s->id, j->url, j->err.msg);
			snprintf(s->lc.clone_error, sizeof s->lc.clone_error, "repo: %s", j->err.msg);
		}
		s->d->reconcile(s); /* the lifecycle's hook: this file sits below it */
	}
	free(j);
}

int clone_start(struct session *s, cx_err *err)
{
	const config *c = &s->d->cfg;
	struct clone_job *j = calloc(1, sizeof *j);
	if (!j)
		return cx_err_set(err, ENOMEM, "clone");
	j->d = s->d;
	j->st = s->d->st;
	j->skey = &s->d->skey;
	snprintf(j->sid, sizeof j->sid, "%s", s->id);
	snprintf(j->user, sizeof j->user, "%s", s->user);
	snprintf(j->url, sizeof j->url, "%s", s->spec.repo_url);
	snprintf(j->ref, sizeof j->ref, "%s", s->spec.repo_ref);
	snprintf(j->secret, sizeof j->secret, "%s", s->spec.repo_secret);
	j->uid = s->spec.uid;
	j->flags = c->repo_allow_private ? REPO_ALLOW_PRIVATE : 0;
	snprintf(j->stage, sizeof j->stage, "%s/" JOBS_DISK_DIR "/stage", s->dir);
	snprintf(j->workspace, sizeof j->workspace, "%s/" JOBS_DISK_DIR "/workspace", s->dir);
	pthread_attr_t a;
	pthread_t th;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&th, &a, clone_thread, j);
	pthread_attr_destroy(&a);
	if (rc) {
		free(j);
		return cx_err_set(err, rc, "clone thread");
	}
	s->lc.cloning = 1;
	fanout_obj(s, json_pack("{s:s,s:s,s:s}", "type", "cortex.progress", "phase", "cloning", "step", "start"));
	return 0;
}
