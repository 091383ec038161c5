/* lifecycle.c — see lifecycle.h.  The only writer of s->lc, s->sync and
 * s->cc; the only place a session's sandbox jobs are submitted and applied. */
#include "lifecycle.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "fanout.h"
#include "jobs.h"
#include "log.h"
#include "npmcache.h"
#include "turn.h"
#include "work.h"

static void idle_arm(struct session *s);

static const char *const step_names[STEP_N] = {"sandbox", "link", "config", "packages", "sync", "agent"};

/* ---- activity ---- */

static void touch(struct session *s)
{
	if (s->deleted)
		return;
	s->lc.active_us = cx_mono_us();
	s->last_active_at = cx_wall_ms();
	idle_arm(s);
}

int lifecycle_busy(const struct session *s) { return s->lc.job != JOB_NONE || s->lc.sync_job != NULL; }

/* Packages a sandbox mounted stay pinned (never evicted) until it stops. */
static void sync_forget(struct session *s)
{
	for (size_t i = 0; i < s->sync.n_mounts; i++)
		npmcache_unpin(s->sync.mounts[i].key);
	sync_state_clear(&s->sync);
}

static void set_error(struct session *s, const char *msg)
{
	s->lc.state = SS_ERROR;
	snprintf(s->lc.error, sizeof s->lc.error, "%s", msg);
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
	if (!s->lc.ready_t0_us)
		s->lc.ready_t0_us = cx_mono_us();
	if (s->lc.state != SS_CREATING)
		s->lc.state = SS_WAKING;
	sync_forget(s); /* a new sandbox starts empty (its /tmp too) */
	s->lc.job = JOB_PREPARE;
	s->refs++;
	work_submit(job_prepare_run, prepare_done, j);
	/* Meanwhile: assemble the config and start missing package installs, so
	 * both are ready when ws-agent is. */
	struct ccache_src src = {s->d->st, &s->d->skey, &s->d->cfg};
	cx_err cerr = CX_ERR_INIT;
	cconfig *c = ccache_get(&s->cc, &src, s->user, NULL, &cerr);
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
		log_info("session %s: sandbox and ws-agent ready in %.1f ms", s->id, j->ms);
	} else if (!s->deleted) {
		log_error("session %s: %s", s->id, j->err.msg);
		set_error(s, j->err.msg);
		turn_fail(s, "sandbox_failed", j->err.msg);
	}
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
	turn_stop_session(s);
	agent_link_close(s);
	sync_forget(s);
	j->sb = s->lc.sb;
	s->lc.sb = NULL;
	j->remove_dir = remove_dir;
	snprintf(j->dir, sizeof j->dir, "%s", s->dir);
	if (!remove_dir) {
		j->s = s;
		s->lc.job = JOB_STOP;
		s->refs++;
		log_info("session %s: sleeping", s->id);
	}
	work_submit(job_stop_run, stop_done, j);
}

