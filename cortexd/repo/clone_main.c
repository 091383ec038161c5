/* clone_main.c — cortex-clone, the helper repo_clone() execs (the protocol is
 * in repo_proto.h).  It runs as the session's uid, with no_new_privs, in a
 * fresh process image: libgit2, OpenSSL and their global state never live in
 * the threaded daemon, and nothing the daemon holds (locks, fds, keys in its
 * environment) reaches this process.
 *
 * The token is read from fd 0, kept in memory only and handed to libgit2 by
 * the credential callback, once: a second call means the server refused it.
 * No git config file is read (search paths emptied: no credential helpers,
 * no insteadOf), so the clone's .git/config holds only the plain URL. */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <git2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cx.h"
#include "repo.h"
#include "repo_proto.h"

#define PROGRESS_EVERY_MS 100

struct clone_state {
	const char *url, *ref;
	char token[REPO_TOKEN_MAX + 1];
	size_t token_len;
	int cred_calls;
	int redirect_refused;
	uint64_t max_bytes; /* 0: no cap */
	unsigned flags;	    /* REPO_ALLOW_PRIVATE */
	int too_big;
	uint64_t last_ms;
	struct repo_rec rec; /* the latest progress */
	int rec_fd_ok;
};

static void send_rec(struct clone_state *st, const struct repo_rec *r)
{
	if (!st->rec_fd_ok)
		return;
	cx_err err = CX_ERR_INIT;
	if (cx_write_all(REPO_REC_FD, r, sizeof *r, &err) < 0)
		st->rec_fd_ok = 0;
}

/* Throttled: at most every PROGRESS_EVERY_MS, unless force (phase changes, ends). */
static void send_progress(struct clone_state *st, int force)
{
	uint64_t now = cx_mono_ms();
	if (!force && now - st->last_ms < PROGRESS_EVERY_MS)
		return;
	st->last_ms = now;
	st->rec.kind = REC_PROGRESS;
	send_rec(st, &st->rec);
}

__attribute__((noreturn, format(printf, 3, 4))) static void fail(struct clone_state *st, enum repo_ec code,
					   const char *fmt, ...)
{
	struct repo_rec r = {.kind = REC_ERROR, .code = (int32_t)code};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r.msg, sizeof r.msg, fmt, ap);
	va_end(ap);
	send_rec(st, &r);
	explicit_bzero(st->token, sizeof st->token);
	if (!st->rec_fd_ok)
		fprintf(stderr, "cortex-clone: %s\n", r.msg);
	_exit(1);
}

/* "scheme://[user@]host[:port]/..." -> host[:port] (length into *len). */
static const char *url_host(const char *url, size_t *len)
{
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	size_t auth = strcspn(p, "/?#");
	const char *at = memchr(p, '@', auth);
	if (at) {
		auth -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	*len = auth;
	return p;
}

static int same_host(const char *a, const char *b)
{
	size_t la, lb;
	const char *ha = url_host(a, &la), *hb = url_host(b, &lb);
	return la == lb && !strncasecmp(ha, hb, la);
}

/* Loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved. */
static int addr_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a =
		    ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8_t zero[15] = {0};
		if (!memcmp(a, v4mapped, 12)) {
			struct sockaddr_in v4 = {.sin_family = AF_INET};
			memcpy(&v4.sin_addr, a + 12, 4);
			return addr_private((const struct sockaddr *)&v4);
		}
		return !memcmp(a, zero, 15) /* :: and ::1 */ || (a[0] & 0xfe) == 0xfc ||
		       (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff;
	}
	if (sa->sa_family != AF_INET)
		return 1;
	uint32_t h = ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr);
	return (h >> 24) == 0 || (h >> 24) == 10 || (h >> 24) == 127 || (h >> 16) == 0xa9fe ||
	       (h >> 20) == 0xac1 || (h >> 16) == 0xc0a8 || (h >> 22) == (100u << 2 | 1) ||
	       (h >> 28) >= 0xe;
}

