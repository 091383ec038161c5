/* openapi.c — GET /v1/openapi.json: docs/openapi.json, the OpenAPI 3.1
 * description of every route and WebSocket frame, compiled in at build time
 * (cmake/embed_json.cmake), so what is served is the file the e2e test
 * validates real responses against.  No auth; an ETag from its SHA-256, and
 * 304 for an If-None-Match that names it. */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

/* gen/openapi_json.c */
extern const unsigned char cx_openapi_json[];
extern const size_t cx_openapi_json_len;
extern const char cx_openapi_etag[];

/* Does an If-None-Match list ("a", W/"b", or *) name our tag? */
static int etag_matches(const char *inm)
{
	if (!strcmp(inm, "*"))
		return 1;
	size_t n = strlen(cx_openapi_etag);
	for (const char *p = inm; (p = strstr(p, cx_openapi_etag)); p += n)
		if ((p == inm || strchr(" ,/", p[-1])) && (!p[n] || strchr(" ,", p[n])))
			return 1;
	return 0;
}

void openapi_route(const struct api_req *req, struct api_resp *resp)
{
	if (strcmp(req->method, "GET")) {
		api_error(resp, 405, "method_not_allowed", "use GET");
		return;
	}
	if (req->if_none_match && etag_matches(req->if_none_match)) {
		api_reply(resp, 304, NULL);
		resp->etag = cx_openapi_etag;
		return;
	}
	char *body = malloc(cx_openapi_json_len + 1);
	if (!body) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	memcpy(body, cx_openapi_json, cx_openapi_json_len + 1); /* NUL-terminated: text, not bytes */
	api_reply(resp, 200, NULL);
	resp->body = body;
	resp->etag = cx_openapi_etag;
}
