/* npmcache.c — the public front of the npm cache (npmcache.h): init and
 * shutdown, lookups, installs queued or running and their report back on the
 * service thread.  How the files of cortexd/npm/ share the work, the state
 * and the layout of ROOT: npm-internal.h.
 *
 * Shutdown drops the callbacks of installs that have not finished (the
 * daemon is going away; their args may already be gone) and aborts running
 * npm processes through the stop pipe.  Call it before work_stop(): the
 * last work_drain_done() frees what the aborted installs leave behind. */
#include "npm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "metrics.h"
#include "npm_metrics.h"
#include "work.h"

struct npm_state npm_g = {.conf.stop_pipe = {-1, -1}};
unsigned npm_gen;
npmcache_stats npm_stats;
static int node_major = -1; /* from `node --version`, read once */

int npmcache_node_major(void)
{
	if (node_major < 0)
		node_major = npm_proc_node_major();
	return node_major;
}

/* ---- installs (service thread) ---- */

static struct install *find_install(const char *key)
{
	for (struct install *in = npm_g.running; in; in = in->next)
		if (!strcmp(in->key, key))
			return in;
	for (struct install *in = npm_g.queued; in; in = in->next)
		if (!strcmp(in->key, key))
			return in;
	return NULL;
}

static void install_free(struct install *in)
{
	while (in->waiters) {
		struct waiter *w = in->waiters;
		in->waiters = w->next;
		free(w);
	}
	npm_index_entry_free(in->result);
	free(in);
}

static void install_done(void *arg);

static void *install_thread(void *arg)
{
	struct install *in = arg;
	npm_install_run(in);
	work_submit(NULL, install_done, in);
	return NULL;
}

static int install_start(struct install *in, cx_err *err)
{
	int rc = pthread_create(&in->thread, NULL, install_thread, in);
	if (rc)
		return cx_err_set(err, rc, "npm install %s@%s: pthread_create", in->name,
				  in->version);
	in->next = npm_g.running;
	npm_g.running = in;
	npm_g.nrunning++;
	return 0;
}

static void call_waiters(struct install *in, const npm_pkg *pkg, int ok, const char *msg)
{
	struct waiter *w = in->waiters;
	in->waiters = NULL;
	in->waiters_tail = &in->waiters;
	while (w) {
		struct waiter *next = w->next;
		w->cb(w->arg, pkg, ok, msg);
		free(w);
		w = next;
	}
}

static void start_queued(void)
{
	while (npm_g.nrunning < NPMCACHE_PARALLEL && npm_g.queued) {
		struct install *in = npm_g.queued;
		npm_g.queued = in->next;
		if (!npm_g.queued)
			npm_g.queued_tail = &npm_g.queued;
		cx_err err = CX_ERR_INIT;
		if (install_start(in, &err) < 0) {
			log_warn("%s", err.msg);
			npm_stats.installs_failed++;
			call_waiters(in, NULL, 0, err.msg);
			install_free(in);
		}
	}
}

static void install_done(void *arg)
{
	struct install *in = arg;
	npm_stats.npm_runs += (uint64_t)in->spawned;
	if (!npm_g.initialized || in->gen != npm_gen) { /* shut down meanwhile: joined there */
		install_free(in);
		return;
	}
	pthread_join(in->thread, NULL); /* it is returning: submitting was its last act */
	for (struct install **pp = &npm_g.running; *pp; pp = &(*pp)->next)
		if (*pp == in) {
			*pp = in->next;
			break;
		}
	npm_g.nrunning--;
	struct entry *e = NULL;
	if (in->ok) {
		e = steal_pointer(&in->result);
		npm_index_add(e);
		npm_stats.installs_ok++;
	} else {
		npm_stats.installs_failed++;
	}
	start_queued();
	unsigned my_gen = npm_gen;
	call_waiters(in, e ? &e->pkg : NULL, in->ok, in->ok ? "" : in->msg);
	if (in->ok && npm_g.initialized && npm_gen == my_gen) /* a callback may have shut us down */
		npm_index_evict_over_budget(e);
	install_free(in);
}

/* ---- init and shutdown ---- */

