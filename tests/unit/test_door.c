/* test_door.c — the door's verdict on a request head (cortexd/edge/door.c):
 * whole, not yet, or the status it is refused with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "caps.h"
#include "door.h"

static int check(const char *s, size_t *hl)
{
	return door_head_check(s, strlen(s), hl);
}

static void test_whole_and_partial(void **state)
{
	(void)state;
	size_t hl = 0;
	const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(check(get, &hl), 1);
	assert_int_equal(hl, strlen(get));
	/* a body after the head is not part of it */
	assert_int_equal(check("POST /v1/users HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", &hl), 1);
	assert_int_equal(hl, strlen("POST /v1/users HTTP/1.1\r\nContent-Length: 2\r\n\r\n"));
	/* bare LF line ends */
	assert_int_equal(check("GET / HTTP/1.1\nHost: x\n\n", &hl), 1);
	/* every prefix of a whole head is "not yet" */
	for (size_t i = 1; i < strlen(get); i++)
		assert_int_equal(door_head_check(get, i, &hl), 0);
}

static void test_refusals(void **state)
{
	(void)state;
	size_t hl = 0, n = CX_CAP_HTTP_HEAD + 100;
	char *b = malloc(n + 1);
	assert_non_null(b);
	/* target over the cap: 414, even before the line ends */
	memset(b, 'a', n);
	memcpy(b, "GET /", 5);
	assert_int_equal(door_head_check(b, CX_CAP_HTTP_URI + 10, &hl), 414);
	/* a head that fills the buffer without ending: 431 */
	memset(b, 'h', n);
	int k = snprintf(b, n, "GET / HTTP/1.1\r\nX: ");
	b[k] = 'h';
	assert_int_equal(door_head_check(b, CX_CAP_HTTP_HEAD, &hl), 431);
	/* too many fields: 431 */
	char *p = b;
	p += sprintf(p, "GET / HTTP/1.1\r\n");
	for (unsigned i = 0; i < CX_CAP_HTTP_FIELDS + 1; i++)
		p += sprintf(p, "X-%u: v\r\n", i);
	strcpy(p, "\r\n");
	assert_int_equal(check(b, &hl), 431);
	/* no method token: 400 */
	assert_int_equal(check("\x16\x03\x01\x02\x00", &hl), 400);
	assert_int_equal(check(" / HTTP/1.1\r\n\r\n", &hl), 400);
	assert_int_equal(check("AVERYVERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", &hl), 400);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole_and_partial),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
