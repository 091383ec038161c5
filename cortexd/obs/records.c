/* records.c — see records.h. */
#include "records.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jw.h"

/* ---- first-token histograms (Prometheus), per surface x path ---- */

static const double ft_bounds_ms[] = {25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000};
#define FT_NB (sizeof ft_bounds_ms / sizeof ft_bounds_ms[0])
static struct ft_hist {
	uint64_t bucket[FT_NB]; /* not cumulative; summed when printed */
	uint64_t count;
	double sum_ms;
} hist[SURF_N][PATH_N];

static int path_index(const char *path)
{
	int p = turn_path_of_name(path);
	return p < 0 ? PATH_WARM : p;
}

static int surface_of(const config *cfg, const char *name)
{
	for (int i = 0; i < SURF_N; i++)
		if (!strcmp(cfg->surfaces[i].name, name))
			return i;
	return SURF_CHAT;
}

static double cost_of(const config *cfg, const struct turn_record *t, int *known)
{
	const struct model_price *p = config_price(cfg, t->model);
	*known = p != NULL;
	if (!p)
		return 0;
	return ((double)t->usage.input * p->input + (double)t->usage.output * p->output +
		(double)t->usage.cache_read * p->cache_read + (double)t->usage.cache_creation * p->cache_write) /
	       1e6;
}

static void observe(const config *cfg, const struct turn_record *t)
{
	if (strcmp(t->outcome, "ok"))
		return;
	struct ft_hist *h = &hist[surface_of(cfg, t->surface)][path_index(t->path)];
	size_t b = 0;
	while (b < FT_NB && t->first_token_ms > ft_bounds_ms[b])
		b++;
	if (b < FT_NB)
		h->bucket[b]++;
	h->count++;
	h->sum_ms += t->first_token_ms;
}

/* The row's text is written directly (jw.h: the bytes json_pack +
 * json_dumps made, which tests/unit/test_turn.c compares): one malloc per
 * turn on the service thread instead of a tree of 25 values and a dump. */
char *records_build(const config *cfg, const struct turn_record *t, char *key, size_t cap)
{
	observe(cfg, t);
	int known;
	double cost = cost_of(cfg, t, &known);
	int64_t ts = t->ts ? t->ts : cx_wall_ms();
	const char *strs[] = {t->session, t->user, t->surface, t->path, t->outcome, t->model, t->wake};
	size_t room = 900;
	for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
		room += strs[i] ? 6 * strlen(strs[i]) + 16 : 0;
	struct jw w;
	if (jw_init(&w, room) < 0)
		return NULL;
	jw_str(&w, "session", t->session);
	jw_str(&w, "user", t->user);
	jw_str(&w, "surface", t->surface);
	jw_int(&w, "turn", (long long)t->turn);
	jw_int(&w, "ts", (long long)ts);
	jw_str(&w, "path", t->path);
	jw_str(&w, "outcome", t->outcome);
	jw_str(&w, "agent", t->agent_cold ? "cold" : "hot");
	jw_open(&w, "phases");
	jw_real(&w, "wait_sandbox_ms", t->wait_sandbox_ms);
	jw_real(&w, "config_ms", t->config_ms);
	jw_real(&w, "install_ms", t->install_ms);
	jw_real(&w, "sync_ms", t->sync_ms);
	jw_real(&w, "agent_start_ms", t->agent_start_ms);
	jw_real(&w, "context_ms", t->context_ms);
	jw_close(&w);
	jw_real(&w, "first_token_ms", t->first_token_ms);
	jw_real(&w, "total_ms", t->total_ms);
	jw_int(&w, "input_tokens", (long long)t->usage.input);
	jw_int(&w, "output_tokens", (long long)t->usage.output);
	jw_int(&w, "cache_read_tokens", (long long)t->usage.cache_read);
	jw_int(&w, "cache_creation_tokens", (long long)t->usage.cache_creation);
	jw_int(&w, "model_requests", (int)t->model_requests);
	jw_int(&w, "provider_status", t->provider_status);
	/* Members jansson would have left out rather than fail the row: a model
	 * name that is not UTF-8, a wake likewise, a real that is not finite. */
	if (!t->model || !t->model[0])
		jw_null(&w, "model");
	else if (cx_json_str_len(t->model))
		jw_str(&w, "model", t->model);
	if (t->model_ttfb_ms < 0)
		jw_null(&w, "model_ttfb_ms");
	else if (isfinite(t->model_ttfb_ms))
		jw_real(&w, "model_ttfb_ms", t->model_ttfb_ms);
	if (!known)
		jw_null(&w, "cost_usd");
	else if (isfinite(cost))
		jw_real(&w, "cost_usd", cost);
	if (t->wake && cx_json_str_len(t->wake))
		jw_str(&w, "wake", t->wake);
	jw_close(&w);
	snprintf(key, cap, "turns/%s/%015lld-%s-%06llu", t->user, (long long)ts, t->session,
		 (unsigned long long)t->turn);
	return jw_take(&w, NULL);
}

