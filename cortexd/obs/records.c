/* records.c — one record per turn (seed 001's per-run metrics), and what is
 * computed from them: GET /v1/metrics/turns, GET /v1/metrics/summary, and the
 * first-token histograms in /metrics.
 *
 * A record is written when the turn ends, by a worker (off the critical path):
 *   turns/<user>/<ts ms, 15 digits>-<session>-<turn, 6 digits>
 * so a user's records list in time order with one prefix scan.  Token counts
 * come from the provider's own usage fields, seen by the model gateway; the
 * cost is an estimate from the config's "prices" table (null for a model
 * without a row). */
#include "daemon.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* ---- first-token histograms (Prometheus), per surface x path ---- */

static const double ft_bounds_ms[] = {25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000};
#define FT_NB (sizeof ft_bounds_ms / sizeof ft_bounds_ms[0])
static struct ft_hist {
	uint64_t bucket[FT_NB]; /* not cumulative; summed when printed */
	uint64_t count;
	double sum_ms;
} hist[SURF_N][3];

static int path_index(const char *path)
{
	return !strcmp(path, "cold") ? 1 : !strcmp(path, "config_changed") ? 2 : 0;
}

static double cost_of(const struct turn *t, int *known)
{
	const struct model_price *p = config_price(&D.cfg, t->model);
	*known = p != NULL;
	if (!p)
		return 0;
	return ((double)t->usage.input * p->input + (double)t->usage.output * p->output +
		(double)t->usage.cache_read * p->cache_read + (double)t->usage.cache_creation * p->cache_write) /
	       1e6;
}

void record_turn(const struct session *s, const struct turn *t, const char *path, const char *outcome,
		 double first_token_ms, double total_ms)
{
	int surf = s->prof && !strcmp(s->prof->name, "voice") ? SURF_VOICE : SURF_CHAT;
	int ok = !strcmp(outcome, "ok");
	if (ok) {
		struct ft_hist *h = &hist[surf][path_index(path)];
		size_t b = 0;
		while (b < FT_NB && first_token_ms > ft_bounds_ms[b])
			b++;
		if (b < FT_NB)
			h->bucket[b]++;
		h->count++;
		h->sum_ms += first_token_ms;
	}
	int known;
	double cost = cost_of(t, &known);
	int64_t ts = cx_wall_ms();
	json_t *phases = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "wait_sandbox_ms", t->wait_sandbox_ms,
				   "config_ms", t->config_ms, "install_ms", t->install_ms, "sync_ms", t->sync_ms,
				   "agent_start_ms", t->agent_start_ms, "context_ms", t->context_ms);
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:o,s:f,s:f,s:I,s:I,s:I,s:I,s:i,s:i}", "session", s->id,
			      "user", s->user, "surface", s->surface, "turn", (json_int_t)t->id, "ts", (json_int_t)ts,
			      "path", path, "outcome", outcome, "agent", t->agent_cold ? "cold" : "hot", "phases",
			      phases, "first_token_ms", first_token_ms, "total_ms", total_ms, "input_tokens",
			      (json_int_t)t->usage.input, "output_tokens", (json_int_t)t->usage.output,
			      "cache_read_tokens", (json_int_t)t->usage.cache_read, "cache_creation_tokens",
			      (json_int_t)t->usage.cache_creation, "model_requests", (int)t->model_requests,
			      "provider_status", t->provider_status);
	if (!o)
		return;
	json_object_set_new(o, "model", t->model[0] ? json_string(t->model) : json_null());
	json_object_set_new(o, "model_ttfb_ms", t->model_ttfb_ms >= 0 ? json_real(t->model_ttfb_ms) : json_null());
	json_object_set_new(o, "cost_usd", known ? json_real(cost) : json_null());
	if (t->wake)
		json_object_set_new(o, "wake", json_string(t->wake));
	char key[300];
	snprintf(key, sizeof key, "turns/%s/%015lld-%s-%06llu", s->user, (long long)ts, s->id,
		 (unsigned long long)t->id);
	store_put_later(key, o);
}

