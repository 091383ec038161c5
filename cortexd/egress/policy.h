/* policy.h — egress policies: {"mode","allow":[...],"deny":[...]} parsed once,
 * then matched per connection (docs/network.md "Policy").
 *
 * Entries: "host" (exact, any port), "*.domain" (any name below domain, not
 * domain itself), either with ":port"; an IP ("1.2.3.4", "::1", "[::1]:443")
 * with an optional port; a CIDR ("10.0.0.0/8", "fd00::/8", any port).
 * Names match the name the client asked for; IPs and CIDRs match the name
 * when it is a literal and every address the proxy resolved it to.
 *
 * A decision for (name, port, one resolved address), in order:
 *   1. the address is in a range every sandbox is denied (loopback, private,
 *      link-local incl. cloud metadata, CGNAT, multicast, reserved; v4-mapped
 *      and NAT64 v6 by their v4) unless the operator's exceptions match;
 *   2. mode none: deny;  3. a deny entry matches: deny;
 *   4. mode open: allow;  allowlist: allow iff an allow entry matches.
 * Every decision names its rule. */
#ifndef CORTEX_EGRESS_POLICY_H
#define CORTEX_EGRESS_POLICY_H

#include <jansson.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cx.h"

#define POL_MAX_ENTRIES 256 /* per list */
#define POL_RULE_MAX	320 /* a decision's rule text */

struct egress_policy; /* immutable once parsed; refcounted */

/* Parse and validate; mode_default applies when "mode" is absent (the
 * operator's exceptions list is parsed with it as a plain "allow" list). */
struct egress_policy *pol_parse(json_t *o, int mode_default, cx_err *err);
/* A policy of just a mode (defaults). */
struct egress_policy *pol_new_mode(int mode);
struct egress_policy *pol_ref(struct egress_policy *p);
void pol_unref(struct egress_policy *p);
int pol_mode(const struct egress_policy *p);
const char *pol_mode_name(int mode);
/* The policy back as JSON (normalised entries). */
json_t *pol_to_json(const struct egress_policy *p);

enum pol_decision { POL_ALLOW, POL_DENY };

/* name: lowercase, no trailing dot (pol_norm_host); addr: one resolved address.
 * exceptions: the operator's allow_private list (may be NULL).  rule gets
 * e.g. "deny[2] *.example.com", "mode none", "not in allow list",
 * "private address 10.0.0.1 (always denied)". */
enum pol_decision pol_decide(const struct egress_policy *p, const struct egress_policy *exceptions,
			     const char *name, int port, const struct sockaddr *addr, char *rule,
			     size_t cap);
/* Would name:port be denied whatever it resolves to? (mode none, a deny name
 * entry, an allowlist no name/CIDR entry could match): saves a lookup. */
int pol_denied_by_name(const struct egress_policy *p, const char *name, int port, char *rule,
		       size_t cap);
/* Does the operator's exceptions list name (name, port, addr)? */
int pol_excepted(const struct egress_policy *exceptions, const char *name, int port, const struct sockaddr *addr);
/* Is addr in an always-denied range? */
int pol_addr_private(const struct sockaddr *addr);

/* Lowercase, strip one trailing dot, check it is a hostname or an IP
 * literal (v6 without brackets); -1 if not. */
int pol_norm_host(const char *in, char *out, size_t cap);
/* Does `name` match pattern "host" / "*.domain" (no port)? */
int pol_host_match(const char *pattern, const char *name);

#endif
