/* records.h — one record per turn, and what is computed from them: the
 * first-token histograms in /metrics, GET /v1/metrics/turns and /summary.
 *
 * A record is written when the turn ends, by the caller's off-path writer:
 *   turns/<user>/<ts ms, 15 digits>-<session>-<turn, 6 digits>
 * so a user's records list in time order with one prefix scan.  Token counts
 * come from the provider's own usage fields, seen by the model gateway; the
 * cost is an estimate from the config's "prices" table (null for a model
 * without a row).  Nothing here knows sessions or HTTP. */
#ifndef CORTEX_RECORDS_H
#define CORTEX_RECORDS_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "cx.h"
#include "gateway.h"
#include "store.h"

struct turn_record {
	const char *session, *user, *surface; /* surface: a profile name */
	uint64_t turn;
	const char *path;    /* warm | cold | config_changed (unknown: a turn lost with its cortexd) */
	const char *outcome; /* ok, agent_error, revoked, or a cortex.error code */
	int64_t ts;          /* wall ms of the record; 0 = now */
	int agent_cold;
	const char *wake;    /* NULL or what the turn woke */
	double wait_sandbox_ms, config_ms, install_ms, sync_ms, agent_start_ms, context_ms;
	double first_token_ms, total_ms;
	double model_ttfb_ms; /* < 0: no provider request */
	const char *model;    /* "" = unknown */
	struct gw_usage usage;
	unsigned model_requests;
	int provider_status;
};

/* Count rec in the histograms and build its store row: key into key (cap
 * bytes) and the JSON value's text (the caller's to free), or NULL on ENOMEM
 * or when a string of it is not UTF-8 (as jansson refused such a row). */
char *records_build(const config *cfg, const struct turn_record *rec, char *key, size_t cap);
/* Prometheus: first-token histograms by surface and path. */
void records_metrics(FILE *f, void *cfg /* const config * */);

struct records_filter {
	const char *user;    /* NULL = every user (admin) */
	int64_t since_ms;
	const char *session; /* NULL = any */
	size_t limit;        /* the newest limit records */
	const char *after;   /* cursor: only records whose key sorts after it ("" = from the start) */
};
/* The records matching f, oldest first, each with its "cursor" (its key).
 * At most RECORDS_SCAN_MAX rows are read per call; *next gets the key to
 * continue from when more remain ("" otherwise). */
#define RECORDS_SCAN_MAX 20000
int records_query(store *st, const struct records_filter *f, json_t **out, char *next, size_t ncap, cx_err *err);
/* The summary of records (first-token percentiles by surface/path, tokens and
 * cost per day, cache hit rates). */
json_t *records_summarize(const config *cfg, json_t *records, double config_cache_hit_rate);

#endif
