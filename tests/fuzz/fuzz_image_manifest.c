/* Fuzz target: an image source's manifests (container/imgsrc.c): an OCI
 * layout (index.json, nested indexes, the image manifest, the config) or a
 * `docker save` manifest.json.  Blobs are content-addressed, so the input
 * names them by placeholder and the harness fills the digests in:
 *
 *   byte 0: bit 0 set = docker archive (manifest.json), else OCI (index.json)
 *   then parts separated by NUL bytes: part 0 is index.json / manifest.json,
 *   part i > 0 is written at blobs/sha256/<its sha256>; in part i, "$j"
 *   (j > i, one digit) becomes "sha256:<hex of part j>" and "%j" "<hex>". */
#include <fcntl.h>
#include <sodium.h>

#include "fuzz.h"
#include "fuzz_tmp.h"
#include "imgsrc.h"

#define MAX_PARTS 10

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (sodium_init() < 0)
		FUZZ_FAIL();
	fuzz_tmp_init("image");
	return 0;
}

static void write_file(const char *rel, const char *b, size_t n)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/%s", fuzz_tmp, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, b, n) != (ssize_t)n)
		FUZZ_FAIL();
	close(fd);
}

/* part with its placeholders filled in (malloc'd), its length in *out_n */
static char *fill(const char *b, size_t n, size_t self, char hex[][65], size_t nparts, size_t *out_n)
{
	char *o = malloc(n * 36 + 1); /* each 2-byte placeholder grows to at most 71 */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j = i + 1 < n ? (size_t)(b[i + 1] - '0') : 0;
		if ((b[i] == '$' || b[i] == '%') && i + 1 < n && b[i + 1] >= '1' && b[i + 1] <= '9' &&
		    j > self && j < nparts) {
			k += (size_t)sprintf(o + k, "%s%s", b[i] == '$' ? "sha256:" : "", hex[j]);
			i++;
		} else {
			o[k++] = b[i];
		}
	}
	*out_n = k;
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (256u << 10))
		return 0;
	int docker = data[0] & 1;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	const char *start[MAX_PARTS];
	size_t len[MAX_PARTS], nparts = 0;
	for (size_t off = 0; nparts < MAX_PARTS;) {
		const char *nul = memchr(in + off, 0, n - off);
		start[nparts] = in + off;
		len[nparts++] = nul ? (size_t)(nul - (in + off)) : n - off;
		if (!nul)
			break;
		off = (size_t)(nul - in) + 1;
	}
	fuzz_tmp_clear();
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/blobs", fuzz_tmp);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/blobs/sha256", fuzz_tmp);
	mkdir(p, 0755);
	char hex[MAX_PARTS][65];
	for (size_t i = nparts; i-- > 0;) {
		size_t fn;
		char *f = fill(start[i], len[i], i, hex, nparts, &fn);
		unsigned char bin[crypto_hash_sha256_BYTES];
		crypto_hash_sha256(bin, (const unsigned char *)f, fn);
		sodium_bin2hex(hex[i], sizeof hex[i], bin, sizeof bin);
		char rel[100];
		if (i == 0)
			snprintf(rel, sizeof rel, "%s", docker ? "manifest.json" : "index.json");
		else
			snprintf(rel, sizeof rel, "blobs/sha256/%s", hex[i]);
		write_file(rel, f, fn);
		free(f);
	}
	struct img_src src;
	cx_err err = {0};
	if (imgsrc_load(&src, fuzz_tmp, &err) == 0) {
		if (!json_is_object(src.config) || strncmp(src.digest, "sha256:", 7))
			FUZZ_FAIL();
		for (size_t i = 0; i < src.n_layers; i++) {
			int fd = imgsrc_open(&src, src.layers[i].path, &err);
			if (fd >= 0)
				close(fd);
		}
	} else if (!err.msg[0]) {
		FUZZ_FAIL();
	}
	imgsrc_free(&src);
	return 0;
}
