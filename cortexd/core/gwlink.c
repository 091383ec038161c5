/* gwlink.c — see gwlink.h. */
#include "gwlink.h"

#include <sodium.h>
#include <string.h>

#include "turn.h"

static struct session *by_token(struct cortexd *d, const char *token)
{
	size_t n = token ? strlen(token) : 0;
	if (n != GW_TOKEN_LEN)
		return NULL;
	for (struct session *s = d->sessions; s; s = s->next)
		if (!s->deleted && sodium_memcmp(s->gw_token, token, GW_TOKEN_LEN) == 0)
			return s;
	return NULL;
}

/* Where the provider is for a session: its user's ai-provider, else the daemon's. */
static int provider_of(struct session *s, char *url, size_t ucap, char *key, size_t kcap)
{
	const config *dc = &s->d->cfg;
	const cconfig *c = s->cc.cfg;
	const char *u = c && c->prov_url[0] ? c->prov_url : dc->provider_base_url;
	snprintf(url, ucap, "%s", u[0] ? u : "https://api.anthropic.com");
	if (c && c->prov_key) {
		if (c->prov_key_len >= kcap)
			return -1;
		memcpy(key, c->prov_key, c->prov_key_len);
		key[c->prov_key_len] = '\0';
	} else {
		snprintf(key, kcap, "%s", dc->provider_api_key);
	}
	return key[0] ? 0 : -1;
}

static int authorize(void *arg, const char *token, char sess_id[40], char user[GW_USER_LEN],
		     char *url, size_t ucap, char *key, size_t kcap)
{
	struct session *s = by_token(arg, token);
	if (!s)
		return CX_NOTFOUND;
	snprintf(sess_id, 40, "%s", s->id);
	snprintf(user, GW_USER_LEN, "%s", s->user);
	return provider_of(s, url, ucap, key, kcap);
}

static void report(void *arg, const char *sess_id, const struct gw_report *r)
{
	struct session *s = session_find(arg, sess_id);
	if (s)
		turn_gateway_report(s, r);
}

void gwlink_ops(struct cortexd *d, struct gateway_ops *out)
{
	memset(out, 0, sizeof *out);
	out->arg = d;
	out->authorize = authorize;
	out->report = report;
}
