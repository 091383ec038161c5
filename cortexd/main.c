/* main.c — cortexd: parse configuration, then run the server (server.c). */
#include <stdio.h>

#include "daemon.h"
#include "log.h"
#include "server.h"

int main(int argc, char **argv)
{
	cx_err err = CX_ERR_INIT;
	config_defaults(&D.cfg);
	int rc = config_parse_args(&D.cfg, argc, argv, &err);
	if (rc == 1)
		return 0;
	if (rc < 0 || config_finish(&D.cfg, argv[0], &err) < 0) {
		fprintf(stderr, "cortexd: %s\n", err.msg);
		return 2;
	}
	log_set_json(D.cfg.log_json);
	return server_run();
}
