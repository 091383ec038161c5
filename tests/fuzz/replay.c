/* replay.c — the standalone driver of a fuzz target: calls
 * LLVMFuzzerTestOneInput once per file of each directory (or file) named on
 * the command line, in name order.  Built with the ordinary compiler in every
 * build dir, so ctest replays the committed corpus (tests/fuzz/corpus/<target>/)
 * under ASan+UBSan in build-asan; `make fuzz` builds the same target files
 * with libFuzzer instead (tests/fuzz/run.sh). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) < 0 || sb.st_size > (off_t)(16u << 20)) {
		fprintf(stderr, "replay: %s: not a file of at most 16 MiB\n", path);
		fclose(f);
		return -1;
	}
	size_t n = (size_t)sb.st_size;
	/* An exact-size heap copy: ASan sees any read past the input's end. */
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf || fread(buf, 1, n, f) != n) {
		fprintf(stderr, "replay: %s: read failed\n", path);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	fprintf(stderr, "replay: %s\n", path); /* which input, should it crash */
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
		return 2;
	}
	LLVMFuzzerInitialize(&argc, &argv);
	unsigned done = 0;
	for (int i = 1; i < argc; i++) {
		struct stat sb;
		if (stat(argv[i], &sb) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (!S_ISDIR(sb.st_mode)) {
			if (replay_file(argv[i]) < 0)
				return 1;
			done++;
			continue;
		}
		struct dirent **ents;
		int n = scandir(argv[i], &ents, NULL, by_name);
		if (n < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		int rc = 0;
		for (int k = 0; k < n; k++) {
			char path[4096];
			snprintf(path, sizeof path, "%s/%s", argv[i], ents[k]->d_name);
			if (ents[k]->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
				if (replay_file(path) < 0)
					rc = 1;
				done++;
			}
			free(ents[k]);
		}
		free(ents);
		if (rc)
			return 1;
	}
	/* An empty corpus would pass while testing nothing. */
	if (!done) {
		fprintf(stderr, "replay: no input found\n");
		return 1;
	}
	printf("replayed %u inputs\n", done);
	return 0;
}
