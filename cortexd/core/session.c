/* session.c — the session registry and what is persisted of a session.
 *
 * Layout on disk: DATA/sessions/<id>/{home,workspace,run}.  home and
 * workspace survive sleep; the sandbox's /tmp is a tmpfs and does not.
 * Store keys: sessions/<user>/<id>,
 * transcripts/<id>/<ts>-<turn>-<0 user|1 assistant>. */
#include "session.h"
#include "owner.h"

#include <errno.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "fanout.h"
#include "log.h"
#include "work.h"

const char *sess_state_name(enum sess_state s)
{
	static const char *const n[SS_N] = {"creating", "ready", "paused", "sleeping", "waking", "error"};
	return s < SS_N ? n[s] : "unknown";
}

struct session *session_new(struct cortexd *d, const char *id, const char *user, const char *surface)
{
	struct session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->d = d;
	snprintf(s->id, sizeof s->id, "%s", id);
	snprintf(s->user, sizeof s->user, "%s", user);
	snprintf(s->surface, sizeof s->surface, "%s", surface);
	snprintf(s->dir, sizeof s->dir, "%s/%s", d->cfg.sessions_dir, id);
	s->refs = 1;
	s->lc.ready_ms = -1;
	s->link.dirfd = -1;
	s->link.stdin_fd = s->link.rx_fd = s->link.rx_fd2 = s->link.out_fd = -1;
	s->fan.tlog.fd = -1;
	gateway_token_new(s->gw_token);
	s->prof = config_surface(&d->cfg, surface);
	if (!s->prof)
		s->prof = &d->cfg.surfaces[SURF_CHAT];
	return s;
}

void session_link(struct session *s)
{
	s->next = s->d->sessions;
	s->d->sessions = s;
}

struct session *session_find(struct cortexd *d, const char *id)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (!s->deleted && !strcmp(s->id, id))
			return s;
	return NULL;
}

/* The contract's names (disk_mb, memory_mb, pids, cpu: CPUs, 0 = no cap) and
 * cortexd's finer ones (cpu_weight, cpu_max_millicpu, the same cap). */
static json_t *limits_json(const struct session_spec *p)
{
	return json_pack("{s:I,s:I,s:I,s:f,s:i,s:i}", "disk_mb", (json_int_t)p->disk_mb, "memory_mb",
			 (json_int_t)p->memory_mb, "pids", (json_int_t)p->pids, "cpu",
			 (double)p->cpu_max_milli / 1000.0, "cpu_weight", (int)p->cpu_weight,
			 "cpu_max_millicpu", (int)p->cpu_max_milli);
}

json_t *session_to_json(const struct session *s)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i}", "id", s->id, "state", sess_state_name(s->lc.state),
			      "surface", s->surface, "created_at", (json_int_t)s->created_at, "last_active_at",
			      (json_int_t)s->last_active_at, "idle_sleep_s", s->idle_sleep_s);
	if (owner_enabled()) /* a shared store: the node that serves it */
		json_object_set_new(o, "node", json_string(owner_node_id()));
	if (s->lc.state == SS_ERROR && s->lc.error[0])
		json_object_set_new(o, "error", json_string(s->lc.error));
	static const char *const ag[] = {"none", "starting", "hot"};
	const char *agent = s->turn && s->turn->sent			  ? "busy"
			    : s->lc.agent_failed && s->link.state == AG_NONE ? "failed"
									    : ag[s->link.state];
	json_object_set_new(o, "agent", json_string(agent));
	/* Which agent process serves, and how many config changes it took live. */
	json_object_set_new(o, "agent_gen", json_integer((json_int_t)s->link.gen));
	json_object_set_new(o, "agent_pid", s->link.pid > 0 && s->link.state != AG_NONE ? json_integer(s->link.pid)
											: json_null());
	json_object_set_new(o, "config_live_applies", json_integer((json_int_t)s->link.live_applies));
	/* When a settings write (here, or on a node sharing the store) last marked its config. */
	json_object_set_new(o, "config_changed_at",
			    s->cc.changed_ms ? json_integer((json_int_t)s->cc.changed_ms) : json_null());
	json_object_set_new(o, "ready_ms", s->lc.ready_ms >= 0 ? json_real(s->lc.ready_ms) : json_null());
	json_object_set_new(o, "turns", json_integer((json_int_t)s->turns));
	json_object_set_new(o, "image", json_string(s->spec.image));
	json_object_set_new(o, "limits", limits_json(&s->spec));
	if (s->spec.repo_url[0])
		json_object_set_new(o, "repo", json_pack("{s:s,s:s,s:s}", "url", s->spec.repo_url, "ref",
							 s->spec.repo_ref, "state",
							 s->spec.repo_done ? "cloned" : "pending"));
	return o;
}

