/* gateway_harness.c — cortexd/gateway/ against a fake provider, standalone.
 *
 * Provides the gateway's hooks (struct gateway_ops) itself, runs an lws
 * context with only the gateway vhost on the main thread, a tiny upstream
 * HTTP server on a thread (loopback) and the scenarios on another thread,
 * with libcurl as the agent's HTTP client (it checks the chunked framing).
 *
 * Run: ctest -R unit.gateway  (exit status 0 = all passed)
 *
 * Two runs of the gateway, each in a context of its own:
 *   1. no queue, a pool of 3 (2 per user), so that the fair-share scenario can
 *      fill it with a few slowloris connections, and the body deadline short
 *      (SLOW_DEADLINE_S);
 *   2. a pool of 2 (2 per user) with a queue of 3 and a short wait (QWAIT_MS):
 *      requests past the pool wait for a slot, fairly between users, and
 *      /metrics says so.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"
#include "gw_metrics.h"

#define PROVIDER_KEY "sk-provider-KEY123"

static int failures;
#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			failures++;                                                        \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
		}                                                                          \
	} while (0)

/* ---- the hooks cortexd provides (struct gateway_ops) ---- */
static char token1[GW_TOKEN_LEN + 1]; /* session sess-1 of alice, provider = the fake upstream */
static char token2[GW_TOKEN_LEN + 1]; /* session sess-2 of carol, no provider */
static char token3[GW_TOKEN_LEN + 1]; /* session sess-3 of bob, provider = the fake upstream */
static char token4[GW_TOKEN_LEN + 1]; /* session sess-4 of dave, provider = the fake upstream */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static char provider_base[256];
static struct gw_report reports[32];
static char report_sess[32][40];
static int nreports;
static int ops_arg; /* its address is the hooks' arg */

static int h_authorize(void *arg, const char *token, char sess_id[40], char user[GW_USER_LEN],
		       char *url, size_t ucap, char *key, size_t kcap)
{
	CHECK(arg == &ops_arg, "authorize: arg %p", arg);
	if (!strcmp(token, token2)) {
		snprintf(sess_id, 40, "sess-2");
		snprintf(user, GW_USER_LEN, "carol");
		return -1;
	}
	int bob = !strcmp(token, token3), dave = !strcmp(token, token4);
	if (strcmp(token, token1) && !bob && !dave)
		return CX_NOTFOUND;
	snprintf(sess_id, 40, bob ? "sess-3" : dave ? "sess-4" : "sess-1");
	snprintf(user, GW_USER_LEN, bob ? "bob" : dave ? "dave" : "alice");
	pthread_mutex_lock(&mu);
	snprintf(url, ucap, "%s", provider_base);
	pthread_mutex_unlock(&mu);
	snprintf(key, kcap, "%s", PROVIDER_KEY);
	return 0;
}

static void h_report(void *arg, const char *sess_id, const struct gw_report *r)
{
	CHECK(arg == &ops_arg, "report: arg %p", arg);
	pthread_mutex_lock(&mu);
	if (nreports < 32) {
		snprintf(report_sess[nreports], sizeof report_sess[0], "%s", sess_id);
		reports[nreports++] = *r;
	}
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static const struct gateway_ops hooks = {&ops_arg, h_authorize, h_report};

/* Wait for report number n (1-based) of session sess; 0 on timeout. */
static int wait_report_of(int n, const char *sess, struct gw_report *out)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&mu);
	while (nreports < n)
		if (pthread_cond_timedwait(&cv, &mu, &dl))
			break;
	int ok = nreports >= n;
	if (ok) {
		*out = reports[n - 1];
		CHECK(!strcmp(report_sess[n - 1], sess), "report %d: session '%s', want '%s'", n,
		      report_sess[n - 1], sess);
	}
	pthread_mutex_unlock(&mu);
	return ok;
}

static int wait_report(int n, struct gw_report *out) { return wait_report_of(n, "sess-1", out); }

/* ---- the fake provider ---- */
static int up_port;
static char up_last_req[16384]; /* headers + body of the last request */
static int ack_first;           /* the client saw the first event */
static int up_saw_close;        /* /v1/hang: the gateway closed on us */
/* /v1/held: each request (its model names it) is answered once released */
static char held_order[256];    /* models of the held requests, as they arrived */
static int held_arrivals;
static char held_released[256]; /* " model " of each released one */

static int wait_flag(int *flag, int secs)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += secs;
	pthread_mutex_lock(&mu);
	while (!*flag)
		if (pthread_cond_timedwait(&cv, &mu, &dl))
			break;
	int v = *flag;
	pthread_mutex_unlock(&mu);
	return v;
}

