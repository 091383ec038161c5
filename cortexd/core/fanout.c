/* fanout.c — see fanout.h. */
#include "fanout.h"
#include "turnlog.h"

#include <string.h>

#include "caps.h"
#include "jw.h"
#include "log.h"
#include <stdint.h>
#include <stdlib.h>

static uint64_t clients_cut;

uint64_t fanout_clients_cut(void) { return clients_cut; }

static size_t queue_cap(const struct session *s)
{
	return s->d && s->d->cfg.ws_client_queue_max_bytes ? s->d->cfg.ws_client_queue_max_bytes
							   : CX_CAP_CLIENT_QUEUE;
}

/* Past the cap, and behind the fastest client: its frames are let go now (the
 * memory they pinned with them), and it is closed at its next WRITEABLE with
 * 1008 "client too slow" -- once what lws holds of its last write has gone
 * out.  A client that never reads again is dropped by the timeout. */
static void client_cut(struct session *s, struct client *c)
{
	log_warn("session %s: a client with %zu bytes queued (ws.client_queue_max_bytes %zu) is cut off: too slow",
		 s->id, c->out.bytes, queue_cap(s));
	clients_cut++;
	c->closing = 1;
	c->cut = 1;
	fq_clear(&c->out);
	if (c->wsi) {
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, FANOUT_CUT_GRACE_S);
		lws_callback_on_writable(c->wsi);
	}
}

/* The fastest client paces the agent: reading from the ws-agent link pauses
 * while even it is half a cap behind, and resumes at a quarter.  Any other
 * client over the cap is cut off, so one that does not read neither stalls
 * the others nor pins more than a cap of frames. */
void fanout_update_flow(struct session *s)
{
	size_t cap = queue_cap(s), least = SIZE_MAX;
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (!c->closing && !c->held && c->out.bytes < least)
			least = c->out.bytes;
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (!c->closing && !c->held && c->out.bytes > cap && c->out.bytes > least)
			client_cut(s, c);
	if (least == SIZE_MAX)
		least = 0;
	if (!s->link.wsi)
		return;
	/* The agent's stdout cortexd reads itself pauses with the link. */
	if (!s->fan.rx_paused && least > cap / 2) {
		s->fan.rx_paused = 1;
		lws_rx_flow_control(s->link.wsi, 0);
		if (s->link.out_wsi)
			lws_rx_flow_control(s->link.out_wsi, 0);
	} else if (s->fan.rx_paused && least <= cap / 4) {
		s->fan.rx_paused = 0;
		lws_rx_flow_control(s->link.wsi, 1);
		if (s->link.out_wsi)
			lws_rx_flow_control(s->link.out_wsi, 1);
	}
}

/* stream: a frame of the session's stream (not an error to this client
 * alone), which resume counts as given.  Takes the caller's reference. */
static void client_push(struct client *c, struct frame *f, int stream)
{
	if (c->closing) {
		frame_unref(f);
		return;
	}
	if (stream && f->seq > c->last_seq)
		c->last_seq = f->seq;
	if (fq_push(&c->out, f) < 0)
		return; /* counted by frames.c */
	if (c->wsi)
		lws_callback_on_writable(c->wsi);
}

static void client_send(struct client *c, const char *data, size_t len, uint64_t seq, int stream)
{
	if (c->closing)
		return;
	struct frame *f = frame_new(data, len);
	if (!f)
		return; /* counted by frames.c */
	f->seq = seq;
	client_push(c, f, stream);
}

/* Keep a turn's frame for "resume" (a reference); past the cap the oldest go. */
static void replay_keep(struct session *s, struct frame *f)
{
	if (fq_push(&s->fan.replay, frame_ref(f)) < 0)
		return;
	while (s->fan.replay.bytes > CX_CAP_REPLAY && s->fan.replay.n > 1) {
		struct frame *old = fq_pop(&s->fan.replay);
		s->fan.replay_dropped = old->seq;
		frame_unref(old);
	}
}

/* f (the caller's reference, consumed) to every client following the stream
 * (not those waiting to resume): one copy, shared. */
static void broadcast(struct session *s, struct frame *f)
{
	if (s->turn)
		replay_keep(s, f);
	turnlog_frame(s, f);
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (!c->held)
			client_push(c, frame_ref(f), 1);
	frame_unref(f);
	fanout_update_flow(s);
}

static void broadcast_copy(struct session *s, const char *data, size_t len, uint64_t seq)
{
	struct frame *f = frame_new(data, len);
	if (!f)
		return; /* counted by frames.c */
	f->seq = seq;
	broadcast(s, f);
}

void fanout_obj(struct session *s, json_t *o)
{
	uint64_t seq = ++s->fan.seq;
	json_object_set_new(o, "seq", json_integer((json_int_t)seq));
	if (s->turn && !json_object_get(o, "turn"))
		json_object_set_new(o, "turn", json_integer((json_int_t)s->turn->id));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	broadcast_copy(s, txt, strlen(txt), seq);
	free(txt);
}

void fanout_jw(struct session *s, struct jw *w)
{
	uint64_t seq = ++s->fan.seq;
	jw_int(w, "seq", (long long)seq);
	if (s->turn)
		jw_int(w, "turn", (long long)s->turn->id);
	jw_close(w);
	size_t len = 0;
	char *txt = jw_take(w, &len);
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	broadcast_copy(s, txt, len, seq);
	free(txt);
}

void fanout_send_one(struct client *c, const char *txt, size_t len)
{
	client_send(c, txt, len, 0, 0);
	if (c->sess)
		fanout_update_flow(c->sess);
}