static json_t *spec_json(const struct session_spec *p)
{
	json_t *o = json_pack("{s:s,s:o,s:I}", "image", p->image, "limits", limits_json(p), "uid",
			      (json_int_t)p->uid);
	if (o && p->repo_url[0])
		json_object_set_new(o, "repo", json_pack("{s:s,s:s,s:s,s:b}", "url", p->repo_url, "ref",
							 p->repo_ref, "secret", p->repo_secret, "done",
							 p->repo_done));
	return o;
}

static void copy_json_str(char *dst, size_t cap, json_t *v)
{
	const char *t = json_string_value(v);
	if (t)
		snprintf(dst, cap, "%s", t);
}

void session_spec_load(struct session *s, json_t *o)
{
	struct session_spec *p = &s->spec;
	copy_json_str(p->image, sizeof p->image, json_object_get(o, "image"));
	json_t *l = json_object_get(o, "limits");
	json_t *v;
	if ((v = json_object_get(l, "disk_mb")) && json_is_integer(v))
		p->disk_mb = (uint64_t)json_integer_value(v);
	if ((v = json_object_get(l, "cpu_weight")) && json_is_integer(v))
		p->cpu_weight = (uint32_t)json_integer_value(v);
	if ((v = json_object_get(l, "cpu_max_millicpu")) && json_is_integer(v))
		p->cpu_max_milli = (uint32_t)json_integer_value(v);
	if ((v = json_object_get(l, "memory_mb")) && json_is_integer(v))
		p->memory_mb = (uint64_t)json_integer_value(v);
	if ((v = json_object_get(l, "pids")) && json_is_integer(v))
		p->pids = (uint64_t)json_integer_value(v);
	if ((v = json_object_get(o, "uid")) && json_is_integer(v))
		p->uid = (uid_t)json_integer_value(v);
	json_t *r = json_object_get(o, "repo");
	if (json_is_object(r)) {
		copy_json_str(p->repo_url, sizeof p->repo_url, json_object_get(r, "url"));
		copy_json_str(p->repo_ref, sizeof p->repo_ref, json_object_get(r, "ref"));
		copy_json_str(p->repo_secret, sizeof p->repo_secret, json_object_get(r, "secret"));
		p->repo_done = json_is_true(json_object_get(r, "done"));
	}
}

/* The bitmap, made on first use; NULL on ENOMEM. */
static unsigned char *uid_map(struct cortexd *d)
{
	if (!d->uid_used)
		d->uid_used = calloc(d->cfg.sandbox_uid_count / 8 + 1, 1);
	return d->uid_used;
}

uid_t session_uid_alloc(struct cortexd *d) { return session_uid_alloc_from(d, 0); }

uid_t session_uid_alloc_from(struct cortexd *d, uint32_t start)
{
	const config *c = &d->cfg;
	uint32_t n = c->sandbox_uid_count;
	unsigned char *used = uid_map(d);
	if (!used || !n)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = (start + i) % n; /* from start, wrapping */
		if (!(used[k / 8] & (1u << (k % 8)))) {
			used[k / 8] |= (unsigned char)(1u << (k % 8));
			return (uid_t)(c->sandbox_uid_base + k);
		}
	}
	return 0;
}

int session_uid_take(struct cortexd *d, uid_t uid)
{
	const config *c = &d->cfg;
	uint32_t k = (uint32_t)(uid - c->sandbox_uid_base);
	unsigned char *used = uid_map(d);
	if (uid < c->sandbox_uid_base || k >= c->sandbox_uid_count || !used)
		return 0;
	if (used[k / 8] & (1u << (k % 8)))
		return 1;
	used[k / 8] |= (unsigned char)(1u << (k % 8));
	return 0;
}

void session_uid_put(struct cortexd *d, uid_t uid)
{
	const config *c = &d->cfg;
	uint32_t k = (uint32_t)(uid - c->sandbox_uid_base);
	if (uid >= c->sandbox_uid_base && k < c->sandbox_uid_count && d->uid_used)
		d->uid_used[k / 8] &= (unsigned char)~(1u << (k % 8));
}

/* What is persisted is the session's identity; its live state is not
 * (a restarted cortexd has no sandboxes: every session comes back sleeping).
 * The row's key into key; the value (malloc'd), or NULL on ENOMEM. */
