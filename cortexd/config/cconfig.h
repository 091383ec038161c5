/* cconfig.h — a session's assembled config and the per-session cache of it.
 *
 * Assembly (cconfig_assemble) turns one range read of "settings/<user>/"
 * into everything the sandbox and the agent need: the files to write (with
 * their hashes), the agent's extra env, the model, and the MCP package set.
 * It is a pure function of the store rows (plus the npm cache's view of which
 * packages are installed), so it is unit-tested without a daemon.
 *
 * The cache (ccache_*) keeps one assembled config per session.  A settings
 * write marks every cached config of that user dirty; an entry older than the
 * TTL (config "config_ttl_s", default 300) is re-assembled too.  A hit is a
 * pointer compare and a clock read.  Service thread only. */
#ifndef CORTEX_CCONFIG_H
#define CORTEX_CCONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "cx.h"
#include "secrets.h"
#include "store.h"

/* The AD "name" a secret / a provider key is sealed with (secrets.h): the
 * settings API seals, assembly opens. */
#define SET_AD_SECRET "secrets/"
/* The agent's PATH ends with this (after the MCP package bins); an image's
 * own PATH replaces it. */
#define CCONFIG_BASE_PATH "/usr/local/bin:/usr/bin:/bin"
#define SET_AD_PROVIDER "ai-providers/"

/* One file cortexd writes into the sandbox. */
struct cfile {
	char path[512];  /* absolute, inside the sandbox */
	char *data;
	size_t len;
	unsigned mode;   /* 0600 for credentials, 0644 otherwise */
	char hash[65];   /* sha256 hex of mode and data */
	int secret;      /* a credential file: never logged */
};

/* One MCP package a server needs. */
struct cpkg {
	char spec[300];      /* name@version */
	char key[65];        /* npm cache key once installed, "" before */
	char mount[80];      /* mount name under /cortex/mcp ("" before install) */
	char dir[4096];      /* host dir of the installed package */
};

typedef struct cconfig {
	int refs;
	struct cfile *files;
	size_t n_files;
	json_t *env;              /* object: extra env for the agent (secrets, user env, provider) */
	json_t *agent_env;        /* the agent's whole env: cortexd's defaults under env; built
	                             once per assembly by ccache_get, so a message copies nothing */
	char model[128];          /* "" = the daemon's default */
	char perm_mode[32];       /* the user's permission mode, "" = the daemon's */
	json_t *mcp;              /* the mcpServers object (as in ~/.claude.json) */
	struct cpkg *pkgs;
	size_t n_pkgs;
	size_t pkgs_missing;      /* packages not installed yet (their servers are left out) */
	char files_hash[65];      /* over every file's path and hash */
	char pkgs_hash[65];       /* over the installed package keys */
	char env_hash[65];        /* over env and model */
	char all_hash[65];        /* over the three above */
	/* What a hot agent takes by control request (docs/architecture.md, "Config
	 * change"): the model, the permission mode, the MCP servers; the rest it
	 * reads only at start.  all_hash changes when either does. */
	char live_hash[65];       /* over model, perm_mode and mcp */
	char mcp_hash[65];        /* over mcp alone */
	char base_hash[65];       /* over the files but ~/.claude.json, and env but PATH */
	int64_t revision;         /* store revision read at assembly */
	struct guard *guard;      /* the user's secret values for the stream guard (guard.h) */
	/* The user's ai-provider, never put into the sandbox when the gateway is on. */
	char prov_url[1024];      /* "" = none configured */
	char *prov_key;           /* opened key (wiped on free), NULL = none */
	size_t prov_key_len;
} cconfig;

/* Build from the rows of "settings/<user>/" (any order).  Secrets are opened
 * with k; a row that fails to open or parse is an error naming the row (the
 * message never carries a secret).  Installed packages are looked up with
 * npmcache_lookup(); pass lookup = NULL in tests to treat all as missing. */
typedef int (*cpkg_lookup_fn)(struct cpkg *p, char bin[128]); /* p->spec set; 1 = installed, key+dir filled */
int cconfig_assemble(const char *user, const store_kv *kv, size_t n, const secrets_key *k,
		     cpkg_lookup_fn lookup, cconfig **out, cx_err *err);
cconfig *cconfig_ref(cconfig *c);
void cconfig_unref(cconfig *c);

/* ---- the cache ---- */
enum ccache_how { CC_HIT, CC_MISS, CC_DIRTY, CC_EXPIRED };
struct ccache_entry {
	cconfig *cfg;       /* owned ref, or NULL */
	uint64_t at_us;     /* when assembled (monotonic) */
	int dirty;
	int64_t changed_ms; /* wall ms of the last settings write that marked it (0 = none) */
};
/* What a lookup at now_us must do. */
enum ccache_how ccache_check(const struct ccache_entry *e, uint64_t now_us, uint64_t ttl_us);
/* An empty e takes from's config (a ref, and its age) when from holds a
 * clean one: sessions of one user share an assembly instead of each reading
 * the store again (a settings write marks every one of them dirty). */
void ccache_adopt(struct ccache_entry *e, const struct ccache_entry *from);

typedef struct ccache_stats {
	uint64_t hits, misses, dirty, expired, errors;
	uint64_t assemble_us_total; /* time spent assembling (misses + reloads) */
} ccache_stats;

/* Where assembly reads from. */
struct ccache_src {
	store *st;
	const secrets_key *key;
	const struct config *cfg;
};
/* e's config for user, assembled if missing, dirty or expired.  *how says
 * which; the returned pointer is borrowed (valid until the next ccache_get or
 * ccache_drop on e; cconfig_ref it to keep it). */
cconfig *ccache_get(struct ccache_entry *e, const struct ccache_src *src, const char *user, enum ccache_how *how,
		    cx_err *err);
void ccache_drop(struct ccache_entry *e);
void ccache_get_stats(ccache_stats *out);

/* Package installs.  An install that finishes calls the hook with the user
 * whose configs may now assemble differently (service thread). */
typedef void (*ccache_user_fn)(void *arg, const char *user);
void cconfig_set_installed_hook(ccache_user_fn fn, void *arg);
/* Start installs for c's missing packages (service thread; background).
 * 1 when one of them is installed already (c is stale: re-assemble). */
int cconfig_start_installs(const cconfig *c, const char *user);
/* The install error of a package of c that failed, or NULL. */
const char *cconfig_failed_pkg(const cconfig *c, const char **spec);
/* A settings write: failed installs may be retried. */
void cconfig_forget_failures(void);
/* Assemble user's config once and start its installs (no live session). */
void cconfig_prefetch(const struct ccache_src *src, const char *user);
/* The plaintext of the user's secret `name` (secrets_free() it).  Not set:
 * ENOENT.  Thread-safe (a store read and an open). */
int cconfig_secret(store *st, const secrets_key *k, const char *user, const char *name, char **out,
		   size_t *len, cx_err *err);

#endif
