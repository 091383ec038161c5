/* settings_check.h — validation of the /v1/settings request bodies (record
 * shapes and limits in settings.h).  Pure: no store, no keys, no daemon
 * state; each check returns 0, or -1 with a 4xx error in resp.  settings.c
 * turns a checked body into the record it stores. */
#ifndef CORTEX_SETTINGS_CHECK_H
#define CORTEX_SETTINGS_CHECK_H

#include "settings.h"

/* The file kinds of a plugin, each a member {"f.md":"text"}; NULL-terminated. */
extern const char *const settings_plugin_dirs[];

/* A setting's name in a route: 400 naming the kind when it is not one. */
int settings_check_name(const char *kind, const char *name, struct api_resp *resp);

/* A stdio or http/sse MCP server; *type is "stdio", "http" or "sse" (static),
 * "stdio" when the body has no "type" but a "command" or "package". */
int settings_check_mcp(json_t *b, const char **type, struct api_resp *resp);

/* A secret; *value (in b) and *len are the plaintext to seal. */
int settings_check_secret(json_t *b, const char **value, size_t *len, struct api_resp *resp);

int settings_check_plugin(json_t *b, struct api_resp *resp);

/* An ai provider; *key (in b, never empty) and *len are the API key to seal. */
int settings_check_provider(json_t *b, const char **key, size_t *len, struct api_resp *resp);

/* The user record: claude_md, model, env. */
int settings_check_user(json_t *b, struct api_resp *resp);

#endif
