/* Unit tests: the credential broker's TLS side (cortexd/egress/mitm*.c).
 *
 * The broker CA is made in a temp dir and loaded again; a TLS upstream runs
 * on 127.0.0.1 in threads, with a certificate for localhost/127.0.0.1 from a
 * test CA made here (passed as upstream_ca_file); mitm_relay() serves one end
 * of a socketpair whose other end is an OpenSSL client trusting only the
 * broker CA.  Checked: the upstream receives the value where the client sent
 * the placeholder, the client never reads the value (the upstream echoes it
 * back, and also plants it across record boundaries of a 1 MiB body, which
 * arrives otherwise intact), the stats; an upstream whose certificate fails
 * verification gives the client a 502; an oversized head a 431.  The head
 * rewrite is also checked on its own (Basic credentials, Connection).
 * Figures (leaf mint time, throughput through the relay vs direct) are
 * printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "caps.h"
#include "egress.h"
#include "mitm-internal.h"
#include "unit_util.h"

#define PLACEHOLDER "cortex-broker-0123456789abcdef0123456789abcdef"
#define VALUE	    "ghp_REALvalue_7c1d9e2f4a6b8c0d"
#define BODY_LEN    (1u << 20)

static char tmpdir[4096], test_ca_file[4200], *test_ca_pem;
static struct mitm_ca *CA;
static EVP_PKEY *test_ca_key;
static X509 *test_ca;
static SSL_CTX *good_ctx, *bad_ctx; /* upstream: localhost leaf / other.test leaf */
static char *body;		     /* the upstream's response body */
static const size_t planted[] = {16384 - 7, 2 * 16384 - 1, 3 * 16384 - 20, 5 * 16384 + 3,
				 BODY_LEN - sizeof VALUE + 1};

/* ---- certificates for the test upstream ---- */

static void ext(X509 *x, X509 *issuer, int nid, const char *v)
{
	X509V3_CTX c;
	X509V3_set_ctx_nodb(&c);
	X509V3_set_ctx(&c, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, nid, v);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for key: self-signed CA when issuer is NULL, else a leaf with san. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey,
		       const char *san)
{
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(cx_mono_us() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	X509_set_pubkey(x, key);
	if (!issuer) {
		ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		ext(x, x, NID_key_usage, "critical,keyCertSign");
	} else {
		ext(x, issuer, NID_subject_alt_name, san);
	}
	assert_true(X509_sign(x, issuer ? ikey : key, EVP_sha256()) > 0);
	return x;
}

static SSL_CTX *upstream_ctx(const char *cn, const char *san)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *leaf = make_cert(k, cn, test_ca, test_ca_key, san);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(ctx, leaf), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
	X509_free(leaf);
	EVP_PKEY_free(k);
	return ctx;
}

/* ---- the test upstream: one thread per connection ---- */

struct upstream {
	SSL_CTX *ctx;
	int lfd, port;
	unsigned nconn;
	pthread_t th;
	pthread_mutex_t mu;
	char head[8193]; /* the last request head received */
	size_t head_len;
	unsigned heads;
	int gate; /* >= 0: stream mode (see up_stream) */
};

struct up_conn {
	struct upstream *u;
	int fd;
};

