/* bench_guard — per-delta cost of the stream guard and the sentence splitter,
 * on the product code: guard_feed() over realistic agent text in deltas of
 * 1-40 bytes with 0, 5 and 50 secrets (API-key-like values of 20-60 bytes;
 * the last case adds a 3 KB key file, guarded in pieces), and
 * sentencer_feed() over the same deltas.
 * Each call is timed on its own (p50/p95; the timer's own cost is printed
 * and not subtracted) and each run is also timed whole (mean).
 * Prints one JSON line per case and a table.
 *   bench_guard [deltas]   (default 200000) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guard.h"
#include "sentence.h"

static uint64_t rng = 0x853c49e6748fea9bu;
static uint32_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 0x2545f4914f6cdd1du) >> 32);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)n);
	return v[i >= n ? n - 1 : i];
}

/* Agent-like text: words, punctuation, code, newlines, some UTF-8. */
static char *make_text(size_t n)
{
	static const char *const words[] = {"the",	    "file",
					    "function",	    "returns",
					    "error",	    "I'll",
					    "check",	    "config.json",
					    "and",	    "then",
					    "run",	    "`make test`",
					    "value",	    "3.14",
					    "e.g.",	    "caf\xc3\xa9",
					    "tests",	    "passed",
					    "build",	    "output",
					    "\xe2\x80\x94", "(see",
					    "line",	    "42)",
					    "request",	    "\xe4\xbd\xa0\xe5\xa5\xbd",
					    "handler",	    "stream",
					    "session",	    "token"};
	static const char *const seps[] = {" ",	 " ",	" ",  " ",  " ",    ", ",
					   ". ", ".\n", "? ", "! ", "\n\n", ": "};
	char *t = malloc(n + 64);
	if (!t)
		exit(1);
	size_t len = 0;
	while (len < n) {
		const char *w = words[rnd() % (sizeof words / sizeof *words)];
		const char *s = seps[rnd() % (sizeof seps / sizeof *seps)];
		size_t wl = strlen(w), sl = strlen(s);
		memcpy(t + len, w, wl);
		memcpy(t + len + wl, s, sl);
		len += wl + sl;
	}
	return t;
}

struct deltas {
	const char *text;
	size_t *off, *len, n;
};

static struct deltas make_deltas(const char *text, size_t count)
{
	struct deltas d = {text, malloc(count * sizeof(size_t)), malloc(count * sizeof(size_t)),
			   count};
	if (!d.off || !d.len)
		exit(1);
	size_t pos = 0;
	for (size_t i = 0; i < count; i++) {
		d.off[i] = pos;
		d.len[i] = 1 + rnd() % 40;
		pos += d.len[i];
	}
	return d;
}

static size_t deltas_bytes(const struct deltas *d)
{
	return d->off[d->n - 1] + d->len[d->n - 1];
}

struct result {
	uint64_t p50, p95, p99, max;
	double mean;
};

static void summarize(struct result *r, uint64_t *ns, size_t n, uint64_t whole)
{
	qsort(ns, n, sizeof *ns, cmp_u64);
	r->p50 = pct(ns, n, 50);
	r->p95 = pct(ns, n, 95);
	r->p99 = pct(ns, n, 99);
	r->max = ns[n - 1];
	r->mean = (double)whole / (double)n;
}

static struct result bench_guard(const guard *g, const struct deltas *d, uint64_t *ns, size_t *hits)
{
	struct guard_scan s;
	guard_scan_init(&s);
	cx_err err = CX_ERR_INIT;
	*hits = 0;
	for (size_t i = 0; i < d->n; i++) { /* timed one by one */
		uint64_t t0 = now_ns();
		int r = guard_feed(&s, g, d->text + d->off[i], d->len[i], NULL, &err);
		ns[i] = now_ns() - t0;
		if (r < 0) {
			fprintf(stderr, "guard_feed: %s\n", err.msg);
			exit(1);
		}
		*hits += (size_t)r;
	}
	guard_scan_reset(&s);
	uint64_t t0 = now_ns(); /* timed whole */
	for (size_t i = 0; i < d->n; i++)
		(void)guard_feed(&s, g, d->text + d->off[i], d->len[i], NULL, &err);
	uint64_t whole = now_ns() - t0;
	guard_scan_free(&s);
	struct result r;
	summarize(&r, ns, d->n, whole);
	return r;
}

static int count_sentence(void *arg, const char *s, size_t n)
{
	(void)s;
	(void)n;
	++*(size_t *)arg;
	return 0;
}

static struct result bench_sentencer(const struct deltas *d, uint64_t *ns, size_t *sentences)
{
	struct sentencer z;
	sentencer_init(&z);
	cx_err err = CX_ERR_INIT;
	*sentences = 0;
	for (size_t i = 0; i < d->n; i++) {
		uint64_t t0 = now_ns();
		int r = sentencer_feed(&z, d->text + d->off[i], d->len[i], count_sentence,
				       sentences, &err);
		ns[i] = now_ns() - t0;
		if (r != 0) {
			fprintf(stderr, "sentencer_feed: %d %s\n", r, err.msg);
			exit(1);
		}
	}
	sentencer_flush(&z, count_sentence, sentences);
	size_t again = 0;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < d->n; i++)
		(void)sentencer_feed(&z, d->text + d->off[i], d->len[i], count_sentence, &again,
				     &err);
	uint64_t whole = now_ns() - t0;
	sentencer_free(&z);
	struct result r;
	summarize(&r, ns, d->n, whole);
	return r;
}

