/* pv_fwd.c — which headers a preview port passes on (pv_fwd.h). */
#include "pv_fwd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "caps.h"
#include "owner.h"

/* Never passed on, either way: hop-by-hop (RFC 9110 7.6.1), and the proxy's
 * own credentials (consumed by the hop they were meant for). */
static const char *const hop_by_hop[] = {
    "connection:",
    "keep-alive:",
    "proxy-connection:",
    "te:",
    "trailer:",
    "transfer-encoding:",
    "upgrade:",
    "proxy-authorization:",
    "proxy-authenticate:",
};

/* Never passed inside from a request: what cortexd itself writes for the
 * server inside (X-Forwarded-*), or says between nodes (X-Cortex-*). */
static const char *const req_prefix_skip[] = {"x-cortex-", "x-forwarded-"};
static const char *const req_skip[] = {"forwarded:", "x-real-ip:"};

#if !defined(LWS_HAS_HDR_CUSTOM_NAME_FOREACH)
/* An lws without lws_hdr_custom_name_foreach: only these names pass. */
static const char *const req_fixed[] = {
    "x-requested-with:", "x-csrf-token:",   "x-xsrf-token:",   "access-control-request-method:",
    "sec-fetch-site:",	 "sec-fetch-mode:", "sec-fetch-dest:", "sec-fetch-user:",
};
static const char *const resp_fixed[] = {
    "x-request-id:",
    "x-powered-by:",
    "x-frame-options:",
    "x-content-type-options:",
    "x-xss-protection:",
    "referrer-policy:",
    "permissions-policy:",
    "content-security-policy:",
    "access-control-allow-credentials:",
    "access-control-expose-headers:",
    "access-control-allow-methods:",
    "access-control-allow-headers:",
    "access-control-max-age:",
};
#endif

#define SEEN_CAP 4096 /* names already passed (a repeat passes once) */

struct fe {
	struct lws *wsi;
	pv_fwd_cb cb;
	void *arg;
	int request;
	char conn[512]; /* the Connection header's value, lower case */
	char seen[SEEN_CAP];
	size_t seen_len;
};

static int is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* name ("x-foo:") is one of the comma-separated tokens of conn. */
static int in_connection(const char *conn, const char *name, size_t nl)
{
	for (const char *p = conn; *p;) {
		p += strspn(p, " \t,");
		size_t tl = strcspn(p, " \t,");
		if (tl && tl == nl - 1 && !strncasecmp(p, name, tl))
			return 1;
		p += tl;
	}
	return 0;
}

static int skipped(const struct fe *f, const char *name, size_t nl)
{
	for (size_t i = 0; i < sizeof hop_by_hop / sizeof hop_by_hop[0]; i++)
		if (!strcmp(name, hop_by_hop[i]))
			return 1;
	if (in_connection(f->conn, name, nl))
		return 1;
	if (!f->request)
		return 0;
	for (size_t i = 0; i < sizeof req_prefix_skip / sizeof req_prefix_skip[0]; i++)
		if (!strncmp(name, req_prefix_skip[i], strlen(req_prefix_skip[i])))
			return 1;
	for (size_t i = 0; i < sizeof req_skip / sizeof req_skip[0]; i++)
		if (!strcmp(name, req_skip[i]))
			return 1;
	return 0;
}

/* One custom header's name (lower case, with its ':'; not NUL-terminated). */
static void one(const char *nm, int nlen, void *opaque)
{
	struct fe *f = opaque;
	char name[128];
	if (nlen < 2 || (size_t)nlen >= sizeof name || nm[nlen - 1] != ':')
		return;
	memcpy(name, nm, (size_t)nlen);
	name[nlen] = '\0';
	for (int i = 0; i < nlen - 1; i++)
		if (!is_tchar((unsigned char)name[i]))
			return;
	if (skipped(f, name, (size_t)nlen))
		return;
	for (size_t o = 0; o < f->seen_len; o += strlen(f->seen + o) + 1)
		if (!strcmp(f->seen + o, name))
			return;
	if (f->seen_len + (size_t)nlen + 1 <= sizeof f->seen) {
		memcpy(f->seen + f->seen_len, name, (size_t)nlen + 1);
		f->seen_len += (size_t)nlen + 1;
	}
	int vl = lws_hdr_custom_length(f->wsi, name, nlen);
	if (vl < 0 || vl > (int)CX_CAP_HTTP_HEAD + 2048)
		return;
	char *v = malloc((size_t)vl + 1);
	if (!v)
		return;
	if (lws_hdr_custom_copy(f->wsi, v, vl + 1, name, nlen) >= 0 && !strpbrk(v, "\r\n"))
		f->cb(f->arg, name, v);
	free(v);
}

static void each_custom(struct lws *wsi, int request, pv_fwd_cb cb, void *arg)
{
	struct fe *f = malloc(sizeof *f);
	if (!f)
		return;
	f->wsi = wsi;
	f->cb = cb;
	f->arg = arg;
	f->request = request;
	f->seen_len = 0;
	if (lws_hdr_copy(wsi, f->conn, sizeof f->conn, WSI_TOKEN_CONNECTION) < 0)
		f->conn[0] = '\0';
#if defined(LWS_HAS_HDR_CUSTOM_NAME_FOREACH)
	lws_hdr_custom_name_foreach(wsi, one, f);
#else
	const char *const *list = request ? req_fixed : resp_fixed;
	size_t n = request ? sizeof req_fixed / sizeof req_fixed[0]
			   : sizeof resp_fixed / sizeof resp_fixed[0];
	for (size_t i = 0; i < n; i++)
		one(list[i], (int)strlen(list[i]), f);
#endif
	free(f);
}

void pv_fwd_request_custom(struct lws *wsi, pv_fwd_cb cb, void *arg)
{
	each_custom(wsi, 1, cb, arg);
}

void pv_fwd_response_custom(struct lws *wsi, pv_fwd_cb cb, void *arg)
{
	each_custom(wsi, 0, cb, arg);
}

void pv_fwd_client(struct lws *wsi, char *xff, size_t xcap, char *host, size_t hcap)
{
	char peer[64] = "", hop[8];
	lws_get_peer_simple(wsi, peer, sizeof peer);
	int node = lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) > 0 &&
		   owner_cache_is_node_addr(peer);
	char *sent = malloc(xcap);
	int sl = sent ? lws_hdr_copy(wsi, sent, (int)xcap, WSI_TOKEN_X_FORWARDED_FOR) : -1;
	if (node && sl > 0)
		snprintf(xff, xcap, "%s", sent);
	else if (sl <= 0 || (size_t)snprintf(xff, xcap, "%s, %s", sent, peer) >= xcap)
		snprintf(xff, xcap, "%s", peer); /* none sent, or too long to add to */
	free(sent);
	host[0] = '\0';
	if (!node || lws_hdr_custom_copy(wsi, host, (int)hcap, "x-forwarded-host:", 17) <= 0)
		if (lws_hdr_copy(wsi, host, (int)hcap, WSI_TOKEN_HOST) < 0)
			host[0] = '\0';
}
