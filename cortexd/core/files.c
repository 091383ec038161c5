/* files.c — see files.h. */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jobs.h"
#include "sandbox.h"

#define RESOLVE_SAFE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
#define FILES_DEPTH_MAX 256 /* a recursive delete goes no deeper */

int files_open_beneath(int dirfd, const char *rel, uint64_t flags)
{
	/* No O_NOFOLLOW: with O_DIRECTORY it turns a final symlink into ENOTDIR;
	 * RESOLVE_NO_SYMLINKS refuses it (ELOOP) as any other on the path. */
	struct open_how how = {.flags = flags | O_CLOEXEC, .resolve = RESOLVE_SAFE};
	return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
}
#define open_safe files_open_beneath

int files_open_root(const char *dir, int home)
{
	char mnt[4200];
	snprintf(mnt, sizeof mnt, "%s/" JOBS_DISK_DIR, dir);
	cleanup_close int disk = open(mnt, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return disk < 0 ? -1 : open_safe(disk, home ? "home" : "workspace", O_PATH | O_DIRECTORY);
}

int files_path_ok(const char *path, cx_err *err)
{
	size_t n = strlen(path);
	if (n >= FILES_PATH_MAX)
		return cx_err_set(err, ENAMETOOLONG, "path over %d bytes", FILES_PATH_MAX - 1);
	const char *rest;
	if (!strncmp(path, "/workspace", 10))
		rest = path + 10;
	else if (!strncmp(path, "/home/agent", 11))
		rest = path + 11;
	else
		return cx_err_set(err, EINVAL, "path must be under /workspace or /home/agent");
	if (*rest && *rest != '/')
		return cx_err_set(err, EINVAL, "path must be under /workspace or /home/agent");
	for (const char *c = rest; *c;) {
		c++; /* past '/' */
		size_t l = strcspn(c, "/");
		if (l == 0 && c[0] == '/')
			return cx_err_set(err, EINVAL, "path has an empty component (//)");
		if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
			return cx_err_set(err, EINVAL, "path must not have . or .. components");
		if (l > NAME_MAX)
			return cx_err_set(err, ENAMETOOLONG, "a path component is over %d bytes", NAME_MAX);
		c += l;
	}
	return 0;
}

int files_parse_range(const char *v, struct files_job *j)
{
	if (strncmp(v, "bytes=", 6))
		return -1;
	v += 6;
	if (strchr(v, ','))
		return -1; /* one range only */
	char *end;
	if (*v == '-') {
		if (!v[1] || strspn(v + 1, "0123456789") != strlen(v + 1) || strlen(v + 1) > 18)
			return -1;
		j->suffix = 1;
		j->first = strtoull(v + 1, &end, 10);
		j->ranged = 1;
		return j->first ? 0 : -1;
	}
	size_t dl = strspn(v, "0123456789");
	if (!dl || dl > 18 || v[dl] != '-')
		return -1;
	j->first = strtoull(v, &end, 10);
	const char *l = v + dl + 1;
	if (!*l) {
		j->last = UINT64_MAX;
	} else {
		if (strspn(l, "0123456789") != strlen(l) || strlen(l) > 18)
			return -1;
		j->last = strtoull(l, &end, 10);
		if (j->last < j->first)
			return -1;
	}
	j->ranged = 1;
	return 0;
}

/* The reply: status, code, and "<path>: what". */
static void fail(struct files_job *j, int status, const char *code, int e, const char *what)
{
	j->status = status;
	j->code = code;
	cx_err_set(&j->err, e, "%s: %s", j->path, what);
}

/* An errno of a walk or open into a reply. */
static void fail_errno(struct files_job *j, int e)
{
	if (e == ENOENT || e == ENOTDIR)
		fail(j, 404, "not_found", e, "no such file or directory");
	else if (e == ELOOP)
		fail(j, 400, "symlink", e, "a symlink is on the path; links are not followed");
	else if (e == EXDEV)
		fail(j, 400, "bad_path", e, "leaves the session's files");
	else if (e == ENOSPC || e == EDQUOT)
		fail(j, 507, "disk_full", e, "the session's disk is full");
	else if (e == EROFS)
		fail(j, 409, "read_only", e, "read-only");
	else if (e == EISDIR)
		fail(j, 409, "is_dir", e, "is a directory");
	else if (e == ENOTEMPTY || e == EEXIST)
		fail(j, 409, "not_empty", e, "directory not empty (?recursive=1 removes it all)");
	else if (e == ENAMETOOLONG)
		fail(j, 400, "bad_path", e, "name too long");
	else {
		j->status = 500;
		j->code = "internal";
		cx_err_set(&j->err, e, "%s: %s", j->path, strerror(e));
	}
}

static const char *type_of(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : S_ISLNK(m) ? "symlink" : "other";
}

static double mtime_of(const struct stat *st)
{
	return (double)st->st_mtim.tv_sec + (double)(st->st_mtim.tv_nsec / 1000000) / 1000.0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

static void list_dir(struct files_job *j, int fd)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		fail_errno(j, errno);
		return;
	}
	json_t *arr = json_array();
	int truncated = 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (json_array_size(arr) >= j->max_entries) {
			truncated = 1;
			break;
		}
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		json_array_append_new(arr, json_pack("{s:s,s:s,s:I,s:f}", "name", de->d_name, "type",
						     type_of(st.st_mode), "size", (json_int_t)st.st_size, "mtime",
						     mtime_of(&st)));
	}
	closedir(d);
	size_t n = json_array_size(arr);
	json_t **v = malloc((n ? n : 1) * sizeof *v);
	json_t *sorted = json_array();
	if (v) {
		for (size_t i = 0; i < n; i++)
			v[i] = json_array_get(arr, i);
		qsort(v, n, sizeof *v, by_name);
		for (size_t i = 0; i < n; i++)
			json_array_append(sorted, v[i]);
		free(v);
	}
	json_decref(arr);
	j->json = json_pack("{s:s,s:s,s:o,s:b}", "path", j->path, "type", "dir", "entries", sorted, "truncated",
			    truncated);
	j->status = 200;
}

