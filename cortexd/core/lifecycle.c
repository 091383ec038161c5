/* lifecycle.c — see lifecycle.h.  The only writer of s->lc, s->sync and
 * s->cc; the only place a session's sandbox jobs are submitted and applied. */
#include "lifecycle.h"
#include "turnlog.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "boot.h"
#include "build.h"
#include "exec.h"
#include "fanout.h"
#include "fswatch.h"
#include "gateway.h"
#include "handover.h"
#include "imgstore.h"
#include "jobs.h"
#include "clone.h"
#include "lifecycle-internal.h"
#include "egress.h"
#include "log.h"
#include "npmcache.h"
#include "turn.h"
#include "work.h"

static void idle_arm(struct session *s);

static const char *const step_names[STEP_N] = {"sandbox", "link", "config", "packages", "sync", "repo", "agent"};

/* ---- activity ---- */

void lc_touch(struct session *s)
{
	if (s->deleted)
		return;
	s->lc.active_us = cx_mono_us();
	s->last_active_at = cx_wall_ms();
	idle_arm(s);
}

void lifecycle_touch(struct session *s) { lc_touch(s); }

int lifecycle_busy(const struct session *s)
{
	return s->lc.job != JOB_NONE || s->lc.sync_job != NULL || s->exec_launching;
}

/* Packages a sandbox mounted stay pinned (never evicted) until it stops. */
static void sync_forget(struct session *s)
{
	for (size_t i = 0; i < s->sync.n_mounts; i++)
		npmcache_unpin(s->sync.mounts[i].key);
	sync_state_clear(&s->sync);
}

/* Errors reach clients (GET /v1/sessions/{id}, cortex.error): host paths in
 * them (the data and images dirs, e.g. from a failed mkdir or mount) become
 * placeholders, so a tenant learns nothing of the host's layout. */
static void scrub_one(char *m, size_t cap, const char *host, const char *shown)
{
	size_t hl = strlen(host), sl = strlen(shown);
	if (hl < 2)
		return;
	for (char *p = m; (p = strstr(p, host));) {
		size_t tail = strlen(p + hl);
		if ((size_t)(p - m) + sl + tail + 1 > cap)
			break;
		memmove(p + sl, p + hl, tail + 1);
		memcpy(p, shown, sl);
		p += sl;
	}
}

void lc_client_msg(const struct session *s, const char *msg, char *out, size_t cap)
{
	snprintf(out, cap, "%s", msg);
	scrub_one(out, cap, s->d->cfg.images_dir, "<images>");
	scrub_one(out, cap, s->d->cfg.data_dir, "<data>");
}

void lc_set_error(struct session *s, const char *msg)
{
	s->lc.state = SS_ERROR;
	lc_client_msg(s, msg, s->lc.error, sizeof s->lc.error);
}

/* The session's config: a clean one of another session of its user is
 * taken as is (ccache_adopt), so a burst of creates assembles it once
 * instead of reading the store on the service thread for each. */
static cconfig *lc_config(struct session *s, enum ccache_how *how, cx_err *err)
{
	struct ccache_src src = {s->d->st, &s->d->skey, &s->d->cfg};
	for (struct session *o = s->d->sessions; o && !s->cc.cfg; o = o->next)
		if (o != s && !o->deleted && !strcmp(o->user, s->user))
			ccache_adopt(&s->cc, &o->cc);
	return ccache_get(&s->cc, &src, s->user, how, err);
}

/* ---- jobs: submitted here, applied here (service thread) ---- */

static void prepare_done(void *arg);
static void stop_done(void *arg);
static void freeze_done(void *arg);
static void sync_done(void *arg);

