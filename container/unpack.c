/* unpack.c — layer and image-tar extraction with libarchive; see unpack.h.
 *
 * Every entry is checked here before archive_write_disk sees it: the path is
 * normalised (no absolute, no ".."), no directory on its way may be a symlink
 * of the layer (checked with fstatat from the layer's root fd, the last good
 * parent cached), then rewritten to dest/<path> — archive_write_disk works on
 * paths relative to the process cwd, which a threaded daemon never changes.
 * ARCHIVE_EXTRACT_SECURE_SYMLINKS|SECURE_NODOTDOT stay on behind these checks. */
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#define UNPACK_BUF	(256u << 10)
#define UNPACK_PATH_MAX PATH_MAX

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
	setlocale(LC_ALL, "C.UTF-8"); /* libarchive converts entry names with it */
	if (sodium_init() < 0)
		abort(); /* no usable randomness source: nothing works */
}

void unpack_init(void)
{
	pthread_once(&g_once, init_once);
}

/* ---- the blob, hashed as libarchive reads it ----
 * libsodium's sha256 is portable C (~150 MB/s), as slow as the extraction
 * itself: a thread hashes chunk i while libarchive extracts it.  Chunks go
 * round SRC_SLOTS buffers; slot i % SRC_SLOTS is read into again only once
 * the hasher is past chunk i - SRC_SLOTS (libarchive let go of it at the read
 * after it). */

#define SRC_SLOTS 4

struct src {
	int fd;
	bool eof;
	uint64_t n;		    /* bytes read */
	crypto_hash_sha256_state h; /* the hasher's alone while it runs */
	unsigned char *buf;	    /* SRC_SLOTS * UNPACK_BUF */
	size_t len[SRC_SLOTS];
	bool threaded;
	/* under mu: chunks [hashed, produced) wait for the hasher */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t produced, hashed;
	bool quit;
	pthread_t thr;
};

static void *src_hasher(void *arg)
{
	struct src *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->hashed == s->produced && !s->quit)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->hashed == s->produced)
			break; /* told to quit, all hashed */
		size_t k = s->hashed % SRC_SLOTS, len = s->len[k];
		pthread_mutex_unlock(&s->mu);
		crypto_hash_sha256_update(&s->h, s->buf + k * UNPACK_BUF, len);
		pthread_mutex_lock(&s->mu);
		s->hashed++;
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static int src_start(struct src *s, int fd, bool threaded)
{
	memset(s, 0, sizeof *s);
	s->fd = fd;
	if (!(s->buf = malloc(SRC_SLOTS * UNPACK_BUF)))
		return -1;
	crypto_hash_sha256_init(&s->h);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->threaded = threaded && pthread_create(&s->thr, NULL, src_hasher, s) == 0;
	return 0;
}

/* Stop the hasher (after the chunks it has), the digest into bin. */
static void src_finish(struct src *s, unsigned char bin[crypto_hash_sha256_BYTES])
{
	if (s->threaded) {
		pthread_mutex_lock(&s->mu);
		s->quit = true;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thr, NULL);
		s->threaded = false;
	}
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	crypto_hash_sha256_final(&s->h, bin);
	free(s->buf);
	s->buf = NULL;
}

/* Read the next chunk into *chunk; bytes read, 0 at the end, -1 (errno). */
static ssize_t src_fill(struct src *s, unsigned char **chunk)
{
	size_t k = s->produced % SRC_SLOTS;
	if (s->threaded) {
		pthread_mutex_lock(&s->mu);
		while (s->hashed + SRC_SLOTS <= s->produced)
			pthread_cond_wait(&s->cv, &s->mu);
		pthread_mutex_unlock(&s->mu);
	}
	unsigned char *b = s->buf + k * UNPACK_BUF;
	ssize_t r;
	do
		r = read(s->fd, b, UNPACK_BUF);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		s->eof = true;
	if (r > 0) {
		s->n += (uint64_t)r;
		if (s->threaded) {
			pthread_mutex_lock(&s->mu);
			s->len[k] = (size_t)r;
			s->produced++;
			pthread_cond_broadcast(&s->cv);
			pthread_mutex_unlock(&s->mu);
		} else {
			crypto_hash_sha256_update(&s->h, b, (unsigned long long)r);
			s->produced++;
		}
	}
	*chunk = b;
	return r;
}

