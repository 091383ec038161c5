/* main.c — cortexd: parse configuration, then run the server (server.c). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "session.h"
#include "log.h"
#include "sandbox.h"
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
	/* An upgrade restart (SIGHUP) execs the binary at this path again:
	 * the new one, if a package upgrade replaced it. */
	d->argv = argv;
	ssize_t n = readlink("/proc/self/exe", d->exe, sizeof d->exe - 1);
	d->exe[n > 0 ? n : 0] = '\0';
	if (n > 10 && !strcmp(d->exe + n - 10, " (deleted)"))
		d->exe[n - 10] = '\0';
	/* Now, while cortexd is small and single-threaded: sandboxes' monitors
	 * are forked from this helper, not from the daemon (sandbox/forkserver.c);
	 * the helper runs cortex-sbxfork from next to this binary when it is there. */
	char helper[sizeof d->exe + 32];
	snprintf(helper, sizeof helper, "%s", d->exe);
	char *slash = strrchr(helper, '/');
	if (slash)
		snprintf(slash + 1, sizeof helper - (size_t)(slash + 1 - helper), "cortex-sbxfork");
	if (sandbox_forkserver_start(slash ? helper : NULL, &err) < 0)
		log_warn("%s: sandboxes fork the daemon", err.msg);
	return server_run(d);
}