static int start_prepare(struct session *s, cx_err *err)
{
	struct prepare_job *j = calloc(1, sizeof *j);
	if (!j)
		return cx_err_set(err, ENOMEM, "prepare job");
	j->s = s;
	j->cfg = &s->d->cfg;
	snprintf(j->id, sizeof j->id, "%s", s->id);
	snprintf(j->dir, sizeof j->dir, "%s", s->dir);
	j->images = s->d->images;
	snprintf(j->image, sizeof j->image, "%s", s->spec.image);
	j->uid = s->spec.uid;
	j->egress = egress_running();
	j->disk_mb = s->spec.disk_mb;
	j->cpu_weight = s->spec.cpu_weight;
	j->cpu_max_milli = s->spec.cpu_max_milli;
	j->memory_mb = s->spec.memory_mb;
	j->pids = s->spec.pids;
	j->gateway_port = s->d->cfg.gateway_enabled ? gateway_port() : 0;
	if (s->lc.sb) { /* broken: the job stops what is left of it first */
		log_info("session %s: its ws-agent link was lost; replacing the sandbox", s->id);
		agent_link_close(s);
		j->old = s->lc.sb;
		j->old_pinned = s->lc.pinned;
		s->lc.sb = NULL;
		s->lc.pinned = 0;
	}
	s->lc.broken = 0;
	if (!s->lc.ready_t0_us)
		s->lc.ready_t0_us = cx_mono_us();
	if (s->lc.state != SS_CREATING)
		s->lc.state = SS_WAKING;
	sync_forget(s); /* a new sandbox starts empty (its /tmp too) */
	s->lc.job = JOB_PREPARE;
	s->refs++;
	j->submit_us = cx_mono_us();
	work_submit_lane(WORK_SANDBOX, job_prepare_run, prepare_done, j);
	/* Meanwhile: assemble the config and start missing package installs, so
	 * both are ready when ws-agent is. */
	cx_err cerr = CX_ERR_INIT;
	cconfig *c = lc_config(s, NULL, &cerr);
	if (c)
		(void)cconfig_start_installs(c, s->user);
	else
		log_warn("session %s: config: %s", s->id, cerr.msg);
	return 0;
}

static void prepare_done(void *arg)
{
	struct prepare_job *j = arg;
	struct session *s = j->s;
	s->lc.job = JOB_NONE;
	if (j->sb) {
		s->lc.sb = j->sb;
		s->lc.wsa_pid = j->wsa_pid;
		s->lc.pinned = strcmp(j->image, "host") != 0;
		snprintf(s->rt.agent_cmd, sizeof s->rt.agent_cmd, "%s", j->agent_cmd);
		snprintf(s->rt.cwd, sizeof s->rt.cwd, "%s", j->cwd);
		json_decref(s->rt.env);
		s->rt.env = j->env;
		j->env = NULL;
		handover_keep_note(s); /* sessions.keep_on_crash: a crash keeps it */
		log_info("session %s: sandbox and ws-agent ready in %.1f ms (disk %.1f, sandbox %.1f, ws-agent %.1f, "
			 "queued %.1f)", s->id, j->ms, j->disk_ms, j->sandbox_ms, j->wsagent_ms, j->queued_ms);
		fswatch_session_up(s);
	} else if (!s->deleted) {
		log_error("session %s: %s", s->id, j->err.msg);
		lc_set_error(s, j->err.msg);
		s->lc.failed = 1; /* no retry loop: the next request or message tries again */
		turn_fail(s, "sandbox_failed", s->lc.error);
	}
	json_decref(j->env);
	free(j);
	lifecycle_reconcile(s);
	session_unref(s);
}

static void start_stop(struct session *s, int remove_dir)
{
	struct stop_job *j = calloc(1, sizeof *j);
	if (!j) {
		log_error("session %s: stop: out of memory", s->id);
		return;
	}
	/* The job owns the sandbox from here: nothing may start a sync or a turn step. */
	fswatch_session_down(s, remove_dir ? "deleted" : s->released ? "moved" : "sleeping"); /* the disk comes off the host */
	turn_stop_session(s);
	agent_link_close(s);
	sync_forget(s);
	j->sb = s->lc.sb;
	s->lc.sb = NULL;
	s->lc.broken = 0;
	if (s->lc.pinned) {
		j->images = s->d->images;
		snprintf(j->image, sizeof j->image, "%s", s->spec.image);
		s->lc.pinned = 0;
	}
	j->cfg = &s->d->cfg;
	j->remove_dir = remove_dir;
	snprintf(j->id, sizeof j->id, "%s", s->id);
	snprintf(j->dir, sizeof j->dir, "%s", s->dir);
	if (!remove_dir && !s->deleted) {
		j->s = s;
		s->lc.job = JOB_STOP;
		s->refs++;
		log_info("session %s: sleeping", s->id);
	} else {
		j->hold = s;
		s->refs++;
	}
	work_submit_lane(WORK_SANDBOX, job_stop_run, stop_done, j);
}

