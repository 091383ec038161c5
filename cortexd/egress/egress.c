/* egress.c — the egress proxy: accept thread, a pool of workers (one connection each at a time),
 * the table of bindings / policies / brokered secrets (egress.h).
 *
 * A connection's life (conn_main):
 *   uid (SO_PEERCRED, taken at accept) → binding → caps → the request head
 *   (capped, within head_timeout_ms) → "CONNECT host:port" or an absolute
 *   "METHOD http://host[:port]/path" → policy by name → resolve → policy per
 *   address (the first allowed one is dialled: a name cannot be re-resolved
 *   to something else between check and connect) → connect → 200 / the
 *   rewritten request → relay (or mitm_relay for a brokered host) → one
 *   audit line, counters.
 * Refusals are HTTP responses with the JSON error shape and a header
 * X-Cortex-Egress naming the decision. */
#include "egress.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "egress_req.h"
#include "policy.h"

#define EG_HEAD_MAX (16u << 10) /* a request head from the sandbox */
#define EG_RELAY_BUF                                                                               \
	(256u << 10) /* per direction: a pipe of this size (kernel pages, no user copy) */
#define EG_AUDIT_MAX (1u << 20) /* an audit file past this is rotated to .1 */
#define EG_KEEP_IDLE 8		/* idle workers kept */
#define EG_IDLE_MS   10000	/* ... the others leave after this long idle */
#define EG_STACK     (256u << 10)

struct binding {
	uid_t uid;
	char sid[40];
	char user[72];
	char audit[4200];
	unsigned conns;
	struct binding *next;
};

struct named_pol { /* a user's or a session's policy */
	char key[72];
	struct egress_policy *p;
	struct named_pol *next;
};

struct broker { /* a user's brokered secrets */
	char user[72];
	json_t *entries; /* [{"placeholder","value","hosts"}]; values zeroed on replace */
	struct broker *next;
};

struct conn {
	int cfd, ufd;
	uid_t uid;
	struct conn *next;  /* in eg.conns (every open connection) */
	struct conn *qnext; /* in eg.queue (accepted, no worker yet) */
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int running, stopping;
	struct egress_opts o;
	struct egress_policy *exceptions; /* the operator's allow_private */
	struct binding *bindings;
	struct named_pol *users, *sessions;
	struct broker *brokers;
	struct conn *conns;
	unsigned nconns;
	/* Workers: a thread serves one connection at a time and then waits for
	 * the next; idle ones past EG_KEEP_IDLE leave after EG_IDLE_MS.  (A new
	 * thread per connection cost ~0.2 ms at p50 and most of the p95 tail:
	 * creation, and glibc's madvise of the dead thread's stack.) */
	struct conn *queue, **queue_tail;
	pthread_cond_t work_cv;
	unsigned nthreads, nidle;
	int lfd, stop_pipe[2];
	pthread_t accept_thr;
	struct mitm_ca *ca;
	char upstream_ca[4096];
	pthread_mutex_t audit_mu;
} eg = {.o = {.default_mode = EGRESS_MODE_OPEN},
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER,
	.work_cv = PTHREAD_COND_INITIALIZER,
	.queue_tail = &eg.queue,
	.lfd = -1,
	.stop_pipe = {-1, -1},
	.audit_mu = PTHREAD_MUTEX_INITIALIZER};

static struct {
	atomic_ullong allow, deny, refused_session, refused_user, refused_global, bad_request, upstream_error,
	    unknown_peer, brokered, bytes_up, bytes_down, conns_total;
} ctr;

/* ---- the table ---- */

static struct binding *find_uid(uid_t uid)
{
	for (struct binding *b = eg.bindings; b; b = b->next)
		if (b->uid == uid)
			return b;
	return NULL;
}

/* Proxied connections open for all sessions of user (eg.mu held). */
static unsigned user_conns(const char *user)
{
	unsigned n = 0;
	for (struct binding *b = eg.bindings; b; b = b->next)
		if (!strcmp(b->user, user))
			n += b->conns;
	return n;
}

static struct binding *find_sid(const char *sid)
{
	for (struct binding *b = eg.bindings; b; b = b->next)
		if (!strcmp(b->sid, sid))
			return b;
	return NULL;
}

int egress_bind(uid_t uid, const char *sid, const char *user, const char *audit_path, cx_err *err)
{
	if (strlen(sid) >= sizeof eg.bindings->sid || strlen(user) >= sizeof eg.bindings->user ||
	    strlen(audit_path) >= sizeof eg.bindings->audit)
		return cx_err_set(err, ENAMETOOLONG, "egress: binding of %.40s", sid);
	pthread_mutex_lock(&eg.mu);
	struct binding *b = find_uid(uid);
	if (!b) {
		b = calloc(1, sizeof *b);
		if (!b) {
			pthread_mutex_unlock(&eg.mu);
			return cx_err_set(err, ENOMEM, "egress: binding");
		}
		b->uid = uid;
		b->next = eg.bindings;
		eg.bindings = b;
	}
	snprintf(b->sid, sizeof b->sid, "%s", sid);
	snprintf(b->user, sizeof b->user, "%s", user);
	snprintf(b->audit, sizeof b->audit, "%s", audit_path);
	pthread_mutex_unlock(&eg.mu);
	return 0;
}

