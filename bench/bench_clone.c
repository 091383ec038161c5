/* bench_clone.c — one repo_clone() (fork, uid switch, cortex-clone, the move
 * into the workspace), as the daemon would run it; prints its wall time in ms.
 * Used by bench/clone_bench.sh.
 *
 *   bench_clone URL STAGE_DIR WORKSPACE_DIR [UID]   (token: $CLONE_TOKEN) */
#include <stdio.h>
#include <stdlib.h>

#include "repo.h"

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: bench_clone URL STAGE_DIR WORKSPACE_DIR [UID]\n");
		return 2;
	}
	struct repo_clone_opts o = REPO_CLONE_OPTS_INIT;
	o.url = argv[1];
	o.stage_dir = argv[2];
	o.workspace_dir = argv[3];
	o.uid = argc > 4 ? (uid_t)atoi(argv[4]) : 0;
	o.gid = (gid_t)o.uid;
	o.token = getenv("CLONE_TOKEN");
	o.flags = REPO_ALLOW_PRIVATE; /* gitserver.js is on 127.0.0.1 */
	cx_err err = CX_ERR_INIT;
	uint64_t t0 = cx_mono_us();
	if (repo_clone(&o, &err) < 0) {
		fprintf(stderr, "bench_clone: %s\n", err.msg);
		return 1;
	}
	printf("%.1f\n", (double)(cx_mono_us() - t0) / 1000.0);
	return 0;
}
