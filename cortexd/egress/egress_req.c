/* egress_req.c — the egress proxy's request line (egress_req.h). */
#include "egress_req.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy.h"

/* "host:port" / "[v6]:port" (port required when need_port, else default_port). */
static int split_hostport(const char *s, size_t len, char *host, size_t hcap, int *port,
			  int default_port)
{
	char tmp[300];
	if (len == 0 || len >= sizeof tmp)
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = 0;
	char *h = tmp, *p = NULL;
	if (tmp[0] == '[') {
		char *end = strchr(tmp, ']');
		if (!end || (end[1] && end[1] != ':'))
			return -1;
		*end = 0;
		h = tmp + 1;
		p = end[1] ? end + 2 : NULL;
	} else if ((p = strrchr(tmp, ':'))) {
		if (strchr(tmp, ':') != p)
			return -1; /* an unbracketed v6 */
		*p++ = 0;
	}
	if (p) {
		char *e;
		long v = strtol(p, &e, 10);
		if (!*p || *e || v < 1 || v > 65535)
			return -1;
		*port = (int)v;
	} else if (default_port) {
		*port = default_port;
	} else {
		return -1;
	}
	return pol_norm_host(h, host, hcap);
}

int egress_req_parse(char *buf, size_t hl, struct egress_req *r, char *why, size_t wcap)
{
	char *eol = memmem(buf, hl, "\r\n", 2);
	char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || (size_t)(sp1 - buf) >= sizeof r->method ||
	    strncmp(sp2 + 1, "HTTP/1.", 7)) {
		snprintf(why, wcap, "not an HTTP/1.x request line");
		return -1;
	}
	memcpy(r->method, buf, (size_t)(sp1 - buf));
	r->method[sp1 - buf] = 0;
	const char *target = sp1 + 1;
	size_t tlen = (size_t)(sp2 - target);
	if (!strcmp(r->method, "CONNECT")) {
		r->is_connect = 1;
		if (split_hostport(target, tlen, r->host, sizeof r->host, &r->port, 0) < 0) {
			snprintf(why, wcap, "CONNECT needs host:port");
			return -1;
		}
		return 0;
	}
	if (tlen < 8 || strncasecmp(target, "http://", 7)) {
		snprintf(why, wcap,
			 "a proxy request needs an absolute http:// URL (https: use CONNECT)");
		return -1;
	}
	const char *auth = target + 7, *path = memchr(auth, '/', tlen - 7);
	size_t alen = path ? (size_t)(path - auth) : tlen - 7;
	if (memchr(auth, '@', alen) ||
	    split_hostport(auth, alen, r->host, sizeof r->host, &r->port, 80) < 0) {
		snprintf(why, wcap, "bad host in the URL");
		return -1;
	}
	/* origin-form: METHOD /path HTTP/1.x, then the headers but the proxy's own */
	size_t cap = hl + 64;
	char *h = malloc(cap);
	if (!h) {
		snprintf(why, wcap, "out of memory");
		return -1;
	}
	size_t plen = path ? tlen - 7 - alen : 1;
	int n =
	    snprintf(h, cap, "%s %.*s %.8s\r\n", r->method, (int)plen, path ? path : "/", sp2 + 1);
	size_t o = (size_t)n;
	for (char *line = eol + 2; line < buf + hl - 2;) {
		char *e = memmem(line, (size_t)(buf + hl - line), "\r\n", 2);
		size_t ll = (size_t)(e - line);
		if (strncasecmp(line, "proxy-", 6) && strncasecmp(line, "connection:", 11) &&
		    strncasecmp(line, "keep-alive:", 11)) {
			memcpy(h + o, line, ll + 2);
			o += ll + 2;
		}
		line = e + 2;
	}
	/* One request per connection: a second one on it could name another host. */
	static const char close_hdr[] = "Connection: close\r\n\r\n";
	memcpy(h + o, close_hdr, sizeof close_hdr - 1);
	o += sizeof close_hdr - 1;
	r->head = h;
	r->head_len = o;
	return 0;
}
