/* agent_live.c — config changes a hot agent takes without a restart.
 *
 * Claude Code's stream-json control protocol changes a running session:
 * set_model {model} -> {model}, set_permission_mode {mode} -> {mode} (an
 * error with error_code "bypass_not_launched" when bypassPermissions is asked
 * of an agent not started in it), mcp_set_servers {servers} -> {added,
 * removed, errors} (the whole "dynamic" set, replaced).  So the agent is
 * started with --strict-mcp-config and gets its MCP servers by
 * mcp_set_servers right after initialize; a later change of the model, the
 * permission mode or the servers is the same requests to the hot agent.
 * Everything else the agent reads only at start (env, secrets, files,
 * plugins, CLAUDE.md): cfg->base_hash, and a change there restarts it.
 *
 * A refused request (an error response) marks the apply failed: the
 * lifecycle then restarts the agent with the config, as before. */
#include "agent.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

void agent_count_live(int refused);

const char *agent_model_of(const struct session *s, const cconfig *cfg)
{
	/* The user's model, else the surface's, else the provider's. */
	return cfg->model[0] ? cfg->model : s->prof && s->prof->model[0] ? s->prof->model : s->d->cfg.provider_model;
}

const char *agent_perm_of(const struct session *s, const cconfig *cfg)
{
	return cfg->perm_mode[0] ? cfg->perm_mode : s->d->cfg.agent_permission_mode;
}

static void set_pend(struct session *s, const cconfig *cfg)
{
	if (s->link.pend_cfg)
		cconfig_unref(s->link.pend_cfg);
	s->link.pend_cfg = cfg ? cconfig_ref((cconfig *)cfg) : NULL;
}

static void take_live(struct session *s, const cconfig *cfg)
{
	memcpy(s->link.live_hash, cfg->live_hash, sizeof s->link.live_hash);
	memcpy(s->link.mcp_hash, cfg->mcp_hash, sizeof s->link.mcp_hash);
	snprintf(s->link.live_model, sizeof s->link.live_model, "%s", agent_model_of(s, cfg));
	snprintf(s->link.live_perm, sizeof s->link.live_perm, "%s", agent_perm_of(s, cfg));
}

void agent_live_record(struct session *s, const cconfig *cfg)
{
	take_live(s, cfg);
	s->link.applying = 0;
	s->link.apply_failed = 0;
	s->link.boot_waits = 0;
	s->link.pid = 0;
	/* Only an agent that answers control requests is handed its servers. */
	set_pend(s, s->d->cfg.agent_handshake ? cfg : NULL);
}

static void send_request(struct session *s, const char *id, json_t *req)
{
	agent_input(s, json_pack("{s:s,s:s,s:o}", "type", "control_request", "request_id", id, "request", req));
}

int agent_live_boot(struct session *s)
{
	cconfig *cfg = s->link.pend_cfg;
	if (!cfg || !cfg->mcp || !json_object_size(cfg->mcp))
		return 0;
	char id[48];
	snprintf(id, sizeof id, "cx-boot-mcp-%llu", (unsigned long long)s->link.gen);
	send_request(s, id, json_pack("{s:s,s:O}", "subtype", "mcp_set_servers", "servers", cfg->mcp));
	return 1;
}

int agent_live_applicable(const struct session *s, const cconfig *cfg)
{
	return s->d->cfg.agent_handshake && s->link.state == AG_HOT && !s->link.applying && !s->link.apply_failed &&
	       !strcmp(s->link.hash, cfg->base_hash) && strcmp(s->link.live_hash, cfg->live_hash);
}

/* The agent did not answer in time: give the apply up and restart it. */
static void sul_apply_cb(lws_sorted_usec_list_t *sul)
{
	struct session *s = lws_container_of(sul, struct session, link.sul_apply);
	if (!s->link.applying)
		return;
	log_warn("session %s: agent %llu did not answer a live config change within %d ms; restarting it", s->id,
		 (unsigned long long)s->link.gen, s->d->cfg.agent_start_timeout_ms);
	s->link.applying = 0;
	s->link.apply_failed = 1;
	agent_count_live(1);
	set_pend(s, NULL);
	s->d->reconcile(s);
}

