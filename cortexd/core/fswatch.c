/* fswatch.c — see fswatch.h. */
#include "fswatch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fanout.h"
#include "files.h"
#include "jobs.h"
#include "log.h"
#include "work.h"

#define FSW_MASK                                                                                      \
	(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR | \
	 IN_EXCL_UNLINK)
#define FSW_PENDING_MAX 1024 /* coalesced events waiting for their window: past it, "overflow" */
#define FSW_DEPTH_MAX 64

static const char *const root_path[2] = {"/workspace", "/home/agent"};

struct fsw_dir {
	int wd;
	char *rel; /* "" for the root, else "a/b" (owned) */
};
struct fsw_ev {
	const char *event; /* static string */
	char *path, *from; /* owned */
	int dir;
};
struct fswatch {
	struct session *s; /* a reference */
	int root;          /* 0 /workspace, 1 /home/agent */
	int fd;            /* inotify, until adopted (then wsi owns it) */
	int rootfd;        /* O_PATH of the root on the host side */
	struct lws *wsi;
	int arming, dead;
	struct fsw_dir *dirs;
	size_t ndirs, cap;
	struct fsw_ev pend[FSW_PENDING_MAX];
	size_t npend;
	int timer;
	lws_sorted_usec_list_t sul;
	uint32_t cookie;  /* an IN_MOVED_FROM waiting for its IN_MOVED_TO */
	char *moved_from;
	int moved_dir;
};

static void send_obj(struct session *s, int root, json_t *o, struct client *only)
{
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt)
		return;
	for (struct client *c = s->fan.clients; c; c = c->next)
		if ((only ? c == only : 1) && (c->watch & (1u << root)))
			fanout_send_one(c, txt, strlen(txt));
	free(txt);
}

static void send_state(struct fswatch *w, const char *event, struct client *only)
{
	send_obj(w->s, w->root,
		 json_pack("{s:s,s:s,s:s,s:I}", "type", "cortex.fs", "event", event, "path", root_path[w->root],
			   "watches", (json_int_t)w->ndirs),
		 only);
}

/* ---- the table of watched dirs ---- */

static struct fsw_dir *dir_of(struct fswatch *w, int wd)
{
	for (size_t i = 0; i < w->ndirs; i++)
		if (w->dirs[i].wd == wd)
			return &w->dirs[i];
	return NULL;
}

static int dir_add(struct fswatch *w, int wd, const char *rel)
{
	struct fsw_dir *d = dir_of(w, wd);
	if (d) { /* the same dir again (a move): its new name */
		char *r = strdup(rel);
		if (!r)
			return -1;
		free(d->rel);
		d->rel = r;
		return 0;
	}
	if (w->ndirs == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 16;
		struct fsw_dir *nd = realloc(w->dirs, nc * sizeof *nd);
		if (!nd)
			return -1;
		w->dirs = nd;
		w->cap = nc;
	}
	if (!(w->dirs[w->ndirs].rel = strdup(rel)))
		return -1;
	w->dirs[w->ndirs++].wd = wd;
	return 0;
}

static void dir_drop_at(struct fswatch *w, size_t i)
{
	free(w->dirs[i].rel);
	w->dirs[i] = w->dirs[--w->ndirs];
}

/* Watches dir `rel` (open as dfd) and, to depth, every dir below it; each
 * entry found is reported as created when `report`.  Bounded by max. */
static void scan(struct fswatch *w, int dfd, const char *rel, unsigned max, unsigned depth, int report);

static void add_tree(struct fswatch *w, const char *rel, unsigned max, int report)
{
	if (w->ndirs >= max)
		return;
	cleanup_close int dfd = files_open_beneath(w->rootfd, rel[0] ? rel : ".", O_RDONLY | O_DIRECTORY);
	if (dfd >= 0)
		scan(w, dfd, rel, max, 0, report);
}

static void queue_ev(struct fswatch *w, const char *event, const char *rel, const char *from, int dir);

static void scan(struct fswatch *w, int dfd, const char *rel, unsigned max, unsigned depth, int report)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", dfd);
	int wd = inotify_add_watch(w->fd, p, FSW_MASK);
	if (wd < 0 || dir_add(w, wd, rel) < 0 || depth >= FSW_DEPTH_MAX)
		return;
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char sub[FILES_PATH_MAX];
		if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >= sizeof sub)
			continue;
		int isdir = de->d_type == DT_DIR;
		if (report)
			queue_ev(w, "created", sub, NULL, isdir);
		if (!isdir || w->ndirs >= max)
			continue;
		cleanup_close int sfd = files_open_beneath(dfd, de->d_name, O_RDONLY | O_DIRECTORY);
		if (sfd >= 0)
			scan(w, sfd, sub, max, depth + 1, report);
	}
	closedir(d);
}

