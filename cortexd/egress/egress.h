/* egress.h — the sandboxes' only way out: an HTTP proxy (absolute-form
 * requests and CONNECT tunnels) in cortexd, under a per-user (or per-session)
 * policy, with credentials brokered from outside (docs/network.md).
 *
 *   sandbox process ──TCP──▶ 127.0.0.1:<egress port> (HTTP(S)_PROXY, the sandbox's lo)
 *                    ws-agent forward.c ── fd 6: O_PATH of DATA/sock/@egress.sock
 *   cortexd egress thread: accept, SO_PEERCRED uid → the session bound to that
 *   uid (each session has its own uid), policy check on the name and on every
 *   address it resolves to, connect, tunnel; audit line + metrics per decision.
 *
 * Threads: egress_start() runs an accept thread and workers, each serving one
 * proxied connection at a time (capped globally and per session).  The table of bindings,
 * policies and brokered secrets is guarded by one mutex; everything here may
 * be called from any thread. */
#ifndef CORTEX_EGRESS_H
#define CORTEX_EGRESS_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "cx.h"

#define EGRESS_SOCK	  "@egress.sock" /* in DATA/sock (JOBS_SOCK_DIR), like @gateway.sock */
#define EGRESS_AUDIT_FILE "egress.log"	 /* in DATA/sessions/<id>/: the audit trail (JSON lines) */

struct egress_opts {
	int sock_dirfd;		    /* DATA/sock, root-only: the listener is bound in it */
	int default_mode;	    /* EGRESS_MODE_*: a user without a policy */
	unsigned max_conns;	    /* proxied connections at once, all sessions */
	unsigned max_conns_session; /* ... per session (429 past it) */
	unsigned max_conns_user;    /* ... of all sessions of one user (429 past it; 0 = none) */
	int connect_timeout_ms;	    /* resolve + connect to the upstream */
	int head_timeout_ms;	    /* the client's request head must arrive within it */
	json_t *allow_private;	    /* operator's exceptions to the always-denied ranges
				       (array of policy entries; borrowed, copied) */
	const char *ca_dir;	    /* where the broker's CA lives (created 0700) */
	const char
	    *upstream_ca_file; /* extra CA the broker trusts upstream (tests); NULL = system only */
};

enum { EGRESS_MODE_NONE, EGRESS_MODE_ALLOWLIST, EGRESS_MODE_OPEN };

int egress_start(const struct egress_opts *o, cx_err *err);
/* Stops accepting, shuts every proxied connection down and joins them. */
void egress_stop(void);
int egress_running(void);

/* uid → session: the sandbox of session sid (owned by user) runs as uid.
 * audit_path: the session's audit trail (JSON lines, root-only dir). */
int egress_bind(uid_t uid, const char *sid, const char *user, const char *audit_path, cx_err *err);
void egress_unbind(uid_t uid);

/* Policies ({"mode","allow","deny"}, validated by egress_policy_check_json):
 * a session's own wins over its user's, which wins over the default.
 * NULL removes.  Applies to the next connection. */
int egress_set_user_policy(const char *user, json_t *policy, cx_err *err);
int egress_set_session_policy(const char *sid, json_t *policy, cx_err *err);
int egress_user_policy_known(const char *user); /* loaded once per user by the caller */

/* Brokered secrets of a user: the sandbox holds `placeholder`; requests to
 * one of `hosts` get it replaced by `value` in their headers.  Replaces the
 * user's whole set (entries: {"placeholder","value","hosts":[...]}). */
int egress_set_user_broker(const char *user, json_t *entries, cx_err *err);
int egress_user_broker_known(const char *user); /* set once since start (even empty) */

/* The last `limit` lines of a session's audit trail, oldest first (a JSON
 * array; empty when there is none). */
json_t *egress_audit_read(const char *path, size_t limit);

/* 400-worthy problems of a policy body, as a message; 0 if fine. */
int egress_policy_check_json(json_t *policy, cx_err *err);

/* The policy as stored and shown: entries normalised; NULL if invalid. */
json_t *egress_policy_normalise(json_t *policy);

/* The CA certificate (PEM) sandboxes trust for brokered hosts; NULL before start. */
const char *egress_ca_pem(void);
/* What a sandbox trusts, written to dir (0755, files 0644, each replaced
 * atomically) for a read-only bind at EGRESS_TRUST_MOUNT: ca.pem (the CA) and
 * bundle.pem (host_bundle's certificates, then the CA).  Needs a CA. */
#define EGRESS_TRUST_MOUNT "/cortex/ca"
int egress_write_trust(const char *dir, const char *host_bundle, cx_err *err);

/* Its /metrics writer is registered by egress_start() (metrics.h). */

/* ---- the broker's TLS side (mitm.c) ---- */

/* One brokered header swap: every occurrence of placeholder in the request
 * head becomes value. */
struct mitm_swap {
	const char *placeholder;
	const char *value;
};
struct mitm_stats {
	uint64_t up, down; /* bytes from the sandbox / from the upstream (plaintext) */
	unsigned swapped;  /* placeholders replaced */
};
struct mitm_ca;
/* Load the installation's CA from dir (ca.key 0600, ca.pem), or create it
 * there on first use (dir made 0700 if missing). */
int mitm_ca_open(const char *dir, struct mitm_ca **out, cx_err *err);
void mitm_ca_free(struct mitm_ca *ca);
const char *mitm_ca_pem(const struct mitm_ca *ca);
/* Serve one intercepted CONNECT tunnel: TLS server to the sandbox on cfd
 * with a leaf for host minted by ca (cached), TLS client to the upstream on
 * ufd (verified against the system store plus upstream_ca_file, SNI host);
 * the request head gets the swaps, then bytes flow both ways until either
 * side closes.  Blocking; run on the connection's own thread.  Caps: a head
 * of 64 KiB. */
int mitm_relay(struct mitm_ca *ca, int cfd, int ufd, const char *host, const struct mitm_swap *sw,
	       size_t nsw, const char *upstream_ca_file, struct mitm_stats *st, cx_err *err);

#endif
