/* cx.c — error convention and small helpers; see cx.h. */
#include "cx.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <ftw.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int cx_err_set(cx_err *err, int errnum, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	if (errnum && n >= 0 && (size_t)n < sizeof err->msg) {
		/* Not strerror(): it takes the locale's locks and allocates for
		 * unknown values, and this also runs in children forked from the
		 * threaded daemon, where neither is safe. */
		const char *desc = strerrordesc_np(errnum);
		if (desc)
			snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", desc);
		else
			snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": Unknown error %d",
				 errnum);
	}
	err->code = errnum;
	return -1;
}

int cx_err_wrap(cx_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char ctx[256], old[sizeof err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof ctx, fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof old);
	/* Truncation of a very long chain is acceptable: the innermost text is last. */
	size_t n = strnlen(ctx, sizeof ctx);
	if (n + 2 < sizeof err->msg) {
		memcpy(err->msg, ctx, n);
		memcpy(err->msg + n, ": ", 2);
		size_t room = sizeof err->msg - n - 3;
		size_t olen = strnlen(old, sizeof old);
		if (olen > room)
			olen = room;
		memcpy(err->msg + n + 2, old, olen);
		err->msg[n + 2 + olen] = '\0';
	}
	return -1;
}

void cx_err_clear(cx_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

uint64_t cx_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t cx_mono_ms(void) { return cx_mono_us() / 1000u; }

int cx_budget_take(struct cx_budget *b)
{
	uint64_t now = cx_mono_us();
	pthread_mutex_lock(&b->mu);
	if (b->last_us)
		b->tokens += (double)(now - b->last_us) / 1e6 * b->per_s;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_us = now;
	int ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	else
		b->refused++;
	pthread_mutex_unlock(&b->mu);
	return ok;
}

uint64_t cx_budget_refused(struct cx_budget *b)
{
	pthread_mutex_lock(&b->mu);
	uint64_t n = b->refused;
	pthread_mutex_unlock(&b->mu);
	return n;
}

int64_t cx_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cx_write_all(int fd, const void *buf, size_t len, cx_err *err)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return cx_err_set(err, errno, "write");
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int cx_read_all(int fd, void *buf, size_t len, cx_err *err)
{
	char *p = buf;
	while (len) {
		ssize_t r = read(fd, p, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return cx_err_set(err, errno, "read");
		}
		if (r == 0)
			return cx_err_set(err, EPIPE, "read: unexpected end of stream");
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

void cx_random_hex(char *out, size_t nbytes)
{
	unsigned char b[64];
	if (nbytes > sizeof b)
		nbytes = sizeof b;
	size_t got = 0;
	while (got < nbytes) {
		ssize_t r = getrandom(b + got, nbytes - got, 0);
		if (r > 0)
			got += (size_t)r;
	}
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * nbytes] = '\0';
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

int cx_rm_rf(const char *path)
{
	int rc = nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	return rc < 0 && errno == ENOENT ? 0 : rc;
}

int cx_accept_each(int lfd, void (*take)(void *arg, int fd), void *arg, cx_err *err)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			take(arg, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return cx_err_set(err, errno, "accept");
	}
}

#define KEPT_MAX 8
static struct {
	char name[64];
	int fd;
} kept[KEPT_MAX];
static int n_kept;

/* The socket a previous image kept for name (CORTEX_KEPT_FDS), or -1. */
static int listen_inherited(const char *name)
{
	const char *env = getenv("CORTEX_KEPT_FDS");
	size_t nl = strlen(name);
	for (const char *p = env; p && *p;) {
		const char *eq = strchr(p, '='), *end = strchr(p, ';');
		if (!eq || (end && eq > end))
			break;
		if ((size_t)(eq - p) == nl && !memcmp(p, name, nl)) {
			int fd = atoi(eq + 1), on = 0, dom = 0;
			socklen_t l = sizeof on, l2 = sizeof dom;
			struct sockaddr_un a;
			socklen_t al = sizeof a;
			if (fd > 2 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &l) == 0 && on &&
			    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l2) == 0 && dom == AF_UNIX &&
			    getsockname(fd, (struct sockaddr *)&a, &al) == 0 && al > sizeof a.sun_family) {
				a.sun_path[sizeof a.sun_path - 1] = '\0';
				size_t pl = strlen(a.sun_path);
				if (pl > nl && a.sun_path[pl - nl - 1] == '/' && !strcmp(a.sun_path + pl - nl, name)) {
					(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
					(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
					return fd;
				}
			}
			return -1;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return -1;
}

static void listen_record(const char *name, int fd)
{
	if (n_kept < KEPT_MAX && strlen(name) < sizeof kept[0].name) {
		snprintf(kept[n_kept].name, sizeof kept[0].name, "%s", name);
		kept[n_kept++].fd = fd;
	}
}

void cx_listen_keep_for_exec(void)
{
	char env[KEPT_MAX * 80] = "";
	size_t len = 0;
	for (int i = 0; i < n_kept; i++) {
		int dup = fcntl(kept[i].fd, F_DUPFD, 3); /* no CLOEXEC: it crosses the execve */
		if (dup < 0)
			continue;
		len += (size_t)snprintf(env + len, sizeof env - len, "%s%s=%d", len ? ";" : "", kept[i].name, dup);
	}
	if (len)
		setenv("CORTEX_KEPT_FDS", env, 1);
}

void cx_listen_kept_done(void)
{
	const char *env = getenv("CORTEX_KEPT_FDS");
	for (const char *p = env; p && *p;) {
		const char *eq = strchr(p, '='), *end = strchr(p, ';');
		if (!eq)
			break;
		int fd = atoi(eq + 1), taken = 0;
		for (int i = 0; i < n_kept; i++)
			taken |= kept[i].fd == fd;
		if (!taken && fd > 2)
			close(fd);
		if (!end)
			break;
		p = end + 1;
	}
	unsetenv("CORTEX_KEPT_FDS");
}

int cx_listen_unix_at(int dirfd, const char *name, mode_t mode, int backlog, cx_err *err)
{
	int inh = listen_inherited(name);
	if (inh >= 0) {
		listen_record(name, inh);
		return inh;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if ((size_t)snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d/%s", dirfd, name) >= sizeof a.sun_path)
		return cx_err_set(err, ENAMETOOLONG, "socket name %s", name);
	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		return cx_err_set(err, errno, "remove stale %s", name);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cx_err_set(err, errno, "socket");
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || fchmodat(dirfd, name, mode, 0) < 0 ||
	    listen(fd, backlog) < 0) {
		cx_err_set(err, errno, "listen on %s", name);
		close(fd);
		return -1;
	}
	listen_record(name, fd);
	return fd;
}

size_t cx_utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		need = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return need;
}

size_t cx_utf8_fix(char *s)
{
	size_t fixed = 0;
	unsigned char *p = (unsigned char *)s;
	size_t left = strlen(s);
	while (*p) {
		size_t n = cx_utf8_seq(p, left);
		left -= n ? n : 1;
		if (n) {
			p += n;
		} else {
			*p++ = '?';
			fixed++;
		}
	}
	return fixed;
}

/* The escape of byte c, or NULL when it goes out as it is. */
static const char *json_esc(unsigned char c)
{
	switch (c) {
	case '"': return "\\\"";
	case '\\': return "\\\\";
	case '\b': return "\\b";
	case '\f': return "\\f";
	case '\n': return "\\n";
	case '\r': return "\\r";
	case '\t': return "\\t";
	default: return NULL;
	}
}

size_t cx_json_str_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s), n = 2;
	while (left) {
		if (*p >= 0x80) {
			size_t k = cx_utf8_seq(p, left);
			if (!k)
				return 0;
			n += k;
			p += k;
			left -= k;
			continue;
		}
		const char *e = json_esc(*p);
		n += e ? strlen(e) : *p < 0x20 ? 6 : 1;
		p++;
		left--;
	}
	return n;
}

char *cx_json_str_put(char *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	*out++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		const char *e = json_esc(*p);
		if (e) {
			size_t k = strlen(e);
			memcpy(out, e, k);
			out += k;
		} else if (*p < 0x20) {
			memcpy(out, "\\u00", 4);
			out[4] = hex[*p >> 4];
			out[5] = hex[*p & 15];
			out += 6;
		} else {
			*out++ = (char)*p;
		}
	}
	*out++ = '"';
	return out;
}
