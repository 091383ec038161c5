/* server.h — run the daemon until SIGINT/SIGTERM; 0 on a clean stop. */
#ifndef CORTEX_SERVER_H
#define CORTEX_SERVER_H
int server_run(void);
#endif
