/* bench_store.c — store put/get latency, SQLite vs etcd, side by side.
 *
 * SQLite: a database file under DIR (WAL, synchronous=FULL, as cortexd runs it).
 * etcd: a real single-member etcd on loopback (tests/unit/etcd_fixture.h), its
 * data under DIR, reached through the backend's JSON gateway client.  Each
 * backend gets N puts of a 1 KiB value (distinct keys, like settings rows and
 * turn records) and N gets of them, one at a time; the table prints p50/p95/p99
 * in microseconds.  Usage: bench_store DIR [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx.h"
#include "etcd_fixture.h"
#include "store.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static void row(const char *backend, const char *op, uint64_t *v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_u64);
	printf("| %-6s | %-3s | %5zu | %8llu | %8llu | %8llu |\n", backend, op, n,
	       (unsigned long long)pct(v, n, 0.50), (unsigned long long)pct(v, n, 0.95),
	       (unsigned long long)pct(v, n, 0.99));
}

static int run(const char *name, store *s, size_t n)
{
	uint64_t *put = calloc(n, sizeof *put), *get = calloc(n, sizeof *get);
	char val[1024];
	memset(val, 'v', sizeof val);
	cx_err err = CX_ERR_INIT;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		char key[64];
		snprintf(key, sizeof key, "bench/%06zu", i);
		uint64_t t0 = cx_mono_us();
		rc = store_put(s, key, val, sizeof val, &err);
		put[i] = cx_mono_us() - t0;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		char key[64], *v = NULL;
		snprintf(key, sizeof key, "bench/%06zu", i);
		uint64_t t0 = cx_mono_us();
		rc = store_get(s, key, &v, NULL, &err);
		get[i] = cx_mono_us() - t0;
		free(v);
	}
	if (rc != 0)
		fprintf(stderr, "bench_store %s: %s\n", name, err.msg);
	else {
		row(name, "put", put, n);
		row(name, "get", get, n);
	}
	free(put);
	free(get);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [N]\n", argv[0]);
		return 2;
	}
	size_t n = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 2000;
	char dir[512], path[600];
	snprintf(dir, sizeof dir, "%s/bench-store-XXXXXX", argv[1]);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	printf("\nstore put/get of a 1 KiB value, one at a time (microseconds)\n\n");
	printf("| store  | op  |     n |      p50 |      p95 |      p99 |\n");
	printf("|--------|-----|-------|----------|----------|----------|\n");
	cx_err err = CX_ERR_INIT;
	store *s = NULL;
	int rc = 0;
	snprintf(path, sizeof path, "%s/cortex.db", dir);
	if (store_open(&s, "sqlite", path, &err) < 0) {
		fprintf(stderr, "sqlite: %s\n", err.msg);
		rc = 1;
	} else {
		rc |= run("sqlite", s, n);
		store_close(s);
	}
	if (etcd_fixture_open(&s, dir, &err) < 0) {
		fprintf(stderr, "etcd: %s\n", err.msg);
		rc = 1;
	} else {
		rc |= run("etcd", s, n);
		store_close(s);
		etcd_fixture_stop();
	}
	cx_rm_rf(dir);
	return rc;
}