static void *up_conn_main(void *arg)
{
	struct up_conn *c = arg;
	SSL *ssl = SSL_new(c->u->ctx);
	SSL_set_fd(ssl, c->fd);
	if (SSL_accept(ssl) != 1)
		goto out;
	char head[8192];
	size_t len = 0, end = 0;
	while (!end && len < sizeof head) {
		int n = SSL_read(ssl, head + len, (int)(sizeof head - len));
		if (n <= 0)
			goto out;
		len += (size_t)n;
		end = mitm_head_end(head, len);
	}
	if (!end)
		goto out;
	pthread_mutex_lock(&c->u->mu);
	memcpy(c->u->head, head, end);
	c->u->head_len = end;
	c->u->heads++;
	pthread_mutex_unlock(&c->u->mu);
	if (c->u->gate >= 0) {
		/* Stream mode: a first part ending in the start of the value, then
		 * (once the test opens the gate) the rest of it and an end. */
		static const char p1[] = "data: 1\n\ntok=ghp_REAL", p2[] = "value_7c1d9e2f4a6b8c0d\nend\n";
		char rh[160];
		int n = snprintf(rh, sizeof rh,
				 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
				 strlen(p1) + strlen(p2), p1);
		char g;
		if (SSL_write(ssl, rh, n) == n && read(c->u->gate, &g, 1) == 1 &&
		    SSL_write(ssl, p2, (int)strlen(p2)) == (int)strlen(p2))
			SSL_shutdown(ssl);
		goto out;
	}
	/* Echo what came as Authorization (a reflection the broker must mask). */
	char echo[512] = "";
	const char *a = memmem(head, end, "Authorization: ", 15);
	if (a) {
		const char *e = memchr(a, '\r', end - (size_t)(a - head));
		snprintf(echo, sizeof echo, "%.*s\n", e ? (int)(e - a) : 0, a);
	}
	char rh[256];
	int n = snprintf(rh, sizeof rh,
			 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 strlen(echo) + BODY_LEN, echo);
	if (SSL_write(ssl, rh, n) == n && SSL_write(ssl, body, BODY_LEN) == (int)BODY_LEN)
		SSL_shutdown(ssl);
out:
	SSL_free(ssl);
	close(c->fd);
	free(c);
	ERR_clear_error();
	return NULL;
}

static void *up_main(void *arg)
{
	struct upstream *u = arg;
	pthread_t th[16];
	unsigned n = 0;
	while (n < u->nconn && n < 16) {
		int fd = accept4(u->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			break;
		struct up_conn *c = malloc(sizeof *c);
		c->u = u;
		c->fd = fd;
		pthread_create(&th[n++], NULL, up_conn_main, c);
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	return NULL;
}

/* gate: -1, or the read end of a pipe for stream mode. */
static void upstream_start_gated(struct upstream *u, SSL_CTX *ctx, unsigned nconn, int gate)
{
	memset(u, 0, sizeof *u);
	u->gate = gate;
	u->ctx = ctx;
	u->nconn = nconn;
	pthread_mutex_init(&u->mu, NULL);
	u->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(u->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(u->lfd, 16), 0);
	socklen_t sl = sizeof sa;
	getsockname(u->lfd, (struct sockaddr *)&sa, &sl);
	u->port = ntohs(sa.sin_port);
	pthread_create(&u->th, NULL, up_main, u);
}

static void upstream_start(struct upstream *u, SSL_CTX *ctx, unsigned nconn)
{
	upstream_start_gated(u, ctx, nconn, -1);
}

static void upstream_stop(struct upstream *u)
{
	shutdown(u->lfd, SHUT_RDWR); /* unblocks accept if fewer connections came */
	pthread_join(u->th, NULL);
	close(u->lfd);
	pthread_mutex_destroy(&u->mu);
}

static int tcp_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* ---- the relay on its own thread ---- */

struct relay {
	int cfd, ufd;
	const char *host;
	const struct mitm_swap *sw;
	size_t nsw;
	struct mitm_stats st;
	cx_err err;
	int rc;
	pthread_t th;
};

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	r->err = (cx_err)CX_ERR_INIT;
	r->rc = mitm_relay(CA, r->cfd, r->ufd, r->host, r->sw, r->nsw, test_ca_file, &r->st, &r->err);
	/* As the egress thread does once the relay returns: the sandbox sees the end. */
	shutdown(r->cfd, SHUT_WR);
	return NULL;
}

/* Start a relay for host to the upstream on port (or to ufd if port is 0);
 * returns the client's end. */
static int relay_start(struct relay *r, const char *host, int port, int ufd,
		       const struct mitm_swap *sw, size_t nsw)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(r, 0, sizeof *r);
	r->cfd = sv[1];
	r->ufd = port ? tcp_connect(port) : ufd;
	r->host = host;
	r->sw = sw;
	r->nsw = nsw;
	pthread_create(&r->th, NULL, relay_main, r);
	return sv[0];
}

