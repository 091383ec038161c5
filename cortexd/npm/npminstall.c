/* npminstall.c — one install, on its own thread: npm into ROOT/.tmp-<key>-<r>,
 * then the package.json read, the files chowned to the daemon and counted,
 * the dir renamed to ROOT/<key> and its row written.  Touches only its
 * struct install, the npm_conf and the store. */
#include "npm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "pkgjson.h"

/* Reads rel under dfd, without following links, into *out (at most PKGJSON_MAX bytes). */
static int read_capped(int dfd, const char *rel, char **out, size_t *len, cx_err *err)
{
	struct open_how how = {
	    .flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	cleanup_close int fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
	if (fd < 0)
		return cx_err_set(err, errno, "npm left no %s", rel);
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return cx_err_set(err, errno, "stat %s", rel);
	if (!S_ISREG(sb.st_mode) || sb.st_size > PKGJSON_MAX)
		return cx_err_set(err, 0, "%s: not a regular file of at most %d bytes", rel,
				  PKGJSON_MAX);
	size_t cap = (size_t)sb.st_size + 1; /* one more: a file that grew is refused */
	cleanup_free char *buf = malloc(cap);
	if (!buf)
		return cx_err_set(err, ENOMEM, "reading %s", rel);
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cx_err_set(err, errno, "read %s", rel);
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap)
			return cx_err_set(err, 0, "%s changed while read", rel);
	}
	*out = steal_pointer(&buf);
	*len = n;
	return 0;
}

/* The installed package's package.json. */
static int read_package_json(const char *tmp, const char *name, pkgjson *out, cx_err *err)
{
	cleanup_close int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return cx_err_set(err, errno, "open %s", tmp);
	char rel[NPM_NAME_MAX + 64];
	snprintf(rel, sizeof rel, "node_modules/%s/package.json", name);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (read_capped(dfd, rel, &buf, &len, err) < 0)
		return -1;
	if (pkgjson_parse(buf, len, out, err) < 0)
		return cx_err_wrap(err, "%s", rel);
	return 0;
}

/* Walk of the installed tree: bytes on disk, and ownership taken from the npm
 * uid.  nftw has no user pointer; these are per install thread. */
static __thread uint64_t walk_bytes;
static __thread int walk_chown, walk_errno;

static int walk_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_NS || flag == FTW_DNR) {
		walk_errno = EACCES;
		return -1;
	}
	walk_bytes += (uint64_t)sb->st_blocks * 512u;
	if (walk_chown && lchown(p, geteuid(), getegid()) < 0) {
		walk_errno = errno;
		return -1;
	}
	return 0;
}

static int walk_tree(const char *dir, int chown_it, uint64_t *bytes, cx_err *err)
{
	walk_bytes = 0;
	walk_errno = 0;
	walk_chown = chown_it;
	/* pre-order: a directory changes owner before we look inside it */
	if (nftw(dir, walk_one, 16, FTW_PHYS | FTW_MOUNT) != 0)
		return cx_err_set(err, walk_errno ? walk_errno : errno, "walking %s", dir);
	*bytes = walk_bytes;
	return 0;
}

/* Move tmp to ROOT/<key>.  A dir already under that name is not in the
 * table (else we would not be installing): a leftover, set aside. */
static int move_into_place(const struct npm_conf *c, const char *tmp, const char *dir,
			   const char *key, cx_err *err)
{
	if (rename(tmp, dir) == 0)
		return 0;
	if (errno != EEXIST && errno != ENOTEMPTY)
		return cx_err_set(err, errno, "rename %s to %s", tmp, dir);
	log_warn("npm cache: %s exists without a row; replacing it", dir);
	if (npm_index_retire_dir(c->root, dir, key, 1, err) < 0)
		return -1;
	if (rename(tmp, dir) < 0)
		return cx_err_set(err, errno, "rename %s to %s", tmp, dir);
	return 0;
}

/* npm install into tmp, which it must leave with an exit status of 0. */
static int run_npm(struct install *in, const char *tmp, cx_err *err)
{
	const struct npm_conf *c = in->conf;
	if (chown(tmp, c->uid, c->gid) < 0)
		return cx_err_set(err, errno, "chown %s", tmp);
	char spec[NPM_NAME_MAX + NPM_VERSION_MAX + 2];
	snprintf(spec, sizeof spec, "%s@%s", in->name, in->version);
	struct npm_tail tail = {.len = 0};
	int status = 0;
	if (npm_proc_install(c, spec, tmp, &tail, &status, &in->spawned, err) < 0) {
		cx_err_wrap(err, "npm install %s", spec);
		if (tail.len) /* the caller's cx_err holds 512 bytes; in->msg the whole tail */
			snprintf(in->msg, sizeof in->msg, "%s; output: %s", err->msg,
				 npm_proc_tail_text(&tail));
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		char how[48];
		if (WIFEXITED(status))
			snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
		else
			snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
		snprintf(in->msg, sizeof in->msg, "npm install %s failed (%s): %s", spec, how,
			 tail.len ? npm_proc_tail_text(&tail) : "no output");
		return cx_err_set(err, 0, "%s", in->msg);
	}
	return 0;
}

