/* fuzz_tmp.h — a scratch dir for the targets that parse what is on disk:
 * created once under $CORTEX_TEST_TMP (ctest) or $TMPDIR, emptied between
 * inputs, removed at exit. */
#ifndef CORTEX_FUZZ_TMP_H
#define CORTEX_FUZZ_TMP_H
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_tmp[PATH_MAX];

static int fuzz_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	if (ftw->level > 0)
		remove(p);
	return 0;
}

/* Remove everything below the scratch dir (it stays). */
static inline void fuzz_tmp_clear(void)
{
	nftw(fuzz_tmp, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fuzz_tmp_remove(void)
{
	fuzz_tmp_clear();
	rmdir(fuzz_tmp);
}

/* An absolute scratch path without symlinks (what unpack_layer wants). */
static inline void fuzz_tmp_init(const char *what)
{
	const char *base = getenv("CORTEX_TEST_TMP");
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0755);
	char real[PATH_MAX];
	if (!realpath(base, real))
		abort();
	snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/fuzz-%s.XXXXXX", real, what);
	if (!mkdtemp(fuzz_tmp))
		abort();
	atexit(fuzz_tmp_remove);
}
#endif