static la_ssize_t src_read(struct archive *a, void *arg, const void **out)
{
	struct src *s = arg;
	unsigned char *chunk;
	ssize_t r = src_fill(s, &chunk);
	if (r < 0) {
		archive_set_error(a, errno, "read");
		return -1;
	}
	*out = chunk;
	return r;
}

static void hex_of(const unsigned char bin[crypto_hash_sha256_BYTES], char hex[65])
{
	sodium_bin2hex(hex, 65, bin, crypto_hash_sha256_BYTES);
}

int unpack_sha256_fd(int fd, char hex[65], uint64_t *size, cx_err *err)
{
	unpack_init();
	struct src s;
	unsigned char *chunk, bin[crypto_hash_sha256_BYTES];
	if (src_start(&s, fd, false) < 0)
		return cx_err_set(err, ENOMEM, "sha256");
	int rc = 0;
	while (rc == 0 && !s.eof)
		if (src_fill(&s, &chunk) < 0)
			rc = cx_err_set(err, errno, "sha256: read");
	src_finish(&s, bin);
	hex_of(bin, hex);
	if (size)
		*size = s.n;
	return rc;
}

/* ---- entry checks ---- */

struct ctx {
	bool stage;	  /* image tar staging: no whiteouts, only dirs/files/symlinks */
	const char *dest; /* not owned */
	int root_fd;
	uint64_t cap;
	struct unpack_stats *st;	 /* not owned */
	char ok_parent[UNPACK_PATH_MAX]; /* last parent found free of symlinks */
	bool ok_valid;
	char abs[UNPACK_PATH_MAX + 64];
	char abs_link[UNPACK_PATH_MAX + 64];
};

/* "a/./b//c" -> "a/b/c"; "./" -> "".  Absolute paths and ".." are refused. */
static int norm_path(const char *in, char *out, size_t cap, const char **why)
{
	if (!in) {
		*why = "no path";
		return -1;
	}
	if (in[0] == '/') {
		*why = "absolute path";
		return -1;
	}
	size_t o = 0;
	for (const char *p = in; *p;) {
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*why = "\"..\" in path";
			return -1;
		}
		if (n && !(n == 1 && p[0] == '.')) {
			if (o + n + 2 > cap) {
				*why = "path too long";
				return -1;
			}
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = *e ? e + 1 : e;
	}
	out[o] = '\0';
	return 0;
}

