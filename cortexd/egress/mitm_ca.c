/* mitm_ca.c — the broker's certificate authority: one per installation
 * (DIR/ca.key, DIR/ca.pem), and the leaf certificates it mints for the hosts
 * whose requests carry brokered secrets.
 *
 * The CA key is EC P-256, 0600, never leaves cortexd; its certificate is what
 * sandboxes trust (mitm_ca_pem()).  Leaves share one EC key made at open
 * (it only ever lives in this process's memory) and are cached with their
 * server SSL_CTX, at most MITM_LEAF_CACHE hosts, least recently used out.
 * Everything after mitm_ca_open() may be called from any thread. */
#include "mitm-internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define CA_KEY	"ca.key"
#define CA_CERT "ca.pem"
#define CA_FILE_CAP (64u << 10) /* a PEM file we read back */

struct leaf {
	char host[256];
	SSL_CTX *ctx; /* one reference held by the cache */
	time_t minted;
	uint64_t used; /* LRU tick */
};

struct mitm_ca {
	EVP_PKEY *key; /* the CA's */
	X509 *cert;
	char *pem;
	EVP_PKEY *leaf_key; /* shared by every leaf */

	pthread_mutex_t mu; /* guards everything below */
	struct leaf leaves[MITM_LEAF_CACHE];
	unsigned nleaves;
	uint64_t tick;
	unsigned long minted;
	SSL_CTX *cli;	   /* client ctx for cli_ca_file (NULL: none built yet) */
	char *cli_ca_file; /* NULL: system store only */
};

int mitm_fail(cx_err *err, int code, const char *fmt, ...)
{
	char msg[sizeof err->msg];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	unsigned long e = ERR_peek_last_error();
	if (e && n >= 0 && (size_t)n < sizeof msg) {
		char es[256];
		ERR_error_string_n(e, es, sizeof es);
		snprintf(msg + n, sizeof msg - (size_t)n, " (%s)", es);
	}
	ERR_clear_error();
	cx_err_set(err, 0, "%s", msg);
	if (err)
		err->code = code;
	return -1;
}

static void bio_freep(BIO **b)
{
	BIO_free(*b);
}
static void x509_freep(X509 **x)
{
	X509_free(*x);
}
#define cleanup_bio  __attribute__((cleanup(bio_freep)))
#define cleanup_x509 __attribute__((cleanup(x509_freep)))

int mitm_host_norm(const char *host, char *out, size_t cap, int *is_ip, cx_err *err)
{
	size_t n = host ? strlen(host) : 0;
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n == 0 || n > 253 || n >= cap)
		return mitm_fail(err, EINVAL, "broker: host of %zu bytes", n);
	memcpy(out, host, n);
	out[n] = '\0';
	unsigned char addr[16];
	*is_ip = inet_pton(AF_INET, out, addr) == 1 || inet_pton(AF_INET6, out, addr) == 1;
	if (*is_ip)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = (char)tolower((unsigned char)out[i]);
		if (!(isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_'))
			return mitm_fail(err, EINVAL, "broker: host %.64s is not a DNS name", out);
		out[i] = c;
	}
	return 0;
}

/* ---- files ---- */

/* Read a whole small file at dirfd/name (no links followed); 0, CX_NOTFOUND, -1. */
static int file_read(int dirfd, const char *name, int secret, char **out, size_t *out_len,
		     cx_err *err)
{
	cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return CX_NOTFOUND;
	if (fd < 0)
		return cx_err_set(err, errno, "%s: open", name);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cx_err_set(err, errno, "%s: stat", name);
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > CA_FILE_CAP)
		return mitm_fail(err, EINVAL, "%s: not a regular file of 1..%u bytes", name,
				 CA_FILE_CAP);
	if (secret && (st.st_mode & 077))
		return mitm_fail(err, EPERM, "%s: mode %04o lets group or other read it; chmod 600 it",
				 name, (unsigned)(st.st_mode & 07777));
	size_t len = (size_t)st.st_size;
	char *buf = malloc(len + 1);
	if (!buf)
		return mitm_fail(err, ENOMEM, "%s: out of memory", name);
	if (cx_read_all(fd, buf, len, err) < 0) {
		OPENSSL_clear_free(buf, len + 1);
		return cx_err_wrap(err, "%s", name);
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

/* Write dirfd/name atomically: a 0600 temp file (O_EXCL), fsync, rename. */
static int file_write(int dirfd, const char *name, const void *data, size_t len, cx_err *err)
{
	char tmp[64], hex[17];
	cx_random_hex(hex, 8);
	snprintf(tmp, sizeof tmp, ".%s.%s", name, hex);
	cleanup_close int fd =
	    openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "%s: create", tmp);
	int r = cx_write_all(fd, data, len, err);
	if (r == 0 && fsync(fd) < 0)
		r = cx_err_set(err, errno, "fsync");
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return cx_err_wrap(err, "%s", name);
	}
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		int e = errno;
		unlinkat(dirfd, tmp, 0);
		return cx_err_set(err, e, "%s: rename", name);
	}
	return 0;
}

