/* cortex-imgstore — the image store from the command line, for operators and
 * `make image`: put an OCI layout (or a tar) into a store dir without a
 * running daemon, so the first session does not wait for the unpacking.
 *
 *   cortex-imgstore STORE_DIR import NAME OCI_DIR|IMAGE.tar
 *   cortex-imgstore STORE_DIR list
 *   cortex-imgstore STORE_DIR gc
 *
 * Safe beside running daemons that share STORE_DIR (imgstore.h). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "imgstore.h"

static void progress(void *arg, const char *line)
{
	(void)arg;
	printf("  %s\n", line);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s STORE_DIR import NAME OCI_DIR|IMAGE.tar | list | gc\n", argv[0]);
		return 2;
	}
	cx_err err = CX_ERR_INIT;
	struct imgstore *st = NULL;
	if (imgstore_open(&st, argv[1], 0, &err) < 0) {
		fprintf(stderr, "cortex-imgstore: %s\n", err.msg);
		return 1;
	}
	int rc = 0;
	if (!strcmp(argv[2], "import") && argc == 5) {
		/* Always imported: layers already unpacked are reused (only their
		 * digests are checked), and a rebuilt image replaces the old one. */
		struct stat sb;
		if (stat(argv[4], &sb) < 0) {
			perror(argv[4]);
			rc = 1;
		} else {
			printf("importing %s into %s as %s\n", argv[4], argv[1], argv[3]);
			rc = (S_ISDIR(sb.st_mode) ? imgstore_import_dir(st, argv[3], argv[4], progress, NULL, &err)
						  : imgstore_import_tar(st, argv[3], argv[4], progress, NULL, &err)) < 0;
		}
	} else if (!strcmp(argv[2], "list") && argc == 3) {
		struct image_info **l = NULL;
		size_t n = 0;
		if ((rc = imgstore_list(st, &l, &n, &err) < 0) == 0) {
			for (size_t k = 0; k < n; k++)
				printf("%-24s %s %zu layers %llu bytes\n", l[k]->name, l[k]->digest, l[k]->n_layers,
				       (unsigned long long)l[k]->size);
			image_info_list_free(l, n);
		}
	} else if (!strcmp(argv[2], "gc") && argc == 3) {
		uint64_t freed = 0;
		if ((rc = imgstore_gc(st, &freed, &err) < 0) == 0)
			printf("freed %llu bytes\n", (unsigned long long)freed);
	} else {
		fprintf(stderr, "usage: %s STORE_DIR import NAME OCI_DIR|IMAGE.tar | list | gc\n", argv[0]);
		rc = 2;
	}
	if (rc == 1 && err.msg[0])
		fprintf(stderr, "cortex-imgstore: %s\n", err.msg);
	imgstore_close(st);
	return rc;
}