static void set_flag(int *flag)
{
	pthread_mutex_lock(&mu);
	*flag = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void sendf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sendf(int fd, const char *fmt, ...)
{
	char b[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b, sizeof b, fmt, ap);
	va_end(ap);
	if (n > 0 && send(fd, b, (size_t)n, MSG_NOSIGNAL) < 0)
		perror("upstream send");
}

/* One chunk of a chunked body. */
static void send_chunk(int fd, const char *s)
{
	sendf(fd, "%zx\r\n%s\r\n", strlen(s), s);
}

#define EV_START                                                                             \
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\","  \
	"\"model\":\"claude-test-1\",\"usage\":{\"input_tokens\":11,\"cache_read_input_tokens\":" \
	"7,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n\n"
#define EV_DELTA(t)                                                                          \
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"      \
	"\"delta\":{\"type\":\"text_delta\",\"text\":\"" t "\"}}\n\n"
#define EV_MDELTA                                                                            \
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"    \
	"\"end_turn\"},\"usage\":{\"output_tokens\":42}}\n\n"
#define EV_STOP "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

static void upstream_serve(int fd)
{
	char req[16384];
	size_t n = 0;
	/* headers, then content-length bytes */
	for (;;) {
		ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
		if (r <= 0)
			return;
		n += (size_t)r;
		req[n] = '\0';
		char *eoh = strstr(req, "\r\n\r\n");
		if (!eoh)
			continue;
		char *cl = strcasestr(req, "content-length:");
		size_t want = cl && cl < eoh ? (size_t)atol(cl + 15) : 0;
		if (n >= (size_t)(eoh + 4 - req) + want || n >= sizeof req - 1)
			break;
	}
	pthread_mutex_lock(&mu);
	memcpy(up_last_req, req, n + 1);
	pthread_mutex_unlock(&mu);
	const char *sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
			       "transfer-encoding: chunked\r\nrequest-id: req_up_1\r\n\r\n";
	if (!strncmp(req, "POST /v1/messages?beta=true ", 28)) {
		sendf(fd, "%s", sse_head);
		send_chunk(fd, EV_START);
		send_chunk(fd, EV_DELTA("Hello"));
		/* The last events wait until the client has seen the first one:
		 * proof that nothing is buffered to the end. */
		if (!wait_flag(&ack_first, 5))
			fprintf(stderr, "upstream: no ack from the client\n");
		send_chunk(fd, EV_DELTA(" world"));
		send_chunk(fd, EV_MDELTA);
		send_chunk(fd, EV_STOP);
		sendf(fd, "0\r\n\r\n");
	} else if (!strncmp(req, "POST /v1/rate", 13)) {
		const char *b = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
				"\"message\":\"slow down please\"}}";
		sendf(fd, "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
			  "retry-after: 7\r\ncontent-length: %zu\r\n\r\n%s", strlen(b), b);
	} else if (!strncmp(req, "POST /v1/json", 13)) {
		const char *b = "{\"id\":\"m2\",\"type\":\"message\",\"model\":\"claude-json-2\","
				"\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":9}}";
		sendf(fd, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
			  "content-length: %zu\r\n\r\n%s", strlen(b), b);
	} else if (!strncmp(req, "POST /v1/cut", 12)) {
		sendf(fd, "%s", sse_head);
		send_chunk(fd, EV_START);
		usleep(20000);
		/* close mid-stream: no terminating chunk */
	} else if (!strncmp(req, "POST /v1/held", 13)) {
		char tag[32] = "?", want[40];
		const char *m = strstr(req, "\"model\":\"");
		if (m)
			sscanf(m + 9, "%31[^\"]", tag);
		snprintf(want, sizeof want, " %s ", tag);
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 15;
		pthread_mutex_lock(&mu);
		size_t ol = strlen(held_order);
		snprintf(held_order + ol, sizeof held_order - ol, "%s ", tag);
		held_arrivals++;
		pthread_cond_broadcast(&cv);
		while (!strstr(held_released, want))
			if (pthread_cond_timedwait(&cv, &mu, &dl))
				break;
		pthread_mutex_unlock(&mu);
		char b[128];
		snprintf(b, sizeof b, "{\"id\":\"m3\",\"type\":\"message\",\"model\":\"%s\","
				      "\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}", tag);
		sendf(fd, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
			  "content-length: %zu\r\n\r\n%s", strlen(b), b);
	} else if (!strncmp(req, "POST /v1/hang", 13)) {
		sendf(fd, "%s", sse_head);
		send_chunk(fd, EV_START);
		char b[64];
		while (recv(fd, b, sizeof b, 0) > 0)
			;
		set_flag(&up_saw_close);
	} else {
		sendf(fd, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
	}
}

static void *upstream_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	upstream_serve(fd);
	close(fd);
	return NULL;
}

/* A thread per connection: held requests wait side by side. */
static void *upstream_thread(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			return NULL;
		pthread_t t;
		if (pthread_create(&t, NULL, upstream_conn, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}

static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) < 0)
		return -1;
	*port = ntohs(a.sin_port);
	return fd;
}

/* ---- the agent side: libcurl ---- */
struct resp {
	char body[65536];
	size_t len;
	char hdrs[4096]; /* the response's header lines */
	uint64_t t_first_event_us;
	int abort_after_first; /* return 0 from the write callback once message_start arrived */
};

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
	struct resp *r = ud;
	size_t n = sz * nm;
	if (r->len + n < sizeof r->body) {
		memcpy(r->body + r->len, p, n);
		r->len += n;
		r->body[r->len] = '\0';
	}
	if (!r->t_first_event_us && strstr(r->body, "message_start")) {
		r->t_first_event_us = cx_mono_us();
		set_flag(&ack_first);
		if (r->abort_after_first)
			return 0;
	}
	return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct resp *r = ud;
	size_t n = sz * nm, have = strlen(r->hdrs);
	if (have + n < sizeof r->hdrs)
		memcpy(r->hdrs + have, p, n), r->hdrs[have + n] = '\0';
	return n;
}

static char gw_url[128];