static void stop_done(void *arg)
{
	struct stop_job *j = arg;
	struct session *s = j->s;
	if (j->hold)
		session_unref(j->hold); /* its uid is free again */
	free(j);
	if (!s)
		return;
	s->lc.job = JOB_NONE;
	if (!s->deleted)
		s->lc.state = SS_SLEEPING; /* "sleeping" means no process is left */
	lifecycle_reconcile(s);
	session_unref(s);
}

static void start_freeze(struct session *s)
{
	struct freeze_job *j = calloc(1, sizeof *j);
	if (!j) {
		log_error("session %s: pause: out of memory", s->id);
		s->lc.goal = GOAL_UP;
		return;
	}
	j->s = s;
	j->sb = s->lc.sb;
	s->lc.job = JOB_FREEZE;
	s->refs++;
	work_submit_lane(WORK_SANDBOX, job_freeze_run, freeze_done, j);
}

static void freeze_done(void *arg)
{
	struct freeze_job *j = arg;
	struct session *s = j->s;
	s->lc.job = JOB_NONE;
	if (j->rc < 0) {
		log_error("session %s: pause: %s", s->id, j->err.msg);
		if (s->lc.goal == GOAL_PAUSED)
			s->lc.goal = GOAL_UP;
	} else {
		s->lc.state = SS_PAUSED;
		log_info("session %s: paused", s->id);
	}
	free(j);
	/* A message or a client that came meanwhile thaws it at once. */
	lifecycle_reconcile(s);
	if (s->lc.state == SS_PAUSED)
		lc_touch(s);
	session_unref(s);
}

static int start_sync(struct session *s, cconfig *c, cx_err *err)
{
	struct sync_job *j = calloc(1, sizeof *j);
	if (!j || sync_state_copy(&j->state, &s->sync) < 0) {
		free(j);
		return cx_err_set(err, ENOMEM, "sync job");
	}
	j->s = s;
	j->sb = s->lc.sb;
	j->cfg = cconfig_ref(c);
	j->parallel = s->d->cfg.write_parallel;
	j->wsa_pid = s->lc.wsa_pid;
	s->lc.sync_job = j;
	s->refs++;
	work_submit_lane(WORK_SANDBOX, job_sync_run, sync_done, j);
	return 0;
}

static void sync_done(void *arg)
{
	struct sync_job *j = arg;
	struct session *s = j->s;
	s->lc.sync_job = NULL;
	if (s->lc.sb && j->sb == s->lc.sb) {
		/* The job's state replaces the session's: only what succeeded is in it. */
		sync_state_clear(&s->sync);
		s->sync = j->state;
		memset(&j->state, 0, sizeof j->state);
		for (unsigned i = 0; i < j->r.n_new_keys; i++)
			npmcache_pin(j->r.new_keys[i]);
	}
	sync_state_clear(&j->state);
	if (j->r.rc < 0) {
		log_error("session %s: config sync: %s", s->id, j->r.err.msg);
		snprintf(s->lc.error, sizeof s->lc.error, "%s", j->r.err.msg);
		memcpy(s->lc.sync_failed, j->cfg->all_hash, sizeof s->lc.sync_failed);
	} else if (j->r.written || j->r.removed || j->r.mounted) {
		log_info("session %s: config synced in %.1f ms: %u written, %u unchanged, %u removed, %u mounted", s->id,
			 j->r.ms, j->r.written, j->r.skipped, j->r.removed, j->r.mounted);
	}
	cconfig_unref(j->cfg);
	free(j);
	lifecycle_reconcile(s);
	session_unref(s);
}

/* Thaw on the service thread: a message must not wait for a worker. */
static int thaw(struct session *s, cx_err *err)
{
	uint64_t t0 = cx_mono_us();
	if (sandbox_freeze(s->lc.sb, 0, err) < 0)
		return -1;
	s->lc.state = SS_READY;
	s->lc.ready_ms = (double)(cx_mono_us() - t0) / 1000.0;
	log_info("session %s: thawed in %.2f ms", s->id, s->lc.ready_ms);
	lc_touch(s);
	return 0;
}

/* ---- the steps ---- */

