/* build_ctx.c — a build context: secure extraction of its tar (libarchive) and
 * its content hash (libsodium sha256 over a canonical walk). */
#include "build.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <stdarg.h>
#include <sys/stat.h>

int build_err(cx_err *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = errnum;
	return -1;
}

int build_extract(const char *tar_path, const char *dir, uint64_t max, cx_err *err)
{
	/* pathnames in tars are bytes; libarchive wants a UTF-8 capable locale */
	locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	locale_t old = loc ? uselocale(loc) : (locale_t)0;
	struct archive *a = archive_read_new();
	struct archive *w = archive_write_disk_new();
	int rc = -1;
	if (!a || !w) {
		cx_err_set(err, ENOMEM, "libarchive");
		goto out;
	}
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_none(a);
	/* Entries are written as dir/<path>: an absolute path, so libarchive's
	 * NOABSOLUTEPATHS cannot be used; absolute entry names are refused below. */
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_SECURE_SYMLINKS |
					      ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	if (archive_read_open_filename(a, tar_path, 64 << 10) != ARCHIVE_OK) {
		build_err(err, EINVAL, "build context: not a tar: %s", archive_error_string(a));
		goto out;
	}
	uint64_t total = 0;
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			build_err(err, EINVAL, "build context: bad tar: %s",
				  archive_error_string(a));
			goto out;
		}
		mode_t type = archive_entry_filetype(e);
		char p[4096];
		snprintf(p, sizeof p, "%s",
			 archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
		if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
			continue; /* devices, fifos, sockets: never in a context */
		if (archive_entry_hardlink(e)) {
			build_err(err, EINVAL, "build context: hard link %s: not supported", p);
			goto out;
		}
		total += (uint64_t)archive_entry_size(e);
		if (total > max) {
			build_err(err, EFBIG, "build context: over %llu bytes unpacked",
				  (unsigned long long)max);
			goto out;
		}
		char full[4096];
		if (!p[0] || snprintf(full, sizeof full, "%s/%s", dir, p) >= (int)sizeof full) {
			build_err(err, EINVAL, "build context: path too long");
			goto out;
		}
		if (p[0] == '/' || !strcmp(p, "..") || !strncmp(p, "../", 3) || strstr(p, "/../")) {
			build_err(err, EINVAL, "build context: path %s leaves the context", p);
			goto out;
		}
		archive_entry_set_pathname(e, full);
		archive_entry_set_perm(e, (archive_entry_perm(e) & 0755) |
					      (type == AE_IFDIR ? 0700 : 0600));
		r = archive_write_header(w, e);
		if (r < ARCHIVE_WARN) {
			build_err(err, EINVAL, "build context: %s: %s", p, archive_error_string(w));
			goto out;
		}
		if (type == AE_IFREG && archive_entry_size(e) > 0) {
			const void *buf;
			size_t len;
			int64_t off;
			while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
				if (archive_write_data_block(w, buf, len, off) < ARCHIVE_WARN) {
					cx_err_set(err, EIO, "build context: %s: %s", p,
						   archive_error_string(w));
					goto out;
				}
			if (r != ARCHIVE_EOF) {
				build_err(err, EINVAL, "build context: %s: %s", p,
					  archive_error_string(a));
				goto out;
			}
		}
		if (archive_write_finish_entry(w) < ARCHIVE_WARN) {
			cx_err_set(err, EIO, "build context: %s: %s", p, archive_error_string(w));
			goto out;
		}
	}
	rc = 0;
out:
	if (w) {
		archive_write_close(w);
		archive_write_free(w);
	}
	if (a)
		archive_read_free(a);
	if (loc) {
		uselocale(old);
		freelocale(loc);
	}
	return rc;
}

/* One entry: type byte, path and NUL, then the payload. */
static int hash_walk(crypto_hash_sha256_state *h, int dfd, const char *rel, cx_err *err)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return cx_err_set(err, errno, "context: opendir %s", rel);
	}
	struct dirent **ents;
	/* scandir on the fd's path would follow links: read the names, sort them. */
	size_t n = 0, cap = 32;
	ents = malloc(cap * sizeof *ents);
	struct dirent *de;
	while (ents && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			struct dirent **ne = realloc(ents, (cap *= 2) * sizeof *ents);
			if (!ne)
				break;
			ents = ne;
		}
		ents[n] = malloc(sizeof *de);
		if (!ents[n])
			break;
		memcpy(ents[n++], de, sizeof *de);
	}
	int rc = 0;
	if (!ents) {
		closedir(d);
		return cx_err_set(err, ENOMEM, "context walk");
	}
	for (size_t i = 1; i < n; i++) /* insertion sort: contexts are small */
		for (size_t j = i; j > 0 && strcmp(ents[j - 1]->d_name, ents[j]->d_name) > 0; j--) {
			struct dirent *t = ents[j];
			ents[j] = ents[j - 1];
			ents[j - 1] = t;
		}
	for (size_t i = 0; i < n && !rc; i++) {
		const char *name = ents[i]->d_name;
		char path[4096];
		snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", name);
		struct stat st;
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = cx_err_set(err, errno, "context: stat %s", path);
			break;
		}
		unsigned char t = S_ISDIR(st.st_mode)	? 'd'
				  : S_ISLNK(st.st_mode) ? 'l'
				  : S_ISREG(st.st_mode) ? 'f'
							: '?';
		unsigned char x = (st.st_mode & 0111) ? 'x' : '-';
		crypto_hash_sha256_update(h, &t, 1);
		crypto_hash_sha256_update(h, &x, 1);
		crypto_hash_sha256_update(h, (const unsigned char *)path, strlen(path) + 1);
		if (t == 'd') {
			int fd =
			    openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				rc = cx_err_set(err, errno, "context: open %s", path);
			else
				rc = hash_walk(h, fd, path, err);
		} else if (t == 'l') {
			char target[4096];
			ssize_t l = readlinkat(dirfd(d), name, target, sizeof target);
			if (l < 0)
				rc = cx_err_set(err, errno, "context: readlink %s", path);
			else
				crypto_hash_sha256_update(h, (const unsigned char *)target,
							  (unsigned long long)l);
		} else if (t == 'f') {
			uint64_t len = (uint64_t)st.st_size;
			crypto_hash_sha256_update(h, (const unsigned char *)&len, sizeof len);
			int fd = openat(dirfd(d), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				rc = cx_err_set(err, errno, "context: open %s", path);
				break;
			}
			unsigned char buf[64 << 10];
			ssize_t r;
			while ((r = read(fd, buf, sizeof buf)) > 0)
				crypto_hash_sha256_update(h, buf, (unsigned long long)r);
			if (r < 0)
				rc = cx_err_set(err, errno, "context: read %s", path);
			close(fd);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
	closedir(d);
	return rc;
}

int build_hash_dir(const char *dir, const char *extra, char out[72], cx_err *err)
{
	if (sodium_init() < 0)
		return cx_err_set(err, EIO, "libsodium init");
	crypto_hash_sha256_state h;
	crypto_hash_sha256_init(&h);
	static const unsigned char ver[] = "cortex-build-context-v1";
	crypto_hash_sha256_update(&h, ver, sizeof ver);
	if (extra)
		crypto_hash_sha256_update(&h, (const unsigned char *)extra, strlen(extra) + 1);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno, "context: open %s", dir);
	if (hash_walk(&h, fd, "", err) < 0)
		return -1;
	unsigned char md[crypto_hash_sha256_BYTES];
	crypto_hash_sha256_final(&h, md);
	memcpy(out, "sha256:", 7);
	sodium_bin2hex(out + 7, 65, md, sizeof md);
	return 0;
}
