/* mitm.c — mitm_relay(): one intercepted CONNECT tunnel of a brokered host.
 *
 *   sandbox ══TLS (leaf for host, minted by the broker CA)══▶ cfd
 *   1. handshake with the sandbox; read its request head (cap 64 KiB, 431 past it)
 *   2. handshake with the upstream on ufd: SNI host, ALPN http/1.1, peer
 *      verified (system store + upstream_ca_file, hostname or IP checked);
 *      a failure answers the sandbox 502 with the reason, never a tunnel
 *   3. head rewritten (mitm_head.c: values in, Connection: close) and sent,
 *      then bytes both ways until the upstream is done; every value the
 *      upstream echoes is masked with '*' on its way to the sandbox.
 *
 * Both fds are switched to nonblocking for the relay (their flags are put
 * back at the end); the thread waits in poll() with a deadline.  shutdown()
 * of either fd by another thread (egress_stop) ends the relay promptly.
 * Buffers that held a value are zeroed before they are freed. */
#include "mitm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "caps.h"

#define HANDSHAKE_MS   (15 * 1000)  /* each TLS handshake, and the request head */
#define IDLE_MS	       (300 * 1000) /* no byte either way for this long ends the relay */
#define FLOW_BUF       (16u << 10)  /* one TLS record's worth per direction */
#define HEAD_OUT_CAP   (CX_CAP_MITM_HEAD * 2u) /* the rewritten head (values may be longer) */

static void ssl_freep(SSL **s)
{
	SSL_free(*s);
}
static void ctx_freep(SSL_CTX **c)
{
	SSL_CTX_free(*c);
}
#define cleanup_ssl __attribute__((cleanup(ssl_freep)))
#define cleanup_ctx __attribute__((cleanup(ctx_freep)))

/* Wait until the SSL call that returned r may be retried: 0, or -1 when it
 * failed for good (the caller names it) or the deadline passed (ETIMEDOUT). */
static int ssl_wait(SSL *ssl, int fd, int r, uint64_t deadline, int *timed_out)
{
	int e = SSL_get_error(ssl, r);
	short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
	if (!ev)
		return -1;
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline) {
			*timed_out = 1;
			return -1;
		}
		struct pollfd p = {fd, ev, 0};
		int n = poll(&p, 1, (int)(deadline - now));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

static int ssl_handshake(SSL *ssl, int fd, int server, const char *who, cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + HANDSHAKE_MS;
	int timed_out = 0;
	for (;;) {
		int r = server ? SSL_accept(ssl) : SSL_connect(ssl);
		if (r == 1)
			return 0;
		if (ssl_wait(ssl, fd, r, deadline, &timed_out) < 0)
			break;
	}
	if (timed_out)
		return mitm_fail(err, ETIMEDOUT, "TLS handshake with %s timed out", who);
	long v = server ? X509_V_OK : SSL_get_verify_result(ssl);
	if (v != X509_V_OK) {
		ERR_clear_error();
		return mitm_fail(err, EPROTO, "%s's certificate failed verification: %s", who,
				 X509_verify_cert_error_string(v));
	}
	return mitm_fail(err, EPROTO, "TLS handshake with %s failed", who);
}

static int ssl_write_all(SSL *ssl, int fd, const void *buf, size_t len, cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + IDLE_MS;
	int timed_out = 0;
	size_t off = 0;
	while (off < len) {
		size_t w = 0;
		int r = SSL_write_ex(ssl, (const char *)buf + off, len - off, &w);
		if (r > 0) {
			off += w;
			continue;
		}
		if (ssl_wait(ssl, fd, r, deadline, &timed_out) < 0)
			return mitm_fail(err, timed_out ? ETIMEDOUT : EPIPE, "TLS write");
	}
	return 0;
}

/* A short plain-text answer to the sandbox, then a clean close. */
static void answer(SSL *ssl, int fd, int status, const char *reason, const char *text)
{
	char buf[1024];
	int n = snprintf(buf, sizeof buf,
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
			 status, reason, strlen(text) + 1, text);
	cx_err ignored = CX_ERR_INIT;
	if (n > 0 && (size_t)n < sizeof buf &&
	    ssl_write_all(ssl, fd, buf, (size_t)n, &ignored) == 0)
		SSL_shutdown(ssl);
	ERR_clear_error();
}

