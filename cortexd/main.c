/* main.c — cortexd: parse configuration, then run the server (server.c). */
#include <stdio.h>

#include "session.h"
#include "log.h"
#include "server.h"

static struct cortexd daemon_; /* large (config paths): not on the stack */

int main(int argc, char **argv)
{
	struct cortexd *d = &daemon_;
	cx_err err = CX_ERR_INIT;
	config_defaults(&d->cfg);
	int rc = config_parse_args(&d->cfg, argc, argv, &err);
	if (rc == 1)
		return 0;
	if (rc < 0 || config_finish(&d->cfg, argv[0], &err) < 0) {
		fprintf(stderr, "cortexd: %s\n", err.msg);
		return 2;
	}
	if (d->cfg.check_only) {
		printf("cortexd: config ok\n");
		return 0;
	}
	log_set_json(d->cfg.log_json);
	return server_run(d);
}
