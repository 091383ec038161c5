/* etcd_client.h — a small client of etcd's v3 JSON gateway (libcurl, jansson),
 * for store_etcd.c.  Internal to store/.
 *
 * Requests are POSTs of JSON bodies built by the caller (keys and values are
 * base64, so nothing needs escaping); answers are parsed with jansson.  Keep-
 * alive curl handles are pooled (ETCD_POOL handles; more threads make more,
 * and the extras are closed after use).  A request that cannot reach an
 * endpoint, or that etcd answers "unavailable", is tried on the next one. */
#ifndef CORTEX_ETCD_CLIENT_H
#define CORTEX_ETCD_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "cx.h"
#include "store.h"

#define ETCD_POOL	     8
#define ETCD_ENDPOINTS_MAX   16
#define ETCD_RESPONSE_MAX    (256u * 1024u * 1024u) /* one answer, bytes */
#define ETCD_WATCH_LINE_MAX  (64u * 1024u * 1024u)  /* one watch message */
#define ETCD_GRPC_NOT_FOUND  5
#define ETCD_GRPC_UNAVAILABLE 14

/* A growable byte buffer with a cap. */
struct ebuf {
	char *p;
	size_t len, cap, max;
	int over; /* something did not fit under max */
};
void ebuf_add(struct ebuf *b, const void *s, size_t n);
void ebuf_str(struct ebuf *b, const char *s);
void ebuf_b64(struct ebuf *b, const void *bin, size_t n); /* standard base64 */
void ebuf_free(struct ebuf *b);

/* base64 → malloc'd NUL-terminated bytes; -1 if not base64. */
int etcd_b64_decode(const char *b64, size_t b64len, char **out, size_t *out_len);
/* An int64 field of a JSON answer (etcd sends them as strings; omitted = 0). */
int64_t etcd_jint(const json_t *obj, const char *name);

struct etcd;
int etcd_new(struct etcd **out, const char *endpoints, unsigned timeout_ms, cx_err *err);
void etcd_free(struct etcd *e);
/* POST body to path (e.g. "/v3/kv/range").  0 and *out (json_decref it); -1
 * with err, *grpc_code (may be NULL) = etcd's code for an error answer, 0 for a
 * transport failure. */
int etcd_post(struct etcd *e, const char *path, const char *body, size_t len, json_t **out,
	      int *grpc_code, cx_err *err);

/* The watch stream: a thread of its own per watch (see etcd_watch.c). */
struct etcd_watch;
/* key/range_end raw bytes (etcd's), start_rev etcd's numbering (> 0);
 * strip = bytes of each event key not shown to cb (the namespace); rev_off
 * is added to every revision shown. */
int etcd_watch_start(struct etcd *e, const char *key, size_t klen, const char *end, size_t elen,
		     int64_t start_rev, size_t strip, int64_t rev_off, store_watch_fn cb,
		     void *arg, struct etcd_watch **out, cx_err *err);
void etcd_watch_cancel(struct etcd_watch *w);
/* The current revision of the cluster (etcd's numbering). */
int etcd_revision(struct etcd *e, int64_t *out, cx_err *err);
/* The endpoint in use now (for watch streams). */
const char *etcd_endpoint(struct etcd *e, unsigned *idx);
void etcd_endpoint_failed(struct etcd *e, unsigned idx);
unsigned etcd_timeout_ms(struct etcd *e);

#endif