static void read_file(struct files_job *j, int fd, const struct stat *st)
{
	uint64_t size = (uint64_t)st->st_size, first = 0, n = size;
	j->size = size;
	if (j->ranged) {
		if (j->suffix) {
			n = j->first < size ? j->first : size;
			first = size - n;
		} else {
			if (j->first >= size) {
				fail(j, 416, "range_not_satisfiable", ERANGE, "range starts past the end");
				return;
			}
			first = j->first;
			n = (j->last >= size ? size - 1 : j->last) - first + 1;
		}
		if (n > j->max_read)
			n = j->max_read; /* a shorter 206; Content-Range says which bytes */
		if (!n) {
			fail(j, 416, "range_not_satisfiable", ERANGE, "empty file, no range to give");
			return;
		}
	} else if (size > j->max_read) {
		j->status = 413;
		j->code = "too_large";
		cx_err_set(&j->err, EFBIG, "%s is %llu bytes, over files.max_read_mb; ask for a Range", j->path,
			   (unsigned long long)size);
		return;
	}
	j->bytes = malloc(n ? n : 1);
	if (!j->bytes) {
		fail(j, 500, "internal", ENOMEM, "out of memory");
		return;
	}
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, j->bytes + got, n - got, (off_t)(first + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail_errno(j, errno);
			return;
		}
		if (r == 0)
			break; /* shrank meanwhile */
		got += (size_t)r;
	}
	j->nbytes = got;
	j->off = first;
	j->status = j->ranged ? 206 : 200;
}

static void do_get(struct files_job *j, int root, const char *rel)
{
	int fd = open_safe(root, rel, O_RDONLY | O_NONBLOCK); /* NONBLOCK: a FIFO never blocks us */
	if (fd < 0) {
		fail_errno(j, errno);
		return;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		fail_errno(j, errno);
		close(fd);
		return;
	}
	if (S_ISDIR(st.st_mode)) {
		list_dir(j, fd); /* takes fd */
		return;
	}
	if (S_ISREG(st.st_mode))
		read_file(j, fd, &st);
	else
		fail(j, 400, "not_a_file", EINVAL, "neither a regular file nor a directory");
	close(fd);
}

