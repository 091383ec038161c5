/* imgsrc.h — what an image source (an OCI layout or a `docker save` dir,
 * already on disk) holds: its config and its layer blobs, every path opened
 * beneath the source dir (openat2 RESOLVE_BENEATH), every JSON blob's sha256
 * checked against its name.  Internal to container/. */
#ifndef CORTEX_IMGSRC_H
#define CORTEX_IMGSRC_H

#include <jansson.h>
#include <stddef.h>

#include "cx.h"

struct img_layer {
	char hex[65];	/* content address: sha256 the blob must hash to */
	char path[300]; /* blob path below the source dir */
};

struct img_src {
	int root_fd;
	char digest[72]; /* "sha256:<hex>" of the config */
	json_t *config;	 /* the image config (owned) */
	size_t n_layers;
	struct img_layer *layers; /* bottom first */
};

/* Read dir as an OCI layout (index.json) or a docker-archive (manifest.json). */
int imgsrc_load(struct img_src *src, const char *dir, cx_err *err);
void imgsrc_free(struct img_src *src);
/* fd of a regular file below the source dir. */
int imgsrc_open(const struct img_src *src, const char *rel, cx_err *err);

#endif