void egress_unbind(uid_t uid)
{
	pthread_mutex_lock(&eg.mu);
	for (struct binding **pp = &eg.bindings; *pp; pp = &(*pp)->next)
		if ((*pp)->uid == uid) {
			struct binding *b = *pp;
			*pp = b->next;
			free(b);
			break;
		}
	pthread_mutex_unlock(&eg.mu);
}

static struct named_pol **named_slot(struct named_pol **head, const char *key)
{
	struct named_pol **pp = head;
	while (*pp && strcmp((*pp)->key, key))
		pp = &(*pp)->next;
	return pp;
}

static int set_named(struct named_pol **head, const char *key, json_t *policy, cx_err *err)
{
	struct egress_policy *p = NULL;
	if (policy && !(p = pol_parse(policy, eg.o.default_mode, err)))
		return -1;
	if (strlen(key) >= sizeof(*head)->key) {
		pol_unref(p);
		return cx_err_set(err, ENAMETOOLONG, "egress: key %.40s", key);
	}
	pthread_mutex_lock(&eg.mu);
	struct named_pol **pp = named_slot(head, key), *n = *pp;
	if (!p && n) { /* removed */
		*pp = n->next;
		pol_unref(n->p);
		free(n);
	} else if (p && n) {
		pol_unref(n->p);
		n->p = p;
	} else if (p && (n = calloc(1, sizeof *n))) {
		snprintf(n->key, sizeof n->key, "%s", key);
		n->p = p;
		n->next = *head;
		*head = n;
	} else if (p) {
		pthread_mutex_unlock(&eg.mu);
		pol_unref(p);
		return cx_err_set(err, ENOMEM, "egress: policy");
	}
	pthread_mutex_unlock(&eg.mu);
	return 0;
}

int egress_set_user_policy(const char *user, json_t *policy, cx_err *err)
{
	/* A user without a policy is still "known": an entry with the default. */
	if (!policy) {
		json_t *d = json_pack("{s:s}", "mode", pol_mode_name(eg.o.default_mode));
		int rc = set_named(&eg.users, user, d, err);
		json_decref(d);
		return rc;
	}
	return set_named(&eg.users, user, policy, err);
}

int egress_set_session_policy(const char *sid, json_t *policy, cx_err *err)
{
	return set_named(&eg.sessions, sid, policy, err);
}

int egress_user_policy_known(const char *user)
{
	pthread_mutex_lock(&eg.mu);
	int known = *named_slot(&eg.users, user) != NULL;
	pthread_mutex_unlock(&eg.mu);
	return known;
}

static void zero_values(json_t *entries)
{
	size_t i;
	json_t *e;
	json_array_foreach(entries, i, e)
	{
		json_t *v = json_object_get(e, "value");
		if (json_is_string(v))
			sodium_memzero((char *)json_string_value(v), json_string_length(v));
	}
}

int egress_set_user_broker(const char *user, json_t *entries, cx_err *err)
{
	if (entries && !json_is_array(entries))
		return cx_err_set(err, EINVAL, "egress: broker entries must be an array");
	json_t *copy = entries ? json_deep_copy(entries) : NULL;
	if (entries && !copy)
		return cx_err_set(err, ENOMEM, "egress: broker");
	pthread_mutex_lock(&eg.mu);
	struct broker **pp = &eg.brokers;
	while (*pp && strcmp((*pp)->user, user))
		pp = &(*pp)->next;
	struct broker *b = *pp;
	if (b) {
		zero_values(b->entries);
		json_decref(b->entries);
		b->entries = NULL;
	} else if ((b = calloc(1, sizeof *b))) { /* even empty: the user is "known" */
		snprintf(b->user, sizeof b->user, "%s", user);
		b->next = eg.brokers;
		eg.brokers = b;
	}
	if (b)
		b->entries = copy;
	pthread_mutex_unlock(&eg.mu);
	if (!b) {
		zero_values(copy);
		json_decref(copy);
		return cx_err_set(err, ENOMEM, "egress: broker");
	}
	return 0;
}

int egress_user_broker_known(const char *user)
{
	pthread_mutex_lock(&eg.mu);
	struct broker *b = eg.brokers;
	while (b && strcmp(b->user, user))
		b = b->next;
	pthread_mutex_unlock(&eg.mu);
	return b != NULL;
}

/* The swaps of user for host, copied (values included) under the lock;
 * *n = 0 when none applies.  Freed by free_swaps. */
static struct mitm_swap *swaps_for(const char *user, const char *host, size_t *n)
{
	*n = 0;
	struct broker *b = eg.brokers;
	while (b && strcmp(b->user, user))
		b = b->next;
	if (!b || !json_array_size(b->entries))
		return NULL;
	struct mitm_swap *sw = calloc(json_array_size(b->entries), sizeof *sw);
	size_t i;
	json_t *e;
	json_array_foreach(b->entries, i, e)
	{
		size_t k;
		json_t *h;
		int hit = 0;
		json_array_foreach(json_object_get(e, "hosts"), k, h)
		{
			if (json_is_string(h) && pol_host_match(json_string_value(h), host))
				hit = 1;
		}
		const char *ph = json_string_value(json_object_get(e, "placeholder"));
		const char *v = json_string_value(json_object_get(e, "value"));
		if (!sw || !hit || !ph || !v)
			continue;
		sw[*n].placeholder = strdup(ph);
		sw[*n].value = strdup(v);
		if (sw[*n].placeholder && sw[*n].value)
			(*n)++;
		else {
			free((char *)sw[*n].placeholder);
			free((char *)sw[*n].value);
		}
	}
	return sw;
}