/* The dir holding rel's last component (made, owned by the session, when
 * missing and `create`), and that component. */
static int open_parent(struct files_job *j, int root, const char *rel, int create, const char **out_base)
{
	char dir[FILES_PATH_MAX];
	snprintf(dir, sizeof dir, "%s", rel);
	char *slash = strrchr(dir, '/');
	*out_base = slash ? rel + (slash - dir) + 1 : rel;
	cleanup_close int cur = open_safe(root, ".", O_RDONLY | O_DIRECTORY);
	if (cur < 0 || !slash)
		return cur < 0 ? -errno : steal_fd(&cur);
	*slash = '\0';
	for (char *save = NULL, *c = strtok_r(dir, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int next = open_safe(cur, c, O_RDONLY | O_DIRECTORY);
		if (next < 0 && errno == ENOENT && create) {
			if (mkdirat(cur, c, 0755) < 0 && errno != EEXIST)
				return -errno;
			next = open_safe(cur, c, O_RDONLY | O_DIRECTORY);
			if (next >= 0 && fchown(next, j->uid, j->uid) < 0) {
				int e = errno;
				close(next);
				return -e;
			}
		}
		if (next < 0)
			return -errno;
		close(cur);
		cur = next;
	}
	return steal_fd(&cur);
}

static void do_put(struct files_job *j, int root, const char *rel)
{
	const char *base;
	cleanup_close int dfd = open_parent(j, root, rel, 1, &base);
	if (dfd < 0) {
		fail_errno(j, -dfd);
		return;
	}
	struct stat old;
	int existed = fstatat(dfd, base, &old, AT_SYMLINK_NOFOLLOW) == 0;
	if (existed && S_ISDIR(old.st_mode)) {
		fail(j, 409, "is_dir", EISDIR, "is a directory");
		return;
	}
	mode_t mode = existed && S_ISREG(old.st_mode) ? (old.st_mode & 0777) : 0644;
	char tmp[NAME_MAX + 1], hex[17];
	cx_random_hex(hex, 8);
	snprintf(tmp, sizeof tmp, ".%.200s.cortex-%s", base, hex);
	cleanup_close int fd = open_safe(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL);
	if (fd < 0) {
		fail_errno(j, errno);
		return;
	}
	int e = 0;
	if (cx_write_all(fd, j->data, j->len, &j->err) < 0)
		e = j->err.code ? j->err.code : EIO;
	else if (fchown(fd, j->uid, j->uid) < 0 || fchmod(fd, mode) < 0 || fsync(fd) < 0 ||
		 renameat(dfd, tmp, dfd, base) < 0)
		e = errno;
	if (e) {
		(void)unlinkat(dfd, tmp, 0);
		fail_errno(j, e);
		return;
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		st = (struct stat){0};
	j->json = json_pack("{s:s,s:s,s:I,s:f}", "path", j->path, "type", "file", "size", (json_int_t)st.st_size,
			    "mtime", mtime_of(&st));
	j->status = existed ? 200 : 201;
}

/* Removes what dfd holds, then nothing else: every entry is opened
 * O_NOFOLLOW below dfd (a symlink is unlinked, never entered). */
static int empty_dir(int dfd, unsigned depth)
{
	if (depth > FILES_DEPTH_MAX)
		return -ELOOP;
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return -errno;
	}
	int r = 0;
	for (struct dirent *de; r == 0 && (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dfd, de->d_name, 0) == 0 || errno == ENOENT)
			continue;
		if (errno != EISDIR && errno != EPERM) {
			r = -errno;
			break;
		}
		int sub = open_safe(dfd, de->d_name, O_RDONLY | O_DIRECTORY);
		if (sub < 0) {
			r = -errno;
			break;
		}
		r = empty_dir(sub, depth + 1);
		close(sub);
		if (r == 0 && unlinkat(dfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			r = -errno;
	}
	closedir(d);
	return r;
}

static void do_delete(struct files_job *j, int root, const char *rel)
{
	if (!strcmp(rel, ".")) {
		fail(j, 400, "bad_path", EINVAL, "the root itself cannot be removed");
		return;
	}
	const char *base;
	cleanup_close int dfd = open_parent(j, root, rel, 0, &base);
	if (dfd < 0) {
		fail_errno(j, -dfd);
		return;
	}
	struct stat st;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		fail_errno(j, errno);
		return;
	}
	int r = 0;
	if (!S_ISDIR(st.st_mode)) {
		r = unlinkat(dfd, base, 0) < 0 ? -errno : 0;
	} else {
		if (j->recursive) {
			cleanup_close int sub = open_safe(dfd, base, O_RDONLY | O_DIRECTORY);
			r = sub < 0 ? -errno : empty_dir(sub, 0);
		}
		if (r == 0 && unlinkat(dfd, base, AT_REMOVEDIR) < 0)
			r = -errno;
	}
	if (r < 0 && r != -ENOENT) {
		fail_errno(j, -r);
		return;
	}
	j->status = 204;
}

/* The op, on the disk as it is mounted at DATA/sessions/<id>/disk now. */
static void run_on_disk(struct files_job *j)
{
	int home = !strncmp(j->path, "/home/agent", 11);
	const char *rest = j->path + (home ? 11 : 10);
	while (*rest == '/')
		rest++;
	char rel[FILES_PATH_MAX];
	snprintf(rel, sizeof rel, "%s", *rest ? rest : ".");
	size_t rl = strlen(rel);
	while (rl > 1 && rel[rl - 1] == '/')
		rel[--rl] = '\0';
	cleanup_close int root = files_open_root(j->dir, home);
	if (root < 0) {
		fail(j, 404, "not_found", errno, "the session has no such dir yet");
		return;
	}
	if (j->op == FILES_GET)
		do_get(j, root, rel);
	else if (!strcmp(rel, ".") && j->op == FILES_PUT)
		fail(j, 409, "is_dir", EISDIR, "is a directory");
	else if (j->op == FILES_PUT)
		do_put(j, root, rel);
	else
		do_delete(j, root, rel);
}

void files_run(struct files_job *j)
{
	uint64_t t0 = cx_mono_us();
	cx_err_clear(&j->err);
	char mnt[4200], img[4200];
	snprintf(mnt, sizeof mnt, "%s/" JOBS_DISK_DIR, j->dir);
	snprintf(img, sizeof img, "%s/" JOBS_DISK_IMG, j->dir);
	cx_err e = CX_ERR_INIT;
	cleanup_close int lock = jobs_disk_lock(j->dir, &e);
	if (lock < 0) {
		fail(j, 404, "not_found", e.code, "the session has no files");
		return;
	}
	struct stat sd, sm;
	int mounted = fstat(lock, &sd) == 0 && stat(mnt, &sm) == 0 && sm.st_dev != sd.st_dev;
	if (!mounted) {
		if (access(img, F_OK) < 0) {
			fail(j, 404, "not_found", ENOENT, "the session has no files yet");
			return;
		}
		int rc = j->op == FILES_GET ? sandbox_disk_attach_ro(img, mnt, &e) : sandbox_disk_attach(img, 0, mnt, &e);
		/* Just after a sleep the stopped sandbox's lazily detached mount
		 * may still hold the disk's ext4 read-write for a moment: a
		 * read-only mount of it is EBUSY then.  Share that read-write
		 * instance instead (what is on the disk is not touched). */
		if (rc < 0 && j->op == FILES_GET && e.code == EBUSY) {
			cx_err_clear(&e);
			rc = sandbox_disk_attach(img, 0, mnt, &e);
		}
		if (rc < 0) {
			j->status = 500;
			j->code = "internal";
			j->err = e;
			return;
		}
		j->attached = 1;
	}
	run_on_disk(j);
	if (j->attached && sandbox_disk_detach(mnt, &e) < 0 && j->status < 300) {
		j->status = 500;
		j->code = "internal";
		j->err = e;
	}
	j->ms = (double)(cx_mono_us() - t0) / 1000.0;
}

void files_job_clear(struct files_job *j)
{
	json_decref(j->json);
	free(j->bytes);
	free(j->data);
	j->json = NULL;
	j->bytes = j->data = NULL;
}