char *session_record(const struct session *s, char *key, size_t cap)
{
	snprintf(key, cap, "sessions/%s/%s", s->user, s->id);
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i}", "id", s->id, "user", s->user, "surface", s->surface,
			      "created_at", (json_int_t)s->created_at, "last_active_at", (json_int_t)s->last_active_at,
			      "idle_sleep_s", s->idle_sleep_s);
	json_t *sp = spec_json(&s->spec);
	if (o && sp)
		json_object_update(o, sp);
	if (o && s->network)
		json_object_set(o, "network", s->network);
	json_decref(sp);
	char *v = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return v;
}

void session_unlink(struct session *s)
{
	for (struct session **pp = &s->d->sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	s->next = NULL;
}

void session_unref(struct session *s)
{
	if (--s->refs > 0)
		return;
	lws_sul_cancel(&s->lc.sul_idle);
	lws_sul_cancel(&s->lc.sul_grace);
	lws_sul_cancel(&s->link.sul_boot);
	lws_sul_cancel(&s->link.sul_apply);
	lws_sul_cancel(&s->link.sul_ack);
	lws_sul_cancel(&s->lc.sul_image);
	fq_clear(&s->fan.replay);
	if (s->fan.tlog.fd > 0)
		close(s->fan.tlog.fd);
	free(s->fan.tlog.buf);
	for (unsigned i = 0; i < s->fan.tlog.nbig; i++)
		frame_unref(s->fan.tlog.big[i]);
	if (s->link.dirfd >= 0)
		close(s->link.dirfd);
	agent_stdin_reset(s);
	free(s->link.ws_head);
	free(s->link.tx);
	sodium_memzero(s->gw_token, sizeof s->gw_token);
	free(s->next_text);
	json_decref(s->rt.env);
	json_decref(s->network);
	if (s->link.pend_cfg)
		cconfig_unref(s->link.pend_cfg);
	if (s->uid_held) /* its sandbox is gone (a delete's stop job held a reference) */
		session_uid_put(s->d, s->spec.uid);
	free(s);
}

void session_timer(struct session *s, lws_sorted_usec_list_t *sul, sul_cb_t cb, uint64_t us)
{
	if (s->d->ctx)
		lws_sul_schedule(s->d->ctx, 0, sul, cb, (lws_usec_t)us);
}

/* ---- store writes off the critical path (transcripts, turn records) ----
 *
 * Group commit: puts queue on the service thread; one batch at a time is
 * written by a background-lane job as one transaction (one synced commit for
 * up to PUT_BATCH_MAX puts, however many sessions they come from).  The job
 * first waits for a quiet CPU (work.h), so under a burst of turns the
 * streams get the CPU before the commit does.  While a
 * batch is being written the next one gathers, so under load the commits
 * per turn fall from three towards a fraction of one, and when idle a put is
 * written at once.  A batch that fails is retried put by put, so one bad
 * value fails alone; every failure is reported (put_failed). */

/* SQLite takes any number of ops in one transaction, and the commit (one
 * fsync of the WAL) is what costs: 100 per batch capped the writer at about
 * 7000 puts/s on a loaded 2-core host, fewer than 50 mini-agent sessions
 * make (5 puts per turn), and the queue grew without bound (docs/reliability.md,
 * "Soak").  etcd caps a txn at --max-txn-ops (128 by default; the store
 * takes one for itself) and a request at 1.5 MiB, so with it a batch is at
 * most PUT_BATCH_MAX_ETCD puts and about PUT_BATCH_BYTES_ETCD bytes (a batch
 * refused anyway is retried put by put, as any failed batch). */
#define PUT_BATCH_MAX 2000
#define PUT_BATCH_MAX_ETCD 100
#define PUT_BATCH_BYTES_ETCD (1024u * 1024u)

/* Whether one more put fits a batch of n puts and bytes. */
static int put_batch_fits(const struct cortexd *d, size_t n, size_t bytes)
{
	if (strcmp(d->cfg.store_kind, "etcd") == 0)
		return n < PUT_BATCH_MAX_ETCD && bytes < PUT_BATCH_BYTES_ETCD;
	return n < PUT_BATCH_MAX;
}

struct put_item {
	struct put_item *next;
	char key[300];
	char sid[40];       /* the session the write belongs to ("" = none) */
	char *val;
	int failed;
	char err[200];      /* logged, never shown to clients (host paths) */
};

struct put_batch {
	struct cortexd *d;  /* not owned; read on the service thread only (put_done) */
	store *st;
	struct put_item *items;
	size_t n;
	size_t coalesced;   /* set by the worker, read in put_done */
};

/* FNV-1a: the key hash of put_coalesce's table. */
static uint32_t put_key_hash(const char *k)
{
	uint32_t h = 2166136261u;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h;
}

/* Keep only the last put of each key in ops[0..n), in their order; returns
 * the count kept.  A batch is one transaction, so what it commits is the
 * same either way; what it saves is the rows written twice in one commit: a
 * session's turnstate "running" and, when its turn ended before the batch
 * was taken, the idle state after it (one put in five at N=100,
 * docs/benchmarks.md "Concurrency").  etcd also refuses a txn that names a
 * key twice ("duplicate key given in txn request"), which made such a batch
 * fall back to one put at a time.  Out of memory: ops left as they are. */
static size_t put_coalesce(store_op *ops, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n)
		cap <<= 1;
	cleanup_free uint32_t *slot = calloc(cap, sizeof *slot); /* index + 1; 0 = empty */
	if (!slot || n < 2)
		return n;
	/* Walk from the end: the first time a key is seen is its last put. */
	cleanup_free unsigned char *drop = calloc(n, 1);
	if (!drop)
		return n;
	for (size_t i = n; i-- > 0;) {
		size_t h = put_key_hash(ops[i].key) & (cap - 1);
		for (; slot[h]; h = (h + 1) & (cap - 1))
			if (strcmp(ops[slot[h] - 1].key, ops[i].key) == 0)
				break;
		if (slot[h])
			drop[i] = 1;
		else
			slot[h] = (uint32_t)i + 1;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!drop[i])
			ops[k++] = ops[i];
	return k;
}

