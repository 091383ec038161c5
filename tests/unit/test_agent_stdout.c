/* Unit tests: the agent's stdout read by cortexd (agent_stdout.c).
 *
 * A socketpair stands for the ws-agent link, as in test_agent_stdin: the
 * "ws-agent" end passes a pipe's read end (SCM_RIGHTS) with wsa.started.
 * Covered: the read end becomes cortexd's own non-blocking description;
 * lines cut across reads arrive whole and in order on the link's line path
 * (the agent_output hook); ws-agent's checks (the line cap, UTF-8, a "wsa."
 * type, also spelt with escapes) drop a line and the next one still comes;
 * a write end, a named FIFO, a generation not starting, or no descriptor at
 * all is refused with stdout_back; at the exit the pipe is read to its end
 * (a last line without '\n' counts), or, with a writer still holding it,
 * the partial line is dropped; a detach hands back the line begun (hex) and
 * ws-agent's splitter goes on from it; a generation's end stops reading and
 * leaves the rest in the pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "fdpass_fixture.h"
#include "caps.h"
#include "lines.h"
#include "session.h"

static struct session S;
static struct cortexd D;
static int link_[2]; /* [0] cortexd's end, [1] ws-agent's */

/* What reached the link's line path, '\n'-joined; what was sent to ws-agent. */
static char got[1 << 16];
static size_t got_len;
static unsigned got_n;
static char sent[4096];

static void on_output(struct session *s, const struct agent_line *l, const char *raw, size_t len)
{
	(void)s;
	(void)l;
	assert_true(got_len + len + 1 < sizeof got);
	memcpy(got + got_len, raw, len);
	got_len += len;
	got[got_len++] = '\n';
	got[got_len] = '\0';
	got_n++;
}

static void fake_send(struct session *s, const char *txt, size_t len)
{
	(void)s;
	snprintf(sent + strlen(sent), sizeof sent - strlen(sent), "%.*s\n", (int)len, txt);
}
static const struct agent_io fake_io = {fake_send};

static int setup(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	memset(&D, 0, sizeof D);
	D.agent_output = on_output;
	S.d = &D;
	S.link.io = &fake_io;
	snprintf(S.id, sizeof S.id, "s-test");
	S.link.stdin_fd = S.link.rx_fd = S.link.rx_fd2 = S.link.out_fd = -1;
	got_len = got_n = 0;
	got[0] = sent[0] = '\0';
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, link_), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	agent_stdin_reset(&S);
	close(link_[0]);
	close(link_[1]);
	return 0;
}

static void send_fds(const char *msg, const int *fds, int n)
{
	unit_send_fds(link_[1], msg, fds, n);
}

static void recv_started(void)
{
	char buf[64];
	assert_int_equal(agent_link_recv(&S, link_[0], buf, sizeof buf), 8);
}

