/* core_metrics.c — /metrics series of sessions, agents and turns. */
#include "core_metrics.h"
#include "sandbox.h"
#include "frames.h"

#include "agent.h"
#include "boot.h"
#include "fanout.h"
#include "metrics.h"
#include "turn.h"
#include "turnlog.h"
#include "work.h"

static void sessions_write(FILE *f, struct cortexd *d)
{
	unsigned counts[SS_N] = {0};
	for (struct session *s = d->sessions; s; s = s->next)
		if (!s->deleted)
			counts[s->lc.state]++;
	fputs("# HELP cortex_sessions Sessions by state.\n# TYPE cortex_sessions gauge\n", f);
	for (int i = 0; i < SS_N; i++)
		fprintf(f, "cortex_sessions{state=\"%s\"} %u\n", sess_state_name((enum sess_state)i), counts[i]);
}

static void surfaces_write(FILE *f, struct cortexd *d)
{
	fputs("# HELP cortex_first_token_ms First-token time by surface over the last turns (ring), ms.\n"
	      "# TYPE cortex_first_token_ms summary\n", f);
	for (int i = 0; i < SURF_N; i++) {
		struct surface_stats st;
		turn_surface_stats(i, &st);
		const struct surface_profile *p = &d->cfg.surfaces[i];
		fprintf(f, "cortex_first_token_ms{surface=\"%s\",quantile=\"0.5\"} %.3f\n", p->name, st.p50);
		fprintf(f, "cortex_first_token_ms{surface=\"%s\",quantile=\"0.95\"} %.3f\n", p->name, st.p95);
		fprintf(f, "cortex_first_token_budget_ms{surface=\"%s\"} %d\n", p->name, p->first_token_budget_ms);
		fprintf(f, "cortex_turns_over_budget_total{surface=\"%s\",budget=\"first_token\"} %llu\n", p->name,
			(unsigned long long)st.over_first_token);
		fprintf(f, "cortex_turns_over_budget_total{surface=\"%s\",budget=\"response\"} %llu\n", p->name,
			(unsigned long long)st.over_response);
		for (int k = 0; k < PATH_N; k++)
			fprintf(f, "cortex_turns_total{surface=\"%s\",path=\"%s\"} %llu\n", p->name,
				turn_path_name((enum turn_path)k), (unsigned long long)st.by_path[k]);
	}
}

