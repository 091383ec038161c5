/* policy.c — parse and match egress policies (policy.h). */
#include "policy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress.h"

enum ent_kind { ENT_HOST, ENT_SUFFIX, ENT_NET };

struct pol_entry {
	enum ent_kind kind;
	char host[254]; /* ENT_HOST: the name; ENT_SUFFIX: ".domain" */
	int port;	/* 0 = any */
	int af;		/* ENT_NET: AF_INET / AF_INET6 */
	unsigned char net[16];
	int prefix;
	char text[272]; /* normalised, for rules and GET */
};

struct egress_policy {
	atomic_int refs;
	int mode;
	size_t n[2]; /* 0 allow, 1 deny */
	struct pol_entry *e[2];
};

const char *pol_mode_name(int mode)
{
	return mode == EGRESS_MODE_NONE	       ? "none"
	       : mode == EGRESS_MODE_ALLOWLIST ? "allowlist"
					       : "open";
}

int pol_mode(const struct egress_policy *p)
{
	return p->mode;
}

struct egress_policy *pol_new_mode(int mode)
{
	struct egress_policy *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	atomic_init(&p->refs, 1);
	p->mode = mode;
	return p;
}

struct egress_policy *pol_ref(struct egress_policy *p)
{
	if (p)
		atomic_fetch_add(&p->refs, 1);
	return p;
}

void pol_unref(struct egress_policy *p)
{
	if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	free(p->e[0]);
	free(p->e[1]);
	free(p);
}

static int is_label_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

int pol_norm_host(const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	if (n && in[n - 1] == '.')
		n--;
	if (n == 0 || n >= cap || n > 253)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[n] = 0;
	unsigned char a[16];
	if (inet_pton(AF_INET6, out, a) == 1 || inet_pton(AF_INET, out, a) == 1)
		return 0;
	/* A hostname: labels of [a-z0-9_-], 1..63 bytes, no leading/trailing '-'. */
	size_t lab = 0;
	for (size_t i = 0; i <= n; i++) {
		char c = out[i];
		if (c == '.' || c == 0) {
			if (lab == 0 || lab > 63 || out[i - 1] == '-' || out[i - lab] == '-')
				return -1;
			lab = 0;
		} else if (!is_label_char((unsigned char)c)) {
			return -1;
		} else {
			lab++;
		}
	}
	return 0;
}

int pol_host_match(const char *pattern, const char *name)
{
	if (pattern[0] == '*' && pattern[1] == '.') {
		size_t pl = strlen(pattern + 1), nl = strlen(name); /* ".domain" */
		return nl > pl && !strcmp(name + nl - pl, pattern + 1);
	}
	return !strcmp(pattern, name);
}

