/* turnlog.c — see turnlog.h. */
#include "turnlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "caps.h"
#include "jobs.h"
#include "log.h"
#include "turnlog_ring.h"
#include "work.h"

static struct cortexd *sync_d; /* the daemon whose logs are synced */
static lws_sorted_usec_list_t sul_sync;
static int sync_armed, sync_inflight;
static uint64_t n_syncs, n_write_errors, n_opens;
static struct turnlog_counters counters;
_Static_assert(TURNLOG_SLOTS == TLR_SLOTS, "session.h's TURNLOG_SLOTS is the ring's slot count");

/* The log lives in the session's own dir (root's, 0711; with etcd on storage
 * every node reaches), so the node that takes a session over after its
 * owner died restores the frames of the turn that was running there.  The
 * sandbox can traverse that dir but not write it; the dir is checked to be
 * root's and not writable by others before anything in it is opened, and
 * nothing in it is followed (O_NOFOLLOW). */
static int dir_open(struct session *s)
{
	int dfd = open(s->dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		if (errno != ENOENT) /* no dir: the session never had a sandbox */
			log_warn("session %s: turn log: open %s: %s", s->id, s->dir, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(dfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
		log_warn("session %s: turn log: %s must be a dir of uid %u not writable by others", s->id,
			 s->dir, (unsigned)geteuid());
		close(dfd);
		return -1;
	}
	return dfd;
}

static void name_of(const struct session *s, const char *ext, char *out, size_t cap)
{
	(void)s;
	snprintf(out, cap, TURNLOG_NAME ".%s", ext);
}

/* Bytes per slot: the cap split in TLR_SLOTS (a test makes them small). */
static size_t slot_bytes = TURNLOG_CAP / TLR_SLOTS;
_Static_assert(CX_CAP_AGENT_LINE + (64u << 10) + 3 * TLR_HDR <= TURNLOG_CAP / TLR_SLOTS,
	       "a slot holds the longest frame an agent line makes");

void turnlog_test_slot_bytes(size_t n)
{
	slot_bytes = n ? n : TURNLOG_CAP / TLR_SLOTS;
}

/* Whether data=journal is among the options of the mount of dev (ext4's
 * super options in /proc/self/mountinfo): then file data goes through the
 * journal and only fsync orders it.  Unknown (no such line, no file) = yes.
 * Read once per device. */
static int data_journalled(dev_t dev)
{
	static dev_t last_dev;
	static int last = -1;
	if (last >= 0 && dev == last_dev)
		return last;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 1;
	char line[4096];
	int found = 0, journalled = 1;
	while (!found && fgets(line, sizeof line, f)) {
		unsigned maj, mnr;
		if (sscanf(line, "%*s %*s %u:%u", &maj, &mnr) != 2 || makedev(maj, mnr) != dev)
			continue;
		const char *sep = strstr(line, " - "); /* fstype source super-options */
		found = 1;
		journalled = !sep || strstr(sep, "data=journal") != NULL;
	}
	fclose(f);
	last_dev = dev;
	last = journalled;
	return journalled;
}

/* Whether an overwrite of the ring's allocated bytes is made durable by
 * sync_file_range and a device flush alone (the sync pass, below): ext4
 * (with or without a journal) writes such pages in place and changes no
 * metadata fdatasync would write.  Not with data=journal (the mount's or the
 * file's), nor on another file system (btrfs and others move data on write). */
static int range_sync_ok(int fd)
{
	struct statfs sf;
	struct stat st;
	int flags = 0;
	if (fstatfs(fd, &sf) < 0 || sf.f_type != EXT4_SUPER_MAGIC || fstat(fd, &st) < 0)
		return 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0 || (flags & FS_JOURNAL_DATA_FL))
		return 0;
	return !data_journalled(st.st_dev);
}

/* The ring, opened (created) on first use; which slot is newest and the
 * highest generation are read from the slots' first records, and the next
 * record starts a slot after it (what follows the newest one's last record
 * is not known without a scan: a restore makes that one, at load). */
static int log_open(struct session *s)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (t->fd > 0)
		return 0;
	int dfd = dir_open(s);
	if (dfd < 0)
		return -1;
	char name[80];
	name_of(s, "ring", name, sizeof name);
	int fd = openat(dfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	close(dfd);
	if (fd < 0) {
		log_warn("session %s: turn log %s: %s", s->id, name, strerror(errno));
		return -1;
	}
	t->gen = 0;
	t->slot = TLR_SLOTS - 1; /* none found: the first slot started is 0 */
	for (unsigned i = 0; i < TLR_SLOTS; i++) {
		unsigned char h[TLR_HDR];
		struct tlr_rec r;
		if (pread(fd, h, sizeof h, (off_t)(i * slot_bytes)) == (ssize_t)sizeof h &&
		    tlr_head_parse(h, &r) == 0 && r.type == 'S' && r.gen > t->gen) {
			t->gen = r.gen;
			t->slot = i;
		}
	}
	t->fd = fd;
	t->in_slot = 0;
	t->off = 0;
	/* What an earlier open wrote is not known to be whole: each slot grows
	 * (and is fdatasync'd) again from its start. */
	memset(t->ext, 0, sizeof t->ext);
	memset(t->dur, 0, sizeof t->dur);
	t->open_id = ++n_opens;
	t->range_ok = range_sync_ok(fd);
	t->legacy_maybe = 1; /* a cortexd of the text format may have left its files */
	return 0;
}

static void buf_add(struct session *s, const void *p, size_t n)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (t->len + n > t->alloc) {
		size_t want = t->alloc ? t->alloc : 4096;
		while (want < t->len + n)
			want *= 2;
		char *nb = realloc(t->buf, want);
		if (!nb) {
			n_write_errors++;
			return;
		}
		t->buf = nb;
		t->alloc = want;
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
	t->pending += n;
}

static void drop_pending(struct turnlog_state *t)
{
	for (unsigned i = 0; i < t->nbig; i++)
		frame_unref(t->big[i]);
	t->nbig = 0;
	t->len = t->pending = 0;
	t->end_gathered = 0;
}

/* buf with the big frames in their places, in one pwritev per IOV_MAX pieces,
 * where the slot's written bytes end.  Returns the bytes written; stops at
 * the first error. */
static size_t write_pending(struct session *s)
{
	static const char zeros[TURNLOG_GROW];
	struct turnlog_state *t = &s->fan.tlog;
	struct iovec iov[2 * TURNLOG_BIG_MAX + 2];
	int n = 0;
	size_t at = 0;
	for (unsigned i = 0; i < t->nbig; i++) {
		if (t->big_at[i] > at)
			iov[n++] = (struct iovec){t->buf + at, t->big_at[i] - at};
		at = t->big_at[i];
		iov[n++] = (struct iovec){(void *)frame_data(t->big[i]), t->big[i]->len};
	}
	if (t->len > at)
		iov[n++] = (struct iovec){t->buf + at, t->len - at};
	/* Past what the slot holds, it grows to the next TURNLOG_GROW with
	 * zeros (not a record: a restore stops there), so the next writes
	 * overwrite allocated blocks below the file's size, and the sync pass
	 * needs an fdatasync for the size and the blocks once per step, not
	 * once per pass.  What lies past the records of the slot being written
	 * is stale (another generation), so zeroing it loses nothing. */
	uint64_t end = t->off + t->pending;
	if (end > t->ext[t->slot]) {
		uint64_t to = (end + TURNLOG_GROW - 1) / TURNLOG_GROW * TURNLOG_GROW;
		if (to > slot_bytes)
			to = slot_bytes;
		if (to > end)
			iov[n++] = (struct iovec){(void *)zeros, (size_t)(to - end)};
	}
	off_t pos = (off_t)(t->slot * slot_bytes + t->off);
	size_t done = 0;
	int k = 0;
	while (k < n) {
		ssize_t w = pwritev(t->fd, iov + k, n - k, pos + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			n_write_errors++;
			log_warn("session %s: turn log write: %s", s->id, w < 0 ? strerror(errno) : "short write");
			break;
		}
		done += (size_t)w;
		size_t left = (size_t)w;
		while (k < n && left >= iov[k].iov_len)
			left -= iov[k++].iov_len;
		if (left) { /* a short write: the rest of that piece next */
			iov[k].iov_base = (char *)iov[k].iov_base + left;
			iov[k].iov_len -= left;
		}
	}
	/* From off, every byte up to off + done is written: no gap. */
	if (t->off + done > t->ext[t->slot])
		t->ext[t->slot] = t->off + done;
	return done < t->pending ? done : t->pending; /* (the zeros are no record) */
}

/* One log of a sync pass: a dup of its fd (the session may close its own
 * meanwhile) and, for an fdatasync, how far each slot was written, which
 * is durable once it returns 0. */
struct tl_sync_ent {
	int fd;
	int full;                  /* fdatasync (else sync_file_range: an overwrite) */
	int ok;
	char sid[40];
	uint64_t open_id;
	uint64_t ext[TURNLOG_SLOTS];
};

struct tl_sync_job {
	int n;
	struct tl_sync_ent e[];
};

/* Logs a sync pass starts writing back between two waits for a quiet CPU. */
#define TL_SYNC_QUIET_EVERY 8

/* Worker.  A log written only over its durable bytes (dur) needs its pages
 * written and the device's cache flushed, nothing of the inode: for those,
 * sync_file_range starts every write first (they go to the device
 * together) and waits for each; then the logs that grew get an fdatasync
 * each, and the device flush that every ext4 fdatasync ends with (with a
 * journal: a flush or a commit that flushes first) makes the overwrites
 * durable too, as their own fdatasync would have.  One fdatasync of an
 * overwritten log is that flush when no log grew.  A log whose sync failed
 * is counted and fdatasync'd whole by the pass after its next write. */
static void sync_run(void *arg)
{
	struct tl_sync_job *j = arg;
	const unsigned wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
	int ranged = -1, flushed = 0;
	for (int i = 0; i < j->n; i++)
		if (!j->e[i].full) {
			/* Starting writeback is the pass's CPU (~10 us a log): between
			 * logs it holds nothing, so it yields to the streams (work.h). */
			if (i && i % TL_SYNC_QUIET_EVERY == 0)
				work_quiet_point();
			(void)sync_file_range(j->e[i].fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		}
	for (int i = 0; i < j->n; i++)
		if (!j->e[i].full) {
			j->e[i].ok = sync_file_range(j->e[i].fd, 0, 0, wait) == 0;
			if (ranged < 0)
				ranged = i;
		}
	for (int i = 0; i < j->n; i++)
		if (j->e[i].full)
			flushed |= j->e[i].ok = fdatasync(j->e[i].fd) == 0;
	if (ranged >= 0 && !flushed && fdatasync(j->e[ranged].fd) != 0)
		for (int i = 0; i < j->n; i++)
			if (!j->e[i].full)
				j->e[i].ok = 0;
	for (int i = 0; i < j->n; i++)
		close(j->e[i].fd);
}

static void sync_done(void *arg)
{
	struct tl_sync_job *j = arg;
	for (int i = 0; i < j->n; i++) {
		struct tl_sync_ent *e = &j->e[i];
		if (!e->ok)
			counters.failed++;
		else if (e->full)
			counters.full++;
		else
			counters.ranged++;
		if (e->ok && !e->full)
			continue;
		struct session *s = sync_d ? session_find(sync_d, e->sid) : NULL;
		if (!s || s->fan.tlog.open_id != e->open_id)
			continue; /* closed (or opened again) since: its next open starts over */
		if (!e->ok) { /* synced again, whole, by the pass after its next write */
			s->fan.tlog.dirty = 1;
			memset(s->fan.tlog.dur, 0, sizeof s->fan.tlog.dur);
			continue;
		}
		for (unsigned k = 0; k < TURNLOG_SLOTS; k++)
			if (e->ext[k] > s->fan.tlog.dur[k])
				s->fan.tlog.dur[k] = e->ext[k];
	}
	free(j);
	sync_inflight = 0;
	n_syncs++;
	counters.passes++;
}

/* Every TURNLOG_SYNC_MS while logs are written: one job syncs a dup of
 * each written since the last one (a worker; the service thread never waits
 * for the disk). */
static void sync_pass(struct cortexd *d)
{
	int n = 0;
	for (struct session *s = d->sessions; s; s = s->next)
		n += s->fan.tlog.dirty && s->fan.tlog.fd > 0;
	if (!n)
		return;
	struct tl_sync_job *j = calloc(1, sizeof *j + (size_t)n * sizeof j->e[0]);
	if (!j)
		return;
	for (struct session *s = d->sessions; s && j->n < n; s = s->next) {
		struct turnlog_state *t = &s->fan.tlog;
		if (!t->dirty || t->fd <= 0)
			continue;
		struct tl_sync_ent *e = &j->e[j->n];
		e->fd = fcntl(t->fd, F_DUPFD_CLOEXEC, 3);
		if (e->fd < 0)
			continue;
		e->full = !t->range_ok;
		for (unsigned k = 0; k < TURNLOG_SLOTS; k++)
			e->full |= t->ext[k] > t->dur[k]; /* it grew: size and blocks to the disk */
		memcpy(e->ext, t->ext, sizeof e->ext);
		e->open_id = t->open_id;
		snprintf(e->sid, sizeof e->sid, "%s", s->id);
		j->n++;
		t->dirty = 0;
	}
	sync_inflight = 1;
	work_submit_lane(WORK_BACKGROUND, sync_run, sync_done, j);
}

static void sul_sync_cb(lws_sorted_usec_list_t *sul)
{
	(void)sul;
	sync_armed = 0;
	struct cortexd *d = sync_d;
	if (!d)
		return;
	if (sync_inflight) { /* the disk is slow: try again next period */
		sync_armed = 1;
		lws_sul_schedule(d->ctx, 0, &sul_sync, sul_sync_cb,
				 (lws_usec_t)TURNLOG_SYNC_MS * LWS_US_PER_MS);
		return;
	}
	sync_pass(d);
}

int turnlog_sync_now(struct cortexd *d)
{
	if (sync_inflight)
		return -1;
	sync_d = d;
	sync_pass(d);
	return 0;
}

void turnlog_get_counters(struct turnlog_counters *out) { *out = counters; }

static void arm_sync(struct session *s)
{
	s->fan.tlog.dirty = 1;
	if (sync_armed || !s->d->ctx || !sync_d)
		return;
	sync_armed = 1;
	lws_sul_schedule(s->d->ctx, 0, &sul_sync, sul_sync_cb,
			 (lws_usec_t)TURNLOG_SYNC_MS * LWS_US_PER_MS);
}

void turnlog_start(struct cortexd *d)
{
	sync_d = d;
}

int turnlog_flush(struct session *s)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (!t->pending)
		return 0;
	if (t->fd <= 0) { /* records are gathered only into an open log */
		drop_pending(t);
		n_write_errors++;
		return -1;
	}
	size_t want = t->pending;
	size_t done = write_pending(s);
	t->off += done;
	drop_pending(t);
	arm_sync(s);
	if (done == want)
		return 0;
	t->in_slot = 0; /* the slot ends at the gap: the next record starts another */
	return -1;
}

/* A record's header gathered (its payload, if any, is added by the caller). */
static void head_add(struct session *s, char type, uint8_t flags, uint64_t val, const void *data,
		     size_t len)
{
	unsigned char h[TLR_HDR];
	tlr_head(h, type, flags, s->fan.tlog.gen, val, len, tlr_sum(data, len));
	buf_add(s, h, sizeof h);
}

/* The next slot, overwritten in place from its start (no truncate, no page
 * freed): what is gathered goes to the current one first.  cont: the slot
 * goes on with the turn of the one before (a restore reads that first while
 * it is whole). */
static void slot_next(struct session *s, int cont)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (t->in_slot)
		(void)turnlog_flush(s);
	else
		drop_pending(t); /* nothing is gathered outside a slot */
	t->slot = (t->slot + 1) % TLR_SLOTS;
	t->gen++;
	t->off = 0;
	t->in_slot = 1;
	head_add(s, 'S', cont ? TLR_CONT : 0, t->turn, NULL, 0);
	head_add(s, 'L', 0, s->link.logged_seq, NULL, 0);
}