static void free_swaps(struct mitm_swap *sw, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		sodium_memzero((char *)sw[i].value, strlen(sw[i].value));
		free((char *)sw[i].value);
		free((char *)sw[i].placeholder);
	}
	free(sw);
}

/* ---- responses, audit ---- */

static void reply(int fd, int code, const char *reason, const char *decision, const char *ecode,
		  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void reply(int fd, int code, const char *reason, const char *decision, const char *ecode,
		  const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", ecode, "message", msg);
	char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	char head[512];
	int hn =
	    snprintf(head, sizeof head,
		     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Cortex-Egress: %s\r\n"
		     "Connection: close\r\nContent-Length: %zu\r\n\r\n",
		     code, reason, decision, body ? strlen(body) : 0);
	cx_err err = CX_ERR_INIT;
	if (cx_write_all(fd, head, (size_t)hn, &err) == 0 && body)
		(void)cx_write_all(fd, body, strlen(body), &err);
	free(body);
}

struct audit {
	const char *method;
	char host[256];
	int port;
	char addr[INET6_ADDRSTRLEN];
	const char *decision;
	char rule[POL_RULE_MAX];
	uint64_t up, down, t0_ms;
	int brokered;
};

static void audit_write(const char *path, const struct audit *a)
{
	if (!path[0])
		return;
	json_t *o =
	    json_pack("{s:I,s:s,s:s,s:i,s:s,s:s,s:s,s:I,s:I,s:I,s:b}", "ts",
		      (json_int_t)cx_wall_ms(), "method", a->method ? a->method : "?", "host",
		      a->host, "port", a->port, "addr", a->addr, "decision", a->decision, "rule",
		      a->rule, "up", (json_int_t)a->up, "down", (json_int_t)a->down, "ms",
		      (json_int_t)(cx_mono_ms() - a->t0_ms), "brokered", a->brokered);
	char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!line)
		return;
	/* The session dir is cortexd's (root-only, outside the sandbox's mounts);
	 * O_NOFOLLOW all the same. */
	pthread_mutex_lock(&eg.audit_mu);
	struct stat st;
	if (stat(path, &st) == 0 && st.st_size > (off_t)EG_AUDIT_MAX) {
		char old[4300];
		snprintf(old, sizeof old, "%s.1", path);
		(void)rename(path, old);
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		size_t n = strlen(line);
		line[n] = '\n'; /* over the NUL: written with its length */
		cx_err err = CX_ERR_INIT;
		(void)cx_write_all(fd, line, n + 1, &err);
		close(fd);
	}
	pthread_mutex_unlock(&eg.audit_mu);
	free(line);
}

json_t *egress_audit_read(const char *path, size_t limit)
{
	json_t *out = json_array();
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || !out)
		return out;
	/* The tail: at most 256 KiB, whole lines only. */
	enum { TAIL = 256 << 10 };
	struct stat st;
	off_t from = fstat(fd, &st) == 0 && st.st_size > TAIL ? st.st_size - TAIL : 0;
	char *buf = malloc(TAIL + 1);
	ssize_t n = buf ? pread(fd, buf, TAIL, from) : -1;
	close(fd);
	if (n <= 0) {
		free(buf);
		return out;
	}
	buf[n] = 0;
	char *p = buf;
	if (from > 0 && (p = strchr(buf, '\n')))
		p++;
	json_t *all = json_array();
	for (char *line = p, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		json_t *o = json_loads(line, 0, NULL);
		if (o)
			json_array_append_new(all, o);
	}
	size_t total = json_array_size(all), skip = total > limit ? total - limit : 0;
	for (size_t i = skip; i < total; i++)
		json_array_append(out, json_array_get(all, i));
	json_decref(all);
	free(buf);
	return out;
}

/* ---- the host's own addresses ---- */

/* A public address of the host's own interfaces reaches whatever listens on
 * 0.0.0.0 there: as denied as loopback (unless excepted).  getifaddrs() is
 * cached for a few seconds (addresses change rarely; a lookup per
 * connection would cost a netlink dump). */
#define EG_IFADDR_TTL_MS 5000
#define EG_IFADDR_MAX	 64
static struct {
	pthread_mutex_t mu;
	uint64_t at_ms;
	size_t n;
	struct sockaddr_storage a[EG_IFADDR_MAX];
} ifa = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int same_addr(const struct sockaddr *x, const struct sockaddr *y)
{
	if (x->sa_family != y->sa_family)
		return 0;
	if (x->sa_family == AF_INET)
		return !memcmp(&((const struct sockaddr_in *)x)->sin_addr,
			       &((const struct sockaddr_in *)y)->sin_addr, 4);
	return !memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr,
		       &((const struct sockaddr_in6 *)y)->sin6_addr, 16);
}

