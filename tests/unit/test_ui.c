/* Unit tests: the embedded dashboard (edge/ui.c and the table that
 * cmake/embed_ui.cmake generates): every file has a content type and an ETag,
 * / is index.html, what the page loads is embedded, a known ETag is a 304,
 * other methods 405, unknown files 404, and the security headers are set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ui.h"

static void reset(struct api_resp *r)
{
	free(r->body);
	memset(r, 0, sizeof *r);
}

static const char *header(const struct api_resp *r, const char *name)
{
	for (const char *const *h = r->headers; h && h[0]; h += 2)
		if (!strcmp(h[0], name))
			return h[1];
	return NULL;
}

static void test_table(void **state)
{
	(void)state;
	assert_true(ui_assets_n >= 5);
	int index = 0;
	for (size_t i = 0; i < ui_assets_n; i++) {
		const struct ui_asset *a = &ui_assets[i];
		assert_true(!strncmp(a->path, "/ui/", 4));
		assert_non_null(a->ctype);
		assert_int_equal(strlen(a->etag), 18); /* "<16 hex>" */
		assert_true(a->len > 0);
		assert_int_equal(a->data[a->len], 0); /* NUL-ended after its bytes */
		index += !strcmp(a->path, "/ui/index.html");
	}
	assert_int_equal(index, 1);
}

static void test_serve(void **state)
{
	(void)state;
	struct api_resp r = {0};
	struct api_req q = {.method = "GET", .path = "/"};
	ui_route(&q, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.ctype, "text/html; charset=utf-8");
	assert_non_null(strstr(r.body, "<!doctype html>"));
	const char *csp = header(&r, "content-security-policy:");
	assert_non_null(csp);
	assert_non_null(strstr(csp, "default-src 'none'"));
	assert_null(strstr(csp, "unsafe"));
	assert_string_equal(header(&r, "cache-control:"), "no-cache");
	assert_string_equal(header(&r, "x-content-type-options:"), "nosniff");
	const char *etag = r.etag;
	assert_non_null(etag);

	/* Everything the page loads (src= and href= under /ui/) is embedded. */
	char *html = strdup(r.body);
	for (const char *p = html; (p = strstr(p, "=\"/ui/"));) {
		p += 2;
		const char *end = strchr(p, '"');
		char path[128];
		snprintf(path, sizeof path, "%.*s", (int)(end - p), p);
		struct api_resp a = {0};
		struct api_req g = {.method = "GET", .path = path};
		ui_route(&g, &a);
		if (a.status != 200)
			fail_msg("index.html loads %s, which is not embedded (%d)", path, a.status);
		reset(&a);
	}
	free(html);

	/* Revalidation: its ETag (alone, in a list, weak) -> 304; another -> 200. */
	char list[128];
	snprintf(list, sizeof list, "\"0000000000000000\", W/%s", etag);
	const char *inm[] = {etag, list, "*"};
	for (size_t i = 0; i < 3; i++) {
		reset(&r);
		struct api_req c = {.method = "GET", .path = "/", .if_none_match = inm[i]};
		ui_route(&c, &r);
		assert_int_equal(r.status, 304);
		assert_null(r.body);
		assert_string_equal(r.etag, etag);
	}
	reset(&r);
	struct api_req other = {.method = "GET", .path = "/ui/index.html", .if_none_match = "\"0123456789abcdef\""};
	ui_route(&other, &r);
	assert_int_equal(r.status, 200);
	reset(&r);

	struct api_req js = {.method = "GET", .path = "/ui/app.js"};
	ui_route(&js, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.ctype, "text/javascript; charset=utf-8");
	reset(&r);
}

static void test_refusals(void **state)
{
	(void)state;
	struct api_resp r = {0};
	struct api_req post = {.method = "POST", .path = "/"};
	ui_route(&post, &r);
	assert_int_equal(r.status, 405);
	reset(&r);
	const char *bad[] = {"/ui/", "/ui/nothing.js", "/ui/../metrics", "/ui/index.html/", "/ui/README.md"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct api_req q = {.method = "GET", .path = bad[i]};
		ui_route(&q, &r);
		assert_int_equal(r.status, 404);
		assert_non_null(strstr(r.body, "not_found"));
		assert_null(r.headers);
		reset(&r);
	}
	assert_true(ui_is_route("/") && ui_is_route("/ui/app.js"));
	assert_false(ui_is_route("/v1/sessions") || ui_is_route("/uix") || ui_is_route("/metrics"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
