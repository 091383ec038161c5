/* test_repo_clone.c — repo_clone() against a real git server: a repository
 * made with the git CLI, served by tests/gitserver.js (git http-backend
 * behind basic auth) on 127.0.0.1.  Runs as root: the clone runs as CLONE_UID.
 *
 * The repository: main (two commits, ~50 files in a few dirs), an annotated
 * tag v1 on main's first commit, and a branch "feature" with one more file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "repo.h"
#include "unit_util.h"

#define CLONE_UID 65534
#define CLONE_GID 65534

static struct {
	char dir[512];
	char url[256], url_missing[256], url_refused[256];
	char token[64];
	char sha_v1[41], sha_main[41], sha_feature[41];
	pid_t server;
	int server_in; /* the server exits when this closes */
	unsigned n;
} G;

struct fx {
	char ws[700], stage[700];
	cx_err err;
};

#define EXPECT_RC(want, call)                                                                      \
	do {                                                                                       \
		int got_ = (call);                                                                 \
		if (got_ != (want))                                                                \
			fail_msg("%s\n  expected rc %d, got %d (err %d: \"%s\")", #call, (want),   \
				 got_, f->err.code, f->err.msg);                                   \
	} while (0)
#define EXPECT_STR_HAS(hay, needle)                                                                \
	do {                                                                                       \
		if (!strstr((hay), (needle)))                                                      \
			fail_msg("%s should contain \"%s\"\n  actual: \"%s\"", #hay, (needle),     \
				 (hay));                                                           \
	} while (0)