/* Room in the current slot for a record of len payload bytes (the next slot
 * when full): 0, or -1 when the log cannot be opened. */
static int room(struct session *s, size_t len)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (log_open(s) < 0) {
		n_write_errors++;
		return -1;
	}
	if (3 * TLR_HDR + len > slot_bytes) { /* (the caps keep real frames well inside) */
		n_write_errors++;
		log_warn("session %s: turn log: a record of %zu bytes exceeds a slot", s->id, len);
		return -1;
	}
	if (!t->in_slot || t->off + t->pending + TLR_HDR + len > slot_bytes)
		slot_next(s, t->turn != 0);
	return 0;
}

static void rec_add(struct session *s, char type, uint64_t val)
{
	if (room(s, 0) == 0)
		head_add(s, type, 0, val, NULL, 0);
}

int turnlog_link_seq(struct session *s, uint64_t seq)
{
	rec_add(s, 'L', seq);
	if (turnlog_flush(s) < 0)
		return -1;
	s->link.logged_seq = seq;
	return 0;
}

/* The text format's files (before turn.ring): gone once a new turn starts. */
static void legacy_remove(struct session *s)
{
	int dfd = dir_open(s);
	if (dfd < 0)
		return;
	const char *exts[] = {"log", "old"};
	for (int i = 0; i < 2; i++) {
		char name[80];
		name_of(s, exts[i], name, sizeof name);
		(void)unlinkat(dfd, name, 0);
	}
	close(dfd);
	s->fan.tlog.legacy_maybe = 0;
}

