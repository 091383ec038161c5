/* config.c — see config.h. */
#include "config.h"
#include "egress.h"
#include "caps.h"

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef CORTEX_CLAUDE_DIR
#define CORTEX_CLAUDE_DIR ""
#endif

static int copy_str(char *dst, size_t cap, const char *src, const char *what, cx_err *err)
{
	size_t n = strlen(src);
	if (n >= cap)
		return cx_err_set(err, 0, "%s: value too long (max %zu bytes)", what, cap - 1);
	memcpy(dst, src, n + 1);
	return 0;
}

static const char *const surface_names[SURF_N] = {"chat", "voice"};
static const char *const path_names[PATH_N] = {"warm", "cold", "config_changed"};

const char *surface_name(int surface) { return surface >= 0 && surface < SURF_N ? surface_names[surface] : "chat"; }

int surface_of_name(const char *name)
{
	for (int i = 0; name && i < SURF_N; i++)
		if (!strcmp(surface_names[i], name))
			return i;
	return -1;
}

const char *turn_path_name(enum turn_path p) { return p < PATH_N ? path_names[p] : "warm"; }

int turn_path_of_name(const char *name)
{
	for (int i = 0; name && i < PATH_N; i++)
		if (!strcmp(path_names[i], name))
			return i;
	return -1;
}

void config_defaults(config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->listen_host, "127.0.0.1");
	c->listen_port = 8787;
	strcpy(c->data_dir, ".cortex");
	strcpy(c->images_default, "default");
	strcpy(c->images_build_base, "localhost/cortex-base:bookworm");
	c->images_max_context = 256ull << 20;
	c->files_max_read = 16ull << 20;
	c->files_max_write = 16ull << 20;
	c->files_max_entries = 10000;
	c->files_max_inflight = 8;
	c->files_max_watches = 4096;
	c->files_coalesce_ms = 50;
	c->exec_max_per_session = 16;
	c->exec_max_per_user = 64;
	c->exec_max_output = 1u << 20;
	c->exec_max_timeout_s = 86400;
	c->exec_default_timeout_s = 60;
	c->images_max_builds = 2;
	c->images_max_user_builds = 1;
	strcpy(c->store_kind, "sqlite");
	strcpy(c->provider_model, "");
	c->sandbox_uid = 65534;
	c->sandbox_gid = 65534;
	c->sandbox_memory_max = 2ull << 30;
	c->sandbox_pids_max = 512;
	c->sandbox_net_isolated = true;
	c->sandbox_uid_base = 200000;
	c->sandbox_uid_count = 60000;
	c->sandbox_disk_mb = 2048;
	c->sandbox_disk_max_mb = 65536;
	c->sandbox_cpu_weight = 100;
	strcpy(c->agent_command, "/cortex/agent/bin/claude.exe");
	strcpy(c->agent_permission_mode, "bypassPermissions");
	c->ready_timeout_ms = 10000;
	c->context_timeout_ms = 2000;
	c->agent_handshake = 1;
	c->agent_start_timeout_ms = 30000;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	c->agent_max_booting = ncpu < 1 ? 2 : ncpu > 512 ? 1024 : (int)ncpu * 2;
	c->agent_boot_tries = 3;
	c->sandbox_workers = ncpu < 2 ? 4 : ncpu > 32 ? 64 : (int)ncpu * 2; /* at least 4 */
	c->turn_grace_s = 120;
	c->ws_client_queue_max_bytes = CX_CAP_CLIENT_QUEUE;
	c->gateway_enabled = 1;
	strcpy(c->gateway_host, "127.0.0.1");
	c->gateway_max_inflight = 32;	      /* one curl thread each */
	c->gateway_max_inflight_per_user = 8; /* a user takes a quarter of the pool at most */
	c->gateway_max_queued = 256;	      /* past the pool, wait (a body each) ... */
	c->gateway_queue_timeout_ms = 30000;  /* ... this long at most */
	c->gateway_body_deadline_s = 60;
	/* chat: an IDE; voice: a TTS waits on the first sentence, so tighter and sentence-framed. */
	c->surfaces[SURF_CHAT] = (struct surface_profile){"", 1500, 120000, "", 1800, 600, 3600, 0};
	c->surfaces[SURF_VOICE] = (struct surface_profile){"", 800, 20000, "", 600, 120, 1800, 1};
	for (int i = 0; i < SURF_N; i++)
		snprintf(c->surfaces[i].name, sizeof c->surfaces[i].name, "%s", surface_name(i));
	c->egress_enabled = 1;
	c->egress_port = 3128;
	c->egress_default_mode = 2; /* EGRESS_MODE_OPEN: the always-denied ranges still apply */
	strcpy(c->egress_allow_private, "[]");
	c->egress_max_conns = 1024;
	c->egress_max_conns_session = 64;
	c->egress_connect_timeout_ms = 10000;
	c->config_ttl_s = 300;
	c->write_parallel = 4;
	strcpy(c->npm_path, "npm");
	c->npm_cache_max = 2ull << 30;
	config_caps_defaults(c);
}

const struct surface_profile *config_surface(const config *c, const char *name)
{
	for (int i = 0; i < SURF_N; i++)
		if (!strcmp(c->surfaces[i].name, name))
			return &c->surfaces[i];
	return NULL;
}

const struct model_price *config_price(const config *c, const char *model)
{
	const struct model_price *best = NULL;
	size_t best_len = 0;
	for (int i = 0; model && i < c->n_prices; i++) {
		size_t n = strlen(c->prices[i].model);
		if (!strcmp(c->prices[i].model, model))
			return &c->prices[i];
		if (n > best_len && !strncmp(c->prices[i].model, model, n)) {
			best = &c->prices[i];
			best_len = n;
		}
	}
	return best;
}

