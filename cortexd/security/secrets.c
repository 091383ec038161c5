/* secrets.c — secrets at rest; see secrets.h for the format and the rules.
 *
 * Nothing here ever puts a plaintext or key byte into an error message. */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES   crypto_aead_xchacha20poly1305_ietf_ABYTES
#define ID_HEX	    16
#define B64	    sodium_base64_VARIANT_ORIGINAL
/* Guard against size overflow in the base64 arithmetic; far above any caller's cap. */
#define SEAL_MAX ((size_t)1 << 30)

/* Like cx_err_set, but with our own code and without strerror text: the
 * message alone says what is wrong and what to do. */
static int fail(cx_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(cx_err *err, int code, const char *fmt, ...)
{
	char msg[sizeof err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cx_err_set(err, 0, "%s", msg);
	if (err)
		err->code = code;
	return -1;
}

static int sodium_ready(cx_err *err)
{
	/* 0 first time, 1 already done: both fine; safe from any thread. */
	if (sodium_init() < 0)
		return fail(err, EIO, "libsodium failed to initialise");
	return 0;
}

/* Key id: the first 8 bytes of BLAKE2b-256(key), lowercase hex. */
static void key_id(secrets_key *k)
{
	unsigned char h[crypto_generichash_BYTES];
	crypto_generichash(h, sizeof h, k->key, sizeof k->key, NULL, 0);
	sodium_bin2hex(k->id, sizeof k->id, h, ID_HEX / 2);
	sodium_memzero(h, sizeof h);
}

static int key_create(secrets_key *k, const char *path, cx_err *err)
{
	cleanup_close int fd =
	    open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cx_err_set(err, errno, "master key %s: create", path);
	randombytes_buf(k->key, sizeof k->key);
	int rc = cx_write_all(fd, k->key, sizeof k->key, err);
	if (rc == 0 && fsync(fd) < 0)
		rc = cx_err_set(err, errno, "fsync");
	if (rc < 0) {
		sodium_memzero(k->key, sizeof k->key);
		/* A half-written key would be refused on the next start; remove it now. */
		unlink(path);
		return cx_err_wrap(err, "master key %s", path);
	}
	/* Make the new name durable too (best effort: the key itself is synced). */
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
		cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0)
			(void)fsync(dfd);
	}
	return 0;
}

