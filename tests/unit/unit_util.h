/* unit_util.h — what the daemon-side unit tests share: a fresh temp dir
 * under $CORTEX_TEST_TMP, an int assertion that names what it checks, and a
 * call into the HTTP routes without a socket.  (Sandbox tests have
 * sandbox_fixture.h.)  Not a test itself: CMake globs only test_*.c. */
#ifndef CORTEX_UNIT_UTIL_H
#define CORTEX_UNIT_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define assert_int_eq_msg(actual, expected, what)                                                  \
	do {                                                                                       \
		long long a_ = (long long)(actual), e_ = (long long)(expected);                    \
		if (a_ != e_)                                                                      \
			fail_msg("%s: expected %lld, got %lld", what, e_, a_);                     \
	} while (0)

/* mkdtemp $CORTEX_TEST_TMP/<prefix>-XXXXXX (or /tmp) into out; 0 or -1. */
static inline int unit_tmpdir(const char *prefix, char *out, size_t cap)
{
	const char *base = getenv("CORTEX_TEST_TMP");
	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0755);
	if ((size_t)snprintf(out, cap, "%s/%s-XXXXXX", base, prefix) >= cap)
		return -1;
	return mkdtemp(out) ? 0 : -1;
}

#ifdef CORTEX_EDGE_H
/* The daemon of a unit test (what server.c builds in cortexd). */
static struct cortexd D;

/* One request through api_handle(); the caller frees resp.body. */
static inline struct api_resp unit_call(const char *method, const char *path, const char *token,
					const char *body)
{
	struct api_req r = {method, path, token, body, body ? strlen(body) : 0, NULL, NULL, NULL, NULL};
	struct api_resp resp = {0};
	api_handle(&D, &r, &resp);
	api_defer_finish(&resp); /* no worker pool here: the store write runs inline */
	return resp;
}
#endif

#endif