/* Write n queued puts as one transaction; returns how many puts were folded
 * into a later put of the same key (put_coalesce).  If the transaction
 * fails, every put is tried alone in queue order, as if never folded. */
static size_t put_write(store *st, struct put_item *items, size_t n)
{
	cleanup_free store_op *ops = calloc(n, sizeof *ops);
	size_t i = 0, kept = 0;
	for (struct put_item *it = items; ops && it && i < n; it = it->next, i++)
		ops[i] = (store_op){.kind = STORE_PUT, .key = it->key, .val = it->val, .len = strlen(it->val)};
	cx_err err = CX_ERR_INIT;
	if (!ops)
		snprintf(err.msg, sizeof err.msg, "out of memory");
	else {
		kept = put_coalesce(ops, i);
		if (store_txn(st, ops, kept, &err) == 0)
			return i - kept;
	}
	for (struct put_item *it = items; it; it = it->next) {
		cx_err e1 = CX_ERR_INIT;
		if (n > 1 && store_put(st, it->key, it->val, strlen(it->val), &e1) == 0)
			continue;
		it->failed = 1;
		snprintf(it->err, sizeof it->err, "%s", n > 1 ? e1.msg : err.msg);
	}
	return 0;
}

static void put_run(void *arg)
{
	struct put_batch *b = arg;
	b->coalesced = put_write(b->st, b->items, b->n);
}

/* A backlog of puts (a commit that took long under load) leaves the heap
 * fragmented once written: when what the puts hold falls to a quarter of its
 * high-water mark after at least PUT_TRIM_MIN, the free pages go back to the
 * kernel (as frames.c does for frames).  Measured in docs/reliability.md, "Soak". */
#define PUT_TRIM_MIN (1u << 20)

static size_t put_size(const struct put_item *it) { return sizeof *it + strlen(it->val) + 1; }

static void put_trim(struct cortexd *d)
{
	if (d->puts.bytes_high - d->puts.bytes >= PUT_TRIM_MIN && d->puts.bytes < d->puts.bytes_high / 4) {
		malloc_trim(0);
		d->puts.trims++;
		d->puts.bytes_high = d->puts.bytes;
	}
}

/* Service thread.  A write that failed is never silent: it is counted, the
 * daemon reports unhealthy until a later write succeeds, and the session's
 * clients get cortex.error (an acknowledged turn must not just be missing
 * from the transcript). */
static void put_report(struct cortexd *d, struct put_item *items)
{
	while (items) {
		struct put_item *it = items;
		items = it->next;
		if (it->failed) {
			d->store_write_failures++;
			d->store_failing = 1;
			snprintf(d->store_error, sizeof d->store_error, "%s", it->err);
			log_error("store write %s: %s", it->key, it->err);
			struct session *s = it->sid[0] ? session_find(d, it->sid) : NULL;
			if (s && !s->deleted) {
				/* The store's own message may name host paths: logs only. */
				fanout_error(s, NULL, "store_write_failed",
					     "this turn could not be saved: the store cannot write (disk full or I/O error)");
			}
		} else {
			d->store_failing = 0;
		}
		d->puts.bytes -= put_size(it);
		free(it->val);
		free(it);
	}
	put_trim(d);
}

static void put_done(void *arg);

