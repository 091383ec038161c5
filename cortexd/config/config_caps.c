/* config_caps.c — the per-user and per-peer caps on the daemon's pools
 * (docs/configuration.md, "Caps"): the "http", "ws" and "sessions" sections
 * and egress.max_conns_per_user.  Every cap an integer; 0 where it says so
 * turns a cap off.  Also http.event_loop, the loop the connections are served
 * by (edge/evloop.h). */
#include "config.h"

#include <jansson.h>
#include <string.h>

/* *out = the value of key in o when present, clamped to [lo, hi]. */
static int cap_int(json_t *o, const char *sect, const char *key, unsigned lo, unsigned hi,
		   unsigned *out, cx_err *err)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return cx_err_set(err, 0, "config: '%s.%s' must be a non-negative integer", sect,
				  key);
	long long n = json_integer_value(v);
	*out = n < (long long)lo ? lo : n > (long long)hi ? hi : (unsigned)n;
	return 0;
}

static int section(json_t *root, const char *name, json_t **out, cx_err *err)
{
	*out = json_object_get(root, name);
	if (*out && !json_is_object(*out))
		return cx_err_set(err, 0, "config: '%s' must be an object", name);
	return 0;
}

void config_caps_defaults(config *c)
{
	c->http_max_conns = 4096;
	c->http_max_conns_per_ip = 256;
	strcpy(c->http_event_loop, "epoll");
	c->ws_max_clients_per_session = 16;
	c->ws_max_clients_per_user = 64;
	c->sessions_max_per_user = 100;
	c->keep_on_crash = false;
	c->keep_on_crash_grace_s = 60;
	c->egress_max_conns_user = 256;
}

/* http.event_loop: the service thread's loop under lws (edge/evloop.h). */
static int event_loop(json_t *h, config *c, cx_err *err)
{
	json_t *v = json_object_get(h, "event_loop");
	if (!v)
		return 0;
	const char *s = json_string_value(v);
	if (!s || (strcmp(s, "epoll") && strcmp(s, "poll") && strcmp(s, "libev") && strcmp(s, "libuv")))
		return cx_err_set(err, 0, "config: 'http.event_loop' must be \"epoll\", \"poll\", \"libev\" or \"libuv\"");
	strcpy(c->http_event_loop, s);
	return 0;
}

int config_load_caps(config *c, json_t *root, cx_err *err)
{
	json_t *h, *w, *s, *e;
	if (section(root, "http", &h, err) < 0 || section(root, "ws", &w, err) < 0 ||
	    section(root, "sessions", &s, err) < 0 || section(root, "egress", &e, err) < 0)
		return -1;
	if (cap_int(h, "http", "max_conns", 16, 1000000, &c->http_max_conns, err) < 0 ||
	    cap_int(h, "http", "max_conns_per_ip", 0, 1000000, &c->http_max_conns_per_ip, err) <
		0 ||
	    event_loop(h, c, err) < 0 ||
	    cap_int(w, "ws", "max_clients_per_session", 1, 65536, &c->ws_max_clients_per_session,
		    err) < 0 ||
	    cap_int(w, "ws", "max_clients_per_user", 1, 1000000, &c->ws_max_clients_per_user, err) <
		0 ||
	    cap_int(s, "sessions", "max_per_user", 0, 1000000, &c->sessions_max_per_user, err) <
		0 ||
	    cap_int(e, "egress", "max_conns_per_user", 1, 65536, &c->egress_max_conns_user, err) <
		0 ||
	    cap_int(s, "sessions", "keep_on_crash_grace_s", 1, 3600, &c->keep_on_crash_grace_s,
		    err) < 0)
		return -1;
	json_t *k = json_object_get(s, "keep_on_crash");
	if (k && !json_is_boolean(k))
		return cx_err_set(err, 0, "config: 'sessions.keep_on_crash' must be true or false");
	if (k)
		c->keep_on_crash = json_is_true(k);
	return 0;
}
