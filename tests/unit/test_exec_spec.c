/* test_exec_spec.c — exec_spec_parse (cortexd/core/exec_spec.c): what an exec
 * frame or a POST .../exec body may say, and the message for what it may not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "exec.h"

static int parse(const char *txt, int http, struct exec_spec *sp, char *msg, size_t cap)
{
	json_error_t je;
	json_t *o = json_loads(txt, JSON_ALLOW_NUL, &je);
	assert_non_null(o);
	config c;
	memset(&c, 0, sizeof c);
	c.exec_max_timeout_s = 3600;
	c.exec_default_timeout_s = 60;
	int rc = exec_spec_parse(o, http, &c, sp, msg, cap);
	json_decref(o);
	return rc;
}

static void test_good(void **state)
{
	(void)state;
	struct exec_spec sp;
	char msg[300];
	assert_int_equal(parse("{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\",\"-l\"],\"env\":[\"A=1\",\"_B2=x=y\"],"
			       "\"cwd\":\"/home/agent/x\",\"timeout_s\":5,\"pty\":{\"cols\":100,\"rows\":30}}",
			       0, &sp, msg, sizeof msg),
			 0);
	assert_string_equal(sp.id, "a");
	assert_string_equal(sp.argv[0], "ls");
	assert_string_equal(sp.argv[1], "-l");
	assert_null(sp.argv[2]);
	assert_string_equal(sp.env[1], "_B2=x=y");
	assert_string_equal(sp.cwd, "/home/agent/x");
	assert_int_equal(sp.timeout_s, 5);
	assert_true(sp.pty && sp.cols == 100 && sp.rows == 30);
	exec_spec_clear(&sp);
	/* Defaults: /workspace, no timeout on the WebSocket, 60 s for a POST. */
	assert_int_equal(parse("{\"type\":\"exec\",\"id\":\"b\",\"cmd\":[\"/bin/true\"],\"pty\":true}", 0, &sp, msg, sizeof msg), 0);
	assert_string_equal(sp.cwd, "/workspace");
	assert_true(sp.timeout_s == 0 && sp.pty && sp.cols == 80 && sp.rows == 24);
	exec_spec_clear(&sp);
	assert_int_equal(parse("{\"cmd\":[\"cat\"],\"stdin\":\"aGk=\",\"encoding\":\"base64\"}", 1, &sp, msg, sizeof msg), 0);
	assert_int_equal(sp.timeout_s, 60);
	assert_int_equal(sp.stdin_len, 2);
	assert_memory_equal(sp.stdin_data, "hi", 2);
	exec_spec_clear(&sp);
	assert_int_equal(parse("{\"cmd\":[\"cat\"],\"timeout_s\":0}", 1, &sp, msg, sizeof msg), 0);
	assert_int_equal(sp.timeout_s, 3600); /* a one-shot always ends */
	exec_spec_clear(&sp);
}

static void test_bad(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		int http;
		const char *says;
	} bad[] = {
	    {"{\"type\":\"exec\",\"id\":\"a\"}", 0, "cmd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[]}", 0, "cmd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"\"]}", 0, "cmd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[1]}", 0, "cmd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"a\\u0000b\"]}", 0, "NUL"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"-rf\"]}", 0, "absolute"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"A=b\"]}", 0, "absolute"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"cwd\":\"/etc\"}", 0, "cwd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"cwd\":\"/workspace/../etc\"}", 0, "cwd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"cwd\":\"/workspace//x\"}", 0, "cwd"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"env\":[\"=x\"]}", 0, "env"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"env\":[\"A-B=x\"]}", 0, "env"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"env\":\"A=1\"}", 0, "env"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"timeout_s\":3601}", 0, "timeout_s"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"timeout_s\":1.5}", 0, "timeout_s"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"pty\":{\"cols\":1001}}", 0, "pty"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"pty\":\"yes\"}", 0, "pty"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"encoding\":\"latin1\"}", 0, "encoding"},
	    {"{\"type\":\"exec\",\"id\":\"a\",\"cmd\":[\"ls\"],\"stdin\":\"x\"}", 0, "stdin"},
	    {"{\"cmd\":[\"ls\"],\"pty\":true}", 1, "pty"},
	    {"{\"cmd\":[\"ls\"],\"stdin\":5}", 1, "stdin"},
	    {"{\"cmd\":[\"ls\"],\"stdin\":\"!!\",\"encoding\":\"base64\"}", 1, "base64"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct exec_spec sp;
		char msg[300] = "";
		int rc = parse(bad[i].json, bad[i].http, &sp, msg, sizeof msg);
		exec_spec_clear(&sp);
		if (rc != -1 || !strstr(msg, bad[i].says))
			fail_msg("%s: expected -1 naming \"%s\", got %d \"%s\"", bad[i].json, bad[i].says, rc, msg);
	}
}

static void test_caps(void **state)
{
	(void)state;
	/* 1025 args; 257 env entries; 100 KiB of strings. */
	json_t *o = json_pack("{s:s,s:s}", "type", "exec", "id", "x"), *a = json_array();
	for (int i = 0; i < 1025; i++)
		json_array_append_new(a, json_string("a"));
	json_object_set_new(o, "cmd", a);
	struct exec_spec sp;
	char msg[300];
	assert_int_equal(exec_spec_parse(o, 0, NULL, &sp, msg, sizeof msg), -1);
	exec_spec_clear(&sp);
	json_array_clear(a);
	json_array_append_new(a, json_string("ls"));
	json_t *e = json_array();
	for (int i = 0; i < 257; i++)
		json_array_append_new(e, json_string("A=1"));
	json_object_set_new(o, "env", e);
	assert_int_equal(exec_spec_parse(o, 0, NULL, &sp, msg, sizeof msg), -1);
	assert_non_null(strstr(msg, "256"));
	exec_spec_clear(&sp);
	json_array_clear(e);
	char *big = malloc(100 << 10);
	memset(big, 'x', (100 << 10) - 1);
	big[(100 << 10) - 1] = '\0';
	json_array_append_new(a, json_string(big));
	free(big);
	assert_int_equal(exec_spec_parse(o, 0, NULL, &sp, msg, sizeof msg), -1);
	assert_non_null(strstr(msg, "96 KiB"));
	exec_spec_clear(&sp);
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_caps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
