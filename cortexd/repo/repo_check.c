/* repo_check.c — what a repo URL and ref may be (repo.h); pure, shared with
 * the cortex-clone helper, which checks them again. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <stdarg.h>
#include <stdio.h>

#include "repo.h"
#include "repo_proto.h"

int repo_err_user(cx_err *err, int code, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = code;
	return -1;
}

static int bad_char(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '\\')
			return 1;
	return 0;
}

int repo_url_ok(const char *url, cx_err *err)
{
	if (!url || !*url)
		return repo_err_user(err, EINVAL, "repo url is empty");
	size_t len = strnlen(url, REPO_URL_MAX + 1);
	if (len > REPO_URL_MAX)
		return repo_err_user(err, EINVAL, "repo url longer than %d bytes", REPO_URL_MAX);
	if (bad_char(url))
		return repo_err_user(
		    err, EINVAL, "repo url holds whitespace, a backslash or a control character");
	const char *rest;
	if (!strncasecmp(url, "https://", 8))
		rest = url + 8;
	else if (!strncasecmp(url, "http://", 7))
		rest = url + 7;
	else
		return repo_err_user(err, EINVAL, "repo url must start with https:// or http://");
	size_t auth = strcspn(rest, "/?#");
	const char *at = memchr(rest, '@', auth);
	if (at) {
		if (memchr(rest, ':', (size_t)(at - rest)) ||
		    memchr(at + 1, '@', auth - (size_t)(at + 1 - rest)))
			return repo_err_user(err, EINVAL,
					     "repo url must not hold credentials: give the token "
					     "as the repo secret");
		auth -= (size_t)(at + 1 - rest);
		rest = at + 1;
	}
	if (!auth || rest[0] == ':')
		return repo_err_user(err, EINVAL, "repo url has no host");
	if (strchr(url, '#'))
		return repo_err_user(err, EINVAL, "repo url must not have a fragment (#)");
	return 0;
}

int repo_ref_ok(const char *ref, cx_err *err)
{
	if (!ref || !*ref)
		return repo_err_user(err, EINVAL, "repo ref is empty");
	size_t len = strnlen(ref, REPO_REF_MAX + 1);
	if (len > REPO_REF_MAX)
		return repo_err_user(err, EINVAL, "repo ref longer than %d bytes", REPO_REF_MAX);
	/* git check-ref-format's rules, plus no leading '-' (never an option). */
	if (bad_char(ref) || strpbrk(ref, "~^:?*[") || strstr(ref, "..") || strstr(ref, "@{") ||
	    strstr(ref, "//") || strstr(ref, "/.") || ref[0] == '-' || ref[0] == '/' ||
	    ref[0] == '.' || ref[len - 1] == '/' || ref[len - 1] == '.' || !strcmp(ref, "@") ||
	    (len >= 5 && !strcmp(ref + len - 5, ".lock")))
		return repo_err_user(
		    err, EINVAL, "repo ref \"%s\" is not a valid branch, tag or commit name", ref);
	return 0;
}
