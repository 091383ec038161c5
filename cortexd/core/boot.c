/* boot.c — see boot.h. */
#include "boot.h"

#include <string.h>

#include "log.h"

static uint64_t n_timeouts, n_retries, n_failures, n_queued_total;

void boot_count_timeout(int retried)
{
	n_timeouts++;
	if (retried)
		n_retries++;
}
void boot_count_failure(void) { n_failures++; }

static int max_booting(const struct cortexd *d)
{
	return d->cfg.agent_max_booting > 0 ? d->cfg.agent_max_booting : 1 << 30;
}

static unsigned user_booting(const struct cortexd *d, const char *user)
{
	unsigned n = 0;
	for (const struct session *s = d->sessions; s; s = s->next)
		if (s->lc.boot_slot && !strcmp(s->user, user))
			n++;
	return n;
}

static void unqueue(struct session *s)
{
	struct cortexd *d = s->d;
	for (struct session **p = &d->boot_head; *p; p = &(*p)->lc.boot_next) {
		if (*p != s)
			continue;
		*p = s->lc.boot_next;
		if (d->boot_tail == s) {
			d->boot_tail = NULL;
			for (struct session *t = d->boot_head; t; t = t->lc.boot_next)
				d->boot_tail = t;
		}
		break;
	}
	s->lc.boot_next = NULL;
	s->lc.boot_queued = 0;
	d->boot_queued--;
}

/* The first waiting session whose user has the fewest boots running. */
static struct session *next_in_line(struct cortexd *d)
{
	struct session *best = NULL;
	unsigned best_n = 0;
	for (struct session *s = d->boot_head; s; s = s->lc.boot_next) {
		unsigned n = user_booting(d, s->user);
		if (!best || n < best_n) {
			best = s;
			best_n = n;
		}
		if (!n)
			break;
	}
	return best;
}

static void take(struct session *s)
{
	s->lc.boot_slot = 1;
	s->d->booting++;
}

static void sul_kick_cb(lws_sorted_usec_list_t *sul)
{
	struct cortexd *d = lws_container_of(sul, struct cortexd, sul_boot_kick);
	struct session *s;
	while ((int)d->booting < max_booting(d) && (s = next_in_line(d))) {
		unqueue(s);
		take(s); /* granted: its next pass starts the agent (or gives the slot back) */
		if (!s->deleted && d->reconcile)
			d->reconcile(s);
		if (s->lc.boot_slot && s->link.state != AG_STARTING)
			boot_end(s); /* it no longer wanted a boot */
		session_unref(s); /* the line's reference */
	}
}

static void kick(struct cortexd *d)
{
	if (!d->boot_head || (int)d->booting >= max_booting(d))
		return;
	if (d->ctx)
		lws_sul_schedule(d->ctx, 0, &d->sul_boot_kick, sul_kick_cb, 1);
	else
		sul_kick_cb(&d->sul_boot_kick); /* unit tests: no event loop */
}

int boot_admit(struct session *s)
{
	struct cortexd *d = s->d;
	if (s->lc.boot_slot)
		return 1;
	if (!s->lc.boot_queued && !d->boot_head && (int)d->booting < max_booting(d)) {
		take(s);
		return 1;
	}
	if (!s->lc.boot_queued) {
		s->lc.boot_queued = 1;
		s->lc.boot_next = NULL;
		if (d->boot_tail)
			d->boot_tail->lc.boot_next = s;
		else
			d->boot_head = s;
		d->boot_tail = s;
		d->boot_queued++;
		n_queued_total++;
		s->refs++;
		log_debug("session %s: agent boot waits in line (%u booting, %u waiting)", s->id, d->booting,
			  d->boot_queued);
	}
	kick(d);
	return 0;
}

void boot_end(struct session *s)
{
	if (!s->lc.boot_slot)
		return;
	s->lc.boot_slot = 0;
	s->d->booting--;
	kick(s->d);
}

void boot_forget(struct session *s)
{
	if (s->link.state != AG_STARTING)
		boot_end(s);
	if (s->lc.boot_queued) {
		unqueue(s);
		session_unref(s); /* last: it may free s */
	}
}

void boot_get_stats(const struct cortexd *d, struct boot_stats *out)
{
	out->booting = d->booting;
	out->queued = d->boot_queued;
	out->timeouts = n_timeouts;
	out->retries = n_retries;
	out->failures = n_failures;
	out->queued_total = n_queued_total;
}