/* Refuse a URL whose host resolves to a private address.  Best effort: the
 * name is resolved again by libgit2 (a rebinding DNS server can still win);
 * an unresolvable name is left to libgit2 (it may go through a proxy). */
static void check_host(struct clone_state *st)
{
	size_t len;
	const char *h = url_host(st->url, &len);
	char host[256];
	if (len >= sizeof host)
		fail(st, EC_NET, "host name too long");
	memcpy(host, h, len);
	host[len] = '\0';
	char *name = host;
	if (*name == '[') { /* [v6]:port */
		name++;
		char *close = strchr(name, ']');
		if (close)
			*close = '\0';
	} else {
		char *colon = strrchr(name, ':');
		if (colon)
			*colon = '\0';
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(name, NULL, &hints, &res) != 0)
		return;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		if (addr_private(ai->ai_addr)) {
			freeaddrinfo(res);
			fail(st, EC_PRIVATE, "%s is a private, loopback or link-local address",
			     name);
		}
	freeaddrinfo(res);
}

static int on_credentials(git_credential **out, const char *url, const char *user_from_url,
			  unsigned int allowed, void *payload)
{
	struct clone_state *st = payload;
	if (++st->cred_calls > 1 || !st->token_len)
		return GIT_EAUTH; /* refused once already, or nothing to offer */
	if (!same_host(url, st->url)) {
		st->redirect_refused = 1; /* a redirect to another host never gets the token */
		return GIT_EAUTH;
	}
	if (!(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT))
		return GIT_EAUTH;
	const char *user = user_from_url && *user_from_url ? user_from_url : "x-access-token";
	return git_credential_userpass_plaintext_new(out, user, st->token);
}

static int on_transfer(const git_indexer_progress *s, void *payload)
{
	struct clone_state *st = payload;
	st->rec.phase = PHASE_CLONING;
	st->rec.received_objects = s->received_objects;
	st->rec.total_objects = s->total_objects;
	st->rec.indexed_objects = s->indexed_objects;
	st->rec.received_bytes = s->received_bytes;
	send_progress(st, 0);
	if (st->max_bytes && s->received_bytes > st->max_bytes) {
		st->too_big = 1;
		return -1; /* git_clone stops with GIT_EUSER */
	}
	return 0;
}

static void on_checkout(const char *path, size_t done, size_t total, void *payload)
{
	(void)path;
	struct clone_state *st = payload;
	int first = st->rec.phase != PHASE_CHECKOUT;
	st->rec.phase = PHASE_CHECKOUT;
	st->rec.checkout_done = (uint32_t)done;
	st->rec.checkout_total = (uint32_t)total;
	send_progress(st, first || done == total);
}

static const char *git_msg(void)
{
	const git_error *e = git_error_last();
	return e && e->message ? e->message : "unknown error";
}

/* A failed git_clone: which kind, for the user. */
__attribute__((noreturn)) static void fail_clone(struct clone_state *st, int rc)
{
	const git_error *e = git_error_last();
	const char *m = git_msg();
	if (st->too_big)
		fail(st, EC_TOO_BIG, "the repository is larger than %llu bytes",
		     (unsigned long long)st->max_bytes);
	if (st->redirect_refused)
		fail(st, EC_REDIRECT,
		     "the server redirected to another host; the token was not sent");
	if (st->cred_calls > 1)
		fail(st, EC_AUTH, "authentication failed");
	if (st->cred_calls == 1 && !st->token_len)
		fail(st, EC_AUTH_NEEDED, "authentication required (no token given)");
	if (strstr(m, "status code: 404") || strstr(m, "not found"))
		fail(st, EC_NOT_FOUND, "repository not found");
	if (rc == GIT_EAUTH)
		fail(st, EC_AUTH, "authentication failed");
	if (strstr(m, "status code: 403"))
		fail(st, EC_FORBIDDEN, "access denied (HTTP 403)");
	if (rc == GIT_ECERTIFICATE || !strncmp(m, "failed to connect", 17) ||
	    !strncmp(m, "failed to resolve", 17) ||
	    (e && (e->klass == GIT_ERROR_NET || e->klass == GIT_ERROR_SSL ||
		   e->klass == GIT_ERROR_HTTP)))
		fail(st, EC_NET, "%s", m);
	fail(st, EC_INTERNAL, "%s", m);
}