static int parse_port(const char *s, int *port)
{
	if (!*s || strlen(s) > 5)
		return -1;
	long v = 0;
	for (const char *q = s; *q; q++) {
		if (!isdigit((unsigned char)*q))
			return -1;
		v = v * 10 + (*q - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

static int set_net(struct pol_entry *e, const char *addr, int prefix)
{
	if (inet_pton(AF_INET, addr, e->net) == 1)
		e->af = AF_INET;
	else if (inet_pton(AF_INET6, addr, e->net) == 1)
		e->af = AF_INET6;
	else
		return -1;
	int max = e->af == AF_INET ? 32 : 128;
	if (prefix < 0)
		prefix = max;
	if (prefix > max)
		return -1;
	e->prefix = prefix;
	e->kind = ENT_NET;
	return 0;
}

/* One entry string into e; -1 with a reason in err. */
static int parse_entry(const char *s, struct pol_entry *e, cx_err *err)
{
	char buf[272];
	size_t n = strlen(s);
	if (n == 0 || n >= sizeof buf - 8)
		return cx_err_set(err, EINVAL, "entry '%.64s': empty or over 263 bytes", s);
	memcpy(buf, s, n + 1);
	memset(e, 0, sizeof *e);
	char *slash = strchr(buf, '/');
	if (slash) { /* CIDR, any port */
		*slash = 0;
		int prefix;
		if (parse_port(slash + 1, &prefix) < 0 && strcmp(slash + 1, "0"))
			return cx_err_set(err, EINVAL, "entry '%.64s': bad prefix length", s);
		if (!strcmp(slash + 1, "0"))
			prefix = 0;
		if (set_net(e, buf, prefix) < 0)
			return cx_err_set(err, EINVAL, "entry '%.64s': not a CIDR (addr/len)", s);
		char ab[INET6_ADDRSTRLEN];
		inet_ntop(e->af, e->net, ab, sizeof ab);
		snprintf(e->text, sizeof e->text, "%s/%d", ab, e->prefix);
		return 0;
	}
	char *host = buf, *port = NULL;
	if (buf[0] == '[') { /* [v6]:port */
		char *end = strchr(buf, ']');
		if (!end || (end[1] && end[1] != ':'))
			return cx_err_set(err, EINVAL, "entry '%.64s': bad [v6]:port", s);
		*end = 0;
		host = buf + 1;
		port = end[1] ? end + 2 : NULL;
	} else if (strchr(buf, ':') == strrchr(buf, ':') &&
		   strchr(buf, ':')) { /* one ':' = host:port */
		port = strchr(buf, ':');
		*port++ = 0;
	}
	if (port && parse_port(port, &e->port) < 0)
		return cx_err_set(err, EINVAL, "entry '%.64s': bad port (1-65535)", s);
	int wild = host[0] == '*' && host[1] == '.';
	char norm[254];
	if (pol_norm_host(wild ? host + 2 : host, norm, sizeof norm) < 0)
		return cx_err_set(err, EINVAL,
				  "entry '%.64s': not a hostname, *.domain, IP or CIDR", s);
	/* An IP after normalising ("1.2.3.4.", "[::.]"): an address entry, not a
	 * name that would print as an entry that does not parse ("::" with a port). */
	if (!wild && set_net(e, norm, -1) == 0) {
		char ab[INET6_ADDRSTRLEN];
		inet_ntop(e->af, e->net, ab, sizeof ab);
		if (e->port)
			snprintf(e->text, sizeof e->text, e->af == AF_INET6 ? "[%s]:%d" : "%s:%d",
				 ab, e->port);
		else
			snprintf(e->text, sizeof e->text, "%s", ab);
		return 0;
	}
	e->kind = wild ? ENT_SUFFIX : ENT_HOST;
	snprintf(e->host, sizeof e->host, "%s%s", wild ? "*." : "", norm);
	if (e->port)
		snprintf(e->text, sizeof e->text, "%s:%d", e->host, e->port);
	else
		snprintf(e->text, sizeof e->text, "%s", e->host);
	return 0;
}

static int parse_list(json_t *a, const char *what, struct pol_entry **out, size_t *n, cx_err *err)
{
	*out = NULL;
	*n = 0;
	if (!a)
		return 0;
	if (!json_is_array(a))
		return cx_err_set(err, EINVAL, "'%s' must be an array of strings", what);
	size_t len = json_array_size(a);
	if (len > POL_MAX_ENTRIES)
		return cx_err_set(err, E2BIG, "'%s' has %zu entries (at most %d)", what, len,
				  POL_MAX_ENTRIES);
	if (len == 0)
		return 0;
	struct pol_entry *e = calloc(len, sizeof *e);
	if (!e)
		return cx_err_set(err, ENOMEM, "policy");
	for (size_t i = 0; i < len; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_string(v)) {
			free(e);
			return cx_err_set(err, EINVAL, "'%s[%zu]' must be a string", what, i);
		}
		if (parse_entry(json_string_value(v), &e[i], err) < 0) {
			free(e);
			return cx_err_wrap(err, "'%s[%zu]'", what, i);
		}
	}
	*out = e;
	*n = len;
	return 0;
}

struct egress_policy *pol_parse(json_t *o, int mode_default, cx_err *err)
{
	if (!json_is_object(o)) {
		cx_err_set(err, EINVAL, "a policy is an object {\"mode\",\"allow\",\"deny\"}");
		return NULL;
	}
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		if (strcmp(k, "mode") && strcmp(k, "allow") && strcmp(k, "deny")) {
			cx_err_set(err, EINVAL, "unknown field '%.64s' (mode, allow, deny)", k);
			return NULL;
		}
	}
	int mode = mode_default;
	json_t *m = json_object_get(o, "mode");
	if (m) {
		const char *ms = json_string_value(m);
		if (ms && !strcmp(ms, "none"))
			mode = EGRESS_MODE_NONE;
		else if (ms && !strcmp(ms, "allowlist"))
			mode = EGRESS_MODE_ALLOWLIST;
		else if (ms && !strcmp(ms, "open"))
			mode = EGRESS_MODE_OPEN;
		else {
			cx_err_set(err, EINVAL,
				   "'mode' must be \"none\", \"allowlist\" or \"open\"");
			return NULL;
		}
	}
	struct egress_policy *p = pol_new_mode(mode);
	if (!p) {
		cx_err_set(err, ENOMEM, "policy");
		return NULL;
	}
	if (parse_list(json_object_get(o, "allow"), "allow", &p->e[0], &p->n[0], err) < 0 ||
	    parse_list(json_object_get(o, "deny"), "deny", &p->e[1], &p->n[1], err) < 0) {
		pol_unref(p);
		return NULL;
	}
	return p;
}

json_t *pol_to_json(const struct egress_policy *p)
{
	json_t *o = json_pack("{s:s, s:[], s:[]}", "mode", pol_mode_name(p->mode), "allow", "deny");
	if (!o)
		return NULL;
	for (int l = 0; l < 2; l++) {
		json_t *a = json_object_get(o, l ? "deny" : "allow");
		for (size_t i = 0; i < p->n[l]; i++)
			json_array_append_new(a, json_string(p->e[l][i].text));
	}
	return o;
}

/* ---- matching ---- */

static int prefix_match(const unsigned char *a, const unsigned char *net, int prefix)
{
	int whole = prefix / 8, rest = prefix % 8;
	if (memcmp(a, net, (size_t)whole))
		return 0;
	if (!rest)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[whole] & mask) == (net[whole] & mask);
}

