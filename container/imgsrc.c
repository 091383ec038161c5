/* imgsrc.c — read an OCI image layout or a `docker save` dir; see imgsrc.h. */
#include "imgsrc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "caps.h"

#define MAX_INDEX_DEPTH 4

int imgsrc_open(const struct img_src *src, const char *rel, cx_err *err)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
	cleanup_close int fd = (int)syscall(SYS_openat2, src->root_fd, rel, &how, sizeof how);
	struct stat sb;
	if (fd < 0)
		return cx_err_set(err, errno, "open \"%s\" in the image", rel);
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		return cx_err_set(err, EINVAL, "\"%s\" in the image is not a regular file", rel);
	return steal_fd(&fd);
}

static bool is_hex64(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == 64;
}

/* "sha256:<hex>" -> hex. */
static int digest_hex(const char *d, char hex[65], cx_err *err)
{
	if (!d || strncmp(d, "sha256:", 7) || !is_hex64(d + 7))
		return cx_err_set(err, EINVAL, "unsupported digest \"%s\" (sha256 only)",
				  d ? d : "(none)");
	memcpy(hex, d + 7, 65);
	return 0;
}

/* Read a JSON file of the source; want_hex (or NULL): its sha256 must match. */
static int read_json(const struct img_src *src, const char *rel, const char *want_hex, json_t **out,
		     char got_hex[65], cx_err *err)
{
	cleanup_close int fd = imgsrc_open(src, rel, err);
	if (fd < 0)
		return -1;
	struct stat sb;
	if (fstat(fd, &sb) < 0 || sb.st_size > (off_t)CX_CAP_IMAGE_JSON)
		return cx_err_set(err, EFBIG, "\"%s\": larger than %u bytes", rel,
				  CX_CAP_IMAGE_JSON);
	size_t n = (size_t)sb.st_size;
	cleanup_free char *buf = malloc(n + 1);
	if (!buf)
		return cx_err_set(err, ENOMEM, "%s", rel);
	if (cx_read_all(fd, buf, n, err) < 0)
		return cx_err_wrap(err, "%s", rel);
	unsigned char bin[crypto_hash_sha256_BYTES];
	char hex[65];
	crypto_hash_sha256(bin, (const unsigned char *)buf, n);
	sodium_bin2hex(hex, sizeof hex, bin, sizeof bin);
	if (want_hex && strcmp(hex, want_hex))
		return cx_err_set(err, EINVAL,
				  "\"%s\": digest mismatch: want sha256:%s, got sha256:%s", rel,
				  want_hex, hex);
	if (got_hex)
		memcpy(got_hex, hex, 65);
	json_error_t je;
	*out = json_loadb(buf, n, 0, &je);
	if (!*out)
		return cx_err_set(err, EINVAL, "\"%s\": bad JSON: %s", rel, je.text);
	return 0;
}

static int read_blob(const struct img_src *src, const char *hex, json_t **out, cx_err *err)
{
	char rel[100];
	snprintf(rel, sizeof rel, "blobs/sha256/%s", hex);
	return read_json(src, rel, hex, out, NULL, err);
}

static bool media_is_index(const char *mt)
{
	return mt && (strstr(mt, "image.index") || strstr(mt, "manifest.list"));
}

static bool media_is_layer(const char *mt)
{
	static const char *const ok[] = {
	    "application/vnd.oci.image.layer.v1.tar",
	    "application/vnd.oci.image.layer.v1.tar+gzip",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	    "application/vnd.docker.image.rootfs.diff.tar",
	    "application/vnd.docker.image.rootfs.diff.tar.gzip",
	    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
	};
	for (size_t i = 0; mt && i < sizeof ok / sizeof *ok; i++)
		if (!strcmp(mt, ok[i]))
			return true;
	return false;
}

/* The linux/amd64 entry of an index's manifests, else the first that is not
 * an attestation (platform unknown/unknown). */
static json_t *pick_manifest(json_t *manifests)
{
	json_t *first = NULL, *d;
	size_t i;
	json_array_foreach(manifests, i, d)
	{
		json_t *p = json_object_get(d, "platform");
		const char *os = json_string_value(json_object_get(p, "os"));
		const char *arch = json_string_value(json_object_get(p, "architecture"));
		if (os && arch && !strcmp(os, "linux") && !strcmp(arch, "amd64"))
			return d;
		if (!first && !(os && !strcmp(os, "unknown")))
			first = d;
	}
	return first;
}

static int add_layer(struct img_src *src, const char *hex, const char *path, cx_err *err)
{
	if (src->n_layers >= CX_CAP_IMAGE_LAYERS)
		return cx_err_set(err, EFBIG, "more than %u layers", CX_CAP_IMAGE_LAYERS);
	struct img_layer *l = &src->layers[src->n_layers];
	memcpy(l->hex, hex, 65);
	if ((size_t)snprintf(l->path, sizeof l->path, "%s", path) >= sizeof l->path)
		return cx_err_set(err, ENAMETOOLONG, "layer path \"%s\"", path);
	src->n_layers++;
	return 0;
}

