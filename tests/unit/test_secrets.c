/* Unit tests: secrets at rest (secrets.h) — sealing, opening, tampering, and
 * the master key file's rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secrets.h"
#include "unit_util.h"

static char tmpdir[4096];
static secrets_key K; /* loaded once in setup */


static void path_in(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *data, size_t len, unsigned mode)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_eq_msg(write(fd, data, len), len, "write");
	assert_int_equal(fchmod(fd, mode), 0); /* umask-proof */
	close(fd);
}

static int setup(void **state)
{
	(void)state;
	if (unit_tmpdir("secrets", tmpdir, sizeof tmpdir) < 0)
		return -1;
	char p[4200];
	path_in(p, sizeof p, "master.key");
	cx_err err = CX_ERR_INIT;
	return secrets_key_load(&K, p, 1, &err);
}

static int teardown(void **state)
{
	(void)state;
	secrets_key_wipe(&K);
	return 0;
}

/* Open must fail with an error code and a message, and leave *out NULL. */
static void expect_open_fails(const secrets_key *k, const char *user, const char *name,
			      const char *sealed, int code, const char *what)
{
	char *pt = (char *)"sentinel";
	size_t len = 99;
	cx_err err = CX_ERR_INIT;
	int rc = secrets_open(k, user, name, sealed, &pt, &len, &err);
	if (rc != -1)
		fail_msg("%s: expected -1, got %d", what, rc);
	if (pt)
		fail_msg("%s: *out not NULL on failure", what);
	if (!err.msg[0])
		fail_msg("%s: no error message", what);
	if (code && err.code != code)
		fail_msg("%s: expected code %d, got %d (%s)", what, code, err.code, err.msg);
}

static void test_round_trip(void **state)
{
	(void)state;
	const char *values[] = {"hunter2", "", "ünïcødé ✓ and \"quotes\"\n", NULL};
	for (const char **v = values; *v; v++) {
		char *sealed = NULL, *pt = NULL;
		size_t len = 0;
		cx_err err = CX_ERR_INIT;
		assert_int_equal(
		    secrets_seal(&K, "alice", "secrets/gh", *v, strlen(*v), &sealed, &err), 0);
		assert_true(!strncmp(sealed, SECRETS_PREFIX, strlen(SECRETS_PREFIX)));
		assert_true(!strncmp(sealed + 4, K.id, 16));
		assert_int_equal(sealed[20], ':');
		/* Printable ASCII only: safe inside a JSON string. */
		for (const char *c = sealed; *c; c++)
			if (*c < 0x21 || *c > 0x7e || *c == '"' || *c == '\\')
				fail_msg("sealed text has char 0x%02x", (unsigned char)*c);
		if (**v && strstr(sealed, *v))
			fail_msg("plaintext visible in sealed text");
		assert_int_equal(secrets_open(&K, "alice", "secrets/gh", sealed, &pt, &len, &err),
				 0);
		assert_int_eq_msg(len, strlen(*v), "plaintext length");
		assert_string_equal(pt, *v);
		secrets_free(pt, len);
		free(sealed);
	}
	/* Binary with an embedded NUL survives too (out_len tells the length). */
	const unsigned char bin[] = {0, 1, 2, 0xff, 0, 7};
	char *sealed = NULL, *pt = NULL;
	size_t len = 0;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "u", "n", bin, sizeof bin, &sealed, &err), 0);
	assert_int_equal(secrets_open(&K, "u", "n", sealed, &pt, &len, &err), 0);
	assert_int_eq_msg(len, sizeof bin, "binary length");
	assert_memory_equal(pt, bin, sizeof bin);
	secrets_free(pt, len);
	/* out_len may be NULL. */
	assert_int_equal(secrets_open(&K, "u", "n", sealed, &pt, NULL, &err), 0);
	secrets_free(pt, sizeof bin);
	free(sealed);
}

static void test_fresh_nonce(void **state)
{
	(void)state;
	char *a = NULL, *b = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "alice", "secrets/x", "same", 4, &a, &err), 0);
	assert_int_equal(secrets_seal(&K, "alice", "secrets/x", "same", 4, &b, &err), 0);
	assert_string_not_equal(a, b);
	/* The nonces (first 24 bytes = first 32 base64 chars) differ. */
	assert_true(strncmp(a + 21, b + 21, 32) != 0);
	free(a);
	free(b);
}

static void test_wrong_user_or_name(void **state)
{
	(void)state;
	char *s = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "alice", "secrets/gh", "tok", 3, &s, &err), 0);
	expect_open_fails(&K, "bob", "secrets/gh", s, EBADMSG, "other user");
	expect_open_fails(&K, "alice", "secrets/gl", s, EBADMSG, "other name");
	expect_open_fails(&K, "alice", "ai-providers/gh", s, EBADMSG, "other kind");
	/* The separator matters: ("alice", "secrets/gh") is not ("alic", "e\0secrets/gh"). */
	expect_open_fails(&K, "alic", "esecrets/gh", s, EBADMSG, "shifted boundary");
	expect_open_fails(&K, "alice", "", s, EBADMSG, "empty name");
	free(s);
}

