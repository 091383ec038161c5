/* settings.h — per-user settings: the /v1/settings/... routes and their records.
 *
 * Store layout (one range read of "settings/<user>/" returns all of a user's
 * settings; see cconfig.c, which assembles them):
 *   settings/<user>/mcp/<name>          {"type":"stdio","command","args":[..],"env":{..},"package":"n@v"}
 *                                       | {"type":"http"|"sse","url","headers":{..}}
 *                                       ("package" optional; "command" may be omitted when
 *                                       "package" names the server, or be "npx")
 *   settings/<user>/secrets/<name>      {"sealed":"cx1:...","env":"VAR","file":"~/rel/path","updated_at":ms,
 *                                        "broker":{"hosts":["api.github.com","*.example.com"],
 *                                                  "placeholder":"cortex-broker-<32 hex>"}}
 *                                       (with "broker", env and file get the placeholder, never
 *                                       the value: egress/broker.h)
 *   settings/<user>/user                {"claude_md":"...","model":"...","env":{"VAR":"..."}}
 *   settings/<user>/plugins/<name>      {"agents":{"f.md":".."},"commands":{..},"rules":{..}}
 *   settings/<user>/ai-providers/<name> {"kind":"anthropic","base_url","model","sealed_key":"cx1:..."}
 *
 * Values are validated before anything is written (a bad request stores
 * nothing); secrets and provider keys are sealed with secrets.h (AD = user and
 * "<kind>/<name>").  Every successful write or delete calls
 * lifecycle_settings_written(), which marks that user's cached session
 * configs dirty. */
#ifndef CORTEX_SETTINGS_H
#define CORTEX_SETTINGS_H

#include "edge.h"

/* Limits (each refused with a 4xx naming the limit). */
#define SET_NAME_MAX        64           /* [A-Za-z0-9][A-Za-z0-9_.-]{0,63} */
#define SET_MAX_MCP         32           /* per user */
#define SET_MAX_SECRETS     64
#define SET_MAX_PLUGINS     32
#define SET_MAX_PROVIDERS   8
#define SET_MAX_PLUGIN_FILES 64          /* per plugin, all kinds */
#define SET_SECRET_MAX      (64u << 10)  /* bytes of one secret value */
#define SET_TEXT_MAX        (256u << 10) /* claude_md, one plugin file */
#define SET_ARGS_MAX        64           /* mcp args, env and header entries */
#define SET_BROKER_HOSTS    32           /* hosts of one brokered secret */
#define SET_BROKER_HOST_MAX 253          /* one of them ("*.domain" included) */
#define SET_BROKER_VALUE_MIN 8           /* bytes of a brokered value */
#define SET_BROKER_VALUE_MAX (8u << 10)

#endif
