/* config.h — cortexd's settings: built-in defaults, then the JSON file given
 * with --config, then command-line flags (last wins). */
#ifndef CORTEX_CONFIG_H
#define CORTEX_CONFIG_H

#include <stdint.h>
#include <sys/types.h>
#include "cx.h"

typedef struct config {
	char listen_host[256];
	int listen_port;             /* 0 = pick a free one and print it */
	char data_dir[4096];         /* absolute after config_finish() */
	char store_kind[16];         /* "sqlite" | "etcd" */
	char etcd_endpoints[1024];
	int log_json;

	/* The model provider for users who configured none. */
	char provider_base_url[1024];
	char provider_api_key[1024];
	char provider_model[128];

	/* Sandboxes. */
	uid_t sandbox_uid;
	gid_t sandbox_gid;
	uint64_t sandbox_memory_max;
	uint64_t sandbox_pids_max;
	char ws_agent_path[4096];    /* host path of the ws-agent binary */
	char agent_dir[4096];        /* host dir bound at /cortex/agent */
	char agent_command[4096];    /* path inside the sandbox of the agent binary */
	char agent_permission_mode[32]; /* Claude Code --permission-mode; the sandbox is the boundary */
	int ready_timeout_ms;        /* ws-agent readiness bound */
	int context_timeout_ms;      /* ws-agent's wait for the context file */

	/* Settings -> sandbox (issue 3). */
	int config_ttl_s;            /* a cached session config older than this is re-assembled */
	int write_parallel;          /* bound on concurrent file writes into one sandbox */
	char npm_path[4096];         /* npm binary for MCP package installs ("npm" = PATH) */
	char npm_cache_dir[4096];    /* "" = DATA/npm, or /var/cache/cortex/<hash>/npm when the
	                                sandbox uid cannot reach the data dir */
	uint64_t npm_cache_max;      /* bytes; 0 = unlimited */
} config;

void config_defaults(config *c);
/* Merge a JSON config file into c. */
int config_load_file(config *c, const char *path, cx_err *err);
/* Parse argv over c (may read --config first).  Returns 1 if --help was printed. */
int config_parse_args(config *c, int argc, char **argv, cx_err *err);
/* Fill derived values (absolute data dir, provider from env, binary paths). */
int config_finish(config *c, const char *argv0, cx_err *err);

#endif