/* "prices": {"model": {"input": usd_per_mtok, "output": ..., "cache_read": ..., "cache_write": ...}} */
static int load_prices(config *c, json_t *prices, cx_err *err)
{
	if (!prices)
		return 0;
	if (!json_is_object(prices))
		return cx_err_set(err, 0, "config: 'prices' must be an object");
	const char *model;
	json_t *row;
	c->n_prices = 0;
	json_object_foreach(prices, model, row)
	{
		if (c->n_prices >= CFG_MAX_PRICES)
			return cx_err_set(err, 0, "config: at most %d 'prices' rows", CFG_MAX_PRICES);
		struct model_price *p = &c->prices[c->n_prices];
		memset(p, 0, sizeof *p);
		if (!json_is_object(row) || copy_str(p->model, sizeof p->model, model, "prices model", err) < 0)
			return cx_err_set(err, 0, "config: 'prices.%.64s' must be an object", model);
		const char *k;
		json_t *v;
		json_object_foreach(row, k, v)
		{
			double *dst = !strcmp(k, "input")	? &p->input
				      : !strcmp(k, "output")	? &p->output
				      : !strcmp(k, "cache_read")  ? &p->cache_read
				      : !strcmp(k, "cache_write") ? &p->cache_write
								  : NULL;
			if (!dst)
				return cx_err_set(err, 0, "config: unknown field 'prices.%.64s.%.32s' (input, output, cache_read, cache_write)",
						  model, k);
			if (!json_is_number(v) || json_number_value(v) < 0)
				return cx_err_set(err, 0, "config: 'prices.%.64s.%s' must be a non-negative number", model, k);
			*dst = json_number_value(v);
		}
		c->n_prices++;
	}
	return 0;
}

/* "HOST:PORT" into host (cap bytes) and *port; what names the setting in errors. */
static int parse_hostport(const char *what, const char *v, char *host, size_t cap, int *port, cx_err *err)
{
	const char *colon = strrchr(v, ':');
	if (!colon || colon == v)
		return cx_err_set(err, 0, "%s: expected HOST:PORT, got '%s'", what, v);
	char *end;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (errno || *end || p < 0 || p > 65535)
		return cx_err_set(err, 0, "%s: bad port in '%s'", what, v);
	size_t hl = (size_t)(colon - v);
	if (hl >= cap)
		return cx_err_set(err, 0, "%s: host too long", what);
	memcpy(host, v, hl);
	host[hl] = '\0';
	*port = (int)p;
	return 0;
}

static int parse_listen(config *c, const char *v, cx_err *err)
{
	return parse_hostport("--listen", v, c->listen_host, sizeof c->listen_host, &c->listen_port, err);
}

static int set_log_format(config *c, const char *v, cx_err *err)
{
	if (!strcmp(v, "json"))
		c->log_json = 1;
	else if (!strcmp(v, "text"))
		c->log_json = 0;
	else
		return cx_err_set(err, 0, "log format must be text or json, got '%s'", v);
	return 0;
}

static int set_store(config *c, const char *v, cx_err *err)
{
	if (strcmp(v, "sqlite") && strcmp(v, "etcd"))
		return cx_err_set(err, 0, "store must be sqlite or etcd, got '%s'", v);
	return copy_str(c->store_kind, sizeof c->store_kind, v, "store", err);
}

/* Look up an optional string member; type errors are errors. */
static int jstr(json_t *o, const char *key, const char **out, cx_err *err)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return cx_err_set(err, 0, "config: '%s' must be a string", key);
	*out = json_string_value(v);
	return 0;
}

static int jint(json_t *o, const char *key, long long *out, int *found, cx_err *err)
{
	json_t *v = json_object_get(o, key);
	*found = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return cx_err_set(err, 0, "config: '%s' must be a non-negative integer", key);
	*out = json_integer_value(v);
	*found = 1;
	return 0;
}

/* "surfaces": {"chat": {...}, "voice": {...}}: each key overrides one field of
 * that profile; an unknown surface or field is an error (a typo must not pass). */
static int load_surfaces(config *c, json_t *surf, cx_err *err)
{
	if (!surf)
		return 0;
	if (!json_is_object(surf))
		return cx_err_set(err, 0, "config: 'surfaces' must be an object");
	const char *name;
	json_t *p;
	json_object_foreach(surf, name, p)
	{
		struct surface_profile *sp = (struct surface_profile *)config_surface(c, name);
		if (!sp)
			return cx_err_set(err, 0, "config: unknown surface '%.32s' (chat, voice)", name);
		if (!json_is_object(p))
			return cx_err_set(err, 0, "config: 'surfaces.%s' must be an object", name);
		static const struct {
			const char *key;
			size_t off;
		} ints[] = {
			{"first_token_budget_ms", offsetof(struct surface_profile, first_token_budget_ms)},
			{"response_budget_ms", offsetof(struct surface_profile, response_budget_ms)},
			{"idle_agent_s", offsetof(struct surface_profile, idle_agent_s)},
			{"idle_pause_s", offsetof(struct surface_profile, idle_pause_s)},
			{"idle_sleep_s", offsetof(struct surface_profile, idle_sleep_s)},
		};
		const char *k;
		json_t *v;
		json_object_foreach(p, k, v)
		{
			int done = 0;
			for (size_t i = 0; i < sizeof ints / sizeof ints[0] && !done; i++) {
				if (strcmp(k, ints[i].key))
					continue;
				if (!json_is_integer(v) || json_integer_value(v) < 0 ||
				    json_integer_value(v) > 86400000)
					return cx_err_set(err, 0, "config: 'surfaces.%s.%s' must be a non-negative integer",
							  name, k);
				*(int *)((char *)sp + ints[i].off) = (int)json_integer_value(v);
				done = 1;
			}
			if (done)
				continue;
			if (!strcmp(k, "model")) {
				if (!json_is_string(v) ||
				    copy_str(sp->model, sizeof sp->model, json_string_value(v), "surface model", err) < 0)
					return cx_err_set(err, 0, "config: 'surfaces.%s.model' must be a short string", name);
			} else if (!strcmp(k, "streaming")) {
				const char *m = json_string_value(v);
				if (!m || (strcmp(m, "deltas") && strcmp(m, "sentences")))
					return cx_err_set(err, 0, "config: 'surfaces.%s.streaming' must be \"deltas\" or \"sentences\"",
							  name);
				sp->sentences = !strcmp(m, "sentences");
			} else {
				return cx_err_set(err, 0, "config: unknown field 'surfaces.%s.%.40s'", name, k);
			}
		}
	}
	return 0;
}

