/* config.h — cortexd's settings: built-in defaults, then the JSON file given
 * with --config, then command-line flags (last wins). */
#ifndef CORTEX_CONFIG_H
#define CORTEX_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "cx.h"

/* A surface profile: what a chat IDE and a voice client each need. */
enum { SURF_CHAT, SURF_VOICE, SURF_N };
/* The one place surface and path names are spelled. */
const char *surface_name(int surface);           /* "chat" | "voice" */
int surface_of_name(const char *name);            /* SURF_*, or -1 */
/* A turn's path: what it had to wait for. */
enum turn_path { PATH_WARM, PATH_COLD, PATH_CONFIG_CHANGED, PATH_N };
const char *turn_path_name(enum turn_path p);     /* "warm" | "cold" | "config_changed" */
int turn_path_of_name(const char *name);          /* PATH_*, or -1 */
struct surface_profile {
	char name[8];                /* "chat" | "voice" */
	int first_token_budget_ms;   /* tracked: turns over it are counted in /metrics */
	int response_budget_ms;      /* full response; tracked the same way */
	char model[128];             /* "" = the user's / provider's model */
	int idle_agent_s;            /* release a hot agent idle this long (0 = never) */
	int idle_pause_s;            /* freeze the sandbox after this much idle time (0 = never) */
	int idle_sleep_s;            /* stop it (default for sessions that give none; 0 = never) */
	int sentences;               /* streaming mode: also send cortex.sentence frames */
};

/* Price of a model, USD per million tokens (the per-turn cost estimate). */
struct model_price {
	char model[128];
	double input, output, cache_read, cache_write;
};
#define CFG_MAX_PRICES 32

/* Where `make image` (container/build-default.sh) leaves the default image. */
#define CONFIG_MACHINE_DEFAULT_IMAGE "/var/cache/cortex/images/default"

