/* unpack.h — layer and image-tar extraction with libarchive (internal to
 * container/; imgstore.c and bench/unpack_bench.c use it).
 *
 * unpack_layer() makes one overlay-ready layer dir out of a layer blob (tar,
 * gzip or not): OCI whiteouts become 0:0 char devices, `.wh..wh..opq` marks
 * its dir opaque (trusted.overlay.opaque=y); absolute paths, `..`, entries
 * below a symlink of the layer and hardlinks to anything but an earlier
 * regular file of the layer fail with EPERM naming the entry; device
 * nodes, fifos and sockets are skipped (counted); setuid/setgid bits are
 * cleared; xattrs in the trusted.* namespace are dropped; uid/gid (numeric),
 * mode and mtime are kept. */
#ifndef CORTEX_UNPACK_H
#define CORTEX_UNPACK_H

#include <stdint.h>

#include "cx.h"

struct unpack_stats {
	uint64_t bytes;	    /* regular-file bytes written (the layer's size) */
	uint64_t entries;   /* entries created (whiteouts included) */
	uint64_t skipped;   /* device nodes, fifos, sockets not created */
	uint64_t whiteouts; /* whiteout devices + opaque markers */
	uint64_t read;	    /* blob bytes read (compressed) */
};

/* Unpack the blob read from fd into dest, an existing empty dir given as an
 * absolute path without symlinks.  want_hex (64 lowercase hex, or NULL): the
 * sha256 of every byte of the blob must match, else EINVAL.  More than cap
 * unpacked bytes (0 = no cap): EFBIG.  On failure dest is left as is (the
 * caller removes it). */
int unpack_layer(int fd, const char *dest, const char *want_hex, uint64_t cap,
		 struct unpack_stats *st, cx_err *err);

/* Extract an image tar (OCI layout or `docker save`, gzip or not) into dest
 * (existing, absolute, no symlinks): directories, regular files and symlinks
 * only (others skipped), same path rules as layers, at most cap bytes of file
 * data (EFBIG past it). */
int unpack_stage(const char *tar_path, const char *dest, uint64_t cap, cx_err *err);

/* sha256 of the rest of fd as 64 hex chars + NUL; *size gets the byte count
 * (may be NULL). */
int unpack_sha256_fd(int fd, char hex[65], uint64_t *size, cx_err *err);

/* Call once before any of the above (libsodium, libarchive locale). */
void unpack_init(void);

#endif
