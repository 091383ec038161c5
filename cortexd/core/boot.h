/* boot.h — agent boots, bounded: at most agent.max_booting agents of all
 * sessions start at once; the others wait in line, served in order and
 * fairly per user (the next boot goes to the first waiting session whose
 * user has the fewest booting).  A slot is taken just before agent_start and
 * given back when the agent leaves "starting" (hot, exited, timed out,
 * stopped); then the next in line is granted it and reconciled, from a
 * timer (never from inside another session's pass).
 *
 * Service thread only.  The lifecycle asks (boot_admit), agent.c reports the
 * end of a boot through the agent_boot_end hook (boot_end). */
#ifndef CORTEX_BOOT_H
#define CORTEX_BOOT_H

#include "session.h"

/* 1: s holds a boot slot now (taken, or granted while it waited); 0: s is
 * in line (a reference is held) and is reconciled once granted one. */
int boot_admit(struct session *s);
/* s's agent is no longer starting: its slot (if any) goes to the next in line. */
void boot_end(struct session *s);
/* s wants no boot any more (deleted, going to sleep): out of the line, and
 * a granted slot it did not use is given back. */
void boot_forget(struct session *s);

/* For /metrics. */
struct boot_stats {
	unsigned booting, queued;
	uint64_t timeouts;  /* boots that ran past agent.start_timeout_ms */
	uint64_t retries;   /* boots started again after a timeout */
	uint64_t failures;  /* sessions whose agent could not be started (error state) */
	uint64_t queued_total; /* boots that had to wait in line */
};
void boot_get_stats(const struct cortexd *d, struct boot_stats *out);
void boot_count_timeout(int retried);
void boot_count_failure(void);

#endif
