/* Unit tests: egress policies (cortexd/egress/policy.h) — parsing and
 * normalising entries, the always-denied ranges and the operator's
 * exceptions, and the order of a decision (private, none, deny, open,
 * allowlist). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "egress.h"
#include "policy.h"

static struct egress_policy *parse(const char *json)
{
	json_error_t je;
	json_t *o = json_loads(json, 0, &je);
	assert_non_null(o);
	cx_err err = CX_ERR_INIT;
	struct egress_policy *p = pol_parse(o, EGRESS_MODE_OPEN, &err);
	json_decref(o);
	if (!p)
		fprintf(stderr, "parse %s: %s\n", json, err.msg);
	return p;
}

static struct sockaddr_storage ss;
static const struct sockaddr *addr(const char *a)
{
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, a, &v4->sin_addr) == 1)
		v4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, a, &v6->sin6_addr) == 1)
		v6->sin6_family = AF_INET6;
	else
		fail_msg("bad test address %s", a);
	return (const struct sockaddr *)&ss;
}

static char rule[POL_RULE_MAX];
static int allowed(const struct egress_policy *p, const struct egress_policy *exc, const char *name, int port,
		   const char *a)
{
	return pol_decide(p, exc, name, port, addr(a), rule, sizeof rule) == POL_ALLOW;
}

static void test_parse_errors(void **state)
{
	(void)state;
	const char *bad[] = {
	    "{\"mode\":\"sometimes\"}", "{\"mode\":1}", "{\"mode\":\"open\",\"x\":1}",
	    "{\"allow\":\"a.com\"}", "{\"allow\":[1]}", "{\"allow\":[\"\"]}", "{\"allow\":[\"a b.com\"]}",
	    "{\"allow\":[\"-a.com\"]}", "{\"allow\":[\"a..com\"]}", "{\"allow\":[\"a.com:0\"]}",
	    "{\"allow\":[\"a.com:65536\"]}", "{\"allow\":[\"a.com:x\"]}", "{\"deny\":[\"10.0.0.0/33\"]}",
	    "{\"deny\":[\"::/129\"]}", "{\"deny\":[\"10.0.0.0/\"]}", "{\"deny\":[\"a.com/8\"]}",
	    "{\"deny\":[\"*.\"]}", "{\"deny\":[\"**.a.com\"]}", "{\"deny\":[\"[::1\"]}", "{\"deny\":[\"[::1]x\"]}",
	    "[]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct egress_policy *p = parse(bad[i]);
		if (p)
			fail_msg("accepted %s", bad[i]);
	}
	/* Too many entries. */
	json_t *o = json_pack("{s:s,s:[]}", "mode", "allowlist", "allow");
	for (int i = 0; i <= POL_MAX_ENTRIES; i++) {
		char h[32];
		snprintf(h, sizeof h, "h%d.example.com", i);
		json_array_append_new(json_object_get(o, "allow"), json_string(h));
	}
	cx_err err = CX_ERR_INIT;
	assert_null(pol_parse(o, EGRESS_MODE_OPEN, &err));
	assert_non_null(strstr(err.msg, "at most"));
	json_decref(o);
}

static void test_normalise(void **state)
{
	(void)state;
	json_t *o = json_loads("{\"mode\":\"allowlist\",\"allow\":[\"API.GitHub.com.\",\"*.Example.COM:443\","
			       "\"10.1.2.3/8\",\"[::1]:8080\",\"1.2.3.4\",\"2001:DB8::/32\"]}",
			       0, NULL);
	json_t *n = egress_policy_normalise(o);
	char *s = json_dumps(n, JSON_COMPACT);
	assert_string_equal(s, "{\"mode\":\"allowlist\",\"allow\":[\"api.github.com\",\"*.example.com:443\","
			       "\"10.1.2.3/8\",\"[::1]:8080\",\"1.2.3.4\",\"2001:db8::/32\"],\"deny\":[]}");
	free(s);
	json_decref(n);
	json_decref(o);
}

