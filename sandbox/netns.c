/* netns.c — reaching into a sandbox's network namespace from the daemon.
 *
 * The sandbox has only `lo`; a server the agent starts on 127.0.0.1:PORT is
 * reachable from no other namespace.  A socket belongs to the namespace of
 * the thread that created it, so a short-lived thread setns()es into the
 * sandbox's namespace, creates the socket and exits; the socket then works
 * from any thread.  No thread of the daemon ever changes namespace for longer
 * than one socket() call, and none that serves anything else.
 *
 *   sandbox_netns_open     service thread: /proc/<init>/ns/net, pidfd-checked
 *   sandbox_netns_connect  worker: socket made inside, connect with a deadline
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/pidfd.h>
#include <sys/socket.h>

#include "sandbox-internal.h"

int sandbox_netns_open(sandbox *sb, int *out, cx_err *err)
{
	*out = -1;
	if (!sb || sb->init_pidfd < 0 || sb->init_pid <= 0)
		return cx_err_set(err, ESRCH, "the sandbox is not running");
	if (!sb->net_isolated)
		return cx_err_set(err, ENOTSUP, "the sandbox shares the host's network namespace");
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/%d/ns/net", (int)sb->init_pid);
	cleanup_close int fd = open(proc, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cx_err_set(err, errno == ENOENT ? ESRCH : errno, "open %s", proc);
	/* Init alive now means the pid was still init's when it was opened. */
	if (pidfd_send_signal(sb->init_pidfd, 0, NULL, 0) < 0)
		return cx_err_set(err, ESRCH, "the sandbox's init has gone");
	*out = steal_fd(&fd);
	return 0;
}

struct mk_socket {
	int netns_fd; /* not owned */
	int fd;	      /* the socket, or -1 */
	int errnum;
	const char *step;
};

static void *mk_socket_inside(void *arg)
{
	struct mk_socket *m = arg;
	if (setns(m->netns_fd, CLONE_NEWNET) < 0) {
		m->errnum = errno;
		m->step = "setns";
		return NULL; /* the thread ends here: its namespace dies with it */
	}
	m->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (m->fd < 0) {
		m->errnum = errno;
		m->step = "socket";
	}
	return NULL;
}

int sandbox_netns_connect(int netns_fd, uint16_t port, int timeout_ms, int *out, cx_err *err)
{
	*out = -1;
	if (!port)
		return cx_err_set(err, EINVAL, "port 0");
	struct mk_socket m = {netns_fd, -1, 0, NULL};
	pthread_t t;
	int rc = pthread_create(&t, NULL, mk_socket_inside, &m);
	if (rc)
		return cx_err_set(err, rc, "pthread_create");
	pthread_join(t, NULL);
	if (m.fd < 0)
		return cx_err_set(err, m.errnum, "%s in the sandbox's network namespace", m.step);
	cleanup_close int fd = m.fd;
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		if (errno != EINPROGRESS)
			return cx_err_set(err, errno, "connect 127.0.0.1:%u", (unsigned)port);
		struct pollfd p = {fd, POLLOUT, 0};
		int n;
		do
			n = poll(&p, 1, timeout_ms);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return cx_err_set(err, errno, "poll");
		if (n == 0)
			return cx_err_set(err, ETIMEDOUT,
					  "connect 127.0.0.1:%u: no answer in %d ms",
					  (unsigned)port, timeout_ms);
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			return cx_err_set(err, errno, "getsockopt SO_ERROR");
		if (soerr)
			return cx_err_set(err, soerr, "connect 127.0.0.1:%u", (unsigned)port);
	}
	*out = steal_fd(&fd);
	return 0;
}
