/* test_pkgjson.c — the package.json reader of the npm cache: bytes in, a
 * struct out (bins as a string or an object, the main-bin rule, what is
 * left out and what is refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkgjson.h"

/* Parses s (its strlen), which must be accepted. */
static pkgjson parse_ok(const char *s)
{
	pkgjson pj;
	cx_err err = CX_ERR_INIT;
	if (pkgjson_parse(s, strlen(s), &pj, &err) != 0)
		fail_msg("%s\n  expected 0, got -1 (err: \"%s\")", s, err.msg);
	return pj;
}

/* Parses len bytes of s, which must be refused with an error containing want. */
static void parse_refused(const char *s, size_t len, const char *want)
{
	pkgjson pj;
	cx_err err = CX_ERR_INIT;
	if (pkgjson_parse(s, len, &pj, &err) != -1)
		fail_msg("%.200s\n  expected -1, got 0", s);
	if (!strstr(err.msg, want))
		fail_msg("%.200s\n  error should contain \"%s\"\n  actual: \"%s\"", s, want,
			 err.msg);
	assert_null(pj.bins);
	assert_null(pj.ignored);
	pkgjson_free(&pj); /* a no-op after a refusal */
}

/* bins must be exactly want (a JSON object text). */
static void expect_bins(const pkgjson *pj, const char *want)
{
	json_t *w = json_loads(want, 0, NULL);
	assert_non_null(w);
	if (!json_equal(w, pj->bins)) {
		char *got = json_dumps(pj->bins, JSON_COMPACT);
		fail_msg("bins: expected %s, got %s", want, got ? got : "NULL");
	}
	json_decref(w);
}

static void test_bin_string(void **state)
{
	(void)state;
	pkgjson pj = parse_ok("{\"name\":\"tool\",\"version\":\"1.2.3\",\"bin\":\"cli.js\"}");
	assert_string_equal("tool", pj.name);
	assert_string_equal("1.2.3", pj.version);
	expect_bins(&pj, "{\"tool\":\"cli.js\"}");
	assert_string_equal("tool", pj.main_bin);
	assert_int_equal(0, json_array_size(pj.ignored));
	pkgjson_free(&pj);
	pkgjson_free(&pj); /* idempotent */

	/* a string names the bin after the unscoped package name */
	pj = parse_ok("{\"name\":\"@acme/widget\",\"version\":\"1.0.0-beta.1\",\"bin\":\"bin/w\"}");
	assert_string_equal("@acme/widget", pj.name);
	assert_string_equal("1.0.0-beta.1", pj.version);
	expect_bins(&pj, "{\"widget\":\"bin/w\"}");
	assert_string_equal("widget", pj.main_bin);
	pkgjson_free(&pj);

	/* an unsafe string path means no bin (and, as before, no warning entry) */
	pj = parse_ok("{\"name\":\"tool\",\"bin\":\"/usr/bin/env\"}");
	expect_bins(&pj, "{}");
	assert_string_equal("", pj.main_bin);
	assert_int_equal(0, json_array_size(pj.ignored));
	pkgjson_free(&pj);
	pj = parse_ok("{\"name\":\"tool\",\"bin\":\"../../x.js\"}");
	expect_bins(&pj, "{}");
	pkgjson_free(&pj);
}