/* The "provider" section, if present. */
static int load_provider(config *c, json_t *prov, cx_err *err)
{
	const char *s;
	if (!prov)
		return 0;
	if (!json_is_object(prov)) {
		cx_err_set(err, 0, "config: 'provider' must be an object");
		return -1;
	}
	if (jstr(prov, "base_url", &s, err) < 0 ||
	    (s && copy_str(c->provider_base_url, sizeof c->provider_base_url, s, "provider.base_url", err) < 0))
		return -1;
	if (jstr(prov, "api_key", &s, err) < 0 ||
	    (s && copy_str(c->provider_api_key, sizeof c->provider_api_key, s, "provider.api_key", err) < 0))
		return -1;
	if (jstr(prov, "model", &s, err) < 0 ||
	    (s && copy_str(c->provider_model, sizeof c->provider_model, s, "provider.model", err) < 0))
		return -1;
	return 0;
}

/* The "agent" section, if present. */
static int load_agent(config *c, json_t *agent, cx_err *err)
{
	const char *s;
	long long n;
	int found;
	if (!agent)
		return 0;
	if (!json_is_object(agent)) {
		cx_err_set(err, 0, "config: 'agent' must be an object");
		return -1;
	}
	if (jstr(agent, "dir", &s, err) < 0 ||
	    (s && copy_str(c->agent_dir, sizeof c->agent_dir, s, "agent.dir", err) < 0))
		return -1;
	if (jstr(agent, "permission_mode", &s, err) < 0 ||
	    (s && copy_str(c->agent_permission_mode, sizeof c->agent_permission_mode, s,
			   "agent.permission_mode", err) < 0))
		return -1;
	if (jstr(agent, "command", &s, err) < 0 ||
	    (s && copy_str(c->agent_command, sizeof c->agent_command, s, "agent.command", err) < 0))
		return -1;
	c->agent_command_set = s != NULL;
	json_t *hs = json_object_get(agent, "handshake");
	if (hs && !json_is_boolean(hs)) {
		cx_err_set(err, 0, "config: 'agent.handshake' must be true or false");
		return -1;
	}
	if (hs)
		c->agent_handshake = json_is_true(hs);
	if (jint(agent, "start_timeout_ms", &n, &found, err) < 0)
		return -1;
	if (found)
		c->agent_start_timeout_ms = n < 100 ? 100 : n > 600000 ? 600000 : (int)n;
	if (jint(agent, "max_booting", &n, &found, err) < 0)
		return -1;
	if (found && (n < 1 || n > 1024))
		return cx_err_set(err, 0, "config: agent.max_booting must be from 1 to 1024");
	if (found)
		c->agent_max_booting = (int)n;
	if (jint(agent, "boot_tries", &n, &found, err) < 0)
		return -1;
	if (found && (n < 1 || n > 10))
		return cx_err_set(err, 0, "config: agent.boot_tries must be from 1 to 10");
	if (found)
		c->agent_boot_tries = (int)n;
	return 0;
}

/* The "sandbox" section, if present. */
static int load_sandbox(config *c, json_t *sb, cx_err *err)
{
	long long n;
	int found;
	if (!sb)
		return 0;
	if (!json_is_object(sb)) {
		cx_err_set(err, 0, "config: 'sandbox' must be an object");
		return -1;
	}
	if (jint(sb, "uid", &n, &found, err) < 0)
		return -1;
	if (found)
		c->sandbox_uid = (uid_t)n;
	if (jint(sb, "gid", &n, &found, err) < 0)
		return -1;
	if (found)
		c->sandbox_gid = (gid_t)n;
	if (jint(sb, "memory_max_mb", &n, &found, err) < 0)
		return -1;
	if (found)
		c->sandbox_memory_max = (uint64_t)n << 20;
	if (jint(sb, "pids_max", &n, &found, err) < 0)
		return -1;
	if (found)
		c->sandbox_pids_max = (uint64_t)n;
	json_t *ni = json_object_get(sb, "net_isolated");
	if (ni && !json_is_boolean(ni))
		return cx_err_set(err, 0, "config: 'sandbox.net_isolated' must be true or false");
	if (ni)
		c->sandbox_net_isolated = json_is_true(ni);
	static const struct {
		const char *key;
		long long lo, hi;
	} lim[] = {
		{"uid_base", 1000, 0x7fffffff}, {"uid_count", 1, 0x7fffffff}, {"disk_mb", 16, 1 << 24},
		{"disk_max_mb", 16, 1 << 24},   {"cpu_weight", 1, 10000},      {"cpu_max_millicpu", 0, 1 << 20},
		{"allow_host_root", 0, 1},      {"repo_allow_private", 0, 1},  {"workers", 1, 64},
	};
	long long v[sizeof lim / sizeof lim[0]];
	for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
		json_t *j = json_object_get(sb, lim[i].key);
		if (!j) {
			v[i] = -1;
			continue;
		}
		if (json_is_boolean(j))
			n = json_is_true(j);
		else if (json_is_integer(j))
			n = json_integer_value(j);
		else
			return cx_err_set(err, 0, "config: sandbox.%s must be an integer", lim[i].key);
		if (n < lim[i].lo || n > lim[i].hi)
			return cx_err_set(err, 0, "config: sandbox.%s must be from %lld to %lld", lim[i].key,
					  lim[i].lo, lim[i].hi);
		v[i] = n;
	}
	if (v[0] >= 0)
		c->sandbox_uid_base = (uid_t)v[0];
	if (v[1] >= 0)
		c->sandbox_uid_count = (uint32_t)v[1];
	if (v[2] >= 0)
		c->sandbox_disk_mb = (uint64_t)v[2];
	if (v[3] >= 0)
		c->sandbox_disk_max_mb = (uint64_t)v[3];
	if (v[4] >= 0)
		c->sandbox_cpu_weight = (uint32_t)v[4];
	if (v[5] >= 0)
		c->sandbox_cpu_max_millicpu = (uint32_t)v[5];
	if (v[6] >= 0)
		c->sandbox_allow_host_root = (int)v[6];
	if (v[7] >= 0)
		c->repo_allow_private = (int)v[7];
	if (v[8] >= 0)
		c->sandbox_workers = (int)v[8];
	if (c->sandbox_disk_mb > c->sandbox_disk_max_mb)
		return cx_err_set(err, 0, "config: sandbox.disk_mb exceeds sandbox.disk_max_mb");
	return 0;
}

