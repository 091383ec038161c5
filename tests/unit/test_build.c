/* test_build.c — the builder's context handling (container/build_ctx.c,
 * build.c) without buildah: the content hash ignores tar metadata and sees
 * contents, names and exec bits; extraction refuses escapes; builder_submit
 * refuses a context without a Dockerfile or over the cap.  Tars are written
 * here with libarchive; scratch under $CORTEX_TEST_TMP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build.h"
#include "unit_util.h"

struct ent {
	const char *path;
	const char *body; /* NULL: a dir; starting with "->": a symlink to the rest */
	unsigned mode;
};

/* A tar of ents at path, every entry stamped with mtime. */
static void write_tar(const char *path, const struct ent *e, size_t n, time_t mtime)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *x = archive_entry_new();
		archive_entry_set_pathname(x, e[i].path);
		archive_entry_set_mtime(x, mtime, 0);
		archive_entry_set_uid(x, (la_int64_t)(1000 + mtime % 7));
		if (!e[i].body) {
			archive_entry_set_filetype(x, AE_IFDIR);
			archive_entry_set_perm(x, 0755);
		} else if (!strncmp(e[i].body, "->", 2)) {
			archive_entry_set_filetype(x, AE_IFLNK);
			archive_entry_set_symlink(x, e[i].body + 2);
			archive_entry_set_perm(x, 0777);
		} else {
			archive_entry_set_filetype(x, AE_IFREG);
			archive_entry_set_perm(x, e[i].mode ? e[i].mode : 0644);
			archive_entry_set_size(x, (la_int64_t)strlen(e[i].body));
		}
		assert_int_equal(archive_write_header(a, x), ARCHIVE_OK);
		if (e[i].body && strncmp(e[i].body, "->", 2))
			archive_write_data(a, e[i].body, strlen(e[i].body));
		archive_entry_free(x);
	}
	archive_write_close(a);
	archive_write_free(a);
}

static char g_dir[PATH_MAX];
static int g_n;

/* Extract ents into a fresh dir and hash it: 0 and the hash, or -1 and err. */
static int hash_of(const struct ent *e, size_t n, time_t mtime, char out[72], cx_err *err)
{
	char tar[PATH_MAX + 32], dir[PATH_MAX + 32];
	int k = g_n++;
	snprintf(tar, sizeof tar, "%s/t%d.tar", g_dir, k);
	snprintf(dir, sizeof dir, "%s/d%d", g_dir, k);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_tar(tar, e, n, mtime);
	if (build_extract(tar, dir, 1 << 20, err) < 0)
		return -1;
	return build_hash_dir(dir, "base", out, err);
}

#define N(a) (sizeof a / sizeof *a)

static void test_hash_ignores_metadata(void **state)
{
	(void)state;
	const struct ent a[] = {
	    {"Dockerfile", "FROM x\n", 0}, {"src", NULL, 0}, {"src/a.sh", "echo a\n", 0755}};
	const struct ent b[] = {
	    {"src", NULL, 0}, {"src/a.sh", "echo a\n", 0755}, {"Dockerfile", "FROM x\n", 0}};
	char h1[72], h2[72];
	cx_err err = CX_ERR_INIT;
	assert_int_equal(hash_of(a, N(a), 1000, h1, &err), 0);
	assert_int_equal(hash_of(b, N(b), 999999, h2, &err), 0);
	assert_string_equal(h1, h2); /* other order, mtimes, owners: same build */
	assert_int_equal(strncmp(h1, "sha256:", 7), 0);
	assert_int_equal(strlen(h1), 71);
}

