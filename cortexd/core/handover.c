/* handover.c — see handover.h. */
#include "handover.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "fanout.h"
#include "fswatch.h"
#include "imgstore.h"
#include "jobs.h"
#include "lifecycle-internal.h"
#include "lifecycle.h"
#include "log.h"
#include "turn.h"
#include "turnlog.h"

#define STATE_FILE "state.json"
#define STATE_CAP  (16u << 20) /* the record of every session, read back */

/* ---- the old process ---- */

static int can_detach(const struct session *s)
{
	return !s->deleted && s->lc.sb && s->link.up && s->link.wsi && s->lc.job == JOB_NONE &&
	       !s->lc.sync_job && s->lc.state == SS_READY && s->link.state != AG_STARTING &&
	       !s->link.applying && !s->lc.cloning;
}

unsigned handover_detach_all(struct cortexd *d)
{
	d->ho_pending = 0;
	for (struct session *s = d->sessions; s; s = s->next) {
		fanout_close_all(s);   /* clients reconnect to the next process and resume */
		fanout_update_flow(s); /* nobody to pace the agent: read all it has */
		if (!can_detach(s))
			continue;
		s->ho.detaching = 1;
		d->ho_pending++;
		agent_detach(s);
	}
	log_info("upgrade restart: %u session(s) asked to detach", d->ho_pending);
	return d->ho_pending;
}

void handover_detached(struct session *s)
{
	if (!s->ho.detaching || s->ho.detached)
		return;
	s->ho.detached = 1;
	if (s->d->ho_pending)
		s->d->ho_pending--;
}

static json_t *session_record_of(struct session *s, sandbox_handover *h, json_t *t)
{
	json_t *o = json_pack("{s:s,s:i,s:i,s:i,s:I,s:b,s:s,s:i,s:i,s:I}", "id", s->id, "monitor",
			      (int)h->monitor_pid, "init", (int)h->init_pid, "ctl_fd", h->ctl_fd,
			      "ctl_seq", (json_int_t)h->seq, "net_isolated", h->net_isolated,
			      "mount_dir", h->mount_dir, "uid", (int)h->uid, "gid", (int)h->gid,
			      "turns", (json_int_t)s->turns);
	if (!o)
		return NULL;
	json_object_set_new(o, "mon_ctl_fd", json_integer(h->mon_ctl_fd));
	json_object_set_new(o, "wsa_pid", json_integer(s->lc.wsa_pid));
	json_object_set_new(o, "pinned", json_boolean(s->lc.pinned));
	json_object_set_new(o, "gw_token", json_string(s->gw_token));
	json_object_set_new(o, "agent_cmd", json_string(s->rt.agent_cmd));
	json_object_set_new(o, "cwd", json_string(s->rt.cwd));
	if (s->rt.env)
		json_object_set(o, "env", s->rt.env);
	json_t *ag =
	    json_pack("{s:i,s:I,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:i}", "state", (int)s->link.state,
		      "gen", (json_int_t)s->link.gen, "hash", s->link.hash, "live_hash",
		      s->link.live_hash, "mcp_hash", s->link.mcp_hash, "live_model",
		      s->link.live_model, "live_perm", s->link.live_perm, "had_success",
		      s->link.had_success, "crashes", s->link.crashes, "pid", s->link.pid);
	if (ag)
		json_object_set_new(o, "agent", ag);
	if (t)
		json_object_set_new(o, "turn", t);
	return o;
}

static int write_file(struct cortexd *d, const char *txt, cx_err *err)
{
	cleanup_close int dfd = jobs_private_dir(&d->cfg, HANDOVER_DIR, err);
	if (dfd < 0)
		return -1;
	cleanup_close int fd = openat(dfd, STATE_FILE ".tmp",
				      O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "handover: create");
	if (cx_write_all(fd, txt, strlen(txt), err) < 0 || fsync(fd) < 0)
		return cx_err_set(err, errno, "handover: write");
	if (renameat(dfd, STATE_FILE ".tmp", dfd, STATE_FILE) < 0)
		return cx_err_set(err, errno, "handover: rename");
	return 0;
}