void turnlog_begin(struct session *s, uint64_t turn)
{
	struct turnlog_state *t = &s->fan.tlog;
	/* Small turns follow each other in one slot (restore keeps the last):
	 * no file-system call per turn on the service thread.  Past
	 * TURNLOG_KEEP the turn starts the next slot; the last turn's end still
	 * gathered (turnlog_end_batched) goes out first. */
	int cut = !t->in_slot || t->off + t->pending > TURNLOG_KEEP;
	if (!t->end_gathered)
		drop_pending(t);
	t->turn = turn;
	if (log_open(s) < 0)
		return;
	if (t->legacy_maybe)
		legacy_remove(s);
	if (cut)
		slot_next(s, 0);
	rec_add(s, 'T', turn);
	rec_add(s, 'L', s->link.logged_seq);
	/* Gathered, not written: the header goes out with the turn's first
	 * frames (the end of the link read that brings them, or before a client
	 * is given one), so the input leaves without a write of the log ahead
	 * of it.  A crash before then leaves no header of this turn: the
	 * restore knows it from its turn state (turn_restore), as it would one
	 * with no frame. */
}

void turnlog_frame(struct session *s, const struct frame *f)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (!t->turn)
		return; /* no turn since this cortexd loaded the session: nothing to continue */
	if (room(s, f->len) < 0)
		return;
	head_add(s, 'F', 0, f->seq, frame_data(f), f->len);
	if (f->len >= TURNLOG_BIG_MIN) {
		/* Referenced, not copied (a 64 KB delta's frame): written from
		 * where it lies at the flush, which comes before any client is
		 * given it. */
		t->big_at[t->nbig] = t->len;
		t->big[t->nbig++] = frame_ref((struct frame *)f);
		t->pending += f->len;
	} else {
		buf_add(s, frame_data(f), f->len);
	}
	if (t->pending >= TURNLOG_BUF || t->nbig == TURNLOG_BIG_MAX)
		turnlog_flush(s);
}