int secrets_key_load(secrets_key *k, const char *path, int create, cx_err *err)
{
	memset(k, 0, sizeof *k);
	if (sodium_ready(err) < 0)
		return -1;
	if (!path || !*path)
		return fail(err, EINVAL, "master key: no path given");
	/* O_NONBLOCK: a FIFO planted at the path must not hang the daemon; it
	 * changes nothing for a regular file. */
	int oflags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	cleanup_close int fd = open(path, oflags);
	if (fd < 0 && errno == ENOENT && create) {
		if (key_create(k, path, err) == 0) {
			key_id(k);
			k->loaded = 1;
			return 0;
		}
		if (!err || err->code != EEXIST)
			return -1;
		/* Lost a race with another creator: read theirs. */
		cx_err_clear(err);
		fd = open(path, oflags);
	}
	if (fd < 0) {
		if (errno == ELOOP)
			return fail(err, ELOOP,
				    "master key %s: is a symbolic link; refusing to follow it",
				    path);
		return cx_err_set(err, errno, "master key %s: open", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cx_err_set(err, errno, "master key %s: stat", path);
	if (!S_ISREG(st.st_mode))
		return fail(err, EINVAL, "master key %s: not a regular file", path);
	if (st.st_size != SECRETS_KEY_BYTES)
		return fail(err, EINVAL, "master key %s: must be exactly %d bytes, it has %lld",
			    path, SECRETS_KEY_BYTES, (long long)st.st_size);
	if (st.st_mode & 077)
		return fail(err, EPERM,
			    "master key %s: mode %04o lets group or other access it; chmod 600 it",
			    path, (unsigned)(st.st_mode & 07777));
	if (cx_read_all(fd, k->key, sizeof k->key, err) < 0) {
		sodium_memzero(k->key, sizeof k->key);
		return cx_err_wrap(err, "master key %s", path);
	}
	key_id(k);
	k->loaded = 1;
	return 0;
}

void secrets_key_wipe(secrets_key *k)
{
	if (k)
		sodium_memzero(k, sizeof *k);
}

/* user "\0" name, malloc'd. */
static unsigned char *make_ad(const char *user, const char *name, size_t *out_len)
{
	size_t ul = strlen(user), nl = strlen(name);
	unsigned char *ad = malloc(ul + 1 + nl);
	if (!ad)
		return NULL;
	memcpy(ad, user, ul);
	ad[ul] = 0;
	memcpy(ad + ul + 1, name, nl);
	*out_len = ul + 1 + nl;
	return ad;
}

int secrets_seal(const secrets_key *k, const char *user, const char *name, const void *pt,
		 size_t len, char **out, cx_err *err)
{
	*out = NULL;
	if (sodium_ready(err) < 0)
		return -1;
	if (!k || !k->loaded)
		return fail(err, EINVAL, "seal: no master key loaded");
	if (!user || !name || (!pt && len))
		return fail(err, EINVAL, "seal: missing user, name or value");
	if (len > SEAL_MAX)
		return fail(err, E2BIG, "seal: value of %zu bytes is too large", len);
	size_t adlen = 0;
	cleanup_free unsigned char *ad = make_ad(user, name, &adlen);
	size_t blen = NONCE_BYTES + len + TAG_BYTES;
	cleanup_free unsigned char *bin = malloc(blen);
	size_t b64cap = sodium_base64_encoded_len(blen, B64); /* includes the NUL */
	size_t cap = strlen(SECRETS_PREFIX) + ID_HEX + 1 + b64cap;
	cleanup_free char *text = malloc(cap);
	if (!ad || !bin || !text)
		return fail(err, ENOMEM, "seal: out of memory");
	randombytes_buf(bin, NONCE_BYTES);
	unsigned long long clen = 0;
	crypto_aead_xchacha20poly1305_ietf_encrypt(bin + NONCE_BYTES, &clen, pt, len, ad, adlen,
						   NULL, bin, k->key);
	int n = snprintf(text, cap, "%s%s:", SECRETS_PREFIX, k->id);
	sodium_bin2base64(text + n, cap - (size_t)n, bin, NONCE_BYTES + (size_t)clen, B64);
	*out = steal_pointer(&text);
	return 0;
}

/* Strict base64 alphabet, '=' only as trailing padding.  libsodium's decoder
 * alone accepts some bytes >= 0x80 as aliases of valid digits, which would let
 * a changed text open to the same value. */
static int is_base64(const char *s, size_t n)
{
	size_t pad = 0;
	while (pad < n && pad < 2 && s[n - 1 - pad] == '=')
		pad++;
	if (n % 4)
		return 0;
	for (size_t i = 0; i < n - pad; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return 0;
	}
	return 1;
}

static int is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int secrets_open(const secrets_key *k, const char *user, const char *name, const char *sealed,
		 char **out, size_t *out_len, cx_err *err)
{
	*out = NULL;
	if (out_len)
		*out_len = 0;
	if (sodium_ready(err) < 0)
		return -1;
	if (!k || !k->loaded)
		return fail(err, EINVAL, "open: no master key loaded");
	if (!user || !name || !sealed)
		return fail(err, EINVAL, "open: missing user, name or sealed text");
	size_t plen = strlen(SECRETS_PREFIX);
	size_t slen = strlen(sealed);
	if (slen < plen + ID_HEX + 1 || memcmp(sealed, SECRETS_PREFIX, plen) ||
	    !is_lower_hex(sealed + plen, ID_HEX) || sealed[plen + ID_HEX] != ':')
		return fail(err, EBADMSG,
			    "open: not a sealed value (expected \"%s<key id>:<data>\")",
			    SECRETS_PREFIX);
	if (memcmp(sealed + plen, k->id, ID_HEX))
		return fail(err, EKEYREJECTED,
			    "open: sealed under key id %.16s, but the loaded master key is %s",
			    sealed + plen, k->id);
	const char *b64 = sealed + plen + ID_HEX + 1;
	size_t b64len = slen - plen - ID_HEX - 1;
	if (b64len > SEAL_MAX)
		return fail(err, EBADMSG, "open: sealed text too long");
	size_t bcap = b64len / 4 * 3 + 3;
	cleanup_free unsigned char *bin = malloc(bcap);
	if (!bin)
		return fail(err, ENOMEM, "open: out of memory");
	size_t blen = 0;
	const char *end = NULL;
	if (!is_base64(b64, b64len) ||
	    sodium_base642bin(bin, bcap, b64, b64len, NULL, &blen, &end, B64) != 0 ||
	    end != b64 + b64len)
		return fail(err, EBADMSG, "open: sealed data is not valid base64");
	if (blen < NONCE_BYTES + TAG_BYTES)
		return fail(err, EBADMSG, "open: sealed data is truncated");
	size_t adlen = 0;
	cleanup_free unsigned char *ad = make_ad(user, name, &adlen);
	size_t mcap = blen - NONCE_BYTES - TAG_BYTES;
	char *pt = malloc(mcap + 1);
	if (!ad || !pt) {
		free(pt);
		return fail(err, ENOMEM, "open: out of memory");
	}
	unsigned long long mlen = 0;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)pt, &mlen, NULL,
						       bin + NONCE_BYTES, blen - NONCE_BYTES, ad,
						       adlen, bin, k->key) != 0) {
		free(pt);
		return fail(
		    err, EBADMSG,
		    "open: authentication failed (tampered, or sealed for another user or name)");
	}
	pt[mlen] = '\0';
	*out = pt;
	if (out_len)
		*out_len = (size_t)mlen;
	return 0;
}

void secrets_free(char *pt, size_t len)
{
	if (!pt)
		return;
	/* len may be short of the buffer if the caller lost it; the NUL ends the text. */
	size_t n = len ? len : strlen(pt);
	sodium_memzero(pt, n);
	free(pt);
}

int secrets_placeholder(const secrets_key *k, const char *user, const char *name,
			char out[SECRETS_PLACEHOLDER_LEN + 1], cx_err *err)
{
	out[0] = '\0';
	if (sodium_ready(err) < 0)
		return -1;
	if (!k || !k->loaded)
		return fail(err, EINVAL, "placeholder: no master key loaded");
	if (!user || !name)
		return fail(err, EINVAL, "placeholder: missing user or name");
	unsigned char sub[crypto_generichash_KEYBYTES], h[16];
	crypto_kdf_derive_from_key(sub, sizeof sub, 1, "cxbroker", k->key);
	crypto_generichash_state st;
	crypto_generichash_init(&st, sub, sizeof sub, sizeof h);
	crypto_generichash_update(&st, (const unsigned char *)user, strlen(user) + 1);
	crypto_generichash_update(&st, (const unsigned char *)name, strlen(name));
	crypto_generichash_final(&st, h, sizeof h);
	sodium_memzero(sub, sizeof sub);
	sodium_memzero(&st, sizeof st);
	memcpy(out, SECRETS_PLACEHOLDER_PREFIX, sizeof SECRETS_PLACEHOLDER_PREFIX - 1);
	sodium_bin2hex(out + sizeof SECRETS_PLACEHOLDER_PREFIX - 1, 33, h, sizeof h);
	return 0;
}