int handover_write(struct cortexd *d)
{
	json_t *list = json_array();
	cx_err err = CX_ERR_INIT;
	unsigned kept = 0, left = 0;
	for (struct session *s = d->sessions; s; s = s->next) {
		if (!s->ho.detached || !s->lc.sb || !s->link.up) {
			left += s->lc.sb != NULL;
			continue;
		}
		turnlog_flush(s);
		sandbox_handover h;
		sandbox *sb = s->lc.sb;
		if (sandbox_handover_release(sb, &h, &err) < 0) {
			log_warn("session %s: not handed over: %s", s->id, err.msg);
			left++;
			continue;
		}
		s->lc.sb = NULL;
		s->ho.kept = 1;
		json_t *o = session_record_of(s, &h, turn_handover(s));
		agent_link_close(s); /* ws-agent keeps the detached agents */
		if (o)
			json_array_append_new(list, o);
		kept++;
	}
	json_t *root = json_pack("{s:i,s:o}", "pid", (int)getpid(), "sessions", list);
	char *txt = root ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	int rc = txt && write_file(d, txt, &err) == 0 ? 0 : -1;
	if (txt)
		memset(txt, 0, strlen(txt)); /* gateway tokens */
	free(txt);
	if (rc < 0)
		log_error("upgrade restart: %s", txt ? err.msg : "out of memory");
	log_info("upgrade restart: %u sandbox(es) handed over, %u stopped", kept, left);
	return rc;
}

void handover_exec(struct cortexd *d)
{
	char port[16];
	snprintf(port, sizeof port, "%d", d->port);
	setenv("CORTEX_UPGRADE_PORT", port, 1);
	fflush(stdout);
	fflush(stderr);
	/* Reaped here: the new image starts a helper of its own.  If execv
	 * fails, sandboxes fork the daemon from then on. */
	sandbox_forkserver_stop();
	execv(d->exe, d->argv);
	log_error("upgrade restart: execv %s: %s", d->exe, strerror(errno));
}

/* ---- the new process ---- */

void handover_load(struct cortexd *d)
{
	cx_err err = CX_ERR_INIT;
	cleanup_close int dfd = jobs_private_dir(&d->cfg, HANDOVER_DIR, &err);
	if (dfd < 0)
		return;
	int fd = openat(dfd, STATE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)unlinkat(dfd, STATE_FILE, 0); /* read once: a later start never takes it again */
	struct stat st;
	json_t *root = NULL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= STATE_CAP)
		root = json_loadfd(fd, 0, NULL);
	close(fd);
	if (!root)
		return;
	if (json_integer_value(json_object_get(root, "pid")) != getpid()) {
		/* Another process wrote it (one that died, or this is a fresh
		 * start): its fds are not ours and its sandboxes are reaped. */
		log_warn("upgrade restart: a handover record of pid %lld is not ours; ignored",
			 (long long)json_integer_value(json_object_get(root, "pid")));
		json_decref(root);
		return;
	}
	d->handover = root;
	log_info("upgrade restart: taking over %zu session(s)",
		 json_array_size(json_object_get(root, "sessions")));
}

static json_t *record_of(struct cortexd *d, const char *id)
{
	json_t *list = json_object_get(d->handover, "sessions"), *o;
	size_t i;
	json_array_foreach(list, i, o)
	{
		const char *rid = json_string_value(json_object_get(o, "id"));
		if (rid && !strcmp(rid, id) && !json_is_true(json_object_get(o, "taken")))
			return o;
	}
	return NULL;
}

static void str_to(char *dst, size_t cap, json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	snprintf(dst, cap, "%s", v ? v : "");
}

/* A session's state from its record (SIGHUP's or a crash record), its
 * sandbox taken back already. */
