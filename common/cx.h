/* cx.h — the one error convention, scope-exit cleanup and small helpers
 * shared by every part of Cortex (daemon, sandbox library, ws-agent).
 *
 * Errors: a function that can fail returns int (0 on success, negative on
 * failure) and takes `cx_err *err` as its last argument.  cx_err_set() makes
 * an error (with errno text when errnum != 0) and returns -1; cx_err_wrap()
 * prefixes context on the way up and returns -1.  Never overwrite an error
 * that is already set: wrap it.  Neither allocates or locks (given plain
 * conversions: no positional or wide-string arguments), so children forked
 * from the threaded daemon may use them.
 */
#ifndef CX_H
#define CX_H

#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct cx_err {
	int code;      /* errno-style code (0 if none); ENOENT for "not found" */
	char msg[512]; /* human-readable, already includes context */
} cx_err;

#define CX_ERR_INIT {0, {0}}

/* Returned by lookups when the key/object does not exist (not an error). */
#define CX_NOTFOUND (-2)

int cx_err_set(cx_err *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int cx_err_wrap(cx_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void cx_err_clear(cx_err *err);

/* ---- scope-exit cleanup (crun / bubblewrap style) ---- */
static inline void cx_freep(void *p) { free(*(void **)p); }
static inline void cx_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define cleanup_free __attribute__((cleanup(cx_freep)))
#define cleanup_close __attribute__((cleanup(cx_closep)))

/* Hand ownership out of a cleanup_* variable. */
static inline void *cx_steal_ptr(void *pp)
{
	void **p = (void **)pp;
	void *v = *p;
	*p = NULL;
	return v;
}
#define steal_pointer(pp) cx_steal_ptr(pp)
static inline int steal_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

/* ---- time ---- */
uint64_t cx_mono_us(void); /* CLOCK_MONOTONIC, microseconds */
uint64_t cx_mono_ms(void);
int64_t cx_wall_ms(void); /* CLOCK_REALTIME, ms since epoch */

/* ---- a rate budget (token bucket), thread-safe ----
 * Work that a request can make others wait for — a store read on cortexd's
 * service thread for a token or session id no cache knows — is allowed at
 * `per_s` a second with bursts of `burst`; past it the caller refuses. */
struct cx_budget {
	pthread_mutex_t mu;
	double per_s, burst, tokens;
	uint64_t last_us;
	uint64_t refused; /* under mu */
};
#define CX_BUDGET_INIT(per_s, burst) {PTHREAD_MUTEX_INITIALIZER, (per_s), (burst), (burst), 0, 0}
/* 1: one unit taken; 0: over budget (counted in b->refused). */
int cx_budget_take(struct cx_budget *b);
uint64_t cx_budget_refused(struct cx_budget *b);

/* ---- io ---- */
/* Write/read exactly len bytes, retrying on EINTR and short counts. */
int cx_write_all(int fd, const void *buf, size_t len, cx_err *err);
int cx_read_all(int fd, void *buf, size_t len, cx_err *err);

/* Remove a tree without following links or crossing mounts; a missing
 * path is not an error.  0, or -1 with errno set. */
int cx_rm_rf(const char *path);
/* Accept every connection pending on the nonblocking listening socket lfd
 * (SOCK_NONBLOCK | SOCK_CLOEXEC) and hand each to take, which owns it.
 * 0 once drained (EAGAIN); -1 with err on another accept error. */
int cx_accept_each(int lfd, void (*take)(void *arg, int fd), void *arg, cx_err *err);

/* Listen on the Unix socket dirfd/name (SOCK_NONBLOCK | SOCK_CLOEXEC),
 * bound through /proc/self/fd/<dirfd>/ (a deep dir may not fit sun_path),
 * a stale socket there removed first, mode applied.  The fd, or -1 with err. */
int cx_listen_unix_at(int dirfd, const char *name, mode_t mode, int backlog, cx_err *err);
/* An upgrade restart: every listener cx_listen_unix_at made is duplicated
 * without CLOEXEC and named in CORTEX_KEPT_FDS ("name=fd;..."), so the next
 * image's cx_listen_unix_at of the same name takes that very socket (the
 * O_PATH fds sandboxes hold of it keep working) instead of binding anew. */
void cx_listen_keep_for_exec(void);
/* After start: close what was kept but not taken, forget CORTEX_KEPT_FDS. */
void cx_listen_kept_done(void);

/* Random lowercase hex id of 2*nbytes chars into out (size >= 2*nbytes+1). */
void cx_random_hex(char *out, size_t nbytes);

/* Make the NUL-terminated s valid UTF-8 in place: each byte of an invalid
 * or cut-off sequence becomes '?' (a message that quotes a client's bytes,
 * or cuts them at "%.64s", must still go out as a JSON string).  Returns
 * how many bytes were replaced. */
size_t cx_utf8_fix(char *s);
/* Length (1-4) of the valid UTF-8 sequence at s, of n bytes left, or 0 (RFC
 * 3629: no overlongs, no surrogates, nothing above U+10FFFF, not cut). */
size_t cx_utf8_seq(const unsigned char *s, size_t n);

/* A NUL-terminated string as a JSON string, byte for byte what jansson's
 * json_dumps writes for it (quotes; \\ \" \b \f \n \r \t; other bytes
 * below 0x20 as \u00XX; UTF-8 and '/' as they are): for store values built
 * without a json_t on the service thread.  cx_json_str_len gives the length
 * with the quotes, or 0 when s is not valid UTF-8 (jansson refuses such a
 * string); cx_json_str_put writes that many bytes (no NUL) to out and
 * returns the end. */
size_t cx_json_str_len(const char *s);
char *cx_json_str_put(char *out, const char *s);

/* FNV-1a over n bytes: the bucket hash of cortexd's small chained tables
 * (peers, owners, tokens).  Not for anything an attacker picks to collide
 * against a secret: these tables are keyed by ids, addresses and token hashes. */
static inline uint32_t cx_fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

#endif