/* What one pass knows: the config once the config step looked it up. */
struct pass {
	cconfig *cfg;
	const char *code; /* on failure: the cortex.error code */
	cx_err err;
};
enum step_status { STEP_READY, STEP_WAIT, STEP_FAILED };

struct step {
	/* 1 when the step's outcome holds; may fill p (the config step does) */
	int (*ready)(struct session *s, struct pass *p);
	/* 1 when its start is under way (a job, a connection, a boot) */
	int (*busy)(const struct session *s, const struct pass *p);
	/* begin: 0 (under way, or ready at once: ready is asked again), -1 failed (p->code, p->err) */
	int (*start)(struct session *s, struct pass *p);
	/* what the waiting turn is told (NULL: nothing to say) */
	const char *(*detail)(const struct session *s);
};

/* A broken sandbox (its link lost while nothing was stopping it) is not
 * ready: starting the step replaces it, so one wake or message brings the
 * session back whatever was killed inside. */
static int sandbox_ready(struct session *s, struct pass *p)
{
	(void)p;
	return s->lc.sb && s->lc.state != SS_PAUSED && !s->lc.broken;
}
static int sandbox_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	/* A sync job or an exec launch still borrows a broken sandbox: replace it after. */
	return s->lc.job == JOB_PREPARE || s->lc.image_wait || (s->lc.broken && (s->lc.sync_job || s->exec_launching));
}
/* The image is not in the store yet but on its way (a build of that name
 * runs, or the default image is being imported at start): wait, and look
 * again every IMAGE_POLL_US, telling clients how far it is.  An image that
 * is neither there nor coming fails the prepare job with a clear message. */
#define IMAGE_POLL_US (500 * LWS_US_PER_MS)
static void sul_image_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, lc.sul_image);
	s->lc.image_wait = 0;
	lifecycle_reconcile(s);
}
static int image_pending(struct session *s)
{
	struct cortexd *d = s->d;
	if (!strcmp(s->spec.image, "host") || !d->images)
		return 0;
	if (d->default_importing && !strcmp(s->spec.image, d->cfg.images_default)) {
		fanout_obj(s, json_pack("{s:s,s:s,s:s,s:s}", "type", "cortex.progress", "phase", "image", "image",
					s->spec.image, "state", "importing"));
		return 1;
	}
	/* Only whether it is there (a stat, not a parse: this runs on the
	 * service thread for every create); the prepare job reads it. */
	cx_err e = CX_ERR_INIT;
	if (imgstore_has(d->images, s->spec.image, &e) == 0)
		return 0;
	struct build_status st;
	if (d->builder && builder_status(d->builder, s->spec.image, &st) == 0 && st.state == BUILD_RUNNING) {
		fanout_obj(s, json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "type", "cortex.progress", "phase", "image",
					"image", s->spec.image, "build", st.id, "step", st.step, "steps", st.steps));
		return 1;
	}
	return 0;
}
static int sandbox_start(struct session *s, struct pass *p)
{
	p->code = "sandbox_failed";
	if (s->lc.sb && s->lc.state == SS_PAUSED && !s->lc.broken)
		return thaw(s, &p->err);
	if (!s->lc.sb && image_pending(s)) {
		s->lc.image_wait = 1;
		session_timer(s, &s->lc.sul_image, sul_image_cb, IMAGE_POLL_US);
		return 0;
	}
	return start_prepare(s, &p->err);
}
static const char *sandbox_detail(const struct session *s)
{
	return s->lc.sb && s->lc.state == SS_PAUSED ? "paused" : s->lc.state == SS_CREATING ? "creating" : "sleeping";
}

static int link_ready(struct session *s, struct pass *p)
{
	(void)p;
	/* An agent given up on keeps its error until it is asked for again. */
	if (s->link.up && (s->lc.state == SS_CREATING || s->lc.state == SS_WAKING ||
			   (s->lc.state == SS_ERROR && !s->lc.agent_failed))) {
		s->lc.state = SS_READY; /* up again after an error: the error is history */
		s->lc.error[0] = '\0';
	}
	return s->link.up;
}
static int link_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	return s->link.wsi != NULL;
}
static int link_start(struct session *s, struct pass *p)
{
	p->code = "agent_unreachable";
	return agent_link_connect(s, &p->err);
}
static const char *link_detail(const struct session *s) { return s->lc.state == SS_CREATING ? "creating" : "sleeping"; }