static int is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static void put(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* wsa.started of gen 1 with stdin p_in (or none) and stdout fd, usable or not. */
static void started(int in_fd, int out_fd, int usable)
{
	int fds[2], n = 0;
	if (in_fd >= 0)
		fds[n++] = in_fd;
	if (out_fd >= 0)
		fds[n++] = out_fd;
	send_fds("started\n", fds, n);
	recv_started();
	int out = agent_started_fds(&S, in_fd >= 0, 1);
	agent_stdin_started(&S, usable && in_fd >= 0);
	agent_stdout_started(&S, 1, 1, usable, out);
}

static void start_with_pipe(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	started(-1, p[0], 1);
	assert_true(S.link.out_fd >= 0);
}

static void read_end_is_read_line_by_line(void **state)
{
	(void)state;
	int p[2], in[2];
	uint64_t l0, s0, f0, d0, l1, s1, f1, d1;
	agent_stdout_counts(&l0, &s0, &f0, &d0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	started(in[1], p[0], 1); /* stdin and stdout on one wsa.started */
	assert_int_equal(S.link.rx_fd, -1); /* the stdin one went to agent_stdin_started */
	assert_int_equal(S.link.rx_fd2, -1);
	assert_true(S.link.out_fd >= 0 && S.link.out_fd != p[0]);
	/* The sandbox makes its (shared) description blocking: ours is not. */
	assert_int_equal(fcntl(p[0], F_SETFL, 0), 0);
	assert_true(fcntl(S.link.out_fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(agent_stdout_readable(&S), 0); /* nothing yet: no block, no line */
	assert_int_equal(got_n, 0);

	put(p[1], "{\"type\":\"a\"}\n{\"type\":\"b");
	agent_stdout_readable(&S);
	assert_string_equal(got, "{\"type\":\"a\"}\n");
	put(p[1], "\"}\n\n{\"type\":\"c\"}\n");
	agent_stdout_readable(&S);
	assert_string_equal(got, "{\"type\":\"a\"}\n{\"type\":\"b\"}\n{\"type\":\"c\"}\n");
	agent_stdout_counts(&l1, &s1, &f1, &d1);
	assert_int_equal(l1 - l0, 3);
	assert_int_equal(s1 - s0, 1);
	assert_int_equal(f1 - f0, 0);
	assert_string_equal(sent, ""); /* nothing on the link */
	close(p[0]), close(p[1]), close(in[0]), close(in[1]);
}

static void checks_drop_a_line_and_go_on(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	assert_true(fcntl(p[1], F_SETPIPE_SZ, 1 << 20) > 0);
	uint64_t l0, s0, f0, d0, l1, s1, f1, d1;
	agent_stdout_counts(&l0, &s0, &f0, &d0);
	put(p[1], "{\"type\":\"x\",\"t\":\"\xff\"}\n");              /* not UTF-8 */
	put(p[1], "{\"type\":\"wsa.exit\",\"gen\":1}\n");            /* a "wsa." type */
	put(p[1], "{\"type\":\"\\u0077sa.exit\",\"gen\":1}\n");      /* the same, escaped */
	put(p[1], "{\"type\":\"ok1\"}\n");
	agent_stdout_readable(&S);
	assert_string_equal(got, "{\"type\":\"ok1\"}\n");
	/* A line over the cap, written and read a piece at a time. */
	static char chunk[256 << 10];
	memset(chunk, 'x', sizeof chunk);
	for (size_t left = CX_CAP_AGENT_LINE + 1; left;) {
		size_t n = left < sizeof chunk ? left : sizeof chunk;
		assert_int_equal(write(p[1], chunk, n), (ssize_t)n);
		left -= n;
		agent_stdout_readable(&S);
	}
	put(p[1], "tail of it\n{\"type\":\"ok2\"}\n");
	agent_stdout_readable(&S);
	assert_string_equal(got, "{\"type\":\"ok1\"}\n{\"type\":\"ok2\"}\n");
	agent_stdout_counts(&l1, &s1, &f1, &d1);
	assert_int_equal(d1 - d0, 4); /* UTF-8, wsa. twice (plain, escaped), the cap */
	assert_int_equal(l1 - l0, 2); /* ok1, ok2 */
	close(p[0]), close(p[1]);
}

static void unusable_is_given_back(void **state)
{
	(void)state;
	int p[2];
	uint64_t l0, s0, f0, d0, l1, s1, f1, d1;
	agent_stdout_counts(&l0, &s0, &f0, &d0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* a write end */
	send_fds("started\n", &p[1], 1);
	recv_started();
	int rx = S.link.rx_fd;
	agent_stdout_started(&S, 1, 1, 1, agent_started_fds(&S, 0, 1));
	assert_int_equal(S.link.out_fd, -1);
	assert_false(is_open(rx));
	/* a generation that is not starting */
	started(-1, p[0], 0);
	assert_int_equal(S.link.out_fd, -1);
	/* a named FIFO's read end */
	char dir[] = "/tmp/cx-fifo-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/f", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	assert_true(f >= 0);
	started(-1, f, 1);
	assert_int_equal(S.link.out_fd, -1);
	/* "stdout":true with no descriptor */
	agent_stdout_started(&S, 1, 1, 1, -1);
	assert_int_equal(S.link.out_fd, -1);
	assert_string_equal(sent, "{\"type\":\"stdout_back\",\"gen\":1}\n{\"type\":\"stdout_back\",\"gen\":1}\n"
				  "{\"type\":\"stdout_back\",\"gen\":1}\n{\"type\":\"stdout_back\",\"gen\":1}\n");
	agent_stdout_counts(&l1, &s1, &f1, &d1);
	assert_int_equal(f1 - f0, 4);
	assert_int_equal(s1 - s0, 0);
	close(f), close(p[0]), close(p[1]);
	unlink(path);
	rmdir(dir);
}

static void exit_reads_to_the_end(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	put(p[1], "{\"type\":\"a\"}\n{\"type\":\"last\"}");
	close(p[1]); /* no writer left: ws-agent sends the exit now */
	agent_stdout_drain(&S, 2); /* another gen's exit: nothing */
	assert_int_equal(got_n, 0);
	agent_stdout_drain(&S, 1);
	assert_string_equal(got, "{\"type\":\"a\"}\n{\"type\":\"last\"}\n");
	assert_int_equal(S.link.out_fd, -1);
	close(p[0]);

	/* A writer still holds it (ws-agent gave up): the cut line is dropped. */
	start_with_pipe(p);
	got_len = got_n = 0;
	put(p[1], "{\"type\":\"b\"}\n{\"type\":\"cu");
	agent_stdout_drain(&S, 1);
	assert_string_equal(got, "{\"type\":\"b\"}\n");
	assert_int_equal(S.link.out_fd, -1);
	close(p[0]), close(p[1]);
}

static int collect(void *arg, const char *line, size_t len, bool too_long)
{
	(void)arg;
	assert_false(too_long);
	on_output(&S, NULL, line, len);
	return 0;
}

static void detach_hands_back_the_line_begun(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	put(p[1], "{\"type\":\"a\"}\n{\"par");
	agent_stdout_readable(&S);
	json_t *o = agent_stdout_detach(&S);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "gen")), 1);
	assert_string_equal(json_string_value(json_object_get(o, "partial")), "7b22706172"); /* {"par */
	assert_false(json_is_true(json_object_get(o, "dropping")));
	json_decref(o);
	assert_int_equal(S.link.out_fd, -1);
	assert_null(agent_stdout_detach(&S)); /* nothing read any more */
	/* ws-agent goes on from exactly there. */
	struct cx_lines l;
	cx_err err = CX_ERR_INIT;
	cx_lines_init(&l, CX_CAP_AGENT_LINE, false);
	assert_int_equal(cx_lines_preload(&l, "{\"par", 5, false, &err), 0);
	put(p[1], "t\":1}\n");
	char buf[64];
	ssize_t n = read(p[0], buf, sizeof buf);
	assert_int_equal(n, 6);
	got_len = got_n = 0;
	got[0] = '\0';
	assert_int_equal(cx_lines_feed(&l, buf, (size_t)n, collect, NULL, &err), 0);
	assert_string_equal(got, "{\"part\":1}\n");
	cx_lines_free(&l);
	close(p[0]), close(p[1]);
}

static void gen_end_leaves_the_rest_in_the_pipe(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	put(p[1], "{\"type\":\"a\"}\n");
	agent_stdout_close(&S);
	assert_int_equal(S.link.out_fd, -1);
	assert_int_equal(agent_stdout_readable(&S), 0);
	assert_int_equal(got_n, 0);
	char buf[64];
	assert_int_equal(read(p[0], buf, sizeof buf), 13); /* for ws-agent to drain and drop */
	close(p[0]), close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(read_end_is_read_line_by_line, setup, teardown),
		cmocka_unit_test_setup_teardown(checks_drop_a_line_and_go_on, setup, teardown),
		cmocka_unit_test_setup_teardown(unusable_is_given_back, setup, teardown),
		cmocka_unit_test_setup_teardown(exit_reads_to_the_end, setup, teardown),
		cmocka_unit_test_setup_teardown(detach_hands_back_the_line_begun, setup, teardown),
		cmocka_unit_test_setup_teardown(gen_end_leaves_the_rest_in_the_pipe, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