void records_metrics(FILE *f)
{
	static const char *pn[] = {"warm", "cold", "config_changed"};
	fputs("# HELP cortex_first_token_seconds Message received -> first text delta sent, by surface and path.\n"
	      "# TYPE cortex_first_token_seconds histogram\n", f);
	for (int s = 0; s < SURF_N; s++)
		for (int p = 0; p < 3; p++) {
			const struct ft_hist *h = &hist[s][p];
			uint64_t cum = 0;
			for (size_t b = 0; b < FT_NB; b++) {
				cum += h->bucket[b];
				fprintf(f, "cortex_first_token_seconds_bucket{surface=\"%s\",path=\"%s\",le=\"%g\"} %llu\n",
					D.cfg.surfaces[s].name, pn[p], ft_bounds_ms[b] / 1000.0, (unsigned long long)cum);
			}
			fprintf(f, "cortex_first_token_seconds_bucket{surface=\"%s\",path=\"%s\",le=\"+Inf\"} %llu\n",
				D.cfg.surfaces[s].name, pn[p], (unsigned long long)h->count);
			fprintf(f, "cortex_first_token_seconds_sum{surface=\"%s\",path=\"%s\"} %.6f\n",
				D.cfg.surfaces[s].name, pn[p], h->sum_ms / 1000.0);
			fprintf(f, "cortex_first_token_seconds_count{surface=\"%s\",path=\"%s\"} %llu\n",
				D.cfg.surfaces[s].name, pn[p], (unsigned long long)h->count);
		}
}

/* ---- the routes ---- */

/* One query argument ("name=value&..."), copied into out; 0 if absent. */
static int qarg(const char *q, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > n && !strncmp(p, name, n) && p[n] == '=') {
			size_t vl = len - n - 1;
			if (vl >= cap)
				vl = cap - 1;
			memcpy(out, p + n + 1, vl);
			out[vl] = '\0';
			return 1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

static int parse_int(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || !*v || *end || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

/* The records the caller may see, filtered; NULL with resp set on error. */
static json_t *load_records(const char *user, int admin, const char *query, struct api_resp *resp,
			    long long dflt_limit)
{
	char v[200], sess[64] = "";
	long long since = 0, limit = dflt_limit;
	if (qarg(query, "since", v, sizeof v) && parse_int(v, 0, INT64_MAX / 2, &since) < 0) {
		api_error(resp, 400, "bad_request", "\"since\" must be milliseconds since the epoch");
		return NULL;
	}
	if (qarg(query, "limit", v, sizeof v) && parse_int(v, 1, 100000, &limit) < 0) {
		api_error(resp, 400, "bad_request", "\"limit\" must be an integer from 1 to 100000");
		return NULL;
	}
	if (qarg(query, "session", sess, sizeof sess) && !sess[0]) {
		api_error(resp, 400, "bad_request", "\"session\" must not be empty");
		return NULL;
	}
	char prefix[128];
	if (admin)
		snprintf(prefix, sizeof prefix, "turns/");
	else
		snprintf(prefix, sizeof prefix, "turns/%s/", user);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list(D.st, prefix, 0, &kv, &n, &err) < 0) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (!json_is_object(o) || json_integer_value(json_object_get(o, "ts")) < since ||
		    (sess[0] && strcmp(sess, json_string_value(json_object_get(o, "session")) ?: ""))) {
			json_decref(o);
			continue;
		}
		json_array_append_new(arr, o);
	}
	store_kv_free(kv, n);
	/* Admin keys are ordered by user first: order everything by time. */
	if (admin) {
		size_t m = json_array_size(arr);
		json_t **items = calloc(m ? m : 1, sizeof *items);
		for (size_t i = 0; items && i < m; i++)
			items[i] = json_incref(json_array_get(arr, i));
		if (items) {
			for (size_t i = 1; i < m; i++) /* insertion sort: nearly sorted per user */
				for (size_t k = i; k > 0 && json_integer_value(json_object_get(items[k - 1], "ts")) >
								json_integer_value(json_object_get(items[k], "ts"));
				     k--) {
					json_t *tmp = items[k];
					items[k] = items[k - 1];
					items[k - 1] = tmp;
				}
			json_array_clear(arr);
			for (size_t i = 0; i < m; i++)
				json_array_append_new(arr, items[i]);
			free(items);
		}
	}
	/* The newest `limit` records, oldest first. */
	while ((long long)json_array_size(arr) > limit)
		json_array_remove(arr, 0);
	return arr;
}

void records_api_turns(const char *user, int admin, const char *query, struct api_resp *resp)
{
	json_t *arr = load_records(user, admin, query, resp, 1000);
	if (arr)
		api_reply(resp, 200, arr);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, int p)
{
	if (!n)
		return 0;
	size_t i = (n * (size_t)p + 99) / 100;
	return v[i ? i - 1 : 0];
}

