/* agent_stdin.c — the agent's stdin, written by cortexd itself.
 *
 * ws-agent passes the write end of a new agent's stdin with its wsa.started
 * (SCM_RIGHTS on the link, "stdin":true).  cortexd then writes each input
 * line straight into that pipe: no input frame, and no wake-up of ws-agent
 * per turn (on a busy host a wake-up costs as much as the rest of a turn's
 * host work).  ws-agent keeps everything else: the agent's output, its
 * exit, the stdin queue for what does not fit.
 *
 * The rules that keep ws-agent's semantics:
 *  - order: the pipe is used only for a generation none of whose inputs went
 *    on the link (a link input in flight could be overtaken), and a line that
 *    cannot go through it at once (over PIPE_BUF, so not atomic; a full pipe;
 *    any error) goes on the link, which from then on carries every input of
 *    that generation;
 *  - EOF and gens: the pipe is closed whenever the agent's state leaves
 *    "starting"/"hot" for another generation or for none (stop, start, exit,
 *    link lost), so a retired agent sees EOF when ws-agent lets go too;
 *  - the descriptor comes from the sandbox: it must be the write end of an
 *    anonymous pipe, it is reopened
 *    through /proc/self/fd so that its flags (O_NONBLOCK) are cortexd's own
 *    (the sandbox shares the first description and could make it block), and
 *    any other descriptor received on the link is closed unread.
 *
 * The same wsa.started may carry the read end of the agent's stdout after
 * the stdin (agent_stdout.c); the message says which came.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "session.h"

static uint64_t n_direct, n_link;

void agent_stdin_counts(uint64_t *direct, uint64_t *link)
{
	*direct = n_direct;
	*link = n_link;
}

void agent_stdin_close(struct session *s)
{
	if (s->link.stdin_fd >= 0)
		close(s->link.stdin_fd);
	s->link.stdin_fd = -1;
}

static void rx_fd_close(struct session *s)
{
	if (s->link.rx_fd >= 0)
		close(s->link.rx_fd);
	if (s->link.rx_fd2 >= 0)
		close(s->link.rx_fd2);
	s->link.rx_fd = s->link.rx_fd2 = -1;
}

void agent_stdin_reset(struct session *s)
{
	agent_stdin_close(s);
	agent_stdout_close(s);
	rx_fd_close(s);
	s->link.link_inputs = 0;
}

int agent_started_fds(struct session *s, int has_in, int has_out)
{
	int n = (s->link.rx_fd >= 0) + (s->link.rx_fd2 >= 0);
	if (n != !!has_in + !!has_out) {
		rx_fd_close(s); /* not what ws-agent says it sent: neither is used */
		return -1;
	}
	int out = -1;
	if (has_out) {
		out = has_in ? s->link.rx_fd2 : s->link.rx_fd;
		if (!has_in)
			s->link.rx_fd = -1;
		s->link.rx_fd2 = -1;
	}
	return out;
}

/* A private description of the pipe end fd, opened with accmode
 * (O_RDONLY or O_WRONLY) | O_NONBLOCK, or -1.  Only an anonymous pipe
 * (pipefs: no path, not a FIFO a mount brought in) whose fd is already open
 * with exactly that access mode: reopened as root, anything else could give
 * cortexd access the sandbox itself does not have.  The sandbox shares the
 * passed description, so its flags are not ours to trust: the new one's
 * O_NONBLOCK is.  Used for the agent's stdin (write end, here) and stdout
 * (read end, agent_stdout.c). */
int agent_pipe_reopen(int fd, int accmode)
{
	struct stat a, b;
	struct statfs fs;
	int fl = fcntl(fd, F_GETFL);
	if ((accmode != O_RDONLY && accmode != O_WRONLY) || fl < 0 || (fl & O_ACCMODE) != accmode ||
	    fstat(fd, &a) < 0 || !S_ISFIFO(a.st_mode) || fstatfs(fd, &fs) < 0 ||
	    fs.f_type != PIPEFS_MAGIC)
		return -1;
	char path[40];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int r = open(path, accmode | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (r < 0)
		return -1;
	if (fstat(r, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(r);
		return -1;
	}
	return r;
}

void agent_stdin_started(struct session *s, int offered)
{
	int fd = s->link.rx_fd;
	s->link.rx_fd = -1;
	if (fd < 0)
		return;
	agent_stdin_close(s);
	if (offered && !s->link.link_inputs && !s->link.io)
		s->link.stdin_fd = agent_pipe_reopen(fd, O_WRONLY);
	if (offered && s->link.stdin_fd < 0)
		log_debug("session %s: the agent's stdin is not usable directly: inputs go on the link", s->id);
	close(fd);
}

int agent_stdin_write(struct session *s, const char *line, size_t len)
{
	if (s->link.stdin_fd < 0 || len >= PIPE_BUF) {
		agent_stdin_close(s); /* this input goes on the link, and every later one */
		s->link.link_inputs++;
		n_link++;
		return -1;
	}
	struct iovec iov[2] = {{(void *)line, len}, {"\n", 1}};
	ssize_t w;
	do
		w = writev(s->link.stdin_fd, iov, 2);
	while (w < 0 && errno == EINTR);
	if (w == (ssize_t)len + 1) {
		n_direct++;
		return 0;
	}
	/* At most PIPE_BUF bytes are written whole or not at all: nothing went
	 * (EAGAIN: a full pipe, the agent busy; EPIPE: it closed its stdin). */
	log_debug("session %s: agent stdin: %s; inputs go on the link", s->id,
		  w < 0 ? strerror(errno) : "short write");
	agent_stdin_close(s);
	s->link.link_inputs++;
	n_link++;
	return -1;
}

ssize_t agent_link_recv(struct session *s, int sock, void *buf, size_t cap)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 4)];
	} cm;
	struct iovec iov = {buf, cap};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b};
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	int got = 0, extra = 0, waiting = s->link.rx_fd >= 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			/* claimed by the wsa.started they came with: stdin, stdout */
			if (!waiting && got == 0) {
				s->link.rx_fd = fd;
			} else if (!waiting && got == 1) {
				s->link.rx_fd2 = fd;
			} else {
				close(fd);
				extra = 1;
			}
			got++;
		}
	}
	/* More than two at a time, or some while others wait for their
	 * wsa.started, is not ws-agent's doing (or two starts raced): none is
	 * used, those inputs go on the link and ws-agent reads that stdout. */
	if (extra || (mh.msg_flags & MSG_CTRUNC))
		rx_fd_close(s);
	return n;
}