static int load_oci(struct img_src *src, cx_err *err)
{
	json_t *idx = NULL, *m = NULL;
	int rc = read_json(src, "index.json", NULL, &idx, NULL, err);
	char hex[65];
	for (int depth = 0; rc == 0; depth++) {
		json_t *d = pick_manifest(json_object_get(idx, "manifests"));
		if (!d || depth >= MAX_INDEX_DEPTH) {
			rc = cx_err_set(err, EINVAL, "index: no usable manifest");
			break;
		}
		const char *mt = json_string_value(json_object_get(d, "mediaType"));
		if ((rc = digest_hex(json_string_value(json_object_get(d, "digest")), hex, err)) ||
		    (rc = read_blob(src, hex, &m, err)))
			break;
		if (!media_is_index(mt) && !json_object_get(m, "manifests"))
			break; /* an image manifest */
		json_decref(idx);
		idx = steal_pointer(&m);
	}
	json_decref(idx);
	if (rc < 0) {
		json_decref(m);
		return cx_err_wrap(err, "OCI layout");
	}
	json_t *layers = json_object_get(m, "layers"), *l;
	size_t i;
	if ((rc = digest_hex(
		 json_string_value(json_object_get(json_object_get(m, "config"), "digest")), hex,
		 err)) == 0 &&
	    (rc = read_blob(src, hex, &src->config, err)) == 0)
		snprintf(src->digest, sizeof src->digest, "sha256:%s", hex);
	if (rc == 0 && !json_is_array(layers))
		rc = cx_err_set(err, EINVAL, "manifest: no layers");
	json_array_foreach(layers, i, l)
	{
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		char path[100];
		if (rc < 0)
			break;
		if (!media_is_layer(mt)) {
			rc = cx_err_set(err, EINVAL, "layer %zu: unsupported media type \"%s\"",
					i + 1, mt ? mt : "(none)");
			break;
		}
		if ((rc = digest_hex(json_string_value(json_object_get(l, "digest")), hex, err)))
			break;
		snprintf(path, sizeof path, "blobs/sha256/%s", hex);
		rc = add_layer(src, hex, path, err);
	}
	json_decref(m);
	return rc < 0 ? cx_err_wrap(err, "OCI layout") : 0;
}

/* "blobs/sha256/<hex>" or "<hex>.json" (older docker save) -> hex, else "". */
static void hex_of_path(const char *p, char hex[65])
{
	hex[0] = '\0';
	const char *b = strrchr(p, '/');
	b = b ? b + 1 : p;
	char tmp[65];
	if (strlen(b) >= 64) {
		memcpy(tmp, b, 64);
		tmp[64] = '\0';
		if (is_hex64(tmp) && (b[64] == '\0' || !strcmp(b + 64, ".json")))
			memcpy(hex, tmp, 65);
	}
}

static int load_docker(struct img_src *src, cx_err *err)
{
	json_t *mf = NULL;
	if (read_json(src, "manifest.json", NULL, &mf, NULL, err) < 0)
		return cx_err_wrap(err, "docker archive");
	json_t *e = json_array_get(mf, 0);
	const char *cfg = json_string_value(json_object_get(e, "Config"));
	json_t *layers = json_object_get(e, "Layers"), *l;
	char want[65], got[65];
	int rc = 0;
	if (!cfg || !json_is_array(layers))
		rc = cx_err_set(err, EINVAL, "manifest.json: no Config or Layers");
	if (rc == 0) {
		hex_of_path(cfg, want);
		if ((rc = read_json(src, cfg, *want ? want : NULL, &src->config, got, err)) == 0)
			snprintf(src->digest, sizeof src->digest, "sha256:%s", got);
	}
	json_t *diff_ids = json_object_get(json_object_get(src->config, "rootfs"), "diff_ids");
	size_t i;
	json_array_foreach(layers, i, l)
	{
		const char *p = json_string_value(l);
		if (rc < 0)
			break;
		if (!p) {
			rc = cx_err_set(err, EINVAL, "manifest.json: layer %zu is not a path",
					i + 1);
			break;
		}
		/* the blob's own sha256: its name, or the config's diff_id (an uncompressed tar) */
		hex_of_path(p, want);
		if (!*want &&
		    (rc = digest_hex(json_string_value(json_array_get(diff_ids, i)), want, err)))
			break;
		rc = add_layer(src, want, p, err);
	}
	json_decref(mf);
	return rc < 0 ? cx_err_wrap(err, "docker archive") : 0;
}

int imgsrc_load(struct img_src *src, const char *dir, cx_err *err)
{
	memset(src, 0, sizeof *src);
	src->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (src->root_fd < 0)
		return cx_err_set(err, errno, "open %s", dir);
	src->layers = calloc(CX_CAP_IMAGE_LAYERS, sizeof *src->layers);
	if (!src->layers)
		return cx_err_set(err, ENOMEM, "layers");
	struct stat sb;
	int rc;
	if (fstatat(src->root_fd, "index.json", &sb, 0) == 0)
		rc = load_oci(src, err);
	else if (fstatat(src->root_fd, "manifest.json", &sb, 0) == 0)
		rc = load_docker(src, err);
	else
		rc = cx_err_set(err, EINVAL, "%s: neither index.json nor manifest.json", dir);
	if (rc == 0 && !json_is_object(src->config))
		rc = cx_err_set(err, EINVAL, "image config is not an object");
	return rc;
}

void imgsrc_free(struct img_src *src)
{
	if (src->root_fd >= 0)
		close(src->root_fd);
	src->root_fd = -1;
	json_decref(src->config);
	src->config = NULL;
	free(src->layers);
	src->layers = NULL;
}
