/* Fuzz target: an installed package's package.json (cortexd/npm/pkgjson.c). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pkgjson.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pkgjson pj;
	cx_err err = {0};
	if (pkgjson_parse((const char *)data, size, &pj, &err) < 0) {
		pkgjson_free(&pj);
		return 0;
	}
	if (!json_is_object(pj.bins) || !json_is_array(pj.ignored) || !memchr(pj.main_bin, 0, sizeof pj.main_bin))
		FUZZ_FAIL();
	if (pj.main_bin[0] && !json_object_get(pj.bins, pj.main_bin))
		FUZZ_FAIL(); /* the main bin is one of the bins */
	pkgjson_free(&pj);
	return 0;
}
