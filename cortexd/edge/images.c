/* images.c — /v1/images routes (docs/images.md, docs/protocol.md).  Images are
 * operator-wide: any authenticated caller may list and get them and read a
 * build log; building, importing and deleting need the admin token.  A build
 * context or an import arrives as a body streamed to a file (http.c, capped by
 * images.max_context_mb); extracting, hashing and importing run on a worker
 * (api_defer), buildah in the builder's own thread. */
#include "images.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build.h"
#include "imgstore.h"
#include "log.h"
#include "refuse.h"

static int valid_image_name(const char *n, size_t len)
{
	if (!len || len > 64 || !((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9')))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '.' ||
		      n[i] == '_' || n[i] == '-'))
			return 0;
	return 1;
}

int images_upload_route(const char *method, const char *path)
{
	if (strcmp(method, "POST") || strncmp(path, "/v1/images/", 11))
		return 0;
	const char *slash = strchr(path + 11, '/');
	return slash && (!strcmp(slash, "/build") || !strcmp(slash, "/import"));
}

static json_t *build_json(const struct build_status *b)
{
	json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:b, s:s}", "id", b->id, "state",
			      build_state_name(b->state), "step", b->step, "steps", b->steps,
			      "cached", b->cached, "context", b->hash);
	json_object_set_new(o, "error", b->error[0] ? json_string(b->error) : json_null());
	return o;
}

static json_t *image_json(const struct image_info *i)
{
	json_t *env = json_array();
	for (size_t k = 0; i->env && i->env[k]; k++)
		json_array_append_new(env, json_string(i->env[k]));
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:s, s:s}", "name", i->name, "digest",
			 i->digest, "size", (json_int_t)i->size, "layers", (json_int_t)i->n_layers,
			 "created", (json_int_t)i->created, "env", env, "workdir", i->workdir,
			 "user", i->user);
}

static void list_images(struct cortexd *d, struct api_resp *resp)
{
	struct image_info **l = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (imgstore_list(d->images, &l, &n, &err) < 0) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return;
	}
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = image_json(l[i]);
		struct build_status b;
		if (builder_status(d->builder, l[i]->name, &b) == 0)
			json_object_set_new(o, "build", build_json(&b));
		json_array_append_new(a, o);
	}
	image_info_list_free(l, n);
	api_reply(resp, 200, json_pack("{s:o}", "images", a));
}

static void get_image(struct cortexd *d, const char *name, struct api_resp *resp)
{
	struct image_info *i = NULL;
	cx_err err = CX_ERR_INIT;
	struct build_status b;
	int have_build = builder_status(d->builder, name, &b) == 0;
	json_t *o;
	if (imgstore_get(d->images, name, &i, &err) == 0) {
		o = image_json(i);
		image_info_free(i);
	} else if (have_build) { /* being built, or its build failed */
		o = json_pack("{s:s, s:n}", "name", name, "digest");
	} else {
		api_error(resp, 404, "not_found", "no image %s", name);
		return;
	}
	json_object_set_new(o, "build", have_build ? build_json(&b) : json_null());
	api_reply(resp, 200, o);
}

/* ---- build and import: the body file is consumed ---- */

struct img_job {
	struct builder *builder;
	struct imgstore *images;
	char name[128], user[128], file[4096];
	int import;
	struct build_status st;
};

static int img_job_run(void *arg, cx_err *err)
{
	struct img_job *j = arg;
	int rc = j->import ? imgstore_import_tar(j->images, j->name, j->file, NULL, NULL, err)
			   : builder_submit(j->builder, j->name, j->user, j->file, &j->st, err);
	unlink(j->file);
	return rc;
}

static void img_job_then(void *arg, int rc, const cx_err *err, struct api_resp *resp)
{
	struct img_job *j = arg;
	if (rc == 0)
		log_info("image %s: %s", j->name,
			 j->import	? "imported"
			 : j->st.cached ? "build cached"
					: "build started");
	else
		log_info("image %s: %s failed: %s", j->name, j->import ? "import" : "build",
			 err->msg);
	if (!resp) {
	} else if (rc == 0 && j->import) {
		struct image_info *i = NULL;
		cx_err e2 = CX_ERR_INIT;
		if (imgstore_get(j->images, j->name, &i, &e2) == 0) {
			api_reply(resp, 201, image_json(i));
			image_info_free(i);
		} else {
			api_error(resp, 500, "internal", "%s", e2.msg);
		}
	} else if (rc == 0) {
		api_reply(resp, 202,
			  json_pack("{s:s, s:s, s:s, s:b, s:b}", "name", j->name, "build", j->st.id,
				    "state", build_state_name(j->st.state), "cached", j->st.cached,
				    "joined", j->st.joined));
	} else if (err->code == EINVAL || err->code == ENOENT || err->code == EILSEQ) {
		/* EILSEQ: libarchive's ARCHIVE_ERRNO_FILE_FORMAT, a body that is no archive */
		api_error(resp, 400, "bad_request", "%s", err->msg);
	} else if (err->code == EFBIG) {
		api_error(resp, 413, "too_large", "%s", err->msg);
	} else if (err->code == EAGAIN) {
		refuse_count(REFUSE_IMAGE_BUILDS);
		api_error(resp, 429, "too_many_builds", "%s", err->msg);
	} else if (err->code == EBUSY) {
		api_error(resp, 409, "busy", "%s", err->msg);
	} else {
		api_error(resp, 500, "internal", "%s", err->msg);
	}
	free(j);
}

