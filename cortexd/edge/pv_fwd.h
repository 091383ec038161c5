/* pv_fwd.h — which headers a preview port passes on, beyond the ones lws
 * knows by token (preview.c's preview_fwd_tokens): the custom ones, each way,
 * and the client's address and host (docs/network.md "Preview ports",
 * docs/scale-out.md "Proxy to the owner").  Shared by preview.c (the owner:
 * to the server inside) and nproxy.c (a non-owner: to the owner, and the
 * owner's response back).  Service thread only.
 *
 * Custom headers are listed with lws_hdr_custom_name_foreach, which our
 * patched libwebsockets has (third_party/lws/0002, LWS_HAS_HDR_CUSTOM_NAME_FOREACH);
 * built against another one (CORTEX_SYSTEM_LWS) only fixed lists of names
 * pass. */
#ifndef CORTEX_PV_FWD_H
#define CORTEX_PV_FWD_H

#include <libwebsockets.h>
#include <stddef.h>

/* One header to pass: name lower case with its ':', value NUL-terminated. */
typedef void (*pv_fwd_cb)(void *arg, const char *name, const char *value);

/* Every custom request header of wsi a preview passes on: all but the
 * hop-by-hop ones (and any the Connection header names), Cortex's own
 * (x-cortex-*) and the forwarding ones cortexd writes itself (x-forwarded-*,
 * forwarded, x-real-ip).  A repeated name passes its first value. */
void pv_fwd_request_custom(struct lws *wsi, pv_fwd_cb cb, void *arg);

/* Every custom response header of wsi (a client connection's response) but
 * the hop-by-hop ones. */
void pv_fwd_response_custom(struct lws *wsi, pv_fwd_cb cb, void *arg);

/* The X-Forwarded-For and X-Forwarded-Host a preview server sees for wsi's
 * request: its X-Forwarded-For as sent with the peer's address appended (or
 * the peer alone), and its Host.  But from a cluster node (X-Cortex-Hop, and
 * the peer is a node URL's host: owner_cache_is_node_addr) the
 * X-Forwarded-For and X-Forwarded-Host the node sent, which it computed
 * this same way for its client, are used as they are: through a non-owner
 * the server sees what a direct request shows.  host may come back "". */
void pv_fwd_client(struct lws *wsi, char *xff, size_t xcap, char *host, size_t hcap);

#endif
