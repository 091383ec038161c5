/* mitm-internal.h — what the broker's TLS side shares between its files
 * (not part of egress.h's interface):
 *   mitm_ca.c    the installation's CA, leaf certificates minted per host
 *                (cached), and the two kinds of SSL_CTX built from them;
 *   mitm_head.c  the request head rewrite and the response redaction (pure
 *                functions over buffers, no I/O);
 *   mitm.c       mitm_relay(): the two TLS ends and the bytes between them. */
#ifndef CORTEX_MITM_INTERNAL_H
#define CORTEX_MITM_INTERNAL_H

#include <openssl/ssl.h>
#include <stdarg.h>

#include "egress.h"

#define MITM_LEAF_CACHE	   256	    /* hosts whose leaf (and server SSL_CTX) is kept */
#define MITM_LEAF_DAYS	   7	    /* a leaf is valid now-1h .. now+7d */
#define MITM_LEAF_REISSUE  (6 * 86400) /* ... and minted again once 6 days old */
#define MITM_CA_YEARS	   10

/* Like cx_err_set with our own code, plus the first queued OpenSSL error (the
 * queue is cleared).  Returns -1. */
int mitm_fail(cx_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A server SSL_CTX whose certificate is a leaf for host (a DNS name or an IP
 * literal), signed by ca; from the cache, or minted.  The caller owns one
 * reference (SSL_CTX_free).  ALPN: http/1.1 only. */
SSL_CTX *mitm_ca_server_ctx(struct mitm_ca *ca, const char *host, cx_err *err);
/* A client SSL_CTX that verifies peers against the system's default paths
 * plus upstream_ca_file (may be NULL).  The caller owns one reference. */
SSL_CTX *mitm_ca_client_ctx(struct mitm_ca *ca, const char *upstream_ca_file, cx_err *err);
/* Leaves minted so far (the test and the metrics read it). */
unsigned long mitm_ca_minted(struct mitm_ca *ca);

/* host as it goes into a certificate and SNI: lowercase [a-z0-9._-] labels,
 * or an IPv4/IPv6 literal (brackets removed).  *is_ip set.  0, or -1 (EINVAL). */
int mitm_host_norm(const char *host, char *out, size_t cap, int *is_ip, cx_err *err);

/* Offset just past the blank line that ends an HTTP head in buf[0..len)
 * ("\r\n\r\n" or "\n\n"), or 0 if it is not there yet. */
size_t mitm_head_end(const char *buf, size_t len);
/* The head the upstream gets: head[0..len) (a complete head, blank line
 * included) with every placeholder replaced by its value — also inside the
 * credentials of `Authorization: Basic` / `Proxy-Authorization: Basic`
 * (base64 of user:password, which is how git sends a token) — its Connection,
 * Proxy-Connection and Keep-Alive headers dropped and `Connection: close`
 * added (`Connection: upgrade, close` when the client asked for an upgrade).
 * Lines end in CRLF.  *out: malloc'd, to be freed with mitm_free_secret();
 * *swapped += replacements.  0, -1 with EMSGSIZE if the result would pass
 * cap, or EINVAL for a malformed head. */
int mitm_head_rewrite(const char *head, size_t len, const struct mitm_swap *sw, size_t nsw,
		      size_t cap, char **out, size_t *out_len, unsigned *swapped, cx_err *err);
/* Overwrite every occurrence of a swap's value in buf[0..len) with as many
 * '*' (same length: the response's framing stays valid); returns how many. */
unsigned mitm_redact(char *buf, size_t len, const struct mitm_swap *sw, size_t nsw);
/* How many bytes at the end of buf[0..len) must wait for more: the longest
 * tail that is the start of a value (0 almost always, so a stream flows). */
size_t mitm_partial_tail(const char *buf, size_t len, const struct mitm_swap *sw, size_t nsw);
/* Length of the longest value (the room a stream redaction may keep back). */
size_t mitm_swap_max_value(const struct mitm_swap *sw, size_t nsw);
/* Zero then free a buffer that held a value. */
void mitm_free_secret(char *p, size_t len);

#endif
