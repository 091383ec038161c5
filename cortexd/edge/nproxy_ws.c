/* nproxy_ws.c — a WebSocket proxied to its session's node (nproxy.h): the
 * client's side ("cortex" protocol, routed here by server.c) and the owner
 * connection's WebSocket events (from nproxy_owner_callback). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nproxy-internal.h"
#include "preview.h"

static int ws_close_with(struct lws *wsi, int code, const unsigned char *reason, size_t rlen)
{
	lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, rlen);
	return -1;
}

int nproxy_ws_confirm(struct cortexd *d, struct lws *wsi)
{
	char token[300], user[80], hop[8];
	ws_token(wsi, token, sizeof token, NULL);
	if (api_auth(d, token[0] ? token : NULL, user, sizeof user) != WHO_USER)
		return ws_reject_upgrade(wsi, 401, "unauthorized", "missing or invalid token");
	if (lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) > 0) {
		np_loops++;
		return ws_reject_upgrade(
		    wsi, 508, "proxy_loop",
		    "forwarded by another node, and this node does not hold the session either");
	}
	return 0;
}

/* The client's frames and close code, to the owner. */
static int ws_up_writeable(struct nproxy *px, struct lws *wsi)
{
	struct np_piece *pc = px->upq.head;
	if (pc) {
		if (lws_write(wsi, np_piece_data(pc), pc->len, (enum lws_write_protocol)pc->flags) <
		    (int)pc->len)
			return -1;
		np_bytes_up += pc->len;
		np_q_pop(&px->upq);
		if (px->down_paused && px->down && px->upq.bytes <= NP_QCAP / 2) {
			px->down_paused = 0;
			lws_rx_flow_control(px->down, 1);
		}
		if (px->upq.head || px->close_up)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (px->close_up)
		return ws_close_with(wsi, px->close_up, px->up_reason, px->up_rlen);
	return 0;
}

/* The owner's frames and close code, to the client. */
static int ws_down_writeable(struct nproxy *px, struct lws *wsi)
{
	if (!px->ws_open && px->fail_code) {
		char frame[LWS_PRE + 400];
		int n = snprintf(frame + LWS_PRE, 400,
				 "{\"type\":\"cortex.error\",\"code\":\"%s\",\"message\":\"%s\"}",
				 px->fail_code, px->fail_msg);
		if (n > 0 && n < 400)
			lws_write(wsi, (unsigned char *)frame + LWS_PRE, (size_t)n, LWS_WRITE_TEXT);
		int code = px->close_down ? px->close_down : 1013 /* try again later */;
		return ws_close_with(wsi, code, (const unsigned char *)"owner unreachable", 17);
	}
	struct np_piece *pc = px->downq.head;
	if (pc) {
		if (lws_write(wsi, np_piece_data(pc), pc->len, (enum lws_write_protocol)pc->flags) <
		    (int)pc->len)
			return -1;
		np_bytes_down += pc->len;
		np_q_pop(&px->downq);
		if (px->up_paused && px->up && px->downq.bytes <= NP_QCAP / 2) {
			px->up_paused = 0;
			lws_rx_flow_control(px->up, 1);
		}
		if (px->downq.head || px->up_gone)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (px->up_gone) {
		if (px->close_down)
			return ws_close_with(wsi, px->close_down, px->down_reason, px->down_rlen);
		return ws_close_with(wsi, LWS_CLOSE_STATUS_GOINGAWAY,
				     (const unsigned char *)"the session's node went away", 28);
	}
	return 0;
}

/* A close code as received (2 bytes + reason), kept for the other side;
 * codes that must not be sent become 1000. */
static int close_code_of(const unsigned char *in, size_t len, unsigned char *reason, size_t *rlen)
{
	int code = len >= 2 ? in[0] << 8 | in[1] : 1000;
	if (code < 1000 || code == 1005 || code == 1006 || code == 1015 || code >= 5000)
		code = 1000;
	*rlen = len > 2 ? len - 2 : 0;
	if (*rlen > 123)
		*rlen = 123;
	if (*rlen)
		memcpy(reason, in + 2, *rlen);
	return code;
}

int nproxy_ws_callback(struct cortexd *d, struct lws *wsi, enum lws_callback_reasons reason,
		       struct nproxy **slot, const char *url, void *in, size_t len)
{
	struct nproxy *px = *slot;
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: {
		char uri[CX_CAP_HTTP_URI], args[CX_CAP_HTTP_URI] = "";
		if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
			return -1;
		if (!(px = np_new(d, wsi, url, 1)))
			return -1;
		np_ws++;
		for (int i = 0; i < 16; i++) { /* the query as sent (a ?token=, ?after=) */
			char v[1024];
			int n = lws_hdr_copy_fragment(wsi, v, sizeof v, WSI_TOKEN_HTTP_URI_ARGS, i);
			if (n <= 0)
				break;
			size_t al = strlen(args);
			snprintf(args + al, sizeof args - al, "%c%s", al ? '&' : '?', v);
		}
		snprintf(px->path, sizeof px->path, "%s%s", uri, args);
		ws_token(wsi, px->token, sizeof px->token, NULL);
		if (preview_is_route(uri)) { /* Origin, Cookie...: what A's preview passes inside */
			px->preview = 1;
			np_preview_request_headers(px, wsi);
		}
		*slot = px;
		px->slot = slot;
		np_connect(px);
		if (px->fail_code)
			lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE: {
		if (!px)
			return -1;
		int flags =
		    lws_write_ws_flags(lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
				       lws_is_first_fragment(wsi), lws_is_final_fragment(wsi));
		if (np_q_put(&px->upq, in, len, flags) < 0)
			return -1;
		if (px->upq.bytes > NP_QCAP && !px->down_paused) {
			px->down_paused = 1;
			np_pauses++;
			lws_rx_flow_control(wsi, 0);
		}
		if (px->up && px->ws_open)
			lws_callback_on_writable(px->up);
		return 0;
	}
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (px)
			px->close_up = close_code_of(in, len, px->up_reason, &px->up_rlen);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return px ? ws_down_writeable(px, wsi) : -1;
	case LWS_CALLBACK_CLOSED:
		nproxy_release(px);
		return 0;
	default:
		return 0;
	}
}

int np_ws_owner_event(struct nproxy *px, struct lws *wsi, enum lws_callback_reasons reason,
		      void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (!px)
			return -1;
		px->ws_open = 1;
		lws_sul_cancel(&px->sul);
		if (!px->down)
			px->close_up = px->close_up ? px->close_up : LWS_CLOSE_STATUS_GOINGAWAY;
		if (px->upq.head || px->close_up)
			lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (!px)
			return -1;
		return np_down_put(
		    px, wsi, in, len,
		    lws_write_ws_flags(lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
				       lws_is_first_fragment(wsi), lws_is_final_fragment(wsi)));
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!px)
			return -1;
		return ws_up_writeable(px, wsi);
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (px)
			px->close_down = close_code_of(in, len, px->down_reason, &px->down_rlen);
		return 0;
	default:
		return 0;
	}
}