void turnlog_end(struct session *s)
{
	if (!s->fan.tlog.turn)
		return;
	rec_add(s, 'E', 0);
	turnlog_flush(s);
}

void turnlog_end_batched(struct session *s)
{
	if (s->fan.tlog.turn) {
		rec_add(s, 'E', 0);
		s->fan.tlog.end_gathered = 1;
	}
}

void turnlog_close(struct session *s, int remove)
{
	struct turnlog_state *t = &s->fan.tlog;
	if (!remove)
		turnlog_flush(s);
	if (t->fd > 0 && !remove && t->dirty)
		(void)fdatasync(t->fd); /* a stop, not the message path: the last frames on disk */
	if (t->fd > 0)
		close(t->fd);
	t->fd = -1;
	t->turn = 0;
	drop_pending(t);
	free(t->buf);
	t->buf = NULL;
	t->alloc = 0;
	if (!remove)
		return;
	int dfd = dir_open(s);
	if (dfd < 0)
		return;
	const char *exts[] = {"ring", "log", "old"};
	for (int i = 0; i < 3; i++) {
		char name[80];
		name_of(s, exts[i], name, sizeof name);
		(void)unlinkat(dfd, name, 0);
	}
	close(dfd);
}

/* ---- restore ---- */

/* The whole file (bounded), or NULL. */
static char *slurp(int dfd, const char *name, size_t *len)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	char *buf = NULL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= 2ull * TURNLOG_CAP && (buf = malloc((size_t)st.st_size))) {
		size_t got = 0;
		while (got < (size_t)st.st_size) {
			ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		*len = got;
	}
	close(fd);
	return buf;
}

