/* network.h — the egress policy routes (network.c). */
#ifndef CORTEX_NETWORK_H
#define CORTEX_NETWORK_H

#include "edge.h"

/* /v1/settings/network */
void network_settings_route(struct cortexd *d, const char *user, const struct api_req *req,
			    struct api_resp *resp);
/* /v1/sessions/{id}/network and /v1/sessions/{id}/egress (sub names which) */
void network_session_route(struct cortexd *d, struct session *s, const struct api_req *req,
			   const char *sub, struct api_resp *resp);
/* A create body's "network" (v may be NULL): 0 with *out the normalised
 * policy (or NULL), or -1 with a 400 in resp. */
int network_session_body(json_t *v, json_t **out, struct api_resp *resp);

#endif