/* Is a directory on the way to rel[0..plen) a symlink inside the layer? */
static bool below_symlink(struct ctx *c, const char *rel, size_t plen)
{
	if (plen == 0)
		return false;
	if (c->ok_valid && strlen(c->ok_parent) == plen && !memcmp(c->ok_parent, rel, plen))
		return false;
	char tmp[UNPACK_PATH_MAX];
	memcpy(tmp, rel, plen);
	tmp[plen] = '\0';
	for (char *s = tmp;;) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		struct stat sb;
		if (fstatat(c->root_fd, tmp, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			break; /* missing: made as a directory when needed */
		if (S_ISLNK(sb.st_mode))
			return true;
		if (!slash)
			break;
		*slash = '/';
		s = slash + 1;
	}
	memcpy(c->ok_parent, rel, plen);
	c->ok_parent[plen] = '\0';
	c->ok_valid = true;
	return false;
}

static int abs_path(struct ctx *c, char *out, size_t cap, const char *rel, const char *name,
		    cx_err *err)
{
	int n =
	    *rel ? snprintf(out, cap, "%s/%s", c->dest, rel) : snprintf(out, cap, "%s", c->dest);
	if (n < 0 || (size_t)n >= cap)
		return cx_err_set(err, ENAMETOOLONG, "entry \"%s\"", name);
	return 0;
}

static int ar_fail(struct archive *a, cx_err *err, const char *what, const char *name)
{
	int e = archive_errno(a);
	const char *s = archive_error_string(a);
	return cx_err_set(err, e > 0 ? e : EIO, "%s \"%s\": %s", what, name ? name : "",
			  s ? s : "libarchive error");
}

/* mkdir -p rel (already checked) below the layer root, 0755. */
static int mkdirs_at(struct ctx *c, const char *rel, cx_err *err)
{
	char tmp[UNPACK_PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", rel);
	for (char *s = tmp; *s;) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		if (mkdirat(c->root_fd, tmp, 0755) < 0 && errno != EEXIST)
			return cx_err_set(err, errno, "mkdir %s", tmp);
		if (!slash)
			break;
		*slash = '/';
		s = slash + 1;
	}
	return 0;
}

/* `.wh..wh..opq` or `.wh.<name>` at rel (parent length plen, base name base). */
static int whiteout(struct ctx *c, struct archive *aw, struct archive_entry *e, const char *rel,
		    size_t plen, const char *base, const char *name, cx_err *err)
{
	char parent[UNPACK_PATH_MAX];
	memcpy(parent, rel, plen);
	parent[plen] = '\0';
	if (!strcmp(base, ".wh..wh..opq")) {
		if (*parent && mkdirs_at(c, parent, err) < 0)
			return cx_err_wrap(err, "opaque marker \"%s\"", name);
		cleanup_close int fd = openat(c->root_fd, *parent ? parent : ".",
					      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
			return cx_err_set(err, errno, "opaque marker \"%s\"", name);
		c->st->whiteouts++;
		return 0;
	}
	if (!strncmp(base, ".wh..wh.", 8)) { /* aufs bookkeeping (.wh..wh.plnk ...) */
		c->st->skipped++;
		return 0;
	}
	const char *victim = base + 4;
	if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
		return cx_err_set(err, EPERM, "layer entry \"%s\": bad whiteout", name);
	char wrel[UNPACK_PATH_MAX];
	int n = *parent ? snprintf(wrel, sizeof wrel, "%s/%s", parent, victim)
			: snprintf(wrel, sizeof wrel, "%s", victim);
	if (n < 0 || (size_t)n >= sizeof wrel)
		return cx_err_set(err, ENAMETOOLONG, "layer entry \"%s\"", name);
	if (abs_path(c, c->abs, sizeof c->abs, wrel, name, err) < 0)
		return -1;
	struct archive_entry *w = archive_entry_new();
	if (!w)
		return cx_err_set(err, ENOMEM, "whiteout");
	archive_entry_set_pathname(w, c->abs);
	archive_entry_set_filetype(w, AE_IFCHR);
	archive_entry_set_perm(w, 0);
	archive_entry_set_rdev(w, 0);
	archive_entry_set_uid(w, 0);
	archive_entry_set_gid(w, 0);
	archive_entry_set_mtime(w, archive_entry_mtime(e), archive_entry_mtime_nsec(e));
	int r = archive_write_header(aw, w);
	if (r >= ARCHIVE_WARN)
		r = archive_write_finish_entry(aw);
	archive_entry_free(w);
	if (r < ARCHIVE_WARN)
		return ar_fail(aw, err, "whiteout", name);
	c->st->whiteouts++;
	c->st->entries++;
	return 0;
}

/* Drop xattrs of the trusted.* namespace (overlay's own: opaque, redirect,
 * metacopy — a layer must not set them itself). */
static int filter_xattrs(struct archive_entry *e, cx_err *err)
{
	int n = archive_entry_xattr_reset(e);
	if (n <= 0)
		return 0;
	const char *xn;
	const void *xv;
	size_t xs;
	bool drop = false;
	while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK)
		drop |= !strncmp(xn, "trusted.", 8);
	if (!drop)
		return 0;
	/* Copy the kept ones out, clear, add them back. */
	struct kept {
		char *name;
		void *val;
		size_t size;
	};
	cleanup_free struct kept *k = calloc((size_t)n, sizeof *k);
	if (!k)
		return cx_err_set(err, ENOMEM, "xattrs");
	int nk = 0, rc = 0;
	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK && nk < n) {
		if (!strncmp(xn, "trusted.", 8))
			continue;
		k[nk].name = strdup(xn);
		k[nk].val = malloc(xs ? xs : 1);
		k[nk].size = xs;
		if (!k[nk].name || !k[nk].val) {
			rc = cx_err_set(err, ENOMEM, "xattrs");
			nk++;
			break;
		}
		memcpy(k[nk++].val, xv, xs);
	}
	if (rc == 0) {
		archive_entry_xattr_clear(e);
		for (int i = 0; i < nk; i++)
			archive_entry_xattr_add_entry(e, k[i].name, k[i].val, k[i].size);
	}
	for (int i = 0; i < nk; i++) {
		free(k[i].name);
		free(k[i].val);
	}
	return rc;
}