static int is_sha(const char *s)
{
	size_t n = strspn(s, "0123456789abcdefABCDEF");
	return n >= 4 && n <= 40 && !s[n];
}

/* Check out ref (a branch: a local branch tracking it; a tag or commit:
 * detached) or, for "", the remote's HEAD. */
static void checkout_ref(struct clone_state *st, git_repository *repo)
{
	git_checkout_options co;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	co.progress_cb = on_checkout;
	co.progress_payload = st;
	if (!*st->ref) {
		if (git_repository_head_unborn(repo) == 1)
			return; /* an empty repository: .git and nothing else */
		if (git_checkout_head(repo, &co) < 0)
			fail(st, EC_INTERNAL, "checkout: %s", git_msg());
		return;
	}
	char name[REPO_REF_MAX + 64];
	git_reference *r = NULL;
	git_object *commit = NULL;
	snprintf(name, sizeof name, "refs/remotes/origin/%s", st->ref);
	if (git_reference_lookup(&r, repo, name) == 0) {
		git_reference *local = NULL;
		/* The clone made the local branch of the remote's HEAD already. */
		if (git_reference_peel(&commit, r, GIT_OBJECT_COMMIT) < 0 ||
		    (git_branch_lookup(&local, repo, st->ref, GIT_BRANCH_LOCAL) < 0 &&
		     git_branch_create(&local, repo, st->ref, (git_commit *)commit, 0) < 0))
			fail(st, EC_INTERNAL, "branch %s: %s", st->ref, git_msg());
		snprintf(name, sizeof name, "origin/%s", st->ref);
		if (git_branch_set_upstream(local, name) < 0 ||
		    git_checkout_tree(repo, commit, &co) < 0 ||
		    git_repository_set_head(repo, git_reference_name(local)) < 0)
			fail(st, EC_INTERNAL, "checkout %s: %s", st->ref, git_msg());
		git_reference_free(local);
		goto out;
	}
	snprintf(name, sizeof name, "refs/tags/%s", st->ref);
	if (git_reference_lookup(&r, repo, name) == 0) {
		if (git_reference_peel(&commit, r, GIT_OBJECT_COMMIT) < 0)
			fail(st, EC_REF, "ref %s is a tag of no commit", st->ref);
	} else if (is_sha(st->ref)) {
		git_object *o = NULL;
		if (git_revparse_single(&o, repo, st->ref) < 0 ||
		    git_object_peel(&commit, o, GIT_OBJECT_COMMIT) < 0)
			fail(st, EC_REF, "ref %s not found", st->ref);
		git_object_free(o);
	} else {
		fail(st, EC_REF, "ref %s not found", st->ref);
	}
	if (git_checkout_tree(repo, commit, &co) < 0 ||
	    git_repository_set_head_detached(repo, git_object_id(commit)) < 0)
		fail(st, EC_INTERNAL, "checkout %s: %s", st->ref, git_msg());
out:
	git_object_free(commit);
	git_reference_free(r);
}