/* ---- certificates ---- */

static EVP_PKEY *ec_key_new(cx_err *err)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (!k)
		mitm_fail(err, EIO, "EC P-256 key generation failed");
	return k;
}

static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	b[0] &= 0x7f; /* positive */
	b[0] |= 0x40; /* and 16 bytes long */
	BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
	int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static X509 *ca_cert_new(EVP_PKEY *key, cx_err *err)
{
	cleanup_x509 X509 *x = X509_new();
	char hex[17], cn[64];
	cx_random_hex(hex, 8);
	snprintf(cn, sizeof cn, "Cortex egress CA %s", hex);
	X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
	if (!x || !X509_set_version(x, 2) || set_random_serial(x) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)MITM_CA_YEARS * 365 * 86400) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Cortex",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, key) ||
	    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(x, x, NID_subject_key_identifier, "hash") < 0 ||
	    !X509_sign(x, key, EVP_sha256())) {
		mitm_fail(err, EIO, "broker CA: building its certificate failed");
		return NULL;
	}
	return steal_pointer(&x);
}

/* subjectAltName of one DNS name or one IP address, built without a config string. */
static int add_san(X509 *x, const char *host, int is_ip)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	int ok = 0;
	if (!gens || !gen)
		goto out;
	if (is_ip) {
		unsigned char a[16];
		int len = inet_pton(AF_INET, host, a) == 1 ? 4 : 16;
		if (len == 16 && inet_pton(AF_INET6, host, a) != 1)
			goto out;
		ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
		if (!os || !ASN1_OCTET_STRING_set(os, a, len)) {
			ASN1_OCTET_STRING_free(os);
			goto out;
		}
		GENERAL_NAME_set0_value(gen, GEN_IPADD, os);
	} else {
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (!s || !ASN1_STRING_set(s, host, -1)) {
			ASN1_IA5STRING_free(s);
			goto out;
		}
		GENERAL_NAME_set0_value(gen, GEN_DNS, s);
	}
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto out;
	gen = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) == 1;
out:
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	return ok ? 0 : -1;
}

static X509 *leaf_new(struct mitm_ca *ca, const char *host, int is_ip, cx_err *err)
{
	cleanup_x509 X509 *x = X509_new();
	X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
	/* CN holds at most 64 characters; the SAN is what clients check anyway. */
	const char *cn = strlen(host) <= 64 ? host : "cortex-brokered-host";
	if (!x || !X509_set_version(x, 2) || set_random_serial(x) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)MITM_LEAF_DAYS * 86400) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    !X509_set_pubkey(x, ca->leaf_key) ||
	    add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") < 0 ||
	    add_san(x, host, is_ip) < 0 || !X509_sign(x, ca->key, EVP_sha256())) {
		mitm_fail(err, EIO, "broker: minting a certificate for %.64s failed", host);
		return NULL;
	}
	return steal_pointer(&x);
}

