/* fanout.h — a session's clients: every frame of the session goes to each
 * client following the stream, tagged with the session's next seq, and the
 * running turn's frames are kept (capped) for "resume".
 *
 * Memory: a frame is allocated once; the resume replay and every client's
 * queue hold references to it (frames.h).
 *
 * Flow control: the fastest client paces the agent -- while even it has half
 * of ws.client_queue_max_bytes queued, reading from the session's ws-agent
 * link is paused (lws_rx_flow_control), which backs up ws-agent and then the
 * agent's stdout pipe.  A client over the cap while another is ahead of it
 * is cut off: its frames are released at once and it is closed with 1008
 * "client too slow" (docs/reliability.md).  So a client that does not read
 * neither stalls the others nor holds more than a cap of frames. */
#ifndef CORTEX_FANOUT_H
#define CORTEX_FANOUT_H

#include "session.h"

void fanout_attach(struct session *s, struct client *c); /* held when a turn runs */
void fanout_detach(struct client *c);
/* The client's socket is writeable: one frame.  -1 = close it. */
int fanout_writeable(struct client *c);
/* Send a cortex.* object (consumed) to every client, with the next seq (and
 * the running turn's id). */
void fanout_obj(struct session *s, json_t *o);
/* The same for a cortex.* object written with jw (its members so far, the
 * object still open; consumed): seq and turn go at its end, the bytes
 * fanout_obj makes.  A failed writer sends nothing and is counted. */
struct jw;
void fanout_jw(struct session *s, struct jw *w);
/* A frame (txt copied) to one client, outside the stream: no seq, never
 * replayed (cortex.fs). */
void fanout_send_one(struct client *c, const char *txt, size_t len);
/* A cortex.error: to one client (only) or to every client (only = NULL). */
void fanout_error(struct session *s, struct client *only, const char *code, const char *msg);
/* A cortex.* object (consumed) to one client only, outside the stream. */
void fanout_to(struct session *s, struct client *c, json_t *o);
/* An agent line, verbatim with seq spliced in, to every client. */
void fanout_line(struct session *s, const char *line, size_t len);
/* A new turn: the replay holds only its frames, and every client follows it. */
void fanout_turn_begin(struct session *s);
/* resume after_seq: every kept frame after it this client was not given. */
void fanout_resume(struct session *s, struct client *c, uint64_t after_seq);
/* At load: the turn the log holds died with the previous cortexd; its end,
 * cortex.error cortexd_restarted, is kept (and logged) as its last frame. */
void fanout_lost_turn(struct session *s, uint64_t turn);
/* The session is going away: close every client. */
void fanout_close_all(struct session *s);
void fanout_update_flow(struct session *s);
/* Clients cut off for being too slow, since start (cortex_ws_clients_cut_total). */
uint64_t fanout_clients_cut(void);
/* A cut client that does not read its close frame within this is dropped. */
#define FANOUT_CUT_GRACE_S 30
/* Client WebSockets open on all sessions of user. */
unsigned fanout_user_clients(struct cortexd *d, const char *user);

#endif
