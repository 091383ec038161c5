/* lifecycle_events.c — what reaches the lifecycle from outside: requests of
 * the API, clients and their frames, the hooks lower modules report through,
 * and loading / stopping every session.  Each ends in lifecycle_reconcile(). */
#include "lifecycle.h"
#include "owner.h"
#include "turnlog.h"
#include "handover.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "boot.h"
#include "config_metrics.h"
#include "core_metrics.h"
#include "exec.h"
#include "fanout.h"
#include "fswatch.h"
#include "imgstore.h"
#include "jobs.h"
#include "lifecycle-internal.h"
#include "broker.h"
#include "egress.h"
#include "log.h"
#include "metrics.h"
#include "records.h"
#include "turn.h"

/* ---- hooks: what lower modules report ---- */

static void on_reconcile(struct session *s) { lifecycle_reconcile(s); }

static void on_agent_output(struct session *s, const struct agent_line *l, const char *raw, size_t len)
{
	const struct turn *before = s->turn;
	turn_output(s, l, raw, len);
	if (s->turn != before || (s->turn && !s->turn->sent))
		lifecycle_reconcile(s); /* the turn ended: settings that moved meanwhile, the next message */
}

/* The agent cannot be started here: say so in the session's state (error,
 * agent "failed") and /metrics, and start no more until asked again. */
static void agent_gave_up(struct session *s, const char *msg)
{
	lc_set_error(s, msg);
	s->lc.agent_failed = 1;
	boot_count_failure();
	log_error("session %s: gave up starting the agent: %s", s->id, msg);
}

