/* settings.c — STUB, being replaced (helper A). */
#include "settings.h"
void settings_route(const char *user, const struct api_req *req, const char *rest, struct api_resp *resp)
{
	(void)user; (void)req; (void)rest;
	api_error(resp, 501, "not_implemented", "settings are not available yet");
}
