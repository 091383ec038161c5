/* door.c — the client port's door (door.h).
 *
 * lws hands every accepted socket to LWS_CALLBACK_FILTER_NETWORK_CONNECTION
 * first.  The door keeps a copy of it and lets lws close its own: from then
 * on the connection is the door's until its first request head is whole.
 * A raw-file wsi on a second copy tells the door when bytes arrive; the door
 * peeks at them (up to CX_CAP_HTTP_HEAD, door_head_check).  A good head, on a
 * connection no pool refuses, goes to lws unread (lws_adopt_socket_vhost);
 * anything else gets an HTTP/1.1 reply with
 * the JSON error shape, a half close, and a short drain (so the reply is not
 * lost to a reset while the client still sends).
 *
 * Counting: a connection is counted from its accept until lws destroys its
 * wsi (door_destroyed), in all and under its peer's address.  A connection
 * over a cap is not counted; it is answered 503 or 429 once its head is
 * read.  At most DOOR_MAX_REFUSING such answers are pending at once; past
 * that a connection over a cap is closed at accept without a word.
 *
 * Service thread only. */
#include "door.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "caps.h"
#include "cx.h"
#include "log.h"
#include "refuse.h"

#define DOOR_MAX_REFUSING   64 /* refusals answered at once (their heads being read) */
#define DOOR_LINGER_S	    2  /* after a refusal: drain what the client still sends */
#define DOOR_HEAD_TIMEOUT_S 10
#define PEER_BUCKETS	    1024

struct door_peer { /* an address with connections counted */
	struct door_peer *next;
	unsigned char addr[16]; /* IPv6, or IPv4 mapped */
	unsigned conns;
};

struct door_conn {		/* a connection at the door (the opaque data of its raw-file wsi) */
	int sock;		/* the client's socket, -1 once handed to lws or closed */
	struct lws *w;		/* the raw-file wsi watching a copy of sock */
	struct door_peer *peer; /* counted under it, or NULL (refused, or handed on) */
	int refuse;		/* 503 or 429: a full pool, answered once the head is read */
	int replied;		/* answered: draining until EOF or the linger timeout */
	int handed;		/* lws took the socket; its wsi carries the count now */
	int gone;		/* the peer hung up */
	size_t seen;		/* bytes queued at the last look (the head not whole) */
};

static struct {
	struct lws_vhost *vh;
	struct door_opts o;
	struct door_peer *peers[PEER_BUCKETS];
	unsigned total;		   /* connections counted */
	unsigned refusing;	   /* refusals pending */
	struct door_conn *handing; /* the connection being handed to lws (door_adopted) */
} door;

/* ---- peers ---- */

static void peer_addr(int fd, unsigned char out[16])
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	memset(out, 0, 16);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return; /* all unknown peers share the zero address */
	if (ss.ss_family == AF_INET6) {
		memcpy(out, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	} else if (ss.ss_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	}
}

static struct door_peer **peer_slot(const unsigned char addr[16])
{
	struct door_peer **pp = &door.peers[cx_fnv1a(addr, 16) % PEER_BUCKETS];
	while (*pp && memcmp((*pp)->addr, addr, 16))
		pp = &(*pp)->next;
	return pp;
}

static struct door_peer *peer_take(const unsigned char addr[16])
{
	struct door_peer **pp = peer_slot(addr);
	if (!*pp) {
		struct door_peer *p = calloc(1, sizeof *p);
		if (!p)
			return NULL;
		memcpy(p->addr, addr, 16);
		*pp = p;
	}
	(*pp)->conns++;
	door.total++;
	return *pp;
}

static void peer_put(struct door_peer *p)
{
	if (!p)
		return;
	door.total--;
	if (--p->conns)
		return;
	struct door_peer **pp = peer_slot(p->addr);
	*pp = p->next;
	free(p);
}

/* ---- the head ---- */

static int is_tchar(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '-' || ch == '_';
}