/* ---- coalescing ---- */

static void flush(struct fswatch *w)
{
	for (size_t i = 0; i < w->npend; i++) {
		struct fsw_ev *e = &w->pend[i];
		if (e->event) {
			json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.fs", "event", e->event, "path", e->path);
			if (e->from)
				json_object_set_new(o, "from", json_string(e->from));
			if (e->dir)
				json_object_set_new(o, "dir", json_true());
			send_obj(w->s, w->root, o, NULL);
		}
		free(e->path);
		free(e->from);
	}
	w->npend = 0;
}

static void sul_flush(lws_sorted_usec_list_t *sul)
{
	struct fswatch *w = lws_container_of(sul, struct fswatch, sul);
	w->timer = 0;
	flush(w);
}

static void overflow(struct fswatch *w)
{
	flush(w);
	send_state(w, "overflow", NULL);
}

/* created+modified = created; created+deleted = nothing; deleted+created =
 * modified; otherwise the later event.  Moves are merged only as below. */
static void queue_ev(struct fswatch *w, const char *event, const char *rel, const char *from, int dir)
{
	char path[FILES_PATH_MAX + 16], fpath[FILES_PATH_MAX + 16];
	snprintf(path, sizeof path, "%s%s%s", root_path[w->root], rel[0] ? "/" : "", rel);
	if (from)
		snprintf(fpath, sizeof fpath, "%s%s%s", root_path[w->root], from[0] ? "/" : "", from);
	/* A file made in the window and renamed over another (an atomic write
	 * through a temp file: editors, PUT) is one change of the target. */
	for (size_t i = w->npend; from && !dir && i-- > 0;) {
		struct fsw_ev *e = &w->pend[i];
		if (e->event && !e->from && !strcmp(e->event, "created") && !strcmp(e->path, fpath)) {
			e->event = NULL;
			queue_ev(w, "modified", rel, NULL, 0);
			return;
		}
	}
	if (!from)
		for (size_t i = w->npend; i-- > 0;) {
			struct fsw_ev *e = &w->pend[i];
			if (!e->event || e->from || strcmp(e->path, path))
				continue;
			const char *a = e->event;
			if (!strcmp(a, "created") && !strcmp(event, "deleted"))
				e->event = NULL;
			else if (!strcmp(a, "created"))
				; /* stays created */
			else if (!strcmp(a, "deleted") && strcmp(event, "deleted"))
				e->event = "modified";
			else
				e->event = event;
			return;
		}
	if (w->npend == FSW_PENDING_MAX) {
		overflow(w);
		return;
	}
	struct fsw_ev *e = &w->pend[w->npend++];
	e->event = event;
	e->path = strdup(path);
	e->from = from ? strdup(fpath) : NULL;
	e->dir = dir;
	if (!e->path) {
		w->npend--;
		return;
	}
	if (!w->timer) {
		w->timer = 1;
		session_timer(w->s, &w->sul, sul_flush, (uint64_t)w->s->d->cfg.files_coalesce_ms * 1000);
	}
}

/* ---- inotify events ---- */

static void unwatch_prefix(struct fswatch *w, const char *rel)
{
	size_t l = strlen(rel);
	for (size_t i = 0; i < w->ndirs;) {
		const char *r = w->dirs[i].rel;
		if (!strncmp(r, rel, l) && (r[l] == '\0' || r[l] == '/')) {
			inotify_rm_watch(w->fd, w->dirs[i].wd);
			dir_drop_at(w, i);
		} else {
			i++;
		}
	}
}

static void rename_prefix(struct fswatch *w, const char *from, const char *to)
{
	size_t l = strlen(from);
	for (size_t i = 0; i < w->ndirs; i++) {
		const char *r = w->dirs[i].rel;
		if (strncmp(r, from, l) || (r[l] != '\0' && r[l] != '/'))
			continue;
		char nr[FILES_PATH_MAX];
		if ((size_t)snprintf(nr, sizeof nr, "%s%s", to, r + l) < sizeof nr)
			dir_add(w, w->dirs[i].wd, nr);
	}
}