void records_metrics(FILE *f, void *arg)
{
	const config *cfg = arg;
	fputs("# HELP cortex_first_token_seconds Message received -> first text delta sent, by surface and path.\n"
	      "# TYPE cortex_first_token_seconds histogram\n", f);
	for (int s = 0; s < SURF_N; s++)
		for (int p = 0; p < PATH_N; p++) {
			const struct ft_hist *h = &hist[s][p];
			uint64_t cum = 0;
			for (size_t b = 0; b < FT_NB; b++) {
				cum += h->bucket[b];
				fprintf(f, "cortex_first_token_seconds_bucket{surface=\"%s\",path=\"%s\",le=\"%g\"} %llu\n",
					cfg->surfaces[s].name, turn_path_name((enum turn_path)p), ft_bounds_ms[b] / 1000.0, (unsigned long long)cum);
			}
			fprintf(f, "cortex_first_token_seconds_bucket{surface=\"%s\",path=\"%s\",le=\"+Inf\"} %llu\n",
				cfg->surfaces[s].name, turn_path_name((enum turn_path)p), (unsigned long long)h->count);
			fprintf(f, "cortex_first_token_seconds_sum{surface=\"%s\",path=\"%s\"} %.6f\n",
				cfg->surfaces[s].name, turn_path_name((enum turn_path)p), h->sum_ms / 1000.0);
			fprintf(f, "cortex_first_token_seconds_count{surface=\"%s\",path=\"%s\"} %llu\n",
				cfg->surfaces[s].name, turn_path_name((enum turn_path)p), (unsigned long long)h->count);
		}
}

/* ---- queries ---- */

/* Admin keys are ordered by user first: order a page by time.  Insertion
 * sort: the page is nearly sorted per user. */