/* Hand the next batch (up to PUT_BATCH_MAX queued puts) to a worker. */
static void put_kick(struct cortexd *d)
{
	if (d->puts.inflight || !d->puts.head || d->stop)
		return; /* one batch at a time; at shutdown store_put_flush writes the rest */
	struct put_batch *b = calloc(1, sizeof *b);
	if (!b)
		return; /* retried at the next put or batch end */
	b->d = d;
	b->st = d->st;
	b->items = d->puts.head;
	struct put_item *last = b->items;
	size_t bytes = put_size(last);
	for (b->n = 1; put_batch_fits(d, b->n, bytes) && last->next; b->n++) {
		last = last->next;
		bytes += put_size(last);
	}
	d->puts.head = last->next;
	if (!d->puts.head)
		d->puts.tail = NULL;
	last->next = NULL;
	d->puts.queued -= b->n;
	d->puts.inflight = 1;
	d->puts.batches++;
	d->puts.written += b->n;
	work_submit_lane(WORK_BACKGROUND, put_run, put_done, b);
}

static void put_done(void *arg)
{
	struct put_batch *b = arg;
	struct cortexd *d = b->d;
	d->puts.inflight = 0;
	d->puts.coalesced += b->coalesced;
	put_report(d, b->items);
	free(b);
	put_kick(d);
}

void store_put_later_str(struct cortexd *d, const char *sid, const char *key, char *val)
{
	struct put_item *it = val ? malloc(sizeof *it) : NULL;
	if (!it) {
		free(val);
		d->store_write_failures++;
		log_error("store write %s: out of memory", key);
		return;
	}
	/* (not calloc: the 560-byte item is filled here, err only on failure) */
	it->next = NULL;
	it->failed = 0;
	it->err[0] = 0;
	it->val = val;
	snprintf(it->key, sizeof it->key, "%s", key);
	snprintf(it->sid, sizeof it->sid, "%s", sid ? sid : "");
	if (d->puts.tail)
		d->puts.tail->next = it;
	else
		d->puts.head = it;
	d->puts.tail = it;
	d->puts.queued++;
	d->puts.bytes += put_size(it);
	if (d->puts.bytes > d->puts.bytes_high)
		d->puts.bytes_high = d->puts.bytes;
	put_kick(d);
}

void store_put_later(struct cortexd *d, const char *sid, const char *key, json_t *o)
{
	char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	store_put_later_str(d, sid, key, val);
}

void store_put_flush(struct cortexd *d)
{
	while (d->puts.head) {
		struct put_item *items = d->puts.head, *last = items;
		size_t n = 1, bytes = put_size(last);
		for (; put_batch_fits(d, n, bytes) && last->next; n++) {
			last = last->next;
			bytes += put_size(last);
		}
		d->puts.head = last->next;
		last->next = NULL;
		d->puts.queued -= n;
		d->puts.coalesced += put_write(d->st, items, n);
		put_report(d, items);
	}
	d->puts.tail = NULL;
}

/* transcripts/<session>/<ts>-<turn>-<0 user | 1 assistant>:
 * {"role","text","ts","turn"}.  Written as a string, the bytes jansson's
 * json_pack + json_dumps made (a test compares them): one malloc instead of
 * an object of four values, its hash table and a dump, per message on the
 * service thread.  Text that is not UTF-8 goes the jansson way, which
 * refuses it (as before, an "out of memory" store write failure). */
void transcript_append(const struct session *s, const char *role, const char *text, uint64_t turn)
{
	char key[200];
	int64_t ts = cx_wall_ms();
	snprintf(key, sizeof key, "transcripts/%s/%015lld-%06llu-%d", s->id, (long long)ts,
		 (unsigned long long)turn, strcmp(role, "user") ? 1 : 0);
	size_t lr = cx_json_str_len(role), lt = cx_json_str_len(text);
	if (!lr || !lt) {
		store_put_later(s->d, s->id, key, json_pack("{s:s,s:s,s:I,s:I}", "role", role, "text", text, "ts",
							     (json_int_t)ts, "turn", (json_int_t)turn));
		return;
	}
	char tail[64];
	int nt = snprintf(tail, sizeof tail, ",\"ts\":%lld,\"turn\":%lld}", (long long)ts, (long long)turn);
	size_t cap = sizeof "{\"role\":,\"text\":" + lr + lt + (size_t)nt;
	char *v = malloc(cap), *p = v;
	if (v) {
		p = cx_json_str_put(stpcpy(p, "{\"role\":"), role);
		p = cx_json_str_put(stpcpy(p, ",\"text\":"), text);
		memcpy(p, tail, (size_t)nt + 1);
	}
	store_put_later_str(s->d, s->id, key, v);
}
