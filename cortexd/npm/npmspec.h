/* npmspec.h — "name@version" of an npm package that provides an MCP server.
 *
 * The name follows npm's rules (optional @scope/, lowercase, 1-214 chars of
 * a-z 0-9 - . _ ~, not starting with . or _); the version must be an exact
 * semver (1.2.3, 1.2.3-beta.1, 1.2.3+build): a range would make the
 * content-addressed cache key ambiguous. */
#ifndef CORTEX_NPMSPEC_H
#define CORTEX_NPMSPEC_H

#include <stddef.h>

#define NPM_NAME_MAX 214
#define NPM_VERSION_MAX 64

/* 0 and name/version filled (NUL-terminated), or -1 with a reason in why. */
int npm_spec_parse(const char *spec, char name[NPM_NAME_MAX + 1], char version[NPM_VERSION_MAX + 1],
		   char *why, size_t why_cap);

#endif