static void relay_join(struct relay *r, int close_ufd)
{
	pthread_join(r->th, NULL);
	close(r->cfd);
	if (close_ufd)
		close(r->ufd);
}

/* ---- the sandbox's client ---- */

/* TLS to host over fd, trusting trust only (PEM); sends req, returns every
 * plaintext byte read until the end (malloc'd, *len). */
static SSL *client_open(int fd, const char *trust_pem, const char *host, char *alpn_out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	BIO *b = BIO_new_mem_buf(trust_pem, -1);
	X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
	assert_non_null(ca);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca), 1);
	X509_free(ca);
	BIO_free(b);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* Offer h2 first: the broker must still pick http/1.1. */
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	unsigned char a[16];
	if (inet_pton(AF_INET, host, a) == 1) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		SSL_set1_host(ssl, host);
	}
	int hs = SSL_connect(ssl);
	if (hs != 1)
		fail_msg("client handshake with the broker: %s (verify: %s)",
			 ERR_error_string(ERR_get_error(), NULL),
			 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
	if (alpn_out) {
		const unsigned char *p = NULL;
		unsigned pl = 0;
		SSL_get0_alpn_selected(ssl, &p, &pl);
		snprintf(alpn_out, 16, "%.*s", (int)pl, p ? (const char *)p : "");
	}
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	return ssl;
}

