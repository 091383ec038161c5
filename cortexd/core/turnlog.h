/* turnlog.h — the durable turn log: every stream frame of a session's running
 * (or last) turn, written to SESSION_DIR/turn.ring (the session's dir: root's,
 * never writable by its sandbox; with etcd on storage every node reaches, so
 * the node that takes a session over after its owner died has it too), so a
 * cortexd that starts again — after a crash or an upgrade restart — or
 * another node replays to a client that sends "resume" every frame
 * it lacks, exactly once, with the same seqs.
 *
 * Format: SESSION_DIR/turn.ring, records in slots reused in place
 * (turnlog_ring.h has the layout).  "T <turn>" starts a turn; a turn starts
 * the next slot only once the current one holds more than TURNLOG_KEEP
 * bytes, so most turns cost the service thread no file-system call of their
 * own; the restore keeps the last turn only.  "F <seq>" is a frame; "E" says
 * the turn ended; a slot's "S" says whether it continues the turn of the slot
 * before it (whose older frames are read first while that slot is whole);
 * "L <n>": every line ws-agent sent up to link seq n is read and its frames
 * are above it (written at the end of each batch read from ws-agent, and
 * after each T and S, in or out of a turn: cortexd acks ws-agent only what
 * an "L" has).  A record that is not whole (cut or torn by a crash) ends what
 * is read of its slot.  The text format of before (turn.log, turn.old: a line
 * a record) is read by the restore and removed at the next turn's start.
 *
 * Writes: records are gathered in memory and written (pwritev, page cache)
 * before any client is given one of the frames (fanout_writeable flushes
 * first) and at the end of each batch read from ws-agent; so a frame a
 * client saw is always in the log, and a cortexd crash loses none of them.
 * Every TURNLOG_SYNC_MS a background-lane worker (work.h: it waits for a
 * quiet CPU first) syncs the logs written since (a host crash loses at most
 * that much, plus that wait: what did not reach the disk fails its checksum or
 * is of an older generation), never on the service thread: fdatasync for a
 * log that grew (a slot grows TURNLOG_GROW at a time, zeros past its
 * records); for one only overwritten since its last fdatasync, on ext4
 * without data=journal, sync_file_range, and the pass's one device flush
 * (an fdatasync's) makes it as durable.
 *
 * Bound: TURNLOG_CAP bytes per session, in TLR_SLOTS slots.  When a slot is
 * full the next one is overwritten from its start (never truncated, so no
 * page cache is freed and allocated again), so the newest frames are kept,
 * like the in-memory replay; a resume from before the oldest kept frame gets
 * cortex.error resume_gap first. */
#ifndef CORTEX_TURNLOG_H
#define CORTEX_TURNLOG_H

#include "session.h"

#define TURNLOG_NAME	"turn"    /* SESSION_DIR/turn.ring (turn.log, turn.old before) */
#define TURNLOG_LEGACY_DIR "turnlog" /* DATA/turnlog/<id>.log before: read once */
#define TURNLOG_CAP	(16u << 20)  /* bytes per session, every slot */
#define TURNLOG_BUF	(256u << 10) /* gathered before a write is forced */
#define TURNLOG_KEEP	(64u << 10)  /* past this, a new turn starts the next slot */
#define TURNLOG_SYNC_MS 200
#define TURNLOG_GROW	(64u << 10)  /* a slot grows by this much at a time (zeros past its records) */

/* Start the periodic fdatasync (service thread, after work_start). */
void turnlog_start(struct cortexd *d);
/* A new turn: its header, gathered (written with the turn's first frames);
 * the log is cut first when past TURNLOG_KEEP. */
void turnlog_begin(struct session *s, uint64_t turn);
/* A stream frame (seq set) of the session. */
void turnlog_frame(struct session *s, const struct frame *f);
/* The turn ended (its cortex.done or error is already logged). */
void turnlog_end(struct session *s);
/* The same, gathered only: for a turn that ends inside a read of the agent
 * link, whose end (agent.c, link_readable) writes it with the batch's "L". */
void turnlog_end_batched(struct session *s);
/* Write what is gathered (before a client gets a frame): 0, or -1 when
 * something could not be written (logged, counted). */
int turnlog_flush(struct session *s);
/* After a batch read from ws-agent: "L <seq>" and a flush; 0 once written. */
int turnlog_link_seq(struct session *s, uint64_t seq);
/* At load: the kept frames into s->fan.replay and s->fan.seq past them,
 * the last "L" into s->link.logged_seq (seq_known).
 * Returns the turn the log holds (0: none) and whether it ended. */
uint64_t turnlog_restore(struct session *s, int *ended);
/* Close the log (fdatasync'd first unless removed: a stop); remove: delete
 * its files too (session deleted). */
void turnlog_close(struct session *s, int remove);
/* The sync passes' logs: fdatasync'd (grown, or not on ext4), synced with
 * sync_file_range alone (overwrites), failed; and passes done. */
struct turnlog_counters {
	uint64_t full, ranged, failed, passes;
};
void turnlog_get_counters(struct turnlog_counters *out);
/* Tests: a sync pass now (no lws context there); -1 while one runs. */
int turnlog_sync_now(struct cortexd *d);
/* Tests: slots of n bytes instead of TURNLOG_CAP / TLR_SLOTS (0: back). */
void turnlog_test_slot_bytes(size_t n);

#endif
