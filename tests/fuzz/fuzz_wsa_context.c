/* Fuzz target: ws-agent's context file {"argv","env","cwd"} (ws-agent/context.c). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "wsa.h"

FUZZ_NO_INIT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wsa_context ctx;
	cx_err err = {0};
	if (wsa_context_parse((const char *)data, size, &ctx, &err) < 0)
		return 0;
	/* what agent.c execs: an absolute argv[0], K=V env entries, an absolute cwd */
	if (!ctx.argv || !ctx.argv[0] || ctx.argv[0][0] != '/' || !ctx.cwd || ctx.cwd[0] != '/')
		FUZZ_FAIL();
	for (char **a = ctx.argv; *a; a++)
		(void)strlen(*a);
	for (char **e = ctx.envp; e && *e; e++)
		if (!strchr(*e, '='))
			FUZZ_FAIL();
	wsa_context_free(&ctx);
	return 0;
}
