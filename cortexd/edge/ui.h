/* ui.h — the dashboard (docs/operations.md#dashboard): the static files of
 * dashboard/, embedded at build time (cmake/embed_ui.cmake writes ui_assets.c
 * from them), served at GET / and GET /ui/<file> without a token.  The page
 * holds no data of its own: it signs in with a token the user types and calls
 * the same routes as every other client. */
#ifndef CORTEX_UI_H
#define CORTEX_UI_H

#include <stddef.h>

#include "edge.h"

struct ui_asset {
	const char *path;  /* "/ui/app.js"; index.html is also "/" */
	const char *ctype;
	const char *etag;  /* "\"<16 hex of its sha256>\"" */
	const unsigned char *data;
	size_t len;
};
/* Written by cmake/embed_ui.cmake into the build dir. */
extern const struct ui_asset ui_assets[];
extern const size_t ui_assets_n;

/* Is path the dashboard's ("/", "/ui/...")? */
int ui_is_route(const char *path);
/* Answer a dashboard request: the file (200, or 304 when req->if_none_match
 * names its etag), 404, or 405 for anything but GET. */
void ui_route(const struct api_req *req, struct api_resp *resp);

#endif
