/* caps.h — every network/IO buffer cap in one table (curl dynbuf style).
 * A value over its cap is refused with a clear error, never truncated silently. */
#ifndef CX_CAPS_H
#define CX_CAPS_H

#define CX_CAP_HTTP_BODY       (1u << 20)  /* request body of any HTTP route      */
#define CX_CAP_CLIENT_FRAME    (256u << 10) /* one client -> cortexd WS message    */
#define CX_CAP_AGENT_LINE      (4u << 20)  /* one agent stdout line / ws-agent frame */
#define CX_CAP_CLIENT_QUEUE    (8u << 20)  /* bytes queued to one slow client      */
#define CX_CAP_CONTEXT_FILE    (1u << 20)  /* /tmp/vf-pending-query.json           */
#define CX_CAP_STDERR_TAIL     (16u << 10) /* agent stderr kept for error frames    */
#define CX_CAP_MESSAGE_TEXT    (128u << 10) /* text of one user message             */
#define CX_CAP_REPLAY         (8u << 20)  /* frames of one turn kept for "resume"  */
#define CX_CAP_NAME            64u          /* user names, session ids              */

#endif
