/* Fuzz target: an npm "name@version" spec (cortexd/npm/npmspec.c).  What it
 * accepts must come back the same when spelled again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "npmspec.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024)
		return 0;
	char spec[1025];
	memcpy(spec, data, size);
	spec[size] = '\0';
	char name[NPM_NAME_MAX + 1], version[NPM_VERSION_MAX + 1], why[256];
	if (npm_spec_parse(spec, name, version, why, sizeof why) < 0)
		return 0;
	char again[NPM_NAME_MAX + NPM_VERSION_MAX + 2];
	snprintf(again, sizeof again, "%s@%s", name, version);
	char n2[NPM_NAME_MAX + 1], v2[NPM_VERSION_MAX + 1];
	if (npm_spec_parse(again, n2, v2, why, sizeof why) < 0 || strcmp(name, n2) || strcmp(version, v2))
		FUZZ_FAIL();
	return 0;
}