/* Read the sandbox's request head into head (cap CX_CAP_MITM_HEAD bytes,
 * plus whatever body bytes came along).  *end: where the head stops. */
static int read_head(SSL *ssl, int fd, char *head, size_t cap, size_t *len, size_t *end,
		     cx_err *err)
{
	uint64_t deadline = cx_mono_ms() + HANDSHAKE_MS;
	int timed_out = 0;
	*len = *end = 0;
	while (*len < cap) {
		size_t n = 0;
		int r = SSL_read_ex(ssl, head + *len, cap - *len, &n);
		if (r > 0) {
			size_t from = *len > 3 ? *len - 3 : 0;
			*len += n;
			size_t e = mitm_head_end(head + from, *len - from);
			if (e) {
				*end = from + e;
				return 0;
			}
			continue;
		}
		if (ssl_wait(ssl, fd, r, deadline, &timed_out) < 0) {
			if (timed_out)
				return mitm_fail(err, ETIMEDOUT, "the request head did not arrive in %d s",
						 HANDSHAKE_MS / 1000);
			return mitm_fail(err, ECONNRESET, "the sandbox closed before its request head");
		}
	}
	return mitm_fail(err, EMSGSIZE, "request head over %u bytes", CX_CAP_MITM_HEAD);
}

/* ---- the relay ---- */

enum { OPEN, CLEAN_EOF, DIRTY_EOF };

/* One direction: src → buf → dst.  buf[off..ready) is due to dst;
 * buf[ready..len) is held back: a tail that is the start of a value (shorter
 * than the longest value; none unless the bytes so far could become one). */
struct flow {
	SSL *src, *dst;
	int sfd, dfd;
	char *buf;
	size_t cap, len, off, ready;
	int eof;
	int wfd;   /* what the last call waits for: fd and events */
	short wev;
	uint64_t *count;
	const struct mitm_swap *redact; /* NULL: no redaction */
	size_t nredact;
};

/* Move bytes as far as they go without waiting.  1 when src is finished and
 * everything is delivered, 0 when waiting (f->wfd/wev), -1 when dst failed. */
static int flow_step(struct flow *f, int *progress)
{
	f->wfd = -1;
	f->wev = 0;
	for (;;) {
		if (f->off < f->ready) {
			size_t w = 0;
			int r = SSL_write_ex(f->dst, f->buf + f->off, f->ready - f->off, &w);
			if (r > 0) {
				f->off += w;
				*progress = 1;
				continue;
			}
			int e = SSL_get_error(f->dst, r);
			if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
				return -1;
			f->wfd = f->dfd;
			f->wev = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
			return 0;
		}
		if (f->off) { /* all due bytes sent: the held tail moves to the front */
			memmove(f->buf, f->buf + f->off, f->len - f->off);
			f->len -= f->off;
			f->ready -= f->off;
			f->off = 0;
		}
		if (f->eof) {
			if (f->len == f->ready)
				return 1;
			f->ready = f->len;
			continue;
		}
		size_t n = 0;
		int r = SSL_read_ex(f->src, f->buf + f->len, f->cap - f->len, &n);
		if (r > 0) {
			*f->count += n;
			f->len += n;
			*progress = 1;
			if (f->redact) {
				mitm_redact(f->buf, f->len, f->redact, f->nredact);
				f->ready = f->len - mitm_partial_tail(f->buf, f->len, f->redact,
								      f->nredact);
			} else {
				f->ready = f->len;
			}
			continue;
		}
		int e = SSL_get_error(f->src, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			f->wfd = f->sfd;
			f->wev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
			return 0;
		}
		/* close_notify, or the TCP end without it (or a TLS error): the
		 * difference is passed on to the other side (see mitm_relay). */
		f->eof = e == SSL_ERROR_ZERO_RETURN ? CLEAN_EOF : DIRTY_EOF;
		ERR_clear_error();
		*progress = 1;
	}
}

static short events_for(const struct flow *a, const struct flow *b, int fd)
{
	short ev = 0;
	if (a && a->wfd == fd)
		ev |= a->wev;
	if (b && b->wfd == fd)
		ev |= b->wev;
	return ev;
}

/* Both directions until the upstream is finished (or either side fails, or
 * nothing moves for IDLE_MS).  up: sandbox → upstream, down: upstream → sandbox. */
