/* server.h — run the daemon until SIGINT/SIGTERM; 0 on a clean stop. */
#ifndef CORTEX_SERVER_H
#define CORTEX_SERVER_H
#include "edge.h"

int server_run(struct cortexd *d);
#endif