static void take_record(struct session *s, json_t *o, sandbox *sb)
{
	s->lc.sb = sb;
	s->lc.wsa_pid = (pid_t)json_integer_value(json_object_get(o, "wsa_pid"));
	s->lc.pinned = json_is_true(json_object_get(o, "pinned"));
	s->lc.state = SS_READY;
	s->lc.goal = GOAL_HOT;
	str_to(s->gw_token, sizeof s->gw_token, o, "gw_token");
	str_to(s->rt.agent_cmd, sizeof s->rt.agent_cmd, o, "agent_cmd");
	str_to(s->rt.cwd, sizeof s->rt.cwd, o, "cwd");
	json_t *env = json_object_get(o, "env");
	if (json_is_object(env))
		s->rt.env = json_incref(env);
	json_t *ag = json_object_get(o, "agent");
	s->link.state = (enum ag_state)json_integer_value(json_object_get(ag, "state")) == AG_HOT
			    ? AG_HOT
			    : AG_NONE;
	s->link.gen = (uint64_t)json_integer_value(json_object_get(ag, "gen"));
	str_to(s->link.hash, sizeof s->link.hash, ag, "hash");
	str_to(s->link.live_hash, sizeof s->link.live_hash, ag, "live_hash");
	str_to(s->link.mcp_hash, sizeof s->link.mcp_hash, ag, "mcp_hash");
	str_to(s->link.live_model, sizeof s->link.live_model, ag, "live_model");
	str_to(s->link.live_perm, sizeof s->link.live_perm, ag, "live_perm");
	s->link.had_success = (int)json_integer_value(json_object_get(ag, "had_success"));
	s->link.crashes = (int)json_integer_value(json_object_get(ag, "crashes"));
	s->link.pid = (int)json_integer_value(json_object_get(ag, "pid"));
	json_int_t turns = json_integer_value(json_object_get(o, "turns"));
	if (turns > 0 && (uint64_t)turns > s->turns)
		s->turns = (uint64_t)turns;
	json_t *t = json_object_get(o, "turn");
	if (json_is_object(t))
		turn_adopt(s, t);
}

static void hv_from(sandbox_handover *h, json_t *o)
{
	*h = (sandbox_handover){
	    .monitor_pid = (pid_t)json_integer_value(json_object_get(o, "monitor")),
	    .init_pid = (pid_t)json_integer_value(json_object_get(o, "init")),
	    .ctl_fd = (int)json_integer_value(json_object_get(o, "ctl_fd")),
	    .seq = (uint32_t)json_integer_value(json_object_get(o, "ctl_seq")),
	    .uid = (uid_t)json_integer_value(json_object_get(o, "uid")),
	    .gid = (gid_t)json_integer_value(json_object_get(o, "gid")),
	    .net_isolated = json_is_true(json_object_get(o, "net_isolated")),
	    .mon_ctl_fd = (int)json_integer_value(json_object_get(o, "mon_ctl_fd")),
	};
	str_to(h->mount_dir, sizeof h->mount_dir, o, "mount_dir");
}

static int keep_reclaim(struct session *s);

int handover_adopt(struct session *s)
{
	struct cortexd *d = s->d;
	json_t *o = d->handover ? record_of(d, s->id) : NULL;
	if (!o)
		return keep_reclaim(s);
	json_object_set_new(o, "taken", json_true());
	sandbox_handover h;
	hv_from(&h, o);
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	if (sandbox_adopt(&sb, s->id, NULL, &h, &err) < 0) {
		log_warn(
		    "session %s: its sandbox could not be taken back (%s): it comes back sleeping",
		    s->id, err.msg);
		s->ho.failed_monitor = h.monitor_pid;
		return 0;
	}
	take_record(s, o, sb);
	s->ho.adopted = 1;
	log_info("session %s: sandbox taken back (init %d)%s", s->id, (int)h.init_pid,
		 s->turn ? ", its turn goes on" : "");
	return 1;
}