static int host_own_addr(const struct sockaddr *sa)
{
	pthread_mutex_lock(&ifa.mu);
	uint64_t now = cx_mono_ms();
	if (!ifa.at_ms || now - ifa.at_ms > EG_IFADDR_TTL_MS) {
		struct ifaddrs *list = NULL;
		if (getifaddrs(&list) == 0) {
			ifa.n = 0;
			for (struct ifaddrs *i = list; i && ifa.n < EG_IFADDR_MAX; i = i->ifa_next)
				if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET ||
						    i->ifa_addr->sa_family == AF_INET6))
					memcpy(&ifa.a[ifa.n++], i->ifa_addr,
					       i->ifa_addr->sa_family == AF_INET
						   ? sizeof(struct sockaddr_in)
						   : sizeof(struct sockaddr_in6));
			freeifaddrs(list);
			ifa.at_ms = now;
		}
	}
	int hit = 0;
	for (size_t i = 0; i < ifa.n && !hit; i++)
		hit = same_addr((const struct sockaddr *)&ifa.a[i], sa);
	pthread_mutex_unlock(&ifa.mu);
	return hit;
}

/* ---- one connection ---- */

/* Read until "\r\n\r\n" (cap, deadline); returns the bytes read (head and
 * whatever followed), *head_len the head's length with its blank line. */
static ssize_t read_head(int fd, char *buf, size_t cap, size_t *head_len, int timeout_ms)
{
	size_t got = 0;
	uint64_t deadline = cx_mono_ms() + (uint64_t)timeout_ms;
	for (;;) {
		uint64_t now = cx_mono_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -ETIMEDOUT;
		ssize_t n = read(fd, buf + got, cap - got - 1);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += (size_t)n;
		buf[got] = 0;
		char *end = strstr(buf, "\r\n\r\n");
		if (end) {
			*head_len = (size_t)(end - buf) + 4;
			return (ssize_t)got;
		}
		if (got >= cap - 1)
			return -EMSGSIZE;
	}
}