/* POST path with key; returns the status (0 = transfer failed), curl code in *cc. */
static long post(CURL *h, const char *path, const char *key, int bearer, struct resp *r, CURLcode *cc)
{
	char url[512], auth[256];
	snprintf(url, sizeof url, "%s%s", gw_url, path);
	struct curl_slist *hd = NULL;
	if (key) {
		snprintf(auth, sizeof auth, bearer ? "Authorization: Bearer %s" : "x-api-key: %s", key);
		hd = curl_slist_append(hd, auth);
	}
	hd = curl_slist_append(hd, "content-type: application/json");
	hd = curl_slist_append(hd, "anthropic-version: 2023-06-01");
	hd = curl_slist_append(hd, "anthropic-beta: test-beta-1");
	hd = curl_slist_append(hd, "X-Stainless-Lang: js");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{\"model\":\"claude-req-0\",\"stream\":true,\"messages\":[]}");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	*cc = curl_easy_perform(h);
	long st = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
	curl_slist_free_all(hd);
	return st;
}

static int tests_done; /* set by the tests thread, polled by main: atomic loads/stores */
static struct lws_context *ctx;
static struct gw_stats stats_seen; /* under mu: copied by the service loop as it turns */

/* Wait until the gateway's stats satisfy ok (they are the service thread's:
 * main copies them each time it wakes); 0 on timeout, *out the last seen. */
static int wait_stats(int (*ok)(const struct gw_stats *, unsigned), unsigned arg,
		      struct gw_stats *out)
{
	for (int i = 0; i < 250; i++) {
		lws_cancel_service(ctx);
		usleep(20000);
		pthread_mutex_lock(&mu);
		*out = stats_seen;
		pthread_mutex_unlock(&mu);
		if (ok(out, arg))
			return 1;
	}
	return 0;
}

static int inflight_is(const struct gw_stats *s, unsigned n)
{
	return s->inflight == n;
}
static int closed_port;

static void set_base(int port)
{
	pthread_mutex_lock(&mu);
	snprintf(provider_base, sizeof provider_base, "http://127.0.0.1:%d/", port);
	pthread_mutex_unlock(&mu);
}

static struct resp r;

/* 2. good token: SSE streamed through, key swapped, usage parsed; then the
 * same connection again (keep-alive), Bearer auth.  Reports nrep+1, nrep+2. */
static void check_stream(CURL *h, int *nrep)
{
	struct gw_report rep;
	CURLcode cc;
	set_base(up_port);
	memset(&r, 0, sizeof r);
	uint64_t t0 = cx_mono_us();
	long st = post(h, "/v1/messages?beta=true", token1, 0, &r, &cc);
	CHECK(st == 200 && cc == CURLE_OK, "stream: status %ld curl %d", st, cc);
	CHECK(strstr(r.body, "message_stop") && strstr(r.body, " world"), "stream body: %s", r.body);
	CHECK(r.t_first_event_us > 0, "first event seen");
	pthread_mutex_lock(&mu);
	CHECK(strstr(up_last_req, "x-api-key: " PROVIDER_KEY "\r\n") != NULL, "upstream key: %s", up_last_req);
	CHECK(strstr(up_last_req, token1) == NULL, "client token leaked upstream: %s", up_last_req);
	CHECK(strstr(up_last_req, "anthropic-version: 2023-06-01"), "anthropic-version forwarded");
	CHECK(strstr(up_last_req, "anthropic-beta: test-beta-1"), "anthropic-beta forwarded");
	CHECK(strstr(up_last_req, "x-stainless-lang: js"), "x-stainless-lang forwarded");
	CHECK(!strncmp(up_last_req, "POST /v1/messages?beta=true ", 28), "path+query: %.60s", up_last_req);
	pthread_mutex_unlock(&mu);
	CHECK(wait_report(++*nrep, &rep), "report 2");
	CHECK(rep.status == 200 && !rep.cut && rep.stream, "report: status %d cut %d stream %d", rep.status,
	      rep.cut, rep.stream);
	CHECK(rep.usage.input == 11 && rep.usage.output == 42 && rep.usage.cache_read == 7 &&
		      rep.usage.cache_creation == 5,
	      "usage %lu %lu %lu %lu", (unsigned long)rep.usage.input, (unsigned long)rep.usage.output,
	      (unsigned long)rep.usage.cache_read, (unsigned long)rep.usage.cache_creation);
	CHECK(!strcmp(rep.model, "claude-test-1"), "model %s", rep.model);
	CHECK(rep.events >= 2, "events %u", rep.events);
	printf("stream: %u chunks, forwarding delay avg %.1f us max %.1f us, ttfb %.2f ms, total %.2f ms "
	       "(client first event at +%.2f ms)\n",
	       rep.events, rep.events ? rep.fwd_us_sum / rep.events : 0, rep.fwd_us_max, rep.ttfb_ms,
	       rep.total_ms, (double)(r.t_first_event_us - t0) / 1000.0);

	/* 2b. the same connection again (keep-alive), Bearer auth */
	ack_first = 0;
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/messages?beta=true", token1, 1, &r, &cc);
	long nconn = -1;
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn);
	CHECK(st == 200 && cc == CURLE_OK && strstr(r.body, "message_stop"), "keep-alive: %ld %d", st, cc);
	CHECK(nconn == 0, "second request reused the connection (new connects: %ld)", nconn);
	CHECK(wait_report(++*nrep, &rep) && rep.status == 200, "report 2b");
}

/* ---- slowloris: headers and part of a body, the rest maybe later ---- */
#define SLOW_BODY "{\"model\":\"claude-slow\",\"messages\":[]}"
#define SLOW_LEN  100 /* content-length: the body is padded with spaces */
#define SLOW_DEADLINE_S 5   /* gateway_limits.body_deadline_s */