/* ---- shell helpers ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
	return rc;
}

/* First line of a command's output into out (trailing newline removed). */
static int sh_line(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh_line(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	out[0] = '\0';
	if (!fgets(out, (int)cap, p))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return pclose(p) == 0 ? 0 : -1;
}

#define GIT "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main"

static int make_repo(void)
{
	char src[600];
	snprintf(src, sizeof src, "%s/src", G.dir);
	if (sh(GIT " init -q %s", src))
		return -1;
	if (sh("cd %s && mkdir -p lib/a lib/b docs && for i in $(seq 1 16); do echo \"a $i\" > "
	       "lib/a/f$i.c; echo \"b $i\" > lib/b/g$i.c; echo \"d $i\" > docs/p$i.md; done && "
	       "echo hello > README.md && echo x > Makefile",
	       src))
		return -1;
	if (sh("cd %s && " GIT " add -A && " GIT " commit -qm one && " GIT " tag -a v1 -m v1", src))
		return -1;
	if (sh("cd %s && echo two >> README.md && echo new > NEWS && " GIT " add -A && " GIT
	       " commit -qm two && " GIT " checkout -q -b feature && echo f > feature.txt && " GIT
	       " add -A && " GIT " commit -qm feature && " GIT " checkout -q main",
	       src))
		return -1;
	if (sh_line(G.sha_v1, sizeof G.sha_v1, "git -C %s rev-parse v1^{commit}", src) ||
	    sh_line(G.sha_main, sizeof G.sha_main, "git -C %s rev-parse main", src) ||
	    sh_line(G.sha_feature, sizeof G.sha_feature, "git -C %s rev-parse feature", src))
		return -1;
	return sh("mkdir -p %s/root && git clone -q --bare %s %s/root/r.git && " GIT
		  " init -q --bare %s/root/empty.git",
		  G.dir, src, G.dir, G.dir);
}

/* node gitserver.js on a free port; *pid, *in (it exits when in closes), *port. */
static int spawn_server(const char *delay_ms, pid_t *pid, int *in_w, int *port_out)
{
	const char *tests = getenv("TESTS_DIR");
	char path[PATH_MAX], here[PATH_MAX], root[600];
	if (tests && *tests) {
		snprintf(path, sizeof path, "%s/gitserver.js", tests);
	} else {
		snprintf(here, sizeof here, "%s", __FILE__);
		snprintf(path, sizeof path, "%s/../gitserver.js", dirname(here));
	}
	snprintf(root, sizeof root, "%s/root", G.dir);
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		return -1;
	*pid = fork();
	if (*pid < 0)
		return -1;
	if (*pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execlp("node", "node", path, "--root", root, "--token", G.token, "--delay-ms",
		       delay_ms, "--forbid", "forbidden.git", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	*in_w = in[1];
	char line[64] = {0};
	size_t len = 0;
	while (len < sizeof line - 1 && !strchr(line, '\n')) {
		ssize_t r = read(out[0], line + len, sizeof line - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(out[0]);
	int port = 0;
	if (sscanf(line, "PORT %d", &port) != 1 || port <= 0) {
		fprintf(stderr, "gitserver.js said \"%s\"\n", line);
		return -1;
	}
	*port_out = port;
	return 0;
}

static void stop_server(pid_t pid, int in_w)
{
	close(in_w);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static int start_server(void)
{
	int port;
	if (spawn_server("0", &G.server, &G.server_in, &port) < 0)
		return -1;
	snprintf(G.url, sizeof G.url, "http://127.0.0.1:%d/r.git", port);
	snprintf(G.url_missing, sizeof G.url_missing, "http://127.0.0.1:%d/nope.git", port);
	/* a port nothing listens on: the server's, once it is stopped, is racy; use 1 */
	snprintf(G.url_refused, sizeof G.url_refused, "http://127.0.0.1:1/r.git");
	return 0;
}

static int group_setup(void **state)
{
	(void)state;
	if (unit_tmpdir("repo", G.dir, sizeof G.dir) < 0)
		return -1;
	chmod(G.dir, 0755); /* the clone's uid walks through it to its stage dir */
	memcpy(G.token, "tok-", 4);
	cx_random_hex(G.token + 4, 16);
	if (make_repo() < 0 || start_server() < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (G.server > 0)
		stop_server(G.server, G.server_in);
	cx_rm_rf(G.dir);
	return 0;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	unsigned n = ++G.n;
	snprintf(f->ws, sizeof f->ws, "%s/t%u-ws", G.dir, n);
	snprintf(f->stage, sizeof f->stage, "%s/t%u-stage", G.dir, n);
	if (mkdir(f->ws, 0755) < 0 || mkdir(f->stage, 0711) < 0)
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	cx_rm_rf(f->ws);
	cx_rm_rf(f->stage);
	free(f);
	return 0;
}

/* ---- checks ---- */

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

static int clone_ref(struct fx *f, const char *ref, const char *token, repo_progress_fn fn,
		     void *arg)
{
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = G.url;
	o.ref = ref;
	o.token = token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	o.timeout_s = 60;
	o.progress = fn;
	o.arg = arg;
	cx_err_clear(&f->err);
	return repo_clone(&o, &f->err);
}

static const char *walk_token;
static int walk_bad;
static char walk_what[PATH_MAX + 64];

static int walk_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)flag;
	if (ftw->level == 0)
		return 0; /* the workspace itself is the host's */
	if (sb->st_uid != CLONE_UID || sb->st_gid != CLONE_GID) {
		snprintf(walk_what, sizeof walk_what, "%s owned by %u:%u", p, (unsigned)sb->st_uid,
			 (unsigned)sb->st_gid);
		walk_bad = 1;
		return 1;
	}
	if (!S_ISREG(sb->st_mode))
		return 0;
	FILE *fp = fopen(p, "rb");
	if (!fp)
		return 0;
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf, fp);
	fclose(fp);
	if (memmem(buf, n, walk_token, strlen(walk_token))) {
		snprintf(walk_what, sizeof walk_what, "%s holds the token", p);
		walk_bad = 1;
		return 1;
	}
	return 0;
}

/* Every entry is the clone uid's, and no file holds the token. */
static void check_tree(const char *dir)
{
	walk_token = G.token;
	walk_bad = 0;
	nftw(dir, walk_one, 16, FTW_PHYS);
	if (walk_bad)
		fail_msg("%s", walk_what);
}

static void check_head(struct fx *f, const char *want_sha, const char *want_branch)
{
	char got[256];
	if (sh_line(got, sizeof got, "git -c safe.directory='*' -C %s rev-parse HEAD", f->ws))
		fail_msg("git rev-parse HEAD failed in the workspace");
	if (strcmp(got, want_sha))
		fail_msg("HEAD: expected %s, got %s", want_sha, got);
	int sym =
	    sh_line(got, sizeof got,
		    "git -c safe.directory='*' -C %s symbolic-ref -q HEAD 2>/dev/null", f->ws);
	if (want_branch) {
		char ref[128];
		snprintf(ref, sizeof ref, "refs/heads/%s", want_branch);
		if (sym || strcmp(got, ref))
			fail_msg("HEAD: expected on %s, got \"%s\"", ref, got);
	} else if (!sym) {
		fail_msg("HEAD: expected detached, is on \"%s\"", got);
	}
}

static void check_nothing_left(struct fx *f)
{
	assert_int_eq_msg(count_entries(f->ws), 0, "entries in the workspace");
	assert_int_eq_msg(count_entries(f->stage), 0, "entries in the stage dir");
}

static int file_exists(struct fx *f, const char *rel)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/%s", f->ws, rel);
	struct stat sb;
	return lstat(p, &sb) == 0;
}

/* ---- tests ---- */

static void default_head(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(0, clone_ref(f, NULL, G.token, NULL, NULL));
	check_head(f, G.sha_main, "main");
	assert_true(file_exists(f, "lib/a/f16.c"));
	assert_true(file_exists(f, "NEWS"));
	assert_false(file_exists(f, "feature.txt"));
	check_tree(f->ws);
	assert_int_eq_msg(count_entries(f->stage), 0, "entries in the stage dir");
	char cfg[PATH_MAX], url[512];
	snprintf(cfg, sizeof cfg, "%s/.git/config", f->ws);
	if (sh_line(url, sizeof url, "git config -f %s remote.origin.url", cfg))
		fail_msg("no remote.origin.url in .git/config");
	if (strcmp(url, G.url))
		fail_msg("remote url: expected %s, got %s", G.url, url);
}

static void branch(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(0, clone_ref(f, "feature", G.token, NULL, NULL));
	check_head(f, G.sha_feature, "feature");
	assert_true(file_exists(f, "feature.txt"));
	check_tree(f->ws);
	char up[256];
	if (sh_line(up, sizeof up, "git config -f %s/.git/config branch.feature.merge", f->ws) ||
	    strcmp(up, "refs/heads/feature"))
		fail_msg("branch.feature.merge: \"%s\"", up);
}

static void tag(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(0, clone_ref(f, "v1", G.token, NULL, NULL));
	check_head(f, G.sha_v1, NULL);
	assert_false(file_exists(f, "NEWS"));
	check_tree(f->ws);
}

static void sha(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(0, clone_ref(f, G.sha_v1, G.token, NULL, NULL));
	check_head(f, G.sha_v1, NULL);
	check_tree(f->ws);
}

static void empty_repo(void **state)
{
	struct fx *f = *state;
	char url[300];
	snprintf(url, sizeof url, "%.*s/empty.git", (int)(strrchr(G.url, '/') - G.url), G.url);
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = url;
	o.token = G.token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	EXPECT_RC(0, repo_clone(&o, &f->err));
	assert_int_eq_msg(count_entries(f->ws), 1, "entries in the workspace (.git)");
	assert_true(file_exists(f, ".git/HEAD"));
	assert_int_eq_msg(count_entries(f->stage), 0, "entries in the stage dir");
	o.ref = "main";
	cx_rm_rf(f->ws);
	mkdir(f->ws, 0755);
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	EXPECT_STR_HAS(f->err.msg, "ref main not found");
	check_nothing_left(f);
}

static void wrong_token(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(-1, clone_ref(f, NULL, "not-the-token", NULL, NULL));
	EXPECT_STR_HAS(f->err.msg, "authentication failed");
	assert_int_eq_msg(f->err.code, EACCES, "err.code");
	check_nothing_left(f);
}

static void no_token(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(-1, clone_ref(f, NULL, NULL, NULL, NULL));
	EXPECT_STR_HAS(f->err.msg, "authentication required");
	check_nothing_left(f);
}

static void missing_ref(void **state)
{
	struct fx *f = *state;
	EXPECT_RC(-1, clone_ref(f, "nosuchbranch", G.token, NULL, NULL));
	EXPECT_STR_HAS(f->err.msg, "ref nosuchbranch not found");
	assert_int_eq_msg(f->err.code, ENOENT, "err.code");
	check_nothing_left(f);
	EXPECT_RC(-1, clone_ref(f, "deadbeef", G.token, NULL, NULL));
	EXPECT_STR_HAS(f->err.msg, "ref deadbeef not found");
	check_nothing_left(f);
}

static void missing_repo_and_refused(void **state)
{
	struct fx *f = *state;
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = G.url_missing;
	o.token = G.token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	EXPECT_STR_HAS(f->err.msg, "repository not found");
	check_nothing_left(f);
	char forbidden[300];
	snprintf(forbidden, sizeof forbidden, "%.*s/forbidden.git",
		 (int)(strrchr(G.url, '/') - G.url), G.url);
	o.url = forbidden;
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	EXPECT_STR_HAS(f->err.msg, "access denied (HTTP 403)");
	assert_int_eq_msg(f->err.code, EACCES, "err.code");
	check_nothing_left(f);
	o.url = G.url_refused;
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	EXPECT_STR_HAS(f->err.msg, "cannot reach the server");
	assert_int_eq_msg(f->err.code, EHOSTUNREACH, "err.code");
	check_nothing_left(f);
	if (strstr(f->err.msg, G.dir))
		fail_msg("a host path in \"%s\"", f->err.msg);
}

static void private_host(void **state)
{
	struct fx *f = *state;
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.token = G.token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	static const char *const urls[] = {"",
					   "http://localhost:1/r.git",
					   "http://169.254.169.254/r.git",
					   "http://[::1]:1/r.git",
					   "http://10.1.2.3/r.git",
					   "http://[::ffff:127.0.0.1]/r"};
	char first[256];
	snprintf(first, sizeof first, "%s", G.url);
	for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
		o.url = i ? urls[i] : first;
		EXPECT_RC(-1, repo_clone(&o, &f->err));
		EXPECT_STR_HAS(f->err.msg, "is a private, loopback or link-local address");
		assert_int_eq_msg(f->err.code, EPERM, "err.code");
		check_nothing_left(f);
	}
}

static void bad_urls(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
	    "ftp://example.com/r.git",
	    "file:///etc",
	    "ssh://git@example.com/r.git",
	    "git@example.com:r.git",
	    "https://user:pass@example.com/r.git",
	    "https://:pass@example.com/r.git",
	    "https://example.com/r git",
	    "https:///r.git",
	    "https://example.com/r.git#frag",
	    "",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (repo_url_ok(bad[i], &f->err) != -1 || f->err.code != EINVAL)
			fail_msg("repo_url_ok(\"%s\") accepted it", bad[i]);
	assert_int_equal(repo_url_ok("https://user:pass@example.com/r.git", &f->err), -1);
	EXPECT_STR_HAS(f->err.msg, "credentials");
	static const char *const good[] = {"https://github.com/o/r.git", "http://127.0.0.1:8080/r",
					   "https://ci-bot@git.example.com/o/r"};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++)
		if (repo_url_ok(good[i], &f->err) != 0)
			fail_msg("repo_url_ok(\"%s\") refused it: %s", good[i], f->err.msg);
	char *long_url = malloc(REPO_URL_MAX + 20);
	memcpy(long_url, "https://e.com/", 14);
	memset(long_url + 14, 'a', REPO_URL_MAX);
	long_url[REPO_URL_MAX + 14] = '\0';
	assert_int_equal(repo_url_ok(long_url, &f->err), -1);
	free(long_url);
	static const char *const bad_refs[] = {"-x",	 "a..b", "a b", "HEAD@{1}",
					       "x.lock", "a~1",	 ""};
	for (size_t i = 0; i < sizeof bad_refs / sizeof *bad_refs; i++)
		if (repo_ref_ok(bad_refs[i], &f->err) != -1)
			fail_msg("repo_ref_ok(\"%s\") accepted it", bad_refs[i]);
	/* and repo_clone refuses them before starting anything */
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = "ftp://example.com/r.git";
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	check_nothing_left(f);
}

static void planted_symlink(void **state)
{
	struct fx *f = *state;
	char target[PATH_MAX], link[PATH_MAX], got[PATH_MAX];
	snprintf(target, sizeof target, "%s/outside-%u", G.dir, G.n);
	snprintf(link, sizeof link, "%s/README.md", f->ws);
	FILE *fp = fopen(target, "w");
	assert_non_null(fp);
	fputs("precious\n", fp);
	fclose(fp);
	assert_int_equal(symlink(target, link), 0);
	EXPECT_RC(-1, clone_ref(f, NULL, G.token, NULL, NULL));
	EXPECT_STR_HAS(f->err.msg, "/workspace/README.md already exists");
	assert_int_eq_msg(f->err.code, EEXIST, "err.code");
	if (strstr(f->err.msg, G.dir))
		fail_msg("a host path in \"%s\"", f->err.msg);
	ssize_t n = readlink(link, got, sizeof got - 1);
	assert_true(n > 0);
	got[n] = '\0';
	assert_string_equal(got, target);
	char text[64] = {0};
	fp = fopen(target, "r");
	assert_non_null(fp);
	assert_non_null(fgets(text, sizeof text, fp));
	fclose(fp);
	assert_string_equal(text, "precious\n");
	assert_int_eq_msg(count_entries(f->ws), 1, "entries in the workspace (the symlink)");
	assert_int_eq_msg(count_entries(f->stage), 0, "entries in the stage dir");
	unlink(target);
}

static void timeout(void **state)
{
	struct fx *f = *state;
	pid_t pid;
	int in_w, port;
	assert_int_equal(spawn_server("5000", &pid, &in_w, &port), 0);
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/r.git", port);
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = url;
	o.token = G.token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	o.timeout_s = 1;
	uint64_t t0 = cx_mono_ms();
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	uint64_t took = cx_mono_ms() - t0;
	stop_server(pid, in_w);
	EXPECT_STR_HAS(f->err.msg, "timed out after 1 s");
	assert_int_eq_msg(f->err.code, ETIMEDOUT, "err.code");
	if (took > 3000)
		fail_msg("the timeout took %llu ms", (unsigned long long)took);
	check_nothing_left(f);
}

/* Some process other than the git server (whose argv holds the token) has
 * the token in its argv or environment: its pid, else 0. */
static pid_t token_in_proc(void)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	struct dirent *de;
	pid_t found = 0;
	static char buf[1 << 16];
	while (!found && (de = readdir(d))) {
		pid_t pid = (pid_t)atoi(de->d_name);
		if (pid <= 0 || pid == G.server)
			continue;
		static const char *const what[] = {"cmdline", "environ"};
		for (int i = 0; i < 2 && !found; i++) {
			char p[64];
			snprintf(p, sizeof p, "/proc/%d/%s", pid, what[i]);
			int fd = open(p, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, buf, sizeof buf);
			close(fd);
			if (n > 0 && memmem(buf, (size_t)n, G.token, strlen(G.token)))
				found = pid;
		}
	}
	closedir(d);
	return found;
}