struct restore {
	uint64_t link_seq; /* the last "L" */
	int has_link_seq;
	uint64_t turn; /* of the first header seen */
	int ended;
	uint64_t first; /* lowest seq kept */
	int cont;	/* the first header is "R": older frames were dropped */
};

/* One record, from either format: kind 'T' / 'R' (a turn's start, or the
 * start of a part that continues it), 'L', 'E' or 'F' (a frame). */
static void restore_rec(struct session *s, struct restore *r, char kind, uint64_t val,
			const char *data, size_t len)
{
	switch (kind) {
	case 'T':
	case 'R':
		if (r->turn && val != r->turn) { /* an older part of another turn: start over */
			fq_clear(&s->fan.replay);
			s->fan.seq = 0;
			r->first = 0;
			r->ended = 0;
			r->turn = 0;
		}
		if (!r->turn)
			r->cont = kind == 'R';
		r->turn = val;
		break;
	case 'L':
		r->link_seq = val;
		r->has_link_seq = 1;
		break;
	case 'E':
		r->ended = 1;
		break;
	case 'F': {
		if (!val)
			break;
		struct frame *f = frame_new(data, len);
		if (!f)
			break;
		f->seq = val;
		if (!r->first)
			r->first = val;
		if (val > s->fan.seq)
			s->fan.seq = val;
		fq_push(&s->fan.replay, f);
		break;
	}
	}
}