static void test_private_always_denied(void **state)
{
	(void)state;
	struct egress_policy *open = pol_new_mode(EGRESS_MODE_OPEN);
	const char *priv[] = {"127.0.0.1", "127.9.9.9", "10.2.3.4", "172.16.0.1", "172.31.255.255", "192.168.1.1",
			      "169.254.169.254", "100.100.100.200", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1",
			      "::", "fe80::1", "fd00:ec2::254", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
			      "64:ff9b::a00:1", "2002:a00:1::1", "ff02::1"};
	for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++) {
		if (allowed(open, NULL, "h.example.com", 443, priv[i]))
			fail_msg("%s allowed", priv[i]);
		assert_non_null(strstr(rule, "private address"));
	}
	const char *pub[] = {"93.184.216.34", "172.32.0.1", "11.0.0.1", "2606:4700::1111", "::ffff:8.8.8.8"};
	for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++)
		if (!allowed(open, NULL, "h.example.com", 443, pub[i]))
			fail_msg("%s denied: %s", pub[i], rule);
	/* The operator's exceptions: exactly what they name. */
	struct egress_policy *exc = parse("{\"mode\":\"allowlist\",\"allow\":[\"127.0.0.1:8443\",\"10.9.0.0/16\"]}");
	assert_true(allowed(open, exc, "127.0.0.1", 8443, "127.0.0.1"));
	assert_false(allowed(open, exc, "127.0.0.1", 8444, "127.0.0.1"));
	assert_true(allowed(open, exc, "git.corp", 22, "10.9.3.4"));
	assert_false(allowed(open, exc, "git.corp", 22, "10.8.3.4"));
	/* An exception does not lift the user's own policy. */
	struct egress_policy *none = pol_new_mode(EGRESS_MODE_NONE);
	assert_false(allowed(none, exc, "127.0.0.1", 8443, "127.0.0.1"));
	assert_string_equal(rule, "mode none");
	pol_unref(none);
	pol_unref(exc);
	pol_unref(open);
}

static void test_order(void **state)
{
	(void)state;
	struct egress_policy *p =
	    parse("{\"mode\":\"allowlist\",\"allow\":[\"api.github.com\",\"*.npmjs.org:443\",\"93.184.0.0/16\"],"
		  "\"deny\":[\"evil.npmjs.org\",\"93.184.216.34\"]}");
	assert_non_null(p);
	assert_true(allowed(p, NULL, "api.github.com", 443, "140.82.1.1"));
	assert_string_equal(rule, "allow[0] api.github.com");
	assert_true(allowed(p, NULL, "registry.npmjs.org", 443, "104.16.1.1"));
	assert_false(allowed(p, NULL, "registry.npmjs.org", 80, "104.16.1.1")); /* port */
	assert_false(allowed(p, NULL, "npmjs.org", 443, "104.16.1.1"));         /* *.d is below d only */
	assert_false(allowed(p, NULL, "evil.npmjs.org", 443, "104.16.1.1"));
	assert_string_equal(rule, "deny[0] evil.npmjs.org");
	assert_true(allowed(p, NULL, "anything.test", 80, "93.184.1.1")); /* by CIDR */
	assert_false(allowed(p, NULL, "anything.test", 80, "93.184.216.34"));
	assert_string_equal(rule, "deny[1] 93.184.216.34");
	assert_false(allowed(p, NULL, "github.com", 443, "140.82.1.1"));
	assert_non_null(strstr(rule, "not in the allow list"));
	/* By name alone (before any lookup). */
	char r[POL_RULE_MAX];
	assert_true(pol_denied_by_name(p, "evil.npmjs.org", 443, r, sizeof r));
	assert_false(pol_denied_by_name(p, "api.github.com", 443, r, sizeof r));
	assert_false(pol_denied_by_name(p, "unknown.test", 443, r, sizeof r)); /* a CIDR may match */
	pol_unref(p);
	p = parse("{\"mode\":\"allowlist\",\"allow\":[\"*.example.com\"]}");
	assert_true(pol_denied_by_name(p, "other.test", 443, r, sizeof r));
	pol_unref(p);
	p = parse("{\"mode\":\"open\",\"deny\":[\"*.example.com\"]}");
	assert_true(allowed(p, NULL, "example.com", 443, "93.184.216.34"));
	assert_false(allowed(p, NULL, "a.b.example.com", 443, "93.184.216.34"));
	pol_unref(p);
}

static void test_norm_host(void **state)
{
	(void)state;
	char out[256];
	assert_int_equal(pol_norm_host("Api.GitHub.COM.", out, sizeof out), 0);
	assert_string_equal(out, "api.github.com");
	assert_int_equal(pol_norm_host("::1", out, sizeof out), 0);
	assert_int_equal(pol_norm_host("a_b.internal", out, sizeof out), 0);
	const char *bad[] = {"", ".", "a..b", "-a.com", "a-.com", "a b", "a/b", "a@b", "é.com", "a.com\r\nX: y"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (pol_norm_host(bad[i], out, sizeof out) == 0)
			fail_msg("accepted host '%s'", bad[i]);
	char big[300];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = 0;
	assert_int_equal(pol_norm_host(big, out, sizeof out), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_normalise),
	    cmocka_unit_test(test_private_always_denied),
	    cmocka_unit_test(test_order),
	    cmocka_unit_test(test_norm_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
