/* Unit tests: the service thread's loop (edge/evloop.c) on lws's own loop,
 * with poll() and with epoll (our lws patch 0004, LWS_SERVER_OPTION_EPOLL).
 *
 * Every case runs on both, with the same assertions, so a difference is
 * epoll's.  Covered: epoll is really used (an eventpoll descriptor appears
 * with the context and goes with it); a readable descriptor is serviced
 * with its bytes; POLLOUT asked for 200 times gives 200 WRITEABLE callbacks
 * and none unasked (epoll's interest follows lws's table, including a
 * request made and dropped within one pass); a descriptor lws closed while
 * a dup() keeps its file alive sends nothing to the wsi that reuses its
 * number; a regular file (which epoll refuses) still works, through the
 * fallback to poll(); a sul timer and lws_cancel_service() from another
 * thread end a wait; a timer less than 1 ms away is waited for, not spun
 * for (patch 0005). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"

struct probe {
	int rx;            /* RAW_RX callbacks */
	size_t rx_bytes;
	int writeable;     /* RAW_WRITEABLE callbacks */
	int want_more;     /* ask for POLLOUT again from WRITEABLE this many times */
	int close_on_rx;   /* return -1 from RAW_RX: lws closes the wsi */
	int closed;
};

static int cancelled;

static int cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct probe *p = wsi ? lws_get_opaque_user_data(wsi) : NULL;
	(void)user;
	(void)in;
	if (!p) /* protocol-wide events: the vhost's, the event pipe's */
		return reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED ? (cancelled++, 0) : 0;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
	case LWS_CALLBACK_RAW_RX: {
		char buf[256];
		ssize_t n = reason == LWS_CALLBACK_RAW_RX ? (ssize_t)len
							  : read(lws_get_socket_fd(wsi), buf, sizeof buf);
		p->rx++;
		if (n > 0)
			p->rx_bytes += (size_t)n;
		return p->close_on_rx ? -1 : 0;
	}
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
	case LWS_CALLBACK_RAW_WRITEABLE:
		p->writeable++;
		if (p->want_more > 0) {
			p->want_more--;
			lws_callback_on_writable(wsi);
		}
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
	case LWS_CALLBACK_RAW_CLOSE:
		p->closed++;
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols protocols[] = {{"probe", cb, 0, 0, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

struct loop {
	struct evloop l;
	struct lws_context *ctx;
	struct lws_vhost *vh;
};

static int eventpolls(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d));) {
		char p[64], t[64];
		snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(p, t, sizeof t - 1);
		if (k > 0) {
			t[k] = '\0';
			n += !strcmp(t, "anon_inode:[eventpoll]");
		}
	}
	closedir(d);
	return n;
}

static void open_loop(struct loop *L, enum evloop_kind kind)
{
	struct lws_context_creation_info info;
	cx_err err = {0};
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	assert_int_equal(evloop_open(&L->l, kind, &info, &err), 0);
	assert_non_null(L->ctx = lws_create_context(&info));
	assert_non_null(L->vh = lws_create_vhost(L->ctx, &info));
}

/* A wake-up after `ms` at the latest: a sul that counts. */
static lws_sorted_usec_list_t tick, guard;
static int ticks;
static int64_t tick_at;
static void on_tick(lws_sorted_usec_list_t *s)
{
	(void)s;
	ticks++;
	tick_at = lws_now_usecs();
}
static void on_guard(lws_sorted_usec_list_t *s)
{
	(void)s;
}

/* Turns the loop until *flag reaches want or ~2 s pass (a guard timer
 * bounds each wait, so a missing event fails the assertion after it). */
static void turn_until(struct loop *L, const int *flag, int want)
{
	for (int64_t end = lws_now_usecs() + 2000000; *flag < want && lws_now_usecs() < end;) {
		lws_sul_schedule(L->ctx, 0, &guard, on_guard, 50000);
		assert_int_equal(evloop_service(&L->l, L->ctx), 0);
	}
	lws_sul_cancel(&guard);
}

static void turn_for(struct loop *L, int ms)
{
	int t0 = ticks;
	lws_sul_schedule(L->ctx, 0, &tick, on_tick, (lws_usec_t)ms * 1000);
	turn_until(L, &ticks, t0 + 1);
}

static struct lws *adopt(struct loop *L, int fd, int socket, struct probe *p)
{
	lws_adopt_desc_t ad = {.vh = L->vh,
			       .type = socket ? LWS_ADOPT_SOCKET : LWS_ADOPT_RAW_FILE_DESC,
			       .vh_prot_name = "probe",
			       .opaque = p};
	if (socket)
		ad.fd.sockfd = fd;
	else
		ad.fd.filefd = fd;
	struct lws *w = lws_adopt_descriptor_vhost_via_info(&ad);
	assert_non_null(w);
	return w;
}

static void each_kind(void (*body)(enum evloop_kind))
{
	body(EVLOOP_POLL);
	body(EVLOOP_EPOLL);
}

