/* Fuzz target: an egress policy {"mode","allow","deny"} (cortexd/egress/policy.c):
 * parse, normalise, parse the normalised form again (it must be accepted and
 * normalise to itself), and decide a few connections with it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "egress.h"
#include "fuzz.h"
#include "policy.h"

FUZZ_NO_INIT

static void decide_some(const struct egress_policy *p, const struct egress_policy *exc)
{
	static const char *const names[] = {"example.com", "a.b.example.com", "10.0.0.1", "::1", "localhost"};
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET, "10.0.0.1", &v4.sin_addr);
	inet_pton(AF_INET6, "::ffff:93.184.216.34", &v6.sin6_addr);
	char rule[POL_RULE_MAX];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		(void)pol_decide(p, exc, names[i], 443, (struct sockaddr *)&v4, rule, sizeof rule);
		(void)pol_decide(p, exc, names[i], 80, (struct sockaddr *)&v6, rule, sizeof rule);
		(void)pol_denied_by_name(p, names[i], 443, rule, sizeof rule);
		if (!memchr(rule, 0, sizeof rule))
			FUZZ_FAIL();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *o = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	if (!o) {
		/* not JSON: a host name as a client names it */
		char in[300], out[300];
		size_t n = size < sizeof in - 1 ? size : sizeof in - 1;
		memcpy(in, data, n);
		in[n] = '\0';
		if (pol_norm_host(in, out, sizeof out) == 0)
			(void)pol_host_match("*.example.com", out);
		return 0;
	}
	cx_err err = {0};
	struct egress_policy *p = pol_parse(o, EGRESS_MODE_ALLOWLIST, &err);
	/* the operator's allow_private exceptions: the same entries, as egress_start reads them */
	json_t *allow = json_object_get(o, "allow");
	json_t *ej = json_is_array(allow) ? json_pack("{s:s,s:O}", "mode", "allowlist", "allow", allow) : NULL;
	struct egress_policy *exc = ej ? pol_parse(ej, EGRESS_MODE_ALLOWLIST, &err) : NULL;
	json_decref(ej);
	if (p) {
		json_t *norm = pol_to_json(p);
		struct egress_policy *q = pol_parse(norm, EGRESS_MODE_ALLOWLIST, &err);
		if (!q)
			FUZZ_FAIL(); /* what we print must parse */
		json_t *norm2 = pol_to_json(q);
		if (!json_equal(norm, norm2))
			FUZZ_FAIL();
		decide_some(p, exc);
		json_decref(norm2);
		json_decref(norm);
		pol_unref(q);
		pol_unref(p);
	}
	pol_unref(exc);
	json_decref(o);
	return 0;
}
