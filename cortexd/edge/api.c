/* api.c — the HTTP routes of docs/protocol.md: a request in, a status and a
 * JSON body out.  Every 4xx carries {"error":{"code","message"}}.  Validation
 * happens before anything is stored, so a bad request changes nothing. */
#include "daemon.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "caps.h"
#include "log.h"
#include "npmcache.h"
#include "settings.h"

void api_error(struct api_resp *resp, int status, const char *code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	free(resp->body);
	resp->status = status;
	resp->body = json_dumps(o, JSON_COMPACT);
	resp->ctype = NULL;
	json_decref(o);
}

void api_reply(struct api_resp *resp, int status, json_t *o /* consumed; may be NULL */)
{
	free(resp->body);
	resp->status = status;
	resp->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	resp->ctype = NULL;
	json_decref(o);
}

int api_auth(const char *token, char *out_user, size_t cap)
{
	if (!token || !*token)
		return -1;
	if (auth_is_admin(token))
		return 1;
	cx_err err = CX_ERR_INIT;
	int rc = auth_lookup_user(D.st, token, out_user, cap, &err);
	if (rc < 0 && rc != CX_NOTFOUND)
		log_error("token lookup: %s", err.msg);
	return rc == 0 ? 0 : -1;
}

/* Parse a JSON object body; an empty body is {} when allow_empty.  A
 * well-formed scalar is bad_request (not an object), a syntax error bad_json. */
json_t *api_body_object(const struct api_req *req, struct api_resp *resp, int allow_empty)
{
	if (!req->body || !req->body_len) {
		if (allow_empty)
			return json_object();
		api_error(resp, 400, "bad_request", "a JSON object body is required");
		return NULL;
	}
	json_error_t jerr;
	json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!o) {
		api_error(resp, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
			  jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		api_error(resp, 400, "bad_request", "the body must be a JSON object");
		return NULL;
	}
	return o;
}

/* Fail on members outside the allowed list: a typo should not be silently
 * ignored.  what names the object in the message. */
int api_only_keys(json_t *o, const char *const *allowed, const char *what, struct api_resp *resp)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		int ok = 0;
		for (const char *const *a = allowed; *a; a++)
			if (!strcmp(*a, k))
				ok = 1;
		if (!ok) {
			api_error(resp, 400, "bad_request", "unknown field \"%.64s\" in %s", k, what);
			return -1;
		}
	}
	return 0;
}

/* ---- users ---- */

static void post_user(const struct api_req *req, struct api_resp *resp)
{
	json_t *o = api_body_object(req, resp, 0);
	if (!o)
		return;
	static const char *const allowed[] = {"name", NULL};
	const char *name = json_string_value(json_object_get(o, "name"));
	if (api_only_keys(o, allowed, "a user", resp) < 0) {
	} else if (!name) {
		api_error(resp, 400, "bad_request", "\"name\" must be a string");
	} else if (!auth_valid_name(name)) {
		api_error(resp, 400, "bad_request",
			  "\"name\" must be 1-%u chars of a-z 0-9 _ -, starting with a letter or digit",
			  CX_CAP_NAME);
	} else {
		char token[AUTH_TOKEN_LEN + 1];
		cx_err err = CX_ERR_INIT;
		if (auth_create_user(D.st, name, token, &err) < 0) {
			if (err.code == EEXIST)
				api_error(resp, 409, "exists", "%s", err.msg);
			else
				api_error(resp, 500, "internal", "%s", err.msg);
		} else {
			log_info("created user %s", name);
			api_reply(resp, 201, json_pack("{s:s,s:s}", "name", name, "token", token));
		}
	}
	json_decref(o);
}

/* ---- sessions ---- */

