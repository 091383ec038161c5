/* door.h — every client connection passes the door before libwebsockets
 * parses it: the door counts connections (all, and per peer address), reads
 * the first request head itself, answers a head that is too large (431), a
 * target that is too long (414), a full pool (503, or 429 per address) with
 * the JSON error shape, and hands a connection with a good head to lws
 * (lws_adopt_socket_vhost) unread.  lws 4.1 closes such connections
 * without a word (docs/reliability.md, "Caps and edges"). */
#ifndef CORTEX_DOOR_H
#define CORTEX_DOOR_H

#include <libwebsockets.h>
#include <stddef.h>

#define DOOR_PROTOCOL "cortex-door"

struct door_opts {
	unsigned max_conns;	   /* connections at once (503 past it) */
	unsigned max_conns_per_ip; /* ... from one address (429 past it); 0 = no cap */
};

/* vh: the vhost connections are handed to (not owned). */
void door_start(struct lws_vhost *vh, const struct door_opts *o);
/* LWS_CALLBACK_FILTER_NETWORK_CONNECTION of vh: the door takes fd over (a
 * copy of it); returns what the callback returns (lws closes its own). */
int door_accept(int fd);
/* The DOOR_PROTOCOL callback (its raw-file wsi watch each waiting head). */
int door_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len);
/* LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED / LWS_CALLBACK_WSI_DESTROY of
 * vh's protocols[0]: a handed-over connection joins / leaves its count. */
void door_adopted(struct lws *wsi);
void door_destroyed(struct lws *wsi);
/* Connections counted now (all; from the address of fd's peer). */
unsigned door_conns(void);

/* The verdict on buf[0..len) as the start of an HTTP/1 request: 0 = not
 * whole yet, 1 = a whole head of *head_len bytes, else the HTTP status to
 * refuse it with (414, 431, 400).  Pure (unit tests). */
int door_head_check(const char *buf, size_t len, size_t *head_len);

#endif
