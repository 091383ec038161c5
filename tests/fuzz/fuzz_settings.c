/* Fuzz target: the /v1/settings request bodies as the routes read them
 * (api_body_object, then cortexd/edge/settings_check.c: mcp, secret, plugin,
 * provider, user) and a setting's name.  Byte 0 picks the check. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "settings_check.h"

FUZZ_NO_INIT

static void check_resp(struct api_resp *r, int rc)
{
	/* a refusal is a 4xx with a JSON body; an acceptance leaves resp alone */
	if (rc < 0 ? (r->status < 400 || r->status > 499 || !r->body) : r->body != NULL)
		FUZZ_FAIL();
	free(r->body);
	*r = (struct api_resp){0};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned which = data[0] % 6;
	struct api_req req = {.method = "PUT", .path = "/v1/settings", .body = (const char *)data + 1,
			      .body_len = size - 1};
	struct api_resp resp = {0};
	if (which == 5) { /* a name, as the route's last path segment gives it */
		char name[256];
		size_t n = size - 1 < sizeof name - 1 ? size - 1 : sizeof name - 1;
		memcpy(name, data + 1, n);
		name[n] = '\0';
		check_resp(&resp, settings_check_name("mcp", name, &resp));
		return 0;
	}
	json_t *b = api_body_object(&req, &resp, 0);
	if (!b) {
		check_resp(&resp, -1);
		return 0;
	}
	const char *type = NULL, *v = NULL;
	size_t len = 0;
	int rc;
	switch (which) {
	case 0:
		rc = settings_check_mcp(b, &type, &resp);
		if (rc == 0 && strcmp(type, "stdio") && strcmp(type, "http") && strcmp(type, "sse"))
			FUZZ_FAIL();
		break;
	case 1:
		rc = settings_check_secret(b, &v, &len, &resp);
		if (rc == 0 && (!v || strlen(v) < len))
			FUZZ_FAIL();
		break;
	case 2:
		rc = settings_check_plugin(b, &resp);
		break;
	case 3:
		rc = settings_check_provider(b, &v, &len, &resp);
		if (rc == 0 && (!v || !len))
			FUZZ_FAIL();
		break;
	default:
		rc = settings_check_user(b, &resp);
		break;
	}
	check_resp(&resp, rc);
	json_decref(b);
	return 0;
}
