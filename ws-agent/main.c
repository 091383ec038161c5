/* main.c — ws-agent entry point: arguments, then the server loop.
 *
 *   ws-agent (--listen-fd N | --socket PATH) [--ready-fd N] [--context FILE]
 *            [--context-timeout-ms MS] [--gateway-fd N --gateway-port P]
 *            [--egress-fd N --egress-port P] [--hold-on-drop MS]
 *
 * Started by cortexd inside a session's sandbox with --listen-fd: cortexd
 * made the listening socket in a dir only root reaches and passes it in, so
 * nothing in the sandbox can swap the path cortexd connects to.  --socket
 * (listen on a path of our own) is for running ws-agent on its own, as its
 * tests do.  --gateway-fd/--gateway-port: forward 127.0.0.1:P inside the
 * sandbox's network namespace to cortexd's model gateway (forward.c);
 * --egress-fd/--egress-port: the same for cortexd's egress proxy.
 * See wsa.h for the protocol.
 * Exit status: 0 after SIGTERM/SIGINT, 2 on bad arguments, 1 on startup failure.
 */
#include "wsa.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: ws-agent (--listen-fd N | --socket PATH) [--ready-fd N] [--context FILE]"
		   " [--context-timeout-ms MS] [--gateway-fd N --gateway-port P]\n"
		   "                [--egress-fd N --egress-port P] [--hold-on-drop MS] [--verbose]\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Pipes created later must never land on 0-2, or dup2 in the child would
 * clobber them; cortexd may start us with those closed. */
static int ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n < 0)
			return -1;
		if (n != fd) { /* cannot happen: open takes the lowest free fd */
			close(n);
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"listen-fd", required_argument, NULL, 'l'},
		{"ready-fd", required_argument, NULL, 'r'},
		{"context", required_argument, NULL, 'c'},
		{"context-timeout-ms", required_argument, NULL, 't'},
		{"gateway-fd", required_argument, NULL, 'g'},
		{"gateway-port", required_argument, NULL, 'p'},
		{"egress-fd", required_argument, NULL, 'e'},
		{"egress-port", required_argument, NULL, 'E'},
		{"hold-on-drop", required_argument, NULL, 'H'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct wsa_options opts = {
		.context_path = "/tmp/vf-pending-query.json",
		.context_timeout_ms = 2000,
		.ready_fd = -1,
		.listen_fd = -1,
	};
	int loglevel = LLL_ERR | LLL_WARN;
	int gw_fd = -1, gw_port = 0, eg_fd = -1, eg_port = 0;
	unsigned long v;
	int o;

	/* Every line the agent prints is a heap block kept until cortexd acks it
	 * (the resend window, <= WSA_CAP_RESEND, behind a queue <= 2x
	 * WSA_CAP_OUT_QUEUE): in a flood of large lines the heap's top grows and
	 * shrinks by about a line per line.  With glibc's default trim threshold
	 * (128 KiB) a free near the top gave pages back (brk) and the next line
	 * faulted them in again, zeroed: 0.17 brk per 64 KB line.  Up to 8 MiB of
	 * free heap is kept, taken from the system 1 MiB at a time. */
	(void)mallopt(M_TRIM_THRESHOLD, 8 << 20);
	(void)mallopt(M_TOP_PAD, 1 << 20);

	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (o) {
		case 's':
			opts.socket_path = optarg;
			break;
		case 'c':
			opts.context_path = optarg;
			break;
		case 'l':
			if (parse_uint(optarg, 1 << 20, &v) < 0 || v < 3 || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "ws-agent: --listen-fd %s is not an open fd >= 3\n", optarg);
				return 2;
			}
			opts.listen_fd = (int)v;
			/* Never the agent's: it would accept cortexd's connections. */
			(void)fcntl(opts.listen_fd, F_SETFD, FD_CLOEXEC);
			break;
		case 'r':
			if (parse_uint(optarg, 1 << 20, &v) < 0 || v < 3 || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "ws-agent: --ready-fd %s is not an open fd >= 3\n", optarg);
				return 2;
			}
			opts.ready_fd = (int)v;
			/* The agent must not inherit it (close_range covers it too). */
			(void)fcntl(opts.ready_fd, F_SETFD, FD_CLOEXEC);
			break;
		case 't':
			if (parse_uint(optarg, 3600000, &v) < 0) {
				fprintf(stderr, "ws-agent: bad --context-timeout-ms %s\n", optarg);
				return 2;
			}
			opts.context_timeout_ms = (unsigned)v;
			break;
		case 'g':
			if (parse_uint(optarg, 1 << 20, &v) < 0 || v < 3 || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "ws-agent: --gateway-fd %s is not an open fd >= 3\n", optarg);
				return 2;
			}
			gw_fd = (int)v;
			(void)fcntl(gw_fd, F_SETFD, FD_CLOEXEC); /* never the agent's */
			break;
		case 'p':
			if (parse_uint(optarg, 65535, &v) < 0 || v < 1) {
				fprintf(stderr, "ws-agent: bad --gateway-port %s\n", optarg);
				return 2;
			}
			gw_port = (int)v;
			break;
		case 'e':
			if (parse_uint(optarg, 1 << 20, &v) < 0 || v < 3 || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "ws-agent: --egress-fd %s is not an open fd >= 3\n", optarg);
				return 2;
			}
			eg_fd = (int)v;
			(void)fcntl(eg_fd, F_SETFD, FD_CLOEXEC); /* never the agent's */
			break;
		case 'E':
			if (parse_uint(optarg, 65535, &v) < 0 || v < 1) {
				fprintf(stderr, "ws-agent: bad --egress-port %s\n", optarg);
				return 2;
			}
			eg_port = (int)v;
			break;
		case 'H':
			if (parse_uint(optarg, 3600000, &v) < 0) {
				fprintf(stderr, "ws-agent: bad --hold-on-drop %s\n", optarg);
				return 2;
			}
			opts.hold_on_drop_ms = (unsigned)v;
			break;
		case 'v':
			loglevel |= LLL_NOTICE | LLL_INFO;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!opts.socket_path == (opts.listen_fd < 0) || optind != argc ||
	    opts.context_path[0] != '/' || (gw_fd < 0) != (gw_port == 0) ||
	    (eg_fd < 0) != (eg_port == 0) || (eg_fd >= 0 && eg_port == gw_port)) {
		usage(stderr);
		return 2;
	}
	if (ensure_std_fds() < 0) {
		perror("ws-agent: /dev/null");
		return 1;
	}
	/* Writes to a vanished peer must be an error, not death. */
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(loglevel, NULL);

	cx_err err = CX_ERR_INIT;
	struct wsa_server *srv = NULL;
	/* Before readiness is reported: a ready ws-agent forwards already. */
	if ((gw_fd >= 0 && wsa_forward_start(gw_port, gw_fd, &err) < 0) ||
	    (eg_fd >= 0 && wsa_forward_start(eg_port, eg_fd, &err) < 0)) {
		fprintf(stderr, "ws-agent: %s\n", err.msg);
		return 1;
	}
	if (wsa_server_create(&opts, &srv, &err) < 0) {
		fprintf(stderr, "ws-agent: %s\n", err.msg);
		return 1;
	}
	int rc = wsa_server_run(srv, &err);
	if (rc < 0)
		fprintf(stderr, "ws-agent: %s\n", err.msg);
	wsa_server_destroy(srv);
	return rc < 0 ? 1 : 0;
}