void core_metrics_write(FILE *f, void *arg)
{
	struct cortexd *d = arg;
	sessions_write(f, d);
	struct agent_counters ac;
	struct turn_counters tc;
	agent_get_counters(&ac);
	turn_get_counters(&tc);
	struct boot_stats bs;
	boot_get_stats(d, &bs);
	fprintf(f, "# HELP cortex_agents_booting Agents starting now (at most agent.max_booting).\n"
		   "# TYPE cortex_agents_booting gauge\ncortex_agents_booting %u\n", bs.booting);
	fprintf(f, "# HELP cortex_agent_boot_queue Sessions waiting in line for an agent boot.\n"
		   "# TYPE cortex_agent_boot_queue gauge\ncortex_agent_boot_queue %u\n", bs.queued);
	const struct {
		const char *name, *help;
		uint64_t v;
	} ctr[] = {
		{"cortex_agent_starts_total", "Agent processes started (once per session, config change, crash or idle release).", ac.starts},
		{"cortex_agent_crashes_total", "Agents that exited on their own.", ac.crashes},
		{"cortex_agent_releases_total", "Idle agents released.", ac.releases},
		{"cortex_agent_live_applies_total", "Config changes a hot agent took by control request (no restart).", ac.live_applies},
		{"cortex_agent_live_refused_total", "Live config changes the agent refused (it was restarted instead).", ac.live_refused},
		{"cortex_agent_link_resent_total", "Lines ws-agent sent again from its resend window when a restarted cortexd attached (the turn log lacked them).", ac.link_resent},
		{"cortex_agent_link_dups_total", "Lines sent again after an attach that cortexd had read already (dropped by link seq).", ac.link_dups},
		{"cortex_agent_stdin_direct_total", "Inputs cortexd wrote to the agent's stdin itself (the pipe ws-agent passed with wsa.started).", ac.stdin_direct},
		{"cortex_agent_stdin_link_total", "Inputs sent on the ws-agent link (no passed stdin, a line over PIPE_BUF, a full pipe, or after one of these in the same generation).", ac.stdin_link},
		{"cortex_agent_stdout_direct_total", "Agent stdout lines cortexd read from the pipe ws-agent passed with wsa.started (not through the link).", ac.stdout_lines},
		{"cortex_agent_stdout_direct_starts_total", "Agents whose stdout cortexd read itself.", ac.stdout_starts},
		{"cortex_agent_stdout_fallbacks_total", "Agents whose stdout cortexd asked for and could not use (stdout_back: ws-agent read it).", ac.stdout_fallbacks},
		{"cortex_agent_stdout_dropped_total", "Agent stdout lines cortexd read itself and dropped (over the line cap, not UTF-8, a \"wsa.\" type), each with the error ws-agent would send.", ac.stdout_dropped},
		{"cortex_agent_link_lost_total", "Lines a cortexd restart lost: past ws-agent's resend window (reported to the turn as agent_output_lost).", ac.link_lost},
		{"cortex_agent_boot_timeouts_total", "Agent boots past agent.start_timeout_ms.", bs.timeouts},
		{"cortex_agent_boot_retries_total", "Agent boots started again after a timeout (bounded by agent.boot_tries).", bs.retries},
		{"cortex_agent_boot_failures_total", "Sessions whose agent could not be started (state error, agent \"failed\").", bs.failures},
		{"cortex_agent_boots_queued_total", "Agent boots that waited in line for a slot (agent.max_booting).", bs.queued_total},
		{"cortex_messages_total", "Messages written to an agent.", tc.messages_sent},
		{"cortex_turns_revoked_total", "Turns stopped by the stream guard.", tc.revoked},
		{"cortex_guard_scans_total", "Agent lines scanned by the stream guard.", tc.guard_scans},
		{"cortex_store_write_failures_total", "Off-path store writes (transcripts, turn records) that failed; each also reached the session's clients as cortex.error.", d->store_write_failures},
		{"cortex_store_later_puts_total", "Off-path store writes (transcripts, turn records) handed to a group commit.", d->puts.written},
		{"cortex_store_later_commits_total", "Group commits of off-path store writes (one transaction, one sync each).", d->puts.batches},
		{"cortex_store_later_coalesced_total", "Off-path store writes not written because a later one of the same key (a turn's \"running\" state, then idle) went in the same commit.", d->puts.coalesced},
		{"cortex_store_later_trims_total", "malloc_trim calls after a backlog of off-path store writes drained.", d->puts.trims},
		{"cortex_frame_alloc_failures_total", "Frames dropped on the message path for lack of memory.", frames_alloc_failures()},
		{"cortex_ws_clients_cut_total", "Client WebSockets closed with 1008 \"client too slow\": over ws.client_queue_max_bytes behind a faster client.", fanout_clients_cut()},
		{"cortex_frame_trims_total", "malloc_trim calls after the frames held for slow clients were freed.", frames_trims()},
	};
	for (size_t i = 0; i < sizeof ctr / sizeof ctr[0]; i++)
		metrics_counter(f, ctr[i].name, ctr[i].help, ctr[i].v);
	struct turnlog_counters tl;
	turnlog_get_counters(&tl);
	metrics_counter(f, "cortex_turnlog_fdatasyncs_total", "Turn logs fdatasync'd by a sync pass (grown since the last, or not on ext4).", tl.full);
	metrics_counter(f, "cortex_turnlog_range_syncs_total", "Turn logs a sync pass wrote with sync_file_range alone (overwrites; the pass's one device flush covers them).", tl.ranged);
	metrics_counter(f, "cortex_turnlog_sync_failures_total", "Turn log syncs that failed (that log is fdatasync'd whole by the pass after its next write).", tl.failed);
	uint64_t qw, qus;
	work_quiet_counts(&qw, &qus);
	metrics_counter(f, "cortex_background_quiet_waits_total", "Background jobs (group commits, turn log syncs) and their steps that waited for a quiet CPU first.", qw);
	metrics_counter(f, "cortex_background_quiet_wait_microseconds_total", "The time they waited (the writes' lag behind the streams under load).", qus);
	work_first_token_counts(&qw, &qus);
	metrics_counter(f, "cortex_background_first_token_waits_total", "Background jobs that waited for turns' first tokens before they began (at most 100 ms each).", qw);
	metrics_counter(f, "cortex_background_first_token_wait_microseconds_total", "The time they waited.", qus);
	metrics_gauge(f, "cortex_turns_awaiting_first_token", "Turns whose message went to the agent and which have no text delta yet.", (double)work_first_tokens_pending());
	uint64_t bw, bf;
	frames_batch_counts(&bw, &bf);
	metrics_counter(f, "cortex_ws_batched_sends_total", "Sends that carried several queued frames to one client at once.", bw);
	metrics_counter(f, "cortex_ws_batched_frames_total", "Frames sent in those batched sends.", bf);
	metrics_gauge(f, "cortex_store_later_queued", "Off-path store writes waiting for the next group commit.", (double)d->puts.queued);
	metrics_gauge(f, "cortex_sandbox_forkserver_up",
		      "1 while the sandbox fork server runs (0: sandboxes fork the daemon itself, slower).",
		      sandbox_forkserver_pid() > 0 ? 1.0 : 0.0);
	metrics_counter(f, "cortex_sandbox_forkserver_monitors_total",
			"Sandbox monitors the fork server made.", sandbox_forkserver_spawned());
	metrics_gauge(f, "cortex_frame_bytes", "Payload bytes of the frames held now (each held once, however many clients queue it).",
		      (double)frames_live_bytes());
	fprintf(f, "# TYPE cortex_guard_seconds_total counter\ncortex_guard_seconds_total %.6f\n",
		(double)tc.guard_us / 1e6);
	surfaces_write(f, d);
}
