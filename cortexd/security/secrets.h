/* secrets.h — secrets at rest: libsodium XChaCha20-Poly1305 (IETF AEAD).
 *
 * A sealed value is printable ASCII, safe to put in a JSON string:
 *     "cx1:" <key-id: 16 hex> ":" <base64(nonce 24 bytes || ciphertext+tag)>
 * The associated data is  user "\0" name  so a value copied into another
 * user's row (or under another name) fails to open.  Every seal draws a fresh
 * random nonce.  The key id is the first 8 bytes of BLAKE2b(key), hex: a value
 * sealed under another key is refused by id before any decryption is tried.
 *
 * The master key: 32 raw bytes in a file of mode 0600 (no group/other bits),
 * CORTEX_MASTER_KEY_FILE or DATA_DIR/master.key; created when missing.
 * All functions follow the cx.h error convention. */
#ifndef CORTEX_SECRETS_H
#define CORTEX_SECRETS_H

#include <stddef.h>
#include "cx.h"

#define SECRETS_KEY_BYTES 32
#define SECRETS_PREFIX "cx1:"

typedef struct secrets_key {
	unsigned char key[SECRETS_KEY_BYTES];
	char id[17]; /* 16 hex chars */
	int loaded;
} secrets_key;

/* Load the key at path; when create != 0 and the file is missing, make a new
 * random key there (O_EXCL, 0600).  Refuses a file of the wrong size, a
 * symlink, or one readable/writable by group or other. */
int secrets_key_load(secrets_key *k, const char *path, int create, cx_err *err);
/* Wipe the key from memory (sodium_memzero). */
void secrets_key_wipe(secrets_key *k);

/* Seal len bytes for (user, name).  *out: malloc'd NUL-terminated text. */
int secrets_seal(const secrets_key *k, const char *user, const char *name, const void *pt,
		 size_t len, char **out, cx_err *err);
/* Open a sealed text for (user, name).  *out: malloc'd, NUL-terminated,
 * *out_len (may be NULL) its length; the caller frees it with secrets_free().
 * A wrong user/name, a flipped byte, another key id or a malformed text is an
 * error (EBADMSG, or EKEYREJECTED for a key-id mismatch). */
int secrets_open(const secrets_key *k, const char *user, const char *name, const char *sealed,
		 char **out, size_t *out_len, cx_err *err);
/* Zero then free a plaintext returned by secrets_open(). */
void secrets_free(char *pt, size_t len);

/* What a sandbox holds instead of a brokered secret (docs/network.md): a
 * stable, meaningless string per (user, name), "cortex-broker-" and 32 hex
 * of BLAKE2b-128 keyed with a subkey of k (crypto_kdf, context "cxbroker")
 * over user "\0" name.  Without the master key it reveals nothing about the
 * value, the user or the name; the egress proxy swaps it for the value. */
#define SECRETS_PLACEHOLDER_PREFIX "cortex-broker-"
#define SECRETS_PLACEHOLDER_LEN	   (sizeof SECRETS_PLACEHOLDER_PREFIX - 1 + 32)
int secrets_placeholder(const secrets_key *k, const char *user, const char *name,
			char out[SECRETS_PLACEHOLDER_LEN + 1], cx_err *err);

#endif