/* ALPN: http/1.1 or nothing, so no client ever speaks h2 framing to us. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	static const unsigned char h11[] = "\x08http/1.1";
	unsigned char *sel = NULL;
	unsigned char sellen = 0;
	if (SSL_select_next_proto(&sel, &sellen, h11, sizeof h11 - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	*outlen = sellen;
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx_new(struct mitm_ca *ca, const char *host, int is_ip, cx_err *err)
{
	cleanup_x509 X509 *leaf = leaf_new(ca, host, is_ip, err);
	if (!leaf)
		return NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate(ctx, leaf) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, ca->leaf_key) != 1) {
		SSL_CTX_free(ctx);
		mitm_fail(err, EIO, "broker: TLS server context for %.64s", host);
		return NULL;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return ctx;
}

SSL_CTX *mitm_ca_server_ctx(struct mitm_ca *ca, const char *host, cx_err *err)
{
	char h[256];
	int is_ip = 0;
	if (mitm_host_norm(host, h, sizeof h, &is_ip, err) < 0)
		return NULL;
	time_t now = time(NULL);
	pthread_mutex_lock(&ca->mu);
	for (unsigned i = 0; i < ca->nleaves; i++) {
		struct leaf *l = &ca->leaves[i];
		if (strcmp(l->host, h) == 0 && now - l->minted < MITM_LEAF_REISSUE) {
			l->used = ++ca->tick;
			SSL_CTX_up_ref(l->ctx);
			SSL_CTX *ctx = l->ctx;
			pthread_mutex_unlock(&ca->mu);
			return ctx;
		}
	}
	pthread_mutex_unlock(&ca->mu);

	/* Mint outside the lock: lookups of other hosts go on meanwhile.  Two
	 * threads minting the same host at once both succeed; the later insert
	 * replaces the earlier one. */
	SSL_CTX *ctx = server_ctx_new(ca, h, is_ip, err);
	if (!ctx)
		return NULL;
	pthread_mutex_lock(&ca->mu);
	ca->minted++;
	struct leaf *slot = NULL;
	for (unsigned i = 0; i < ca->nleaves && !slot; i++)
		if (strcmp(ca->leaves[i].host, h) == 0)
			slot = &ca->leaves[i];
	if (!slot && ca->nleaves < MITM_LEAF_CACHE)
		slot = &ca->leaves[ca->nleaves++];
	if (!slot) {
		slot = &ca->leaves[0];
		for (unsigned i = 1; i < ca->nleaves; i++)
			if (ca->leaves[i].used < slot->used)
				slot = &ca->leaves[i];
	}
	if (slot->ctx)
		SSL_CTX_free(slot->ctx); /* relays still using it hold their own reference */
	snprintf(slot->host, sizeof slot->host, "%s", h);
	slot->ctx = ctx;
	slot->minted = now;
	slot->used = ++ca->tick;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&ca->mu);
	return ctx;
}