/* Dial with a deadline; the socket, or -errno. */
static int dial(const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int r;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
		close(fd);
		return r == 0 ? -ETIMEDOUT : soerr ? -soerr : -EIO;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* Blocking from here: a worker serves one connection at a time. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* Pump both ways until both halves are closed; counts bytes.  splice():
 * socket → pipe → socket in the kernel, no copy through user space (the
 * benchmark: 64 KiB read/write buffers gave a tunnel ~0.35x direct). Both
 * sockets nonblocking, so one slow side never blocks the other direction. */
static void relay(int cfd, int ufd, uint64_t *up, uint64_t *down)
{
	int fds[2] = {cfd, ufd}; /* direction d: fds[d] → pipe[d] → fds[!d] */
	int pr[2] = {-1, -1}, pw[2] = {-1, -1};
	size_t inpipe[2] = {0, 0};
	int eof[2] = {0, 0}, shut[2] = {0, 0};
	for (int d = 0; d < 2; d++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
			goto out;
		pr[d] = p[0];
		pw[d] = p[1];
		(void)fcntl(pw[d], F_SETPIPE_SZ, (int)EG_RELAY_BUF);
		(void)fcntl(fds[d], F_SETFL, fcntl(fds[d], F_GETFL) | O_NONBLOCK);
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = cfd}, {.fd = ufd}};
		for (int d = 0; d < 2; d++) {
			if (!eof[d] && inpipe[d] < EG_RELAY_BUF)
				p[d].events |= POLLIN;
			if (inpipe[d])
				p[!d].events |= POLLOUT;
		}
		if (!p[0].events && !p[1].events)
			break;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		int dead = 0;
		for (int d = 0; d < 2; d++) {
			if (!eof[d] && inpipe[d] < EG_RELAY_BUF &&
			    (p[d].revents & (POLLIN | POLLHUP | POLLERR))) {
				ssize_t n =
				    splice(fds[d], NULL, pw[d], NULL, EG_RELAY_BUF - inpipe[d],
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
				if (n > 0) {
					inpipe[d] += (size_t)n;
					*(d ? down : up) += (uint64_t)n;
				} else if (n == 0) {
					eof[d] = 1;
				} else if (errno != EINTR && errno != EAGAIN) {
					eof[d] = dead = 1;
				}
			}
			if (inpipe[d] && (p[!d].revents & (POLLOUT | POLLERR | POLLHUP))) {
				ssize_t n = splice(pr[d], NULL, fds[!d], NULL, inpipe[d],
						   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
				if (n > 0)
					inpipe[d] -= (size_t)n;
				else if (n < 0 && errno != EINTR && errno != EAGAIN)
					dead = 1;
			}
			if (eof[d] && !inpipe[d] && !shut[d]) {
				shutdown(fds[!d], SHUT_WR); /* half-close passes through */
				shut[d] = 1;
			}
		}
		if (dead || (shut[0] && shut[1]))
			break;
	}
out:
	for (int d = 0; d < 2; d++) {
		if (pr[d] >= 0)
			close(pr[d]);
		if (pw[d] >= 0)
			close(pw[d]);
	}
}

/* Close a client socket we answered without reading all it sent: unread
 * bytes at close() would turn our reply into a reset.  Half-close, then
 * discard what comes for a short, bounded while. */
static void drain_close(int fd)
{
	shutdown(fd, SHUT_WR);
	char sink[4096];
	size_t total = 0;
	uint64_t deadline = cx_mono_ms() + 500;
	for (;;) {
		uint64_t now = cx_mono_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (now >= deadline || total >= (64u << 10) ||
		    poll(&p, 1, (int)(deadline - now)) <= 0)
			break;
		ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
		if (n <= 0 && !(n < 0 && errno == EINTR))
			break;
		if (n > 0)
			total += (size_t)n;
	}
	close(fd);
}

static void count(const char *decision)
{
	atomic_fetch_add(!strcmp(decision, "allow") ? &ctr.allow : &ctr.deny, 1);
}

static void conn_done(struct conn *c, const char *sid)
{
	pthread_mutex_lock(&eg.mu);
	struct binding *b = sid[0] ? find_sid(sid) : NULL;
	if (b && b->conns)
		b->conns--;
	for (struct conn **pp = &eg.conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	eg.nconns--;
	int cfd = c->cfd;
	if (c->ufd >= 0)
		close(c->ufd);
	free(c);
	pthread_cond_broadcast(&eg.cv);
	pthread_mutex_unlock(&eg.mu);
	if (cfd >= 0)
		drain_close(cfd);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	int fd = c->cfd;
	char sid[40] = "", user[72] = "", audit_path[4200] = "";
	struct egress_policy *pol = NULL, *exc = NULL;
	struct egress_req r = {0};
	struct audit a = {.t0_ms = cx_mono_ms(), .decision = "deny"};
	char *buf = NULL;

	pthread_mutex_lock(&eg.mu);
	struct binding *b = find_uid(c->uid);
	int over = 0;
	if (b) {
		snprintf(sid, sizeof sid, "%s", b->sid);
		snprintf(user, sizeof user, "%s", b->user);
		snprintf(audit_path, sizeof audit_path, "%s", b->audit);
		if (b->conns >= eg.o.max_conns_session)
			over = 1;
		else if (eg.o.max_conns_user && user_conns(b->user) >= eg.o.max_conns_user)
			over = 2;
		else
			b->conns++;
		struct named_pol *n = *named_slot(&eg.sessions, sid);
		if (!n)
			n = *named_slot(&eg.users, user);
		pol = n ? pol_ref(n->p) : NULL;
		exc = pol_ref(eg.exceptions);
	}
	pthread_mutex_unlock(&eg.mu);
	if (!b) {
		atomic_fetch_add(&ctr.unknown_peer, 1);
		reply(fd, 403, "Forbidden", "deny", "egress_unknown_sandbox",
		      "no session runs as uid %u", (unsigned)c->uid);
		goto out_nobind;
	}
	if (over == 2) {
		atomic_fetch_add(&ctr.refused_user, 1);
		reply(fd, 429, "Too Many Requests", "refused", "egress_user_cap",
		      "the sessions of user %s have %u proxied connections open (cap egress.max_conns_per_user)",
		      user, eg.o.max_conns_user);
		sid[0] = 0; /* not counted in b->conns */
		goto out;
	}
	if (over) {
		atomic_fetch_add(&ctr.refused_session, 1);
		reply(
		    fd, 429, "Too Many Requests", "refused", "egress_session_cap",
		    "session %s has %u proxied connections open (cap egress.max_conns_per_session)",
		    sid, eg.o.max_conns_session);
		sid[0] = 0; /* not counted in b->conns */
		goto out;
	}
	if (!pol && !(pol = pol_new_mode(eg.o.default_mode)))
		goto out;

	buf = malloc(EG_HEAD_MAX);
	size_t hl = 0;
	ssize_t got = buf ? read_head(fd, buf, EG_HEAD_MAX, &hl, eg.o.head_timeout_ms) : -ENOMEM;
	if (got < 0) {
		atomic_fetch_add(&ctr.bad_request, 1);
		if (got == -EMSGSIZE)
			reply(fd, 431, "Request Header Fields Too Large", "refused",
			      "egress_head_too_large", "the request head is over %u bytes",
			      EG_HEAD_MAX);
		else if (got == -ETIMEDOUT)
			reply(fd, 408, "Request Timeout", "refused", "egress_head_timeout",
			      "no complete request head within %d ms", eg.o.head_timeout_ms);
		goto out;
	}
	char why[160];
	if (egress_req_parse(buf, hl, &r, why, sizeof why) < 0) {
		atomic_fetch_add(&ctr.bad_request, 1);
		reply(fd, 400, "Bad Request", "refused", "egress_bad_request", "%s", why);
		goto out;
	}
	a.method = r.method;
	snprintf(a.host, sizeof a.host, "%s", r.host);
	a.port = r.port;
	if (pol_denied_by_name(pol, r.host, r.port, a.rule, sizeof a.rule)) {
		count("deny");
		reply(fd, 403, "Forbidden", "deny", "egress_denied", "egress to %s:%d denied by %s",
		      r.host, r.port, a.rule);
		audit_write(audit_path, &a);
		goto out;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
			*res = NULL;
	char port_s[8];
	snprintf(port_s, sizeof port_s, "%d", r.port);
	int gai = getaddrinfo(r.host, port_s, &hints, &res);
	if (gai) {
		atomic_fetch_add(&ctr.upstream_error, 1);
		snprintf(a.rule, sizeof a.rule, "resolve: %s", gai_strerror(gai));
		a.decision = "error";
		reply(fd, 502, "Bad Gateway", "error", "egress_resolve", "cannot resolve %s: %s",
		      r.host, gai_strerror(gai));
		audit_write(audit_path, &a);
		goto out;
	}
	int ufd = -1, last_err = 0, allowed = 0;
	for (struct addrinfo *ai = res; ai && ufd < 0; ai = ai->ai_next) {
		char rule[POL_RULE_MAX];
		enum pol_decision dec =
		    pol_decide(pol, exc, r.host, r.port, ai->ai_addr, rule, sizeof rule);
		if (dec == POL_ALLOW && !pol_addr_private(ai->ai_addr) &&
		    host_own_addr(ai->ai_addr) && !pol_excepted(exc, r.host, r.port, ai->ai_addr)) {
			dec = POL_DENY;
			snprintf(
			    rule, sizeof rule,
			    "an address of this host (always denied; an operator may except it: "
			    "egress.allow_private)");
		}
		if (dec != POL_ALLOW) {
			if (!allowed)
				snprintf(a.rule, sizeof a.rule, "%s", rule);
			continue;
		}
		allowed = 1;
		snprintf(a.rule, sizeof a.rule, "%s", rule);
		void *ap = ai->ai_family == AF_INET
			       ? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
			       : (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		inet_ntop(ai->ai_family, ap, a.addr, sizeof a.addr);
		int u = dial(ai->ai_addr, ai->ai_addrlen, eg.o.connect_timeout_ms);
		if (u < 0)
			last_err = -u;
		else
			ufd = u;
	}
	freeaddrinfo(res);
	if (!allowed) {
		count("deny");
		reply(fd, 403, "Forbidden", "deny", "egress_denied", "egress to %s:%d denied by %s",
		      r.host, r.port, a.rule);
		audit_write(audit_path, &a);
		goto out;
	}
	count("allow");
	a.decision = "allow";
	if (ufd < 0) {
		atomic_fetch_add(&ctr.upstream_error, 1);
		reply(fd, 502, "Bad Gateway", "error", "egress_connect",
		      "cannot connect to %s:%d: %s", r.host, r.port, strerror(last_err));
		a.decision = "error";
		audit_write(audit_path, &a);
		goto out;
	}
	pthread_mutex_lock(&eg.mu);
	c->ufd = ufd;
	pthread_mutex_unlock(&eg.mu);
	cx_err err = CX_ERR_INIT;
	if (r.is_connect) {
		size_t nsw = 0;
		pthread_mutex_lock(&eg.mu);
		struct mitm_swap *sw = eg.ca ? swaps_for(user, r.host, &nsw) : NULL;
		pthread_mutex_unlock(&eg.mu);
		static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
		if (cx_write_all(fd, ok, sizeof ok - 1, &err) == 0) {
			if (nsw) {
				/* Bytes the client sent after its head belong to the TLS it starts:
				 * none may be there yet (it waits for our 200). */
				struct mitm_stats st = {0};
				a.brokered = 1;
				atomic_fetch_add(&ctr.brokered, 1);
				if (mitm_relay(eg.ca, fd, ufd, r.host, sw, nsw,
					       eg.upstream_ca[0] ? eg.upstream_ca : NULL, &st,
					       &err) < 0)
					log_warn("egress %s: broker %s: %s", sid, r.host, err.msg);
				a.up = st.up;
				a.down = st.down;
			} else {
				if ((size_t)got > hl)
					(void)cx_write_all(ufd, buf + hl, (size_t)got - hl, &err);
				relay(fd, ufd, &a.up, &a.down);
			}
		}
		free_swaps(sw, nsw);
	} else if (cx_write_all(ufd, r.head, r.head_len, &err) == 0 &&
		   ((size_t)got == hl ||
		    cx_write_all(ufd, buf + hl, (size_t)got - hl, &err) == 0)) {
		a.up = r.head_len + (size_t)got - hl;
		relay(fd, ufd, &a.up, &a.down);
	}
	atomic_fetch_add(&ctr.bytes_up, a.up);
	atomic_fetch_add(&ctr.bytes_down, a.down);
	audit_write(audit_path, &a);
out:
	free(r.head);
	free(buf);
out_nobind:
	pol_unref(pol);
	pol_unref(exc);
	conn_done(c, sid);
	return NULL;
}

/* ---- accept ---- */

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&eg.mu);
	for (;;) {
		while (!eg.queue && !eg.stopping) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += EG_IDLE_MS / 1000;
			eg.nidle++;
			int rc = pthread_cond_timedwait(&eg.work_cv, &eg.mu, &ts);
			eg.nidle--;
			if (rc == ETIMEDOUT && !eg.queue && eg.nidle >= EG_KEEP_IDLE)
				goto leave;
		}
		if (!eg.queue)
			goto leave; /* stopping, nothing left */
		struct conn *c = eg.queue;
		if (!(eg.queue = c->qnext))
			eg.queue_tail = &eg.queue;
		pthread_mutex_unlock(&eg.mu);
		conn_main(c);
		pthread_mutex_lock(&eg.mu);
	}
leave:
	eg.nthreads--;
	pthread_cond_broadcast(&eg.cv);
	pthread_mutex_unlock(&eg.mu);
	return NULL;
}

/* Under eg.mu: a worker for one more queued connection (an idle one, else a
 * new thread).  -1 if none could be had. */
static int want_worker(void)
{
	if (eg.nidle) {
		pthread_cond_signal(&eg.work_cv);
		return 0;
	}
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, EG_STACK);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_t t;
	int rc = pthread_create(&t, &at, worker_main, NULL);
	pthread_attr_destroy(&at);
	if (rc)
		return -1;
	eg.nthreads++;
	return 0;
}

