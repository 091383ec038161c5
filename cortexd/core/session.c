/* session.c — the session registry, its persistence, and the sandbox
 * lifecycle jobs (create/wake and stop) that run on worker threads.
 *
 * Layout on disk: DATA/sessions/<id>/{home,workspace,run}.  home and
 * workspace survive sleep; the sandbox's /tmp is a tmpfs and does not.
 * Store keys: sessions/<user>/<id>, transcripts/<id>/<ts>-<turn>-<0 user|1 assistant>. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "log.h"
#include "npmcache.h"
#include "work.h"

const char *sess_state_name(enum sess_state s)
{
	static const char *n[] = {"creating", "ready", "paused", "sleeping", "waking", "error"};
	return n[s];
}

struct session *session_find(const char *id)
{
	for (struct session *s = D.sessions; s; s = s->next)
		if (!s->deleted && !strcmp(s->id, id))
			return s;
	return NULL;
}

json_t *session_to_json(const struct session *s)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i}", "id", s->id, "state",
			      sess_state_name(s->state), "surface", s->surface, "created_at",
			      (json_int_t)s->created_at, "last_active_at", (json_int_t)s->last_active_at,
			      "idle_sleep_s", s->idle_sleep_s);
	if (s->state == SS_ERROR && s->error[0])
		json_object_set_new(o, "error", json_string(s->error));
	json_object_set_new(o, "agent", json_string(stream_agent_state(s)));
	json_object_set_new(o, "ready_ms", s->ready_ms >= 0 ? json_real(s->ready_ms) : json_null());
	json_object_set_new(o, "turns", json_integer((json_int_t)s->turns));
	return o;
}

/* What is persisted is the session's identity; its live state is not
 * (a restarted cortexd has no sandboxes: every session comes back sleeping). */
int session_persist(struct session *s, cx_err *err)
{
	char key[160];
	snprintf(key, sizeof key, "sessions/%s/%s", s->user, s->id);
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i}", "id", s->id, "user", s->user, "surface",
			      s->surface, "created_at", (json_int_t)s->created_at, "last_active_at",
			      (json_int_t)s->last_active_at, "idle_sleep_s", s->idle_sleep_s);
	char *v = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	int rc = store_put(D.st, key, v, strlen(v), err);
	free(v);
	return rc;
}

static struct session *session_alloc(const char *id, const char *user)
{
	struct session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	snprintf(s->id, sizeof s->id, "%s", id);
	snprintf(s->user, sizeof s->user, "%s", user);
	snprintf(s->dir, sizeof s->dir, "%s/sessions/%s", D.cfg.data_dir, id);
	s->refs = 1;
	s->ready_ms = -1;
	s->agent_dirfd = -1;
	gateway_token_new(s->gw_token);
	s->prof = config_surface(&D.cfg, "chat");
	s->next = D.sessions;
	D.sessions = s;
	return s;
}

int sessions_load(cx_err *err)
{
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(D.st, "sessions/", 0, &kv, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_loads(kv[i].val, 0, NULL);
		const char *id = json_string_value(json_object_get(o, "id"));
		const char *user = json_string_value(json_object_get(o, "user"));
		const char *surface = json_string_value(json_object_get(o, "surface"));
		if (!id || !user) {
			log_warn("skipping corrupt session record %s", kv[i].key);
			json_decref(o);
			continue;
		}
		struct session *s = session_alloc(id, user);
		if (s) {
			snprintf(s->surface, sizeof s->surface, "%s", surface ? surface : "chat");
			s->created_at = json_integer_value(json_object_get(o, "created_at"));
			s->last_active_at = json_integer_value(json_object_get(o, "last_active_at"));
			s->idle_sleep_s = (int)json_integer_value(json_object_get(o, "idle_sleep_s"));
			s->state = SS_SLEEPING;
			s->had_success = 1; /* home survives: the agent may continue its conversation */
			if (config_surface(&D.cfg, s->surface))
				s->prof = config_surface(&D.cfg, s->surface);
			/* A cortexd that died left this sandbox behind only if it was frozen
			 * (PDEATHSIG cannot reach frozen tasks); its cgroup stays either way. */
			int found = 0;
			cx_err rerr = CX_ERR_INIT;
			if (sandbox_reap_stale(NULL, s->id, &found, &rerr) < 0)
				log_warn("session %s: leftover sandbox: %s", s->id, rerr.msg);
			else if (found)
				log_info("session %s: stopped the sandbox a previous cortexd left behind", s->id);
		}
		json_decref(o);
	}
	store_kv_free(kv, n);
	return 0;
}