void fanout_to(struct session *s, struct client *c, json_t *o)
{
	uint64_t seq = ++s->fan.seq;
	json_object_set_new(o, "seq", json_integer((json_int_t)seq));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	client_send(c, txt, strlen(txt), seq, 0);
	free(txt);
}

void fanout_error(struct session *s, struct client *only, const char *code, const char *msg)
{
	json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg);
	if (only)
		fanout_to(s, only, o);
	else
		fanout_obj(s, o);
}

void fanout_line(struct session *s, const char *line, size_t len)
{
	struct frame *f = frame_splice_seq(line, len, s->fan.seq + 1);
	if (!f)
		return; /* not an object (agent_line.c said so first) or no memory (counted) */
	s->fan.seq++;
	broadcast(s, f);
}

void fanout_turn_begin(struct session *s)
{
	fq_clear(&s->fan.replay);
	s->fan.replay_dropped = 0;
	s->fan.restored = 0;
	for (struct client *c = s->fan.clients; c; c = c->next)
		c->held = 0;
}

void fanout_resume(struct session *s, struct client *c, uint64_t after)
{
	/* Exactly once: never a frame this client was already given; a gap
	 * only when it lacks a frame the cap dropped. */
	uint64_t from = after > c->last_seq ? after : c->last_seq;
	if (c->held)
		from = after;
	if (s->fan.replay_dropped > from) {
		/* Its seq is the last one dropped (a frame this client never had),
		 * not the session's next: the replay follows it, so seq still rises
		 * for the client, and one that skips what it has seen skips none. */
		uint64_t seq = s->fan.replay_dropped;
		char msg[200];
		snprintf(msg, sizeof msg, "frames up to seq %llu are no longer kept (replay cap); replaying from there",
			 (unsigned long long)seq);
		json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "type", "cortex.error", "code", "resume_gap", "message", msg,
				      "seq", (json_int_t)seq);
		char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (txt)
			client_send(c, txt, strlen(txt), seq, 0);
		else
			frames_count_alloc_failure();
		free(txt);
	}
	c->held = 0;
	/* After a restart the turn log gave back the last turn's frames (and,
	 * if it died with the old cortexd, the error that ends it): replayed
	 * below like a running turn's.  Without them, only the error. */
	if (!s->turn && (after > s->fan.seq || (s->lost_turn && !s->fan.replay.n))) {
		/* The client followed a cortexd that died (seq starts again at a
		 * restart): what it asks for went with that daemon. */
		json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", "cortexd_restarted", "message",
				      s->lost_turn ? "cortexd restarted while this turn ran; the rest of its answer is lost "
						     "(the message is in the transcript; send it again)"
						   : "cortexd restarted; the frames asked for are not kept across a restart");
		if (o && s->lost_turn)
			json_object_set_new(o, "turn", json_integer((json_int_t)s->lost_turn));
		fanout_to(s, c, o);
		return;
	}
	for (size_t i = 0; i < s->fan.replay.n; i++) {
		struct frame *f = fq_at(&s->fan.replay, i);
		if (f->seq > from)
			client_push(c, frame_ref(f), 1);
	}
	fanout_update_flow(s);
}

void fanout_lost_turn(struct session *s, uint64_t turn)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "type", "cortex.error", "code", "cortexd_restarted", "message",
			      "cortexd restarted while this turn ran; the rest of its answer is lost "
			      "(the message is in the transcript; send it again)",
			      "turn", (json_int_t)turn, "seq", (json_int_t)(s->fan.seq + 1));
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	struct frame *f = txt ? frame_new(txt, strlen(txt)) : NULL;
	free(txt);
	if (!f)
		return;
	f->seq = ++s->fan.seq;
	replay_keep(s, f);
	turnlog_frame(s, f);
	frame_unref(f);
	turnlog_end(s);
}

unsigned fanout_user_clients(struct cortexd *d, const char *user)
{
	unsigned n = 0;
	for (struct session *s = d->sessions; s; s = s->next)
		if (!strcmp(s->user, user))
			n += s->fan.nclients;
	return n;
}

void fanout_attach(struct session *s, struct client *c)
{
	c->sess = s;
	c->next = s->fan.clients;
	s->fan.clients = c;
	s->fan.nclients++;
	/* Joining mid-turn (or after a restart, the last turn's frames kept from
	 * the turn log): those frames come after "resume", exactly once, and
	 * in order -- nothing is sent to it before. */
	c->held = s->turn != NULL || (s->fan.restored && s->fan.replay.n);
}

void fanout_detach(struct client *c)
{
	struct session *s = c->sess;
	if (s) {
		for (struct client **pp = &s->fan.clients; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				s->fan.nclients--;
				break;
			}
		fanout_update_flow(s);
	}
	c->sess = NULL;
	fq_clear(&c->out);
	rxbuf_reset(&c->rx);
}

int fanout_writeable(struct client *c)
{
	if (c->cut) {
		static const char why[] = "client too slow";
		lws_close_reason(c->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *)why, sizeof why - 1);
		return -1;
	}
	if (c->sess)
		turnlog_flush(c->sess); /* what a client is given is in the log first */
	if (c->closing || fq_write_batch(c->wsi, &c->out) < 0)
		return -1;
	if (c->sess)
		fanout_update_flow(c->sess);
	return 0;
}

void fanout_close_all(struct session *s)
{
	for (struct client *c = s->fan.clients; c; c = c->next) {
		c->sess = NULL;
		c->closing = 1;
		if (c->wsi)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
	}
	s->fan.clients = NULL;
	s->fan.nclients = 0;
	fq_clear(&s->fan.replay);
}
