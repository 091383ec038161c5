/* test_wslink.c — the ws-agent link's WebSocket client codec (wslink.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wslink.h"

static const char KEY[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455 §1.3's example */

static void test_handshake(void **state)
{
	(void)state;
	const char *why = NULL;
	static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: Upgrade\r\n"
				 "Sec-WebSocket-Accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n";
	assert_int_equal(wsl_check_reply(ok, sizeof ok - 1, KEY, &why), 0);
	static const char bad_accept[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
					 "Sec-WebSocket-Accept: AAAALMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
	assert_int_equal(wsl_check_reply(bad_accept, sizeof bad_accept - 1, KEY, &why), -1);
	assert_string_equal(why, "a wrong Sec-WebSocket-Accept");
	static const char not101[] = "HTTP/1.1 403 Forbidden\r\n\r\n";
	assert_int_equal(wsl_check_reply(not101, sizeof not101 - 1, KEY, &why), -1);
	char req[512];
	assert_true(wsl_request(req, sizeof req, "cortex-agent", KEY) > 0);
	assert_non_null(strstr(req, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
	assert_int_equal(wsl_request(req, 16, "cortex-agent", KEY), -1);
	char k1[25], k2[25];
	wsl_new_key(k1);
	wsl_new_key(k2);
	assert_int_equal(strlen(k1), 24);
	assert_string_not_equal(k1, k2);
}

struct got {
	char data[256];
	size_t n;
	int pings, closes;
};
static int deliver(void *arg, enum wsl_event ev, const uint8_t *p, size_t n)
{
	struct got *g = arg;
	if (ev == WSL_DATA) {
		memcpy(g->data + g->n, p, n);
		g->n += n;
	} else if (ev == WSL_PING) {
		g->pings++;
	} else {
		g->closes++;
		return 1;
	}
	return 0;
}

static void test_frames_any_cut(void **state)
{
	(void)state;
	/* binary "hello", text "abc" with a 16-bit length, a ping, a pong,
	 * a fragmented "xy"+"z", then a close */
	static const uint8_t in[] = {0x82, 5, 'h', 'e', 'l', 'l', 'o', 0x81, 126, 0, 3, 'a', 'b', 'c',
				     0x89, 2, 'h', 'i', 0x8a, 0, 0x02, 2, 'x', 'y', 0x80, 1, 'z', 0x88, 2, 3, 0xe8};
	for (size_t step = 1; step <= sizeof in; step++) {
		struct wsl_rx rx;
		memset(&rx, 0, sizeof rx);
		struct got g = {0};
		const char *why = NULL;
		int rc = 0;
		for (size_t off = 0; off < sizeof in && !rc; off += step) {
			size_t k = sizeof in - off < step ? sizeof in - off : step;
			rc = wsl_feed(&rx, in + off, k, deliver, &g, &why);
		}
		assert_int_equal(rc, 1); /* stopped by the close */
		assert_int_equal(g.n, 11);
		assert_memory_equal(g.data, "helloabcxyz", 11);
		assert_int_equal(g.pings, 1);
		assert_int_equal(g.closes, 1);
	}
}

static void test_frames_refused(void **state)
{
	(void)state;
	static const struct {
		uint8_t b[16];
		size_t n;
		const char *why;
	} bad[] = {
	    {{0x82, 0x85, 1, 2, 3, 4, 'h'}, 7, "a masked frame from the server"},
	    {{0xc2, 1, 'x'}, 3, "RSV bits set (no extension was negotiated)"},
	    {{0x09, 0}, 2, "a fragmented or oversized control frame"},
	    {{0x89, 126, 0, 200}, 4, "a fragmented or oversized control frame"},
	    {{0x83, 0}, 2, "an unknown data opcode"},
	    {{0x8b, 0}, 2, "an unknown control opcode"},
	    {{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, 10, "a 64-bit length with the top bit set"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct wsl_rx rx;
		memset(&rx, 0, sizeof rx);
		struct got g = {0};
		const char *why = NULL;
		assert_int_equal(wsl_feed(&rx, bad[i].b, bad[i].n, deliver, &g, &why), -1);
		assert_string_equal(why, bad[i].why);
	}
}

static void test_client_header(void **state)
{
	(void)state;
	uint8_t hdr[14], mask[4] = {1, 2, 3, 4};
	assert_int_equal(wsl_header(hdr, 1, 5, mask), 6);
	assert_int_equal(hdr[0], 0x81);
	assert_int_equal(hdr[1], 0x85);
	assert_int_equal(wsl_header(hdr, 1, 300, mask), 8);
	assert_int_equal(hdr[1], 0x80 | 126);
	assert_int_equal((hdr[2] << 8) | hdr[3], 300);
	assert_int_equal(wsl_header(hdr, 2, 70000, mask), 14);
	assert_int_equal(hdr[1], 0x80 | 127);
	assert_memory_equal(hdr + 10, mask, 4);
	uint8_t p[6] = "hello";
	wsl_mask(p, 5, mask);
	assert_int_equal(p[0], 'h' ^ 1);
	assert_int_equal(p[4], 'o' ^ 1);
	wsl_mask(p, 5, mask);
	assert_memory_equal(p, "hello", 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_handshake),
	    cmocka_unit_test(test_frames_any_cut),
	    cmocka_unit_test(test_frames_refused),
	    cmocka_unit_test(test_client_header),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