/* The "gateway" section, if present. */
static int load_gateway(config *c, json_t *gw, cx_err *err)
{
	const char *s;
	if (!gw)
		return 0;
	if (!json_is_object(gw)) {
		cx_err_set(err, 0, "config: 'gateway' must be an object");
		return -1;
	}
	json_t *en = json_object_get(gw, "enabled");
	if (en && !json_is_boolean(en)) {
		cx_err_set(err, 0, "config: 'gateway.enabled' must be true or false");
		return -1;
	}
	if (en)
		c->gateway_enabled = json_is_true(en);
	if (jstr(gw, "listen", &s, err) < 0)
		return -1;
	if (s && parse_hostport("gateway.listen", s, c->gateway_host, sizeof c->gateway_host,
				 &c->gateway_port, err) < 0)
		return -1;
	long long max = 0, per_user = 0, deadline = 0, queued = 0, qwait = 0;
	int have_max, have_per_user, have_deadline, have_queued, have_qwait;
	if (jint(gw, "max_inflight", &max, &have_max, err) < 0 ||
	    jint(gw, "max_inflight_per_user", &per_user, &have_per_user, err) < 0 ||
	    jint(gw, "body_deadline_s", &deadline, &have_deadline, err) < 0 ||
	    jint(gw, "max_queued", &queued, &have_queued, err) < 0 ||
	    jint(gw, "queue_timeout_ms", &qwait, &have_qwait, err) < 0)
		return -1;
	if (have_queued && (queued < 0 || queued > 4096)) /* GW_MAX_QUEUED_LIMIT */
		return cx_err_set(err, 0, "config: gateway.max_queued must be from 0 to 4096");
	if (have_queued)
		c->gateway_max_queued = (unsigned)queued;
	if (have_qwait && (qwait < 1 || qwait > 600000))
		return cx_err_set(err, 0, "config: gateway.queue_timeout_ms must be from 1 to 600000");
	if (have_qwait)
		c->gateway_queue_timeout_ms = (unsigned)qwait;
	if (have_deadline && (deadline < 1 || deadline > 3600))
		return cx_err_set(err, 0, "config: gateway.body_deadline_s must be from 1 to 3600");
	if (have_deadline)
		c->gateway_body_deadline_s = (unsigned)deadline;
	if (have_max && (max < 1 || max > 1024)) /* GW_MAX_INFLIGHT_LIMIT: a thread each */
		return cx_err_set(err, 0, "config: gateway.max_inflight must be from 1 to 1024");
	if (have_max)
		c->gateway_max_inflight = (unsigned)max;
	if (have_per_user && (per_user < 1 || per_user > c->gateway_max_inflight))
		return cx_err_set(err, 0,
				  "config: gateway.max_inflight_per_user must be from 1 to "
				  "gateway.max_inflight (%u)",
				  c->gateway_max_inflight);
	if (have_per_user)
		c->gateway_max_inflight_per_user = (unsigned)per_user;
	else if (c->gateway_max_inflight_per_user > c->gateway_max_inflight)
		c->gateway_max_inflight_per_user = c->gateway_max_inflight;
	return 0;
}