static int relay(struct flow *up, struct flow *down, SSL *cs, int cfd, SSL *us, int ufd,
		 cx_err *err)
{
	int up_done = 0, sent_close = 0;
	uint64_t last = cx_mono_ms();
	for (;;) {
		int progress = 0;
		int ru = up_done ? 1 : flow_step(up, &progress);
		int rd = flow_step(down, &progress);
		if (ru < 0)
			return mitm_fail(err, EPIPE, "the upstream stopped taking bytes");
		if (rd < 0)
			return mitm_fail(err, EPIPE, "the sandbox stopped taking bytes");
		if (rd == 1) {
			/* The upstream's answer is complete.  A clean end is passed on
			 * as close_notify; an unclean one as a bare close, so the
			 * sandbox can tell a truncated answer too. */
			if (down->eof == CLEAN_EOF)
				SSL_shutdown(cs);
			ERR_clear_error();
			return 0;
		}
		if (ru == 1 && !up_done) {
			up_done = 1;
			if (up->eof == CLEAN_EOF && !sent_close) {
				SSL_shutdown(us); /* the sandbox is done sending: half-close */
				sent_close = 1;
			}
			ERR_clear_error();
		}
		uint64_t now = cx_mono_ms();
		if (progress) {
			last = now;
			continue;
		}
		if (now - last >= IDLE_MS)
			return mitm_fail(err, ETIMEDOUT, "no byte either way for %d s", IDLE_MS / 1000);
		struct flow *a = up_done ? NULL : up;
		struct pollfd p[2] = {{cfd, events_for(a, down, cfd), 0},
				      {ufd, events_for(a, down, ufd), 0}};
		int n = poll(p, 2, (int)(IDLE_MS - (now - last)));
		if (n < 0 && errno != EINTR)
			return cx_err_set(err, errno, "poll");
		if (n > 0 && ((p[0].revents & POLLNVAL) || (p[1].revents & POLLNVAL)))
			return mitm_fail(err, EBADF, "a relay fd was closed under it");
	}
}

static int set_nonblock(int fd, int *old)
{
	*old = fcntl(fd, F_GETFL);
	if (*old < 0)
		return -1;
	return fcntl(fd, F_SETFL, *old | O_NONBLOCK);
}

static int check_swaps(const struct mitm_swap *sw, size_t nsw, cx_err *err)
{
	for (size_t k = 0; k < nsw; k++) {
		if (!sw[k].placeholder || !*sw[k].placeholder || !sw[k].value)
			return mitm_fail(err, EINVAL, "broker: swap %zu has no placeholder or value", k);
		if (strpbrk(sw[k].value, "\r\n"))
			return mitm_fail(err, EINVAL,
					 "broker: the value of swap %zu holds a line break", k);
	}
	return 0;
}

