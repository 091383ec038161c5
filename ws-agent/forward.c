/* forward.c — the model gateway (and the egress proxy) inside the
 * sandbox's network namespace.  ws-agent runs one forwarder per port; the
 * egress proxy's is the same code on --egress-fd/--egress-port, and cortexd
 * tells sandboxes apart there by the connecting uid (SO_PEERCRED).
 *
 * The agent's ANTHROPIC_BASE_URL is http://127.0.0.1:PORT.  With a network
 * namespace of its own that port is the sandbox's: ws-agent listens on it and
 * pipes every accepted connection, byte for byte, to cortexd's gateway Unix
 * socket.  That socket lives in a dir only root reaches; cortexd hands in an
 * O_PATH fd of it (--gateway-fd) and each upstream connect goes through the
 * magic link /proc/self/fd/N, so no path the sandbox can write is followed.
 * The gateway authenticates each request by its token, as over TCP.
 *
 * A small dedicated thread with poll(), not the lws loop: plain byte pumping
 * needs none of lws, stays clear of the raw-file role's quirks (server.h) and
 * of the agents' output backpressure, and a slow agent pipe never delays a
 * model stream.  Bounded: at most FWD_MAX_CONNS pairs (beyond that, new
 * connections wait in the listen backlog) and FWD_BUF bytes per direction (a
 * full buffer stops reading that side: backpressure).  The thread blocks every
 * signal (the main thread's signalfd takes them) and never forks.
 */
#include "wsa.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FWD_MAX_CONNS WSA_CAP_FWD_CONNS
#define FWD_BUF	      WSA_CAP_FWD_BUF

/* One accepted connection: side 0 is the agent's, side 1 cortexd's.  Bytes
 * read from side d wait in pipe d (pr/pw: its ends) until written to side
 * 1 - d: splice() moves them socket → pipe → socket without a copy through
 * user space (64 KiB read()/send() buffers made a tunnel ~0.4x direct).  The
 * pipe pages are charged to the sandbox's memory cgroup. */
struct fwd_pair {
	int fd[2];
	int pr[2], pw[2];
	bool eof[2];  /* side d sent EOF (splice returned 0) */
	bool shut[2]; /* shutdown(SHUT_WR) done on side d */
	size_t len[2]; /* bytes in pipe d */
};

struct fwd_state {
	int lfd;
	char upstream[32]; /* "/proc/self/fd/N" */
	struct fwd_pair *pairs[FWD_MAX_CONNS];
};

static int upstream_connect(const struct fwd_state *st)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, st->upstream, strlen(st->upstream) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Blocking: a Unix connect completes at once unless the backlog is full. */
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void pair_close(struct fwd_pair **pp)
{
	struct fwd_pair *p = *pp;
	for (int d = 0; d < 2; d++) {
		close(p->fd[d]);
		if (p->pr[d] >= 0)
			close(p->pr[d]);
		if (p->pw[d] >= 0)
			close(p->pw[d]);
	}
	free(p);
	*pp = NULL;
}

static int pair_pipes(struct fwd_pair *p)
{
	for (int d = 0; d < 2; d++) {
		int pp[2];
		if (pipe2(pp, O_CLOEXEC | O_NONBLOCK) < 0)
			return -1;
		p->pr[d] = pp[0];
		p->pw[d] = pp[1];
		(void)fcntl(p->pw[d], F_SETPIPE_SZ, (int)FWD_BUF);
	}
	return 0;
}

