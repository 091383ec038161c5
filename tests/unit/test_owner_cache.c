/* test_owner_cache.c — owner_cache_is_node_addr (core/owner_cache.c): the
 * addresses a preview owner trusts X-Forwarded-For/-Host from are the hosts
 * of the node URLs in nodes/ — literal IPv4/IPv6 and localhost — followed
 * as nodes come and go; anything else (a DNS name, garbage) matches nothing.
 * Over a real SQLite store and its watch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "owner.h"
#include "store.h"
#include "unit_util.h"

static void put_node(store *st, const char *id, const char *url)
{
	char key[64], val[256];
	cx_err err = CX_ERR_INIT;
	snprintf(key, sizeof key, "nodes/%s", id);
	int n = snprintf(val, sizeof val, "{\"id\":\"%s\",\"url\":\"%s\",\"pid\":1}", id, url);
	assert_int_eq_msg(store_put(st, key, val, (size_t)n, &err), 0, key);
}

/* Wait (up to 5 s) for the watch to apply a change: is_node_addr(ip) == want. */
static int settles(const char *ip, int want)
{
	for (int i = 0; i < 500; i++) {
		if (owner_cache_is_node_addr(ip) == want)
			return 1;
		usleep(10000);
	}
	return 0;
}

static void test_node_addresses(void **state)
{
	(void)state;
	char dir[512], db[600];
	assert_int_equal(unit_tmpdir("owner-cache", dir, sizeof dir), 0);
	snprintf(db, sizeof db, "%s/store.db", dir);
	store *st = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_eq_msg(store_open(&st, "sqlite", db, &err), 0, err.msg);
	put_node(st, "n1", "http://10.1.2.3:7001");
	put_node(st, "n2", "http://[fd00::7]:7002/");
	put_node(st, "n3", "https://node3.example:7003");
	assert_int_eq_msg(owner_cache_start(st, &err), 0, err.msg);

	assert_int_eq_msg(owner_cache_is_node_addr("10.1.2.3"), 1, "a literal IPv4 node host");
	assert_int_eq_msg(owner_cache_is_node_addr("::ffff:10.1.2.3"), 1, "the same, v4-mapped");
	assert_int_eq_msg(owner_cache_is_node_addr("fd00::7"), 1, "a bracketed IPv6 node host");
	assert_int_eq_msg(owner_cache_is_node_addr("fd00:0:0::7"), 1,
			  "the same, spelled otherwise");
	assert_int_eq_msg(owner_cache_is_node_addr("10.1.2.4"), 0, "another address");
	assert_int_eq_msg(owner_cache_is_node_addr("127.0.0.1"), 0, "loopback, no localhost node");
	assert_int_eq_msg(owner_cache_is_node_addr("node3.example"), 0,
			  "a DNS name is not an address");
	assert_int_eq_msg(owner_cache_is_node_addr(""), 0, "empty");
	assert_int_eq_msg(owner_cache_is_node_addr("10.1.2.3, 1.2.3.4"), 0, "garbage");
	assert_int_eq_msg(owner_cache_is_node_addr(NULL), 0, "NULL");

	/* followed by the watch: a node that comes, moves, goes */
	put_node(st, "n4", "http://localhost:7004");
	assert_true(settles("127.0.0.1", 1));
	assert_int_eq_msg(owner_cache_is_node_addr("::1"), 1, "localhost: ::1 too");
	put_node(st, "n1", "http://10.9.9.9:7001");
	assert_true(settles("10.1.2.3", 0));
	assert_int_eq_msg(owner_cache_is_node_addr("10.9.9.9"), 1, "n1's new address");
	assert_int_eq_msg(store_delete(st, "nodes/n4", &err), 0, "delete n4");
	assert_true(settles("127.0.0.1", 0));

	owner_cache_stop();
	assert_int_eq_msg(owner_cache_is_node_addr("10.9.9.9"), 0, "stopped: no nodes");
	store_close(st);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_node_addresses)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