int door_head_check(const char *buf, size_t len, size_t *head_len)
{
	/* The method: a token and a space. */
	size_t m = 0;
	while (m < len && m <= 16 && is_tchar((unsigned char)buf[m]))
		m++;
	if (m == len)
		return m > 16 ? 400 : 0;
	if (m == 0 || m > 16 || buf[m] != ' ')
		return 400;
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len;
	const char *t = buf + m + 1, *sp = memchr(t, ' ', line - (m + 1));
	size_t tlen = (size_t)((sp ? sp : buf + line) - t);
	if (tlen > CX_CAP_HTTP_URI)
		return 414;
	if (!nl)
		return len > CX_CAP_HTTP_URI + 64 ? 400
						  : 0; /* a short target and a long rest: garbage */
	unsigned fields = 0;
	for (size_t i = 0; i < tlen; i++) /* query arguments take lws header slots too */
		fields += t[i] == '&' || t[i] == '?';
	const char *end = buf + len;
	for (const char *p = nl; p;) { /* p: the '\n' ending a line */
		const char *q = p + 1;
		if (q < end && *q == '\r')
			q++;
		if (q >= end)
			break;
		if (*q == '\n') { /* the empty line: the head is whole */
			*head_len = (size_t)(q + 1 - buf);
			return fields > CX_CAP_HTTP_FIELDS || *head_len > CX_CAP_HTTP_HEAD ? 431
											   : 1;
		}
		fields++;
		p = memchr(q, '\n', (size_t)(end - q));
	}
	return len >= CX_CAP_HTTP_HEAD || fields > CX_CAP_HTTP_FIELDS ? 431 : 0;
}

/* ---- replies ---- */