static void test_flipped_bytes(void **state)
{
	(void)state;
	char *s = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "alice", "secrets/gh", "a secret value", 14, &s, &err),
			 0);
	size_t n = strlen(s);
	/* Every position, the prefix and key id included, and several bit flips each. */
	const unsigned char flips[] = {0x01, 0x02, 0x20, 0x80};
	for (size_t i = 0; i < n; i++) {
		for (size_t f = 0; f < sizeof flips; f++) {
			char *t = strdup(s);
			t[i] = (char)(t[i] ^ flips[f]);
			if (!t[i]) {
				free(t);
				continue;
			}
			char what[64];
			snprintf(what, sizeof what, "flip 0x%02x at %zu", flips[f], i);
			expect_open_fails(&K, "alice", "secrets/gh", t, 0, what);
			free(t);
		}
	}
	free(s);
}

static void test_other_key(void **state)
{
	(void)state;
	char p[4200];
	path_in(p, sizeof p, "other.key");
	secrets_key k2;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_key_load(&k2, p, 1, &err), 0);
	assert_string_not_equal(k2.id, K.id);
	char *s = NULL;
	assert_int_equal(secrets_seal(&k2, "alice", "secrets/gh", "tok", 3, &s, &err), 0);
	expect_open_fails(&K, "alice", "secrets/gh", s, EKEYREJECTED, "other key");
	/* Even with the id forged to ours, authentication fails. */
	memcpy(s + 4, K.id, 16);
	expect_open_fails(&K, "alice", "secrets/gh", s, EBADMSG, "forged key id");
	free(s);
	secrets_key_wipe(&k2);
	assert_int_equal(k2.loaded, 0);
	/* A wiped (or never loaded) key seals and opens nothing. */
	assert_int_equal(secrets_seal(&k2, "a", "b", "c", 1, &s, &err), -1);
	assert_null(s);
	expect_open_fails(&k2, "a", "b", "cx1:0000000000000000:AAAA", 0, "unloaded key");
}

static void test_malformed(void **state)
{
	(void)state;
	char good[200], *s = NULL;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_seal(&K, "alice", "n", "v", 1, &s, &err), 0);
	snprintf(good, sizeof good, "%s", s);
	free(s);
	char idonly[64], bad64[128], padless[200], nopad[200];
	snprintf(idonly, sizeof idonly, "cx1:%s:", K.id);
	snprintf(bad64, sizeof bad64, "cx1:%s:!!!!not*base64", K.id);
	snprintf(padless, sizeof padless, "cx1:%s:AAAA", K.id); /* 3 bytes: shorter than a nonce */
	snprintf(nopad, sizeof nopad, "%s", good);
	char *eq = strchr(nopad, '=');
	if (eq)
		*eq = '\0'; /* ORIGINAL variant needs its padding */
	const char *bad[] = {"",
			     "cx1:",
			     "cx1",
			     "garbage",
			     "cx2:0123456789abcdef:AAAA",
			     "cx1:0123456789ABCDEF:AAAA",
			     "cx1:0123456789abcde:AAAA",
			     "cx1:0123456789abcdefAAAAA",
			     "cx1:zzzzzzzzzzzzzzzz:AAAA",
			     idonly,
			     bad64,
			     padless,
			     eq ? nopad : "x",
			     NULL};
	for (const char **b = bad; *b; b++)
		expect_open_fails(&K, "alice", "n", *b, 0, *b);
	/* Every truncation of a good text fails. */
	for (size_t cut = 0; cut < strlen(good); cut++) {
		char t[200];
		memcpy(t, good, cut);
		t[cut] = '\0';
		expect_open_fails(&K, "alice", "n", t, 0, "truncated");
	}
	/* Trailing junk after the base64 fails too. */
	char longer[220];
	snprintf(longer, sizeof longer, "%sAAAA", good);
	expect_open_fails(&K, "alice", "n", longer, 0, "trailing data");
	expect_open_fails(&K, "alice", "n", NULL, 0, "NULL text");
}