struct session *session_create(const char *user, const char *surface, int idle_sleep_s, cx_err *err)
{
	char id[40] = "s_";
	cx_random_hex(id + 2, 12);
	struct session *s = session_alloc(id, user);
	if (!s) {
		cx_err_set(err, ENOMEM, "session");
		return NULL;
	}
	snprintf(s->surface, sizeof s->surface, "%s", surface);
	if (config_surface(&D.cfg, surface))
		s->prof = config_surface(&D.cfg, surface);
	s->want_agent = 1; /* pre-start: the agent is hot before the first message */
	s->ready_t0_us = cx_mono_us();
	s->created_at = s->last_active_at = cx_wall_ms();
	s->idle_sleep_s = idle_sleep_s;
	s->state = SS_CREATING;
	if (session_persist(s, err) < 0) {
		D.sessions = s->next; /* just pushed at the head */
		free(s);
		return NULL;
	}
	session_ensure_ready(s);
	return s;
}

struct session *session_by_gateway_token(const char *token)
{
	size_t n = token ? strlen(token) : 0;
	if (n != GW_TOKEN_LEN)
		return NULL;
	for (struct session *s = D.sessions; s; s = s->next)
		if (!s->deleted && sodium_memcmp(s->gw_token, token, GW_TOKEN_LEN) == 0)
			return s;
	return NULL;
}

void session_unref(struct session *s)
{
	if (--s->refs > 0)
		return;
	stream_session_timers_cancel(s);
	fq_clear(&s->replay);
	if (s->agent_dirfd >= 0)
		close(s->agent_dirfd);
	sodium_memzero(s->gw_token, sizeof s->gw_token);
	free(s);
}

/* ---- preparation: sandbox + ws-agent, on a worker ---- */

static int mkdir_owned(const char *path, uid_t uid, gid_t gid, cx_err *err)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	if (chown(path, uid, gid) < 0)
		return cx_err_set(err, errno, "chown %s", path);
	return 0;
}

/* Wait for ws-agent's "ready\n" on the pipe, bounded: readiness is signalled,
 * never slept on. */
static int wait_ready(int fd, int timeout_ms, cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + (uint64_t)timeout_ms;
	char buf[16];
	size_t got = 0;
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline)
			return cx_err_set(err, ETIMEDOUT, "ws-agent not ready after %d ms", timeout_ms);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cx_err_set(err, errno, "poll ready pipe");
		if (r == 0)
			continue;
		ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cx_err_set(err, n < 0 ? errno : EPIPE,
					  "ws-agent exited before it was ready (see %s)", "run/ws-agent.log");
		got += (size_t)n;
		buf[got] = '\0';
		if (strchr(buf, '\n'))
			return strncmp(buf, "ready", 5) ? cx_err_set(err, EPROTO, "ws-agent said '%s'", buf) : 0;
		if (got >= sizeof buf - 1)
			return cx_err_set(err, EPROTO, "ws-agent readiness line too long");
	}
}

