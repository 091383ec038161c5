/* Fuzz target: a layer blob's entries (container/unpack.c): a tar, gzip'd or
 * not, unpacked for real into a scratch dir (paths, links, whiteouts, xattrs,
 * modes), which is emptied after each input.  An entry that escaped the dir
 * would land next to it: the target checks nothing appeared there. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>

#include "fuzz.h"
#include "fuzz_tmp.h"
#include "unpack.h"

static int mfd = -1;
static char dest[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	unpack_init();
	fuzz_tmp_init("layer");
	snprintf(dest, sizeof dest, "%s/layer", fuzz_tmp);
	mfd = memfd_create("fuzz-layer", MFD_CLOEXEC);
	if (mfd < 0)
		FUZZ_FAIL();
	return 0;
}

/* The scratch dir holds exactly "layer". */
static void check_contained(void)
{
	DIR *d = opendir(fuzz_tmp);
	struct dirent *e;
	if (!d)
		FUZZ_FAIL();
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "layer")) {
			fprintf(stderr, "fuzz_layer: %s/%s appeared outside the layer\n", fuzz_tmp, e->d_name);
			FUZZ_FAIL();
		}
	closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (ftruncate(mfd, 0) < 0 || pwrite(mfd, data, size, 0) != (ssize_t)size || lseek(mfd, 0, SEEK_SET) != 0)
		FUZZ_FAIL();
	fuzz_tmp_clear();
	if (mkdir(dest, 0755) < 0)
		FUZZ_FAIL();
	struct unpack_stats st = {0};
	cx_err err = {0};
	int rc = unpack_layer(mfd, dest, NULL, 4u << 20, &st, &err);
	if (getenv("FUZZ_DEBUG"))
		fprintf(stderr, "unpack_layer: %d (%s), %llu entries, %llu bytes\n", rc, rc < 0 ? err.msg : "ok",
			(unsigned long long)st.entries, (unsigned long long)st.bytes);
	if (rc < 0 && !err.msg[0])
		FUZZ_FAIL();
	check_contained();
	return 0;
}