/* The text format (turn.old, turn.log before turn.ring; DATA/turnlog before
 * that): one record a line, "T <turn>", "R <turn>", "L <seq>", "E",
 * "<seq> <frame>". */
static void restore_buf(struct session *s, const char *b, size_t len, struct restore *r)
{
	const char *p = b, *end = b + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break; /* cut by a crash: that frame was never flushed whole */
		size_t n = (size_t)(nl - p);
		if (n >= 2 && (p[0] == 'T' || p[0] == 'R') && p[1] == ' ') {
			restore_rec(s, r, p[0], strtoull(p + 2, NULL, 10), NULL, 0);
		} else if (n > 2 && p[0] == 'L' && p[1] == ' ') {
			restore_rec(s, r, 'L', strtoull(p + 2, NULL, 10), NULL, 0);
		} else if (n == 1 && p[0] == 'E') {
			restore_rec(s, r, 'E', 0, NULL, 0);
		} else if (n > 2 && p[0] >= '0' && p[0] <= '9') {
			char *sp;
			uint64_t seq = strtoull(p, &sp, 10);
			if (sp < nl && *sp == ' ')
				restore_rec(s, r, 'F', seq, sp + 1, (size_t)(nl - sp - 1));
		}
		p = nl + 1;
	}
}

struct ring_ctx {
	struct session *s;
	struct restore *r;
};