static void take(void *arg, int fd)
{
	(void)arg;
	struct ucred cr;
	socklen_t cl = sizeof cr;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) {
		close(fd);
		return;
	}
	/* Blocking I/O on the connection's worker (read_head polls). */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	atomic_fetch_add(&ctr.conns_total, 1);
	pthread_mutex_lock(&eg.mu);
	struct conn *c = NULL;
	if (eg.stopping || eg.nconns >= eg.o.max_conns || !(c = calloc(1, sizeof *c))) {
		pthread_mutex_unlock(&eg.mu);
		atomic_fetch_add(&ctr.refused_global, 1);
		reply(fd, 503, "Service Unavailable", "refused", "egress_busy",
		      "the egress proxy has %u connections open (cap egress.max_conns)",
		      eg.o.max_conns);
		close(fd); /* no drain here: the accept thread must not wait */
		return;
	}
	c->cfd = fd;
	c->ufd = -1;
	c->uid = cr.uid;
	if (want_worker() < 0 && eg.nthreads == 0) {
		pthread_mutex_unlock(&eg.mu);
		free(c);
		reply(fd, 503, "Service Unavailable", "refused", "egress_busy",
		      "cannot start a connection thread");
		close(fd);
		return;
	}
	/* Queued: an idle worker, a new one, or (threads exhausted) the next
	 * worker to finish takes it. */
	c->next = eg.conns;
	eg.conns = c;
	eg.nconns++;
	*eg.queue_tail = c;
	eg.queue_tail = &c->qnext;
	pthread_mutex_unlock(&eg.mu);
}

