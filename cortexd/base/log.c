/* log.c — see log.h.  One write(2) per line so lines from threads never interleave. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_json;
static enum log_level log_min = LOG_INFO;

void log_set_json(int json) { log_json = json; }
void log_set_level(enum log_level lvl) { log_min = lvl; }

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	if (lvl < log_min)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[40];
	snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

	char line[2304];
	int n;
	if (log_json) {
		json_t *o = json_pack("{s:s,s:s,s:s}", "ts", stamp, "level", names[lvl], "msg", msg);
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		n = snprintf(line, sizeof line, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		n = snprintf(line, sizeof line, "%s %-5s %s\n", stamp, names[lvl], msg);
	}
	if (n > 0) {
		size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
		ssize_t w = write(STDERR_FILENO, line, len);
		(void)w;
	}
}
