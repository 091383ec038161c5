/* gw_metrics.h — the model gateway's /metrics writer (metrics.h). */
#ifndef CORTEX_GW_METRICS_H
#define CORTEX_GW_METRICS_H
#include <stdio.h>
void gateway_metrics_write(FILE *f, void *arg);
#endif