static int slow_open(const char *key)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)gateway_port()),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		perror("slow_open");
		return -1;
	}
	sendf(fd,
	      "POST /v1/json HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\n"
	      "content-type: application/json\r\ncontent-length: %d\r\n\r\n%.10s",
	      key, SLOW_LEN, SLOW_BODY);
	return fd;
}

/* The rest of the body: the request goes on to the provider. */
static void slow_finish(int fd)
{
	sendf(fd, "%-*s", SLOW_LEN - 10, SLOW_BODY + 10);
}

/* Nothing came back: the gateway holds the request (and its slot). */
static int slow_waiting(int fd)
{
	char b[64];
	ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Read a whole response (content-length or chunked) from fd into out. */
static void slow_read(int fd, char *out, size_t cap)
{
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	size_t n = 0;
	out[0] = '\0';
	while (n + 1 < cap) {
		ssize_t got = recv(fd, out + n, cap - 1 - n, 0);
		if (got <= 0)
			break;
		n += (size_t)got;
		out[n] = '\0';
		char *eoh = strstr(out, "\r\n\r\n"), *cl = strcasestr(out, "content-length:");
		if ((eoh && cl && n >= (size_t)(eoh + 4 - out) + (size_t)atol(cl + 15)) ||
		    strstr(out, "\r\n0\r\n\r\n"))
			break;
	}
}

/* 10. Fair shares (pool 3, 2 per user): alice holds her two slots with
 * bodies she never finishes; her third request is refused 429 while bob's
 * goes through; bob's one slow body then fills the pool, and bob's next
 * request is refused 529 (the pool, not his share); carol without a
 * provider needs no slot.  A slow body finished goes on to the provider. */
static void check_fair_shares(CURL *h, int *nrep)
{
	struct gw_report rep;
	struct gw_stats gs;
	CURLcode cc;
	set_base(up_port);
	int a1 = slow_open(token1), a2 = slow_open(token1);
	CHECK(wait_stats(inflight_is, 2, &gs), "alice's slow bodies hold 2 slots: %u", gs.inflight);
	CHECK(gs.inflight_users == 1, "one user holds them: %u", gs.inflight_users);

	memset(&r, 0, sizeof r);
	long st = post(h, "/v1/json", token1, 0, &r, &cc);
	CHECK(st == 429, "alice past her share: status %ld, want 429", st);
	CHECK(strstr(r.body, "\"type\":\"error\"") && strstr(r.body, "\"rate_limit_error\"") &&
		  strstr(r.body, "user alice has 2 requests in flight (cap 2)"),
	      "429 body: %s", r.body);
	CHECK(strcasestr(r.hdrs, "\nretry-after: 2\r\n") != NULL, "429 retry-after: %s", r.hdrs);

	memset(&r, 0, sizeof r);
	st = post(h, "/v1/json", token3, 0, &r, &cc);
	CHECK(st == 200 && strstr(r.body, "claude-json-2"),
	      "bob while alice is at her share: %ld %s", st, r.body);
	CHECK(wait_report_of(++*nrep, "sess-3", &rep) && rep.status == 200, "bob's report");
	CHECK(slow_waiting(a1) && slow_waiting(a2), "alice's slow requests are still held");

	int b1 = slow_open(token3);
	CHECK(wait_stats(inflight_is, 3, &gs), "bob's slow body fills the pool: %u", gs.inflight);
	CHECK(gs.inflight_users == 2, "two users hold it: %u", gs.inflight_users);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/json", token3, 0, &r, &cc);
	CHECK(st == 529 && strstr(r.body, "\"overloaded_error\"") &&
		  strstr(r.body, "3 requests in flight, of all users (cap 3)"),
	      "pool full, bob under his share: %ld %s", st, r.body);
	CHECK(strcasestr(r.hdrs, "\nretry-after: 2\r\n") != NULL, "529 retry-after: %s", r.hdrs);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/messages", token2, 0, &r, &cc);
	CHECK(st == 403, "carol (no provider, no slot) while the pool is full: %ld %s", st, r.body);
	CHECK(wait_report_of(++*nrep, "sess-2", &rep), "carol's report");

	/* alice finishes one body: it goes on to the provider, then frees its slot */
	char resp[4096];
	slow_finish(a1);
	slow_read(a1, resp, sizeof resp);
	CHECK(!strncmp(resp, "HTTP/1.1 200", 12) && strstr(resp, "claude-json-2"),
	      "a slow body finished is forwarded: %.200s", resp);
	CHECK(wait_report(++*nrep, &rep) && rep.status == 200, "the slow request's report");
	CHECK(wait_stats(inflight_is, 2, &gs), "its slot is back: %u", gs.inflight);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/json", token1, 0, &r, &cc);
	CHECK(st == 200, "alice under her share again: %ld %s", st, r.body);
	CHECK(wait_report(++*nrep, &rep) && rep.status == 200, "alice's report");

	/* closing the slow connections gives their slots back */
	close(a1);
	close(a2);
	close(b1);
	CHECK(wait_stats(inflight_is, 0, &gs), "the pool is empty again: %u", gs.inflight);
	CHECK(gs.inflight_users == 0 && gs.refused_user_cap == 1 && gs.overloaded == 1,
	      "users %u, refused by a user's share %lu, by the pool %lu", gs.inflight_users,
	      (unsigned long)gs.refused_user_cap, (unsigned long)gs.overloaded);
	CHECK(gs.lim.max_inflight == 3 && gs.lim.max_inflight_per_user == 2, "limits %u/%u",
	      gs.lim.max_inflight, gs.lim.max_inflight_per_user);
}

/* 11. A body that trickles in (a byte every 250 ms: lws's idle timeout never
 * fires) is cut at the deadline, and its slot is back. */
static void check_body_deadline(void)
{
	struct gw_stats gs;
	uint64_t t0 = cx_mono_us();
	int fd = slow_open(token3);
	CHECK(wait_stats(inflight_is, 1, &gs), "the trickling body holds a slot: %u", gs.inflight);
	struct timeval tv = {0, 250000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	int closed = 0;
	for (int i = 0; i < 4 * (SLOW_DEADLINE_S + 5) && !closed; i++) {
		char b[256];
		ssize_t n = recv(fd, b, sizeof b, 0);
		closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
		if (!closed && send(fd, " ", 1, MSG_NOSIGNAL) < 0)
			closed = 1;
	}
	double secs = (double)(cx_mono_us() - t0) / 1e6;
	CHECK(closed && secs >= SLOW_DEADLINE_S && secs < SLOW_DEADLINE_S + 3,
	      "the gateway closes a body still arriving after %d s: closed %d after %.1f s",
	      SLOW_DEADLINE_S, closed, secs);
	close(fd);
	CHECK(wait_stats(inflight_is, 0, &gs), "its slot is back: %u", gs.inflight);
	CHECK(gs.slow_body == 1, "counted: slow_body %lu", (unsigned long)gs.slow_body);
}

/* ---- the queue (run 2: a pool of 2, 2 per user, 3 queued, QWAIT_MS) ---- */
#define QWAIT_MS 2000

/* A whole request to /v1/held, its model the tag; the answer is read later. */
static int held_open(const char *key, const char *tag)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)gateway_port()),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		perror("held_open");
		return -1;
	}
	char body[64];
	int bl = snprintf(body, sizeof body, "{\"model\":\"%s\",\"messages\":[]}", tag);
	sendf(fd,
	      "POST /v1/held HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\n"
	      "content-type: application/json\r\ncontent-length: %d\r\n\r\n%s",
	      key, bl, body);
	return fd;
}