/* addr as (af, bytes); a v4-mapped v6 address counts as its v4. */
static int addr_bytes(const struct sockaddr *sa, unsigned char *b)
{
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET) {
		memcpy(b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (!memcmp(a6, mapped, 12)) {
			memcpy(b, a6 + 12, 4);
			return AF_INET;
		}
		memcpy(b, a6, 16);
		return AF_INET6;
	}
	return 0;
}

static int entry_match(const struct pol_entry *e, const char *name, int port, int af,
		       const unsigned char *ab)
{
	if (e->port && e->port != port)
		return 0;
	switch (e->kind) {
	case ENT_HOST:
	case ENT_SUFFIX:
		return pol_host_match(e->host, name);
	case ENT_NET: {
		unsigned char lit[16];
		int laf = inet_pton(AF_INET, name, lit) == 1	? AF_INET
			  : inet_pton(AF_INET6, name, lit) == 1 ? AF_INET6
								: 0;
		if (laf == e->af && prefix_match(lit, e->net, e->prefix))
			return 1;
		return af == e->af && prefix_match(ab, e->net, e->prefix);
	}
	}
	return 0;
}

static const struct pol_entry *list_match(const struct egress_policy *p, int l, const char *name,
					  int port, int af, const unsigned char *ab, size_t *idx)
{
	for (size_t i = 0; p && i < p->n[l]; i++)
		if (entry_match(&p->e[l][i], name, port, af, ab)) {
			*idx = i;
			return &p->e[l][i];
		}
	return NULL;
}

struct range {
	int af;
	unsigned char net[16];
	int prefix;
};

/* Every sandbox is denied these, whatever its policy says. */
static const struct range private_ranges[] = {
    {AF_INET, {0, 0, 0, 0}, 8}, /* "this network" */
    {AF_INET, {10, 0, 0, 0}, 8},
    {AF_INET, {100, 64, 0, 0}, 10}, /* CGNAT; also Alibaba's metadata 100.100.100.200 */
    {AF_INET, {127, 0, 0, 0}, 8},
    {AF_INET, {169, 254, 0, 0}, 16}, /* link-local: cloud metadata 169.254.169.254 */
    {AF_INET, {172, 16, 0, 0}, 12},
    {AF_INET, {192, 0, 0, 0}, 24}, /* IETF protocol assignments */
    {AF_INET, {192, 168, 0, 0}, 16},
    {AF_INET, {198, 18, 0, 0}, 15},	      /* benchmarking */
    {AF_INET, {224, 0, 0, 0}, 3},	      /* multicast, reserved, broadcast */
    {AF_INET6, {0}, 127},		      /* :: and ::1 */
    {AF_INET6, {0x00, 0x64, 0xff, 0x9b}, 96}, /* NAT64: would reach any v4 */
    {AF_INET6, {0x01, 0x00}, 64},	      /* discard-only */
    {AF_INET6, {0x20, 0x02}, 16},	      /* 6to4: would reach any v4 */
    {AF_INET6, {0xfc}, 7},		      /* unique local: AWS metadata fd00:ec2::254 */
    {AF_INET6, {0xfe, 0x80}, 10},	      /* link-local */
    {AF_INET6, {0xfe, 0xc0}, 10},	      /* site-local (deprecated) */
    {AF_INET6, {0xff}, 8},		      /* multicast */
};