/* The work after both fds are nonblocking. */
static int relay_tls(struct mitm_ca *ca, int cfd, int ufd, const char *host,
		     const struct mitm_swap *sw, size_t nsw, const char *upstream_ca_file,
		     struct mitm_stats *st, cx_err *err)
{
	char h[256];
	int is_ip = 0;
	if (mitm_host_norm(host, h, sizeof h, &is_ip, err) < 0)
		return -1;
	cleanup_ctx SSL_CTX *sctx = mitm_ca_server_ctx(ca, h, err);
	if (!sctx)
		return -1;
	cleanup_ssl SSL *cs = SSL_new(sctx);
	if (!cs || !SSL_set_fd(cs, cfd))
		return mitm_fail(err, ENOMEM, "SSL_new");
	SSL_set_mode(cs, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (ssl_handshake(cs, cfd, 1, "the sandbox", err) < 0)
		return -1;

	/* The head, then the upstream: an oversized head never reaches it. */
	size_t hcap = CX_CAP_MITM_HEAD + 1, hlen = 0, hend = 0;
	cleanup_free char *head = malloc(hcap);
	if (!head)
		return mitm_fail(err, ENOMEM, "out of memory");
	if (read_head(cs, cfd, head, hcap, &hlen, &hend, err) < 0) {
		if (err && err->code == EMSGSIZE)
			answer(cs, cfd, 431, "Request Header Fields Too Large",
			       "cortex egress: the request head is over 64 KiB");
		return -1;
	}
	if (hend > CX_CAP_MITM_HEAD) {
		answer(cs, cfd, 431, "Request Header Fields Too Large",
		       "cortex egress: the request head is over 64 KiB");
		return mitm_fail(err, EMSGSIZE, "request head over %u bytes", CX_CAP_MITM_HEAD);
	}
	st->up += hlen;

	cleanup_ctx SSL_CTX *uctx = mitm_ca_client_ctx(ca, upstream_ca_file, err);
	cleanup_ssl SSL *us = uctx ? SSL_new(uctx) : NULL;
	int ok = us && SSL_set_fd(us, ufd);
	if (ok && !is_ip)
		ok = SSL_set_tlsext_host_name(us, h) == 1 && SSL_set1_host(us, h) == 1;
	if (ok && is_ip)
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(us), h) == 1;
	if (!ok) {
		if (!uctx)
			cx_err_wrap(err, "%s", h);
		else
			mitm_fail(err, ENOMEM, "upstream TLS setup for %.64s", h);
		answer(cs, cfd, 502, "Bad Gateway", "cortex egress: upstream TLS setup failed");
		return -1;
	}
	SSL_set_mode(us, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	char who[300];
	snprintf(who, sizeof who, "upstream %s", h);
	if (ssl_handshake(us, ufd, 0, who, err) < 0) {
		char text[sizeof err->msg + 64];
		snprintf(text, sizeof text, "cortex egress: %s", err->msg);
		answer(cs, cfd, 502, "Bad Gateway", text);
		return -1;
	}

	char *out = NULL;
	size_t olen = 0;
	if (mitm_head_rewrite(head, hend, sw, nsw, HEAD_OUT_CAP, &out, &olen, &st->swapped, err) <
	    0) {
		if (err->code == EMSGSIZE)
			answer(cs, cfd, 431, "Request Header Fields Too Large",
			       "cortex egress: the request head is too large once credentials are in");
		else
			answer(cs, cfd, 400, "Bad Request", "cortex egress: malformed request head");
		return -1;
	}
	int r = ssl_write_all(us, ufd, out, olen, err);
	mitm_free_secret(out, olen);
	if (r == 0 && hlen > hend)
		r = ssl_write_all(us, ufd, head + hend, hlen - hend, err);
	if (r < 0)
		return cx_err_wrap(err, "sending the request to %s", h);

	size_t hold = mitm_swap_max_value(sw, nsw);
	hold = hold ? hold - 1 : 0;
	cleanup_free char *ubuf = malloc(FLOW_BUF);
	cleanup_free char *dbuf = malloc(FLOW_BUF + hold);
	if (!ubuf || !dbuf)
		return mitm_fail(err, ENOMEM, "out of memory");
	struct flow up = {.src = cs, .dst = us, .sfd = cfd, .dfd = ufd, .buf = ubuf,
			  .cap = FLOW_BUF, .count = &st->up};
	struct flow down = {.src = us, .dst = cs, .sfd = ufd, .dfd = cfd, .buf = dbuf,
			    .cap = FLOW_BUF + hold, .count = &st->down,
			    .redact = nsw ? sw : NULL, .nredact = nsw};
	r = relay(&up, &down, cs, cfd, us, ufd, err);
	/* The response may have been masked in place: nothing of a value stays. */
	OPENSSL_cleanse(dbuf, FLOW_BUF + hold);
	return r < 0 ? cx_err_wrap(err, "relay with %s", h) : 0;
}

int mitm_relay(struct mitm_ca *ca, int cfd, int ufd, const char *host, const struct mitm_swap *sw,
	       size_t nsw, const char *upstream_ca_file, struct mitm_stats *st, cx_err *err)
{
	struct mitm_stats scratch;
	if (!st)
		st = &scratch;
	memset(st, 0, sizeof *st);
	if (!ca || cfd < 0 || ufd < 0 || !host)
		return mitm_fail(err, EINVAL, "mitm_relay: missing CA, fd or host");
	if (check_swaps(sw, nsw, err) < 0)
		return -1;
	int cfl = -1, ufl = -1;
	if (set_nonblock(cfd, &cfl) < 0 || set_nonblock(ufd, &ufl) < 0) {
		int e = errno;
		if (cfl >= 0)
			(void)fcntl(cfd, F_SETFL, cfl);
		return cx_err_set(err, e, "mitm_relay: fcntl");
	}
	int r = relay_tls(ca, cfd, ufd, host, sw, nsw, upstream_ca_file, st, err);
	(void)fcntl(cfd, F_SETFL, cfl);
	(void)fcntl(ufd, F_SETFL, ufl);
	ERR_clear_error();
	return r;
}