/* The entry for what npm left in tmp, from its package.json: in->result. */
static int make_entry(struct install *in, const char *tmp, cx_err *err)
{
	pkgjson pj;
	if (read_package_json(tmp, in->name, &pj, err) < 0)
		return cx_err_wrap(err, "npm install %s@%s", in->name, in->version);
	if (strcmp(pj.name, in->name)) {
		cx_err_set(err, 0, "npm install %s@%s: package.json names \"%.100s\"", in->name,
			   in->version, pj.name);
		pkgjson_free(&pj);
		return -1;
	}
	size_t i;
	json_t *v;
	json_array_foreach(pj.ignored, i, v)
	{
		log_warn("npm: %s: ignoring bin \"%.100s\"", in->name, json_string_value(v));
	}
	struct entry *e = calloc(1, sizeof *e);
	if (!e) {
		pkgjson_free(&pj);
		return cx_err_set(err, ENOMEM, "npm install");
	}
	e->bins = steal_pointer(&pj.bins);
	npm_pkg *p = &e->pkg;
	memcpy(p->key, in->key, sizeof p->key);
	snprintf(p->name, sizeof p->name, "%s", in->name);
	snprintf(p->version, sizeof p->version, "%s", in->version);
	snprintf(p->dir, sizeof p->dir, "%s/%s", in->conf->root, in->key);
	snprintf(p->bin, sizeof p->bin, "%s", pj.main_bin);
	p->last_used_at = cx_wall_ms();
	e->node_major = in->node_major;
	in->result = e; /* freed with in on failure */
	pkgjson_free(&pj);
	return 0;
}

static int install_into(struct install *in, const char *tmp, cx_err *err)
{
	const struct npm_conf *c = in->conf;
	if (run_npm(in, tmp, err) < 0 || make_entry(in, tmp, err) < 0)
		return -1;
	npm_pkg *p = &in->result->pkg;
	if (walk_tree(tmp, c->drop_ids, &p->bytes, err) < 0)
		return -1;
	cleanup_close int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || syncfs(dfd) < 0)
		return cx_err_set(err, errno, "sync %s", tmp);
	if (move_into_place(c, tmp, p->dir, in->key, err) < 0)
		return -1;
	cleanup_close int rfd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd >= 0)
		(void)fsync(rfd);
	if (npm_index_row_put(c->st, in->result, err) < 0) {
		cx_err tmp_err = CX_ERR_INIT;
		if (npm_index_retire_dir(c->root, p->dir, in->key, 1, &tmp_err) < 0)
			log_warn("npm cache: %s", tmp_err.msg);
		return cx_err_wrap(err, "npm cache: recording %s@%s", in->name, in->version);
	}
	return 0;
}

void npm_install_run(struct install *in)
{
	cx_err err = CX_ERR_INIT;
	uint64_t t0 = cx_mono_ms();
	log_info("npm: installing %s@%s", in->name, in->version);
	char rnd[17], tmp[ROOT_MAX + 100];
	cx_random_hex(rnd, 8);
	snprintf(tmp, sizeof tmp, "%s/.tmp-%s-%s", in->conf->root, in->key, rnd);
	if (mkdir(tmp, 0755) < 0) {
		cx_err_set(&err, errno, "npm install %s@%s: mkdir %s", in->name, in->version, tmp);
	} else if (install_into(in, tmp, &err) == 0) {
		in->ok = 1;
	} else if (cx_rm_rf(tmp) < 0) {
		log_warn("npm cache: removing %s: %s", tmp, strerror(errno));
	}
	if (in->ok) {
		log_info("npm: installed %s@%s in %llu ms, %llu bytes", in->name, in->version,
			 (unsigned long long)(cx_mono_ms() - t0),
			 (unsigned long long)in->result->pkg.bytes);
		return;
	}
	if (!in->msg[0])
		snprintf(in->msg, sizeof in->msg, "%s", err.msg);
	char line[sizeof in->msg]; /* logs are one line each */
	snprintf(line, sizeof line, "%s", in->msg);
	for (char *ch = line; *ch; ch++)
		if (*ch == '\n' || *ch == '\r')
			*ch = '|';
	log_warn("%s", line);
}
