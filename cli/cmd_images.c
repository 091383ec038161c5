/* cmd_images.c — images: ls, show, build (a directory tarred with
 * libarchive, the log followed with a progress bar), log, import, rm. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static int image_path(char *buf, size_t cap, const char *name, const char *tail)
{
	return path_join(buf, cap, "/v1/images/", name, tail);
}

static void images_human(json_t *v)
{
	static const char *const cols[] = {"NAME", "DIGEST", "SIZE", "LAYERS", "CREATED", NULL};
	static const char *const keys[] = {"name", "digest", "size", "layers", "created"};
	json_t *rows = json_object_get(v, "images");
	if (!json_is_array(rows)) {
		out_object(v);
		return;
	}
	out_table(rows, cols, keys);
}

int cmd_images_ls(const struct cli *cli, struct opts *o)
{
	(void)o;
	return api_print(cli, "GET", "/v1/images", NULL, images_human);
}

int cmd_images_show(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (image_path(path, sizeof path, o->pos[0], NULL) < 0)
		return EXIT_USAGE;
	return api_print(cli, "GET", path, NULL, images_human);
}

int cmd_images_rm(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (image_path(path, sizeof path, o->pos[0], NULL) < 0)
		return EXIT_USAGE;
	return api_print(cli, "DELETE", path, NULL, NULL);
}

int cmd_images_log(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (image_path(path, sizeof path, o->pos[0], "/log") < 0)
		return EXIT_USAGE;
	return api_stream_get(cli, path);
}

static int upload(const struct cli *cli, const char *path, FILE *f, void (*human)(json_t *),
		  json_t **out)
{
	struct http_req rq = {.method = "POST",
			      .path = path,
			      .upload = f,
			      .upload_type = "Content-Type: application/x-tar"};
	struct http_resp rs;
	int rc = http_do(cli, &rq, &rs);
	if (!rc && !(rc = http_report(cli, &rs))) {
		json_t *v = rs.body ? json_loads(rs.body, 0, NULL) : NULL;
		if (out)
			*out = json_incref(v);
		else if (cli->json)
			printf("%s\n", rs.body ? rs.body : "");
		else if (v && human)
			human(v);
		json_decref(v);
	}
	http_resp_free(&rs);
	return rc;
}

static void imported_human(json_t *v)
{
	printf("imported %s: %s, %lld layers\n", json_string_value(json_object_get(v, "name")),
	       json_string_value(json_object_get(v, "digest"))
		   ? json_string_value(json_object_get(v, "digest"))
		   : "-",
	       (long long)json_integer_value(json_object_get(v, "layers")));
}

int cmd_images_import(const struct cli *cli, struct opts *o)
{
	char path[160];
	if (image_path(path, sizeof path, o->pos[0], "/import") < 0)
		return EXIT_USAGE;
	FILE *f = fopen(o->pos[1], "rb");
	if (!f) {
		fprintf(stderr, "cortexctl: %s: %s\n", o->pos[1], strerror(errno));
		return EXIT_USAGE;
	}
	int rc = upload(cli, path, f, imported_human, NULL);
	fclose(f);
	return rc;
}

/* ---- build ---- */

/* DIR as a tar in an unnamed temp file (symlinks stored as links, never
 * followed; names relative to DIR).  NULL printed. */
static FILE *tar_dir(const char *dir)
{
	FILE *f = tmpfile();
	struct archive *w = archive_write_new(), *r = archive_read_disk_new();
	int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC),
	    ok = f && w && r && cwd >= 0 && chdir(dir) == 0;
	const char *why = ok ? NULL : strerror(errno);
	if (ok) {
		archive_write_set_format_pax_restricted(w);
		archive_read_disk_set_symlink_physical(r);
		ok = archive_write_open_FILE(w, f) == ARCHIVE_OK &&
		     archive_read_disk_open(r, ".") == ARCHIVE_OK;
		why = ok ? NULL : archive_error_string(archive_errno(w) ? w : r);
	}
	struct archive_entry *e = NULL;
	while (ok) {
		e = archive_entry_new();
		int st = archive_read_next_header2(r, e);
		if (st == ARCHIVE_EOF)
			break;
		if (st < ARCHIVE_WARN) {
			ok = 0, why = archive_error_string(r);
			break;
		}
		archive_read_disk_descend(r);
		const char *name = archive_entry_pathname(e);
		if (!strcmp(name, ".")) {
			archive_entry_free(e);
			continue;
		}
		if (!strncmp(name, "./", 2))
			archive_entry_copy_pathname(e, name + 2);
		if (archive_write_header(w, e) < ARCHIVE_WARN) {
			ok = 0, why = archive_error_string(w);
			break;
		}
		if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
			int fd =
			    open(archive_entry_sourcepath(e), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			char buf[65536];
			ssize_t n;
			while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
				archive_write_data(w, buf, (size_t)n);
			if (fd < 0)
				ok = 0, why = strerror(errno);
			else
				close(fd);
		}
		archive_entry_free(e);
		e = NULL;
	}
	archive_entry_free(e);
	if (r)
		archive_read_free(r);
	if (w && archive_write_close(w) != ARCHIVE_OK && ok)
		ok = 0, why = archive_error_string(w);
	if (w)
		archive_write_free(w);
	if (cwd >= 0) {
		if (fchdir(cwd) < 0)
			ok = 0, why = strerror(errno);
		close(cwd);
	}
	if (!ok) {
		fprintf(stderr, "cortexctl: tarring %s: %s\n", dir, why ? why : "failed");
		if (f)
			fclose(f);
		return NULL;
	}
	fflush(f);
	rewind(f);
	return f;
}

