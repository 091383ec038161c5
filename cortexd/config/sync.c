/* sync.c — see sync.h. */
#include "sync.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static _Atomic unsigned long long st_runs, st_written, st_skipped, st_removed, st_mounts, st_failures;

void sync_get_stats(struct sync_stats *out)
{
	out->runs = st_runs;
	out->files_written = st_written;
	out->files_skipped = st_skipped;
	out->files_removed = st_removed;
	out->mounts = st_mounts;
	out->failures = st_failures;
}

int sync_is_current(const struct sync_state *st, const cconfig *c)
{
	return !strcmp(st->files_hash, c->files_hash) && !strcmp(st->pkgs_hash, c->pkgs_hash);
}

void sync_state_clear(struct sync_state *st)
{
	free(st->files);
	free(st->mounts);
	memset(st, 0, sizeof *st);
}

static const struct sync_file *state_file(const struct sync_state *st, const char *path)
{
	for (size_t i = 0; i < st->n_files; i++)
		if (!strcmp(st->files[i].path, path))
			return &st->files[i];
	return NULL;
}

static int state_has_mount(const struct sync_state *st, const char *name)
{
	for (size_t i = 0; i < st->n_mounts; i++)
		if (!strcmp(st->mounts[i].name, name))
			return 1;
	return 0;
}

/* ---- bounded parallel writes (at most write_parallel at once) ---- */

struct wjob {
	sandbox *sb;
	const struct cfile *const *todo;
	size_t n;
	_Atomic size_t next;
	int *ok;           /* per item */
	pthread_mutex_t mu;
	cx_err first_err;
	int failed;
};

static void *writer(void *arg)
{
	struct wjob *j = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->n)
			return NULL;
		const struct cfile *f = j->todo[i];
		cx_err err = CX_ERR_INIT;
		if (sandbox_write_file(j->sb, f->path, f->data, f->len, f->mode, &err) == 0) {
			j->ok[i] = 1;
			continue;
		}
		pthread_mutex_lock(&j->mu);
		if (!j->failed)
			j->first_err = err;
		j->failed = 1;
		pthread_mutex_unlock(&j->mu);
	}
}

/* Write the files in todo with at most `parallel` threads (the caller's
 * thread is one of them). */
static void write_all(sandbox *sb, const struct cfile *const *todo, size_t n, int *ok, int parallel,
		      struct wjob *j)
{
	j->sb = sb;
	j->todo = todo;
	j->n = n;
	atomic_init(&j->next, 0);
	j->ok = ok;
	pthread_mutex_init(&j->mu, NULL);
	size_t extra = n > 1 ? (size_t)(parallel > 1 ? parallel - 1 : 0) : 0;
	if (extra > n - 1)
		extra = n - 1;
	pthread_t th[16];
	size_t started = 0;
	for (size_t i = 0; i < extra && i < 16; i++)
		if (pthread_create(&th[started], NULL, writer, j) == 0)
			started++;
	writer(j);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&j->mu);
}

static int write_state_file(sandbox *sb, const struct sync_state *st, const cconfig *c, pid_t agent_pid,
			    cx_err *err)
{
	json_t *files = json_object(), *pkgs = json_object();
	for (size_t i = 0; i < st->n_files; i++)
		json_object_set_new(files, st->files[i].path, json_string(st->files[i].hash));
	for (size_t i = 0; i < c->n_pkgs; i++)
		if (c->pkgs[i].key[0])
			json_object_set_new(pkgs, c->pkgs[i].spec, json_string(c->pkgs[i].key));
	const struct sync_file *mcp = state_file(st, "/home/agent/.claude.json");
	json_t *o = json_pack("{s:i,s:o,s:o,s:s,s:s,s:s,s:i,s:I}", "version", 1, "files", files,
			      "packages", pkgs, "mcp_config", mcp ? mcp->hash : "", "files_hash",
			      st->files_hash, "packages_hash", st->pkgs_hash, "ws_agent_pid", (int)agent_pid,
			      "written_at", (json_int_t)cx_wall_ms());
	char *txt = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(o);
	if (!txt)
		return cx_err_set(err, ENOMEM, "vf-state");
	int rc = sandbox_write_file(sb, SYNC_STATE_PATH, txt, strlen(txt), 0644, err);
	free(txt);
	return rc;
}

int sync_apply(sandbox *sb, const cconfig *c, struct sync_state *st, int parallel, pid_t agent_pid,
	       struct sync_result *r)
{
	uint64_t t0 = cx_mono_us();
	memset(r, 0, sizeof *r);
	cx_err *err = &r->err;
	st_runs++;