static void held_release(const char *tag)
{
	pthread_mutex_lock(&mu);
	size_t l = strlen(held_released);
	snprintf(held_released + l, sizeof held_released - l, " %s ", tag);
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Wait until n held requests reached the upstream; the order they came in. */
static int held_wait(int n, char *order, size_t cap)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&mu);
	while (held_arrivals < n)
		if (pthread_cond_timedwait(&cv, &mu, &dl))
			break;
	int ok = held_arrivals == n;
	snprintf(order, cap, "%s", held_order);
	pthread_mutex_unlock(&mu);
	return ok;
}

/* The answer to a held request: 200 with its model. */
static int held_answered(int fd, const char *tag)
{
	char resp[4096], want[48];
	slow_read(fd, resp, sizeof resp);
	snprintf(want, sizeof want, "\"model\":\"%s\"", tag);
	int ok = !strncmp(resp, "HTTP/1.1 200", 12) && strstr(resp, want);
	if (!ok)
		fprintf(stderr, "held %s answered: %.300s\n", tag, resp);
	return ok;
}

static int queued_is(const struct gw_stats *s, unsigned n)
{
	return s->queued == n;
}

/* dave fills the pool with two requests the provider holds; alice's request
 * waits QWAIT_MS and gets 529; one that leaves the queue frees its place;
 * alice queues her share (2), bob one: the queue is full (529 at once for
 * bob's next, 429 for alice's); as dave's end, bob's queued request gets a
 * slot before alice's second (alice holds one, bob none), and each queued
 * request is answered 200.  Last, a queued body still arriving is given a
 * slot, holds it until the body is in, and goes on. */
