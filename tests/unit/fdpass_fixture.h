/* fdpass_fixture.h — ws-agent's side of a descriptor pass in the unit tests
 * (test_agent_stdin.c, test_agent_stdout.c): one message with up to
 * FDPASS_MAX descriptors in one SCM_RIGHTS header, as ws-agent sends
 * wsa.started.  Include after cmocka.h.  Not a test itself. */
#ifndef CORTEX_FDPASS_FIXTURE_H
#define CORTEX_FDPASS_FIXTURE_H

#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define FDPASS_MAX 4

/* msg on sock, with the descriptors fds[0..n) (n <= FDPASS_MAX). */
static inline void unit_send_fds(int sock, const char *msg, const int *fds, int n)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
	} cm;
	assert_true(n >= 0 && n <= FDPASS_MAX);
	memset(&cm, 0, sizeof cm);
	struct iovec iov = {(void *)msg, strlen(msg)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (n) {
		mh.msg_control = cm.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
		/* The first header is the buffer itself (CMSG_FIRSTHDR's NULL case
		 * cannot happen here, but gcc -O1 -Wnull-dereference warns about it). */
		struct cmsghdr *c = &cm.h;
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
	}
	assert_int_equal(sendmsg(sock, &mh, 0), (ssize_t)strlen(msg));
}

#endif