static int bytes_private(int af, const unsigned char *b)
{
	for (size_t i = 0; i < sizeof private_ranges / sizeof private_ranges[0]; i++)
		if (private_ranges[i].af == af &&
		    prefix_match(b, private_ranges[i].net, private_ranges[i].prefix))
			return 1;
	return 0;
}

int pol_addr_private(const struct sockaddr *addr)
{
	unsigned char b[16];
	int af = addr_bytes(addr, b);
	return af ? bytes_private(af, b) : 1;
}

enum pol_decision pol_decide(const struct egress_policy *p, const struct egress_policy *exceptions,
			     const char *name, int port, const struct sockaddr *addr, char *rule,
			     size_t cap)
{
	unsigned char b[16];
	int af = addr_bytes(addr, b);
	size_t i;
	if (!af || bytes_private(af, b)) {
		const struct pol_entry *x = list_match(exceptions, 0, name, port, af, b, &i);
		if (!x) {
			char ab[INET6_ADDRSTRLEN] = "?";
			if (af)
				inet_ntop(af, b, ab, sizeof ab);
			snprintf(rule, cap,
				 "private address %s (always denied; an operator may except it: "
				 "egress.allow_private)",
				 ab);
			return POL_DENY;
		}
	}
	if (p->mode == EGRESS_MODE_NONE) {
		snprintf(rule, cap, "mode none");
		return POL_DENY;
	}
	const struct pol_entry *e = list_match(p, 1, name, port, af, b, &i);
	if (e) {
		snprintf(rule, cap, "deny[%zu] %s", i, e->text);
		return POL_DENY;
	}
	if (p->mode == EGRESS_MODE_OPEN) {
		snprintf(rule, cap, "mode open");
		return POL_ALLOW;
	}
	e = list_match(p, 0, name, port, af, b, &i);
	if (e) {
		snprintf(rule, cap, "allow[%zu] %s", i, e->text);
		return POL_ALLOW;
	}
	snprintf(rule, cap, "not in the allow list (mode allowlist)");
	return POL_DENY;
}

int pol_denied_by_name(const struct egress_policy *p, const char *name, int port, char *rule,
		       size_t cap)
{
	unsigned char none[16] = {0};
	size_t i;
	if (p->mode == EGRESS_MODE_NONE) {
		snprintf(rule, cap, "mode none");
		return 1;
	}
	for (i = 0; i < p->n[1]; i++) {
		const struct pol_entry *e = &p->e[1][i];
		if (e->kind != ENT_NET && entry_match(e, name, port, 0, none)) {
			snprintf(rule, cap, "deny[%zu] %s", i, e->text);
			return 1;
		}
	}
	if (p->mode == EGRESS_MODE_ALLOWLIST) {
		for (i = 0; i < p->n[0]; i++) {
			const struct pol_entry *e = &p->e[0][i];
			if (e->kind == ENT_NET || entry_match(e, name, port, 0, none))
				return 0; /* a CIDR may still match an address */
		}
		snprintf(rule, cap, "not in the allow list (mode allowlist)");
		return 1;
	}
	return 0;
}

int egress_policy_check_json(json_t *policy, cx_err *err)
{
	struct egress_policy *p = pol_parse(policy, EGRESS_MODE_OPEN, err);
	if (!p)
		return -1;
	pol_unref(p);
	return 0;
}

json_t *egress_policy_normalise(json_t *policy)
{
	cx_err err = CX_ERR_INIT;
	struct egress_policy *p = pol_parse(policy, EGRESS_MODE_OPEN, &err);
	json_t *o = p ? pol_to_json(p) : NULL;
	pol_unref(p);
	return o;
}

int pol_excepted(const struct egress_policy *exceptions, const char *name, int port, const struct sockaddr *addr)
{
	unsigned char b[16];
	int af = addr_bytes(addr, b);
	size_t i;
	return list_match(exceptions, 0, name, port, af, b, &i) != NULL;
}
