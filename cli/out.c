/* out.c — human output: aligned tables, "key: value" lines, short values. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define COL_MAX	 12
#define CELL_CAP 96

/* Milliseconds since the epoch, for keys that hold such times. */
static int is_ms_time(const char *key)
{
	static const char *const k[] = {"created_at", "last_active_at", "ts",
					"created",    "mtime",		NULL};
	for (int i = 0; k[i]; i++)
		if (!strcmp(key, k[i]))
			return 1;
	return 0;
}

void out_value(char *buf, size_t cap, json_t *v, const char *key)
{
	if (!v || json_is_null(v)) {
		snprintf(buf, cap, "-");
	} else if (json_is_string(v)) {
		snprintf(buf, cap, "%s", json_string_value(v));
	} else if (json_is_integer(v) && key && is_ms_time(key) &&
		   json_integer_value(v) > 100000000000LL) {
		time_t t = (time_t)(json_integer_value(v) / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
	} else if (json_is_true(v) || json_is_false(v)) {
		snprintf(buf, cap, "%s", json_is_true(v) ? "yes" : "no");
	} else if (json_is_array(v) && key) {
		size_t i, off = 0;
		json_t *e;
		buf[0] = '\0';
		json_array_foreach(v, i, e)
		{
			char one[CELL_CAP];
			out_value(one, sizeof one, e, NULL);
			int n = snprintf(buf + off, cap - off, "%s%s", i ? "," : "", one);
			if (n < 0 || (size_t)n >= cap - off)
				break;
			off += (size_t)n;
		}
		if (!i)
			snprintf(buf, cap, "-");
	} else {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(buf, cap, "%s", s ? s : "?");
		free(s);
	}
	for (char *p = buf; *p; p++) /* one row per line */
		if (*p == '\n' || *p == '\t' || *p == '\r')
			*p = ' ';
}

void out_table(json_t *rows, const char *const *cols, const char *const *keys)
{
	size_t ncol = 0, w[COL_MAX], nrow = json_array_size(rows);
	while (cols[ncol] && ncol < COL_MAX)
		ncol++;
	for (size_t c = 0; c < ncol; c++)
		w[c] = strlen(cols[c]);
	char(*cell)[CELL_CAP] = calloc(nrow * ncol + 1, CELL_CAP);
	if (!cell)
		return;
	for (size_t r = 0; r < nrow; r++)
		for (size_t c = 0; c < ncol; c++) {
			json_t *row = json_array_get(rows, r);
			json_t *v = json_is_object(row) ? json_object_get(row, keys[c])
				    : c == 0		? row
							: NULL;
			out_value(cell[r * ncol + c], CELL_CAP, v, keys[c]);
			size_t l = strlen(cell[r * ncol + c]);
			if (l > w[c])
				w[c] = l;
		}
	for (size_t r = 0; r <= nrow; r++)
		for (size_t c = 0; c < ncol; c++) {
			const char *x = r ? cell[(r - 1) * ncol + c] : cols[c];
			if (c + 1 < ncol)
				printf("%-*s  ", (int)w[c], x);
			else
				printf("%s\n", x);
		}
	free(cell);
}

void out_json(json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
	printf("%s\n", s ? s : "null");
	free(s);
}

void out_object(json_t *o)
{
	const char *k;
	json_t *v;
	size_t w = 0;
	json_object_foreach(o, k, v) if (strlen(k) > w) w = strlen(k);
	json_object_foreach(o, k, v)
	{
		char buf[512];
		if (json_is_object(v)) {
			char *s = json_dumps(v, JSON_COMPACT);
			printf("%s:%*s %s\n", k, (int)(w - strlen(k)), "", s ? s : "{}");
			free(s);
			continue;
		}
		out_value(buf, sizeof buf, v, k);
		printf("%s:%*s %s\n", k, (int)(w - strlen(k)), "", buf);
	}
}
