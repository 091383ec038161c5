/* turn.h — one user message and the agent's answer.
 *
 *   message -> turn_begin -> (the lifecycle makes the session ready,
 *              reporting each wait with turn_wait) -> turn_send: one input
 *              line on the agent link
 *   agent line -> turn_output: stream guard, seq, every client, sentences
 *   result line -> cortex.done {timings, path}; the agent stays up
 *
 * A turn never drives the lifecycle: it waits for "ready" (lifecycle.c calls
 * turn_send) and reports its end through the return values / hooks. */
#ifndef CORTEX_TURN_H
#define CORTEX_TURN_H

#include "session.h"

/* A new turn for text (copied).  -1 (cortex.error sent) when out of memory. */
int turn_begin(struct session *s, const char *text);
/* The lifecycle waits on step for the turn (detail: what it woke, or NULL). */
void turn_wait(struct session *s, enum lc_step step, const cconfig *cfg, const char *detail);
/* The config lookup the turn paid for (first one fixes the cache outcome). */
void turn_config_lookup(struct session *s, enum ccache_how how, double ms);
/* Everything is ready: write the message to the agent. */
void turn_send(struct session *s, const cconfig *cfg);
void turn_fail(struct session *s, const char *code, const char *msg);
/* A client asked to cancel; the last client left for turn_grace_s. */
void turn_cancel(struct session *s);
/* An agent line of the current agent (not wsa.*, not a control response). */
void turn_output(struct session *s, const struct agent_line *l, const char *raw, size_t len);
/* The agent or its link went away (enum agent_down). */
void turn_agent_down(struct session *s, int why, const char *code, const char *msg);
/* A provider request of this session ended (the model gateway). */
void turn_gateway_report(struct session *s, const struct gw_report *r);
/* The sandbox is going away: the turn ends with session_stopped. */
void turn_stop_session(struct session *s);

/* An upgrade restart: the running turn as JSON (NULL: none), and the turn let
 * go of without ending it (no record, no frame: the next cortexd goes on). */
json_t *turn_handover(struct session *s);
/* The same record of the running turn, which goes on (NULL: none). */
json_t *turn_describe(const struct session *s);
/* ... taken back by the next cortexd: s->turn from o, s->turns past it. */
void turn_adopt(struct session *s, json_t *o);

/* At load: the turn count from the store, and a record (outcome
 * cortexd_restarted) of the turn a previous cortexd died in, if any. */
void turn_restore(struct session *s);

/* Per surface first-token figures over the last turns (a ring). */
#define TURN_FT_RING 1024
struct surface_stats {
	uint64_t turns, over_first_token, over_response;
	double p50, p95; /* ms, over the ring; 0 when empty */
	uint64_t by_path[PATH_N];
};
void turn_surface_stats(int surface, struct surface_stats *out);
struct turn_counters {
	uint64_t messages_sent, revoked, guard_scans, guard_us;
};
void turn_get_counters(struct turn_counters *out);

#endif
