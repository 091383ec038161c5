/* metrics.h — the /metrics registry.  Each module registers a writer for its
 * own series when it starts (its init); GET /metrics prints every writer in order of
 * registration.  Writers run on the service thread. */
#ifndef CORTEX_METRICS_H
#define CORTEX_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef void (*metrics_fn)(FILE *f, void *arg);

/* 0, or -1 when the registry is full (METRICS_MAX).  A name registered
 * again replaces its writer.  name is not copied (a string literal). */
#define METRICS_MAX 32
int metrics_register(const char *name, metrics_fn fn, void *arg);
/* The exposition text (malloc'd, *len bytes), or NULL on ENOMEM. */
char *metrics_render(size_t *len);
/* Drop every writer (tests, restart). */
void metrics_reset(void);

/* Helpers for writers: a counter / gauge with HELP and TYPE lines. */
void metrics_counter(FILE *f, const char *name, const char *help, uint64_t v);
void metrics_gauge(FILE *f, const char *name, const char *help, double v);
/* A counter family with one label: n samples name{label="values[i]"} v[i]. */
void metrics_counter_by(FILE *f, const char *name, const char *help, const char *label, const char *const *values,
			const uint64_t *v, size_t n);

#endif
