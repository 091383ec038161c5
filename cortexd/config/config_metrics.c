/* config_metrics.c — /metrics series of the config cache and the sandbox sync. */
#include <stdio.h>

#include "cconfig.h"
#include "config_metrics.h"
#include "metrics.h"
#include "sync.h"

void config_metrics_write(FILE *f, void *arg)
{
	(void)arg;
	ccache_stats cc;
	ccache_get_stats(&cc);
	fputs("# HELP cortex_config_cache_total Session config lookups by outcome.\n"
	      "# TYPE cortex_config_cache_total counter\n", f);
	fprintf(f, "cortex_config_cache_total{result=\"hit\"} %llu\n", (unsigned long long)cc.hits);
	fprintf(f, "cortex_config_cache_total{result=\"miss\"} %llu\n", (unsigned long long)cc.misses);
	fprintf(f, "cortex_config_cache_total{result=\"dirty\"} %llu\n", (unsigned long long)cc.dirty);
	fprintf(f, "cortex_config_cache_total{result=\"expired\"} %llu\n", (unsigned long long)cc.expired);
	fprintf(f, "cortex_config_cache_total{result=\"error\"} %llu\n", (unsigned long long)cc.errors);
	fprintf(f, "# TYPE cortex_config_assemble_seconds_total counter\ncortex_config_assemble_seconds_total %.6f\n",
		(double)cc.assemble_us_total / 1e6);
	struct sync_stats ss;
	sync_get_stats(&ss);
	metrics_counter(f, "cortex_sync_runs_total", "Config syncs into sandboxes.", ss.runs);
	fputs("# HELP cortex_sync_files_total Files considered by syncs, by outcome.\n"
	      "# TYPE cortex_sync_files_total counter\n", f);
	fprintf(f, "cortex_sync_files_total{result=\"written\"} %llu\n", ss.files_written);
	fprintf(f, "cortex_sync_files_total{result=\"unchanged\"} %llu\n", ss.files_skipped);
	fprintf(f, "cortex_sync_files_total{result=\"removed\"} %llu\n", ss.files_removed);
	metrics_counter(f, "cortex_sync_mounts_total", NULL, ss.mounts);
	metrics_counter(f, "cortex_sync_failures_total", NULL, ss.failures);
}
