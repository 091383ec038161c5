/* turnlog_ring.h — the turn log's file format (turnlog.h), without I/O: the
 * encoding of a record and the scan a restore makes (the unit tests and the
 * fuzz target drive these directly).
 *
 * SESSION_DIR/turn.ring is TLR_SLOTS slots of `slot` bytes each, reused in
 * place: a slot is written from its start, record after record, and never
 * truncated or freed, so past the last record written lies what an older pass
 * left there.  (The file it replaces was cut and renamed every 8 MiB: ext4
 * freed its page cache and blocks, allocated them again and started
 * writeback on the service thread, ~20 % of cortexd's CPU in a 64 KB flood.)
 *
 * A record is a 32-byte header (little-endian) and its payload:
 *   u64 gen    the slot's generation: each slot start takes the next one of
 *              the file, so a record of another generation is stale
 *   u64 val    by type: a frame's seq, a turn, a link seq
 *   u32 len    payload bytes (frames only)
 *   u8  type   S slot start, T turn start, L link seq, E end, F frame
 *   u8  flags  S: TLR_CONT, the slot continues the turn of the slot before it
 *   u16 zero
 *   u32 sum    of the payload (tlr_sum)
 *   u32 hsum   of the 28 bytes before it
 * A slot starts with its S record and is read up to the first record that is
 * not whole, not of its generation or not summing right: cut by a cortexd
 * crash (never, a write is whole in the page cache), torn by a host crash
 * (pages that did not reach the disk hold an older pass), or stale.  The
 * slot of the highest generation is read, after the other one when that is
 * its predecessor (generation - 1) and it continues it. */
#ifndef CORTEX_TURNLOG_RING_H
#define CORTEX_TURNLOG_RING_H

#include <stddef.h>
#include <stdint.h>

#define TLR_HDR	  32u
#define TLR_SLOTS 2u
#define TLR_CONT  1u /* S flag */

struct tlr_rec {
	char type;	  /* 'S', 'T', 'L', 'E', 'F' */
	uint8_t flags;
	uint64_t gen;
	uint64_t val;
	const char *data; /* the payload, in the scanned buffer (not owned) */
	size_t len;
};

/* A checksum of n bytes (not cryptographic: it tells a torn or stale page
 * from the one written, ~16 bytes a cycle). */
uint32_t tlr_sum(const void *p, size_t n);
/* The header of a record into out; sum is tlr_sum of its payload. */
void tlr_head(unsigned char out[TLR_HDR], char type, uint8_t flags, uint64_t gen, uint64_t val,
	      size_t len, uint32_t sum);
/* A header read back: 0 and *out (data unset) when its own sum holds and its
 * type is known, else -1. */
int tlr_head_parse(const unsigned char h[TLR_HDR], struct tlr_rec *out);
/* Of the file's b[0..len) cut into slots of `slot` bytes: the slot with the
 * highest generation whose S record is whole (-1: none) and that generation. */
int tlr_newest(const char *b, size_t len, size_t slot, uint64_t *gen_out);
/* Every valid record to restore, in the order written, to fn (the slot before
 * the newest first when the newest continues it).  Returns how many. */
typedef void (*tlr_fn)(void *arg, const struct tlr_rec *r);
size_t tlr_scan(const char *b, size_t len, size_t slot, tlr_fn fn, void *arg);

#endif
