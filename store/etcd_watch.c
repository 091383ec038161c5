/* etcd_watch.c — one streaming /v3/watch per store watch, on a thread of its
 * own.  The answer is a stream of JSON objects, one per line; each line's
 * events are delivered in order, and the next revision to ask for is kept, so a
 * broken stream (an endpoint gone) is reopened on the next endpoint from there.
 * A watch whose start was compacted away gets STORE_EV_RESYNC and goes on from
 * the current revision.  Cancel wakes the thread with curl_multi_wakeup. */
#include "etcd_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct etcd_watch {
	struct etcd *e; /* not owned */
	struct ebuf req_key, req_end; /* base64 of key and range_end */
	int64_t next_rev;	      /* etcd's numbering */
	size_t strip;
	int64_t rev_off;
	store_watch_fn cb;
	void *arg;
	CURLM *multi;
	struct ebuf line;
	int stop, detached; /* atomic */
	int broken;	    /* this stream must be reopened */
	pthread_t th;
};

static int w_stopped(struct etcd_watch *w) { return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE); }

static void deliver_event(struct etcd_watch *w, json_t *ev)
{
	json_t *kv = json_object_get(ev, "kv");
	const char *type = json_string_value(json_object_get(ev, "type"));
	const char *k64 = json_string_value(json_object_get(kv, "key"));
	const char *v64 = json_string_value(json_object_get(kv, "value"));
	int64_t rev = etcd_jint(kv, "mod_revision");
	char *key = NULL, *val = NULL;
	size_t klen = 0, vlen = 0;
	if (!k64 || etcd_b64_decode(k64, strlen(k64), &key, &klen) < 0 || klen < w->strip) {
		free(key);
		return;
	}
	int del = type && strcmp(type, "DELETE") == 0;
	if (!del && etcd_b64_decode(v64 ? v64 : "", v64 ? strlen(v64) : 0, &val, &vlen) < 0) {
		free(key);
		return;
	}
	store_event out = {.kind = del ? STORE_EV_DEL : STORE_EV_PUT,
			   .key = key + w->strip,
			   .val = del ? NULL : val,
			   .len = del ? 0 : vlen,
			   .rev = rev + w->rev_off};
	if (!w_stopped(w))
		w->cb(w->arg, &out);
	free(key);
	free(val);
}

static void resync(struct etcd_watch *w)
{
	cx_err err = CX_ERR_INIT;
	int64_t rev = 0;
	if (etcd_revision(w->e, &rev, &err) < 0) {
		w->broken = 1; /* try again on the next round */
		return;
	}
	w->next_rev = rev + 1;
	store_event ev = {.kind = STORE_EV_RESYNC, .rev = rev + w->rev_off};
	if (!w_stopped(w))
		w->cb(w->arg, &ev);
	w->broken = 1; /* reopen from next_rev */
}

static void on_line(struct etcd_watch *w, const char *p, size_t n)
{
	json_error_t jerr;
	json_t *j = json_loadb(p, n, 0, &jerr);
	json_t *res = json_object_get(j, "result");
	if (!res) { /* {"error":...}: the stream is over */
		w->broken = 1;
		json_decref(j);
		return;
	}
	if (etcd_jint(res, "compact_revision") > 0) {
		resync(w);
	} else if (json_is_true(json_object_get(res, "canceled"))) {
		w->broken = 1;
	} else {
		json_t *evs = json_object_get(res, "events");
		size_t i;
		json_t *ev;
		int64_t last = 0;
		json_array_foreach(evs, i, ev)
		{
			deliver_event(w, ev);
			int64_t r = etcd_jint(json_object_get(ev, "kv"), "mod_revision");
			if (r > last)
				last = r;
		}
		if (last >= w->next_rev)
			w->next_rev = last + 1;
	}
	json_decref(j);
}

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct etcd_watch *w = arg;
	size_t len = sz * n;
	for (size_t i = 0; i < len;) {
		char *nl = memchr(p + i, '\n', len - i);
		size_t take = nl ? (size_t)(nl - (p + i)) : len - i;
		ebuf_add(&w->line, p + i, take);
		if (w->line.over)
			return 0; /* a message over the cap: drop the stream */
		i += take;
		if (nl) {
			if (w->line.len)
				on_line(w, w->line.p, w->line.len);
			w->line.len = 0;
			i++;
		}
	}
	return w->broken ? 0 : len;
}