/* ---------------------------------------------------------------- cases */

static void uses_epoll(enum evloop_kind kind)
{
	struct loop L;
	int before = eventpolls();
	open_loop(&L, kind);
	assert_int_equal(eventpolls() - before, kind == EVLOOP_EPOLL ? 1 : 0);
	evloop_close(&L.l, L.ctx);
	assert_int_equal(eventpolls(), before);
}

static void readable(enum evloop_kind kind)
{
	struct loop L;
	struct probe p = {0};
	int pp[2];
	open_loop(&L, kind);
	assert_int_equal(pipe2(pp, O_CLOEXEC | O_NONBLOCK), 0);
	adopt(&L, pp[0], 0, &p);
	turn_for(&L, 20);
	assert_int_equal(p.rx, 0); /* nothing written, nothing read */
	assert_int_equal(write(pp[1], "hello", 5), 5);
	turn_until(&L, &p.rx, 1);
	assert_int_equal(p.rx, 1);
	assert_int_equal(p.rx_bytes, 5);
	turn_for(&L, 20);
	assert_int_equal(p.rx, 1); /* drained: level-triggered, not repeated */
	close(pp[1]);
	evloop_close(&L.l, L.ctx);
	assert_int_equal(p.closed, 1);
}

static void writeable_follows_requests(enum evloop_kind kind)
{
	struct loop L;
	struct probe p = {.want_more = 199};
	int sp[2];
	open_loop(&L, kind);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp), 0);
	struct lws *w = adopt(&L, sp[0], 1, &p);
	turn_for(&L, 20);
	assert_int_equal(p.writeable, 0); /* writable, but nobody asked */
	lws_callback_on_writable(w);
	turn_until(&L, &p.writeable, 200);
	assert_int_equal(p.writeable, 200);
	turn_for(&L, 20);
	assert_int_equal(p.writeable, 200); /* the last one dropped POLLOUT */
	/* POLLIN dropped and taken again within one pass (epoll: no change
	 * reaches the kernel), POLLOUT asked for once: one callback, and
	 * reading still works */
	lws_callback_on_writable(w);
	lws_rx_flow_control(w, 0);
	lws_rx_flow_control(w, 1);
	turn_until(&L, &p.writeable, 201);
	assert_int_equal(p.writeable, 201);
	turn_for(&L, 20);
	assert_int_equal(p.writeable, 201);
	assert_int_equal(write(sp[1], "ping", 4), 4);
	turn_until(&L, &p.rx, 1);
	assert_int_equal(p.rx_bytes, 4);
	/* POLLIN off across a wait: data waits, and comes when it is back on */
	lws_rx_flow_control(w, 0);
	assert_int_equal(write(sp[1], "pong", 4), 4);
	turn_for(&L, 30);
	assert_int_equal(p.rx, 1);
	lws_rx_flow_control(w, 1);
	turn_until(&L, &p.rx, 2);
	assert_int_equal(p.rx_bytes, 8);
	close(sp[1]);
	evloop_close(&L.l, L.ctx);
}

/* lws closes a wsi whose file lives on in a dup(); the number is reused by
 * a new, idle pipe: the old file's data must not reach the new wsi. */
static void closed_then_reused(enum evloop_kind kind)
{
	struct loop L;
	struct probe old = {.close_on_rx = 1}, neu = {0};
	int a[2], b[2];
	open_loop(&L, kind);
	assert_int_equal(pipe2(a, O_CLOEXEC | O_NONBLOCK), 0);
	int keep = fcntl(a[0], F_DUPFD_CLOEXEC, 100); /* the file lives on */
	assert_true(keep >= 0);
	int num = a[0];
	adopt(&L, a[0], 0, &old);
	assert_int_equal(write(a[1], "x", 1), 1);
	turn_until(&L, &old.closed, 1);
	assert_int_equal(old.closed, 1);
	/* more data on the old file, now only reachable through `keep` */
	assert_int_equal(write(a[1], "yyyy", 4), 4);
	assert_int_equal(pipe2(b, O_CLOEXEC | O_NONBLOCK), 0);
	if (b[0] != num) { /* the number, reused */
		assert_int_equal(dup3(b[0], num, O_CLOEXEC), num);
		close(b[0]);
		b[0] = num;
	}
	adopt(&L, b[0], 0, &neu);
	turn_for(&L, 30);
	assert_int_equal(neu.rx, 0);
	assert_int_equal(write(b[1], "zz", 2), 2);
	turn_until(&L, &neu.rx, 1);
	assert_int_equal(neu.rx_bytes, 2);
	char buf[8];
	assert_int_equal(read(keep, buf, sizeof buf), 4); /* still there, unread */
	close(keep);
	close(a[1]);
	close(b[1]);
	evloop_close(&L.l, L.ctx);
}