static int copy_data(struct ctx *c, struct archive *ar, struct archive *aw, const char *name,
		     cx_err *err)
{
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(ar, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN)
			return ar_fail(ar, err, "reading", name);
		c->st->bytes += size;
		if (c->cap && c->st->bytes > c->cap)
			return cx_err_set(err, EFBIG, "more than %llu bytes unpacked at \"%s\"",
					  (unsigned long long)c->cap, name);
		if (archive_write_data_block(aw, buf, size, off) < ARCHIVE_WARN)
			return ar_fail(aw, err, "writing", name);
	}
}

static int entry(struct ctx *c, struct archive *ar, struct archive *aw, struct archive_entry *e,
		 cx_err *err)
{
	const char *name = archive_entry_pathname(e);
	const char *why;
	char rel[UNPACK_PATH_MAX];
	if (norm_path(name, rel, sizeof rel, &why) < 0)
		return cx_err_set(err, EPERM, "layer entry \"%s\": %s", name ? name : "", why);
	const char *slash = strrchr(rel, '/');
	const char *base = slash ? slash + 1 : rel;
	size_t plen = slash ? (size_t)(slash - rel) : 0;
	if (below_symlink(c, rel, plen))
		return cx_err_set(err, EPERM, "layer entry \"%s\": below a symlink", name);
	mode_t type = archive_entry_filetype(e);
	const char *hl = archive_entry_hardlink(e);
	if (c->stage && (hl || (type != AE_IFDIR && type != AE_IFREG && type != AE_IFLNK))) {
		c->st->skipped++;
		return 0;
	}
	if (!hl &&
	    (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFIFO || type == AE_IFSOCK)) {
		c->st->skipped++;
		return 0;
	}
	if (!*rel && (hl || type != AE_IFDIR))
		return cx_err_set(err, EPERM, "layer entry \"%s\": the root is not a directory",
				  name);
	if (!c->stage && !strncmp(base, ".wh.", 4))
		return whiteout(c, aw, e, rel, plen, base, name, err);
	if (hl) {
		char lrel[UNPACK_PATH_MAX];
		struct stat sb;
		const char *ls = NULL;
		if (norm_path(hl, lrel, sizeof lrel, &why) < 0)
			return cx_err_set(err, EPERM, "layer entry \"%s\": hardlink to \"%s\": %s",
					  name, hl, why);
		ls = strrchr(lrel, '/');
		if (below_symlink(c, lrel, ls ? (size_t)(ls - lrel) : 0) ||
		    fstatat(c->root_fd, *lrel ? lrel : ".", &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			return cx_err_set(
			    err, EPERM, "layer entry \"%s\": hardlink to \"%s\" outside the layer",
			    name, hl);
		if (abs_path(c, c->abs_link, sizeof c->abs_link, lrel, name, err) < 0)
			return -1;
		archive_entry_set_hardlink(e, c->abs_link);
	}
	if (abs_path(c, c->abs, sizeof c->abs, rel, name, err) < 0)
		return -1;
	archive_entry_set_pathname(e, c->abs);
	name = rel; /* the old name was e's buffer, just replaced (found by fuzz_layer) */
	archive_entry_set_perm(e, archive_entry_perm(e) & ~(mode_t)06000);
	if (filter_xattrs(e, err) < 0)
		return -1;
	if (type == AE_IFLNK)
		c->ok_valid = false; /* a cached parent may now run through it */
	int r = archive_write_header(aw, e);
	if (r < ARCHIVE_WARN)
		return ar_fail(aw, err, "layer entry", name);
	if (archive_entry_size(e) > 0 && copy_data(c, ar, aw, name, err) < 0)
		return -1;
	if (archive_write_finish_entry(aw) < ARCHIVE_WARN)
		return ar_fail(aw, err, "layer entry", name);
	c->st->entries++;
	return 0;
}

/* Read every entry of ar into c->dest through archive_write_disk. */
static int extract(struct ctx *c, struct archive *ar, int flags, cx_err *err)
{
	struct archive *aw = archive_write_disk_new();
	if (!aw)
		return cx_err_set(err, ENOMEM, "archive_write_disk_new");
	archive_write_disk_set_options(aw, flags | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
					       ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	int rc = 0;
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(ar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			rc = ar_fail(ar, err, "reading tar", "");
			break;
		}
		if ((rc = entry(c, ar, aw, e, err)) < 0)
			break;
	}
	if (archive_write_close(aw) < ARCHIVE_WARN && rc == 0)
		rc = ar_fail(aw, err, "finishing", c->dest);
	archive_write_free(aw);
	return rc;
}

static struct archive *reader_new(void)
{
	struct archive *ar = archive_read_new();
	if (ar) {
		archive_read_support_format_tar(ar);
		archive_read_support_format_empty(ar);
		archive_read_support_filter_gzip(ar);
	}
	return ar;
}

int unpack_layer(int fd, const char *dest, const char *want_hex, uint64_t cap,
		 struct unpack_stats *st, cx_err *err)
{
	unpack_init();
	memset(st, 0, sizeof *st);
	cleanup_free struct ctx *c = calloc(1, sizeof *c);
	if (!c)
		return cx_err_set(err, ENOMEM, "unpack");
	c->dest = dest;
	c->cap = cap;
	c->st = st;
	cleanup_close int root = c->root_fd =
	    open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root < 0)
		return cx_err_set(err, errno, "open %s", dest);
	struct archive *ar = reader_new();
	struct src s;
	if (!ar || src_start(&s, fd, true) < 0) {
		archive_read_free(ar);
		return cx_err_set(err, ENOMEM, "unpack");
	}
	int rc = 0;
	if (archive_read_open(ar, &s, NULL, src_read, NULL) < ARCHIVE_WARN)
		rc = ar_fail(ar, err, "opening layer", "");
	else
		rc = extract(c, ar,
			     ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
				 ARCHIVE_EXTRACT_XATTR,
			     err);
	unsigned char *chunk, bin[crypto_hash_sha256_BYTES];
	while (rc == 0 && !s.eof) /* hash what the tar reader left (padding) */
		if (src_fill(&s, &chunk) < 0)
			rc = cx_err_set(err, errno, "reading layer");
	archive_read_free(ar);
	src_finish(&s, bin);
	st->read = s.n;
	if (rc == 0 && want_hex) {
		char got[65];
		hex_of(bin, got);
		if (strcmp(got, want_hex))
			return cx_err_set(err, EINVAL,
					  "layer digest mismatch: want sha256:%s, got sha256:%s",
					  want_hex, got);
	}
	return rc;
}

int unpack_stage(const char *tar_path, const char *dest, uint64_t cap, cx_err *err)
{
	unpack_init();
	struct unpack_stats st = {0};
	cleanup_free struct ctx *c = calloc(1, sizeof *c);
	if (!c)
		return cx_err_set(err, ENOMEM, "stage");
	c->stage = true;
	c->dest = dest;
	c->cap = cap;
	c->st = &st;
	cleanup_close int root = c->root_fd =
	    open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root < 0)
		return cx_err_set(err, errno, "open %s", dest);
	cleanup_close int fd = open(tar_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "open %s", tar_path);
	struct archive *ar = reader_new();
	if (!ar)
		return cx_err_set(err, ENOMEM, "archive_read_new");
	int rc = 0;
	if (archive_read_open_fd(ar, fd, UNPACK_BUF) < ARCHIVE_WARN)
		rc = ar_fail(ar, err, "opening", tar_path);
	else
		rc = extract(c, ar, 0, err);
	archive_read_free(ar);
	return rc < 0 ? cx_err_wrap(err, "%s", tar_path) : 0;
}