/* The "egress" section, if present (docs/configuration.md). */
static int load_egress(config *c, json_t *eo, cx_err *err)
{
	const char *s;
	long long n;
	int found;
	if (!eo)
		return 0;
	if (!json_is_object(eo))
		return cx_err_set(err, 0, "config: 'egress' must be an object");
	json_t *en = json_object_get(eo, "enabled");
	if (en && !json_is_boolean(en))
		return cx_err_set(err, 0, "config: 'egress.enabled' must be true or false");
	if (en)
		c->egress_enabled = json_is_true(en);
	if (jint(eo, "port", &n, &found, err) < 0)
		return -1;
	if (found && (n < 1 || n > 65535))
		return cx_err_set(err, 0, "config: 'egress.port' must be 1-65535");
	if (found)
		c->egress_port = (int)n;
	if (jstr(eo, "default_mode", &s, err) < 0)
		return -1;
	if (s) {
		if (!strcmp(s, "none"))
			c->egress_default_mode = 0;
		else if (!strcmp(s, "allowlist"))
			c->egress_default_mode = 1;
		else if (!strcmp(s, "open"))
			c->egress_default_mode = 2;
		else
			return cx_err_set(err, 0, "config: 'egress.default_mode' must be none, allowlist or open");
	}
	json_t *ap = json_object_get(eo, "allow_private");
	if (ap) {
		json_t *pol = json_pack("{s:s,s:O}", "mode", "allowlist", "allow", ap);
		int bad = egress_policy_check_json(pol, err);
		json_decref(pol);
		if (bad < 0)
			return cx_err_wrap(err, "config: 'egress.allow_private'");
		char *txt = json_dumps(ap, JSON_COMPACT);
		int rc = txt ? copy_str(c->egress_allow_private, sizeof c->egress_allow_private, txt,
					"egress.allow_private", err)
			     : cx_err_set(err, ENOMEM, "config");
		free(txt);
		if (rc < 0)
			return -1;
	}
	if (jint(eo, "max_conns", &n, &found, err) < 0)
		return -1;
	if (found)
		c->egress_max_conns = n < 1 ? 1 : n > 65536 ? 65536 : (unsigned)n;
	if (jint(eo, "max_conns_per_session", &n, &found, err) < 0)
		return -1;
	if (found)
		c->egress_max_conns_session = n < 1 ? 1 : n > 65536 ? 65536 : (unsigned)n;
	if (jint(eo, "connect_timeout_ms", &n, &found, err) < 0)
		return -1;
	if (found)
		c->egress_connect_timeout_ms = n < 100 ? 100 : n > 120000 ? 120000 : (int)n;
	if (jstr(eo, "upstream_ca_file", &s, err) < 0 ||
	    (s && copy_str(c->egress_upstream_ca, sizeof c->egress_upstream_ca, s, "egress.upstream_ca_file", err) < 0))
		return -1;
	return 0;
}

/* The "cluster" section (scale-out, docs/scale-out.md), if present. */
static int load_cluster(config *c, json_t *cl, cx_err *err)
{
	if (!cl)
		return 0;
	if (!json_is_object(cl))
		return cx_err_set(err, 0, "config: 'cluster' must be an object");
	const char *k;
	json_t *v;
	json_object_foreach(cl, k, v)
	{
		if (strcmp(k, "forward") && strcmp(k, "proxy_timeout_ms"))
			return cx_err_set(err, 0, "config: unknown field 'cluster.%.40s' (forward, proxy_timeout_ms)", k);
	}
	const char *s = NULL;
	if (jstr(cl, "forward", &s, err) < 0)
		return -1;
	if (s && strcmp(s, "proxy") && strcmp(s, "redirect"))
		return cx_err_set(err, 0, "config: 'cluster.forward' must be \"proxy\" or \"redirect\"");
	if (s)
		c->cluster_redirect = !strcmp(s, "redirect");
	long long n = 0;
	int found;
	if (jint(cl, "proxy_timeout_ms", &n, &found, err) < 0)
		return -1;
	if (found && (n < 100 || n > 600000))
		return cx_err_set(err, 0, "config: 'cluster.proxy_timeout_ms' must be 100..600000");
	if (found)
		c->cluster_proxy_timeout_ms = (int)n;
	return 0;
}

/* The "ws" section (client WebSockets), if present. */
static int load_ws(config *c, json_t *ws, cx_err *err)
{
	if (!ws)
		return 0;
	if (!json_is_object(ws))
		return cx_err_set(err, 0, "config: 'ws' must be an object");
	const char *k;
	json_t *v;
	json_object_foreach(ws, k, v)
	{
		if (strcmp(k, "client_queue_max_bytes") && strcmp(k, "max_clients_per_session") &&
		    strcmp(k, "max_clients_per_user")) /* the last two: config_caps.c */
			return cx_err_set(err, 0,
					  "config: unknown field 'ws.%.40s' (client_queue_max_bytes, "
					  "max_clients_per_session, max_clients_per_user)",
					  k);
	}
	long long n = 0;
	int found;
	if (jint(ws, "client_queue_max_bytes", &n, &found, err) < 0)
		return -1;
	if (found && (n < (64 << 10) || n > (1ll << 30)))
		return cx_err_set(err, 0, "config: 'ws.client_queue_max_bytes' must be 65536..1073741824");
	if (found)
		c->ws_client_queue_max_bytes = (size_t)n;
	return 0;
}

/* The "npm" section, if present. */
static int load_npm(config *c, json_t *npm, cx_err *err)
{
	const char *s;
	long long n;
	int found;
	if (!npm)
		return 0;
	if (!json_is_object(npm)) {
		cx_err_set(err, 0, "config: 'npm' must be an object");
		return -1;
	}
	if (jstr(npm, "path", &s, err) < 0 ||
	    (s && copy_str(c->npm_path, sizeof c->npm_path, s, "npm.path", err) < 0))
		return -1;
	if (jstr(npm, "cache_dir", &s, err) < 0 ||
	    (s && copy_str(c->npm_cache_dir, sizeof c->npm_cache_dir, s, "npm.cache_dir", err) < 0))
		return -1;
	if (jint(npm, "cache_max_mb", &n, &found, err) < 0)
		return -1;
	if (found)
		c->npm_cache_max = (uint64_t)n << 20;
	return 0;
}