/* epoll refuses a regular file (EPERM); poll() reports it ready. */
static void regular_file_falls_back(enum evloop_kind kind)
{
	struct loop L;
	struct probe f = {.close_on_rx = 1}, p = {0};
	char path[] = "/tmp/cortex-evloop-XXXXXX";
	int fd = mkstemp(path), pp[2];
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, "abc", 3), 3);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	open_loop(&L, kind);
	assert_int_equal(pipe2(pp, O_CLOEXEC | O_NONBLOCK), 0);
	adopt(&L, pp[0], 0, &p);
	adopt(&L, fd, 0, &f);
	turn_until(&L, &f.rx, 1);
	assert_int_equal(f.rx_bytes, 3);
	assert_int_equal(write(pp[1], "q", 1), 1); /* the others still served */
	turn_until(&L, &p.rx, 1);
	assert_int_equal(p.rx_bytes, 1);
	close(pp[1]);
	evloop_close(&L.l, L.ctx);
}

static void *canceller(void *arg)
{
	usleep(30000);
	lws_cancel_service(arg);
	return NULL;
}

/* The wait ends at the earliest sul: with a guard timer at 500 ms, a 50 ms
 * one runs at ~50 ms.  (A sul runs at the start of a pass, and the pass
 * then waits for the next event: the guard bounds that.) */
static void timer_and_cancel(enum evloop_kind kind)
{
	struct loop L;
	open_loop(&L, kind);
	int t0 = ticks;
	int64_t s = lws_now_usecs();
	lws_sul_schedule(L.ctx, 0, &tick, on_tick, 50000);
	while (ticks == t0) {
		lws_sul_schedule(L.ctx, 0, &guard, on_guard, 500000);
		assert_int_equal(evloop_service(&L.l, L.ctx), 0);
	}
	int64_t took = tick_at - s;
	if (took < 45000 || took > 400000)
		fail_msg("%s: a 50 ms timer ran after %lld us", evloop_name(kind), (long long)took);
	/* a wait with nothing due for 5 s ends when another thread cancels it */
	int c0 = cancelled;
	pthread_t t;
	s = lws_now_usecs();
	assert_int_equal(pthread_create(&t, NULL, canceller, L.ctx), 0);
	lws_sul_schedule(L.ctx, 0, &guard, on_guard, 5 * 1000000);
	while (cancelled == c0)
		assert_int_equal(evloop_service(&L.l, L.ctx), 0);
	took = lws_now_usecs() - s;
	if (took > 2000000)
		fail_msg("%s: a cancel ended the wait after %lld us", evloop_name(kind), (long long)took);
	pthread_join(t, NULL);
	lws_sul_cancel(&guard);
	evloop_close(&L.l, L.ctx);
}

/* A timer less than 1 ms away is waited for, not spun for (lws patch
 * 0005): lws turned the wait into whole ms rounded down, so a sub-ms
 * deadline was a zero timeout, pass after pass, until it was ripe (hundreds
 * of passes per timer).  Now one wait to the microsecond: a few passes. */
static void sub_ms_timer(enum evloop_kind kind)
{
	struct loop L;
	open_loop(&L, kind);
	for (int i = 0; i < 20; i++) {
		int t0 = ticks, passes = 0;
		int64_t s = lws_now_usecs();
		lws_sul_schedule(L.ctx, 0, &tick, on_tick, 800);
		/* (the pass that runs the tick then waits for the next sul) */
		lws_sul_schedule(L.ctx, 0, &guard, on_guard, 5000);
		while (ticks == t0 && passes < 1000) {
			assert_int_equal(evloop_service(&L.l, L.ctx), 0);
			passes++;
		}
		lws_sul_cancel(&guard);
		if (ticks == t0)
			fail_msg("%s: an 800 us timer did not run in 1000 passes", evloop_name(kind));
		if (passes > 4)
			fail_msg("%s: an 800 us timer took %d passes of the loop: a busy wait", evloop_name(kind), passes);
		if (tick_at - s < 800)
			fail_msg("%s: an 800 us timer ran after %lld us", evloop_name(kind), (long long)(tick_at - s));
	}
	evloop_close(&L.l, L.ctx);
}

static void test_uses_epoll(void **st) { (void)st; each_kind(uses_epoll); }
static void test_readable(void **st) { (void)st; each_kind(readable); }
static void test_writeable(void **st) { (void)st; each_kind(writeable_follows_requests); }
static void test_closed_reused(void **st) { (void)st; each_kind(closed_then_reused); }
static void test_regular_file(void **st) { (void)st; each_kind(regular_file_falls_back); }
static void test_timer_cancel(void **st) { (void)st; each_kind(timer_and_cancel); }
static void test_sub_ms_timer(void **st) { (void)st; each_kind(sub_ms_timer); }

int main(void)
{
	lws_set_log_level(LLL_ERR, NULL);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uses_epoll),     cmocka_unit_test(test_readable),
		cmocka_unit_test(test_writeable),      cmocka_unit_test(test_closed_reused),
		cmocka_unit_test(test_regular_file),   cmocka_unit_test(test_timer_cancel),
		cmocka_unit_test(test_sub_ms_timer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
