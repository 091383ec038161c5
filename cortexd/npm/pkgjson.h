/* pkgjson.h — what the npm cache reads from an installed package's package.json.
 *
 * Pure: bytes in, a struct out; no file I/O (the caller reads the file,
 * capped at PKGJSON_MAX) and no logging.  One entry point, pkgjson_parse(),
 * so that it can be a fuzz target.
 *
 * Refused (-1, err set): more than PKGJSON_MAX bytes, malformed JSON, JSON
 * that is not an object, a "name" or "version" string longer than an npm spec
 * allows (npmspec.h).  Not refused: a missing or non-string "name" or
 * "version" (left ""; the caller compares the name with what it installed),
 * a missing "bin", and bins npm would not link, which are left out:
 *   - bin names: 1-127 chars of A-Z a-z 0-9 - _ . ~ + @, not starting with "."
 *   - bin paths: 1-1023 bytes, relative, no ".." component (stay inside the package)
 * "bin" may be a string (one bin named like the unscoped package name) or an
 * object {"bin name":"path"}; anything else means no bins. */
#ifndef CORTEX_PKGJSON_H
#define CORTEX_PKGJSON_H

#include <jansson.h>
#include <stddef.h>

#include "cx.h"
#include "npmspec.h"

#define PKGJSON_MAX	(1024 * 1024) /* bytes of a package.json */
#define PKGJSON_BIN_MAX 128	      /* a bin name, with its NUL */

typedef struct pkgjson {
	char name[NPM_NAME_MAX + 1];	   /* "" when absent or not a string */
	char version[NPM_VERSION_MAX + 1]; /* likewise */
	json_t *bins;			   /* {"bin name":"rel/path"}, owned; {} when none */
	json_t *ignored;		   /* [names of "bin" object entries left out], owned */
	char main_bin[PKGJSON_BIN_MAX];	   /* pkgjson_main_bin() of bins and name */
} pkgjson;

/* 0 and *out filled (free it with pkgjson_free), or -1 with err set and
 * *out empty (pkgjson_free is then a no-op). */
int pkgjson_parse(const char *data, size_t len, pkgjson *out, cx_err *err);
void pkgjson_free(pkgjson *pj);

/* The main bin of a {"bin name":"path"} object: the only one, else the one
 * named like the unscoped package name, else the first; "" when none. */
void pkgjson_main_bin(json_t *bins, const char *name, char out[PKGJSON_BIN_MAX]);

#endif