void handover_reap_failed(struct session *s)
{
	pid_t m = s->ho.failed_monitor;
	s->ho.failed_monitor = 0;
	if (m <= 1)
		return;
	/* The cgroup reap killed its init; the monitor, if it was ours, exits
	 * with it: wait for that on its pidfd (at most 2 s), then reap it
	 * (waitpid touches nothing that is not our child: ECHILD). */
	int pfd = (int)syscall(SYS_pidfd_open, m, 0);
	if (pfd >= 0) {
		struct pollfd p = {pfd, POLLIN, 0};
		while (poll(&p, 1, 2000) < 0 && errno == EINTR)
			;
		close(pfd);
	}
	pid_t r;
	while ((r = waitpid(m, NULL, WNOHANG)) < 0 && errno == EINTR)
		;
	if (r == m || r < 0)
		return;
	log_warn("session %s: the monitor %d of a sandbox not taken back did not exit", s->id,
		 (int)m);
}

static void keep_sweep(struct cortexd *d);

void handover_load_done(struct cortexd *d)
{
	keep_sweep(d);
	if (!d->handover)
		return;
	json_t *list = json_object_get(d->handover, "sessions"), *o;
	size_t i;
	json_array_foreach(list, i, o)
	{
		if (json_is_true(json_object_get(o, "taken")))
			continue;
		/* Its session is gone: closing the control socket ends its init
		 * (the cgroup reap of a later start covers the rest). */
		int fd = (int)json_integer_value(json_object_get(o, "ctl_fd"));
		if (fd > 2)
			close(fd);
		/* A monitor that holds the socket too (keep_on_crash) keeps init:
		 * its cgroup goes by id. */
		const char *id = json_string_value(json_object_get(o, "id"));
		int found = 0;
		cx_err err = CX_ERR_INIT;
		if (id && sandbox_reap_stale(NULL, id, &found, &err) < 0)
			log_warn("session %s: the sandbox no session took: %s", id, err.msg);
	}
	json_t *root = d->handover;
	d->handover = NULL;
	json_t *so;
	json_array_foreach(json_object_get(root, "sessions"), i, so)
	    json_object_del(so, "gw_token");
	json_decref(root);
}

void handover_resume(struct cortexd *d)
{
	cx_listen_kept_done();
	for (struct session *s = d->sessions; s; s = s->next) {
		if (!s->ho.adopted || !s->lc.sb)
			continue;
		if (s->lc.pinned && d->images) {
			struct image_info *ii = NULL;
			cx_err err = CX_ERR_INIT;
			if (imgstore_pin(d->images, s->spec.image, &ii, &err) < 0)
				s->lc.pinned = 0;
			image_info_free(ii);
		}
		fswatch_session_up(s);
		lc_touch(s);
		s->link.attaching = 1;
		cx_err err = CX_ERR_INIT;
		if (agent_link_connect(s, &err) < 0) {
			log_warn("session %s: ws-agent after the restart: %s", s->id, err.msg);
			s->link.attaching = 0;
			s->lc.broken = 1;
			turn_fail(s, "agent_lost",
				  "the agent could not be reached after cortexd's upgrade restart");
			lifecycle_reconcile(s);
		}
	}
}

/* ---- kill -9 (sessions.keep_on_crash): DATA/keep/<id>.json ---- */

static int keep_name(const char *id, char *name, size_t cap)
{
	size_t n = strlen(id);
	if (!n || n > 64 || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != n)
		return -1;
	snprintf(name, cap, "%s.json", id);
	return 0;
}

