/* fanout.c — see fanout.h. */
#include "fanout.h"

#include <string.h>

#include "caps.h"

void fanout_update_flow(struct session *s)
{
	if (!s->link.wsi)
		return;
	size_t worst = 0;
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (c->out.bytes > worst)
			worst = c->out.bytes;
	if (!s->fan.rx_paused && worst > CX_CAP_CLIENT_QUEUE) {
		s->fan.rx_paused = 1;
		lws_rx_flow_control(s->link.wsi, 0);
	} else if (s->fan.rx_paused && worst <= CX_CAP_CLIENT_QUEUE / 2) {
		s->fan.rx_paused = 0;
		lws_rx_flow_control(s->link.wsi, 1);
	}
}

/* stream: a frame of the session's stream (not an error to this client
 * alone), which resume counts as given. */
static void client_push(struct client *c, struct frame *f, int stream)
{
	if (stream && f->seq > c->last_seq)
		c->last_seq = f->seq;
	fq_push(&c->out, f);
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

/* Keep a turn's frame for "resume"; past the cap the oldest go. */
static void replay_keep(struct session *s, const char *data, size_t len, uint64_t seq)
{
	struct frame *f = frame_new(data, len);
	if (!f)
		return;
	f->seq = seq;
	fq_push(&s->fan.replay, f);
	while (s->fan.replay.bytes > CX_CAP_REPLAY && s->fan.replay.head != s->fan.replay.tail) {
		struct frame *old = fq_pop(&s->fan.replay);
		s->fan.replay_dropped = old->seq;
		free(old);
	}
}

/* To every client following the stream (not those waiting to resume). */
static void broadcast(struct session *s, const char *data, size_t len, uint64_t seq)
{
	if (s->turn)
		replay_keep(s, data, len, seq);
	for (struct client *c = s->fan.clients; c; c = c->next)
		if (!c->held)
			client_send(c, data, len, seq, 1);
	fanout_update_flow(s);
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
	broadcast(s, txt, strlen(txt), seq);
	free(txt);
}

void fanout_error(struct session *s, struct client *only, const char *code, const char *msg)
{
	json_t *o = json_pack("{s:s,s:s,s:s}", "type", "cortex.error", "code", code, "message", msg);
	if (!only) {
		fanout_obj(s, o);
		return;
	}
	uint64_t seq = ++s->fan.seq;
	json_object_set_new(o, "seq", json_integer((json_int_t)seq));
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!txt) {
		frames_count_alloc_failure();
		return;
	}
	client_send(only, txt, strlen(txt), seq, 0);
	free(txt);
}

void fanout_line(struct session *s, const char *line, size_t len)
{
	struct frame *f = frame_splice_seq(line, len, s->fan.seq + 1);
	if (!f)
		return; /* not an object (agent_line.c said so first) or no memory (counted) */
	s->fan.seq++;
	broadcast(s, frame_data(f), f->len, f->seq);
	free(f);
}

void fanout_turn_begin(struct session *s)
{
	fq_clear(&s->fan.replay);
	s->fan.replay_dropped = 0;
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
		char msg[200];
		snprintf(msg, sizeof msg, "frames up to seq %llu are no longer kept (replay cap); replaying from there",
			 (unsigned long long)s->fan.replay_dropped);
		fanout_error(s, c, "resume_gap", msg);
	}
	c->held = 0;
	for (struct frame *f = s->fan.replay.head; f; f = f->next)
		if (f->seq > from)
			client_send(c, frame_data(f), f->len, f->seq, 1);
	fanout_update_flow(s);
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
	/* Joining mid-turn: that turn's frames come after "resume", exactly once. */
	c->held = s->turn != NULL;
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
	if (c->closing || fq_write_one(c->wsi, &c->out) < 0)
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