static void sort_by_ts(json_t *arr)
{
	size_t m = json_array_size(arr);
	json_t **items = calloc(m ? m : 1, sizeof *items);
	if (!items)
		return;
	for (size_t i = 0; i < m; i++)
		items[i] = json_incref(json_array_get(arr, i));
	for (size_t i = 1; i < m; i++)
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

static int keep(const struct records_filter *f, json_t *o)
{
	const char *sess = json_string_value(json_object_get(o, "session"));
	return json_is_object(o) && json_integer_value(json_object_get(o, "ts")) >= f->since_ms &&
	       (!f->session || (sess && !strcmp(sess, f->session)));
}

int records_query(store *st, const struct records_filter *f, json_t **out, char *next, size_t ncap, cx_err *err)
{
	char prefix[128];
	if (f->user)
		snprintf(prefix, sizeof prefix, "turns/%s/", f->user);
	else
		snprintf(prefix, sizeof prefix, "turns/");
	store_kv *kv = NULL;
	size_t n = 0;
	/* One bounded read: a page never scans more than RECORDS_SCAN_MAX rows. */
	if (store_list_after(st, prefix, f->after, RECORDS_SCAN_MAX, &kv, &n, err) < 0)
		return -1;
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (!keep(f, o)) {
			json_decref(o);
			continue;
		}
		json_object_set_new(o, "cursor", json_string(kv[i].key));
		json_array_append_new(arr, o);
	}
	snprintf(next, ncap, "%s", n == RECORDS_SCAN_MAX ? kv[n - 1].key : "");
	store_kv_free(kv, n);
	if (!f->user)
		sort_by_ts(arr);
	/* The newest `limit` records, oldest first. */
	while (json_array_size(arr) > f->limit)
		json_array_remove(arr, 0);
	*out = arr;
	return 0;
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

static json_t *first_token_by_path(const config *cfg, json_t *arr)
{
	size_t n = json_array_size(arr);
	double *ft = calloc(n ? n : 1, sizeof *ft);
	json_t *by_sp = json_object();
	for (int sf = 0; ft && sf < SURF_N; sf++)
		for (int p = 0; p < PATH_N; p++) {
			size_t k = 0;
			for (size_t i = 0; i < n; i++) {
				json_t *o = json_array_get(arr, i);
				const char *surf = json_string_value(json_object_get(o, "surface"));
				const char *path = json_string_value(json_object_get(o, "path"));
				const char *outc = json_string_value(json_object_get(o, "outcome"));
				if (surf && path && outc && !strcmp(surf, cfg->surfaces[sf].name) && !strcmp(path, turn_path_name((enum turn_path)p)) &&
				    !strcmp(outc, "ok"))
					ft[k++] = json_number_value(json_object_get(o, "first_token_ms"));
			}
			if (!k)
				continue;
			qsort(ft, k, sizeof *ft, cmp_d);
			char key[64];
			snprintf(key, sizeof key, "%s/%s", cfg->surfaces[sf].name, turn_path_name((enum turn_path)p));
			json_object_set_new(by_sp, key, json_pack("{s:I,s:f,s:f,s:i}", "turns", (json_int_t)k, "p50_ms",
								  pct(ft, k, 50), "p95_ms", pct(ft, k, 95), "budget_ms",
								  cfg->surfaces[sf].first_token_budget_ms));
		}
	free(ft);
	return by_sp;
}

static void add_int(json_t *d, const char *k, json_int_t v)
{
	json_object_set_new(d, k, json_integer(json_integer_value(json_object_get(d, k)) + v));
}

json_t *records_summarize(const config *cfg, json_t *arr, double config_cache_hit_rate)
{
	size_t n = json_array_size(arr);
	json_t *days = json_object();
	uint64_t in = 0, cache_read = 0, cache_create = 0;
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
		in += (uint64_t)it;
		cache_read += (uint64_t)json_integer_value(json_object_get(o, "cache_read_tokens"));
		cache_create += (uint64_t)json_integer_value(json_object_get(o, "cache_creation_tokens"));
		add_int(d, "turns", 1);
		add_int(d, "input_tokens", it);
		add_int(d, "output_tokens", json_integer_value(json_object_get(o, "output_tokens")));
		json_t *c = json_object_get(o, "cost_usd");
		if (json_is_number(c))
			json_object_set_new(d, "cost_usd",
					    json_real(json_number_value(json_object_get(d, "cost_usd")) + json_number_value(c)));
		else
			add_int(d, "turns_without_price", 1);
	}
	uint64_t prompt = in + cache_read + cache_create;
	json_t *rates = json_pack("{s:f,s:f}", "config_cache_hit", config_cache_hit_rate, "prompt_cache_read",
				  prompt ? (double)cache_read / (double)prompt : 0.0);
	return json_pack("{s:I,s:o,s:o,s:o}", "turns", (json_int_t)n, "first_token", first_token_by_path(cfg, arr),
			 "cache_hit_rates", rates, "per_day", days);
}