static void post_session(const char *user, const struct api_req *req, struct api_resp *resp)
{
	json_t *o = api_body_object(req, resp, 1);
	if (!o)
		return;
	static const char *const allowed[] = {"surface", "repo", "idle_sleep_s", NULL};
	json_t *sv = json_object_get(o, "surface"), *iv = json_object_get(o, "idle_sleep_s");
	const char *surface = sv ? json_string_value(sv) : "chat";
	if (api_only_keys(o, allowed, "a session", resp) < 0) {
	} else if (!surface || (strcmp(surface, "chat") && strcmp(surface, "voice"))) {
		api_error(resp, 400, "bad_request", "\"surface\" must be \"chat\" or \"voice\"");
	} else if (iv && (!json_is_integer(iv) || json_integer_value(iv) < 0 ||
			  json_integer_value(iv) > 7 * 86400)) {
		api_error(resp, 400, "bad_request", "\"idle_sleep_s\" must be an integer from 0 to 604800");
	} else if (json_object_get(o, "repo")) {
		api_error(resp, 501, "not_implemented", "\"repo\" checkout is not available yet");
	} else {
		cx_err err = CX_ERR_INIT;
		struct session *s = session_create(user, surface, iv ? (int)json_integer_value(iv) : 0, &err);
		if (!s)
			api_error(resp, 500, "internal", "%s", err.msg);
		else
			api_reply(resp, 201, session_to_json(s));
	}
	json_decref(o);
}

static void list_sessions(const char *user, struct api_resp *resp)
{
	json_t *arr = json_array();
	for (struct session *s = D.sessions; s; s = s->next)
		if (!s->deleted && !strcmp(s->user, user))
			json_array_append_new(arr, session_to_json(s));
	api_reply(resp, 200, arr);
}

static void list_messages(struct session *s, struct api_resp *resp)
{
	char prefix[80];
	snprintf(prefix, sizeof prefix, "transcripts/%s/", s->id);
	store_kv *kv = NULL;
	size_t n = 0;
	cx_err err = CX_ERR_INIT;
	if (store_list(D.st, prefix, 0, &kv, &n, &err) < 0) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (m)
			json_array_append_new(arr, m);
	}
	store_kv_free(kv, n);
	api_reply(resp, 200, arr);
}

static void delete_session(struct session *s, struct api_resp *resp)
{
	char key[160], prefix[80];
	snprintf(key, sizeof key, "sessions/%s/%s", s->user, s->id);
	snprintf(prefix, sizeof prefix, "transcripts/%s/", s->id);
	cx_err err = CX_ERR_INIT;
	if (store_delete(D.st, key, &err) == -1) {
		api_error(resp, 500, "internal", "%s", err.msg);
		return;
	}
	if (store_delete_prefix(D.st, prefix, NULL, &err) < 0)
		log_error("delete transcripts of %s: %s", s->id, err.msg);
	log_info("deleting session %s", s->id);
	session_delete(s);
	api_reply(resp, 204, NULL);
}

static void session_route(const char *user, const struct api_req *req, const char *rest,
			  struct api_resp *resp)
{
	char id[64];
	const char *slash = strchr(rest, '/');
	size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
	const char *sub = slash ? slash + 1 : "";
	if (!idlen || idlen >= sizeof id) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	memcpy(id, rest, idlen);
	id[idlen] = '\0';
	struct session *s = session_find(id);
	/* Another user's session is indistinguishable from a missing one. */
	if (!s || strcmp(s->user, user)) {
		api_error(resp, 404, "not_found", "no such session");
		return;
	}
	const char *m = req->method;
	if (!*sub) {
		if (!strcmp(m, "GET"))
			api_reply(resp, 200, session_to_json(s));
		else if (!strcmp(m, "DELETE"))
			delete_session(s, resp);
		else
			api_error(resp, 405, "method_not_allowed", "use GET or DELETE");
	} else if (!strcmp(sub, "messages")) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else
			list_messages(s, resp);
	} else if (!strcmp(sub, "sleep") || !strcmp(sub, "wake") || !strcmp(sub, "pause")) {
		cx_err err = CX_ERR_INIT;
		if (strcmp(m, "POST")) {
			api_error(resp, 405, "method_not_allowed", "use POST");
		} else if (session_busy(s) || (s->turn && strcmp(sub, "wake"))) {
			api_error(resp, 409, "busy", "the session is %s%s; try again", sess_state_name(s->state),
				  s->turn ? " with a turn running" : "");
		} else if (!strcmp(sub, "sleep")) {
			session_sleep(s);
			api_reply(resp, 202, session_to_json(s));
		} else if (!strcmp(sub, "wake")) {
			if (s->state == SS_PAUSED && session_thaw(s, &err) < 0) {
				api_error(resp, 500, "sandbox_failed", "%s", err.msg);
				return;
			}
			s->want_agent = 1;
			session_touch(s);
			if (s->sb && s->agent_up)
				session_config_kick(s);
			else
				session_ensure_ready(s);
			api_reply(resp, 202, session_to_json(s));
		} else if (session_pause(s, &err) < 0) {
			api_error(resp, 409, "not_ready", "%s", err.msg);
		} else {
			api_reply(resp, 202, session_to_json(s));
		}
	} else if (!strcmp(sub, "ws")) {
		api_error(resp, 400, "upgrade_required", "this route is a WebSocket; send an Upgrade request");
	} else {
		api_error(resp, 404, "not_found", "no such route");
	}
}

