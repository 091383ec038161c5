/* sync.h — bring a running sandbox in line with an assembled config.
 *
 * What was last written to a sandbox is kept per session (struct sync_state)
 * and mirrored into the sandbox as /tmp/vf-state.json.  A config whose
 * files_hash and pkgs_hash match the state needs nothing: the message path
 * compares two strings and moves on.  Otherwise sync_apply() runs on a worker
 * thread and writes only files whose hash moved (in parallel, bounded),
 * removes files no setting produces any more, and mounts newly needed MCP
 * packages read-only under /cortex/mcp.  /tmp is a tmpfs, so a woken sandbox
 * starts with an empty state and gets everything once. */
#ifndef CORTEX_SYNC_H
#define CORTEX_SYNC_H

#include <sys/types.h>

#include "cconfig.h"
#include "sandbox.h"

#define SYNC_STATE_PATH "/tmp/vf-state.json"
#define SYNC_MOUNT_DIR "/cortex/mcp"

struct sync_file {
	char path[512];
	char hash[65];
};
struct sync_mount {
	char name[80];
	char key[65];
};

struct sync_state {
	struct sync_file *files;
	size_t n_files;
	struct sync_mount *mounts;
	size_t n_mounts;
	char files_hash[65];  /* of the config last applied; "" = none yet */
	char pkgs_hash[65];
};

struct sync_result {
	unsigned written, skipped, removed, mounted;
	char new_keys[16][65]; /* packages mounted by this run (to pin); at most 16 listed */
	unsigned n_new_keys;
	double ms;
	int rc;
	cx_err err;
};

/* 1 if c needs nothing in a sandbox in state st. */
int sync_is_current(const struct sync_state *st, const cconfig *c);

/* Worker thread.  Applies c to sb and updates st (only what succeeded is
 * recorded, so a failed write is retried next time).  parallel bounds the
 * concurrent writes; agent_pid goes into vf-state.json. */
int sync_apply(sandbox *sb, const cconfig *c, struct sync_state *st, int parallel, pid_t agent_pid,
	       struct sync_result *r);

void sync_state_clear(struct sync_state *st);
/* A deep copy (a sync job works on its own copy).  0, or -1 on ENOMEM. */
int sync_state_copy(struct sync_state *dst, const struct sync_state *src);

/* Process-wide counters (for /metrics and tests). */
struct sync_stats {
	unsigned long long runs, files_written, files_skipped, files_removed, mounts, failures;
};
void sync_get_stats(struct sync_stats *out);

#endif
