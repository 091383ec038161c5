/* Fuzz target: an exec request (cortexd/core/exec_spec.c), as the WebSocket's
 * exec frame (byte 0 even) or a POST .../exec body (odd). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "exec.h"
#include "fuzz.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int http = data[0] & 1;
	json_t *o = json_loadb((const char *)data + 1, size - 1, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return 0;
	}
	struct exec_spec sp;
	char msg[300];
	int rc = exec_spec_parse(o, http, NULL, &sp, msg, sizeof msg);
	if (rc == 0) {
		/* What a launch relies on: argv NULL-terminated and non-empty, a confined cwd. */
		if (!sp.argv || !sp.argv[0] || !sp.argv[0][0] || !sp.env ||
		    (strcmp(sp.cwd, "/workspace") && strncmp(sp.cwd, "/workspace/", 11) && strcmp(sp.cwd, "/home/agent") &&
		     strncmp(sp.cwd, "/home/agent/", 12)) ||
		    strstr(sp.cwd, "/../") || (sp.pty && (!sp.cols || !sp.rows)))
			FUZZ_FAIL();
	} else if (!memchr(msg, 0, sizeof msg)) {
		FUZZ_FAIL();
	}
	exec_spec_clear(&sp);
	json_decref(o);
	return 0;
}