static SSL_CTX *client_ctx_new(const char *ca_file, cx_err *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_default_verify_paths(ctx) != 1 ||
	    (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) ||
	    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9) != 0) {
		SSL_CTX_free(ctx);
		mitm_fail(err, EIO, "broker: TLS client context (upstream CA file %.200s)",
			  ca_file ? ca_file : "none");
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

static int same_file(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

SSL_CTX *mitm_ca_client_ctx(struct mitm_ca *ca, const char *upstream_ca_file, cx_err *err)
{
	pthread_mutex_lock(&ca->mu);
	if (ca->cli && same_file(ca->cli_ca_file, upstream_ca_file)) {
		SSL_CTX_up_ref(ca->cli);
		SSL_CTX *ctx = ca->cli;
		pthread_mutex_unlock(&ca->mu);
		return ctx;
	}
	pthread_mutex_unlock(&ca->mu);
	/* One file is used per installation; another one gets a context of its
	 * own that replaces the cached one. */
	SSL_CTX *ctx = client_ctx_new(upstream_ca_file, err);
	if (!ctx)
		return NULL;
	char *f = upstream_ca_file ? strdup(upstream_ca_file) : NULL;
	if (upstream_ca_file && !f) {
		SSL_CTX_free(ctx);
		mitm_fail(err, ENOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_lock(&ca->mu);
	SSL_CTX_free(ca->cli);
	free(ca->cli_ca_file);
	ca->cli = ctx;
	ca->cli_ca_file = f;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&ca->mu);
	return ctx;
}

unsigned long mitm_ca_minted(struct mitm_ca *ca)
{
	pthread_mutex_lock(&ca->mu);
	unsigned long n = ca->minted;
	pthread_mutex_unlock(&ca->mu);
	return n;
}

/* ---- open ---- */

static char *cert_pem(X509 *x)
{
	cleanup_bio BIO *b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509(b, x) != 1)
		return NULL;
	char *data = NULL;
	long n = BIO_get_mem_data(b, &data);
	char *s = n > 0 ? malloc((size_t)n + 1) : NULL;
	if (s) {
		memcpy(s, data, (size_t)n);
		s[n] = '\0';
	}
	return s;
}

static int ca_load(struct mitm_ca *ca, int dirfd, cx_err *err)
{
	char *kpem = NULL, *cpem = NULL;
	size_t klen = 0, clen = 0;
	int rk = file_read(dirfd, CA_KEY, 1, &kpem, &klen, err);
	if (rk == -1)
		return -1;
	int rc = file_read(dirfd, CA_CERT, 0, &cpem, &clen, err);
	if (rc == -1) {
		if (kpem)
			OPENSSL_clear_free(kpem, klen + 1);
		return -1;
	}
	if (rk == CX_NOTFOUND || rc == CX_NOTFOUND) {
		/* None yet, or a half of a pair (a crash between the two renames):
		 * the pair is made anew. */
		if (kpem)
			OPENSSL_clear_free(kpem, klen + 1);
		free(cpem);
		return CX_NOTFOUND;
	}
	BIO *kb = BIO_new_mem_buf(kpem, (int)klen), *cb = BIO_new_mem_buf(cpem, (int)clen);
	ca->key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
	ca->cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	BIO_free(kb);
	BIO_free(cb);
	OPENSSL_clear_free(kpem, klen + 1);
	free(cpem);
	if (!ca->key || !ca->cert)
		return mitm_fail(err, EINVAL, "broker CA: %s or %s does not parse", CA_KEY, CA_CERT);
	if (X509_check_private_key(ca->cert, ca->key) != 1)
		return mitm_fail(err, EINVAL, "broker CA: %s does not match %s", CA_KEY, CA_CERT);
	return 0;
}

static int ca_create(struct mitm_ca *ca, int dirfd, cx_err *err)
{
	ca->key = ec_key_new(err);
	if (!ca->key)
		return -1;
	ca->cert = ca_cert_new(ca->key, err);
	if (!ca->cert)
		return -1;
	cleanup_bio BIO *kb = BIO_new(BIO_s_mem());
	cleanup_free char *cpem = cert_pem(ca->cert);
	if (!kb || !cpem || PEM_write_bio_PrivateKey(kb, ca->key, NULL, NULL, 0, NULL, NULL) != 1)
		return mitm_fail(err, EIO, "broker CA: encoding failed");
	char *kdata = NULL;
	long klen = BIO_get_mem_data(kb, &kdata);
	/* The key first: a crash after it leaves a half pair, made anew on the next open. */
	int r = file_write(dirfd, CA_KEY, kdata, (size_t)klen, err);
	OPENSSL_cleanse(kdata, (size_t)klen);
	if (r < 0 || file_write(dirfd, CA_CERT, cpem, strlen(cpem), err) < 0)
		return cx_err_wrap(err, "broker CA");
	(void)fsync(dirfd);
	return 0;
}

int mitm_ca_open(const char *dir, struct mitm_ca **out, cx_err *err)
{
	*out = NULL;
	if (!dir || !*dir)
		return mitm_fail(err, EINVAL, "broker CA: no directory given");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "broker CA: mkdir %s", dir);
	cleanup_close int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return cx_err_set(err, errno, "broker CA: open %s", dir);
	struct stat st;
	if (fstat(dirfd, &st) < 0)
		return cx_err_set(err, errno, "broker CA: stat %s", dir);
	if ((st.st_mode & 077) && fchmod(dirfd, 0700) < 0)
		return cx_err_set(err, errno, "broker CA: chmod 700 %s", dir);

	struct mitm_ca *ca = calloc(1, sizeof *ca);
	if (!ca)
		return mitm_fail(err, ENOMEM, "out of memory");
	pthread_mutex_init(&ca->mu, NULL);
	int r = ca_load(ca, dirfd, err);
	if (r == CX_NOTFOUND)
		r = ca_create(ca, dirfd, err);
	if (r == 0 && !(ca->pem = cert_pem(ca->cert)))
		r = mitm_fail(err, ENOMEM, "broker CA: PEM encoding");
	if (r == 0 && !(ca->leaf_key = ec_key_new(err)))
		r = -1;
	if (r < 0) {
		mitm_ca_free(ca);
		return cx_err_wrap(err, "%s", dir);
	}
	*out = ca;
	return 0;
}

void mitm_ca_free(struct mitm_ca *ca)
{
	if (!ca)
		return;
	for (unsigned i = 0; i < ca->nleaves; i++)
		SSL_CTX_free(ca->leaves[i].ctx);
	SSL_CTX_free(ca->cli);
	free(ca->cli_ca_file);
	EVP_PKEY_free(ca->key);
	EVP_PKEY_free(ca->leaf_key);
	X509_free(ca->cert);
	free(ca->pem);
	pthread_mutex_destroy(&ca->mu);
	free(ca);
}

const char *mitm_ca_pem(const struct mitm_ca *ca)
{
	return ca ? ca->pem : NULL;
}