static int prepare(struct session *s, cx_err *err)
{
	const config *c = &D.cfg;
	char home[4200], ws[4200], run[4200], rootm[4200], logp[4300];
	snprintf(home, sizeof home, "%s/home", s->dir);
	snprintf(ws, sizeof ws, "%s/workspace", s->dir);
	snprintf(run, sizeof run, "%s/run", s->dir);
	snprintf(rootm, sizeof rootm, "%s/rootfs", c->data_dir);
	if (mkdir(s->dir, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", s->dir);
	if (mkdir_owned(home, c->sandbox_uid, c->sandbox_gid, err) < 0 ||
	    mkdir_owned(ws, c->sandbox_uid, c->sandbox_gid, err) < 0 ||
	    mkdir_owned(run, c->sandbox_uid, c->sandbox_gid, err) < 0)
		return -1;
	/* The session dir itself must be traversable by nobody else; the sandbox
	 * reaches its dirs through bind mounts, not this path. */
	if (mkdir(rootm, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", rootm);

	const char *hide[] = {c->data_dir, NULL};
	sandbox_bind binds[2] = {
		{c->ws_agent_path, "/cortex/bin/ws-agent"},
		{c->agent_dir, "/cortex/agent"},
	};
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = s->id;
	o.root_mount = rootm;
	o.home_dir = home;
	o.workspace_dir = ws;
	o.run_dir = run;
	o.hide = hide;
	o.binds = binds;
	o.n_binds = c->agent_dir[0] ? 2 : 1;
	o.uid = c->sandbox_uid;
	o.gid = c->sandbox_gid;
	o.memory_max = c->sandbox_memory_max;
	o.pids_max = c->sandbox_pids_max;
	o.mount_dir = SYNC_MOUNT_DIR; /* MCP packages are attached here at run time */
	sandbox *sb = NULL;
	if (sandbox_create(&sb, &o, err) < 0)
		return cx_err_wrap(err, "sandbox");
	s->sb = sb;

	snprintf(logp, sizeof logp, "%s/ws-agent.log", run);
	cleanup_close int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (logfd < 0)
		return cx_err_set(err, errno, "open %s", logp);
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cx_err_set(err, errno, "pipe");
	cleanup_close int rd = pfd[0];
	cleanup_close int wr = pfd[1];
	char ctx_timeout[32];
	snprintf(ctx_timeout, sizeof ctx_timeout, "%d", c->context_timeout_ms);
	const char *argv[] = {"/cortex/bin/ws-agent", "--socket", "/run/cortex/agent.sock",
			      "--ready-fd", "3", "--context", "/tmp/vf-pending-query.json",
			      "--context-timeout-ms", ctx_timeout, NULL};
	/* Sanitizer runtimes in test builds: leak checking needs ptrace, which the
	 * sandbox's filter forbids, so it is off inside. */
	const char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/agent", "LANG=C.UTF-8",
			      "ASAN_OPTIONS=detect_leaks=0", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.envp = envp;
	eo.cwd = "/workspace";
	eo.stdout_fd = logfd;
	eo.stderr_fd = logfd;
	eo.extra_fd = wr;
	pid_t pid;
	if (sandbox_exec(sb, &pid, &eo, err) < 0)
		return cx_err_wrap(err, "start ws-agent");
	close(steal_fd(&wr)); /* only ws-agent holds the write end now: EOF = it died */
	s->agent_pid = pid;
	if (wait_ready(rd, c->ready_timeout_ms, err) < 0)
		return -1;
	return 0;
}

static void prepare_run(void *arg)
{
	struct session *s = arg;
	uint64_t t0 = cx_mono_us();
	cx_err_clear(&s->job_err);
	if (prepare(s, &s->job_err) < 0) {
		if (s->sb) {
			sandbox_destroy(s->sb);
			s->sb = NULL;
		}
	} else {
		log_info("session %s: sandbox and ws-agent ready in %.1f ms", s->id,
			 (double)(cx_mono_us() - t0) / 1000.0);
	}
}

static void prepare_done(void *arg)
{
	struct session *s = arg;
	s->job_running = 0;
	if (s->deleted) {
		session_delete(s); /* finishes the teardown that waited for this job */
	} else if (!s->sb) {
		s->state = SS_ERROR;
		snprintf(s->error, sizeof s->error, "%s", s->job_err.msg);
		log_error("session %s: %s", s->id, s->job_err.msg);
		stream_session_failed(s, "sandbox_failed", s->job_err.msg);
	} else {
		/* Both at once: config files are written while the agent connects. */
		stream_agent_connect(s);
		session_config_kick(s);
	}
	session_unref(s);
}

int session_busy(const struct session *s) { return s->job_running || s->sync_running; }

/* ---- config sync: a worker applies the assembled config to the sandbox ---- */

struct sync_job {
	struct session *s;
	cconfig *cfg; /* ref */
	struct sync_result r;
};

static void sync_run(void *arg)
{
	struct sync_job *j = arg;
	struct session *s = j->s;
	(void)sync_apply(s->sb, j->cfg, &s->sync, D.cfg.write_parallel, s->agent_pid, &j->r);
}

/* Packages a sandbox mounted stay pinned (never evicted) until it stops. */
static void sync_forget(struct session *s)
{
	for (size_t i = 0; i < s->sync.n_mounts; i++)
		npmcache_unpin(s->sync.mounts[i].key);
	sync_state_clear(&s->sync);
}

static void sync_done(void *arg)
{
	struct sync_job *j = arg;
	struct session *s = j->s;
	s->sync_running = 0;
	for (unsigned i = 0; i < j->r.n_new_keys; i++)
		npmcache_pin(j->r.new_keys[i]);
	if (j->r.rc < 0)
		log_error("session %s: config sync: %s", s->id, j->r.err.msg);
	else if (j->r.written || j->r.removed || j->r.mounted)
		log_info("session %s: config synced in %.1f ms: %u written, %u unchanged, %u removed, %u mounted",
			 s->id, j->r.ms, j->r.written, j->r.skipped, j->r.removed, j->r.mounted);
	cconfig_unref(j->cfg);
	if (s->deleted) {
		session_delete(s); /* finishes the teardown that waited for this job */
	} else if (s->turn && !s->turn->sent) {
		if (j->r.rc < 0) {
			stream_session_failed(s, "config_failed", j->r.err.msg);
		} else {
			stream_turn_advance(s);
		}
	} else if (s->sync_again || (j->r.rc == 0 && !s->turn)) {
		/* Once more if settings moved meanwhile; then the agent follows the config. */
		s->sync_again = 0;
		session_config_kick(s);
	}
	free(j);
	session_unref(s);
}

static void sync_start(struct session *s, cconfig *c)
{
	struct sync_job *j = calloc(1, sizeof *j);
	if (!j)
		return;
	j->s = s;
	j->cfg = cconfig_ref(c);
	s->sync_running = 1;
	s->sync_again = 0;
	s->refs++;
	work_submit(sync_run, sync_done, j);
}

int session_sync_needed(struct session *s, cconfig *c)
{
	if (s->sync_running) {
		if (!sync_is_current(&s->sync, c))
			s->sync_again = 1;
		return 1;
	}
	if (sync_is_current(&s->sync, c))
		return 0;
	sync_start(s, c);
	return 1;
}

void session_config_kick(struct session *s)
{
	if (s->deleted || !s->sb || s->job_running)
		return;
	if (s->turn && !s->turn->sent) {
		stream_turn_advance(s);
		return;
	}
	if (s->turn || s->sync_running) {
		s->sync_again = 1; /* after the turn / the running sync */
		return;
	}
	cx_err err = CX_ERR_INIT;
	cconfig *c = ccache_get(s, NULL, &err);
	if (!c) {
		log_error("session %s: config: %s", s->id, err.msg);
		return;
	}
	cconfig_start_installs(c, s->user);
	if (c->pkgs_missing || session_sync_needed(s, c))
		return; /* the install / sync finishing kicks again */
	stream_agent_reconcile(s, c);
}

void session_ensure_ready(struct session *s)
{
	if (s->deleted || s->job_running)
		return;
	if (s->sb) {
		if (!s->agent_wsi)
			stream_agent_connect(s);
		return;
	}
	if (!s->ready_t0_us)
		s->ready_t0_us = cx_mono_us();
	s->want_agent = 1;
	s->wake_pending = 0;
	s->state = s->state == SS_CREATING ? SS_CREATING : SS_WAKING;
	sync_forget(s); /* a new sandbox starts empty (its /tmp too) */
	s->job_running = 1;
	s->refs++;
	work_submit(prepare_run, prepare_done, s);
	/* In parallel with the sandbox coming up: assemble the config and start any
	 * missing package installs, so both are ready when ws-agent is. */
	cx_err err = CX_ERR_INIT;
	cconfig *c = ccache_get(s, NULL, &err);
	if (c)
		cconfig_start_installs(c, s->user);
	else
		log_warn("session %s: config: %s", s->id, err.msg);
}

/* ---- stop (sleep / delete) ---- */

struct stop_job {
	struct session *s;
	sandbox *sb;
	int remove_dir;
	char dir[4096];
};


static void stop_run(void *arg)
{
	struct stop_job *j = arg;
	if (j->sb)
		sandbox_destroy(j->sb);
	if (j->remove_dir)
		cx_rm_rf(j->dir);
}

static void stop_done(void *arg)
{
	struct stop_job *j = arg;
	if (j->s) {
		struct session *s = j->s;
		s->job_running = 0;
		if (!s->deleted) {
			s->state = SS_SLEEPING;
			if (s->turn) { /* a message came while it was stopping: wake again */
				stream_turn_advance(s);
			} else if (s->wake_pending) { /* a client connected meanwhile */
				s->wake_pending = 0;
				session_ensure_ready(s);
			}
		}
		session_unref(s);
	}
	free(j);
}

void session_sleep(struct session *s)
{
	if (session_busy(s) || s->deleted || !s->sb)
		return;
	struct stop_job *j = calloc(1, sizeof *j);
	if (!j)
		return;
	/* Owned by the stop job from here: nothing may start a sync or a turn step. */
	s->job_running = 1;
	s->want_agent = 0;
	stream_agent_detach(s); /* state turns "sleeping" when the stop job is done */ /* clients stay connected; a message wakes it */
	sync_forget(s);
	j->s = s;
	j->sb = s->sb;
	s->sb = NULL;
	s->refs++;
	log_info("session %s: sleeping", s->id);
	work_submit(stop_run, stop_done, j);
}

/* ---- pause / thaw: the cgroup freezer keeps memory, resumes in milliseconds ---- */

struct freeze_job {
	struct session *s;
	cx_err err;
	int rc;
};

static void freeze_run(void *arg)
{
	struct freeze_job *j = arg;
	j->rc = sandbox_freeze(j->s->sb, 1, &j->err);
}

static void freeze_done(void *arg)
{
	struct freeze_job *j = arg;
	struct session *s = j->s;
	s->job_running = 0;
	if (s->deleted) {
		session_delete(s);
	} else if (j->rc < 0) {
		log_error("session %s: pause: %s", s->id, j->err.msg);
		s->state = SS_READY;
	} else {
		s->state = SS_PAUSED;
		log_info("session %s: paused", s->id);
		/* A message or a client that came meanwhile thaws it at once. */
		cx_err err = CX_ERR_INIT;
		if (s->turn) {
			stream_turn_advance(s);
		} else if (s->wake_pending) {
			s->wake_pending = 0;
			if (session_thaw(s, &err) < 0)
				log_error("session %s: thaw: %s", s->id, err.msg);
		} else {
			session_touch(s);
		}
	}
	free(j);
	session_unref(s);
}

int session_pause(struct session *s, cx_err *err)
{
	if (s->state == SS_PAUSED)
		return 0;
	if (!s->sb || s->state != SS_READY)
		return cx_err_set(err, EBUSY, "only a ready session can be paused (it is %s)",
				  sess_state_name(s->state));
	if (s->turn || session_busy(s))
		return cx_err_set(err, EBUSY, "a turn or a sandbox job is running");
	if (s->ag_state == AG_STARTING) /* frozen mid-boot, its start deadline would pass */
		return cx_err_set(err, EBUSY, "the agent is starting; try again");
	struct freeze_job *j = calloc(1, sizeof *j);
	if (!j)
		return cx_err_set(err, ENOMEM, "pause");
	j->s = s;
	s->job_running = 1;
	s->refs++;
	work_submit(freeze_run, freeze_done, j);
	return 0;
}

int session_thaw(struct session *s, cx_err *err)
{
	if (s->state != SS_PAUSED || !s->sb)
		return 0;
	uint64_t t0 = cx_mono_us();
	if (sandbox_freeze(s->sb, 0, err) < 0)
		return -1;
	s->state = SS_READY;
	s->ready_ms = (double)(cx_mono_us() - t0) / 1000.0;
	log_info("session %s: thawed in %.2f ms", s->id, s->ready_ms);
	session_touch(s);
	return 0;
}

/* ---- idle timers (per surface profile): release the agent, freeze, then stop the sandbox ---- */

static int idle_limit(const struct session *s, int which)
{
	const struct surface_profile *p = s->prof;
	switch (which) {
	case 0: return p ? p->idle_agent_s : 0;
	case 1: return p ? p->idle_pause_s : 0;
	default: return s->idle_sleep_s ? s->idle_sleep_s : p ? p->idle_sleep_s : 0;
	}
}

static void sul_idle_cb(lws_sorted_usec_list_t *sul);

/* Arm the timer for the next idle step still ahead. */
static void idle_arm(struct session *s)
{
	uint64_t now = cx_mono_us(), idle = now - s->active_us, next = 0;
	for (int w = 0; w < 3; w++) {
		uint64_t lim = (uint64_t)idle_limit(s, w) * 1000000u;
		if (lim && lim > idle && (!next || lim - idle < next))
			next = lim - idle;
	}
	if (next)
		lws_sul_schedule(D.ctx, 0, &s->sul_idle, sul_idle_cb, (lws_usec_t)next);
	else
		lws_sul_cancel(&s->sul_idle);
}

static void sul_idle_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, sul_idle);
	if (s->deleted)
		return;
	if (s->turn || session_busy(s) || s->ag_state == AG_STARTING) {
		session_touch(s); /* not idle: look again a full period later */
		return;
	}
	uint64_t idle = cx_mono_us() - s->active_us;
	int lim;
	if ((lim = idle_limit(s, 2)) && idle >= (uint64_t)lim * 1000000u && s->sb) {
		session_sleep(s);
		return;
	}
	if ((lim = idle_limit(s, 1)) && idle >= (uint64_t)lim * 1000000u && s->state == SS_READY) {
		cx_err err = CX_ERR_INIT;
		if (session_pause(s, &err) < 0)
			log_warn("session %s: idle pause: %s", s->id, err.msg);
	}
	if ((lim = idle_limit(s, 0)) && idle >= (uint64_t)lim * 1000000u && s->state == SS_READY)
		stream_agent_release(s);
	idle_arm(s);
}

void session_touch(struct session *s)
{
	if (s->deleted)
		return;
	s->active_us = cx_mono_us();
	s->last_active_at = cx_wall_ms();
	idle_arm(s);
}

void session_delete(struct session *s)
{
	s->deleted = 1;
	sodium_memzero(s->gw_token, sizeof s->gw_token); /* its gateway token stops working now */
	stream_session_timers_cancel(s);
	if (session_busy(s))
		return; /* prepare_done() / sync_done() calls us again */
	stream_session_detach(s);
	sync_forget(s);
	ccache_drop(s);
	/* Unlink from the registry. */
	for (struct session **pp = &D.sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	struct stop_job *j = calloc(1, sizeof *j);
	if (j) {
		j->sb = s->sb;
		j->remove_dir = 1;
		snprintf(j->dir, sizeof j->dir, "%s", s->dir);
		work_submit(stop_run, stop_done, j);
	}
	s->sb = NULL;
	session_unref(s);
}

void sessions_shutdown(void)
{
	/* On exit every sandbox is stopped (synchronously: the workers are gone). */
	for (struct session *s = D.sessions; s; s = s->next) {
		stream_session_detach(s);
		sync_state_clear(&s->sync); /* the npm cache is already shut down: no unpins */
		ccache_drop(s);
		if (s->sb && !s->job_running) {
			sandbox_destroy(s->sb);
			s->sb = NULL;
		}
	}
}

/* ---- store writes off the critical path (transcripts, turn records) ---- */

struct put_job {
	char key[300];
	char *val;
};

static void put_run(void *arg)
{
	struct put_job *j = arg;
	cx_err err = CX_ERR_INIT;
	if (store_put(D.st, j->key, j->val, strlen(j->val), &err) < 0)
		log_error("store write %s: %s", j->key, err.msg);
	free(j->val);
	free(j);
}

void store_put_later(const char *key, json_t *o)
{
	struct put_job *j = calloc(1, sizeof *j);
	if (j) {
		snprintf(j->key, sizeof j->key, "%s", key);
		j->val = json_dumps(o, JSON_COMPACT);
	}
	json_decref(o);
	if (!j || !j->val) {
		free(j);
		return;
	}
	work_submit(put_run, NULL, j);
}

void transcript_append(const struct session *s, const char *role, const char *text, uint64_t turn)
{
	char key[200];
	int64_t ts = cx_wall_ms();
	snprintf(key, sizeof key, "transcripts/%s/%015lld-%06llu-%d", s->id, (long long)ts,
		 (unsigned long long)turn, strcmp(role, "user") ? 1 : 0);
	store_put_later(key, json_pack("{s:s,s:s,s:I,s:I}", "role", role, "text", text, "ts", (json_int_t)ts,
				       "turn", (json_int_t)turn));
}
