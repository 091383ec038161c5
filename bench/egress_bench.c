/* egress_bench — what the egress proxy adds on loopback (issue 12): per
 * request and per byte, against the same client talking to the upstream
 * directly, in one run, interleaved.
 *
 *   main (root): egress_start() on a temp sock dir, the bench session bound
 *     to uid 65534, the upstream's 127.0.0.1:port in allow_private
 *   upstream (a process of its own): HTTP/1.1 on 127.0.0.1, GET /small
 *     (13-byte body) and GET /stream/<MiB> (as fast as it can write)
 *   one client process per path, each setsid() (its own autogroup, as a
 *     sandbox has) and uid 65534, told what to run over a socketpair:
 *       direct     TCP straight to the upstream
 *       proxy      the proxy's Unix socket through an O_PATH fd, as
 *                  ws-agent reaches it (/proc/self/fd/N)
 *       fwd+proxy  TCP to ws-agent's forwarder (wsa_forward_start, a thread
 *                  in that client) → the proxy: what a sandboxed program sees
 *
 * Measures (the paths take turns in every round, the first one rotating):
 *   get     new connection + GET (absolute-form through the proxy), ms
 *   tunnel  new connection + CONNECT + GET inside the tunnel, ms
 *   stream  new connection (+ CONNECT) + GET /stream/<MiB>, MB/s (10^6)
 * A sample runs from socket() to the last body byte read.
 *
 *   egress_bench [requests [stream_mib [stream_rounds]]]   (500, 256, 3) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "egress.h"
#include "wsa.h"

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE "unknown"
#endif

#define SANDBOX_UID  65534
#define ROUNDS	     10		  /* get and tunnel: requests are split over these */
#define WARMUP	     20		  /* uncounted requests per path before the first round */
#define CLIENT_BUF   (128u << 10) /* one read() of a client */
#define UPSTREAM_BUF (1u << 20)	  /* one write() of the stream endpoint */
#define SMALL_BODY   "hello, world\n"

enum path { P_DIRECT, P_PROXY, P_FWD, P_N };
static const char *const path_name[P_N] = {"direct", "proxy", "fwd+proxy"};
enum measure { M_GET, M_TUNNEL, M_STREAM, M_N, M_QUIT = M_N };
static const char *const measure_name[M_N] = {"small GET, new connection",
					      "CONNECT tunnel + small GET", "stream down a tunnel"};

struct cmd {
	int32_t measure, n;
};

static struct {
	char dir[4096]; /* the temp dir (sock dir, CA, audit) */
	int up_port;	/* the upstream */
	int fwd_port;	/* the fwd+proxy client's forwarder */
	int stream_mib;
	int egfd;	 /* client: O_PATH of the proxy's socket */
	char egpath[32]; /* "/proc/self/fd/N" */
	char *buf;	 /* client: CLIENT_BUF */
} bc = {.egfd = -1};

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int listen_loopback(int port, int *out_port, cx_err *err)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
		cx_err_set(err, errno, "listen on 127.0.0.1");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*out_port = ntohs(a.sin_port);
	return fd;
}

/* ---- the upstream: one connection at a time (the clients take turns) ---- */

static void upstream_serve(int fd, char *big)
{
	char head[8192];
	size_t got = 0;
	while (!memmem(head, got, "\r\n\r\n", 4)) {
		ssize_t n = read(fd, head + got, sizeof head - got);
		if (n <= 0 || (got += (size_t)n) == sizeof head)
			return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	cx_err err = CX_ERR_INIT;
	int mib = 0;
	char reply[256];
	if (!strncmp(head, "GET /small ", 11)) {
		int n = snprintf(reply, sizeof reply,
				 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
				 "%zu\r\nConnection: close\r\n\r\n" SMALL_BODY,
				 strlen(SMALL_BODY));
		(void)cx_write_all(fd, reply, (size_t)n, &err);
	} else if (sscanf(head, "GET /stream/%d ", &mib) == 1 && mib > 0) {
		int n = snprintf(reply, sizeof reply,
				 "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
				 "Content-Length: %llu\r\nConnection: close\r\n\r\n",
				 (unsigned long long)mib << 20);
		if (cx_write_all(fd, reply, (size_t)n, &err) == 0)
			for (int i = 0; i < mib && cx_write_all(fd, big, UPSTREAM_BUF, &err) == 0;
			     i++)
				;
	} else {
		static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
		(void)cx_write_all(fd, nf, sizeof nf - 1, &err);
	}
}

static void upstream_main(int lfd)
{
	char *big = malloc(UPSTREAM_BUF);
	if (!big)
		_exit(1);
	memset(big, 'x', UPSTREAM_BUF);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			_exit(1);
		}
		struct timeval tv = {.tv_sec = 10};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		upstream_serve(fd, big);
		close(fd);
	}
}

