/* npm_metrics.c — /metrics series of the MCP package cache. */
#include "npm_metrics.h"

#include "metrics.h"
#include "npmcache.h"

void npm_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	npmcache_stats ns;
	npmcache_get_stats(&ns);
	metrics_counter(f, "cortex_npm_runs_total", "npm processes started for MCP packages.", ns.npm_runs);
	fputs("# TYPE cortex_npm_installs_total counter\n", f);
	fprintf(f, "cortex_npm_installs_total{result=\"ok\"} %llu\n", (unsigned long long)ns.installs_ok);
	fprintf(f, "cortex_npm_installs_total{result=\"failed\"} %llu\n", (unsigned long long)ns.installs_failed);
	fputs("# TYPE cortex_npm_cache_requests_total counter\n", f);
	fprintf(f, "cortex_npm_cache_requests_total{result=\"hit\"} %llu\n", (unsigned long long)ns.hits);
	fprintf(f, "cortex_npm_cache_requests_total{result=\"joined\"} %llu\n", (unsigned long long)ns.joins);
	metrics_counter(f, "cortex_npm_cache_evictions_total", NULL, ns.evictions);
	fprintf(f, "# TYPE cortex_npm_cache_bytes gauge\ncortex_npm_cache_bytes %llu\n", (unsigned long long)ns.bytes);
}