/* An IN_MOVED_FROM that found no IN_MOVED_TO: moved out, i.e. deleted. */
static void settle_move(struct fswatch *w)
{
	if (!w->moved_from)
		return;
	queue_ev(w, "deleted", w->moved_from, NULL, w->moved_dir);
	if (w->moved_dir)
		unwatch_prefix(w, w->moved_from);
	free(w->moved_from);
	w->moved_from = NULL;
	w->cookie = 0;
}

static void on_event(struct fswatch *w, const struct inotify_event *ev)
{
	unsigned max = w->s->d->cfg.files_max_watches;
	if (ev->mask & IN_Q_OVERFLOW) {
		overflow(w);
		return;
	}
	if (ev->mask & IN_IGNORED) {
		for (size_t i = 0; i < w->ndirs; i++)
			if (w->dirs[i].wd == ev->wd) {
				dir_drop_at(w, i);
				break;
			}
		return;
	}
	struct fsw_dir *d = dir_of(w, ev->wd);
	if (!d || !ev->len)
		return;
	char rel[FILES_PATH_MAX];
	if ((size_t)snprintf(rel, sizeof rel, "%s%s%s", d->rel, d->rel[0] ? "/" : "", ev->name) >= sizeof rel)
		return;
	int isdir = !!(ev->mask & IN_ISDIR);
	if (!(ev->mask & IN_MOVED_TO))
		settle_move(w);
	if (ev->mask & IN_CREATE) {
		queue_ev(w, "created", rel, NULL, isdir);
		if (isdir)
			add_tree(w, rel, max, 1); /* what was made in it before the watch */
	} else if (ev->mask & (IN_MODIFY | IN_CLOSE_WRITE)) {
		queue_ev(w, "modified", rel, NULL, 0);
	} else if (ev->mask & IN_DELETE) {
		queue_ev(w, "deleted", rel, NULL, isdir);
	} else if (ev->mask & IN_MOVED_FROM) {
		w->moved_from = strdup(rel);
		w->moved_dir = isdir;
		w->cookie = ev->cookie;
	} else if (ev->mask & IN_MOVED_TO) {
		if (w->moved_from && w->cookie == ev->cookie) {
			queue_ev(w, "moved", rel, w->moved_from, isdir);
			if (isdir)
				rename_prefix(w, w->moved_from, rel);
			free(w->moved_from);
			w->moved_from = NULL;
			w->cookie = 0;
		} else {
			settle_move(w);
			queue_ev(w, "created", rel, NULL, isdir);
			if (isdir)
				add_tree(w, rel, max, 1);
		}
	}
}

static void on_readable(struct fswatch *w)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (int rounds = 0; rounds < 16; rounds++) { /* bounded per wakeup; lws calls again */
		ssize_t n = read(w->fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			on_event(w, ev);
			p += sizeof *ev + ev->len;
		}
	}
	settle_move(w); /* a pair is queued together: what is left moved out */
}

/* ---- arming and disarming ---- */

struct arm_job {
	struct fswatch *w; /* the service thread's; the job uses only fd, rootfd, dirs */
	char dir[4096];
	unsigned max;
	int ok;
};

static void arm_run(void *arg)
{
	struct arm_job *j = arg;
	struct fswatch *w = j->w;
	cx_err err = CX_ERR_INIT;
	cleanup_close int lock = jobs_disk_lock(j->dir, &err);
	char mnt[4200];
	snprintf(mnt, sizeof mnt, "%s/" JOBS_DISK_DIR, j->dir);
	struct stat sd, sm;
	if (lock < 0 || fstat(lock, &sd) < 0 || stat(mnt, &sm) < 0 || sm.st_dev == sd.st_dev)
		return; /* the disk is not on the host (asleep): nothing to watch now */
	w->rootfd = files_open_root(j->dir, w->root);
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->rootfd < 0 || w->fd < 0)
		return;
	add_tree(w, "", j->max, 0);
	j->ok = w->ndirs > 0;
}

static void fsw_free(struct fswatch *w)
{
	if (w->timer)
		lws_sul_cancel(&w->sul);
	for (size_t i = 0; i < w->npend; i++) {
		free(w->pend[i].path);
		free(w->pend[i].from);
	}
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i].rel);
	free(w->dirs);
	free(w->moved_from);
	if (w->rootfd >= 0)
		close(w->rootfd);
	if (w->wsi) {
		lws_set_opaque_user_data(w->wsi, NULL);
		lws_set_timeout(w->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC); /* closes fd */
	} else if (w->fd >= 0) {
		close(w->fd);
	}
	session_unref(w->s);
	free(w);
}