static void test_hash_sees_content(void **state)
{
	(void)state;
	const struct ent a[] = {{"Dockerfile", "FROM x\n", 0}, {"f", "1", 0644}};
	const struct ent b[] = {{"Dockerfile", "FROM x\n", 0}, {"f", "2", 0644}};
	const struct ent c[] = {{"Dockerfile", "FROM x\n", 0}, {"f", "1", 0755}};
	const struct ent d[] = {{"Dockerfile", "FROM x\n", 0}, {"g", "1", 0644}};
	const struct ent e[] = {{"Dockerfile", "FROM x\n", 0}, {"f", "->1", 0}};
	char h[5][72];
	cx_err err = CX_ERR_INIT;
	assert_int_equal(hash_of(a, N(a), 1, h[0], &err), 0);
	assert_int_equal(hash_of(b, N(b), 1, h[1], &err), 0);
	assert_int_equal(hash_of(c, N(c), 1, h[2], &err), 0);
	assert_int_equal(hash_of(d, N(d), 1, h[3], &err), 0);
	assert_int_equal(hash_of(e, N(e), 1, h[4], &err), 0);
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			assert_string_not_equal(h[i], h[j]);
}

static void test_extract_refuses_escapes(void **state)
{
	(void)state;
	const struct ent dotdot[] = {{"Dockerfile", "FROM x\n", 0}, {"../evil", "x", 0}};
	const struct ent nested[] = {{"a", NULL, 0}, {"a/../../evil", "x", 0}};
	const struct ent abs[] = {{"/tmp/cortex-test-evil", "x", 0}};
	const struct ent link[] = {{"l", "->/tmp", 0}, {"l/cortex-test-evil", "x", 0}};
	char h[72];
	cx_err err = CX_ERR_INIT;
	assert_int_equal(hash_of(dotdot, N(dotdot), 1, h, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_int_equal(hash_of(nested, N(nested), 1, h, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_int_equal(hash_of(abs, N(abs), 1, h, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_int_equal(hash_of(link, N(link), 1, h, &err), -1);
	assert_int_equal(err.code, EINVAL);
	struct stat sb;
	assert_int_equal(lstat("/tmp/cortex-test-evil", &sb), -1);
	char p[PATH_MAX + 16];
	snprintf(p, sizeof p, "%s/evil", g_dir);
	assert_int_equal(lstat(p, &sb), -1);
}

static void test_submit_refuses(void **state)
{
	(void)state;
	char work[PATH_MAX + 16], tar[PATH_MAX + 16];
	snprintf(work, sizeof work, "%s/builder", g_dir);
	struct builder_config bc = {.dir = work, .max_context = 4096};
	struct builder *b;
	cx_err err = CX_ERR_INIT;
	assert_int_equal(builder_open(&b, &bc, NULL, &err), 0);
	struct build_status st;

	const struct ent nodf[] = {
	    {"file.txt", "x", 0}, {"sub", NULL, 0}, {"sub/Dockerfile", "FROM x\n", 0}};
	snprintf(tar, sizeof tar, "%s/nodf.tar", g_dir);
	write_tar(tar, nodf, N(nodf), 1);
	assert_int_equal(builder_submit(b, "img", "u", tar, &st, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "Dockerfile"));

	char big[8192];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	const struct ent huge[] = {{"Dockerfile", "FROM x\n", 0}, {"big", big, 0}};
	snprintf(tar, sizeof tar, "%s/big.tar", g_dir);
	write_tar(tar, huge, N(huge), 1);
	assert_int_equal(builder_submit(b, "img", "u", tar, &st, &err), -1);
	assert_int_equal(err.code, EFBIG);

	snprintf(tar, sizeof tar, "%s/junk.tar", g_dir);
	FILE *f = fopen(tar, "w");
	fputs("not a tar", f);
	fclose(f);
	assert_int_equal(builder_submit(b, "img", "u", tar, &st, &err), -1);
	assert_int_equal(err.code, EINVAL);

	assert_int_equal(builder_status(b, "img", &st), CX_NOTFOUND);
	char stage[PATH_MAX + 32];
	snprintf(stage, sizeof stage, "%s/stage", work);
	assert_int_equal(rmdir(stage), 0); /* nothing staged is left behind */
	builder_close(b);
}

int main(void)
{
	if (unit_tmpdir("build", g_dir, sizeof g_dir) < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_ignores_metadata),
	    cmocka_unit_test(test_hash_sees_content),
	    cmocka_unit_test(test_extract_refuses_escapes),
	    cmocka_unit_test(test_submit_refuses),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	cx_rm_rf(g_dir);
	return rc;
}