static void *accept_main(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); /* and so every connection thread */
	for (;;) {
		struct pollfd p[2] = {{.fd = eg.lfd, .events = POLLIN},
				      {.fd = eg.stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		cx_err err = CX_ERR_INIT;
		if (p[0].revents && cx_accept_each(eg.lfd, take, NULL, &err) < 0) {
			log_warn("egress: %s",
				 err.msg); /* EMFILE and the like: back off a little */
			poll(NULL, 0, 50);
		}
	}
	return NULL;
}

/* ---- metrics ---- */

static void write_metrics(FILE *f, void *arg)
{
	(void)arg;
	static const char *const decisions[] = {"allow", "deny"};
	static const char *const reasons[] = {"session_cap", "user_cap", "global_cap", "bad_request",
					      "unknown_sandbox"};
	static const char *const dirs[] = {"up", "down"};
	const uint64_t dv[] = {ctr.allow, ctr.deny};
	const uint64_t rv[] = {ctr.refused_session, ctr.refused_user, ctr.refused_global, ctr.bad_request,
			       ctr.unknown_peer};
	const uint64_t bv[] = {ctr.bytes_up, ctr.bytes_down};
	metrics_counter_by(f, "cortex_egress_decisions_total", "Egress proxy policy decisions.",
			   "decision", decisions, dv, 2);
	metrics_counter_by(f, "cortex_egress_refused_total",
			   "Egress connections refused before a decision.", "reason", reasons, rv,
			   5);
	metrics_counter(f, "cortex_egress_upstream_errors_total",
			"Egress: resolve or connect failures.", ctr.upstream_error);
	metrics_counter(f, "cortex_egress_brokered_total",
			"Egress: tunnels intercepted to broker a credential.", ctr.brokered);
	metrics_counter_by(f, "cortex_egress_bytes_total", "Bytes relayed by the egress proxy.",
			   "dir", dirs, bv, 2);
	pthread_mutex_lock(&eg.mu);
	unsigned open = eg.nconns;
	pthread_mutex_unlock(&eg.mu);
	metrics_gauge(f, "cortex_egress_connections", "Egress connections open now.", open);
}

/* ---- start / stop ---- */

int egress_start(const struct egress_opts *o, cx_err *err)
{
	if (eg.running)
		return cx_err_set(err, EALREADY, "egress: already running");
	eg.o = *o;
	eg.o.allow_private = NULL;
	if (o->upstream_ca_file)
		snprintf(eg.upstream_ca, sizeof eg.upstream_ca, "%s", o->upstream_ca_file);
	json_t *exc = json_pack("{s:s,s:O}", "mode", "allowlist", "allow",
				o->allow_private ? o->allow_private : json_array());
	if (!exc)
		exc = json_pack("{s:s}", "mode", "allowlist");
	eg.exceptions = pol_parse(exc, EGRESS_MODE_ALLOWLIST, err);
	json_decref(exc);
	if (!eg.exceptions)
		return cx_err_wrap(err, "egress.allow_private");
	if (o->ca_dir && mitm_ca_open(o->ca_dir, &eg.ca, err) < 0)
		goto fail;
	eg.lfd = cx_listen_unix_at(o->sock_dirfd, EGRESS_SOCK, 0666, 256, err);
	if (eg.lfd < 0 || pipe2(eg.stop_pipe, O_CLOEXEC) < 0) {
		if (eg.lfd >= 0)
			cx_err_set(err, errno, "pipe");
		goto fail;
	}
	int rc = pthread_create(&eg.accept_thr, NULL, accept_main, NULL);
	if (rc) {
		cx_err_set(err, rc, "egress: accept thread");
		goto fail;
	}
	eg.stopping = 0;
	eg.running = 1;
	metrics_register("egress", write_metrics, NULL);
	return 0;
fail:
	if (eg.lfd >= 0)
		close(eg.lfd);
	eg.lfd = -1;
	for (int i = 0; i < 2; i++)
		if (eg.stop_pipe[i] >= 0)
			close(eg.stop_pipe[i]);
	eg.stop_pipe[0] = eg.stop_pipe[1] = -1;
	pol_unref(eg.exceptions);
	eg.exceptions = NULL;
	mitm_ca_free(eg.ca);
	eg.ca = NULL;
	return cx_err_wrap(err, "egress");
}

int egress_running(void)
{
	return eg.running;
}

const char *egress_ca_pem(void)
{
	return eg.ca ? mitm_ca_pem(eg.ca) : NULL;
}

static int write_atomic(const char *dir, const char *name, const char *a, size_t alen,
			const char *b, size_t blen, cx_err *err)
{
	char tmp[4300], dst[4300];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
	snprintf(dst, sizeof dst, "%s/%s", dir, name);
	(void)unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return cx_err_set(err, errno, "create %s", tmp);
	int rc = cx_write_all(fd, a, alen, err);
	if (rc == 0 && blen)
		rc = cx_write_all(fd, b, blen, err);
	if (rc == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0))
		rc = cx_err_set(err, errno, "write %s", tmp);
	close(fd);
	if (rc == 0 && rename(tmp, dst) < 0)
		rc = cx_err_set(err, errno, "rename %s", dst);
	if (rc < 0)
		(void)unlink(tmp);
	return rc;
}

