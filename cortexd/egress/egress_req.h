/* egress_req.h — the request head a sandbox sends the egress proxy
 * (egress.c): "CONNECT host:port HTTP/1.x" or an absolute-form
 * "METHOD http://host[:port]/path HTTP/1.x".  Pure: bytes in, fields out;
 * no I/O.  A fuzz target (tests/fuzz/fuzz_egress_request.c). */
#ifndef CORTEX_EGRESS_REQ_H
#define CORTEX_EGRESS_REQ_H
#include <stddef.h>

struct egress_req {
	char method[16];
	char host[256]; /* pol_norm_host()'d: lowercase, no trailing dot, v6 without brackets */
	int port;
	int is_connect;
	char *head; /* the rewritten head for a plain request (malloc; the caller frees) */
	size_t head_len;
};

/* Parse the head in buf[0..hl): hl ends with its blank line "\r\n\r\n" and
 * buf[hl..] may hold more bytes, then a NUL (as the proxy reads it).  Plain
 * requests get an origin-form head without hop-by-hop proxy headers and with
 * Connection: close.  0, or -1 with why (a message for the 400). */
int egress_req_parse(char *buf, size_t hl, struct egress_req *r, char *why, size_t wcap);

#endif
