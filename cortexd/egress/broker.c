/* broker.c — see broker.h.  The record shape is settings.h's
 * (settings/<user>/secrets/<name>); the AD a value is sealed with is
 * cconfig.h's SET_AD_SECRET + name. */
#include "broker.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cconfig.h"
#include "egress.h"

static void wipe_string(json_t *s)
{
	if (json_is_string(s))
		sodium_memzero((char *)json_string_value(s), json_string_length(s));
}

void broker_entries_free(json_t *entries)
{
	size_t i;
	json_t *e;
	json_array_foreach(entries, i, e) wipe_string(json_object_get(e, "value"));
	json_decref(entries);
}

/* The entry of one row, or NULL in *out when the secret is not brokered. */
static int entry_of(const secrets_key *k, const char *user, const char *name, const char *txt,
		    size_t len, json_t **out, cx_err *err)
{
	*out = NULL;
	json_t *row = json_loadb(txt, len, 0, NULL);
	json_t *hosts = json_object_get(json_object_get(row, "broker"), "hosts");
	const char *sealed = json_string_value(json_object_get(row, "sealed"));
	int rc = 0;
	if (!json_is_object(row))
		rc = cx_err_set(err, EBADMSG, "secret %s: row is not a JSON object", name);
	else if (!hosts)
		rc = 0;
	else if (!json_is_array(hosts) || !sealed)
		rc = cx_err_set(err, EBADMSG, "secret %s: broker row without hosts or value", name);
	if (rc < 0 || !hosts) {
		json_decref(row);
		return rc;
	}
	char ad[160], ph[SECRETS_PLACEHOLDER_LEN + 1];
	snprintf(ad, sizeof ad, SET_AD_SECRET "%s", name);
	char *pt = NULL;
	size_t ptlen = 0;
	if (secrets_placeholder(k, user, name, ph, err) < 0 ||
	    secrets_open(k, user, ad, sealed, &pt, &ptlen, err) < 0) {
		json_decref(row);
		return cx_err_wrap(err, "secret %s", name);
	}
	*out = json_pack("{s:s, s:s%, s:O}", "placeholder", ph, "value", pt, ptlen, "hosts", hosts);
	secrets_free(pt, ptlen);
	json_decref(row);
	return *out ? 0 : cx_err_set(err, ENOMEM, "secret %s: broker entry", name);
}

int broker_entries(store *st, const secrets_key *k, const char *user, json_t **out, cx_err *err)
{
	*out = NULL;
	char prefix[256];
	int plen = snprintf(prefix, sizeof prefix, "settings/%s/" SET_AD_SECRET, user);
	if (plen < 0 || (size_t)plen >= sizeof prefix)
		return cx_err_set(err, ENAMETOOLONG, "broker: user name too long");
	store_kv *kv = NULL;
	size_t n = 0;
	if (store_list(st, prefix, 0, &kv, &n, err) < 0)
		return cx_err_wrap(err, "broker: secrets of %s", user);
	json_t *arr = json_array();
	int rc = arr ? 0 : cx_err_set(err, ENOMEM, "broker entries");
	for (size_t i = 0; i < n && rc == 0; i++) {
		json_t *e = NULL;
		rc = entry_of(k, user, kv[i].key + plen, kv[i].val, kv[i].len, &e, err);
		if (e)
			json_array_append_new(arr, e);
	}
	store_kv_free(kv, n);
	if (rc < 0) {
		broker_entries_free(arr);
		return cx_err_wrap(err, "broker: user %s", user);
	}
	*out = arr;
	return 0;
}

int broker_sync_user(store *st, const secrets_key *k, const char *user, cx_err *err)
{
	json_t *arr = NULL;
	if (broker_entries(st, k, user, &arr, err) < 0)
		return -1;
	int rc = egress_set_user_broker(user, arr, err);
	broker_entries_free(arr);
	return rc < 0 ? cx_err_wrap(err, "broker: user %s", user) : 0;
}
