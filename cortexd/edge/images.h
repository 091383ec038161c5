/* images.h — the /v1/images routes (images.c). */
#ifndef CORTEX_IMAGES_ROUTES_H
#define CORTEX_IMAGES_ROUTES_H

#include "edge.h"

/* 1 if this request's body is streamed to a file (a build context, an import). */
int images_upload_route(const char *method, const char *path);
/* path starts with "/v1/images". */
void images_route(struct cortexd *d, const char *user, enum api_who who, const struct api_req *req,
		  struct api_resp *resp);
/* Is the latest build of name still running (the log stream follows it)? */
int images_log_running(struct cortexd *d, const char *name);

#endif
