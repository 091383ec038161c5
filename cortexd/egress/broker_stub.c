/* broker_stub.c — TEMPORARY: egress_set_user_broker() until egress.c lands
 * (the lead deletes this file when it does).  Weak, so the real one wins. */
#include "egress.h"

__attribute__((weak)) int egress_set_user_broker(const char *user, json_t *entries, cx_err *err)
{
	(void)user;
	(void)entries;
	(void)err;
	return 0;
}