int egress_write_trust(const char *dir, const char *host_bundle, cx_err *err)
{
	const char *pem = egress_ca_pem();
	if (!pem)
		return cx_err_set(err, ENOENT, "egress: no CA");
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", dir);
	if (chmod(dir, 0755) < 0)
		return cx_err_set(err, errno, "chmod %s", dir);
	/* The host's bundle is Debian's ca-certificates, as in the default image;
	 * a missing one leaves the CA alone in bundle.pem (only brokered hosts verify). */
	char *bundle = NULL;
	size_t blen = 0;
	FILE *f = host_bundle ? fopen(host_bundle, "re") : NULL;
	if (f) {
		enum { BUNDLE_MAX = 4 << 20 };
		bundle = malloc(BUNDLE_MAX);
		blen = bundle ? fread(bundle, 1, BUNDLE_MAX, f) : 0;
		fclose(f);
		if (blen && bundle[blen - 1] != '\n' && blen < BUNDLE_MAX)
			bundle[blen++] = '\n';
	}
	int rc = write_atomic(dir, "ca.pem", pem, strlen(pem), NULL, 0, err);
	if (rc == 0)
		rc = write_atomic(dir, "bundle.pem", bundle ? bundle : "", blen, pem, strlen(pem),
				  err);
	free(bundle);
	return rc;
}

void egress_stop(void)
{
	if (!eg.running)
		return;
	pthread_mutex_lock(&eg.mu);
	eg.stopping = 1;
	pthread_mutex_unlock(&eg.mu);
	(void)!write(eg.stop_pipe[1], "x", 1);
	pthread_join(eg.accept_thr, NULL);
	/* Wake every connection thread: their reads and writes fail now. */
	pthread_mutex_lock(&eg.mu);
	for (struct conn *c = eg.conns; c; c = c->next) {
		shutdown(c->cfd, SHUT_RDWR);
		if (c->ufd >= 0)
			shutdown(c->ufd, SHUT_RDWR);
	}
	pthread_cond_broadcast(&eg.work_cv); /* idle workers leave */
	while (eg.nconns || eg.nthreads)
		pthread_cond_wait(&eg.cv, &eg.mu);
	pthread_mutex_unlock(&eg.mu);
	close(eg.lfd);
	close(eg.stop_pipe[0]);
	close(eg.stop_pipe[1]);
	eg.lfd = eg.stop_pipe[0] = eg.stop_pipe[1] = -1;
	pol_unref(eg.exceptions);
	eg.exceptions = NULL;
	mitm_ca_free(eg.ca);
	eg.ca = NULL;
	eg.running = 0;
}