/* One stream, until it ends, breaks or the watch is cancelled. */
static void stream_once(struct etcd_watch *w)
{
	unsigned idx;
	const char *base = etcd_endpoint(w->e, &idx);
	char url[600], rev[32];
	snprintf(url, sizeof url, "%s/v3/watch", base);
	snprintf(rev, sizeof rev, "%lld", (long long)w->next_rev);
	struct ebuf body = {0};
	ebuf_str(&body, "{\"create_request\":{\"key\":\"");
	ebuf_add(&body, w->req_key.p, w->req_key.len);
	ebuf_str(&body, "\",\"range_end\":\"");
	ebuf_add(&body, w->req_end.p, w->req_end.len);
	ebuf_str(&body, "\",\"start_revision\":\"");
	ebuf_str(&body, rev);
	ebuf_str(&body, "\"}}");
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	if (!c || !h || body.over) {
		curl_easy_cleanup(c);
		curl_slist_free_all(h);
		ebuf_free(&body);
		return;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.p);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	w->line.len = 0;
	w->broken = 0;
	curl_multi_add_handle(w->multi, c);
	int running = 1;
	while (running && !w_stopped(w) && !w->broken) {
		if (curl_multi_perform(w->multi, &running) != CURLM_OK)
			break;
		if (running)
			curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
	}
	int ok = 0;
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(w->multi, &left)))
		if (m->msg == CURLMSG_DONE && m->data.result == CURLE_OK)
			ok = 1;
	if (!ok && !w_stopped(w))
		etcd_endpoint_failed(w->e, idx);
	curl_multi_remove_handle(w->multi, c);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	ebuf_free(&body);
}

static void *watch_main(void *arg)
{
	struct etcd_watch *w = arg;
	unsigned backoff_ms = 50;
	while (!w_stopped(w)) {
		uint64_t t0 = cx_mono_ms();
		stream_once(w);
		if (w_stopped(w))
			break;
		if (cx_mono_ms() - t0 > 2000)
			backoff_ms = 50;
		/* wait before reopening; a cancel wakes the poll */
		curl_multi_poll(w->multi, NULL, 0, (int)backoff_ms, NULL);
		if (backoff_ms < 1000)
			backoff_ms *= 2;
	}
	if (__atomic_load_n(&w->detached, __ATOMIC_ACQUIRE)) {
		curl_multi_cleanup(w->multi);
		ebuf_free(&w->req_key);
		ebuf_free(&w->req_end);
		ebuf_free(&w->line);
		free(w);
	}
	return NULL;
}

int etcd_watch_start(struct etcd *e, const char *key, size_t klen, const char *end, size_t elen,
		     int64_t start_rev, size_t strip, int64_t rev_off, store_watch_fn cb,
		     void *arg, struct etcd_watch **out, cx_err *err)
{
	struct etcd_watch *w = calloc(1, sizeof *w);
	if (!w)
		return cx_err_set(err, ENOMEM, "store: allocating a watch");
	w->e = e;
	w->next_rev = start_rev;
	w->strip = strip;
	w->rev_off = rev_off;
	w->cb = cb;
	w->arg = arg;
	w->line.max = ETCD_WATCH_LINE_MAX;
	ebuf_b64(&w->req_key, key, klen);
	ebuf_b64(&w->req_end, end, elen);
	w->multi = curl_multi_init();
	int rc = 0;
	if (!w->multi || w->req_key.over || w->req_end.over ||
	    (rc = pthread_create(&w->th, NULL, watch_main, w)) != 0) {
		curl_multi_cleanup(w->multi);
		ebuf_free(&w->req_key);
		ebuf_free(&w->req_end);
		free(w);
		return cx_err_set(err, rc ? rc : ENOMEM, "store: starting an etcd watch");
	}
	*out = w;
	return 0;
}

void etcd_watch_cancel(struct etcd_watch *w)
{
	if (!w)
		return;
	int self = pthread_equal(pthread_self(), w->th);
	__atomic_store_n(&w->detached, self, __ATOMIC_RELEASE);
	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	curl_multi_wakeup(w->multi);
	if (self) {
		pthread_detach(w->th);
		return;
	}
	pthread_join(w->th, NULL);
	curl_multi_cleanup(w->multi);
	ebuf_free(&w->req_key);
	ebuf_free(&w->req_end);
	ebuf_free(&w->line);
	free(w);
}