static void stop_done(void *arg)
{
	struct stop_job *j = arg;
	struct session *s = j->s;
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
	work_submit(job_freeze_run, freeze_done, j);
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
		touch(s);
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
	work_submit(job_sync_run, sync_done, j);
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
	touch(s);
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

static int sandbox_ready(struct session *s, struct pass *p)
{
	(void)p;
	return s->lc.sb && s->lc.state != SS_PAUSED;
}
static int sandbox_busy(const struct session *s, const struct pass *p)
{
	(void)p;
	return s->lc.job == JOB_PREPARE;
}
static int sandbox_start(struct session *s, struct pass *p)
{
	p->code = "sandbox_failed";
	if (s->lc.sb && s->lc.state == SS_PAUSED)
		return thaw(s, &p->err);
	return start_prepare(s, &p->err);
}
static const char *sandbox_detail(const struct session *s)
{
	return s->lc.sb && s->lc.state == SS_PAUSED ? "paused" : s->lc.state == SS_CREATING ? "creating" : "sleeping";
}

static int link_ready(struct session *s, struct pass *p)
{
	(void)p;
	if (s->link.up && (s->lc.state == SS_CREATING || s->lc.state == SS_WAKING))
		s->lc.state = SS_READY;
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
	struct ccache_src src = {s->d->st, &s->d->skey, &s->d->cfg};
	enum ccache_how how;
	uint64_t t0 = cx_mono_us();
	p->cfg = ccache_get(&s->cc, &src, s->user, &how, &p->err);
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

static int agent_ready(struct session *s, struct pass *p)
{
	if (s->lc.goal < GOAL_HOT && s->link.state == AG_NONE)
		return 1; /* no agent wanted */
	return agent_is_current(s, p->cfg);
}
static int agent_busy(const struct session *s, const struct pass *p)
{
	return s->link.state == AG_STARTING && !strcmp(s->link.hash, p->cfg->all_hash);
}
static int agent_start_step(struct session *s, struct pass *p)
{
	/* Crashing at start: wait for a message to ask again (no restart loop). */
	if (!s->turn && s->link.crashes >= 3)
		return 0;
	if (s->link.state != AG_NONE)
		log_info("session %s: config changed; restarting the agent", s->id);
	p->code = "context_failed";
	return agent_start(s, p->cfg, s->turn ? &s->turn->context_ms : NULL, &p->err);
}

static const struct step steps[STEP_N] = {
	[STEP_SANDBOX] = {sandbox_ready, sandbox_busy, sandbox_start, sandbox_detail},
	[STEP_LINK] = {link_ready, link_busy, link_start, link_detail},
	[STEP_CONFIG] = {config_ready, NULL, config_start, NULL},
	[STEP_PACKAGES] = {packages_ready, NULL, packages_start, NULL},
	[STEP_SYNC] = {sync_ready, sync_busy, sync_start, NULL},
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
		set_error(s, p->err.msg);
	s->lc.failed = 1; /* no retry loop: the next request or message clears it */
	turn_fail(s, p->code ? p->code : "internal", p->err.msg);
}

static void all_ready(struct session *s, struct pass *p)
{
	if (s->lc.goal == GOAL_HOT && s->lc.ready_t0_us && s->link.state == AG_HOT) {
		s->lc.ready_ms = (double)(cx_mono_us() - s->lc.ready_t0_us) / 1000.0;
		s->lc.ready_t0_us = 0;
	}
	if (s->turn && !s->turn->sent)
		turn_send(s, p->cfg);
	else if (!s->turn)
		touch(s);
}

/* ---- reconcile ---- */

static void teardown(struct session *s);

static void reconcile_once(struct session *s)
{
	if (s->lc.goal == GOAL_GONE) {
		if (!lifecycle_busy(s))
			teardown(s);
		return;
	}
	if (s->lc.job != JOB_NONE || (s->turn && s->turn->sent) || s->d->stop)
		return; /* the job's done / the turn's end reconciles again */
	if (s->turn)
		s->lc.goal = GOAL_HOT; /* a waiting turn wants everything */
	switch (s->lc.goal) {
	case GOAL_ASLEEP:
		if (s->lc.sync_job)
			return;
		if (s->lc.sb)
			start_stop(s, 0);
		else if (s->lc.state != SS_ERROR)
			s->lc.state = SS_SLEEPING;
		return;
	case GOAL_PAUSED:
		if (s->lc.state == SS_READY && s->lc.sb && !s->lc.sync_job && s->link.state != AG_STARTING)
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
static void want_hot(struct session *s)
{
	s->lc.goal = GOAL_HOT;
	s->lc.failed = 0;
	touch(s);
}

/* ---- hooks: what lower modules report ---- */

static void on_reconcile(struct session *s) { lifecycle_reconcile(s); }

static void on_agent_output(struct session *s, const struct agent_line *l, const char *raw, size_t len)
{
	const struct turn *before = s->turn;
	turn_output(s, l, raw, len);
	if (s->turn != before || (s->turn && !s->turn->sent))
		lifecycle_reconcile(s); /* the turn ended: settings that moved meanwhile, the next message */
}

static void on_agent_down(struct session *s, int why, const char *code, const char *msg)
{
	turn_agent_down(s, why, code, msg);
	if (why == DOWN_LINK_LOST) {
		/* Lost while ready is an error; lost because a stop job is taking the
		 * sandbox down is the plan (that job sets the state when it is done). */
		if (s->lc.state == SS_READY && s->lc.job == JOB_NONE) {
			set_error(s, msg);
			s->lc.failed = 1;
		}
		return; /* the link is gone: nothing to reconcile until a request */
	}
	lifecycle_reconcile(s); /* a fresh agent in the background (bounded by crashes) */
}

/* Settings moved for user (a write, or an install finished). */
static void user_changed(struct cortexd *d, const char *user)
{
	int live = 0;
	for (struct session *s = d->sessions; s; s = s->next) {
		if (strcmp(s->user, user))
			continue;
		if (s->cc.cfg)
			s->cc.dirty = 1;
		if (!s->deleted && s->lc.sb) {
			live = 1;
			lifecycle_reconcile(s);
		}
	}
	if (!live) { /* nobody to apply it: at least start the installs now */
		struct ccache_src src = {d->st, &d->skey, &d->cfg};
		cconfig_prefetch(&src, user);
	}
}

static void on_installed(void *arg, const char *user) { user_changed(arg, user); }

void lifecycle_settings_written(struct cortexd *d, const char *user)
{
	cconfig_forget_failures();
	user_changed(d, user);
}

void lifecycle_init(struct cortexd *d)
{
	d->reconcile = on_reconcile;
	d->agent_output = on_agent_output;
	d->agent_down = on_agent_down;
	cconfig_set_installed_hook(on_installed, d);
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
	if (s->turn || lifecycle_busy(s) || s->link.state == AG_STARTING) {
		touch(s); /* not idle: look again a full period later */
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

/* ---- requests ---- */

struct session *lifecycle_create(struct cortexd *d, const char *user, const char *surface, int idle_sleep_s,
				 cx_err *err)
{
	char id[40] = "s_";
	cx_random_hex(id + 2, 12);
	struct session *s = session_new(d, id, user, surface);
	if (!s) {
		cx_err_set(err, ENOMEM, "session");
		return NULL;
	}
	s->lc.ready_t0_us = cx_mono_us();
	s->created_at = s->last_active_at = cx_wall_ms();
	s->idle_sleep_s = idle_sleep_s;
	s->lc.state = SS_CREATING;
	if (session_persist(s, err) < 0) {
		session_unlink(s);
		session_unref(s);
		return NULL;
	}
	want_hot(s); /* pre-start: the agent is hot before the first message */
	lifecycle_reconcile(s);
	return s;
}

int lifecycle_wake(struct session *s, cx_err *err)
{
	if (lifecycle_busy(s))
		return cx_err_set(err, EBUSY, "the session is %s; try again", sess_state_name(s->lc.state));
	want_hot(s);
	lifecycle_reconcile(s);
	if (s->lc.state == SS_ERROR && s->lc.failed)
		return cx_err_set(err, EIO, "%s", s->lc.error);
	return 0;
}

int lifecycle_sleep(struct session *s, cx_err *err)
{
	if (lifecycle_busy(s) || s->turn)
		return cx_err_set(err, EBUSY, "the session is %s%s; try again", sess_state_name(s->lc.state),
				  s->turn ? " with a turn running" : "");
	s->lc.goal = GOAL_ASLEEP;
	lifecycle_reconcile(s);
	return 0;
}

int lifecycle_pause(struct session *s, cx_err *err)
{
	if (s->lc.state == SS_PAUSED)
		return 0;
	if (lifecycle_busy(s) || s->turn)
		return cx_err_set(err, EBUSY, "the session is %s%s; try again", sess_state_name(s->lc.state),
				  s->turn ? " with a turn running" : "");
	if (!s->lc.sb || s->lc.state != SS_READY)
		return cx_err_set(err, EINVAL, "only a ready session can be paused (it is %s)",
				  sess_state_name(s->lc.state));
	if (s->link.state == AG_STARTING) /* frozen mid-boot, its start deadline would pass */
		return cx_err_set(err, EINVAL, "the agent is starting; try again");
	s->lc.goal = GOAL_PAUSED;
	lifecycle_reconcile(s);
	return 0;
}

static void teardown(struct session *s)
{
	turn_stop_session(s);
	fanout_close_all(s);
	sync_forget(s);
	ccache_drop(&s->cc);
	session_unlink(s);
	start_stop(s, 1);
	session_unref(s); /* the registry's reference */
}

void lifecycle_delete(struct session *s)
{
	s->deleted = 1;
	s->lc.goal = GOAL_GONE;
	sodium_memzero(s->gw_token, sizeof s->gw_token); /* its gateway token stops working now */
	lws_sul_cancel(&s->lc.sul_idle);
	lws_sul_cancel(&s->lc.sul_grace);
	lws_sul_cancel(&s->link.sul_boot);
	lifecycle_reconcile(s); /* tears down now, or when the running job is done */
}

/* ---- clients ---- */

/* A turn with no client left keeps running for turn_grace_s, then stops. */
static void sul_grace_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, lc.sul_grace);
	if (s->fan.clients || !s->turn)
		return;
	log_info("session %s: no client for %d s; cancelling turn %llu", s->id, s->d->cfg.turn_grace_s,
		 (unsigned long long)s->turn->id);
	if (s->turn->sent)
		turn_cancel(s);
	else
		turn_fail(s, "cancelled", "no client was connected");
	lifecycle_reconcile(s);
}

void lifecycle_client_joined(struct session *s, struct client *c)
{
	fanout_attach(s, c);
	lws_sul_cancel(&s->lc.sul_grace);
	/* Speculative warm-up: a client that connects will send a message soon.
	 * Thaw, wake, and start the agent now, so the message finds it hot. */
	want_hot(s);
	lifecycle_reconcile(s); /* a pause or sleep under way is undone after it */
}

void lifecycle_client_left(struct client *c)
{
	struct session *s = c->sess;
	fanout_detach(c);
	if (s && !s->fan.clients && s->turn && s->d->cfg.turn_grace_s > 0)
		session_timer(s, &s->lc.sul_grace, sul_grace_cb, (uint64_t)s->d->cfg.turn_grace_s * LWS_US_PER_SEC);
}

void lifecycle_message(struct session *s, struct client *c, const char *text)
{
	if (s->turn && s->turn->stopped && !s->next_text) {
		s->next_text = strdup(text); /* starts once the revoked turn has stopped */
		return;
	}
	if (s->turn) {
		fanout_error(s, c, "busy", "a turn is running on this session; cancel it or wait for cortex.done");
		return;
	}
	if (turn_begin(s, text) < 0)
		return;
	want_hot(s);
	lifecycle_reconcile(s);
}

void lifecycle_cancel(struct session *s, struct client *c)
{
	if (!s->turn) {
		fanout_error(s, c, "no_turn", "no turn is running");
		return;
	}
	turn_cancel(s);
	lifecycle_reconcile(s);
}

/* ---- start and exit ---- */

static void load_one(struct cortexd *d, json_t *o, const char *key)
{
	const char *id = json_string_value(json_object_get(o, "id"));
	const char *user = json_string_value(json_object_get(o, "user"));
	const char *surface = json_string_value(json_object_get(o, "surface"));
	if (!id || !user) {
		log_warn("skipping corrupt session record %s", key);
		return;
	}
	struct session *s = session_new(d, id, user, surface ? surface : "chat");
	if (!s)
		return;
	s->created_at = json_integer_value(json_object_get(o, "created_at"));
	s->last_active_at = json_integer_value(json_object_get(o, "last_active_at"));
	s->idle_sleep_s = (int)json_integer_value(json_object_get(o, "idle_sleep_s"));
	s->lc.state = SS_SLEEPING;
	s->lc.goal = GOAL_ASLEEP;
	s->link.had_success = 1; /* home survives: the agent may continue its conversation */
	/* A cortexd that died left this sandbox behind only if it was frozen
	 * (PDEATHSIG cannot reach frozen tasks); its cgroup stays either way. */
	int found = 0;
	cx_err rerr = CX_ERR_INIT;
	if (sandbox_reap_stale(NULL, s->id, &found, &rerr) < 0)
		log_warn("session %s: leftover sandbox: %s", s->id, rerr.msg);
	else if (found)
		log_info("session %s: stopped the sandbox a previous cortexd left behind", s->id);
}

int lifecycle_load(struct cortexd *d, cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(d->st, "sessions/", 0, &kv, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		load_one(d, o, kv[i].key);
		json_decref(o);
	}
	store_kv_free(kv, n);
	return 0;
}

void lifecycle_shutdown(struct cortexd *d)
{
	for (struct session *s = d->sessions; s; s = s->next) {
		turn_stop_session(s);
		agent_link_close(s);
		fanout_close_all(s);
		sync_state_clear(&s->sync); /* the npm cache is already shut down: no unpins */
		ccache_drop(&s->cc);
		if (s->lc.sb && s->lc.job == JOB_NONE) {
			sandbox_destroy(s->lc.sb);
			s->lc.sb = NULL;
		}
	}
}