static void ring_rec(void *arg, const struct tlr_rec *rec)
{
	struct ring_ctx *c = arg;
	if (rec->type == 'S') {
		/* A slot that goes on with its turn, as "R"; a slot that starts
		 * a turn has the turn's "T" next. */
		if (rec->flags & TLR_CONT)
			restore_rec(c->s, c->r, 'R', rec->val, NULL, 0);
		return;
	}
	restore_rec(c->s, c->r, rec->type, rec->val, rec->data, rec->len);
}

/* Before the log moved into the session's dir it was DATA/turnlog/<id>.{old,log}:
 * a cortexd upgraded in place reads (and then removes) what the old one wrote. */
static void restore_legacy(struct session *s, struct restore *r)
{
	cx_err err = CX_ERR_INIT;
	int dfd = jobs_private_dir(&s->d->cfg, TURNLOG_LEGACY_DIR, &err);
	if (dfd < 0)
		return;
	const char *exts[] = {"old", "log"};
	for (int i = 0; i < 2; i++) {
		char name[80];
		size_t len = 0;
		snprintf(name, sizeof name, "%s.%s", s->id, exts[i]);
		char *b = slurp(dfd, name, &len);
		if (b)
			restore_buf(s, b, len, r);
		free(b);
		(void)unlinkat(dfd, name, 0);
	}
	close(dfd);
}

uint64_t turnlog_restore(struct session *s, int *ended)
{
	*ended = 0;
	int dfd = dir_open(s);
	if (dfd < 0)
		return 0;
	struct restore r = {0};
	const char *exts[] = {"old", "log"};
	for (int i = 0; i < 2; i++) {
		char name[80];
		size_t len = 0;
		name_of(s, exts[i], name, sizeof name);
		char *b = slurp(dfd, name, &len);
		if (b)
			restore_buf(s, b, len, &r);
		free(b);
	}
	if (!r.turn)
		restore_legacy(s, &r);
	/* The ring last: it is newer than any file of the text format. */
	char name[80];
	size_t len = 0;
	name_of(s, "ring", name, sizeof name);
	char *b = slurp(dfd, name, &len);
	close(dfd);
	if (b) {
		struct ring_ctx c = {s, &r};
		(void)tlr_scan(b, len, slot_bytes, ring_rec, &c);
		free(b);
	}
	if (r.cont && r.first > 1)
		s->fan.replay_dropped =
		    r.first - 1; /* older frames of the turn went with a rotation */
	s->fan.tlog.turn = r.turn;
	s->link.logged_seq = r.link_seq;
	s->link.seq_known = r.has_link_seq;
	s->fan.restored = s->fan.replay.n > 0;
	*ended = r.ended;
	return r.turn;
}
