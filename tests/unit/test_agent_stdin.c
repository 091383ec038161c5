/* Unit tests: the agent's stdin written by cortexd (agent_stdin.c).
 *
 * A socketpair stands for the ws-agent link: the "ws-agent" end sends bytes
 * with descriptors (SCM_RIGHTS) as ws-agent does with wsa.started; the other
 * end is read with agent_link_recv.  Covered: a passed pipe becomes the
 * agent's stdin (a description of cortexd's own, non-blocking even when the
 * sandbox's copy is made blocking), a line lands whole; what is not a pipe,
 * a pipe's read end, a named FIFO,
 * more descriptors than wsa.started names, a descriptor for a generation that is not
 * starting, or one after a link input is closed unused; a line over PIPE_BUF,
 * a full pipe and a closed reader put that input and every later one on the
 * link. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "fdpass_fixture.h"
#include "session.h"

static struct session S;
static int link_[2]; /* [0] cortexd's end, [1] ws-agent's */

static int setup(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	snprintf(S.id, sizeof S.id, "s-test");
	S.link.stdin_fd = S.link.rx_fd = S.link.rx_fd2 = S.link.out_fd = -1;
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

/* ws-agent's side: msg with the descriptors fds[0..n). */
static void send_fds(const char *msg, const int *fds, int n)
{
	unit_send_fds(link_[1], msg, fds, n);
}

static void recv_all(const char *want)
{
	char buf[256];
	ssize_t n = agent_link_recv(&S, link_[0], buf, sizeof buf);
	assert_int_equal(n, (ssize_t)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
}

static int is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

/* A pipe whose write end came with wsa.started, taken by agent start 1. */
static void start_with_pipe(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	send_fds("started\n", &p[1], 1);
	recv_all("started\n");
	agent_stdin_started(&S, 1);
	assert_true(S.link.stdin_fd >= 0);
}

static void passed_pipe_is_written(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	send_fds("started\n", &p[1], 1);
	recv_all("started\n");
	int rx = S.link.rx_fd;
	assert_true(rx >= 0);
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.rx_fd, -1);
	assert_false(is_open(rx)); /* the received one is closed: a reopened one is used */
	assert_true(S.link.stdin_fd >= 0);
	/* The sandbox makes its (shared) description blocking: ours is not. */
	assert_int_equal(fcntl(p[1], F_SETFL, 0), 0);
	assert_true(fcntl(S.link.stdin_fd, F_GETFL) & O_NONBLOCK);

	uint64_t d0, l0, d1, l1;
	agent_stdin_counts(&d0, &l0);
	assert_int_equal(agent_stdin_write(&S, "{\"type\":\"user\"}", 15), 0);
	char buf[64];
	assert_int_equal(read(p[0], buf, sizeof buf), 16);
	assert_memory_equal(buf, "{\"type\":\"user\"}\n", 16);
	agent_stdin_counts(&d1, &l1);
	assert_int_equal(d1, d0 + 1);
	assert_int_equal(l1, l0);

	/* The agent stops reading: the pipe fills, the write does not block,
	 * and from then on every input goes on the link (even once drained). */
	char line[1024];
	memset(line, 'x', sizeof line - 1);
	line[sizeof line - 1] = '\0';
	int rc, k = 0;
	while ((rc = agent_stdin_write(&S, line, strlen(line))) == 0)
		assert_true(++k < 4096); /* a pipe is at most 1 MiB by default */
	assert_int_equal(S.link.stdin_fd, -1);
	while (read(p[0], line, sizeof line) > 0)
		;
	assert_int_equal(agent_stdin_write(&S, "{}", 2), -1);
	assert_int_equal(S.link.link_inputs, 2);
	close(p[0]);
	close(p[1]);
}

static void long_line_goes_on_the_link(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	static char big[PIPE_BUF + 10];
	memset(big, 'y', sizeof big - 1);
	assert_int_equal(agent_stdin_write(&S, big, strlen(big)), -1); /* not atomic */
	assert_int_equal(S.link.stdin_fd, -1);
	assert_int_equal(agent_stdin_write(&S, "{}", 2), -1); /* no overtaking it */
	char c;
	assert_int_equal(read(p[0], &c, 1), -1); /* nothing of either reached the pipe */
	assert_int_equal(errno, EAGAIN);
	close(p[0]);
	close(p[1]);
}

static void closed_reader_goes_on_the_link(void **state)
{
	(void)state;
	int p[2];
	start_with_pipe(p);
	close(p[0]); /* the agent closed its stdin */
	signal(SIGPIPE, SIG_IGN); /* as cortexd */
	assert_int_equal(agent_stdin_write(&S, "{}", 2), -1);
	assert_int_equal(S.link.stdin_fd, -1);
	close(p[1]);
}

static void not_a_pipe_is_refused(void **state)
{
	(void)state;
	int m = memfd_create("not-a-pipe", MFD_CLOEXEC);
	assert_true(m >= 0);
	send_fds("started\n", &m, 1);
	recv_all("started\n");
	int rx = S.link.rx_fd;
	assert_true(rx >= 0);
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1);
	assert_false(is_open(rx));
	assert_int_equal(agent_stdin_write(&S, "{}", 2), -1);
	close(m);
}

