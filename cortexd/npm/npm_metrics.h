/* npm_metrics.h — the npm cache's /metrics writer (metrics.h). */
#ifndef CORTEX_NPM_METRICS_H
#define CORTEX_NPM_METRICS_H
#include <stdio.h>
void npm_metrics_write(FILE *f, void *arg);
#endif