void handover_keep_note(struct session *s)
{
	struct cortexd *d = s->d;
	char name[80];
	if (!d->cfg.keep_on_crash || !s->lc.sb || s->deleted || keep_name(s->id, name, sizeof name) < 0)
		return;
	sandbox_handover h;
	sandbox_record(s->lc.sb, &h);
	json_t *o = session_record_of(s, &h, turn_describe(s));
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	cx_err err = CX_ERR_INIT;
	cleanup_close int dfd = txt ? jobs_private_dir(&d->cfg, JOBS_KEEP_DIR, &err) : -1;
	int rc = -1;
	if (dfd >= 0) {
		/* No fsync: what it guards against is cortexd's death, not the
		 * host's (the page cache outlives the process). */
		char tmp[96];
		snprintf(tmp, sizeof tmp, "%s.tmp", name);
		cleanup_close int fd =
		    openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		rc = fd >= 0 && cx_write_all(fd, txt, strlen(txt), &err) == 0 &&
			     renameat(dfd, tmp, dfd, name) == 0
			 ? 0
			 : -1;
		if (rc < 0 && !err.msg[0])
			cx_err_set(&err, errno, "write %s", name);
	}
	if (rc < 0)
		log_warn("session %s: crash record: %s", s->id, txt ? err.msg : "out of memory");
	if (txt)
		memset(txt, 0, strlen(txt)); /* the gateway token */
	free(txt);
}

static void keep_forget(struct cortexd *d, const char *id)
{
	char name[80];
	cx_err err = CX_ERR_INIT;
	cleanup_close int dfd = keep_name(id, name, sizeof name) == 0
				    ? jobs_private_dir(&d->cfg, JOBS_KEEP_DIR, &err)
				    : -1;
	if (dfd >= 0)
		(void)unlinkat(dfd, name, 0);
}

static json_t *keep_read(struct cortexd *d, const char *id)
{
	char name[80];
	cx_err err = CX_ERR_INIT;
	if (keep_name(id, name, sizeof name) < 0)
		return NULL;
	cleanup_close int dfd = jobs_private_dir(&d->cfg, JOBS_KEEP_DIR, &err);
	cleanup_close int fd = dfd >= 0 ? openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > STATE_CAP)
		return NULL;
	json_t *o = json_loadfd(fd, 0, NULL);
	const char *rid = json_string_value(json_object_get(o, "id"));
	if (!rid || strcmp(rid, id)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int keep_reclaim(struct session *s)
{
	struct cortexd *d = s->d;
	json_t *o = keep_read(d, s->id);
	if (!o)
		return 0;
	if (!d->cfg.keep_on_crash) { /* turned off since: the reap stops it */
		json_decref(o);
		keep_forget(d, s->id);
		return 0;
	}
	sandbox_handover h;
	hv_from(&h, o);
	cx_err err = CX_ERR_INIT;
	sandbox *sb = NULL;
	if (sandbox_reclaim(&sb, s->id, NULL, &h, &err) < 0) {
		log_warn("session %s: its sandbox was not kept through the crash (%s): it comes back "
			 "sleeping",
			 s->id, err.msg);
		json_decref(o);
		keep_forget(d, s->id);
		return 0;
	}
	take_record(s, o, sb);
	json_decref(o);
	s->ho.adopted = 1;
	log_info("session %s: sandbox kept through cortexd's crash (init %d)%s", s->id,
		 (int)h.init_pid, s->turn ? ", its turn goes on" : "");
	return 1;
}

/* Records of sessions that are gone: their sandboxes are stopped by id. */
static void keep_sweep(struct cortexd *d)
{
	cx_err err = CX_ERR_INIT;
	cleanup_close int dfd = jobs_private_dir(&d->cfg, JOBS_KEEP_DIR, &err);
	int fd = dfd >= 0 ? openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(dir))) {
		char id[80];
		size_t n = strlen(e->d_name);
		if (e->d_name[0] == '.' || n < 6 || n - 5 >= sizeof id)
			continue;
		if (strcmp(e->d_name + n - 5, ".json")) {
			(void)unlinkat(dfd, e->d_name, 0); /* a .tmp a crash left */
			continue;
		}
		memcpy(id, e->d_name, n - 5);
		id[n - 5] = '\0';
		if (session_find(d, id))
			continue;
		int found = 0;
		(void)sandbox_reap_stale(NULL, id, &found, &err);
		(void)unlinkat(dfd, e->d_name, 0);
	}
	closedir(dir);
}