static int config_ready(struct session *s, struct pass *p)
{
	enum ccache_how how;
	uint64_t t0 = cx_mono_us();
	p->cfg = lc_config(s, &how, &p->err);
	turn_config_lookup(s, how, (double)(cx_mono_us() - t0) / 1000.0);
	p->code = "config_failed";
	return p->cfg != NULL;
}
static int config_start(struct session *s, struct pass *p)
{
	(void)s;
	(void)p;
	return -1; /* config_ready failed: p->err says why */
}

static int packages_ready(struct session *s, struct pass *p)
{
	(void)s;
	return p->cfg->pkgs_missing == 0;
}
static int packages_start(struct session *s, struct pass *p)
{
	const char *spec = NULL, *why = cconfig_failed_pkg(p->cfg, &spec);
	if (why) {
		p->code = "mcp_install_failed";
		return cx_err_set(&p->err, EIO, "MCP package %s could not be installed (fix the mcp setting): %s",
				  spec, why);
	}
	if (cconfig_start_installs(p->cfg, s->user)) /* installed meanwhile: look again */
		s->cc.dirty = 1;
	return 0;
}

static int sync_ready(struct session *s, struct pass *p)
{
	return !s->lc.sync_job && sync_is_current(&s->sync, p->cfg);
}
static int sync_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	return s->lc.sync_job != NULL;
}
static int sync_start(struct session *s, struct pass *p)
{
	p->code = "config_failed";
	if (!strcmp(s->lc.sync_failed, p->cfg->all_hash)) {
		s->lc.sync_failed[0] = '\0'; /* fail this once; the next message tries again */
		return cx_err_set(&p->err, EIO, "%s", s->lc.error);
	}
	return start_sync(s, p->cfg, &p->err);
}

/* The repo is checked out once, before the agent first starts (it works in
 * /workspace).  A failed clone fails this pass with its message; the next
 * wake or message tries again. */
static int repo_ready(struct session *s, struct pass *p)
{
	(void)p;
	return !s->spec.repo_url[0] || s->spec.repo_done;
}
static int repo_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	return s->lc.cloning;
}
static int repo_start(struct session *s, struct pass *p)
{
	p->code = "repo_failed";
	if (s->lc.clone_error[0]) {
		cx_err_set(&p->err, EIO, "%s", s->lc.clone_error);
		lc_set_error(s, s->lc.clone_error);
		s->lc.clone_error[0] = '\0';
		return -1;
	}
	return clone_start(s, &p->err);
}
static const char *repo_detail(const struct session *s)
{
	(void)s;
	return "cloning";
}

static int agent_ready(struct session *s, struct pass *p)
{
	if (s->lc.goal < GOAL_HOT && s->link.state == AG_NONE)
		return 1; /* no agent wanted */
	return agent_is_current(s, p->cfg);
}
/* One boot at a time, whatever config it runs: ws-agent reads the one context
 * file when a start arrives, so a second start written before the first was
 * read would hand the first agent the second's context and leave the second
 * none (context_timeout).  A config that changed during a boot restarts the
 * agent once it is hot. */
static int agent_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	return s->link.state == AG_STARTING || s->lc.boot_queued || s->link.applying;
}
static int agent_start_step(struct session *s, struct pass *p)
{
	/* Crashing at start, or given up: wait for a message (or a wake) to ask
	 * again (no restart loop). */
	if (!s->turn && (s->link.crashes >= 3 || s->lc.agent_failed))
		return 0;
	/* Only the model, permission mode or MCP servers changed: the hot agent
	 * takes them by control request (agent_live.c), no restart. */
	if (agent_live_applicable(s, p->cfg)) {
		agent_live_apply(s, p->cfg);
		return 0;
	}
	/* Boots are bounded (agent.max_booting): in line, this pass waits. */
	if (!boot_admit(s))
		return 0;
	if (s->link.state != AG_NONE)
		log_info("session %s: config changed; restarting the agent", s->id);
	p->code = "context_failed";
	int rc = agent_start(s, p->cfg, s->turn ? &s->turn->context_ms : NULL, &p->err);
	if (rc < 0)
		boot_end(s); /* nothing is starting: the slot goes on */
	return rc;
}