static void too_big(void **state)
{
	struct fx *f = *state;
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = G.url;
	o.token = G.token;
	o.uid = CLONE_UID;
	o.gid = CLONE_GID;
	o.stage_dir = f->stage;
	o.workspace_dir = f->ws;
	o.flags = REPO_ALLOW_PRIVATE;
	o.max_bytes = 200;
	EXPECT_RC(-1, repo_clone(&o, &f->err));
	EXPECT_STR_HAS(f->err.msg, "larger than 200 bytes");
	assert_int_eq_msg(f->err.code, EFBIG, "err.code");
	check_nothing_left(f);
}

/* The running helper (our child named cortex-clone): its root mount and its
 * stage dir's mount, "ro"/"rw" from its mountinfo; 0 when found. */
static int helper_mounts(char root_opts[64], char stage_opts[64])
{
	DIR *d = opendir("/proc");
	if (!d)
		return -1;
	struct dirent *de;
	pid_t helper = 0;
	while (!helper && (de = readdir(d))) {
		pid_t pid = (pid_t)atoi(de->d_name);
		char p[64], line[512];
		snprintf(p, sizeof p, "/proc/%d/stat", pid);
		FILE *fp = pid > 0 ? fopen(p, "r") : NULL;
		if (!fp)
			continue;
		int ppid = 0;
		char comm[64] = {0};
		if (fgets(line, sizeof line, fp) &&
		    sscanf(line, "%*d (%63[^)]) %*c %d", comm, &ppid) == 2 && ppid == getpid() &&
		    !strcmp(comm, "cortex-clone"))
			helper = pid;
		fclose(fp);
	}
	closedir(d);
	if (!helper)
		return -1;
	char p[64], line[4096];
	snprintf(p, sizeof p, "/proc/%d/mountinfo", helper);
	FILE *fp = fopen(p, "r");
	if (!fp)
		return -1;
	root_opts[0] = stage_opts[0] = '\0';
	while (fgets(line, sizeof line, fp)) {
		char mnt[1024], opts[256];
		if (sscanf(line, "%*d %*d %*s %*s %1023s %255s", mnt, opts) != 2)
			continue;
		if (!strcmp(mnt, "/"))
			snprintf(root_opts, 64, "%.2s", opts);
		else if (!strcmp(mnt, "/tmp/clone")) /* where repo.c binds the stage dir */
			snprintf(stage_opts, 64, "%.2s", opts);
	}
	fclose(fp);
	return 0;
}

