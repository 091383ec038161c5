/* unpack_bench.c — layer unpack throughput of the image store.
 *
 *   build/unpack_bench [--dir DIR] [--mb 200] [--gzip] [--runs 3]
 *
 * Writes a layer tar of ~MB megabytes (many files of mixed sizes: 80% of 0.5-16
 * KiB, 18% of 16-256 KiB, 2% of 1-4 MiB, in dirs of 100 files) under DIR
 * ($CORTEX_TEST_TMP, else /tmp), then unpacks it with unpack_layer (sha256
 * check included) RUNS times into fresh dirs and prints the median as
 * `unpack_mb_s=<x>` (MB = 10^6 bytes of file data unpacked).  The tar stays in
 * the page cache: this measures unpacking, not the disk read of the blob. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unpack.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static size_t pick_size(void)
{
	unsigned p = (unsigned)(rnd() % 100);
	if (p < 80)
		return 512 + rnd() % (15 * 1024 + 512);
	if (p < 98)
		return 16384 + rnd() % (240 * 1024);
	return (1u << 20) + rnd() % (3u << 20);
}

static int make_layer(const char *path, uint64_t want, int gzip, uint64_t *files)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
		fprintf(stderr, "open %s: %s\n", path, archive_error_string(a));
		return -1;
	}
	size_t cap = 4u << 20;
	char *buf = malloc(cap);
	for (size_t i = 0; i < cap / 8; i++)
		((uint64_t *)buf)[i] = rnd(); /* incompressible, like binaries' worst case */
	struct archive_entry *e = archive_entry_new();
	uint64_t total = 0, n = 0;
	char name[64];
	while (total < want) {
		if (n % 100 == 0) {
			snprintf(name, sizeof name, "d%06llu", (unsigned long long)(n / 100));
			archive_entry_clear(e);
			archive_entry_set_pathname(e, name);
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, 0755);
			archive_write_header(a, e);
		}
		size_t sz = pick_size();
		snprintf(name, sizeof name, "d%06llu/f%llu", (unsigned long long)(n / 100),
			 (unsigned long long)n);
		archive_entry_clear(e);
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, (la_int64_t)sz);
		archive_entry_set_mtime(e, 1700000000, 0);
		archive_write_header(a, e);
		archive_write_data(a, buf + (rnd() % (cap - sz)), sz);
		total += sz;
		n++;
	}
	archive_entry_free(e);
	free(buf);
	*files = n;
	return archive_write_close(a) == ARCHIVE_OK && archive_write_free(a) == ARCHIVE_OK ? 0 : -1;
}

static double now_s(void)
{
	return (double)cx_mono_us() / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dir = getenv("CORTEX_TEST_TMP");
	unsigned mb = 200, runs = 3;
	int gzip = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
			mb = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--gzip"))
			gzip = 1;
		else {
			fprintf(stderr, "usage: %s [--dir DIR] [--mb N] [--gzip] [--runs N]\n",
				argv[0]);
			return 2;
		}
	}
	if (!dir || !*dir)
		dir = "/tmp";
	if (runs < 1 || runs > 20)
		runs = 3;
	char base[4096], tar[4200], dest[4200];
	mkdir(dir, 0755);
	snprintf(base, sizeof base, "%s/unpack-bench-%d", dir, (int)getpid());
	if (mkdir(base, 0700) < 0) {
		perror(base);
		return 1;
	}
	char *real = realpath(base, NULL);
	snprintf(tar, sizeof tar, "%s/layer.tar%s", real, gzip ? ".gz" : "");
	uint64_t files = 0;
	if (make_layer(tar, (uint64_t)mb * 1000000u, gzip, &files) < 0)
		return 1;
	double t[20];
	uint64_t bytes = 0;
	char hex[65];
	cx_err herr = CX_ERR_INIT;
	int hfd = open(tar, O_RDONLY | O_CLOEXEC);
	if (hfd < 0 || unpack_sha256_fd(hfd, hex, NULL, &herr) < 0) {
		fprintf(stderr, "sha256 %s: %s\n", tar, herr.msg);
		return 1;
	}
	close(hfd);
	int rc = 0;
	for (unsigned r = 0; r < runs && rc == 0; r++) {
		snprintf(dest, sizeof dest, "%s/layer%u", real, r);
		mkdir(dest, 0755);
		int fd = open(tar, O_RDONLY | O_CLOEXEC);
		struct unpack_stats st;
		cx_err err = CX_ERR_INIT;
		double t0 = now_s();
		if (unpack_layer(fd, dest, hex, 0, &st, &err) < 0) {
			fprintf(stderr, "unpack: %s\n", err.msg);
			rc = 1;
		}
		t[r] = now_s() - t0;
		bytes = st.bytes;
		close(fd);
		cx_rm_rf(dest);
	}
	cx_rm_rf(real);
	free(real);
	if (rc)
		return rc;
	qsort(t, runs, sizeof *t, cmp_d);
	double med = t[runs / 2];
	printf("unpack_files=%llu unpack_bytes=%llu unpack_gzip=%d unpack_s=%.3f\n",
	       (unsigned long long)files, (unsigned long long)bytes, gzip, med);
	printf("unpack_mb_s=%.1f\n", (double)bytes / 1e6 / med);
	return 0;
}