void records_api_summary(const char *user, int admin, const char *query, struct api_resp *resp)
{
	json_t *arr = load_records(user, admin, query, resp, 100000);
	if (!arr)
		return;
	size_t n = json_array_size(arr);
	double *ft = calloc(n ? n : 1, sizeof *ft);
	json_t *by_sp = json_object(), *days = json_object();
	uint64_t in = 0, cache_read = 0, cache_create = 0;
	for (int sf = 0; ft && sf < SURF_N; sf++)
		for (int p = 0; p < 3; p++) {
			static const char *pn[] = {"warm", "cold", "config_changed"};
			size_t k = 0;
			for (size_t i = 0; i < n; i++) {
				json_t *o = json_array_get(arr, i);
				const char *surf = json_string_value(json_object_get(o, "surface"));
				const char *path = json_string_value(json_object_get(o, "path"));
				const char *outc = json_string_value(json_object_get(o, "outcome"));
				if (surf && path && outc && !strcmp(surf, D.cfg.surfaces[sf].name) &&
				    !strcmp(path, pn[p]) && !strcmp(outc, "ok"))
					ft[k++] = json_number_value(json_object_get(o, "first_token_ms"));
			}
			if (!k)
				continue;
			qsort(ft, k, sizeof *ft, cmp_d);
			char key[64];
			snprintf(key, sizeof key, "%s/%s", D.cfg.surfaces[sf].name, pn[p]);
			json_object_set_new(by_sp, key, json_pack("{s:I,s:f,s:f,s:i}", "turns", (json_int_t)k,
								  "p50_ms", pct(ft, k, 50), "p95_ms", pct(ft, k, 95),
								  "budget_ms", D.cfg.surfaces[sf].first_token_budget_ms));
		}
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(arr, i);
		time_t ts = (time_t)(json_integer_value(json_object_get(o, "ts")) / 1000);
		struct tm tm;
		char day[16];
		gmtime_r(&ts, &tm);
		strftime(day, sizeof day, "%Y-%m-%d", &tm);
		json_t *d = json_object_get(days, day);
		if (!d) {
			d = json_pack("{s:i,s:I,s:I,s:f,s:i}", "turns", 0, "input_tokens", (json_int_t)0, "output_tokens",
				      (json_int_t)0, "cost_usd", 0.0, "turns_without_price", 0);
			json_object_set_new(days, day, d);
		}
		json_int_t it = json_integer_value(json_object_get(o, "input_tokens"));
		json_int_t ot = json_integer_value(json_object_get(o, "output_tokens"));
		in += (uint64_t)it;
		cache_read += (uint64_t)json_integer_value(json_object_get(o, "cache_read_tokens"));
		cache_create += (uint64_t)json_integer_value(json_object_get(o, "cache_creation_tokens"));
		json_object_set_new(d, "turns", json_integer(json_integer_value(json_object_get(d, "turns")) + 1));
		json_object_set_new(d, "input_tokens", json_integer(json_integer_value(json_object_get(d, "input_tokens")) + it));
		json_object_set_new(d, "output_tokens", json_integer(json_integer_value(json_object_get(d, "output_tokens")) + ot));
		json_t *c = json_object_get(o, "cost_usd");
		if (json_is_number(c))
			json_object_set_new(d, "cost_usd", json_real(json_number_value(json_object_get(d, "cost_usd")) +
								     json_number_value(c)));
		else
			json_object_set_new(d, "turns_without_price",
					    json_integer(json_integer_value(json_object_get(d, "turns_without_price")) + 1));
	}
	free(ft);
	ccache_stats cc;
	ccache_get_stats(&cc);
	uint64_t looks = cc.hits + cc.misses + cc.dirty + cc.expired;
	uint64_t prompt = in + cache_read + cache_create;
	json_t *rates = json_pack("{s:f,s:f}", "config_cache_hit", looks ? (double)cc.hits / (double)looks : 0.0,
				  "prompt_cache_read", prompt ? (double)cache_read / (double)prompt : 0.0);
	json_decref(arr);
	api_reply(resp, 200,
		  json_pack("{s:I,s:o,s:o,s:o}", "turns", (json_int_t)n, "first_token", by_sp, "cache_hit_rates",
			    rates, "per_day", days));
}