static void read_token(struct clone_state *st)
{
	for (;;) {
		ssize_t n = read(0, st->token + st->token_len, sizeof st->token - st->token_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(st, EC_INTERNAL, "reading the token: %s", strerrordesc_np(errno));
		if (n == 0)
			break;
		st->token_len += (size_t)n;
		if (st->token_len == sizeof st->token)
			fail(st, EC_INTERNAL, "token longer than %d bytes", REPO_TOKEN_MAX);
	}
	st->token[st->token_len] = '\0';
	if (strlen(st->token) != st->token_len)
		fail(st, EC_INTERNAL, "token holds a NUL byte");
}

/* Sanitizer builds: libgit2 leaves its pcre2 match data to the exit. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libpcre2-8.so\n";
}
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
	return "print_suppressions=0";
}

int main(int argc, char **argv)
{
	static struct clone_state st;
	st.rec_fd_ok = fcntl(REPO_REC_FD, F_GETFD) >= 0;
	if (argc < 4 || argc > 6)
		fail(&st, EC_INTERNAL,
		     "usage: cortex-clone URL REF DEST [MAX_BYTES] (token on stdin, records on fd "
		     "3)");
	/* Not dumpable: another process of the same uid cannot read the token
	 * out of /proc/<pid>/mem or attach with ptrace. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	st.url = argv[1];
	st.ref = argv[2];
	for (int i = 4; i < argc; i++) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(argv[i], &end, 10);
		if (errno || *end || !*argv[i])
			fail(&st, EC_INTERNAL, "argument %d: not a number", i);
		if (i == 4)
			st.max_bytes = v;
		else
			st.flags = (unsigned)v;
	}
	read_token(&st);
	cx_err err = CX_ERR_INIT;
	if (repo_url_ok(st.url, &err) < 0)
		fail(&st, EC_INTERNAL, "%s", err.msg);
	if (*st.ref && repo_ref_ok(st.ref, &err) < 0)
		fail(&st, EC_INTERNAL, "%s", err.msg);

	if (git_libgit2_init() < 0)
		fail(&st, EC_INTERNAL, "libgit2 init: %s", git_msg());
	static const int levels[] = {GIT_CONFIG_LEVEL_PROGRAMDATA, GIT_CONFIG_LEVEL_SYSTEM,
				     GIT_CONFIG_LEVEL_XDG, GIT_CONFIG_LEVEL_GLOBAL};
	for (size_t i = 0; i < sizeof levels / sizeof *levels; i++)
		if (git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, levels[i], "") < 0)
			fail(&st, EC_INTERNAL, "libgit2 search path: %s", git_msg());

	git_clone_options co;
	git_clone_options_init(&co, GIT_CLONE_OPTIONS_VERSION);
	co.checkout_opts.checkout_strategy = GIT_CHECKOUT_NONE; /* checkout_ref() does it */
	co.fetch_opts.callbacks.credentials = on_credentials;
	co.fetch_opts.callbacks.transfer_progress = on_transfer;
	co.fetch_opts.callbacks.payload = &st;
	co.fetch_opts.proxy_opts.type = GIT_PROXY_AUTO;
	/* With a token, no redirect at all: libgit2 could replay credentials
	 * to the new host.  Without REPO_ALLOW_PRIVATE neither: the new host
	 * would escape check_host().  Else the first request only, as git does. */
	co.fetch_opts.follow_redirects = st.token_len || !(st.flags & REPO_ALLOW_PRIVATE)
					     ? GIT_REMOTE_REDIRECT_NONE
					     : GIT_REMOTE_REDIRECT_INITIAL;
	if (!(st.flags & REPO_ALLOW_PRIVATE))
		check_host(&st);
	git_repository *repo = NULL;
	int rc = git_clone(&repo, st.url, argv[3], &co);
	if (rc < 0)
		fail_clone(&st, rc);
	explicit_bzero(st.token, sizeof st.token);
	st.rec.received_objects = st.rec.total_objects; /* the final "cloning" report */
	send_progress(&st, 1);
	checkout_ref(&st, repo);
	git_repository_free(repo);
	git_libgit2_shutdown();
	struct repo_rec done = st.rec;
	done.kind = REC_DONE;
	send_rec(&st, &done);
	return 0;
}