typedef struct config {
	char listen_host[256];
	int listen_port;             /* 0 = pick a free one and print it */
	char data_dir[4096];         /* absolute after config_finish() */
	char store_kind[16];         /* "sqlite" | "etcd" */
	char etcd_endpoints[1024];
	size_t etcd_max_request_bytes; /* etcd's --max-request-bytes; 0 = its default, 1.5 MiB */
	char etcd_namespace[65];       /* key prefix in etcd, ends with '/'; "" = "cortex/" */
	/* Scale-out (etcd): this node's id and URL, its lease TTL (owner.h) */
	char node_id[101];             /* "" = hostname:port */
	char node_advertise_url[400];  /* "" = http://LISTEN */
	int node_lease_ttl_s;          /* 0 = 10 */
	int cluster_redirect;          /* "cluster": {"forward": "redirect"}: 307 to the owner, else proxy */
	int cluster_proxy_timeout_ms;  /* "cluster.proxy_timeout_ms": 0 = 5000 (connect; a WebSocket's upgrade) */
	char sessions_dir[4096];       /* "" = DATA/sessions; shared by every node with etcd */
	int log_json;
	int check_only;                /* --check-config: validate, print, exit */

	/* The model provider for users who configured none. */
	char provider_base_url[1024];
	char provider_api_key[1024];
	char provider_model[128];

	/* Sandboxes. */
	uid_t sandbox_uid;
	gid_t sandbox_gid;
	uint64_t sandbox_memory_max;
	uint64_t sandbox_pids_max;
	bool sandbox_net_isolated;   /* own netns with only lo (default); the agent reaches the
	                                gateway through ws-agent's forwarder (issue 12) */
	uid_t sandbox_uid_base;      /* each session runs as its own uid (= gid) from */
	uint32_t sandbox_uid_count;  /* [uid_base, uid_base + uid_count) */
	uint64_t sandbox_disk_mb;    /* a session's disk (home, /workspace, root upper) by default */
	uint64_t sandbox_disk_max_mb;/* the most a session may ask for (limits.disk_mb) */
	uint32_t sandbox_cpu_weight; /* cgroup cpu weight 1..10000 (100 = the kernel's default) */
	uint32_t sandbox_cpu_max_millicpu; /* 0 = no cap; 1000 = one CPU */
	int sandbox_workers;         /* threads for sandbox jobs (create, stop, freeze, sync) */
	int repo_allow_private;      /* repo checkouts may reach loopback/private hosts (tests,
	                                on-premises git servers) */
	int sandbox_allow_host_root; /* sessions may ask for {"image":"host"}: the host's root
	                                read-only (today's mode before images; benchmarks) */
	char ws_agent_path[4096];    /* host path of the ws-agent binary */
	char ws_agent_rt[4096];      /* its bundle with loader and libraries (default: next to it) */
	bool ws_agent_static;        /* the bundle has no lib/ld.so: a static ws-agent, run as is */
	char agent_dir[4096];        /* host dir bound at /cortex/agent */
	char agent_command[4096];    /* path inside the sandbox of the agent binary */
	int agent_command_set;       /* configured: used even where the image has its own claude */
	char agent_permission_mode[32]; /* Claude Code --permission-mode; the sandbox is the boundary */
	int ready_timeout_ms;        /* ws-agent readiness bound */
	int context_timeout_ms;      /* ws-agent's wait for the context file */
	int agent_handshake;         /* agent answers an initialize control_request (Claude Code
	                                does); 0 = hot as soon as it is spawned */
	int agent_start_timeout_ms;  /* spawn -> handshake answered, bounded */
	int agent_max_booting;       /* agents booting at once, all sessions (the rest wait in line) */
	int agent_boot_tries;        /* boots of one agent that time out before the session fails */
	int turn_grace_s;            /* a turn with no client left is cancelled after this */
	size_t ws_client_queue_max_bytes; /* frame bytes queued to one client past which it is cut
	                                     off (1008 "client too slow"), docs/reliability.md */
	struct surface_profile surfaces[SURF_N];

	/* The model gateway (gateway.h): agents reach the provider only through it. */
	int gateway_enabled;         /* 0: the provider's URL and key go into the sandbox (old way) */
	char gateway_host[256];
	int gateway_port;            /* 0 = any free port */
	unsigned gateway_max_inflight;		/* requests holding a slot, in all (past it: 529) */
	unsigned gateway_max_inflight_per_user; /* ... of one user (past it: 429) */
	unsigned gateway_body_deadline_s;	/* a request body still arriving after it: closed */
	unsigned gateway_max_queued;		/* requests waiting for a slot past the pool (past it: 529) */
	unsigned gateway_queue_timeout_ms;	/* ... for this long at most (then 529) */
	struct model_price prices[CFG_MAX_PRICES];
	int n_prices;

	/* The egress proxy (cortexd/egress/, docs/network.md): with net_isolated,
	 * the sandbox's HTTP(S)_PROXY; the only way out. */
	int egress_enabled;
	int egress_port;             /* its port on the sandbox's own 127.0.0.1 */
	int egress_default_mode;     /* EGRESS_MODE_* for a user without a policy */
	char egress_allow_private[4096]; /* JSON array: the operator's exceptions to the
	                                    always-denied ranges ("127.0.0.1:8443", CIDR, host) */
	unsigned egress_max_conns;   /* proxied connections at once, all sessions */
	unsigned egress_max_conns_session;
	int egress_connect_timeout_ms;
	char egress_upstream_ca[4096]; /* extra CA the broker trusts upstream ("" = system only) */

	/* Settings -> sandbox. */
	int config_ttl_s;            /* a cached session config older than this is re-assembled */
	int write_parallel;          /* bound on concurrent file writes into one sandbox */
	char npm_path[4096];         /* npm binary for MCP package installs ("npm" = PATH) */
	char npm_cache_dir[4096];    /* "" = DATA/npm, or /var/cache/cortex/<hash>/npm when the
	                                sandbox uid cannot reach the data dir */
	uint64_t npm_cache_max;      /* bytes; 0 = unlimited */

	/* Images (docs/images.md): the store and the builder. */
	char images_dir[4096];       /* "" = DATA/images */
	uint64_t images_budget;      /* bytes; 0 = unlimited */
	char images_default[128];    /* name of the default image */
	char images_build_base[512]; /* --build-arg BASE=...; "" = none */
	uint64_t images_max_context; /* bytes of a build context or an import body */
	char images_import_dir_default[4096]; /* OCI layout imported as the default image at start if absent */
	unsigned images_max_builds;  /* concurrent builds */
	unsigned images_max_user_builds; /* concurrent builds per user */

	/* Caps on the edge's pools (config_caps.c, docs/configuration.md "Caps"). */
	unsigned http_max_conns;        /* client connections at once, all peers (503 past it) */
	unsigned http_max_conns_per_ip; /* ... from one address (429); 0 = no cap */
	char http_event_loop[8];        /* "epoll" | "poll" (lws's own loop) | "libev" | "libuv" */
	unsigned ws_max_clients_per_session; /* client WebSockets on one session (429) */
	unsigned ws_max_clients_per_user;    /* ... on all sessions of one user (429) */
	unsigned sessions_max_per_user; /* sessions one user holds (429); 0 = no cap */
	bool keep_on_crash;             /* sandboxes outlive a cortexd crash, re-adopted at start */
	unsigned keep_on_crash_grace_s; /* ... for this long; then they stop themselves */
	unsigned egress_max_conns_user; /* proxied connections of one user's sessions (429) */
	/* The files API and watches (docs/protocol.md "Files"). */
	uint64_t files_max_read;     /* bytes of one GET reply (a Range past it gets a shorter 206) */
	uint64_t files_max_write;    /* bytes of one PUT body */
	unsigned files_max_entries;  /* entries of one directory listing */
	unsigned files_max_inflight; /* operations running per session (429 past it) */
	unsigned files_max_watches;  /* inotify watches (dirs) per session */
	int files_coalesce_ms;       /* events of one path within this window are one cortex.fs frame */
	unsigned exec_max_per_session; /* commands running (or waiting to start) per session */
	unsigned exec_max_per_user;    /* ... over all of a user's sessions */
	uint64_t exec_max_output;      /* bytes of stdout and of stderr a POST .../exec reply carries */
	int exec_max_timeout_s;        /* the longest timeout_s a command may ask for */
	int exec_default_timeout_s;    /* POST .../exec without timeout_s (the WebSocket's default: none) */
} config;

void config_defaults(config *c);
/* config_caps.c: the caps' defaults, and the file's "http", "ws", "sessions"
 * sections and egress.max_conns_per_user (root: the whole file). */
void config_caps_defaults(config *c);
int config_load_caps(config *c, json_t *root, cx_err *err);
/* The profile named name, or NULL. */
const struct surface_profile *config_surface(const config *c, const char *name);
/* The price row for model (exact name, else the longest row that is a prefix of it), or NULL. */
const struct model_price *config_price(const config *c, const char *model);
/* Merge a JSON config file into c. */
int config_load_file(config *c, const char *path, cx_err *err);
/* Parse argv over c (may read --config first).  Returns 1 if --help was printed. */
int config_parse_args(config *c, int argc, char **argv, cx_err *err);
/* Fill derived values (absolute data dir, provider from env, binary paths). */
int config_finish(config *c, const char *argv0, cx_err *err);

#endif
