/* config_metrics.h — the config part's /metrics writer (metrics.h). */
#ifndef CORTEX_CONFIG_METRICS_H
#define CORTEX_CONFIG_METRICS_H
#include <stdio.h>
void config_metrics_write(FILE *f, void *arg);
#endif
