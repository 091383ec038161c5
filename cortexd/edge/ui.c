/* ui.c — GET / and GET /ui/<file>: the embedded dashboard (ui.h).
 * Every answer carries a strict Content-Security-Policy (this origin only: no
 * inline script or style, no outside font, script, image or connection), and
 * is revalidated by ETag on each load ("no-cache" + 304), so a new cortexd
 * binary is never shadowed by a cached page. */
#include "ui.h"

#include <stdlib.h>
#include <string.h>

/* Name and value pairs (lws wants the name with its colon), NULL-ended. */
static const char *const ui_headers[] = {
	"content-security-policy:",
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"x-content-type-options:", "nosniff",
	"referrer-policy:", "no-referrer",
	"x-frame-options:", "DENY",
	"cache-control:", "no-cache",
	NULL,
};

int ui_is_route(const char *path)
{
	return !strcmp(path, "/") || !strncmp(path, "/ui/", 4);
}

static const struct ui_asset *ui_find(const char *path)
{
	if (!strcmp(path, "/"))
		path = "/ui/index.html";
	for (size_t i = 0; i < ui_assets_n; i++)
		if (!strcmp(ui_assets[i].path, path))
			return &ui_assets[i];
	return NULL;
}

/* An If-None-Match list ("a", W/"b", *) holds etag? */
static int etag_listed(const char *inm, const char *etag)
{
	if (!inm || !inm[0])
		return 0;
	if (!strcmp(inm, "*"))
		return 1;
	size_t n = strlen(etag);
	for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag))
		if ((p == inm || p[-1] == ' ' || p[-1] == ',' || p[-1] == '/') &&
		    (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return 1;
	return 0;
}

void ui_route(const struct api_req *req, struct api_resp *resp)
{
	if (strcmp(req->method, "GET")) {
		api_error(resp, 405, "method_not_allowed", "use GET");
		return;
	}
	const struct ui_asset *a = ui_find(req->path);
	if (!a) {
		api_error(resp, 404, "not_found", "no such dashboard file: %.200s", req->path);
		return;
	}
	resp->headers = ui_headers;
	if (etag_listed(req->if_none_match, a->etag)) {
		api_reply(resp, 304, NULL); /* clears etag: set it after */
		resp->etag = a->etag;
		return;
	}
	resp->etag = a->etag;
	char *b = malloc(a->len + 1);
	if (!b) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	memcpy(b, a->data, a->len);
	b[a->len] = '\0';
	free(resp->body);
	resp->status = 200;
	resp->body = b;
	resp->body_len = a->len;
	resp->ctype = a->ctype;
}