/* The "images" section, if present. */
static int load_images(config *c, json_t *im, cx_err *err)
{
	const char *s;
	long long n;
	int found;
	if (!im)
		return 0;
	if (!json_is_object(im))
		return cx_err_set(err, 0, "config: 'images' must be an object");
	static const struct {
		const char *key;
		size_t off, cap;
	} strs[] = {
		{"dir", offsetof(config, images_dir), sizeof c->images_dir},
		{"default", offsetof(config, images_default), sizeof c->images_default},
		{"build_base", offsetof(config, images_build_base), sizeof c->images_build_base},
		{"import_dir_default", offsetof(config, images_import_dir_default), sizeof c->images_import_dir_default},
	};
	for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
		char what[64];
		snprintf(what, sizeof what, "images.%s", strs[i].key);
		if (jstr(im, strs[i].key, &s, err) < 0 || (s && copy_str((char *)c + strs[i].off, strs[i].cap, s, what, err) < 0))
			return -1;
	}
	if (jint(im, "budget_mb", &n, &found, err) < 0)
		return -1;
	if (found)
		c->images_budget = (uint64_t)(n < 0 ? 0 : n) << 20;
	if (jint(im, "max_context_mb", &n, &found, err) < 0)
		return -1;
	if (found)
		c->images_max_context = (uint64_t)(n < 1 ? 1 : n > 65536 ? 65536 : n) << 20;
	if (jint(im, "max_builds", &n, &found, err) < 0)
		return -1;
	if (found)
		c->images_max_builds = n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
	if (jint(im, "max_user_builds", &n, &found, err) < 0)
		return -1;
	if (found)
		c->images_max_user_builds = n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
	return 0;
}

/* The "files" section, if present. */
static int load_files(config *c, json_t *fo, cx_err *err)
{
	if (!fo)
		return 0;
	if (!json_is_object(fo))
		return cx_err_set(err, 0, "config: 'files' must be an object");
	static const struct {
		const char *key;
		long long lo, hi;
	} k[] = {{"max_read_mb", 1, 1024}, {"max_write_mb", 1, 1024}, {"max_entries", 1, 1000000},
		 {"max_inflight", 1, 256},  {"max_watches", 1, 1 << 20}, {"coalesce_ms", 0, 10000}};
	long long v[6] = {(long long)(c->files_max_read >> 20), (long long)(c->files_max_write >> 20),
			  c->files_max_entries, c->files_max_inflight, c->files_max_watches, c->files_coalesce_ms};
	for (size_t i = 0; i < 6; i++) {
		int found;
		long long n;
		if (jint(fo, k[i].key, &n, &found, err) < 0)
			return -1;
		if (found && (n < k[i].lo || n > k[i].hi))
			return cx_err_set(err, 0, "config: 'files.%s' must be from %lld to %lld", k[i].key, k[i].lo, k[i].hi);
		if (found)
			v[i] = n;
	}
	c->files_max_read = (uint64_t)v[0] << 20;
	c->files_max_write = (uint64_t)v[1] << 20;
	c->files_max_entries = (unsigned)v[2];
	c->files_max_inflight = (unsigned)v[3];
	c->files_max_watches = (unsigned)v[4];
	c->files_coalesce_ms = (int)v[5];
	return 0;
}

/* The "exec" section, if present. */
static int load_exec(config *c, json_t *eo, cx_err *err)
{
	if (!eo)
		return 0;
	if (!json_is_object(eo))
		return cx_err_set(err, 0, "config: 'exec' must be an object");
	static const struct {
		const char *key;
		long long lo, hi;
	} k[] = {{"max_per_session", 1, 1024}, {"max_per_user", 1, 4096}, {"max_output_kb", 1, 65536},
		 {"max_timeout_s", 1, 604800}, {"default_timeout_s", 1, 604800}};
	long long v[5] = {c->exec_max_per_session, c->exec_max_per_user, (long long)(c->exec_max_output >> 10),
			  c->exec_max_timeout_s, c->exec_default_timeout_s};
	for (size_t i = 0; i < 5; i++) {
		int found;
		long long n;
		if (jint(eo, k[i].key, &n, &found, err) < 0)
			return -1;
		if (found && (n < k[i].lo || n > k[i].hi))
			return cx_err_set(err, 0, "config: 'exec.%s' must be from %lld to %lld", k[i].key, k[i].lo, k[i].hi);
		if (found)
			v[i] = n;
	}
	if (v[4] > v[3])
		return cx_err_set(err, 0, "config: 'exec.default_timeout_s' must not exceed 'exec.max_timeout_s'");
	c->exec_max_per_session = (unsigned)v[0];
	c->exec_max_per_user = (unsigned)v[1];
	c->exec_max_output = (uint64_t)v[2] << 10;
	c->exec_max_timeout_s = (int)v[3];
	c->exec_default_timeout_s = (int)v[4];
	return 0;
}