static void check_queue(CURL *h, int *nrep)
{
	struct gw_report rep;
	struct gw_stats gs;
	CURLcode cc;
	char order[256];
	set_base(up_port);
	int d1 = held_open(token4, "d1");
	CHECK(held_wait(1, order, sizeof order), "d1 at the provider: %s", order);
	int d2 = held_open(token4, "d2");
	CHECK(held_wait(2, order, sizeof order), "d2 at the provider: %s", order);
	CHECK(wait_stats(inflight_is, 2, &gs) && gs.queued == 0, "dave holds the pool: %u, %u queued",
	      gs.inflight, gs.queued);

	/* a queued request that gets no slot in time: 529 */
	memset(&r, 0, sizeof r);
	uint64_t t0 = cx_mono_us();
	long st = post(h, "/v1/json", token1, 0, &r, &cc);
	double ms = (double)(cx_mono_us() - t0) / 1000.0;
	CHECK(st == 529 && strstr(r.body, "\"overloaded_error\"") &&
		  strstr(r.body, "gateway: waited 2000 ms for a slot of the pool (2 in flight, 0 queued"),
	      "queue timeout: %ld %s", st, r.body);
	CHECK(ms >= QWAIT_MS && ms < QWAIT_MS + 1500, "the 529 came after %.0f ms, want %d", ms, QWAIT_MS);
	CHECK(strcasestr(r.hdrs, "\nretry-after: 2\r\n") != NULL, "529 retry-after: %s", r.hdrs);

	/* a queued request whose agent leaves gives its place back */
	int x = held_open(token1, "x1");
	CHECK(wait_stats(queued_is, 1, &gs), "x1 queued: %u", gs.queued);
	close(x);
	CHECK(wait_stats(queued_is, 0, &gs), "x1 left the queue: %u", gs.queued);

	/* alice queues her share, then bob one: the queue (3) is full */
	int a1 = held_open(token1, "a1");
	CHECK(wait_stats(queued_is, 1, &gs), "a1 queued: %u", gs.queued);
	int a2 = held_open(token1, "a2");
	CHECK(wait_stats(queued_is, 2, &gs), "a2 queued: %u", gs.queued);
	int b1 = held_open(token3, "b1");
	CHECK(wait_stats(queued_is, 3, &gs), "b1 queued: %u", gs.queued);
	CHECK(slow_waiting(a1) && slow_waiting(a2) && slow_waiting(b1), "queued requests are unanswered");
	memset(&r, 0, sizeof r);
	t0 = cx_mono_us();
	st = post(h, "/v1/json", token3, 0, &r, &cc);
	ms = (double)(cx_mono_us() - t0) / 1000.0;
	CHECK(st == 529 && strstr(r.body, "\"overloaded_error\"") &&
		  strstr(r.body, "gateway: 2 requests in flight and 3 queued, of all users (caps 2 and 3)"),
	      "queue full: %ld %s", st, r.body);
	CHECK(ms < 1000, "queue full: 529 at once, not after a wait (%.0f ms)", ms);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/json", token1, 0, &r, &cc);
	CHECK(st == 429 && strstr(r.body, "user alice has 0 requests in flight and 2 queued (cap 2)"),
	      "alice's share is in the queue: %ld %s", st, r.body);

	/* slots go to the user holding fewest: a1 (first queued), then b1, then a2 */
	held_release("d1");
	CHECK(held_answered(d1, "d1"), "d1 answered");
	CHECK(wait_report_of(++*nrep, "sess-4", &rep) && rep.status == 200, "d1's report");
	CHECK(held_wait(3, order, sizeof order) && !strcmp(order, "d1 d2 a1 "), "a1 next: %s", order);
	held_release("d2");
	CHECK(held_answered(d2, "d2"), "d2 answered");
	CHECK(wait_report_of(++*nrep, "sess-4", &rep) && rep.status == 200, "d2's report");
	CHECK(held_wait(4, order, sizeof order) && !strcmp(order, "d1 d2 a1 b1 "),
	      "bob (no slot) before alice's second (she holds one): %s", order);
	held_release("a1");
	CHECK(held_answered(a1, "a1"), "a1 waited, then 200 (not 529)");
	CHECK(wait_report(++*nrep, &rep) && rep.status == 200, "a1's report");
	CHECK(held_wait(5, order, sizeof order) && !strcmp(order, "d1 d2 a1 b1 a2 "), "then a2: %s", order);
	held_release("b1");
	held_release("a2");
	CHECK(held_answered(b1, "b1") && held_answered(a2, "a2"), "b1, a2 answered");
	close(d1);
	close(d2);
	close(a1);
	close(a2);
	close(b1);
	*nrep += 2;

	/* a queued request whose body is still arriving holds the slot it is
	 * given while the rest comes, then goes on */
	d1 = held_open(token4, "d3");
	d2 = held_open(token4, "d4");
	CHECK(held_wait(7, order, sizeof order), "d3, d4 at the provider: %s", order);
	int sl = slow_open(token1);
	CHECK(wait_stats(queued_is, 1, &gs), "a slow body queued: %u", gs.queued);
	held_release("d3");
	CHECK(held_answered(d1, "d3"), "d3 answered");
	CHECK(wait_stats(queued_is, 0, &gs) && gs.inflight == 2, "the slow body got d3's slot: %u, %u queued",
	      gs.inflight, gs.queued);
	CHECK(slow_waiting(sl), "its body is not in: unanswered");
	char resp[4096];
	slow_finish(sl);
	slow_read(sl, resp, sizeof resp);
	CHECK(!strncmp(resp, "HTTP/1.1 200", 12) && strstr(resp, "claude-json-2"),
	      "then forwarded: %.200s", resp);
	held_release("d4");
	CHECK(held_answered(d2, "d4"), "d4 answered");
	close(sl);
	close(d1);
	close(d2);
	*nrep += 3;
	CHECK(wait_stats(inflight_is, 0, &gs) && gs.queued == 0 && gs.inflight_users == 0,
	      "all given back: %u in flight, %u queued, %u users", gs.inflight, gs.queued,
	      gs.inflight_users);
	CHECK(gs.queue_wait_count == 4 && gs.queue_timeouts == 1 && gs.refused_queue_full == 1 &&
		  gs.refused_user_cap == 1 && gs.refused_global_cap == 0 && gs.overloaded == 2,
	      "waited %lu, timeouts %lu, queue full %lu, user cap %lu, global cap %lu, overloaded %lu",
	      (unsigned long)gs.queue_wait_count, (unsigned long)gs.queue_timeouts,
	      (unsigned long)gs.refused_queue_full, (unsigned long)gs.refused_user_cap,
	      (unsigned long)gs.refused_global_cap, (unsigned long)gs.overloaded);
}

static void *queue_tests_thread(void *arg)
{
	(void)arg;
	int nrep = 0;
	pthread_mutex_lock(&mu);
	nreports = 0; /* this run's reports only */
	pthread_mutex_unlock(&mu);
	CURL *h = curl_easy_init();
	check_queue(h, &nrep);
	curl_easy_cleanup(h);
	__atomic_store_n(&tests_done, 1, __ATOMIC_RELEASE);
	lws_cancel_service(ctx);
	return NULL;
}