/* The sandbox may pass what it can only read: a pipe's read end, a named
 * FIFO a mount brought in.  Reopened for writing as root it would gain. */
static void read_end_or_fifo_is_refused(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	send_fds("started\n", &p[0], 1);
	recv_all("started\n");
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1);
	char dir[] = "/tmp/cx-fifo-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/f", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	int f = open(path, O_RDWR | O_CLOEXEC); /* (no reader needed for O_RDWR) */
	int w = open(path, O_WRONLY | O_CLOEXEC);
	assert_true(f >= 0 && w >= 0);
	send_fds("started\n", &w, 1);
	recv_all("started\n");
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1); /* a write end, but not an anonymous pipe */
	close(w), close(f), close(p[0]), close(p[1]);
	unlink(path);
	rmdir(dir);
}

static void two_fds_are_refused(void **state)
{
	(void)state;
	int p[2], q[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(pipe2(q, O_CLOEXEC), 0);
	int fds[3] = {p[1], q[1], q[0]};
	/* Three at once: none is kept. */
	send_fds("started\n", fds, 3);
	recv_all("started\n");
	assert_int_equal(S.link.rx_fd, -1);
	assert_int_equal(S.link.rx_fd2, -1);
	/* Two where wsa.started names only the stdin: neither is used. */
	send_fds("started\n", fds, 2);
	recv_all("started\n");
	assert_true(S.link.rx_fd >= 0 && S.link.rx_fd2 >= 0);
	int r1 = S.link.rx_fd, r2 = S.link.rx_fd2;
	assert_int_equal(agent_started_fds(&S, 1, 0), -1);
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1);
	assert_false(is_open(r1));
	assert_false(is_open(r2));
	/* One waiting for its wsa.started and another one: neither is used. */
	send_fds("a\n", &p[1], 1);
	recv_all("a\n");
	assert_true(S.link.rx_fd >= 0);
	send_fds("b\n", &q[1], 1);
	recv_all("b\n");
	assert_int_equal(S.link.rx_fd, -1);
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1);
	close(p[0]), close(p[1]), close(q[0]), close(q[1]);
}

static void not_offered_or_after_a_link_input(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* wsa.started of a generation that is not the starting one */
	send_fds("started\n", &p[1], 1);
	recv_all("started\n");
	int rx = S.link.rx_fd;
	agent_stdin_started(&S, 0);
	assert_int_equal(S.link.stdin_fd, -1);
	assert_false(is_open(rx));
	/* an input of this generation already went on the link */
	assert_int_equal(agent_stdin_write(&S, "{}", 2), -1);
	send_fds("started\n", &p[1], 1);
	recv_all("started\n");
	agent_stdin_started(&S, 1);
	assert_int_equal(S.link.stdin_fd, -1);
	/* a new generation starts clean */
	agent_stdin_reset(&S);
	send_fds("started\n", &p[1], 1);
	recv_all("started\n");
	agent_stdin_started(&S, 1);
	assert_true(S.link.stdin_fd >= 0);
	agent_stdin_close(&S);
	assert_int_equal(S.link.stdin_fd, -1);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(passed_pipe_is_written, setup, teardown),
		cmocka_unit_test_setup_teardown(long_line_goes_on_the_link, setup, teardown),
		cmocka_unit_test_setup_teardown(closed_reader_goes_on_the_link, setup, teardown),
		cmocka_unit_test_setup_teardown(not_a_pipe_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(read_end_or_fifo_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(two_fds_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(not_offered_or_after_a_link_input, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