/* ---- a client ---- */

static int dial_tcp(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	if (fd >= 0 && (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
			connect(fd, (struct sockaddr *)&a, sizeof a) < 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int dial(enum path p)
{
	if (p == P_DIRECT)
		return dial_tcp(bc.up_port);
	if (p == P_FWD)
		return dial_tcp(bc.fwd_port);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", bc.egpath);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One response: *status, the body read (by Content-Length; none without
 * one, as for "200 Connection established") and dropped.  Never reads past
 * the response: nothing follows it on these connections.  The body's
 * length, or -1. */
static int64_t read_response(int fd, int *status)
{
	char *b = bc.buf;
	size_t got = 0;
	char *end;
	for (;;) {
		ssize_t n = read(fd, b + got, CLIENT_BUF - 1 - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
		b[got] = 0;
		if ((end = strstr(b, "\r\n\r\n")))
			break;
		if (got == CLIENT_BUF - 1)
			return -1;
	}
	if (sscanf(b, "HTTP/1.%*d %d", status) != 1)
		return -1;
	int64_t want = 0;
	const char *cl = strcasestr(b, "\r\nContent-Length:");
	if (cl && cl < end)
		want = strtoll(cl + 17, NULL, 10);
	int64_t have = (int64_t)(got - (size_t)(end + 4 - b));
	while (have < want) {
		ssize_t n = read(fd, b, CLIENT_BUF);
		if (n <= 0)
			return -1;
		have += n;
	}
	return have == want ? want : -1;
}

/* One sample of measure m on path p: new connection, (CONNECT,) GET, the
 * whole response.  The body's length, or -1. */
static int64_t client_request(enum path p, enum measure m)
{
	cleanup_close int fd = dial(p);
	if (fd < 0)
		return -1;
	cx_err err = CX_ERR_INIT;
	char req[512];
	int status = 0, n;
	int tunnel = p != P_DIRECT && m != M_GET;
	if (tunnel) {
		n = snprintf(req, sizeof req,
			     "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
			     bc.up_port, bc.up_port);
		if (cx_write_all(fd, req, (size_t)n, &err) < 0 || read_response(fd, &status) != 0 ||
		    status != 200)
			return -1;
	}
	char target[64] = "/small";
	if (m == M_STREAM)
		snprintf(target, sizeof target, "/stream/%d", bc.stream_mib);
	if (p == P_DIRECT || tunnel)
		n = snprintf(req, sizeof req,
			     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: egress_bench\r\n"
			     "Connection: close\r\n\r\n",
			     target, bc.up_port);
	else /* absolute-form, as to any HTTP proxy */
		n = snprintf(req, sizeof req,
			     "GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
			     "User-Agent: egress_bench\r\nConnection: close\r\n\r\n",
			     bc.up_port, target, bc.up_port);
	if (cx_write_all(fd, req, (size_t)n, &err) < 0)
		return -1;
	int64_t body = read_response(fd, &status);
	return status == 200 ? body : -1;
}

/* Errors reach the parent as code + length + message (style.md). */
static void client_reply_err(int sock, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_reply_err(int sock, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	int32_t code = -1, l = len < 0 ? 0 : len >= (int)sizeof msg ? (int)sizeof msg - 1 : len;
	cx_err err = CX_ERR_INIT;
	if (cx_write_all(sock, &code, sizeof code, &err) == 0 &&
	    cx_write_all(sock, &l, sizeof l, &err) == 0)
		(void)cx_write_all(sock, msg, (size_t)l, &err);
}

/* As root: the proxy's socket by O_PATH (the dir is root-only, as DATA/sock
 * is), then the sandbox's uid; dumpable again so /proc/self/fd is ours. */
static int client_setup(enum path p, cx_err *err)
{
	if (p != P_DIRECT) {
		int dfd = open(bc.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		bc.egfd = dfd < 0 ? -1 : openat(dfd, EGRESS_SOCK, O_PATH | O_CLOEXEC | O_NOFOLLOW);
		if (dfd >= 0)
			close(dfd);
		if (bc.egfd < 0)
			return cx_err_set(err, errno, "open %s/%s", bc.dir, EGRESS_SOCK);
		snprintf(bc.egpath, sizeof bc.egpath, "/proc/self/fd/%d", bc.egfd);
	}
	if (setgroups(0, NULL) < 0 || setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) < 0 ||
	    setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) < 0)
		return cx_err_set(err, errno, "setuid %d", SANDBOX_UID);
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		return cx_err_set(err, errno, "prctl");
	if (p == P_FWD && wsa_forward_start(bc.fwd_port, bc.egfd, err) < 0)
		return -1;
	return 0;
}

static void client_main(enum path p, int sock)
{
	if (setsid() < 0)
		_exit(1);
	bc.buf = malloc(CLIENT_BUF);
	if (!bc.buf)
		_exit(1);
	int ready = 0;
	cx_err err = CX_ERR_INIT;
	for (;;) {
		struct cmd c;
		if (cx_read_all(sock, &c, sizeof c, &err) < 0 || c.measure == M_QUIT)
			_exit(0);
		if (!ready && client_setup(p, &err) < 0) {
			client_reply_err(sock, "%s: %s", path_name[p], err.msg);
			_exit(1);
		}
		ready = 1;
		double *v = calloc((size_t)c.n, sizeof *v);
		if (!v)
			_exit(1);
		for (int i = 0; i < c.n; i++) {
			uint64_t t0 = now_us();
			int64_t body = client_request(p, (enum measure)c.measure);
			uint64_t us = now_us() - t0;
			if (body < 0) {
				client_reply_err(sock,
						 "%s: %s, request %d: no 200 with its whole body",
						 path_name[p], measure_name[c.measure], i);
				_exit(1);
			}
			v[i] =
			    c.measure == M_STREAM ? (double)body / (double)us : (double)us / 1000.0;
		}
		int32_t ok = 0;
		if (cx_write_all(sock, &ok, sizeof ok, &err) < 0 ||
		    cx_write_all(sock, v, (size_t)c.n * sizeof *v, &err) < 0)
			_exit(1);
		free(v);
	}
}

/* ---- the driver ---- */

struct child {
	pid_t pid;
	int sock;
};

static pid_t spawn_client(enum path p, int *sock, cx_err *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return cx_err_set(err, errno, "socketpair");
	pid_t pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return cx_err_set(err, errno, "fork");
	}
	if (pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		client_main(p, sv[1]);
		_exit(0);
	}
	close(sv[1]);
	*sock = sv[0];
	return pid;
}

/* Run n samples of m on a client; they are appended to out. */
static int ask(const struct child *c, enum measure m, int n, double *out, cx_err *err)
{
	struct cmd cmd = {.measure = m, .n = n};
	int32_t code;
	if (cx_write_all(c->sock, &cmd, sizeof cmd, err) < 0 ||
	    cx_read_all(c->sock, &code, sizeof code, err) < 0)
		return cx_err_wrap(err, "client %d", (int)c->pid);
	if (code < 0) {
		int32_t len;
		char msg[512] = "";
		if (cx_read_all(c->sock, &len, sizeof len, err) == 0 && len > 0 &&
		    len < (int32_t)sizeof msg)
			(void)cx_read_all(c->sock, msg, (size_t)len, err);
		return cx_err_set(err, 0, "%s", msg);
	}
	return cx_read_all(c->sock, out, (size_t)n * sizeof *out, err);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest rank. */
static double pct(const double *v, int n, double p)
{
	int i = (int)(p / 100.0 * n + 0.999999) - 1;
	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

struct series {
	double *v;
	int n;
};

static uint64_t cpu_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* cpu: the proxy's CPU time (this process: its threads, and the driver's
 * few syscalls) over the measure's proxied samples. */
static void report(enum measure m, struct series s[P_N], uint64_t cpu)
{
	for (int p = 0; p < P_N; p++)
		qsort(s[p].v, (size_t)s[p].n, sizeof *s[p].v, cmp_double);
	const struct series *d = &s[P_DIRECT];
	if (m == M_STREAM) {
		printf("\n%s (%d MiB, MB/s = 10^6 B/s)\n| path | n | median | min | max | ratio to "
		       "direct |\n"
		       "|---|---|---|---|---|---|\n",
		       measure_name[m], bc.stream_mib);
		for (int p = 0; p < P_N; p++)
			printf("| %s | %d | %.0f | %.0f | %.0f | %.3f |\n", path_name[p], s[p].n,
			       pct(s[p].v, s[p].n, 50), s[p].v[0], s[p].v[s[p].n - 1],
			       pct(s[p].v, s[p].n, 50) / pct(d->v, d->n, 50));
		for (int p = P_PROXY; p < P_N; p++)
			printf(
			    "egress: %d MiB down a tunnel, median %s %.0f MB/s vs direct %.0f MB/s "
			    "(ratio %.2f)\n",
			    bc.stream_mib, path_name[p], pct(s[p].v, s[p].n, 50),
			    pct(d->v, d->n, 50), pct(s[p].v, s[p].n, 50) / pct(d->v, d->n, 50));
		printf("egress: proxy CPU %.0f us per MiB relayed\n",
		       (double)cpu / (double)(bc.stream_mib * (s[P_PROXY].n + s[P_FWD].n)));
		return;
	}
	printf("\n%s (ms)\n| path | n | p50 | p95 | ratio p50 | ratio p95 |\n"
	       "|---|---|---|---|---|---|\n",
	       measure_name[m]);
	for (int p = 0; p < P_N; p++)
		printf("| %s | %d | %.3f | %.3f | %.2f | %.2f |\n", path_name[p], s[p].n,
		       pct(s[p].v, s[p].n, 50), pct(s[p].v, s[p].n, 95),
		       pct(s[p].v, s[p].n, 50) / pct(d->v, d->n, 50),
		       pct(s[p].v, s[p].n, 95) / pct(d->v, d->n, 95));
	for (int p = P_PROXY; p < P_N; p++)
		for (int q = 50; q <= 95; q += 45) {
			double a = pct(s[p].v, s[p].n, q), b = pct(d->v, d->n, q);
			printf(
			    "egress: %s p%d %s %.3f ms vs direct %.3f ms (ratio %.2f, %+.3f ms)\n",
			    measure_name[m], q, path_name[p], a, b, a / b, a - b);
		}
	printf("egress: proxy CPU %.1f us per request (%s)\n",
	       (double)cpu / (double)(s[P_PROXY].n + s[P_FWD].n), measure_name[m]);
}

/* The three measures, the paths taking turns in each round. */
static int run(struct child cl[P_N], int requests, int stream_rounds, cx_err *err)
{
	static double warm[WARMUP];
	for (int p = 0; p < P_N; p++)
		if (ask(&cl[p], M_GET, WARMUP, warm, err) < 0)
			return -1;
	for (int m = 0; m < M_N; m++) {
		int rounds = m == M_STREAM ? stream_rounds : ROUNDS;
		int per = m == M_STREAM ? 1 : (requests + ROUNDS - 1) / ROUNDS;
		struct series s[P_N];
		for (int p = 0; p < P_N; p++) {
			s[p].n = 0;
			s[p].v = calloc((size_t)(rounds * per), sizeof(double));
			if (!s[p].v)
				return cx_err_set(err, ENOMEM, "samples");
		}
		uint64_t cpu0 = cpu_us();
		for (int r = 0; r < rounds; r++)
			for (int k = 0; k < P_N; k++) {
				int p = (r + k) % P_N;
				if (ask(&cl[p], (enum measure)m, per, s[p].v + s[p].n, err) < 0)
					return -1;
				s[p].n += per;
			}
		report((enum measure)m, s, cpu_us() - cpu0);
		for (int p = 0; p < P_N; p++)
			free(s[p].v);
	}
	return 0;
}

static int start_proxy(cx_err *err)
{
	char ca[4200], audit[4200], allow[64];
	snprintf(ca, sizeof ca, "%s/ca", bc.dir);
	snprintf(audit, sizeof audit, "%s/%s", bc.dir, EGRESS_AUDIT_FILE);
	snprintf(allow, sizeof allow, "127.0.0.1:%d", bc.up_port);
	cleanup_close int dfd = open(bc.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return cx_err_set(err, errno, "open %s", bc.dir);
	json_t *ap = json_pack("[s]", allow);
	struct egress_opts o = {
	    .sock_dirfd = dfd,
	    .default_mode = EGRESS_MODE_OPEN,
	    .max_conns = 1024, /* cortexd's defaults */
	    .max_conns_session = 64,
	    .connect_timeout_ms = 10000,
	    .head_timeout_ms = 10000,
	    .allow_private = ap,
	    .ca_dir = ca,
	};
	int rc = egress_start(&o, err);
	json_decref(ap);
	if (rc < 0 || egress_set_user_policy("bench", NULL, err) < 0 ||
	    egress_bind(SANDBOX_UID, "s_bench", "bench", audit, err) < 0)
		return -1;
	return 0;
}

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "re");
	int n = 0, ch;
	while (f && (ch = getc(f)) != EOF)
		n += ch == '\n';
	if (f)
		fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	int requests = argc > 1 ? atoi(argv[1]) : 500;
	bc.stream_mib = argc > 2 ? atoi(argv[2]) : 256;
	int stream_rounds = argc > 3 ? atoi(argv[3]) : 3;
	if (requests < ROUNDS || bc.stream_mib < 1 || stream_rounds < 1) {
		fprintf(stderr, "usage: egress_bench [requests>=%d [stream_mib [stream_rounds]]]\n",
			ROUNDS);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "egress_bench: needs root (clients switch to uid %d)\n",
			SANDBOX_UID);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	const char *tmp = getenv("CORTEX_TEST_TMP");
	snprintf(bc.dir, sizeof bc.dir, "%s/egress-bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(bc.dir)) { /* 0700: root-only, as DATA/sock */
		perror("egress_bench: mkdtemp");
		return 1;
	}
	cx_err err = CX_ERR_INIT;
	struct child up = {.pid = -1, .sock = -1}, cl[P_N];
	int rc = 1, up_lfd = -1, fwd_lfd = -1;
	for (int p = 0; p < P_N; p++)
		cl[p] = (struct child){.pid = -1, .sock = -1};

	/* Processes first, threads after: upstream and clients fork here. */
	if ((up_lfd = listen_loopback(0, &bc.up_port, &err)) < 0 ||
	    (fwd_lfd = listen_loopback(0, &bc.fwd_port, &err)) < 0)
		goto out;
	close(fwd_lfd); /* a free port for the forwarder, which binds it itself */
	if ((up.pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		setsid(); /* a remote server shares no CPU share with cortexd */
		upstream_main(up_lfd);
	}
	close(up_lfd);
	if (up.pid < 0) {
		cx_err_set(&err, errno, "fork");
		goto out;
	}
	for (int p = 0; p < P_N; p++)
		if ((cl[p].pid = spawn_client((enum path)p, &cl[p].sock, &err)) < 0)
			goto out;
	if (start_proxy(&err) < 0)
		goto out;

	printf("egress_bench: loopback, %s build; upstream 127.0.0.1:%d in its own process; "
	       "each client setsid(), uid %d; %d requests per path (%d rounds), %d x %d MiB\n",
	       BENCH_BUILD_TYPE, bc.up_port, SANDBOX_UID, requests, ROUNDS, stream_rounds,
	       bc.stream_mib);
	printf("paths: direct = TCP to the upstream; proxy = the proxy's Unix socket; fwd+proxy = "
	       "TCP to ws-agent's forwarder (ws-agent/forward.c) then the proxy, the extra hop "
	       "every sandboxed program goes through\n");
	uint64_t t0 = now_us();
	if (run(cl, requests, stream_rounds, &err) < 0)
		goto out;
	char audit[4200];
	snprintf(audit, sizeof audit, "%s/%s", bc.dir, EGRESS_AUDIT_FILE);
	printf("\nproxy audit lines: %d; wall %.1f s\n", count_lines(audit),
	       (double)(now_us() - t0) / 1e6);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "egress_bench: %s\n", err.msg);
	for (int p = 0; p < P_N; p++)
		if (cl[p].pid > 0) {
			struct cmd q = {.measure = M_QUIT};
			cx_err e2 = CX_ERR_INIT;
			if (cx_write_all(cl[p].sock, &q, sizeof q, &e2) < 0)
				kill(cl[p].pid, SIGKILL);
			close(cl[p].sock);
			waitpid(cl[p].pid, NULL, 0);
		}
	egress_stop();
	if (up.pid > 0) {
		kill(up.pid, SIGKILL);
		waitpid(up.pid, NULL, 0);
	}
	cx_rm_rf(bc.dir);
	return rc;
}