static void post_image(struct cortexd *d, const char *name, const char *user, int import,
		       const struct api_req *req, struct api_resp *resp)
{
	if (!req->body_file) {
		api_error(resp, 400, "bad_request",
			  "the body must be a tar (%s) with a Content-Length",
			  import ? "an OCI layout or a docker archive"
				 : "a build context holding a Dockerfile");
		return;
	}
	struct img_job *j = calloc(1, sizeof *j);
	if (!j) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	j->builder = d->builder;
	j->images = d->images;
	j->import = import;
	snprintf(j->name, sizeof j->name, "%s", name);
	snprintf(j->user, sizeof j->user, "%s", user);
	snprintf(j->file, sizeof j->file, "%s", req->body_file);
	api_defer(resp, img_job_run, img_job_then, j);
}

static void delete_image(struct cortexd *d, const char *name, struct api_resp *resp)
{
	struct build_status b;
	int building = builder_status(d->builder, name, &b) == 0 && b.state == BUILD_RUNNING;
	builder_cancel(d->builder, name);
	cx_err err = CX_ERR_INIT;
	if (imgstore_delete(d->images, name, &err) == 0 || (building && err.code == ENOENT)) {
		log_info("image %s deleted%s", name, building ? " (its build canceled)" : "");
		api_reply(resp, 204, NULL);
	} else if (err.code == ENOENT) {
		api_error(resp, 404, "not_found", "no image %s", name);
	} else if (err.code == EBUSY) {
		api_error(resp, 409, "in_use", "image %s is used by sessions", name);
	} else {
		api_error(resp, 500, "internal", "%s", err.msg);
	}
}

static void get_log(struct cortexd *d, const char *name, struct api_resp *resp)
{
	struct build_status b;
	if (builder_status(d->builder, name, &b) != 0) {
		api_error(resp, 404, "not_found", "no build of image %s", name);
		return;
	}
	resp->status = 200;
	resp->ctype = "text/plain; charset=utf-8";
	snprintf(resp->stream_file, sizeof resp->stream_file, "%s", b.log_path);
	snprintf(resp->stream_name, sizeof resp->stream_name, "%s", name);
}

int images_log_running(struct cortexd *d, const char *name)
{
	struct build_status b;
	return d->builder && builder_status(d->builder, name, &b) == 0 && b.state == BUILD_RUNNING;
}

void images_route(struct cortexd *d, const char *user, enum api_who who, const struct api_req *req,
		  struct api_resp *resp)
{
	const char *p = req->path + 10, *m = req->method; /* after "/v1/images" */
	if (!d->images || !d->builder) {
		api_error(resp, 503, "unavailable", "the image store is not open");
		return;
	}
	if (!*p) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else
			list_images(d, resp);
		return;
	}
	const char *nm = p + 1, *slash = strchr(nm, '/');
	size_t nlen = slash ? (size_t)(slash - nm) : strlen(nm);
	if (*p != '/' || !valid_image_name(nm, nlen)) {
		api_error(
		    resp, 400, "bad_request",
		    "image names are 1-64 chars of a-z 0-9 . _ -, starting with a letter or digit");
		return;
	}
	char name[72];
	snprintf(name, sizeof name, "%.*s", (int)nlen, nm);
	const char *sub = slash ? slash : "";
	int admin_only = !strcmp(m, "POST") || !strcmp(m, "DELETE");
	if (admin_only && who != WHO_ADMIN) {
		api_error(resp, 403, "forbidden",
			  "images are operator-wide: building, importing and deleting need the "
			  "admin token");
		return;
	}
	if (!*sub && !strcmp(m, "GET"))
		get_image(d, name, resp);
	else if (!*sub && !strcmp(m, "DELETE"))
		delete_image(d, name, resp);
	else if (!strcmp(sub, "/log") && !strcmp(m, "GET"))
		get_log(d, name, resp);
	else if (!strcmp(sub, "/build") && !strcmp(m, "POST"))
		post_image(d, name, user, 0, req, resp); /* the admin ("") has no per-user cap */
	else if (!strcmp(sub, "/import") && !strcmp(m, "POST"))
		post_image(d, name, user, 1, req, resp);
	else if (!*sub || !strcmp(sub, "/log") || !strcmp(sub, "/build") || !strcmp(sub, "/import"))
		api_error(resp, 405, "method_not_allowed", "method not allowed on %s", req->path);
	else
		api_error(resp, 404, "not_found", "no such route: %.200s", req->path);
}