static int mkdir_p(const char *path, mode_t mode, cx_err *err)
{
	char buf[ROOT_MAX + 1];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return cx_err_set(err, errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", buf);
	struct stat sb;
	if (lstat(buf, &sb) < 0)
		return cx_err_set(err, errno, "stat %s", buf);
	if (!S_ISDIR(sb.st_mode))
		return cx_err_set(err, ENOTDIR, "%s", buf);
	return 0;
}

/* ROOT/<name>, 0700, owned by the npm uid. */
static int npm_owned_dir(const struct npm_conf *c, const char *name, cx_err *err)
{
	char path[ROOT_MAX + 16];
	snprintf(path, sizeof path, "%s/%s", c->root, name);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", path);
	cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", path);
	if (fchown(fd, c->uid, c->gid) < 0 || fchmod(fd, 0700) < 0)
		return cx_err_set(err, errno, "chown %s to %u:%u", path, (unsigned)c->uid,
				  (unsigned)c->gid);
	return 0;
}

static void state_free(void)
{
	while (npm_g.queued) {
		struct install *in = npm_g.queued;
		npm_g.queued = in->next;
		install_free(in);
	}
	npm_index_free();
	struct npm_conf *c = &npm_g.conf;
	npm_proc_env_free(c->envp);
	free(c->path_env);
	for (int i = 0; i < 2; i++)
		if (c->stop_pipe[i] >= 0)
			close(c->stop_pipe[i]);
	memset(&npm_g, 0, sizeof npm_g);
	npm_g.conf.stop_pipe[0] = npm_g.conf.stop_pipe[1] = -1;
	npm_g.queued_tail = &npm_g.queued;
}

/* The settings of conf that come from the arguments and the environment. */
static int conf_fill(struct npm_conf *c, store *st, const char *root, const char *npm, uid_t uid,
		     gid_t gid, uint64_t budget, cx_err *err)
{
	char real[PATH_MAX];
	if (mkdir_p(root, 0755, err) < 0)
		return cx_err_wrap(err, "npm cache");
	if (!realpath(root, real))
		return cx_err_set(err, errno, "npm cache: %s", root);
	if (strlen(real) > ROOT_MAX)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: %s too long", real);
	snprintf(c->root, sizeof c->root, "%s", real);
	snprintf(c->npm, sizeof c->npm, "%s", npm);
	c->st = st;
	c->uid = uid;
	c->gid = gid;
	c->drop_ids = uid != geteuid() || gid != getegid();
	c->budget = budget;
	const char *path = getenv("PATH");
	c->path_env = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	if (!c->path_env)
		return cx_err_set(err, ENOMEM, "npm cache");
	return 0;
}

int npmcache_init(store *st, const char *root, const char *npm, uid_t uid, gid_t gid,
		  uint64_t budget, cx_err *err)
{
	if (npm_g.initialized)
		return cx_err_set(err, EBUSY, "npm cache: already initialized");
	if (!st || !root || !*root)
		return cx_err_set(err, EINVAL, "npm cache: no store or root");
	if (strlen(root) > ROOT_MAX)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: root longer than %d bytes",
				  ROOT_MAX);
	if (!npm || !*npm)
		npm = "npm";
	if (strlen(npm) >= sizeof npm_g.conf.npm)
		return cx_err_set(err, ENAMETOOLONG, "npm cache: npm path too long");
	state_free();
	struct npm_conf *c = &npm_g.conf;
	if (conf_fill(c, st, root, npm, uid, gid, budget, err) < 0) {
		state_free();
		return -1;
	}
	npmcache_node_major();
	int rc = npm_owned_dir(c, ".npm", err);
	if (rc == 0)
		rc = npm_owned_dir(c, ".home", err);
	if (rc == 0)
		rc = npm_proc_env(c, &c->envp, err);
	if (rc == 0 && pipe2(c->stop_pipe, O_CLOEXEC) < 0)
		rc = cx_err_set(err, errno, "pipe");
	if (rc == 0)
		rc = npm_index_load(err);
	if (rc < 0) {
		state_free();
		return cx_err_wrap(err, "npm cache %s", root);
	}
	npm_gen++;
	npm_g.initialized = 1;
	metrics_register("npm", npm_metrics_write, NULL);
	size_t count = 0;
	for (struct entry *e = npm_g.pkgs; e; e = e->next)
		count++;
	log_info("npm cache: %s, %zu packages, %llu bytes, node %d", c->root, count,
		 (unsigned long long)npm_g.bytes, node_major);
	return 0;
}

