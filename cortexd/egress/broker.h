/* broker.h — a user's brokered secrets, from the store to the egress proxy.
 *
 * A secret stored with "broker":{"hosts":[...]} (settings.h) reaches the
 * sandbox only as its placeholder (secrets_placeholder(); cconfig.c puts it
 * where the value would go: env, file).  The proxy gets, per user, the list
 * egress_set_user_broker() takes:
 *     [{"placeholder":"cortex-broker-…","value":"…","hosts":["api.github.com",…]}, …]
 * and swaps the placeholder for the value in requests to those hosts only
 * (mitm.c).  Call broker_sync_user() after every write of a user's secrets,
 * and once before a user's first proxied connection. */
#ifndef CORTEX_BROKER_H
#define CORTEX_BROKER_H

#include <jansson.h>

#include "cx.h"
#include "secrets.h"
#include "store.h"

/* The entries of user (secrets without "broker" are left out), values
 * opened with k.  Free with broker_entries_free(), which wipes the values.
 * A row that fails to parse or open is an error naming it, never a value. */
int broker_entries(store *st, const secrets_key *k, const char *user, json_t **out, cx_err *err);
void broker_entries_free(json_t *entries);

/* broker_entries() handed to egress_set_user_broker() (which copies what it
 * keeps), then wiped. */
int broker_sync_user(store *st, const secrets_key *k, const char *user, cx_err *err);

#endif