	/* 1. Packages first: a server in the new ~/.claude.json must find its bin. */
	for (size_t i = 0; i < c->n_pkgs; i++) {
		const struct cpkg *p = &c->pkgs[i];
		if (!p->key[0] || state_has_mount(st, p->mount))
			continue;
		if (sandbox_mount_ro(sb, p->dir, p->mount, err) < 0) {
			r->rc = cx_err_wrap(err, "mount MCP package %s", p->spec);
			goto out;
		}
		struct sync_mount *nm = realloc(st->mounts, (st->n_mounts + 1) * sizeof *nm);
		if (!nm) {
			r->rc = cx_err_set(err, ENOMEM, "sync state");
			goto out;
		}
		st->mounts = nm;
		snprintf(nm[st->n_mounts].name, sizeof nm->name, "%s", p->mount);
		snprintf(nm[st->n_mounts].key, sizeof nm->key, "%s", p->key);
		st->n_mounts++;
		if (r->n_new_keys < 16)
			snprintf(r->new_keys[r->n_new_keys++], 65, "%s", p->key);
		r->mounted++;
		st_mounts++;
	}

	/* 2. Files whose hash moved, in parallel. */
	const struct cfile **todo = calloc(c->n_files ? c->n_files : 1, sizeof *todo);
	int *ok = calloc(c->n_files ? c->n_files : 1, sizeof *ok);
	struct sync_file *nf = calloc(c->n_files ? c->n_files : 1, sizeof *nf);
	size_t n_todo = 0, n_nf = 0;
	if (!todo || !ok || !nf) {
		free(todo);
		free(ok);
		free(nf);
		r->rc = cx_err_set(err, ENOMEM, "sync");
		goto out;
	}
	for (size_t i = 0; i < c->n_files; i++) {
		const struct sync_file *old = state_file(st, c->files[i].path);
		if (old && !strcmp(old->hash, c->files[i].hash)) {
			nf[n_nf++] = *old;
			r->skipped++;
			continue;
		}
		todo[n_todo++] = &c->files[i];
	}
	struct wjob j;
	memset(&j, 0, sizeof j);
	if (n_todo)
		write_all(sb, todo, n_todo, ok, parallel, &j);
	for (size_t i = 0; i < n_todo; i++) {
		if (!ok[i])
			continue;
		snprintf(nf[n_nf].path, sizeof nf->path, "%s", todo[i]->path);
		snprintf(nf[n_nf].hash, sizeof nf->hash, "%s", todo[i]->hash);
		n_nf++;
		r->written++;
	}
	/* 3. Files an earlier config wrote and this one does not (a deleted
	 * secret file, plugin, CLAUDE.md).  A failed removal stays in the state. */
	int rm_failed = 0;
	for (size_t i = 0; i < st->n_files; i++) {
		int still = 0;
		for (size_t k = 0; k < c->n_files && !still; k++)
			still = !strcmp(c->files[k].path, st->files[i].path);
		if (still)
			continue;
		cx_err e2 = CX_ERR_INIT;
		if (sandbox_remove_file(sb, st->files[i].path, &e2) == 0) {
			r->removed++;
			continue;
		}
		log_warn("sync: %s", e2.msg);
		rm_failed = 1;
		struct sync_file *grown = realloc(nf, (n_nf + 1) * sizeof *nf);
		if (grown) {
			nf = grown;
			nf[n_nf++] = st->files[i];
		}
	}
	free(st->files);
	st->files = nf;
	st->n_files = n_nf;
	free(todo);
	free(ok);
	st_written += r->written;
	st_skipped += r->skipped;
	st_removed += r->removed;
	if (j.failed) {
		*err = j.first_err;
		r->rc = -1;
		goto out;
	}
	/* Only a complete run makes the state current. */
	if (!rm_failed) {
		snprintf(st->files_hash, sizeof st->files_hash, "%s", c->files_hash);
		snprintf(st->pkgs_hash, sizeof st->pkgs_hash, "%s", c->pkgs_hash);
	}
	if (write_state_file(sb, st, c, agent_pid, err) < 0)
		r->rc = cx_err_wrap(err, "write " SYNC_STATE_PATH);
out:
	if (r->rc < 0) {
		st_failures++;
		st->files_hash[0] = '\0';
	}
	r->ms = (double)(cx_mono_us() - t0) / 1000.0;
	return r->rc;
}

int sync_state_copy(struct sync_state *dst, const struct sync_state *src)
{
	memset(dst, 0, sizeof *dst);
	if (src->n_files && !(dst->files = malloc(src->n_files * sizeof *dst->files)))
		return -1;
	if (src->n_mounts && !(dst->mounts = malloc(src->n_mounts * sizeof *dst->mounts))) {
		free(dst->files);
		dst->files = NULL;
		return -1;
	}
	if (src->n_files)
		memcpy(dst->files, src->files, src->n_files * sizeof *dst->files);
	if (src->n_mounts)
		memcpy(dst->mounts, src->mounts, src->n_mounts * sizeof *dst->mounts);
	dst->n_files = src->n_files;
	dst->n_mounts = src->n_mounts;
	memcpy(dst->files_hash, src->files_hash, sizeof dst->files_hash);
	memcpy(dst->pkgs_hash, src->pkgs_hash, sizeof dst->pkgs_hash);
	return 0;
}