static const struct step steps[STEP_N] = {
	[STEP_SANDBOX] = {sandbox_ready, sandbox_busy, sandbox_start, sandbox_detail},
	[STEP_LINK] = {link_ready, link_busy, link_start, link_detail},
	[STEP_CONFIG] = {config_ready, NULL, config_start, NULL},
	[STEP_PACKAGES] = {packages_ready, NULL, packages_start, NULL},
	[STEP_SYNC] = {sync_ready, sync_busy, sync_start, NULL},
	[STEP_REPO] = {repo_ready, repo_busy, repo_start, repo_detail},
	[STEP_AGENT] = {agent_ready, agent_busy, agent_start_step, NULL},
};

/* Run the steps in order; stop at the first that is not ready. */
static enum step_status run_steps(struct session *s, struct pass *p, enum lc_step *at)
{
	for (int i = 0; i < STEP_N; i++) {
		const struct step *st = &steps[i];
		*at = (enum lc_step)i;
		if (st->ready(s, p))
			continue;
		if (st->busy && st->busy(s, p))
			return STEP_WAIT;
		if (s->turn)
			turn_wait(s, (enum lc_step)i, p->cfg, st->detail ? st->detail(s) : NULL);
		if (st->start(s, p) < 0)
			return STEP_FAILED;
		if (!st->ready(s, p))
			return STEP_WAIT;
	}
	return STEP_READY;
}

static void step_failed(struct session *s, enum lc_step at, struct pass *p)
{
	log_error("session %s: %s step: %s", s->id, step_names[at], p->err.msg);
	if (at <= STEP_LINK)
		lc_set_error(s, p->err.msg);
	s->lc.failed = 1; /* no retry loop: the next request or message clears it */
	char msg[sizeof p->err.msg];
	lc_client_msg(s, p->err.msg, msg, sizeof msg);
	turn_fail(s, p->code ? p->code : "internal", msg);
}

static void all_ready(struct session *s, struct pass *p)
{
	if (s->link.state == AG_HOT)
		s->lc.boot_timeouts = 0; /* booted: the next boot gets its tries again */
	if (s->lc.goal == GOAL_HOT && s->lc.ready_t0_us && s->link.state == AG_HOT) {
		s->lc.ready_ms = (double)(cx_mono_us() - s->lc.ready_t0_us) / 1000.0;
		s->lc.ready_t0_us = 0;
	}
	if (s->turn && !s->turn->sent)
		turn_send(s, p->cfg);
	else if (!s->turn)
		lc_touch(s);
}

/* ---- reconcile ---- */

static void teardown(struct session *s);


static void reconcile_once(struct session *s)
{
	if (s->lc.goal == GOAL_GONE) {
		if (!lifecycle_busy(s) && !s->lc.torn_down)
			teardown(s);
		return;
	}
	if (s->lc.job != JOB_NONE || (s->turn && s->turn->sent) || s->d->stop)
		return; /* the job's done / the turn's end reconciles again */
	if (s->turn)
		s->lc.goal = GOAL_HOT; /* a waiting turn wants everything */
	switch (s->lc.goal) {
	case GOAL_ASLEEP:
		if (s->lc.sync_job || s->exec_launching) /* they borrow the sandbox */
			return;
		if (s->lc.sb)
			start_stop(s, 0);
		else if (s->lc.state != SS_ERROR)
			s->lc.state = SS_SLEEPING;
		return;
	case GOAL_PAUSED:
		if (s->lc.state == SS_READY && s->lc.sb && !s->lc.sync_job && !s->exec_launching &&
		    s->link.state != AG_STARTING)
			start_freeze(s);
		return;
	default:
		break;
	}
	if (s->lc.failed)
		return;
	struct pass p = {NULL, NULL, CX_ERR_INIT};
	enum lc_step at = STEP_SANDBOX;
	switch (run_steps(s, &p, &at)) {
	case STEP_READY: all_ready(s, &p); break;
	case STEP_FAILED: step_failed(s, at, &p); break;
	case STEP_WAIT: break;
	}
}