static void *tests_thread(void *arg)
{
	(void)arg;
	struct gw_report rep;
	CURLcode cc;
	int nrep = 0;
	CURL *h = curl_easy_init();

	/* 1. missing / wrong token -> 401, no provider request, no report */
	memset(&r, 0, sizeof r);
	long st = post(h, "/v1/messages?beta=true", NULL, 0, &r, &cc);
	CHECK(st == 401, "missing token: status %ld", st);
	CHECK(strstr(r.body, "\"authentication_error\""), "401 body: %s", r.body);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/messages?beta=true", "cxg_bogus", 1, &r, &cc);
	CHECK(st == 401 && strstr(r.body, "\"type\":\"error\""), "bad token: %ld %s", st, r.body);

	check_stream(h, &nrep);

	/* 3. upstream 429 passed through */
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/rate", token1, 0, &r, &cc);
	CHECK(st == 429 && strstr(r.body, "slow down please"), "429: %ld %s", st, r.body);
	CHECK(wait_report(++nrep, &rep), "report 3");
	CHECK(rep.status == 429 && !strcmp(rep.error, "slow down please"), "429 report: %d '%s'",
	      rep.status, rep.error);
	CHECK(!strcmp(rep.model, "claude-req-0"), "model from the request: %s", rep.model);

	/* 4. non-SSE JSON: usage from the body */
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/json", token1, 0, &r, &cc);
	CHECK(st == 200 && strstr(r.body, "claude-json-2"), "json: %ld", st);
	CHECK(wait_report(++nrep, &rep), "report 4");
	CHECK(rep.usage.input == 3 && rep.usage.output == 9 && !strcmp(rep.model, "claude-json-2"),
	      "json usage %lu/%lu %s", (unsigned long)rep.usage.input, (unsigned long)rep.usage.output,
	      rep.model);

	/* 5. upstream cut mid-stream: the agent sees a broken response, cut=1 */
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/cut", token1, 0, &r, &cc);
	CHECK(cc != CURLE_OK, "cut: the client must see an incomplete response (curl %d)", cc);
	CHECK(strstr(r.body, "message_start"), "cut: what was sent arrived");
	CHECK(wait_report(++nrep, &rep), "report 5");
	CHECK(rep.status == 200 && rep.cut == 1 && rep.curl_code != 0, "cut report: %d cut %d curl %d",
	      rep.status, rep.cut, rep.curl_code);

	/* 6. the agent leaves mid-stream: curl aborts, the upstream sees the close */
	memset(&r, 0, sizeof r);
	r.abort_after_first = 1;
	up_saw_close = 0;
	st = post(h, "/v1/hang", token1, 0, &r, &cc);
	CHECK(cc == CURLE_WRITE_ERROR, "hang: client aborted (%d)", cc);
	CHECK(wait_report(++nrep, &rep), "report 6");
	CHECK(rep.cut == 1, "agent-left report: cut %d err '%s'", rep.cut, rep.error);
	CHECK(wait_flag(&up_saw_close, 5), "upstream saw the gateway close");

	/* 7. provider unreachable: 502 with an api_error body, status 0 */
	set_base(closed_port);
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/messages?beta=true", token1, 0, &r, &cc);
	CHECK(st == 502 && strstr(r.body, "\"api_error\""), "refused: %ld %s", st, r.body);
	CHECK(wait_report(++nrep, &rep), "report 7");
	CHECK(rep.status == 0 && rep.curl_code == CURLE_COULDNT_CONNECT, "refused report: %d %d '%s'",
	      rep.status, rep.curl_code, rep.error);

	/* 8. outside /v1/ */
	memset(&r, 0, sizeof r);
	st = post(h, "/other", token1, 0, &r, &cc);
	CHECK(st == 404, "non-v1: %ld", st);

	/* 9. a session without a provider: 403, and its session hears why */
	memset(&r, 0, sizeof r);
	st = post(h, "/v1/messages", token2, 0, &r, &cc);
	CHECK(st == 403 && strstr(r.body, "\"permission_error\""), "no provider: %ld %s", st, r.body);
	CHECK(wait_report_of(++nrep, "sess-2", &rep), "report 9");
	CHECK(rep.status == 0 && strstr(rep.error, "no AI provider"), "no-provider report: %d '%s'",
	      rep.status, rep.error);

	check_fair_shares(h, &nrep);
	check_body_deadline();

	curl_easy_cleanup(h);
	__atomic_store_n(&tests_done, 1, __ATOMIC_RELEASE);
	lws_cancel_service(ctx);
	return NULL;
}

static int cb_other(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)wsi, (void)reason, (void)user, (void)in, (void)len;
	return 0;
}

static struct lws_context *context_new(void)
{
	static const struct lws_protocols protos[] = {{"x", cb_other, 0, 0, 0, NULL, 0},
						      {NULL, NULL, 0, 0, 0, NULL, 0}};
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.protocols = protos;
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.timeout_secs = 30;
	info.max_http_header_data = 4096;
	return lws_create_context(&info);
}

/* Start the gateway with lim in a new context, run tests on a thread while
 * this one serves, stop; the stats at the end in *out. */