static void on_agent_down(struct session *s, int why, const char *code, const char *msg)
{
	if (why == DOWN_BOOT_TIMEOUT) {
		/* Retried (bounded): a boot that lost the race for the CPU in a
		 * burst usually makes it the next time.  The waiting turn waits on. */
		int tries = s->d->cfg.agent_boot_tries;
		int retry = ++s->lc.boot_timeouts < tries && !s->deleted;
		boot_count_timeout(retry);
		if (retry) {
			log_warn("session %s: agent boot %d of %d timed out; starting it again", s->id,
				 s->lc.boot_timeouts, tries);
			lifecycle_reconcile(s);
			return;
		}
		char m[sizeof s->lc.error];
		snprintf(m, sizeof m, "%s (%d %s)", msg, tries, tries == 1 ? "try" : "tries");
		turn_agent_down(s, why, code, m);
		agent_gave_up(s, m);
		return;
	}
	turn_agent_down(s, why, code, msg);
	if (why == DOWN_LINK_LOST) {
		/* Lost while the sandbox should be up (ws-agent or init killed, the
		 * connection refused) is an error, and the sandbox is broken: the
		 * next wake or message replaces it.  Lost because a job is taking
		 * the sandbox down is the plan (that job sets the state when done). */
		if (s->lc.sb && s->lc.job == JOB_NONE && !s->deleted) {
			s->lc.broken = 1;
			lc_set_error(s, msg);
			s->lc.failed = 1;
		}
		return; /* nothing to reconcile until a request: no restart loop */
	}
	if (why == DOWN_NEVER_STARTED && !s->turn && s->link.crashes >= 3) {
		/* Pre-start gave up (the agent cannot start here: a missing
		 * binary, a bad cwd): say why on GET; a wake or a message tries again. */
		agent_gave_up(s, msg);
		return;
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
		s->cc.changed_ms = cx_wall_ms();
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
	d->agent_boot_end = boot_end;
	cconfig_set_installed_hook(on_installed, d);
	metrics_register("core", core_metrics_write, d);
	metrics_register("config", config_metrics_write, NULL);
	metrics_register("records", records_metrics, &d->cfg);
}

/* ---- requests ---- */

/* What a create body or an old record left unset: the config's defaults. */
static void spec_defaults(struct session *s)
{
	const config *c = &s->d->cfg;
	if (!s->spec.image[0])
		snprintf(s->spec.image, sizeof s->spec.image, "%s", c->images_default);
	if (!s->spec.disk_mb)
		s->spec.disk_mb = c->sandbox_disk_mb;
	if (!s->spec.cpu_weight)
		s->spec.cpu_weight = c->sandbox_cpu_weight;
	if (!s->spec.memory_mb) /* records from before these limits: the config's */
		s->spec.memory_mb = c->sandbox_memory_max >> 20;
	if (!s->spec.pids)
		s->spec.pids = c->sandbox_pids_max;
}

struct session *lifecycle_new(struct cortexd *d, const char *user, const char *surface, int idle_sleep_s,
			      const struct session_spec *spec, cx_err *err)
{
	char id[40] = "s_";
	cx_random_hex(id + 2, 12);
	/* taken here (and with etcd in the cluster) before the session is linked */
	uid_t uid = owner_uid_alloc(d, id, err);
	if (!uid) {
		if (!err->code)
			cx_err_set(err, EAGAIN, "no sandbox uid is free (sandbox.uid_count sessions exist)");
		return NULL;
	}
	struct session *s = session_new(d, id, user, surface);
	if (!s) {
		session_uid_put(d, uid);
		owner_forget_async(d->st, id, uid, 0);
		cx_err_set(err, ENOMEM, "session");
		return NULL;
	}
	s->uid_held = 1;
	s->lc.ready_t0_us = cx_mono_us();
	s->created_at = s->last_active_at = cx_wall_ms();
	s->idle_sleep_s = idle_sleep_s;
	if (spec)
		s->spec = *spec;
	s->spec.uid = uid;
	spec_defaults(s);
	s->lc.state = SS_CREATING;
	/* With a shared store: owned by this node (owners/<id> on its lease). */
	if (owner_claim(d->st, id, NULL, 0, err) != OWNER_MINE) {
		owner_forget_async(d->st, id, uid, 0); /* its uids/ key */
		session_unref(s);
		return NULL;
	}
	return s;
}

/* The egress proxy learns that s runs as its uid, s's own policy and (once
 * per user) the user's.  A proxied connection from that uid then follows
 * them (cortexd/egress/egress.h). */
static void egress_attach(struct session *s)
{
	char audit[4200];
	snprintf(audit, sizeof audit, "%s/%s", s->dir, EGRESS_AUDIT_FILE);
	cx_err err = CX_ERR_INIT;
	if (egress_bind(s->spec.uid, s->id, s->user, audit, &err) < 0 ||
	    (s->network && egress_set_session_policy(s->id, s->network, &err) < 0))
		log_warn("session %s: egress: %s", s->id, err.msg);
	/* Once per user (per cortexd): the brokered secrets and the policy
	 * (either may be known already: a settings write since start). */
	if (!egress_user_broker_known(s->user) && broker_sync_user(s->d->st, &s->d->skey, s->user, &err) < 0)
		log_warn("user %s: brokered secrets: %s", s->user, err.msg);
	if (egress_user_policy_known(s->user))
		return;
	char key[256];
	snprintf(key, sizeof key, "settings/%s/network", s->user);
	cleanup_free char *val = NULL;
	size_t len = 0;
	int rc = store_get(s->d->st, key, &val, &len, &err);
	json_t *p = rc == 0 ? json_loadb(val, len, 0, NULL) : NULL;
	if (rc < 0 && rc != CX_NOTFOUND)
		log_warn("user %s: reading the network policy: %s", s->user, err.msg);
	else if (egress_set_user_policy(s->user, p, &err) < 0)
		log_warn("user %s: network policy: %s", s->user, err.msg);
	json_decref(p);
}

void lifecycle_start(struct session *s)
{
	session_link(s);
	egress_attach(s);
	lc_want_hot(s); /* pre-start: the agent is hot before the first message */
	lifecycle_reconcile(s);
}

int lifecycle_wake(struct session *s, cx_err *err)
{
	if (lifecycle_busy(s))
		return cx_err_set(err, EBUSY, "the session is %s; try again", sess_state_name(s->lc.state));
	lc_want_hot(s);
	s->link.crashes = 0; /* asked for: the agent gets its tries again */
	s->lc.boot_timeouts = 0;
	s->lc.agent_failed = 0;
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

void lifecycle_delete(struct session *s)
{
	s->deleted = 1;
	s->lc.goal = GOAL_GONE;
	sodium_memzero(s->gw_token, sizeof s->gw_token); /* its gateway token stops working now */
	lws_sul_cancel(&s->lc.sul_idle);
	lws_sul_cancel(&s->lc.sul_grace);
	lws_sul_cancel(&s->link.sul_boot);
	boot_forget(s);
	lifecycle_reconcile(s); /* tears down now, or when the running job is done */
}

void lifecycle_release(struct session *s)
{
	s->released = 1;
	lifecycle_delete(s);
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
	lc_want_hot(s);
	lifecycle_reconcile(s); /* a pause or sleep under way is undone after it */
}

void lifecycle_client_left(struct client *c)
{
	struct session *s = c->sess;
	fanout_detach(c);
	if (s)
		fswatch_client_left(s, c);
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
	s->lc.boot_timeouts = 0; /* a message asks for the agent again: its boots get their tries */
	s->lc.agent_failed = 0;
	lc_want_hot(s);
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
	struct session *s = session_new(d, id, user, surface ? surface : surface_name(SURF_CHAT));
	if (!s)
		return;
	session_link(s);
	s->created_at = json_integer_value(json_object_get(o, "created_at"));
	s->last_active_at = json_integer_value(json_object_get(o, "last_active_at"));
	s->idle_sleep_s = (int)json_integer_value(json_object_get(o, "idle_sleep_s"));
	session_spec_load(s, o);
	int adopted = handover_adopt(s); /* an upgrade restart: its sandbox and turn go on */
	turn_restore(s);
	int ended = 0;
	uint64_t logged = turnlog_restore(s, &ended);
	if (adopted && s->turn && logged != s->turn->id) {
		/* (The log missed the turn that goes on: it starts again with it.) */
		fq_clear(&s->fan.replay);
		turnlog_begin(s, s->turn->id);
	} else if (!adopted && logged && !ended) /* adopted: its turn goes on, or the last one's frames stay */
		fanout_lost_turn(s, logged);
	else if (s->lost_turn && logged != s->lost_turn)
		fq_clear(&s->fan.replay); /* another turn's frames: only the error is known */
	/* Records from before per-session uids, images and disks get them now. */
	if (!s->spec.uid) {
		s->spec.uid = session_uid_alloc(d);
		s->uid_held = s->spec.uid != 0;
	} else if (session_uid_take(d, s->spec.uid)) {
		/* Only a record from before uids were claimed in the cluster can
		 * meet one here (owner.h "sandbox uids"). */
		log_error("session %s: its uid %u is another session's on this node too: it shares "
			  "that uid's egress policy until one of them is deleted",
			  s->id, (unsigned)s->spec.uid);
	} else {
		s->uid_held = 1;
	}
	spec_defaults(s);
	json_t *net = json_object_get(o, "network");
	if (json_is_object(net))
		s->network = json_incref(net);
	egress_attach(s);
	if (adopted)
		return;
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
	handover_reap_failed(s);
	/* ... and its disk may still be mounted: it comes back sleeping, so off. */
	jobs_detach_disk(s->dir, s->id);
	jobs_remove_session_files(&d->cfg, s->id, 0); /* its socket, if it died with one */
}

int lifecycle_load(struct cortexd *d, cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(d->st, "sessions/", 0, &kv, &n, err) < 0)
		return -1;
	handover_load(d);
	unsigned others = 0;
	for (size_t i = 0; i < n; i++) {
		/* With a shared store: only the sessions this node owns (or that no
		 * live node owns: claimed here).  Another node's are not touched,
		 * their sandboxes not reaped. */
		const char *sid = strrchr(kv[i].key, '/');
		cx_err oerr = CX_ERR_INIT;
		enum owner_who who = sid ? owner_claim(d->st, sid + 1, NULL, 0, &oerr) : OWNER_MINE;
		if (who == OWNER_ERROR)
			log_warn("%s: its owner: %s; not loaded", kv[i].key, oerr.msg);
		if (who != OWNER_MINE) {
			others++;
			continue;
		}
		json_t *o = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		json_int_t uid = json_integer_value(json_object_get(o, "uid"));
		char other[64] = "";
		/* with etcd: its uid in uids/ (records from before the cluster claimed uids) */
		if (sid && uid > 0 && owner_uid_claim(d->st, (uid_t)uid, sid + 1, other, &oerr) == 1)
			log_error("%s: its uid %lld is session %s's too", kv[i].key, (long long)uid, other);
		load_one(d, o, kv[i].key);
		json_decref(o);
	}
	if (others)
		log_info("%u session(s) belong to other nodes: not loaded here", others);
	store_kv_free(kv, n);
	handover_load_done(d);
	/* A turn state whose session is gone (a put that landed after the
	 * delete): dropped. */
	cx_err e2 = CX_ERR_INIT;
	if (store_list(d->st, "turnstate/", 0, &kv, &n, &e2) < 0) {
		log_warn("turn states: %s", e2.msg);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (!session_find(d, kv[i].key + strlen("turnstate/")))
			(void)store_delete(d->st, kv[i].key, &e2);
	store_kv_free(kv, n);
	return 0;
}

int lifecycle_load_one(struct cortexd *d, const char *key, cx_err *err)
{
	char *v = NULL;
	size_t len = 0;
	int rc = store_get(d->st, key, &v, &len, err);
	if (rc < 0)
		return rc;
	rc = lifecycle_load_record(d, key, v, len, err);
	free(v);
	return rc;
}

int lifecycle_load_record(struct cortexd *d, const char *key, const char *val, size_t len, cx_err *err)
{
	json_t *o = json_loadb(val, len, 0, NULL);
	if (!o)
		return cx_err_set(err, EINVAL, "%s: not JSON", key);
	load_one(d, o, key);
	json_decref(o);
	return 0;
}

void lifecycle_shutdown(struct cortexd *d)
{
	lws_sul_cancel(&d->sul_boot_kick);
	while (d->boot_head) /* the line's references */
		boot_forget(d->boot_head);
	for (struct session *s = d->sessions; s; s = s->next) {
		if (s->ho.kept) { /* handed to the next cortexd: its sandbox, disk and turn go on */
			fanout_close_all(s);
			fswatch_session_down(s, NULL);
			sync_state_clear(&s->sync);
			ccache_drop(&s->cc);
			turnlog_close(s, 0);
			continue;
		}
		turn_stop_session(s);
		agent_link_close(s);
		fswatch_session_down(s, NULL);
		exec_session_gone(s, "cortexd is stopping");
		fanout_close_all(s);
		sync_state_clear(&s->sync); /* the npm cache is already shut down: no unpins */
		ccache_drop(&s->cc);
		if (s->lc.sb && s->lc.job == JOB_NONE) {
			sandbox_destroy(s->lc.sb);
			s->lc.sb = NULL;
			jobs_remove_session_files(&d->cfg, s->id, 0);
			if (s->lc.pinned)
				imgstore_unpin(d->images, s->spec.image);
			s->lc.pinned = 0;
		}
		/* Its disk comes off the host (a no-op when it is not attached). */
		jobs_detach_disk(s->dir, s->id);
		turnlog_close(s, 0);
	}
}