static void door_reply(struct door_conn *c, int status)
{
	const char *reason = "Bad Request", *code = "bad_request", *retry = "";
	char msg[200];
	snprintf(msg, sizeof msg, "not an HTTP/1.1 request head");
	switch (status) {
	case 414:
		reason = "URI Too Long", code = "uri_too_long";
		snprintf(msg, sizeof msg, "the request target is over %u bytes", CX_CAP_HTTP_URI);
		reject_count(REJECT_URI_TOO_LONG);
		break;
	case 431:
		reason = "Request Header Fields Too Large", code = "headers_too_large";
		snprintf(msg, sizeof msg, "the request head is over %u bytes or %u fields",
			 CX_CAP_HTTP_HEAD, CX_CAP_HTTP_FIELDS);
		reject_count(REJECT_HEAD_TOO_LARGE);
		break;
	case 408:
		reason = "Request Timeout", code = "head_timeout";
		snprintf(msg, sizeof msg, "no whole request head within %d s", DOOR_HEAD_TIMEOUT_S);
		reject_count(REJECT_HEAD_TIMEOUT);
		break;
	case 503:
		reason = "Service Unavailable", code = "busy", retry = "Retry-After: 5\r\n";
		snprintf(msg, sizeof msg, "the server has %u connections open (cap http.max_conns)",
			 door.o.max_conns);
		break;
	case 429:
		reason = "Too Many Requests", code = "too_many_connections",
		retry = "Retry-After: 1\r\n";
		snprintf(msg, sizeof msg,
			 "%u connections are open from your address (cap http.max_conns_per_ip)",
			 door.o.max_conns_per_ip);
		break;
	default:
		status = 400;
		reject_count(REJECT_BAD_HEAD);
	}
	char body[400], out[800];
	int bl = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
			  code, msg);
	int n =
	    snprintf(out, sizeof out,
		     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
		     "Connection: close\r\n%s\r\n%s",
		     status, reason, bl, retry, body);
	/* A fresh socket's send buffer is empty: one small write goes whole. */
	if (send(c->sock, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("door: reply %d: %s", status, strerror(errno));
	shutdown(c->sock, SHUT_WR);
	c->replied = 1;
}

/* ---- connections ---- */

void door_start(struct lws_vhost *vh, const struct door_opts *o)
{
	door.vh = vh;
	door.o = *o;
}

unsigned door_conns(void)
{
	return door.total;
}

int door_accept(int fd)
{
	unsigned char addr[16];
	peer_addr(fd, addr);
	struct door_peer *p = *peer_slot(addr);
	int refuse = 0;
	if (door.total >= door.o.max_conns)
		refuse = 503;
	else if (door.o.max_conns_per_ip && p && p->conns >= door.o.max_conns_per_ip)
		refuse = 429;
	if (refuse) {
		refuse_count(refuse == 503 ? REFUSE_HTTP : REFUSE_HTTP_IP);
		if (door.refusing >= DOOR_MAX_REFUSING) {
			reject_count(REJECT_DROPPED);
			return 1; /* lws closes fd */
		}
	}
	struct door_conn *c = calloc(1, sizeof *c);
	if (!c)
		return 1;
	c->sock = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	int watch = c->sock < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (watch < 0 || fcntl(c->sock, F_SETFL, fcntl(c->sock, F_GETFL) | O_NONBLOCK) < 0) {
		log_warn("door: %s", strerror(errno));
		if (c->sock >= 0)
			close(c->sock);
		if (watch >= 0)
			close(watch);
		free(c);
		return 1;
	}
	if (refuse) {
		c->refuse = refuse;
		door.refusing++;
	} else if (!(c->peer = peer_take(addr))) {
		c->refuse = 503;
		door.refusing++;
	}
	lws_adopt_desc_t ad = {
	    .vh = door.vh,
	    .type = LWS_ADOPT_RAW_FILE_DESC,
	    .fd.filefd = watch,
	    .vh_prot_name = DOOR_PROTOCOL,
	    .opaque = c,
	};
	c->w = lws_adopt_descriptor_vhost_via_info(&ad); /* closes watch on failure */
	if (!c->w) {
		close(c->sock);
		peer_put(c->peer);
		if (c->refuse)
			door.refusing--;
		free(c);
		return 1;
	}
	lws_set_timeout(c->w, PENDING_TIMEOUT_USER_OK, DOOR_HEAD_TIMEOUT_S);
	return 1; /* lws closes its copy; the door has the connection */
}

/* The head is whole and no pool refuses: lws takes the socket.  The door only
 * peeked, so lws reads the request from the socket as if it were the first to.
 * (Not lws_adopt_socket_vhost_readbuf: lws 4.1 feeds a read buffer holding a
 * head to the body parser once more when the request has a body.) */
static int hand_over(struct door_conn *c)
{
	int sock = c->sock;
	c->sock = -1;
	door.handing = c;
	lws_adopt_socket_vhost(door.vh, sock); /* closes sock on failure */
	door.handing = NULL;
	if (!c->handed)
		peer_put(c->peer); /* no wsi was made for it */
	c->peer = NULL;
	return -1; /* close the watching wsi (its copy of the socket) */
}

static void set_lowat(int sock, int n)
{
	if (setsockopt(sock, SOL_SOCKET, SO_RCVLOWAT, &n, sizeof n) < 0)
		log_debug("door: SO_RCVLOWAT: %s", strerror(errno));
}

/* Bytes arrived (or the peer hung up).  The door peeks at what is queued;
 * while the head is not whole, SO_RCVLOWAT (one byte more than is there)
 * keeps poll quiet until more comes. */
static int door_read(struct door_conn *c)
{
	static char buf[CX_CAP_HTTP_HEAD]; /* service thread only */
	if (c->replied) {		   /* drain until the client is done */
		ssize_t n = recv(c->sock, buf, sizeof buf, MSG_DONTWAIT);
		return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)) ? 0 : -1;
	}
	ssize_t n = recv(c->sock, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0 || (size_t)n <= c->seen) { /* nothing more: the peer hung up mid-head */
		c->gone = 1;
		return -1;
	}
	size_t head_len = 0;
	int v = door_head_check(buf, (size_t)n, &head_len);
	if (v == 0) {
		c->seen = (size_t)n;
		set_lowat(c->sock, (int)n + 1);
		return 0;
	}
	if (c->seen)
		set_lowat(c->sock, 1);
	if (v == 1 && !c->refuse)
		return hand_over(c);
	door_reply(c, v == 1 ? c->refuse : v);
	lws_set_timeout(c->w, PENDING_TIMEOUT_USER_OK, DOOR_LINGER_S);
	return 0;
}

int door_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len)
{
	(void)user;
	(void)in;
	(void)len;
	struct door_conn *c = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		return c ? door_read(c) : -1;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		if (!c)
			return 0;
		lws_set_opaque_user_data(wsi, NULL);
		if (c->sock >= 0) {
			if (!c->replied && !c->gone) /* the head timeout */
				door_reply(c, 408);
			close(c->sock);
		}
		peer_put(c->peer);
		if (c->refuse)
			door.refusing--;
		free(c);
		return 0;
	default:
		return 0;
	}
}

void door_adopted(struct lws *wsi)
{
	struct door_conn *c = door.handing;
	if (!c || c->handed)
		return;
	lws_set_opaque_user_data(wsi, c->peer);
	c->handed = 1;
}

void door_destroyed(struct lws *wsi)
{
	struct door_peer *p = lws_get_opaque_user_data(wsi);
	if (!p)
		return;
	lws_set_opaque_user_data(wsi, NULL);
	peer_put(p);
}
