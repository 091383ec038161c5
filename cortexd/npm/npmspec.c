/* npmspec.c — see npmspec.h. */
#include "npmspec.h"

#include <stdio.h>
#include <string.h>

static int name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

/* One part of a scoped or plain name: non-empty, npm's characters, no leading . or _. */
static int part_ok(const char *p, size_t n)
{
	if (!n || p[0] == '.' || p[0] == '_')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!name_char(p[i]))
			return 0;
	return 1;
}

static int num_ok(const char **p)
{
	const char *s = *p;
	if (*s < '0' || *s > '9')
		return 0;
	if (*s == '0' && s[1] >= '0' && s[1] <= '9')
		return 0; /* no leading zeros */
	while (*s >= '0' && *s <= '9')
		s++;
	*p = s;
	return 1;
}

static int ident_list_ok(const char *s)
{
	if (!*s)
		return 0;
	for (const char *c = s; *c; c++) {
		int ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			 *c == '-' || (*c == '.' && c != s && c[1] && c[1] != '.');
		if (!ok)
			return 0;
	}
	return 1;
}

static int semver_ok(const char *v)
{
	const char *p = v;
	if (!num_ok(&p) || *p++ != '.' || !num_ok(&p) || *p++ != '.' || !num_ok(&p))
		return 0;
	if (!*p)
		return 1;
	char rest[NPM_VERSION_MAX + 1];
	snprintf(rest, sizeof rest, "%s", p + 1);
	char *plus = strchr(rest, '+');
	if (*p == '-') {
		if (plus)
			*plus = '\0';
		if (!ident_list_ok(rest))
			return 0;
		return !plus || ident_list_ok(plus + 1);
	}
	return *p == '+' && ident_list_ok(rest);
}

int npm_spec_parse(const char *spec, char name[NPM_NAME_MAX + 1], char version[NPM_VERSION_MAX + 1],
		   char *why, size_t why_cap)
{
#define FAIL(...) do { snprintf(why, why_cap, __VA_ARGS__); return -1; } while (0)
	if (!spec || !*spec)
		FAIL("a package must be \"name@version\"");
	/* The version separator is the last '@' that is not the scope's leading one. */
	const char *at = strrchr(spec, '@');
	if (!at || at == spec)
		FAIL("\"%.80s\" needs an exact version: \"name@1.2.3\"", spec);
	size_t nlen = (size_t)(at - spec);
	if (nlen > NPM_NAME_MAX)
		FAIL("package name longer than %d characters", NPM_NAME_MAX);
	const char *ver = at + 1;
	if (strlen(ver) > NPM_VERSION_MAX || !semver_ok(ver))
		FAIL("\"%.80s\" is not an exact version (want e.g. 1.2.3; ranges and tags are not allowed)", ver);
	if (spec[0] == '@') {
		const char *slash = memchr(spec, '/', nlen);
		if (!slash || !part_ok(spec + 1, (size_t)(slash - spec - 1)) ||
		    !part_ok(slash + 1, (size_t)(at - slash - 1)))
			FAIL("\"%.*s\" is not a valid scoped npm name (@scope/name, lowercase)", (int)(nlen > 100 ? 100 : nlen), spec);
	} else if (!part_ok(spec, nlen)) {
		FAIL("\"%.*s\" is not a valid npm name (lowercase a-z 0-9 - . _ ~)", (int)(nlen > 100 ? 100 : nlen), spec);
	}
	memcpy(name, spec, nlen);
	name[nlen] = '\0';
	snprintf(version, NPM_VERSION_MAX + 1, "%s", ver);
	return 0;
#undef FAIL
}