void npmcache_shutdown(void)
{
	if (!npm_g.initialized)
		return;
	/* Running installs kill their npm and finish; what they submit is freed
	 * by install_done when it sees the cache gone. */
	(void)!write(npm_g.conf.stop_pipe[1], "x", 1);
	npm_g.initialized = 0;
	for (struct install *in = npm_g.running, *next; in; in = next) {
		next = in->next;
		pthread_join(in->thread, NULL);
	}
	npm_g.running = NULL;
	state_free();
}

/* ---- lookups ---- */

const npm_pkg *npmcache_lookup(const char *spec)
{
	char name[NPM_NAME_MAX + 1], version[NPM_VERSION_MAX + 1], why[256], key[65];
	if (!npm_g.initialized || npm_spec_parse(spec, name, version, why, sizeof why) < 0)
		return NULL;
	npm_index_key(name, version, node_major, key);
	struct entry *e = npm_index_find(key);
	return e ? &e->pkg : NULL;
}

/* A new install of name@version for key, waited on by w (may be NULL): started or queued. */
static int install_new(const char *spec, const char *name, const char *version, const char *key,
		       struct waiter *w, cx_err *err)
{
	struct install *in = calloc(1, sizeof *in);
	if (!in) {
		free(w);
		return cx_err_set(err, ENOMEM, "npm install %s", spec);
	}
	memcpy(in->key, key, sizeof in->key);
	snprintf(in->name, sizeof in->name, "%s", name);
	snprintf(in->version, sizeof in->version, "%s", version);
	in->node_major = node_major;
	in->gen = npm_gen;
	in->conf = &npm_g.conf;
	in->waiters = w;
	in->waiters_tail = w ? &w->next : &in->waiters;
	if (npm_g.nrunning < NPMCACHE_PARALLEL) {
		if (install_start(in, err) < 0) {
			install_free(in);
			return -1;
		}
	} else {
		*npm_g.queued_tail = in;
		npm_g.queued_tail = &in->next;
	}
	return 0;
}

int npmcache_ensure(const char *spec, npm_ready_fn cb, void *arg, const npm_pkg **out, cx_err *err)
{
	if (out)
		*out = NULL;
	if (!npm_g.initialized)
		return cx_err_set(err, EINVAL, "npm cache not initialized");
	char name[NPM_NAME_MAX + 1], version[NPM_VERSION_MAX + 1], why[256], key[65];
	if (npm_spec_parse(spec, name, version, why, sizeof why) < 0)
		return cx_err_set(err, EINVAL, "%s", why);
	npm_index_key(name, version, node_major, key);
	struct entry *e = npm_index_find(key);
	if (e) {
		npm_stats.hits++;
		if (out)
			*out = &e->pkg;
		return 1;
	}
	struct waiter *w = NULL;
	if (cb) {
		w = calloc(1, sizeof *w);
		if (!w)
			return cx_err_set(err, ENOMEM, "npm install %s", spec);
		w->cb = cb;
		w->arg = arg;
	}
	struct install *in = find_install(key);
	if (!in)
		return install_new(spec, name, version, key, w, err);
	npm_stats.joins++;
	if (w) {
		*in->waiters_tail = w;
		in->waiters_tail = &w->next;
	}
	return 0;
}

/* ---- pins and stats ---- */

void npmcache_pin(const char *key)
{
	struct entry *e = npm_g.initialized && key ? npm_index_find(key) : NULL;
	if (!e) {
		log_warn("npm cache: pin of unknown package %.64s", key ? key : "(null)");
		return;
	}
	e->pins++;
	e->pkg.use_count++;
	e->pkg.last_used_at = cx_wall_ms();
	npm_index_row_write_async(e);
}

void npmcache_unpin(const char *key)
{
	struct entry *e = npm_g.initialized && key ? npm_index_find(key) : NULL;
	if (!e || e->pins <= 0) {
		log_warn("npm cache: unpin of %s package %.64s", e ? "an unpinned" : "unknown",
			 key ? key : "(null)");
		return;
	}
	e->pins--;
}

void npmcache_get_stats(npmcache_stats *out)
{
	*out = npm_stats;
	out->bytes = npm_g.bytes;
}