static char *client_exchange(int fd, const char *trust_pem, const char *host, const char *req,
			     size_t reqlen, size_t *len, char *alpn_out)
{
	SSL *ssl = client_open(fd, trust_pem, host, alpn_out);
	size_t off = 0;
	while (off < reqlen) {
		int n = SSL_write(ssl, req + off, (int)(reqlen - off));
		if (n <= 0)
			break; /* a 431 may come while the rest is unsent */
		off += (size_t)n;
	}
	size_t cap = BODY_LEN + 65536, got = 0;
	char *out = malloc(cap);
	for (;;) {
		if (got == cap)
			out = realloc(out, cap *= 2);
		int n = SSL_read(ssl, out + got, (int)(cap - got));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	SSL_free(ssl);
	ERR_clear_error();
	*len = got;
	return out;
}

static const struct mitm_swap SW[] = {{PLACEHOLDER, VALUE}};
static const char REQ[] = "GET /repos/x HTTP/1.1\r\nHost: localhost\r\n"
			  "Authorization: Bearer " PLACEHOLDER "\r\n"
			  "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
			  "X-Note: token " PLACEHOLDER " again\r\n\r\n";

/* The response body the client must see: the upstream's, with every planted
 * value masked. */
static void check_body(const char *resp, size_t len)
{
	assert_null(memmem(resp, len, VALUE, strlen(VALUE)));
	assert_true(len >= BODY_LEN);
	const char *b = resp + len - BODY_LEN;
	size_t next = 0, vl = strlen(VALUE);
	for (size_t i = 0; i < BODY_LEN; i++) {
		int in_value = next < sizeof planted / sizeof *planted && i >= planted[next] &&
			       i < planted[next] + vl;
		char want = in_value ? '*' : body[i];
		if (b[i] != want)
			fail_msg("body byte %zu: expected %c, got %c", i, want, b[i]);
		if (next < sizeof planted / sizeof *planted && i + 1 == planted[next] + vl)
			next++;
	}
}

/* ---- tests ---- */

static void test_ca_reload(void **state)
{
	(void)state;
	char dir[4200];
	snprintf(dir, sizeof dir, "%s/ca", tmpdir);
	const char *pem = mitm_ca_pem(CA);
	assert_non_null(pem);
	struct mitm_ca *again = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(mitm_ca_open(dir, &again, &err), 0);
	assert_string_equal(mitm_ca_pem(again), pem);
	mitm_ca_free(again);

	struct stat st;
	char p[4300];
	assert_int_equal(stat(dir, &st), 0);
	assert_int_eq_msg(st.st_mode & 0777, 0700, "CA dir mode");
	snprintf(p, sizeof p, "%s/ca.key", dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_eq_msg(st.st_mode & 0777, 0600, "CA key mode");

	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(x);
	assert_int_eq_msg(X509_check_ca(x), 1, "CA:TRUE");
	assert_true(X509_get_key_usage(x) & KU_KEY_CERT_SIGN);
	char cn[128];
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
	assert_non_null(strstr(cn, "Cortex egress CA "));
	X509_free(x);

	/* A key readable by others is refused, not used. */
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(mitm_ca_open(dir, &again, &err), -1);
	assert_int_eq_msg(err.code, EPERM, "key mode 0644");
	assert_int_equal(chmod(p, 0600), 0);
}

static void test_swap_and_mask(void **state)
{
	(void)state;
	struct upstream u;
	upstream_start(&u, good_ctx, 1);
	struct relay r;
	int fd = relay_start(&r, "localhost", u.port, -1, SW, 1);
	size_t len = 0;
	char alpn[16];
	char *resp = client_exchange(fd, mitm_ca_pem(CA), "localhost", REQ, strlen(REQ), &len, alpn);
	relay_join(&r, 1);
	close(fd);
	upstream_stop(&u);
	if (r.rc != 0)
		fail_msg("mitm_relay: %s", r.err.msg);

	/* What the upstream got: the value, twice; no placeholder; one request. */
	assert_int_equal(u.heads, 1);
	u.head[u.head_len] = '\0';
	assert_non_null(strstr(u.head, "Authorization: Bearer " VALUE "\r\n"));
	assert_non_null(strstr(u.head, "X-Note: token " VALUE " again\r\n"));
	assert_null(strstr(u.head, PLACEHOLDER));
	assert_non_null(strstr(u.head, "\r\nConnection: close\r\n\r\n"));
	assert_null(strcasestr(u.head, "keep-alive"));

	/* What the client read: never the value; the echo masked; body intact. */
	assert_string_equal(alpn, "http/1.1");
	assert_true(len > 17 && memcmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
	char masked[128] = "Authorization: Bearer ";
	memset(masked + strlen(masked), '*', strlen(VALUE));
	strcat(masked, "\n");
	assert_non_null(memmem(resp, len, masked, strlen(masked)));
	check_body(resp, len);

	assert_int_eq_msg(r.st.swapped, 2, "swaps");
	assert_int_eq_msg(r.st.up, strlen(REQ), "bytes up");
	assert_int_eq_msg(r.st.down, len, "bytes down"); /* masking keeps lengths */
	free(resp);
}

static void test_bad_upstream_502(void **state)
{
	(void)state;
	struct upstream u;
	upstream_start(&u, bad_ctx, 1); /* a leaf for other.test, from the trusted test CA */
	struct relay r;
	int fd = relay_start(&r, "localhost", u.port, -1, SW, 1);
	size_t len = 0;
	char *resp = client_exchange(fd, mitm_ca_pem(CA), "localhost", REQ, strlen(REQ), &len, NULL);
	relay_join(&r, 1);
	close(fd);
	upstream_stop(&u);
	assert_int_equal(r.rc, -1);
	assert_int_eq_msg(r.err.code, EPROTO, "error code");
	assert_int_equal(u.heads, 0);
	resp = realloc(resp, len + 1);
	resp[len] = '\0';
	if (strncmp(resp, "HTTP/1.1 502 ", 13) != 0)
		fail_msg("expected a 502, got: %.200s", resp);
	assert_non_null(strstr(resp, "hostname mismatch"));
	assert_null(strstr(resp, VALUE));
	free(resp);
}

static void test_head_over_cap_431(void **state)
{
	(void)state;
	int us[2]; /* a stand-in upstream that must never hear a byte */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, us), 0);
	size_t big = CX_CAP_MITM_HEAD + 4096;
	char *req = malloc(big);
	int n = snprintf(req, big, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: ");
	memset(req + n, 'a', big - (size_t)n);
	struct relay r;
	int fd = relay_start(&r, "localhost", 0, us[1], SW, 1);
	size_t len = 0;
	char *resp = client_exchange(fd, mitm_ca_pem(CA), "localhost", req, big, &len, NULL);
	relay_join(&r, 1);
	close(fd);
	assert_int_equal(r.rc, -1);
	assert_int_eq_msg(r.err.code, EMSGSIZE, "error code");
	assert_true(len > 13 && strncmp(resp, "HTTP/1.1 431 ", 13) == 0);
	char c;
	assert_int_eq_msg(recv(us[0], &c, 1, MSG_DONTWAIT), 0, "upstream bytes (0: closed, none)");
	close(us[0]);
	free(req);
	free(resp);
}

/* Several relays at once (leaf cache and contexts shared between threads),
 * one of them by IP: the leaf then carries an IP SAN. */
static void test_concurrent(void **state)
{
	(void)state;
	enum { N = 6 };
	struct upstream u;
	upstream_start(&u, good_ctx, N);
	struct relay r[N];
	int fd[N];
	const char *hosts[N] = {"localhost", "127.0.0.1", "localhost",
				"127.0.0.1", "localhost", "LOCALHOST"};
	for (int i = 0; i < N; i++)
		fd[i] = relay_start(&r[i], hosts[i], u.port, -1, SW, 1);
	/* Clients on their own threads would be truer; sequential clients still
	 * leave N relays alive at once (each waits in its handshake). */
	for (int i = 0; i < N; i++) {
		size_t len = 0;
		char h[16];
		snprintf(h, sizeof h, "%s", hosts[i]);
		for (char *p = h; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		char *resp = client_exchange(fd[i], mitm_ca_pem(CA), h, REQ, strlen(REQ), &len, NULL);
		relay_join(&r[i], 1);
		close(fd[i]);
		if (r[i].rc != 0)
			fail_msg("relay %d: %s", i, r[i].err.msg);
		check_body(resp, len);
		free(resp);
	}
	upstream_stop(&u);
	assert_int_equal(u.heads, N);
}

/* A response flows as it comes (nothing held back but the start of a value),
 * and a value split across two writes is still masked. */
static void test_stream_flows(void **state)
{
	(void)state;
	int gate[2];
	assert_int_equal(pipe(gate), 0);
	struct upstream u;
	upstream_start_gated(&u, good_ctx, 1, gate[0]);
	struct relay r;
	int fd = relay_start(&r, "localhost", u.port, -1, SW, 1);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	SSL *ssl = client_open(fd, mitm_ca_pem(CA), "localhost", NULL);
	assert_int_equal(SSL_write(ssl, REQ, (int)strlen(REQ)), (int)strlen(REQ));
	char buf[4096];
	size_t got = 0;
	while (!memmem(buf, got, "tok=", 4)) {
		int n = SSL_read(ssl, buf + got, (int)(sizeof buf - 1 - got));
		if (n <= 0)
			fail_msg("the first part did not arrive before the upstream went on");
		got += (size_t)n;
	}
	/* The held bytes are exactly the start of the value. */
	buf[got] = '\0';
	assert_non_null(strstr(buf, "data: 1\n\ntok="));
	assert_null(strstr(buf, "ghp_"));
	assert_int_equal(write(gate[1], "g", 1), 1);
	for (;;) {
		int n = SSL_read(ssl, buf + got, (int)(sizeof buf - 1 - got));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	char want[128] = "data: 1\n\ntok=";
	memset(want + strlen(want), '*', strlen(VALUE));
	strcat(want, "\nend\n");
	assert_non_null(strstr(buf, want));
	SSL_free(ssl);
	relay_join(&r, 1);
	close(fd);
	upstream_stop(&u);
	close(gate[0]);
	close(gate[1]);
	if (r.rc != 0)
		fail_msg("mitm_relay: %s", r.err.msg);

	/* The pure function. */
	assert_int_equal(mitm_partial_tail("abc ghp_RE", 10, SW, 1), 6);
	assert_int_equal(mitm_partial_tail("abc g", 5, SW, 1), 1);
	assert_int_equal(mitm_partial_tail("abc\n\n", 5, SW, 1), 0);
	assert_int_equal(mitm_partial_tail("", 0, SW, 1), 0);
}

static void test_head_rewrite(void **state)
{
	(void)state;
	/* git's way: Basic base64("x-access-token:" PLACEHOLDER). */
	char cred[128], b64[256];
	snprintf(cred, sizeof cred, "x-access-token:%s", PLACEHOLDER);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)cred, (int)strlen(cred));
	char head[1024];
	snprintf(head, sizeof head,
		 "POST /git-upload-pack?t=" PLACEHOLDER " HTTP/1.1\n"
		 "Host: github.com\nauthorization:   Basic %s\nConnection: Upgrade, keep-alive\n"
		 "Upgrade: websocket\nX-Fold: a\n  " PLACEHOLDER "\n\n",
		 b64);
	char *out = NULL;
	size_t olen = 0;
	unsigned n = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(mitm_head_rewrite(head, strlen(head), SW, 1, 4096, &out, &olen, &n, &err),
			 0);
	out = realloc(out, olen + 1);
	out[olen] = '\0';
	snprintf(cred, sizeof cred, "x-access-token:%s", VALUE);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)cred, (int)strlen(cred));
	char want[1024];
	snprintf(want, sizeof want,
		 "POST /git-upload-pack?t=" VALUE " HTTP/1.1\r\n"
		 "Host: github.com\r\nauthorization: Basic %s\r\n"
		 "Upgrade: websocket\r\nX-Fold: a\r\n  " VALUE "\r\n"
		 "Connection: upgrade, close\r\n\r\n",
		 b64);
	assert_string_equal(out, want);
	assert_int_eq_msg(n, 3, "swaps");
	mitm_free_secret(out, olen + 1);

	/* Over the output cap: EMSGSIZE; a header without a colon: EINVAL. */
	assert_int_equal(mitm_head_rewrite(head, strlen(head), SW, 1, 64, &out, &olen, &n, &err),
			 -1);
	assert_int_equal(err.code, EMSGSIZE);
	const char *bad = "GET / HTTP/1.1\r\nno colon here\r\n\r\n";
	assert_int_equal(mitm_head_rewrite(bad, strlen(bad), SW, 1, 4096, &out, &olen, &n, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_int_equal(mitm_head_end("a\r\nb\r\n\r\nbody", 12), 8);
	assert_int_equal(mitm_head_end("a\nb\n\nbody", 9), 5);
	assert_int_equal(mitm_head_end("a\r\nb\r\n\r", 7), 0);
}

/* Figures: leaf mint time, and 64 MiB through the relay vs directly. */
static double now_s(void)
{
	return (double)cx_mono_us() / 1e6;
}

static void test_figures(void **state)
{
	(void)state;
	cx_err err = CX_ERR_INIT;
	double t0 = now_s();
	enum { M = 50 };
	for (int i = 0; i < M; i++) {
		char h[64];
		snprintf(h, sizeof h, "host%d.example.com", i);
		SSL_CTX *c = mitm_ca_server_ctx(CA, h, &err);
		assert_non_null(c);
		SSL_CTX_free(c);
	}
	double mint = (now_s() - t0) / M;
	t0 = now_s();
	for (int i = 0; i < 1000; i++) {
		SSL_CTX *c = mitm_ca_server_ctx(CA, "host7.example.com", &err);
		SSL_CTX_free(c);
	}
	double hit = (now_s() - t0) / 1000;
	print_message("figure: leaf mint %.3f ms, cache hit %.1f us\n", mint * 1e3, hit * 1e6);

	/* Throughput: 16 exchanges of a 1 MiB body each way (relay vs direct). */
	enum { K = 16 };
	struct upstream u;
	upstream_start(&u, good_ctx, K);
	t0 = now_s();
	for (int i = 0; i < K; i++) {
		int fd = tcp_connect(u.port);
		size_t len;
		char *resp =
		    client_exchange(fd, test_ca_pem, "localhost", REQ, strlen(REQ), &len, NULL);
		close(fd);
		free(resp);
	}
	double direct = now_s() - t0;
	upstream_stop(&u);
	upstream_start(&u, good_ctx, K);
	t0 = now_s();
	for (int i = 0; i < K; i++) {
		struct relay r;
		int fd = relay_start(&r, "localhost", u.port, -1, SW, 1);
		size_t len;
		char *resp = client_exchange(fd, mitm_ca_pem(CA), "localhost", REQ, strlen(REQ), &len,
					     NULL);
		relay_join(&r, 1);
		close(fd);
		free(resp);
	}
	double relayed = now_s() - t0;
	upstream_stop(&u);
	print_message("figure: %d x 1 MiB exchanges: direct %.1f MB/s (%.2f ms each), "
		      "through the broker %.1f MB/s (%.2f ms each)\n",
		      K, K / direct, direct * 1e3 / K, K / relayed, relayed * 1e3 / K);
}

static int setup(void **state)
{
	(void)state;
	if (unit_tmpdir("mitm", tmpdir, sizeof tmpdir) < 0)
		return -1;
	char dir[4200];
	snprintf(dir, sizeof dir, "%s/ca", tmpdir);
	cx_err err = CX_ERR_INIT;
	if (mitm_ca_open(dir, &CA, &err) < 0) {
		fprintf(stderr, "mitm_ca_open: %s\n", err.msg);
		return -1;
	}
	test_ca_key = EVP_EC_gen("P-256");
	test_ca = make_cert(test_ca_key, "Cortex test upstream CA", NULL, NULL, NULL);
	snprintf(test_ca_file, sizeof test_ca_file, "%s/upstream-ca.pem", tmpdir);
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, test_ca);
	char *data = NULL;
	long n = BIO_get_mem_data(b, &data);
	test_ca_pem = strndup(data, (size_t)n);
	BIO_free(b);
	FILE *f = fopen(test_ca_file, "w");
	fputs(test_ca_pem, f);
	fclose(f);
	good_ctx = upstream_ctx("localhost", "DNS:localhost,IP:127.0.0.1");
	bad_ctx = upstream_ctx("other.test", "DNS:other.test");
	body = malloc(BODY_LEN);
	for (size_t i = 0; i < BODY_LEN; i++)
		body[i] = (char)('a' + (i * 7 + i / 26) % 26);
	for (size_t k = 0; k < sizeof planted / sizeof *planted; k++)
		memcpy(body + planted[k], VALUE, strlen(VALUE));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	mitm_ca_free(CA);
	SSL_CTX_free(good_ctx);
	SSL_CTX_free(bad_ctx);
	X509_free(test_ca);
	EVP_PKEY_free(test_ca_key);
	free(body);
	free(test_ca_pem);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ca_reload),	      cmocka_unit_test(test_head_rewrite),
	    cmocka_unit_test(test_swap_and_mask),     cmocka_unit_test(test_bad_upstream_502),
	    cmocka_unit_test(test_head_over_cap_431), cmocka_unit_test(test_concurrent),
	    cmocka_unit_test(test_stream_flows),      cmocka_unit_test(test_figures),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