struct seen {
	char root_opts[64], stage_opts[64];
	int mounts_found;
	pid_t token_seen_in;
	unsigned calls, checkout_calls, regressions;
	uint32_t last_received, total, final_received;
	uint32_t checkout_done, checkout_total;
};

static void on_progress(void *arg, const struct repo_progress *p)
{
	struct seen *s = arg;
	if (!s->calls && !s->checkout_calls) { /* the helper is running now */
		s->token_seen_in = token_in_proc();
		s->mounts_found = helper_mounts(s->root_opts, s->stage_opts) == 0;
	}
	if (!strcmp(p->phase, "cloning")) {
		s->calls++;
		if (p->received_objects < s->last_received)
			s->regressions++;
		s->last_received = p->received_objects;
		s->total = p->total_objects;
		s->final_received = p->received_objects;
	} else {
		assert_string_equal(p->phase, "checkout");
		s->checkout_calls++;
		s->checkout_done = p->checkout_done;
		s->checkout_total = p->checkout_total;
	}
}

static void progress(void **state)
{
	struct fx *f = *state;
	struct seen s = {0};
	EXPECT_RC(0, clone_ref(f, "main", G.token, on_progress, &s));
	assert_true(s.calls >= 1);
	assert_int_eq_msg(s.regressions, 0, "received_objects going down");
	assert_true(s.total > 50);
	assert_int_eq_msg(s.final_received, s.total, "final received_objects");
	assert_true(s.checkout_calls >= 1);
	assert_true(s.checkout_total >= 50);
	assert_int_eq_msg(s.checkout_done, s.checkout_total, "final checkout_done");
}

/* While the helper runs (seen from the first progress report; a clone that
 * ended before its first report was read is tried again): no process has the
 * token in its argv or environment, and the helper's mounts are read-only
 * but its stage dir. */
static void helper_view(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 5; i++) {
		struct seen s = {0};
		EXPECT_RC(0, clone_ref(f, NULL, G.token, on_progress, &s));
		cx_rm_rf(f->ws);
		mkdir(f->ws, 0755);
		if (!s.mounts_found)
			continue;
		assert_int_eq_msg(s.token_seen_in, 0, "pid with the token in its argv or environ");
		assert_string_equal(s.root_opts, "ro");
		assert_string_equal(s.stage_opts, "rw");
		return;
	}
	fail_msg("the helper was never seen running in 5 clones");
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_repo_clone: needs root (the clone runs as uid %d); skipped\n",
			CLONE_UID);
		return 0;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(default_head, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(branch, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(tag, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(sha, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(empty_repo, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(wrong_token, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(no_token, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(missing_ref, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(missing_repo_and_refused, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(bad_urls, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(private_host, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(planted_symlink, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(progress, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(helper_view, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(timeout, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(too_big, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