/* Prometheus text.  Counters the tests and the benchmark read as well. */
static void metrics(struct api_resp *resp)
{
	unsigned counts[6] = {0};
	for (struct session *s = D.sessions; s; s = s->next)
		if (!s->deleted)
			counts[s->state]++;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f) {
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	fputs("# HELP cortex_sessions Sessions by state.\n# TYPE cortex_sessions gauge\n", f);
	for (int i = 0; i < 6; i++)
		fprintf(f, "cortex_sessions{state=\"%s\"} %u\n", sess_state_name((enum sess_state)i), counts[i]);
	ccache_stats cc;
	ccache_get_stats(&cc);
	fputs("# HELP cortex_config_cache_total Session config lookups by outcome.\n"
	      "# TYPE cortex_config_cache_total counter\n", f);
	fprintf(f, "cortex_config_cache_total{result=\"hit\"} %llu\n", (unsigned long long)cc.hits);
	fprintf(f, "cortex_config_cache_total{result=\"miss\"} %llu\n", (unsigned long long)cc.misses);
	fprintf(f, "cortex_config_cache_total{result=\"dirty\"} %llu\n", (unsigned long long)cc.dirty);
	fprintf(f, "cortex_config_cache_total{result=\"expired\"} %llu\n", (unsigned long long)cc.expired);
	fprintf(f, "cortex_config_cache_total{result=\"error\"} %llu\n", (unsigned long long)cc.errors);
	fprintf(f, "# TYPE cortex_config_assemble_seconds_total counter\ncortex_config_assemble_seconds_total %.6f\n",
		(double)cc.assemble_us_total / 1e6);
	struct sync_stats ss;
	sync_get_stats(&ss);
	fprintf(f, "# HELP cortex_sync_runs_total Config syncs into sandboxes.\n# TYPE cortex_sync_runs_total counter\n"
		   "cortex_sync_runs_total %llu\n", ss.runs);
	fputs("# HELP cortex_sync_files_total Files considered by syncs, by outcome.\n"
	      "# TYPE cortex_sync_files_total counter\n", f);
	fprintf(f, "cortex_sync_files_total{result=\"written\"} %llu\n", ss.files_written);
	fprintf(f, "cortex_sync_files_total{result=\"unchanged\"} %llu\n", ss.files_skipped);
	fprintf(f, "cortex_sync_files_total{result=\"removed\"} %llu\n", ss.files_removed);
	fprintf(f, "# TYPE cortex_sync_mounts_total counter\ncortex_sync_mounts_total %llu\n", ss.mounts);
	fprintf(f, "# TYPE cortex_sync_failures_total counter\ncortex_sync_failures_total %llu\n", ss.failures);
	npmcache_stats ns;
	npmcache_get_stats(&ns);
	fprintf(f, "# HELP cortex_npm_runs_total npm processes started for MCP packages.\n"
		   "# TYPE cortex_npm_runs_total counter\ncortex_npm_runs_total %llu\n",
		(unsigned long long)ns.npm_runs);
	fputs("# TYPE cortex_npm_installs_total counter\n", f);
	fprintf(f, "cortex_npm_installs_total{result=\"ok\"} %llu\n", (unsigned long long)ns.installs_ok);
	fprintf(f, "cortex_npm_installs_total{result=\"failed\"} %llu\n", (unsigned long long)ns.installs_failed);
	fputs("# TYPE cortex_npm_cache_requests_total counter\n", f);
	fprintf(f, "cortex_npm_cache_requests_total{result=\"hit\"} %llu\n", (unsigned long long)ns.hits);
	fprintf(f, "cortex_npm_cache_requests_total{result=\"joined\"} %llu\n", (unsigned long long)ns.joins);
	fprintf(f, "# TYPE cortex_npm_cache_evictions_total counter\ncortex_npm_cache_evictions_total %llu\n",
		(unsigned long long)ns.evictions);
	fprintf(f, "# TYPE cortex_npm_cache_bytes gauge\ncortex_npm_cache_bytes %llu\n", (unsigned long long)ns.bytes);
	struct stream_counters sc;
	stream_get_counters(&sc);
	const struct {
		const char *name, *help;
		uint64_t v;
	} ctr[] = {
		{"cortex_agent_starts_total", "Agent processes started (once per session, config change, crash or idle release).", sc.agent_starts},
		{"cortex_agent_crashes_total", "Agents that exited on their own.", sc.agent_crashes},
		{"cortex_agent_releases_total", "Idle agents released.", sc.agent_releases},
		{"cortex_messages_total", "Messages written to an agent.", sc.messages_sent},
		{"cortex_turns_revoked_total", "Turns stopped by the stream guard.", sc.revoked},
		{"cortex_guard_scans_total", "Agent lines scanned by the stream guard.", sc.guard_scans},
	};
	for (size_t i = 0; i < sizeof ctr / sizeof ctr[0]; i++)
		fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", ctr[i].name, ctr[i].help, ctr[i].name,
			ctr[i].name, (unsigned long long)ctr[i].v);
	fprintf(f, "# TYPE cortex_guard_seconds_total counter\ncortex_guard_seconds_total %.6f\n",
		(double)sc.guard_us / 1e6);
	records_metrics(f);
	struct gw_stats gs;
	gateway_get_stats(&gs);
	fprintf(f, "# HELP cortex_gateway_requests_total Model gateway requests by provider status class.\n"
		   "# TYPE cortex_gateway_requests_total counter\n");
	static const char *cls[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
	for (int i = 0; i < 6; i++)
		fprintf(f, "cortex_gateway_requests_total{status=\"%s\"} %llu\n", cls[i],
			(unsigned long long)gs.by_class[i]);
	fprintf(f, "cortex_gateway_requests_total{status=\"unauthorized\"} %llu\n", (unsigned long long)gs.unauthorized);
	fprintf(f, "cortex_gateway_requests_total{status=\"overloaded\"} %llu\n", (unsigned long long)gs.overloaded);
	fputs("# HELP cortex_gateway_ttfb_seconds Gateway: request in -> provider's first byte.\n"
	      "# TYPE cortex_gateway_ttfb_seconds histogram\n", f);
	static const double gb[] = GW_TTFB_BOUNDS_MS;
	for (size_t i = 0; i < sizeof gb / sizeof gb[0]; i++) /* already cumulative */
		fprintf(f, "cortex_gateway_ttfb_seconds_bucket{le=\"%g\"} %llu\n", gb[i] / 1000.0,
			(unsigned long long)gs.ttfb_bucket[i]);
	fprintf(f, "cortex_gateway_ttfb_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)gs.ttfb_count);
	fprintf(f, "cortex_gateway_ttfb_seconds_sum %.6f\ncortex_gateway_ttfb_seconds_count %llu\n",
		(double)gs.ttfb_us_sum / 1e6, (unsigned long long)gs.ttfb_count);
	fprintf(f, "# HELP cortex_gateway_forward_seconds_total Gateway: provider chunk in -> written to the agent, summed.\n"
		   "# TYPE cortex_gateway_forward_seconds_total counter\ncortex_gateway_forward_seconds_total %.6f\n"
		   "# TYPE cortex_gateway_forward_events_total counter\ncortex_gateway_forward_events_total %llu\n",
		(double)gs.fwd_us_sum / 1e6, (unsigned long long)gs.fwd_events);
	fputs("# HELP cortex_first_token_ms First-token time by surface over the last turns (ring), ms.\n"
	      "# TYPE cortex_first_token_ms summary\n", f);
	for (int i = 0; i < SURF_N; i++) {
		struct surface_stats st;
		stream_surface_stats(i, &st);
		const struct surface_profile *p = &D.cfg.surfaces[i];
		fprintf(f, "cortex_first_token_ms{surface=\"%s\",quantile=\"0.5\"} %.3f\n", p->name, st.p50);
		fprintf(f, "cortex_first_token_ms{surface=\"%s\",quantile=\"0.95\"} %.3f\n", p->name, st.p95);
		fprintf(f, "cortex_first_token_budget_ms{surface=\"%s\"} %d\n", p->name, p->first_token_budget_ms);
		fprintf(f, "cortex_turns_over_budget_total{surface=\"%s\",budget=\"first_token\"} %llu\n", p->name,
			(unsigned long long)st.over_first_token);
		fprintf(f, "cortex_turns_over_budget_total{surface=\"%s\",budget=\"response\"} %llu\n", p->name,
			(unsigned long long)st.over_response);
		static const char *pn[] = {"warm", "cold", "config_changed"};
		for (int k = 0; k < 3; k++)
			fprintf(f, "cortex_turns_total{surface=\"%s\",path=\"%s\"} %llu\n", p->name, pn[k],
				(unsigned long long)st.by_path[k]);
	}
	if (fclose(f) != 0 || !buf) {
		free(buf);
		api_error(resp, 500, "internal", "out of memory");
		return;
	}
	free(resp->body);
	resp->status = 200;
	resp->body = buf;
	resp->ctype = "text/plain; version=0.0.4";
}

void api_handle(const struct api_req *req, struct api_resp *resp)
{
	const char *p = req->path, *m = req->method;
	if (!strcmp(p, "/healthz")) {
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else
			api_reply(resp, 200, json_pack("{s:b}", "ok", 1));
		return;
	}
	char user[80] = "";
	int who = api_auth(req->token, user, sizeof user);
	if (who < 0) {
		api_error(resp, 401, "unauthorized", "missing or invalid token");
		return;
	}
	if (!strcmp(p, "/metrics")) {
		if (who != 1)
			api_error(resp, 403, "forbidden", "admin token required");
		else
			metrics(resp);
		return;
	}
	if (!strcmp(p, "/v1/metrics/turns") || !strcmp(p, "/v1/metrics/summary")) {
		/* A user sees their own turns; the admin sees everyone's. */
		if (strcmp(m, "GET"))
			api_error(resp, 405, "method_not_allowed", "use GET");
		else if (!strcmp(p, "/v1/metrics/turns"))
			records_api_turns(user, who == 1, req->query ? req->query : "", resp);
		else
			records_api_summary(user, who == 1, req->query ? req->query : "", resp);
		return;
	}
	if (!strcmp(p, "/v1/users")) {
		if (strcmp(m, "POST"))
			api_error(resp, 405, "method_not_allowed", "use POST");
		else if (who != 1)
			api_error(resp, 403, "forbidden", "admin token required");
		else
			post_user(req, resp);
		return;
	}
	if (!strcmp(p, "/v1/sessions") || !strncmp(p, "/v1/sessions/", 13)) {
		if (who != 0) {
			api_error(resp, 403, "forbidden", "sessions belong to users; use a user token");
			return;
		}
		if (p[12] == '\0') {
			if (!strcmp(m, "POST"))
				post_session(user, req, resp);
			else if (!strcmp(m, "GET"))
				list_sessions(user, resp);
			else
				api_error(resp, 405, "method_not_allowed", "use GET or POST");
		} else {
			session_route(user, req, p + 13, resp);
		}
		return;
	}
	if (!strncmp(p, "/v1/settings/", 13)) {
		if (who != 0)
			api_error(resp, 403, "forbidden", "settings belong to users; use a user token");
		else
			settings_route(user, req, p + 13, resp);
		return;
	}
	api_error(resp, 404, "not_found", "no such route: %.200s", p);
}
