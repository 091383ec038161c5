/* core_metrics.h — the core's /metrics writer (metrics.h); arg = struct cortexd *. */
#ifndef CORTEX_CORE_METRICS_H
#define CORTEX_CORE_METRICS_H
#include <stdio.h>
#include "session.h"
void core_metrics_write(FILE *f, void *arg);
#endif
