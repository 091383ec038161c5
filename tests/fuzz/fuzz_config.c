/* Fuzz target: cortexd's config file (--config, cortexd/config/config.c),
 * read through a memfd the way config_load_file reads a path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static int mfd = -1;
static char path[64];
static config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	mfd = memfd_create("fuzz-config", MFD_CLOEXEC);
	cfg = malloc(sizeof *cfg);
	if (mfd < 0 || !cfg)
		FUZZ_FAIL();
	snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (ftruncate(mfd, 0) < 0 || pwrite(mfd, data, size, 0) != (ssize_t)size)
		FUZZ_FAIL();
	config_defaults(cfg);
	cx_err err = {0};
	if (config_load_file(cfg, path, &err) < 0 && !err.msg[0])
		FUZZ_FAIL(); /* a refusal says why */
	return 0;
}