static int run(const struct gateway_limits *lim, void *(*tests)(void *), struct gw_stats *out,
	       char **metrics)
{
	cx_err err = CX_ERR_INIT;
	ctx = context_new();
	if (!ctx || gateway_start(ctx, "127.0.0.1", 0, &hooks, lim, &err) < 0) {
		fprintf(stderr, "start: %s\n", err.msg);
		return -1;
	}
	snprintf(gw_url, sizeof gw_url, "http://127.0.0.1:%d", gateway_port());
	printf("gateway on %s, upstream on %d\n", gw_url, up_port);
	__atomic_store_n(&tests_done, 0, __ATOMIC_RELEASE);
	pthread_t tt;
	pthread_create(&tt, NULL, tests, NULL);
	while (!__atomic_load_n(&tests_done, __ATOMIC_ACQUIRE)) {
		if (lws_service(ctx, 0) < 0)
			break;
		pthread_mutex_lock(&mu);
		gateway_get_stats(&stats_seen);
		pthread_mutex_unlock(&mu);
	}
	pthread_join(tt, NULL);
	gateway_get_stats(out);
	size_t len;
	FILE *f = open_memstream(metrics, &len);
	if (f) {
		gateway_metrics_write(f, NULL);
		fclose(f);
	}
	gateway_stop();
	lws_context_destroy(ctx);
	return 0;
}

/* Each line of want is a line of the metrics text. */
static void check_metrics(const char *metrics, const char *const *want)
{
	for (; *want; want++) {
		char line[256];
		snprintf(line, sizeof line, "\n%s\n", *want);
		CHECK(metrics && strstr(metrics, line), "metrics: want '%s'", *want);
	}
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	gateway_token_new(token1);
	gateway_token_new(token2);
	gateway_token_new(token3);
	gateway_token_new(token4);
	CHECK(strlen(token1) == GW_TOKEN_LEN && !strncmp(token1, "cxg_", 4), "token %s", token1);

	int lfd = listen_any(&up_port);
	int cfd = listen_any(&closed_port);
	close(cfd); /* nothing listens there any more */
	pthread_t up;
	pthread_create(&up, NULL, upstream_thread, (void *)(intptr_t)lfd);
	lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

	/* 1. no queue: past the pool, 529 at once */
	const struct gateway_limits lim = {.max_inflight = 3,
					   .max_inflight_per_user = 2,
					   .body_deadline_s = SLOW_DEADLINE_S,
					   .max_queued = 0,
					   .queue_timeout_ms = QWAIT_MS};
	struct gw_stats s;
	char *metrics = NULL;
	if (run(&lim, tests_thread, &s, &metrics) < 0)
		return 1;
	printf("stats: requests %lu unauthorized %lu 2xx %lu 4xx %lu none %lu ttfb n=%lu\n",
	       (unsigned long)s.requests, (unsigned long)s.unauthorized, (unsigned long)s.by_class[2],
	       (unsigned long)s.by_class[4], (unsigned long)s.by_class[0], (unsigned long)s.ttfb_count);
	CHECK(s.unauthorized == 2, "unauthorized %lu", (unsigned long)s.unauthorized);
	static const char *const want1[] = {
	    "cortex_gateway_refused_total{reason=\"user_cap\"} 1",
	    "cortex_gateway_refused_total{reason=\"global_cap\"} 1",
	    "cortex_gateway_refused_total{reason=\"queue_full\"} 0",
	    "cortex_gateway_requests_total{status=\"overloaded\"} 1",
	    "cortex_gateway_queued 0",
	    "cortex_gateway_queue_limit{bound=\"length\"} 0",
	    "cortex_gateway_queue_wait_seconds_count 0",
	    NULL,
	};
	check_metrics(metrics, want1);
	free(metrics);
	metrics = NULL;

	/* 2. a queue past the pool */
	const struct gateway_limits qlim = {.max_inflight = 2,
					    .max_inflight_per_user = 2,
					    .body_deadline_s = SLOW_DEADLINE_S,
					    .max_queued = 3,
					    .queue_timeout_ms = QWAIT_MS};
	if (run(&qlim, queue_tests_thread, &s, &metrics) < 0)
		return 1;
	static const char *const want2[] = {
	    "cortex_gateway_queued 0",
	    "cortex_gateway_queue_limit{bound=\"length\"} 3",
	    "cortex_gateway_queue_limit{bound=\"wait_seconds\"} 2",
	    "cortex_gateway_queue_timeouts_total 1",
	    "cortex_gateway_refused_total{reason=\"queue_full\"} 1",
	    "cortex_gateway_refused_total{reason=\"global_cap\"} 0",
	    "cortex_gateway_refused_total{reason=\"user_cap\"} 1",
	    "cortex_gateway_requests_total{status=\"overloaded\"} 2",
	    "cortex_gateway_inflight 0",
	    "cortex_gateway_queue_wait_seconds_bucket{le=\"30\"} 4",
	    "cortex_gateway_queue_wait_seconds_bucket{le=\"+Inf\"} 4",
	    "cortex_gateway_queue_wait_seconds_count 4",
	    NULL,
	};
	check_metrics(metrics, want2);
	CHECK(s.queue_wait_us_sum > 0 && s.queue_wait_bucket[0] == 0,
	      "queue waits: sum %lu us, %lu under 10 ms", (unsigned long)s.queue_wait_us_sum,
	      (unsigned long)s.queue_wait_bucket[0]);
	free(metrics);

	shutdown(lfd, SHUT_RDWR);
	close(lfd);
	pthread_join(up, NULL);
	printf(failures ? "FAILED: %d\n" : "ok\n", failures);
	return failures ? 1 : 0;
}
