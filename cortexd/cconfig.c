/* cconfig.c — STUB (mine, in progress). */
#include "daemon.h"
#include <string.h>
void settings_changed(const char *user) { (void)user; }
