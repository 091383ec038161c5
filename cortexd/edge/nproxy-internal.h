/* nproxy-internal.h — what nproxy.c (HTTP, the owner connection) and
 * nproxy_ws.c (WebSocket) share.  Service thread only. */
#ifndef CORTEX_NPROXY_INTERNAL_H
#define CORTEX_NPROXY_INTERNAL_H

#include "caps.h"
#include "nproxy.h"

#define NP_QCAP	    CX_CAP_PREVIEW_BUF /* bytes queued per direction before its reader pauses */
#define NP_PIECE    16384	       /* bytes per read of the owner's HTTP body */
#define NP_HEADROOM 16		       /* room for a chunk header before a piece's data */
#define NP_TAIL	    8		       /* "\r\n" and a last "0\r\n\r\n" after it */
#define NP_HDRCAP   16384	       /* bytes of a preview's passed headers, each way */
#define NP_VCAP	    (CX_CAP_HTTP_HEAD + 2048) /* one request header's value (lws's own cap) */

/* ---- queued pieces: one copy of what was read, written whole ---- */

struct np_piece {
	struct np_piece *next;
	size_t len;
	int flags; /* lws_write flags of a WebSocket fragment */
	unsigned char buf[];
};

struct np_queue {
	struct np_piece *head, *tail;
	size_t bytes;
};

/* ---- the proxy ---- */

struct nproxy {
	int ws;
	struct cortexd *d;	    /* not owned */
	struct lws *down;	    /* the client's side; NULL once gone */
	struct lws *up;		    /* the connection to the owner; NULL before and after */
	struct nproxy **slot;	    /* the client connection's pointer to this */
	lws_sorted_usec_list_t sul; /* the owner's answer is due */
	char host[256];
	int port;
	char path[CX_CAP_HTTP_URI + 64];
	char token[300];
	/* HTTP request */
	char method[8];
	char *body; /* owned */
	size_t body_len, body_off;
	int stream;	/* a preview body from the client as it comes (upq), body_len long */
	size_t body_in; /* ... bytes of it come so far */
	char range[128], inm[256];
	/* HTTP response */
	int status, head_in, head_out, chunk_out, up_done, up_gone;
	long long clen; /* -1: none (chunked or to the close) */
	char ctype[128], crange[128], etag[300], loc[700], retry[16], accept_ranges[16];
	const char *fail_code; /* "owner_unreachable": nothing came from the owner */
	char fail_msg[200];
	struct np_queue downq, upq; /* to the client, to the owner */
	int up_paused;		    /* the owner's reading is paused (downq full) */
	int down_paused;	    /* the client's reading is paused (upq full) */
	/* a preview port's request: headers passed through both ways, as
	 * "name:\0value\0" pairs (request: preview.c's list; response: all that
	 * lws knows and nproxy.c's few custom names) */
	int preview;
	char *xhdr, *rhdr; /* owned */
	size_t xhdr_len, rhdr_len;
	/* WebSocket */
	int ws_open;		  /* the owner accepted the upgrade */
	int close_down, close_up; /* a close code to send that way once its queue drained */
	unsigned char down_reason[124], up_reason[124];
	size_t down_rlen, up_rlen;
};

/* counters (nproxy.c's /metrics) */
extern uint64_t np_http, np_ws, np_unreachable, np_timeouts, np_refused, np_loops, np_cut,
    np_pauses;
extern uint64_t np_bytes_up, np_bytes_down;
extern unsigned np_open;

/* A piece's data: LWS_PRE + NP_HEADROOM into its buffer. */
unsigned char *np_piece_data(struct np_piece *p);
/* Queue a copy of data (flags: a WebSocket fragment's lws_write flags): 0 or -1. */
int np_q_put(struct np_queue *q, const void *data, size_t len, int flags);
void np_q_pop(struct np_queue *q);
/* A proxy for the client connection down, to the node at url (ws: a WebSocket). */
struct nproxy *np_new(struct cortexd *d, struct lws *down, const char *url, int ws);
/* A preview's request headers from the client (preview.c's list), into px->xhdr. */
void np_preview_request_headers(struct nproxy *px, struct lws *wsi);
/* Connect to the owner; a failure is left in px (fail_code) for the client. */
void np_connect(struct nproxy *px);
/* Free px once neither side refers to it. */
void np_maybe_free(struct nproxy *px);
/* A header line name: value (nothing when v is empty): 0, or lws's nonzero. */
int np_add_hdr(struct lws *wsi, const char *name, const char *v, unsigned char **p,
	       unsigned char *end);
/* A piece from the owner for the client; the owner's reading pauses past NP_QCAP. */
int np_down_put(struct nproxy *px, struct lws *up, const void *in, size_t len, int flags);
/* The owner connection's WebSocket events (nproxy_ws.c). */
int np_ws_owner_event(struct nproxy *px, struct lws *wsi, enum lws_callback_reasons reason,
		      void *in, size_t len);

#endif
