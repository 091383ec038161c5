/* caps.h — every network/IO buffer cap in one table (curl dynbuf style).
 * A value over its cap is refused with a clear error, never truncated silently. */
#ifndef CX_CAPS_H
#define CX_CAPS_H

#define CX_CAP_HTTP_BODY       (1u << 20)  /* request body of any HTTP route      */
#define CX_CAP_HTTP_URI        (8u << 10)  /* request target (path + query): 414 past it */
#define CX_CAP_HTTP_HEAD       (16u << 10) /* request line + header fields: 431 past it */
#define CX_CAP_HTTP_FIELDS     64u         /* header fields + query args of one request: 431 */
#define CX_CAP_CLIENT_FRAME    (256u << 10) /* one client -> cortexd WS message    */
#define CX_CAP_AGENT_LINE      (4u << 20)  /* one agent stdout line / ws-agent frame */
#define CX_CAP_CLIENT_QUEUE    (8u << 20)  /* default ws.client_queue_max_bytes: frame bytes queued to one client before it is cut off */
#define CX_CAP_CONTEXT_FILE    (1u << 20)  /* /tmp/vf-pending-query.json           */
#define CX_CAP_STDERR_TAIL     (16u << 10) /* agent stderr kept for error frames    */
#define CX_CAP_MESSAGE_TEXT    (128u << 10) /* text of one user message             */
#define CX_CAP_REPLAY         (8u << 20)  /* frames of one turn kept for "resume"  */
#define CX_CAP_NAME            64u          /* user names, session ids              */
/* preview ports (cortexd/edge/preview.c) */
#define CX_CAP_PREVIEW_BUF    (64u << 10)  /* bytes buffered per direction before that side pauses */
#define CX_CAP_PREVIEW_HEAD   (16u << 10)  /* a response head from inside; a request head to it */
#define CX_CAP_PREVIEW_CONNS  32u          /* open preview connections per session (429 past it) */
/* image store (container/imgstore.c) */
#define CX_CAP_IMAGE_TAR     (16ull << 30) /* file bytes an image tar may stage     */
#define CX_CAP_IMAGE_LAYER   (16ull << 30) /* bytes one layer may unpack to         */
#define CX_CAP_IMAGE_JSON    (4u << 20)    /* index, manifest or config blob        */
#define CX_CAP_IMAGE_LAYERS  128u          /* layers of one image                   */
/* egress broker (cortexd/egress/mitm*.c) */
#define CX_CAP_MITM_HEAD     (64u << 10)   /* request head of an intercepted connection */

#endif