void lifecycle_reconcile(struct session *s)
{
	if (s->lc.in_reconcile) {
		s->lc.again = 1; /* an event during a pass: one more pass after it */
		return;
	}
	s->refs++;
	s->lc.in_reconcile = 1;
	int passes = 0;
	do {
		s->lc.again = 0;
		reconcile_once(s);
	} while (s->lc.again && ++passes < 8);
	s->lc.in_reconcile = 0;
	session_unref(s);
}

/* A request or a message wants the session hot again. */
void lc_want_hot(struct session *s)
{
	s->lc.goal = GOAL_HOT;
	s->lc.failed = 0;
	lc_touch(s);
}

/* ---- idle timers (per surface profile): release the agent, freeze, stop ---- */

enum idle_kind { IDLE_AGENT, IDLE_PAUSE, IDLE_SLEEP, IDLE_N };

static uint64_t idle_limit_us(const struct session *s, enum idle_kind k)
{
	const struct surface_profile *p = s->prof;
	int v = 0;
	switch (k) {
	case IDLE_AGENT: v = p ? p->idle_agent_s : 0; break;
	case IDLE_PAUSE: v = p ? p->idle_pause_s : 0; break;
	default: v = s->idle_sleep_s ? s->idle_sleep_s : p ? p->idle_sleep_s : 0; break;
	}
	return (uint64_t)v * 1000000u;
}

static void sul_idle_cb(lws_sorted_usec_list_t *sul);

/* Arm the timer for the next idle step still ahead. */
static void idle_arm(struct session *s)
{
	uint64_t idle = cx_mono_us() - s->lc.active_us, next = 0;
	for (int k = 0; k < IDLE_N; k++) {
		uint64_t lim = idle_limit_us(s, (enum idle_kind)k);
		if (lim && lim > idle && (!next || lim - idle < next))
			next = lim - idle;
	}
	/* Armed already for no later than that: it stays (sul_idle_cb looks
	 * again and re-arms).  Moving it on every turn's touch cost a walk of
	 * lws's sorted timer list (O(timers): ~100 sessions' worth). */
	if (next && s->lc.sul_idle.list.owner && s->d->ctx && s->lc.sul_idle.us <= lws_now_usecs() + (lws_usec_t)next)
		return;
	if (next)
		session_timer(s, &s->lc.sul_idle, sul_idle_cb, next);
	else
		lws_sul_cancel(&s->lc.sul_idle);
}

static void sul_idle_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, lc.sul_idle);
	if (s->deleted)
		return;
	if (s->turn || lifecycle_busy(s) || s->nexec || s->link.state == AG_STARTING) {
		lc_touch(s); /* not idle (a command runs: exec.c): look again a full period later */
		return;
	}
	uint64_t idle = cx_mono_us() - s->lc.active_us, lim;
	if ((lim = idle_limit_us(s, IDLE_SLEEP)) && idle >= lim && s->lc.sb) {
		s->lc.goal = GOAL_ASLEEP;
		lifecycle_reconcile(s);
		return;
	}
	if ((lim = idle_limit_us(s, IDLE_PAUSE)) && idle >= lim && s->lc.state == SS_READY) {
		s->lc.goal = GOAL_PAUSED;
		lifecycle_reconcile(s);
	}
	if ((lim = idle_limit_us(s, IDLE_AGENT)) && idle >= lim && s->lc.state == SS_READY &&
	    s->link.state != AG_NONE) {
		log_info("session %s: releasing the idle agent", s->id);
		agent_count_release();
		if (s->lc.goal == GOAL_HOT)
			s->lc.goal = GOAL_UP;
		agent_stop(s);
	}
	idle_arm(s);
}

static void teardown(struct session *s)
{
	s->lc.torn_down = 1; /* once: later events find nothing to do */
	boot_forget(s);
	turn_stop_session(s);
	exec_session_gone(s, s->released ? "the session moved to another node" : "the session was deleted"); /* before its clients go */
	fanout_close_all(s);
	turnlog_close(s, !s->released); /* released: the new owner replays it */
	sync_forget(s);
	ccache_drop(&s->cc);
	session_unlink(s);
	egress_unbind(s->spec.uid);
	{
		cx_err err = CX_ERR_INIT;
		(void)egress_set_session_policy(s->id, NULL, &err);
	}
	start_stop(s, !s->released);
	session_unref(s); /* the registry's reference */
}