static void test_key_file_created(void **state)
{
	(void)state;
	char p[4200];
	path_in(p, sizeof p, "new.key");
	secrets_key k;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_key_load(&k, p, 0, &err), -1); /* no create: missing is an error */
	assert_int_equal(err.code, ENOENT);
	assert_int_equal(secrets_key_load(&k, p, 1, &err), 0);
	assert_int_equal(k.loaded, 1);
	assert_int_eq_msg(strlen(k.id), 16, "key id length");
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_eq_msg(st.st_mode & 0777, 0600, "key file mode");
	assert_int_eq_msg(st.st_size, SECRETS_KEY_BYTES, "key file size");
	/* Loading again reads the same key (not a new one). */
	secrets_key again;
	assert_int_equal(secrets_key_load(&again, p, 1, &err), 0);
	assert_string_equal(again.id, k.id);
	assert_memory_equal(again.key, k.key, SECRETS_KEY_BYTES);
	char *s = NULL, *pt = NULL;
	assert_int_equal(secrets_seal(&k, "u", "n", "v", 1, &s, &err), 0);
	assert_int_equal(secrets_open(&again, "u", "n", s, &pt, NULL, &err), 0);
	assert_string_equal(pt, "v");
	secrets_free(pt, 1);
	free(s);
	secrets_key_wipe(&k);
	secrets_key_wipe(&again);
	/* The key id is the first 8 bytes of BLAKE2b-256 of the key, hex: pin it for a known key.
	 */
	unsigned char zeros[SECRETS_KEY_BYTES] = {0};
	path_in(p, sizeof p, "zero.key");
	write_file(p, zeros, sizeof zeros, 0600);
	assert_int_equal(secrets_key_load(&k, p, 0, &err), 0);
	/* python3: hashlib.blake2b(bytes(32), digest_size=32).hexdigest()[:16] */
	assert_string_equal(k.id, "89eb0d6a8a691dae");
	secrets_key_wipe(&k);
}

static void expect_load_fails(const char *path, const char *needle, const char *what)
{
	secrets_key k;
	cx_err err = CX_ERR_INIT;
	int rc = secrets_key_load(&k, path, 1, &err);
	if (rc != -1)
		fail_msg("%s: loaded a key it should refuse", what);
	if (k.loaded)
		fail_msg("%s: key marked loaded after failure", what);
	if (!strstr(err.msg, path))
		fail_msg("%s: message does not name the path: %s", what, err.msg);
	if (needle && !strstr(err.msg, needle))
		fail_msg("%s: message lacks \"%s\": %s", what, needle, err.msg);
}

static void test_key_file_refused(void **state)
{
	(void)state;
	unsigned char key[SECRETS_KEY_BYTES + 1];
	memset(key, 7, sizeof key);
	char p[4200], link[4200];
	path_in(p, sizeof p, "open.key");
	write_file(p, key, SECRETS_KEY_BYTES, 0644);
	expect_load_fails(p, "mode", "0644 key");
	write_file(p, key, SECRETS_KEY_BYTES, 0640);
	expect_load_fails(p, "mode", "0640 key");
	write_file(p, key, SECRETS_KEY_BYTES, 0602);
	expect_load_fails(p, "mode", "0602 key");
	write_file(p, key, SECRETS_KEY_BYTES - 1, 0600);
	expect_load_fails(p, "32 bytes", "short key");
	write_file(p, key, SECRETS_KEY_BYTES + 1, 0600);
	expect_load_fails(p, "32 bytes", "long key");
	write_file(p, key, 0, 0600);
	expect_load_fails(p, "32 bytes", "empty key"); /* create=1 does not overwrite it */
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_eq_msg(st.st_size, 0, "empty key file left alone");
	/* A symlink to a good key is refused: the key file must be the real thing. */
	write_file(p, key, SECRETS_KEY_BYTES, 0600);
	path_in(link, sizeof link, "link.key");
	unlink(link);
	assert_int_equal(symlink(p, link), 0);
	expect_load_fails(link, "symbolic link", "symlink");
	/* A dangling symlink is not "missing": nothing is created through it. */
	char target[4200];
	path_in(target, sizeof target, "nowhere.key");
	unlink(link);
	assert_int_equal(symlink(target, link), 0);
	secrets_key k;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(secrets_key_load(&k, link, 1, &err), -1);
	assert_int_equal(access(target, F_OK), -1);
	/* A directory is refused. */
	char d[4200];
	path_in(d, sizeof d, "dir.key");
	mkdir(d, 0700);
	expect_load_fails(d, "regular file", "directory");
	/* A FIFO is refused at once (opening it must not wait for a writer). */
	char fifo[4200];
	path_in(fifo, sizeof fifo, "fifo.key");
	unlink(fifo);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	expect_load_fails(fifo, "regular file", "fifo");
	expect_load_fails("", NULL, "empty path");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),	       cmocka_unit_test(test_fresh_nonce),
	    cmocka_unit_test(test_wrong_user_or_name), cmocka_unit_test(test_flipped_bytes),
	    cmocka_unit_test(test_other_key),	       cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_key_file_created),   cmocka_unit_test(test_key_file_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