static void test_bin_object_main_rule(void **state)
{
	(void)state;
	static const struct {
		const char *json, *want;
	} cases[] = {
	    /* the only one */
	    {"{\"name\":\"widget\",\"bin\":{\"solo\":\"s.js\"}}", "solo"},
	    /* else the one named like the unscoped package name */
	    {"{\"name\":\"widget\",\"bin\":{\"other\":\"a.js\",\"widget\":\"b.js\"}}", "widget"},
	    {"{\"name\":\"@acme/widget\",\"bin\":{\"a\":\"a.js\",\"widget\":\"w.js\"}}", "widget"},
	    /* else the first, in file order */
	    {"{\"name\":\"widget\",\"bin\":{\"zeta\":\"z.js\",\"alpha\":\"a.js\"}}", "zeta"},
	    {"{\"name\":\"@acme/widget\",\"bin\":{\"b\":\"b.js\",\"@acme\":\"a.js\"}}", "b"},
	    /* none */
	    {"{\"name\":\"widget\",\"bin\":{}}", ""},
	    {"{\"name\":\"widget\",\"bin\":null}", ""},
	    {"{\"name\":\"widget\",\"bin\":[\"a.js\"]}", ""},
	    {"{\"name\":\"widget\"}", ""},
	    /* a left-out entry is not a candidate */
	    {"{\"name\":\"widget\",\"bin\":{\"widget\":\"/abs\",\"ok\":\"ok.js\"}}", "ok"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		pkgjson pj = parse_ok(cases[i].json);
		if (strcmp(pj.main_bin, cases[i].want))
			fail_msg("%s: main bin: expected \"%s\", got \"%s\"", cases[i].json,
				 cases[i].want, pj.main_bin);
		pkgjson_free(&pj);
	}

	/* the rule on its own, as the cache applies it to a stored row */
	json_t *bins = json_pack("{s:s,s:s}", "first", "f.js", "tool", "t.js");
	char out[PKGJSON_BIN_MAX];
	pkgjson_main_bin(bins, "@scope/tool", out);
	assert_string_equal("tool", out);
	pkgjson_main_bin(bins, "other", out);
	assert_string_equal("first", out);
	json_decref(bins);
	bins = json_object();
	pkgjson_main_bin(bins, "tool", out);
	assert_string_equal("", out);
	json_decref(bins);
}

static void test_bins_left_out(void **state)
{
	(void)state;
	/* absolute paths, ".." components, bad names and non-strings are left out;
	 * names npm would link and paths inside the package are kept */
	pkgjson pj = parse_ok("{\"name\":\"tool\",\"bin\":{"
			      "\"abs\":\"/bin/sh\","
			      "\"up\":\"../x.js\","
			      "\"deep\":\"a/../../x.js\","
			      "\"dotdot\":\"..\","
			      "\"trail\":\"a/..\","
			      "\"empty\":\"\","
			      "\"num\":5,"
			      "\"../evil\":\"x.js\","
			      "\".hidden\":\"h.js\","
			      "\"sp ace\":\"s.js\","
			      "\"a/b\":\"s.js\","
			      "\"\":\"e.js\","
			      "\"ok\":\"./bin/ok.js\","
			      "\"dots\":\"a/..b/c.js\","
			      "\"Tool_2.x~+@\":\"lib//t.js\"}}");
	expect_bins(&pj, "{\"ok\":\"./bin/ok.js\",\"dots\":\"a/..b/c.js\","
			 "\"Tool_2.x~+@\":\"lib//t.js\"}");
	json_t *want =
	    json_pack("[s,s,s,s,s,s,s,s,s,s,s,s]", "abs", "up", "deep", "dotdot", "trail", "empty",
		      "num", "../evil", ".hidden", "sp ace", "a/b", "");
	if (!json_equal(want, pj.ignored)) {
		char *got = json_dumps(pj.ignored, JSON_COMPACT);
		fail_msg("ignored: got %s", got ? got : "NULL");
	}
	json_decref(want);
	assert_string_equal("ok", pj.main_bin);
	pkgjson_free(&pj);

	/* bin names up to 127 chars, paths up to 1023 bytes */
	char name[PKGJSON_BIN_MAX + 1], path[1025], json[2400];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	memset(path, 'p', sizeof path - 1);
	path[sizeof path - 1] = '\0';
	snprintf(json, sizeof json, "{\"name\":\"x\",\"bin\":{\"%.127s\":\"%.1023s\"}}", name,
		 path);
	pj = parse_ok(json);
	assert_int_equal(1, json_object_size(pj.bins));
	assert_int_equal(127, strlen(pj.main_bin));
	pkgjson_free(&pj);
	snprintf(json, sizeof json, "{\"name\":\"x\",\"bin\":{\"%s\":\"p\",\"%.3s\":\"%s\"}}", name,
		 name, path);
	pj = parse_ok(json);
	assert_int_equal(0, json_object_size(pj.bins));
	assert_int_equal(2, json_array_size(pj.ignored));
	pkgjson_free(&pj);
}

static void test_missing_fields(void **state)
{
	(void)state;
	pkgjson pj = parse_ok("{}");
	assert_string_equal("", pj.name);
	assert_string_equal("", pj.version);
	expect_bins(&pj, "{}");
	assert_int_equal(0, json_array_size(pj.ignored));
	assert_string_equal("", pj.main_bin);
	pkgjson_free(&pj);

	/* wrong types count as absent; the caller compares the name */
	pj = parse_ok("{\"name\":5,\"version\":[1],\"bin\":7,\"other\":{}}");
	assert_string_equal("", pj.name);
	assert_string_equal("", pj.version);
	expect_bins(&pj, "{}");
	pkgjson_free(&pj);

	/* no name: a string bin has no name to take */
	pj = parse_ok("{\"bin\":\"cli.js\"}");
	expect_bins(&pj, "{}");
	pkgjson_free(&pj);
}

static void test_refused(void **state)
{
	(void)state;
	parse_refused("[]", 2, "not a JSON object");
	parse_refused("[{\"name\":\"tool\"}]", 17, "not a JSON object");
	/* a bare scalar is not even a JSON text to the decoder */
	parse_refused("\"tool\"", 6, "line 1");
	parse_refused("42", 2, "line 1");
	parse_refused("null", 4, "line 1");
	parse_refused("{", 1, "line 1");
	parse_refused("", 0, "line");
	parse_refused("{\"name\":\"a\\u0000b\"}", 18, "line 1");
	parse_refused("{\"name\":\"a\"} {}", 15, "line 1");

	/* names and versions longer than a spec allows */
	char json[600], name[NPM_NAME_MAX + 2], version[NPM_VERSION_MAX + 2];
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	memset(version, '1', sizeof version - 1);
	version[sizeof version - 1] = '\0';
	snprintf(json, sizeof json, "{\"name\":\"%s\"}", name);
	parse_refused(json, strlen(json), "\"name\" is over 214 bytes");
	snprintf(json, sizeof json, "{\"name\":\"%.214s\",\"version\":\"%.64s\"}", name, version);
	pkgjson pj = parse_ok(json);
	assert_int_equal(NPM_NAME_MAX, strlen(pj.name));
	assert_int_equal(NPM_VERSION_MAX, strlen(pj.version));
	pkgjson_free(&pj);
	snprintf(json, sizeof json, "{\"version\":\"%s\"}", version);
	parse_refused(json, strlen(json), "\"version\" is over 64 bytes");
}

static void test_size_cap_and_length(void **state)
{
	(void)state;
	/* PKGJSON_MAX bytes pass, one more is refused before parsing */
	char *big = malloc(PKGJSON_MAX + 1);
	assert_non_null(big);
	const char *head = "{\"name\":\"tool\",\"bin\":\"cli.js\"}";
	memset(big, ' ', PKGJSON_MAX + 1);
	memcpy(big, head, strlen(head));
	pkgjson pj;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(0, pkgjson_parse(big, PKGJSON_MAX, &pj, &err));
	assert_string_equal("tool", pj.main_bin);
	pkgjson_free(&pj);
	parse_refused(big, PKGJSON_MAX + 1, "over 1048576 bytes");
	free(big);

	/* only len bytes are read: no NUL needed, what follows is not looked at */
	const char buf[] = "{\"name\":\"tool\",\"bin\":\"a.js\"}GARBAGE";
	char *exact = malloc(sizeof buf - 1 - 7);
	assert_non_null(exact);
	memcpy(exact, buf, sizeof buf - 1 - 7);
	assert_int_equal(0, pkgjson_parse(exact, sizeof buf - 1 - 7, &pj, &err));
	expect_bins(&pj, "{\"tool\":\"a.js\"}");
	pkgjson_free(&pj);
	free(exact);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bin_string),	  cmocka_unit_test(test_bin_object_main_rule),
	    cmocka_unit_test(test_bins_left_out), cmocka_unit_test(test_missing_fields),
	    cmocka_unit_test(test_refused),	  cmocka_unit_test(test_size_cap_and_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