/* The log as it streams: lines split, STEP n/m shown as a bar on a
 * terminal, as plain lines otherwise; the tail kept for a failure. */
struct follow {
	char line[1024];
	size_t n;
	int tty, quiet, drawn;
	char tail[8][200];
	int ntail;
};

static void progress_line(struct follow *fl, const char *l)
{
	char *t = fl->tail[fl->ntail++ % 8];
	size_t k = strnlen(l, sizeof fl->tail[0] - 1);
	memcpy(t, l, k);
	t[k] = '\0';
	int step, steps;
	const char *s = strstr(l, "STEP ");
	if (fl->quiet || !s || sscanf(s, "STEP %d/%d", &step, &steps) != 2 || steps <= 0 ||
	    step > steps)
		return;
	if (!fl->tty) {
		fprintf(stderr, "%s\n", s);
		return;
	}
	int width = 30, done = step * width / steps;
	fprintf(stderr, "\r\033[K[%.*s%.*s] %d/%d %.60s", done, "##############################",
		width - done, "..............................", step, steps, s);
	fl->drawn = 1;
}

static size_t follow_sink(char *p, size_t n, void *ud)
{
	struct follow *fl = ud;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' || fl->n + 1 >= sizeof fl->line) {
			fl->line[fl->n] = '\0';
			progress_line(fl, fl->line);
			fl->n = 0;
		} else if (p[i] != '\r') {
			fl->line[fl->n++] = p[i];
		}
	}
	return n;
}

static void built_human(json_t *v)
{
	json_t *b = json_object_get(v, "build");
	printf("built %s: %s%s\n", json_string_value(json_object_get(v, "name")),
	       json_string_value(json_object_get(v, "digest"))
		   ? json_string_value(json_object_get(v, "digest"))
		   : "-",
	       json_is_true(json_object_get(b, "cached")) ? " (cached)" : "");
}

int cmd_images_build(const struct cli *cli, struct opts *o)
{
	char path[160], logp[160], post[160];
	if (image_path(path, sizeof path, o->pos[0], NULL) < 0)
		return EXIT_USAGE;
	image_path(logp, sizeof logp, o->pos[0], "/log");
	image_path(post, sizeof post, o->pos[0], "/build");
	struct stat st;
	if (stat(o->pos[1], &st) < 0) {
		fprintf(stderr, "cortexctl: %s: %s\n", o->pos[1], strerror(errno));
		return EXIT_USAGE;
	}
	FILE *f =
	    S_ISDIR(st.st_mode) ? tar_dir(o->pos[1]) : fopen(o->pos[1], "rb"); /* a tar as is */
	if (!f)
		return EXIT_USAGE;
	json_t *started = NULL;
	int rc = upload(cli, post, f, NULL, &started);
	fclose(f);
	if (rc || opt_has(o, "detach")) {
		if (!rc)
			out_json(started);
		json_decref(started);
		return rc;
	}
	struct follow fl = {.tty = isatty(2), .quiet = cli->json};
	if (!json_is_true(json_object_get(started, "cached"))) {
		struct http_req rq = {
		    .method = "GET", .path = logp, .sink = follow_sink, .sink_ud = &fl};
		struct http_resp rs;
		if (!(rc = http_do(cli, &rq, &rs)))
			rc = http_report(cli, &rs);
		http_resp_free(&rs);
		if (fl.drawn)
			fputc('\n', stderr);
	}
	json_decref(started);
	json_t *img = NULL;
	if (rc || (rc = api_json(cli, "GET", path, NULL, &img)))
		return rc;
	const char *state =
	    json_string_value(json_object_get(json_object_get(img, "build"), "state"));
	if (cli->json) {
		char *t = json_dumps(img, JSON_COMPACT);
		printf("%s\n", t ? t : "{}");
		free(t);
	}
	if (!state || strcmp(state, "done")) {
		const char *err =
		    json_string_value(json_object_get(json_object_get(img, "build"), "error"));
		fprintf(stderr, "cortexctl: the build %s: %s\n", state ? state : "did not finish",
			err ? err : "");
		for (int i = fl.ntail > 8 ? fl.ntail - 8 : 0; !err && i < fl.ntail; i++)
			fprintf(stderr, "  %s\n", fl.tail[i % 8]);
		rc = EXIT_SERVER;
	} else if (!cli->json) {
		built_human(img);
	}
	json_decref(img);
	return rc;
}