/* The index of the new pair, or -1. */
static long on_accept(struct fwd_state *st)
{
	int c = accept4(st->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (c < 0)
		return -1;
	/* Each SSE event is passed on as it comes: no Nagle wait for an ACK. */
	int one = 1;
	(void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	size_t i = 0;
	while (i < FWD_MAX_CONNS && st->pairs[i])
		i++;
	int u = i < FWD_MAX_CONNS ? upstream_connect(st) : -1;
	struct fwd_pair *p = u >= 0 ? calloc(1, sizeof *p) : NULL;
	if (p) {
		p->fd[0] = c;
		p->fd[1] = u;
		p->pr[0] = p->pr[1] = p->pw[0] = p->pw[1] = -1;
		if (pair_pipes(p) < 0) {
			pair_close(&p);
			return -1;
		}
	}
	if (!p) {
		/* The agent sees a reset, as when the gateway is down. */
		if (u >= 0)
			close(u);
		close(c);
		return -1;
	}
	st->pairs[i] = p;
	return (long)i;
}

/* Moves what it can in direction d (side d -> side 1-d).  -1: drop the pair. */
static int pump(struct fwd_pair *p, int d, short rev_in, short rev_out)
{
	int o = 1 - d;
	if ((rev_in & (POLLIN | POLLHUP | POLLERR)) && !p->eof[d] && p->len[d] < FWD_BUF) {
		ssize_t n = splice(p->fd[d], NULL, p->pw[d], NULL, FWD_BUF - p->len[d],
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0)
			p->len[d] += (size_t)n;
		else if (n == 0)
			p->eof[d] = true;
		else if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
	if ((rev_out & POLLOUT) && p->len[d]) {
		/* A peer gone: EPIPE (SIGPIPE is blocked on this thread). */
		ssize_t n = splice(p->pr[d], NULL, p->fd[o], NULL, p->len[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0)
			p->len[d] -= (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
	}
	if (p->eof[d] && !p->len[d] && !p->shut[o]) {
		shutdown(p->fd[o], SHUT_WR); /* half-close passes through */
		p->shut[o] = true;
	}
	return 0;
}

static short want(const struct fwd_pair *p, int side)
{
	short ev = 0;
	if (!p->eof[side] && p->len[side] < FWD_BUF)
		ev |= POLLIN;
	if (p->len[1 - side])
		ev |= POLLOUT;
	return ev;
}

static void *fwd_main(void *arg)
{
	struct fwd_state *st = arg;
	struct pollfd pfd[1 + 2 * FWD_MAX_CONNS];
	for (;;) {
		size_t live = 0;
		for (size_t i = 0; i < FWD_MAX_CONNS; i++) {
			struct fwd_pair *p = st->pairs[i];
			if (!p)
				continue;
			live++;
			for (int s = 0; s < 2; s++) {
				/* A side at EOF with nothing to take is not polled:
				 * its POLLHUP would wake us while the other drains. */
				short ev = want(p, s);
				int fd = !ev && p->eof[s] ? -1 : p->fd[s];
				pfd[1 + 2 * i + (size_t)s] = (struct pollfd){fd, ev, 0};
			}
		}
		/* A full table leaves new connections in the backlog. */
		pfd[0] = (struct pollfd){live < FWD_MAX_CONNS ? st->lfd : -1, POLLIN, 0};
		for (size_t i = 0; i < FWD_MAX_CONNS; i++)
			if (!st->pairs[i])
				pfd[1 + 2 * i] = pfd[2 + 2 * i] = (struct pollfd){-1, 0, 0};
		if (poll(pfd, 1 + 2 * FWD_MAX_CONNS, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "ws-agent: forwarder poll: %s\n", strerror(errno));
			return NULL;
		}
		long fresh = (pfd[0].revents & POLLIN) ? on_accept(st) : -1;
		for (size_t i = 0; i < FWD_MAX_CONNS; i++) {
			struct fwd_pair *p = st->pairs[i];
			if (!p || (long)i == fresh)
				continue; /* accepted in this round: polled from the next */
			short r0 = pfd[1 + 2 * i].revents, r1 = pfd[2 + 2 * i].revents;
			if (pump(p, 0, r0, r1) < 0 || pump(p, 1, r1, r0) < 0 ||
			    (p->shut[0] && p->shut[1]) || ((r0 | r1) & POLLERR) ||
			    /* a side gone both ways (HUP) whose bytes are all passed on:
			     * nothing can reach it any more, and POLLHUP would spin */
			    ((r0 & POLLHUP) && p->eof[0] && !p->len[0]) ||
			    ((r1 & POLLHUP) && p->eof[1] && !p->len[1]))
				pair_close(&st->pairs[i]);
		}
	}
}

int wsa_forward_start(int port, int upstream_fd, cx_err *err)
{
	if (port < 1 || port > 65535 || fcntl(upstream_fd, F_GETFD) < 0)
		return cx_err_set(err, EINVAL, "forwarder: bad port %d or fd %d", port,
				  upstream_fd);
	struct fwd_state *st = calloc(1, sizeof *st);
	if (!st)
		return cx_err_set(err, ENOMEM, "forwarder");
	snprintf(st->upstream, sizeof st->upstream, "/proc/self/fd/%d", upstream_fd);
	st->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	if (st->lfd < 0 || setsockopt(st->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(st->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(st->lfd, 128) < 0) {
		cx_err_set(err, errno, "forwarder: listen on 127.0.0.1:%d", port);
		goto fail;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int rc = pthread_create(&t, NULL, fwd_main, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		cx_err_set(err, rc, "forwarder: thread");
		goto fail;
	}
	pthread_detach(t);
	return 0; /* st lives as long as the process */
fail:
	if (st->lfd >= 0)
		close(st->lfd);
	free(st);
	return -1;
}