/* n API-key-like secrets (20-60 bytes of [A-Za-z0-9_-]); with pem, one
 * more of 3 KB. */
static guard *make_guard(size_t n, int pem, char **store)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
	const char *vals[64];
	size_t lens[64];
	size_t k = 0;
	for (; k < n; k++) {
		lens[k] = 20 + rnd() % 41;
		store[k] = malloc(lens[k]);
		for (size_t i = 0; i < lens[k]; i++)
			store[k][i] = al[rnd() % 64];
		vals[k] = store[k];
	}
	if (pem) {
		lens[k] = 3243;
		store[k] = malloc(lens[k]);
		for (size_t i = 0; i < lens[k]; i++)
			store[k][i] = (i + 1) % 65 == 0 ? '\n' : al[rnd() % 64];
		vals[k] = store[k];
		k++;
	}
	guard *g = NULL;
	cx_err err = CX_ERR_INIT;
	if (guard_build(&g, vals, lens, k, &err) < 0) {
		fprintf(stderr, "guard_build: %s\n", err.msg);
		exit(1);
	}
	return g;
}

int main(int argc, char **argv)
{
	size_t count = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	if (count < 1000)
		count = 1000;
	char *text = make_text(count * 41);
	struct deltas d = make_deltas(text, count);
	uint64_t *ns = malloc(count * sizeof *ns);
	if (!ns)
		return 1;
	uint64_t tmin = UINT64_MAX;
	for (int i = 0; i < 100000; i++) {
		uint64_t t0 = now_ns(), t1 = now_ns();
		if (t1 - t0 < tmin)
			tmin = t1 - t0;
	}

	struct {
		const char *name;
		size_t secrets;
		int pem;
	} cases[] = {{"0 secrets", 0, 0},
		     {"5 secrets", 5, 0},
		     {"50 secrets", 50, 0},
		     {"50 + 3KB key", 50, 1}};
	enum { NCASES = sizeof cases / sizeof *cases };
	struct result res[NCASES + 1];
	size_t pats[NCASES], maxl[NCASES];
	for (size_t c = 0; c < NCASES; c++) {
		char *store[64] = {0};
		guard *g = make_guard(cases[c].secrets, cases[c].pem, store);
		size_t hits = 0;
		pats[c] = guard_patterns(g);
		maxl[c] = guard_max_len(g);
		res[c] = bench_guard(g, &d, ns, &hits);
		printf("{\"bench\":\"guard_feed\",\"case\":\"%s\",\"secrets\":%zu,\"patterns\":%zu,"
		       "\"max_len\":%zu,\"deltas\":%zu,\"bytes\":%zu,\"hits\":%zu,\"p50_ns\":%llu,"
		       "\"p95_ns\":%llu,\"p99_ns\":%llu,\"mean_ns\":%.1f}\n",
		       cases[c].name, cases[c].secrets + (size_t)cases[c].pem, pats[c], maxl[c],
		       d.n, deltas_bytes(&d), hits, (unsigned long long)res[c].p50,
		       (unsigned long long)res[c].p95, (unsigned long long)res[c].p99, res[c].mean);
		guard_free(g);
		for (size_t i = 0; i < 64; i++)
			free(store[i]);
	}
	size_t sentences = 0;
	res[NCASES] = bench_sentencer(&d, ns, &sentences);
	printf("{\"bench\":\"sentencer_feed\",\"deltas\":%zu,\"sentences\":%zu,\"p50_ns\":%llu,"
	       "\"p95_ns\":%llu,\"p99_ns\":%llu,\"mean_ns\":%.1f}\n",
	       d.n, sentences, (unsigned long long)res[NCASES].p50,
	       (unsigned long long)res[NCASES].p95, (unsigned long long)res[NCASES].p99,
	       res[NCASES].mean);
	printf("{\"bench\":\"timer\",\"min_ns\":%llu}\n", (unsigned long long)tmin);

	printf("\n%-26s %9s %8s %8s %8s %9s\n", "per delta (1-40 B)", "patterns", "p50 ns",
	       "p95 ns", "p99 ns", "mean ns");
	for (size_t c = 0; c < NCASES; c++)
		printf("guard_feed %-15s %9zu %8llu %8llu %8llu %9.1f\n", cases[c].name, pats[c],
		       (unsigned long long)res[c].p50, (unsigned long long)res[c].p95,
		       (unsigned long long)res[c].p99, res[c].mean);
	printf("%-26s %9s %8llu %8llu %8llu %9.1f\n", "sentencer_feed", "-",
	       (unsigned long long)res[NCASES].p50, (unsigned long long)res[NCASES].p95,
	       (unsigned long long)res[NCASES].p99, res[NCASES].mean);
	printf("(%zu deltas; p50/p95/p99 include the timer, min %llu ns; mean is timed whole)\n",
	       d.n, (unsigned long long)tmin);
	free(ns);
	free(d.off);
	free(d.len);
	free(text);
	return 0;
}