static void arm_done(void *arg)
{
	struct arm_job *j = arg;
	struct fswatch *w = j->w;
	int ok = j->ok;
	free(j);
	w->arming = 0;
	struct session *s = w->s;
	if (w->dead || !ok || !s->d->vh) {
		if (!w->dead && s->fsw[w->root] == w)
			s->fsw[w->root] = NULL;
		if (!ok && !w->dead)
			log_debug("session %s: no watch on %s now (asleep?)", s->id, root_path[w->root]);
		fsw_free(w);
		return;
	}
	lws_adopt_desc_t ad = {.vh = s->d->vh, .type = LWS_ADOPT_RAW_FILE_DESC, .fd.filefd = w->fd,
			       .vh_prot_name = "cortex-fswatch", .opaque = w};
	w->wsi = lws_adopt_descriptor_vhost_via_info(&ad);
	w->fd = lws_get_socket_fd(w->wsi);
	if (!w->wsi) { /* it closed the fd */
		w->fd = -1;
		s->fsw[w->root] = NULL;
		fsw_free(w);
		return;
	}
	if (w->ndirs >= s->d->cfg.files_max_watches)
		log_warn("session %s: watching %s: files.max_watches (%u) reached, deeper dirs are not watched",
			 s->id, root_path[w->root], s->d->cfg.files_max_watches);
	send_state(w, "watching", NULL);
}

static int wanted(struct session *s, int root)
{
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (c->watch & (1u << root))
			return 1;
	return 0;
}

static void arm(struct session *s, int root)
{
	if (s->fsw[root] || !s->lc.sb || s->deleted)
		return; /* already, or asleep: fswatch_session_up sets it */
	struct fswatch *w = calloc(1, sizeof *w);
	struct arm_job *j = calloc(1, sizeof *j);
	if (!w || !j) {
		free(w);
		free(j);
		return;
	}
	w->s = s;
	s->refs++;
	w->root = root;
	w->fd = w->rootfd = -1;
	w->arming = 1;
	s->fsw[root] = w;
	j->w = w;
	j->max = s->d->cfg.files_max_watches;
	snprintf(j->dir, sizeof j->dir, "%s", s->dir);
	work_submit(arm_run, arm_done, j);
}

static void disarm(struct session *s, int root, const char *why)
{
	struct fswatch *w = s->fsw[root];
	if (!w)
		return;
	s->fsw[root] = NULL;
	if (why)
		send_obj(s, root,
			 json_pack("{s:s,s:s,s:s,s:s}", "type", "cortex.fs", "event", "unwatched", "path",
				   root_path[root], "reason", why),
			 NULL);
	if (w->arming)
		w->dead = 1; /* arm_done frees it */
	else
		fsw_free(w);
}

void fswatch_client_watch(struct session *s, struct client *c, const char *path, int on)
{
	int root = !strcmp(path, "/workspace") ? 0 : !strcmp(path, "/home/agent") ? 1 : -1;
	if (root < 0) {
		fanout_error(s, c, "bad_frame", "\"watch\" path must be \"/workspace\" or \"/home/agent\" (watches are recursive)");
		return;
	}
	if (!on) {
		c->watch &= ~(1u << root);
		if (!wanted(s, root))
			disarm(s, root, NULL);
		return;
	}
	c->watch |= 1u << root;
	struct fswatch *w = s->fsw[root];
	if (w && !w->arming)
		send_state(w, "watching", c);
	else
		arm(s, root);
}

void fswatch_client_left(struct session *s, struct client *c)
{
	c->watch = 0;
	for (int r = 0; r < 2; r++)
		if (s->fsw[r] && !wanted(s, r))
			disarm(s, r, NULL);
}

void fswatch_session_up(struct session *s)
{
	for (int r = 0; r < 2; r++)
		if (wanted(s, r))
			arm(s, r);
}

void fswatch_session_down(struct session *s, const char *why)
{
	for (int r = 0; r < 2; r++)
		disarm(s, r, why);
}

int fswatch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user, (void)in, (void)len;
	struct fswatch *w = lws_get_opaque_user_data(wsi);
	if (reason == LWS_CALLBACK_RAW_RX_FILE && w)
		on_readable(w);
	else if (reason == LWS_CALLBACK_RAW_CLOSE_FILE && w) {
		w->wsi = NULL; /* lws closed the fd */
		w->fd = -1;
	}
	return 0;
}