int config_load_file(config *c, const char *path, cx_err *err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return cx_err_set(err, 0, "config %s:%d: %s", path, jerr.line, jerr.text);
	int rc = -1;
	const char *s;
	long long n;
	int found;
	if (!json_is_object(root)) {
		cx_err_set(err, 0, "config %s: top level must be an object", path);
		goto out;
	}
	if (jstr(root, "listen", &s, err) < 0 || (s && parse_listen(c, s, err) < 0))
		goto out;
	if (jstr(root, "data_dir", &s, err) < 0 ||
	    (s && copy_str(c->data_dir, sizeof c->data_dir, s, "data_dir", err) < 0))
		goto out;
	if (jstr(root, "store", &s, err) < 0 || (s && set_store(c, s, err) < 0))
		goto out;
	if (jstr(root, "etcd_endpoints", &s, err) < 0 ||
	    (s && copy_str(c->etcd_endpoints, sizeof c->etcd_endpoints, s, "etcd_endpoints", err) < 0))
		goto out;
	{
		long long mrb;
		int have;
		if (jint(root, "etcd_max_request_bytes", &mrb, &have, err) < 0)
			goto out;
		if (have && (mrb < 4096 || mrb > 256LL * 1024 * 1024)) {
			cx_err_set(err, 0, "config: 'etcd_max_request_bytes' must be 4096..268435456");
			goto out;
		}
		if (have)
			c->etcd_max_request_bytes = (size_t)mrb;
		if (jstr(root, "etcd_namespace", &s, err) < 0 ||
		    (s && copy_str(c->etcd_namespace, sizeof c->etcd_namespace, s, "etcd_namespace", err) < 0))
			goto out;
		if (jstr(root, "node_id", &s, err) < 0 ||
		    (s && copy_str(c->node_id, sizeof c->node_id, s, "node_id", err) < 0))
			goto out;
		if (s && (!s[0] || strchr(s, '/'))) {
			cx_err_set(err, 0, "config: 'node_id' must be non-empty and hold no '/'");
			goto out;
		}
		if (jstr(root, "node_advertise_url", &s, err) < 0 ||
		    (s && copy_str(c->node_advertise_url, sizeof c->node_advertise_url, s, "node_advertise_url", err) < 0))
			goto out;
		if (s && strncmp(s, "http://", 7)) {
			cx_err_set(err, 0, "config: 'node_advertise_url' must start with http://");
			goto out;
		}
		if (jstr(root, "sessions_dir", &s, err) < 0 ||
		    (s && copy_str(c->sessions_dir, sizeof c->sessions_dir, s, "sessions_dir", err) < 0))
			goto out;
		long long ttl;
		if (jint(root, "node_lease_ttl_s", &ttl, &have, err) < 0)
			goto out;
		if (have && (ttl < 2 || ttl > 300)) {
			cx_err_set(err, 0, "config: 'node_lease_ttl_s' must be 2..300");
			goto out;
		}
		if (have)
			c->node_lease_ttl_s = (int)ttl;
	}
	if (jstr(root, "log_format", &s, err) < 0 || (s && set_log_format(c, s, err) < 0))
		goto out;
	if (jstr(root, "ws_agent_rt", &s, err) < 0 ||
	    (s && copy_str(c->ws_agent_rt, sizeof c->ws_agent_rt, s, "ws_agent_rt", err) < 0))
		goto out;
	if (jstr(root, "ws_agent_path", &s, err) < 0 ||
	    (s && copy_str(c->ws_agent_path, sizeof c->ws_agent_path, s, "ws_agent_path", err) < 0))
		goto out;
	if (load_provider(c, json_object_get(root, "provider"), err) < 0)
		goto out;
	if (load_agent(c, json_object_get(root, "agent"), err) < 0)
		goto out;
	if (load_sandbox(c, json_object_get(root, "sandbox"), err) < 0)
		goto out;
	if (load_images(c, json_object_get(root, "images"), err) < 0)
		goto out;
	if (load_exec(c, json_object_get(root, "exec"), err) < 0)
		goto out;
	if (load_files(c, json_object_get(root, "files"), err) < 0)
		goto out;
	if (jint(root, "ready_timeout_ms", &n, &found, err) < 0)
		goto out;
	if (found)
		c->ready_timeout_ms = (int)n;
	if (jint(root, "context_timeout_ms", &n, &found, err) < 0)
		goto out;
	if (found)
		c->context_timeout_ms = (int)n;
	if (jint(root, "config_ttl_s", &n, &found, err) < 0)
		goto out;
	if (found)
		c->config_ttl_s = (int)(n > 86400 ? 86400 : n);
	if (jint(root, "write_parallel", &n, &found, err) < 0)
		goto out;
	if (found)
		c->write_parallel = n < 1 ? 1 : n > 16 ? 16 : (int)n;
	if (jint(root, "turn_grace_s", &n, &found, err) < 0)
		goto out;
	if (found)
		c->turn_grace_s = n < 0 ? 0 : n > 86400 ? 86400 : (int)n;
	if (load_surfaces(c, json_object_get(root, "surfaces"), err) < 0 ||
	    load_prices(c, json_object_get(root, "prices"), err) < 0)
		goto out;
	if (load_gateway(c, json_object_get(root, "gateway"), err) < 0)
		goto out;
	if (load_npm(c, json_object_get(root, "npm"), err) < 0)
		goto out;
	if (load_cluster(c, json_object_get(root, "cluster"), err) < 0 ||
	    load_ws(c, json_object_get(root, "ws"), err) < 0)
		goto out;
	if (load_egress(c, json_object_get(root, "egress"), err) < 0 || config_load_caps(c, root, err) < 0)
		goto out;
	/* Without the gateway the agent talks to the provider itself: an own
	 * network namespace would cut it off.  Default: the host's then; asked
	 * for explicitly, an error. */
	if (!c->gateway_enabled) {
		json_t *sb = json_object_get(root, "sandbox");
		if (json_is_true(json_object_get(sb, "net_isolated"))) {
			cx_err_set(err, 0, "config: 'sandbox.net_isolated' needs the model gateway "
					   "(gateway.enabled): the agent could reach no model");
			goto out;
		}
		c->sandbox_net_isolated = false;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

static void usage(void)
{
	fputs("usage: cortexd [--listen HOST:PORT] [--data-dir DIR] [--store sqlite|etcd]\n"
	      "               [--etcd-endpoints URL[,URL...]] [--config FILE] [--log-format text|json]\n"
	      "               [--check-config]\n"
	      "--check-config: load the flags and the config file, check the paths they name,\n"
	      "print \"cortexd: config ok\" and exit 0, or the first error and exit 2.\n"
	      "Environment: CORTEX_ADMIN_TOKEN, CORTEX_MASTER_KEY_FILE, ANTHROPIC_BASE_URL,\n"
	      "             ANTHROPIC_API_KEY (the default model provider).\n"
	      "See docs/operations.md.\n",
	      stdout);
}

int config_parse_args(config *c, int argc, char **argv, cx_err *err)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"data-dir", required_argument, NULL, 'd'},
		{"store", required_argument, NULL, 's'},
		{"etcd-endpoints", required_argument, NULL, 'e'},
		{"config", required_argument, NULL, 'c'},
		{"log-format", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{"check-config", no_argument, NULL, 'k'},
		{NULL, 0, NULL, 0},
	};
	/* The file comes first so flags override it, wherever --config appears. */
	for (int i = 1; i < argc - 1; i++)
		if (!strcmp(argv[i], "--config") && config_load_file(c, argv[i + 1], err) < 0)
			return -1;
	optind = 1;
	opterr = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			if (parse_listen(c, optarg, err) < 0)
				return -1;
			break;
		case 'd':
			if (copy_str(c->data_dir, sizeof c->data_dir, optarg, "--data-dir", err) < 0)
				return -1;
			break;
		case 's':
			if (set_store(c, optarg, err) < 0)
				return -1;
			break;
		case 'e':
			if (copy_str(c->etcd_endpoints, sizeof c->etcd_endpoints, optarg, "--etcd-endpoints", err) < 0)
				return -1;
			break;
		case 'c':
			break; /* loaded above */
		case 'f':
			if (set_log_format(c, optarg, err) < 0)
				return -1;
			break;
		case 'h':
			usage();
			return 1;
		case 'k':
			c->check_only = 1;
			break;
		default:
			return cx_err_set(err, 0, "unknown or incomplete option '%s' (see --help)",
					  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cx_err_set(err, 0, "unexpected argument '%s'", argv[optind]);
	return 0;
}

int config_finish(config *c, const char *argv0, cx_err *err)
{
	(void)argv0;
	char buf[PATH_MAX];
	if (strcmp(c->store_kind, "etcd") == 0 && !c->etcd_endpoints[0])
		return cx_err_set(err, EINVAL, "--store etcd needs --etcd-endpoints URL[,URL...] "
					       "(or \"etcd_endpoints\" in the config file)");
	if (c->data_dir[0] != '/') {
		if (!getcwd(buf, sizeof buf))
			return cx_err_set(err, errno, "getcwd");
		char abs[sizeof c->data_dir + PATH_MAX + 2];
		snprintf(abs, sizeof abs, "%s/%s", buf, c->data_dir);
		if (copy_str(c->data_dir, sizeof c->data_dir, abs, "data dir", err) < 0)
			return -1;
	}
	if (!c->sessions_dir[0] &&
	    (size_t)snprintf(c->sessions_dir, sizeof c->sessions_dir, "%s/sessions", c->data_dir) >=
		sizeof c->sessions_dir)
		return cx_err_set(err, ENAMETOOLONG, "sessions dir");
	if (c->sessions_dir[0] != '/')
		return cx_err_set(err, EINVAL, "sessions_dir must be an absolute path");
	if (!c->images_dir[0] &&
	    (size_t)snprintf(c->images_dir, sizeof c->images_dir, "%s/images", c->data_dir) >= sizeof c->images_dir)
		return cx_err_set(err, ENAMETOOLONG, "images dir");
	/* The machine's default image (`make image`) when the config names none. */
	if (!c->images_import_dir_default[0] && access(CONFIG_MACHINE_DEFAULT_IMAGE "/index.json", R_OK) == 0)
		snprintf(c->images_import_dir_default, sizeof c->images_import_dir_default, "%s",
			 CONFIG_MACHINE_DEFAULT_IMAGE);
	const char *e;
	if (!c->provider_base_url[0] && (e = getenv("ANTHROPIC_BASE_URL")) &&
	    copy_str(c->provider_base_url, sizeof c->provider_base_url, e, "ANTHROPIC_BASE_URL", err) < 0)
		return -1;
	if (!c->provider_api_key[0] && (e = getenv("ANTHROPIC_API_KEY")) &&
	    copy_str(c->provider_api_key, sizeof c->provider_api_key, e, "ANTHROPIC_API_KEY", err) < 0)
		return -1;
	/* ws-agent sits next to cortexd in the build dir unless configured. */
	if (!c->ws_agent_path[0]) {
		ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
		if (n < 0)
			return cx_err_set(err, errno, "readlink /proc/self/exe");
		buf[n] = '\0';
		char *dir = dirname(buf);
		if ((size_t)snprintf(c->ws_agent_path, sizeof c->ws_agent_path, "%s/ws-agent", dir) >=
		    sizeof c->ws_agent_path)
			return cx_err_set(err, 0, "ws-agent path too long");
	}
	if (!c->agent_dir[0] &&
	    copy_str(c->agent_dir, sizeof c->agent_dir, CORTEX_CLAUDE_DIR, "agent dir", err) < 0)
		return -1;
	if (access(c->ws_agent_path, X_OK) < 0)
		return cx_err_set(err, errno, "ws-agent binary %s", c->ws_agent_path);
	/* Its self-contained bundle (ws-agent/bundle.sh) sits next to it. */
	if (!c->ws_agent_rt[0]) {
		snprintf(buf, sizeof buf, "%s", c->ws_agent_path);
		if ((size_t)snprintf(c->ws_agent_rt, sizeof c->ws_agent_rt, "%s/ws-agent-rt", dirname(buf)) >=
		    sizeof c->ws_agent_rt)
			return cx_err_set(err, 0, "ws-agent-rt path too long");
	}
	/* With its loader, or a static ws-agent alone (release builds). */
	snprintf(buf, sizeof buf, "%s/lib/ld.so", c->ws_agent_rt);
	c->ws_agent_static = false;
	if (access(buf, R_OK) < 0) {
		int ld_errno = errno;
		snprintf(buf, sizeof buf, "%s/ws-agent", c->ws_agent_rt);
		if (ld_errno != ENOENT || access(buf, X_OK) < 0)
			return cx_err_set(err, ld_errno, "ws-agent bundle %s (made by the build: ws-agent/bundle.sh)",
					  c->ws_agent_rt);
		c->ws_agent_static = true;
	}
	if (c->agent_dir[0] && access(c->agent_dir, R_OK) < 0)
		return cx_err_set(err, errno, "agent dir %s (install with `make deps`)", c->agent_dir);
	if (c->sandbox_uid == 0)
		return cx_err_set(err, 0, "sandbox.uid must not be 0");
	return 0;
}
