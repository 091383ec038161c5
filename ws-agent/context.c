/* context.c — the per-message context file (/tmp/vf-pending-query.json).
 *
 * It carries the agent's argv, environment and cwd for one turn.  It is read
 * once and unlinked as soon as it is opened, so a stale file can never start a
 * second turn and secrets in its env never linger on disk.  Waiting for it to
 * appear (inotify + deadline) lives in server.c, on the event loop.
 */
#include "wsa.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

void wsa_context_free(struct wsa_context *ctx)
{
	if (!ctx)
		return;
	free_strv(ctx->argv);
	free_strv(ctx->envp);
	free(ctx->cwd);
	ctx->argv = ctx->envp = NULL;
	ctx->cwd = NULL;
}

/* A JSON string usable as a C string: execve cannot carry embedded NULs. */
static const char *c_string(json_t *v)
{
	if (!json_is_string(v))
		return NULL;
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return NULL;
	return s;
}

static int parse_argv(json_t *jargv, char ***out, cx_err *err)
{
	if (!json_is_array(jargv) || json_array_size(jargv) == 0)
		return cx_err_set(err, EINVAL, "\"argv\" must be a non-empty array of strings");
	size_t n = json_array_size(jargv);
	char **argv = calloc(n + 1, sizeof *argv);
	if (!argv)
		return cx_err_set(err, ENOMEM, "argv");
	for (size_t i = 0; i < n; i++) {
		const char *s = c_string(json_array_get(jargv, i));
		if (!s) {
			free_strv(argv);
			return cx_err_set(err, EINVAL, "\"argv\"[%zu] must be a string without NUL", i);
		}
		if (i == 0 && s[0] != '/') {
			free_strv(argv);
			/* No PATH search: the environment is the agent's, not ours. */
			return cx_err_set(err, EINVAL, "\"argv\"[0] must be an absolute path, got \"%.200s\"", s);
		}
		if (!(argv[i] = strdup(s))) {
			free_strv(argv);
			return cx_err_set(err, ENOMEM, "argv");
		}
	}
	*out = argv;
	return 0;
}

static int parse_env(json_t *jenv, char ***out, cx_err *err)
{
	if (jenv && !json_is_object(jenv))
		return cx_err_set(err, EINVAL, "\"env\" must be an object of strings");
	size_t n = jenv ? json_object_size(jenv) : 0;
	char **envp = calloc(n + 1, sizeof *envp);
	if (!envp)
		return cx_err_set(err, ENOMEM, "env");
	size_t i = 0;
	const char *key;
	json_t *val;
	if (jenv) {
		json_object_foreach(jenv, key, val)
		{
			const char *s = c_string(val);
			if (!key[0] || strchr(key, '=')) {
				free_strv(envp);
				return cx_err_set(err, EINVAL, "\"env\" key \"%.100s\" is not a variable name", key);
			}
			if (!s) {
				free_strv(envp);
				return cx_err_set(err, EINVAL, "\"env\".%.100s must be a string without NUL", key);
			}
			if (asprintf(&envp[i], "%s=%s", key, s) < 0) {
				envp[i] = NULL;
				free_strv(envp);
				return cx_err_set(err, ENOMEM, "env");
			}
			i++;
		}
	}
	*out = envp;
	return 0;
}

int wsa_context_parse(const char *buf, size_t len, struct wsa_context *out, cx_err *err)
{
	if (len > CX_CAP_CONTEXT_FILE)
		return cx_err_set(err, EFBIG, "context is %zu bytes, over the %u-byte cap", len,
				  CX_CAP_CONTEXT_FILE);
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return cx_err_set(err, EINVAL, "context is not JSON: %s (line %d)", jerr.text, jerr.line);

	struct wsa_context c = {0};
	int rc = -1;
	if (!json_is_object(root)) {
		cx_err_set(err, EINVAL, "context must be a JSON object");
		goto out;
	}
	if (parse_argv(json_object_get(root, "argv"), &c.argv, err) < 0)
		goto out;
	if (parse_env(json_object_get(root, "env"), &c.envp, err) < 0)
		goto out;
	json_t *jcwd = json_object_get(root, "cwd");
	const char *cwd = jcwd ? c_string(jcwd) : "/";
	if (!cwd || cwd[0] != '/') {
		cx_err_set(err, EINVAL, "\"cwd\" must be an absolute path");
		goto out;
	}
	if (!(c.cwd = strdup(cwd))) {
		cx_err_set(err, ENOMEM, "cwd");
		goto out;
	}
	*out = c;
	c = (struct wsa_context){0};
	rc = 0;
out:
	wsa_context_free(&c);
	json_decref(root);
	return rc;
}

int wsa_context_take(const char *path, struct wsa_context *out, cx_err *err)
{
	/* O_NONBLOCK: a FIFO planted at the path must not hang the loop. */
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT)
			return CX_NOTFOUND;
		return cx_err_set(err, errno, "open %s", path);
	}
	/* Delete at once: read exactly once, whatever happens next. */
	if (unlink(path) < 0 && errno != ENOENT)
		return cx_err_set(err, errno, "unlink %s", path);

	struct stat st;
	if (fstat(fd, &st) < 0)
		return cx_err_set(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return cx_err_set(err, EINVAL, "%s is not a regular file", path);
	if ((uint64_t)st.st_size > CX_CAP_CONTEXT_FILE)
		return cx_err_set(err, EFBIG, "%s is %lld bytes, over the %u-byte cap", path,
				  (long long)st.st_size, CX_CAP_CONTEXT_FILE);

	/* Read up to cap + 1 so growth after fstat is still caught. */
	cleanup_free char *buf = malloc(CX_CAP_CONTEXT_FILE + 1);
	if (!buf)
		return cx_err_set(err, ENOMEM, "context buffer");
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, CX_CAP_CONTEXT_FILE + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return cx_err_set(err, errno, "read %s", path);
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CX_CAP_CONTEXT_FILE)
			return cx_err_set(err, EFBIG, "%s is over the %u-byte cap", path,
					  CX_CAP_CONTEXT_FILE);
	}
	if (wsa_context_parse(buf, len, out, err) < 0)
		return cx_err_wrap(err, "%s", path);
	return 0;
}