void agent_live_apply(struct session *s, const cconfig *cfg)
{
	char id[64];
	const char *model = agent_model_of(s, cfg), *perm = agent_perm_of(s, cfg);
	set_pend(s, cfg);
	s->link.applying = 0;
	if (strcmp(model, s->link.live_model)) {
		snprintf(id, sizeof id, "cx-live-%llu-%llu", (unsigned long long)s->link.gen,
			 (unsigned long long)++s->link.apply_seq);
		send_request(s, id, json_pack("{s:s,s:s}", "subtype", "set_model", "model", model[0] ? model : "default"));
		s->link.applying++;
	}
	if (strcmp(perm, s->link.live_perm)) {
		snprintf(id, sizeof id, "cx-live-%llu-%llu", (unsigned long long)s->link.gen,
			 (unsigned long long)++s->link.apply_seq);
		send_request(s, id,
			     json_pack("{s:s,s:s}", "subtype", "set_permission_mode", "mode", perm[0] ? perm : "default"));
		s->link.applying++;
	}
	if (strcmp(cfg->mcp_hash, s->link.mcp_hash)) {
		snprintf(id, sizeof id, "cx-live-%llu-%llu", (unsigned long long)s->link.gen,
			 (unsigned long long)++s->link.apply_seq);
		json_t *servers = cfg->mcp ? json_incref(cfg->mcp) : json_object();
		send_request(s, id, json_pack("{s:s,s:o}", "subtype", "mcp_set_servers", "servers", servers));
		s->link.applying++;
	}
	log_info("session %s: applying a config change to agent %llu live (%d request%s)", s->id,
		 (unsigned long long)s->link.gen, s->link.applying, s->link.applying == 1 ? "" : "s");
	if (!s->link.applying) { /* nothing the agent sees changed (e.g. a setting equal to the default) */
		take_live(s, cfg);
		set_pend(s, NULL);
		return;
	}
	session_timer(s, &s->link.sul_apply, sul_apply_cb, (uint64_t)s->d->cfg.agent_start_timeout_ms * LWS_US_PER_MS);
}

static int is_error(json_t *line, const char **msg)
{
	json_t *r = json_object_get(line, "response");
	const char *st = json_string_value(json_object_get(r, "subtype"));
	*msg = json_string_value(json_object_get(r, "error"));
	return !st || strcmp(st, "success");
}

int agent_live_response(struct session *s, const char *request_id, json_t *line)
{
	char want[48];
	const char *msg = NULL;
	if (!request_id)
		return 0;
	snprintf(want, sizeof want, "cx-boot-mcp-%llu", (unsigned long long)s->link.gen);
	if (!strcmp(request_id, want)) {
		if (is_error(line, &msg))
			log_warn("session %s: the agent refused its MCP servers: %s", s->id, msg ? msg : "?");
		set_pend(s, NULL);
		return 2;
	}
	snprintf(want, sizeof want, "cx-live-%llu-", (unsigned long long)s->link.gen);
	if (strncmp(request_id, "cx-live-", 8))
		return 0;
	if (strncmp(request_id, want, strlen(want)) || !s->link.applying)
		return 1; /* an older agent's, or an apply given up on */
	if (is_error(line, &msg)) {
		log_warn("session %s: the agent refused a live config change (%s); restarting it", s->id,
			 msg ? msg : "?");
		s->link.apply_failed = 1;
	}
	if (--s->link.applying > 0)
		return 1;
	lws_sul_cancel(&s->link.sul_apply);
	if (!s->link.apply_failed && s->link.pend_cfg) {
		take_live(s, s->link.pend_cfg);
		s->link.live_applies++;
	}
	agent_count_live(s->link.apply_failed);
	set_pend(s, NULL);
	s->d->reconcile(s);
	return 1;
}
