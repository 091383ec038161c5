/* metrics.c — see metrics.h. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

static struct writer {
	const char *name;
	metrics_fn fn;
	void *arg;
} writers[METRICS_MAX];
static size_t n_writers;

int metrics_register(const char *name, metrics_fn fn, void *arg)
{
	for (size_t i = 0; i < n_writers; i++)
		if (!strcmp(writers[i].name, name)) { /* a module started again: its writer once */
			writers[i] = (struct writer){name, fn, arg};
			return 0;
		}
	if (n_writers == METRICS_MAX)
		return -1;
	writers[n_writers++] = (struct writer){name, fn, arg};
	return 0;
}

void metrics_reset(void)
{
	n_writers = 0;
}

char *metrics_render(size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < n_writers; i++)
		writers[i].fn(f, writers[i].arg);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

void metrics_counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	if (help)
		fprintf(f, "# HELP %s %s\n", name, help);
	fprintf(f, "# TYPE %s counter\n%s %llu\n", name, name, (unsigned long long)v);
}

void metrics_counter_by(FILE *f, const char *name, const char *help, const char *label,
			const char *const *values, const uint64_t *v, size_t n)
{
	if (help)
		fprintf(f, "# HELP %s %s\n", name, help);
	fprintf(f, "# TYPE %s counter\n", name);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, values[i],
			(unsigned long long)v[i]);
}

void metrics_gauge(FILE *f, const char *name, const char *help, double v)
{
	if (help)
		fprintf(f, "# HELP %s %s\n", name, help);
	fprintf(f, "# TYPE %s gauge\n%s %.17g\n", name, name, v);
}
