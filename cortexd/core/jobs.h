/* jobs.h — the lifecycle's blocking work, run on worker threads.
 *
 * A job gets copies of what it needs when it is submitted and writes only its
 * own struct; its result is applied to the session by lifecycle.c on the
 * service thread (work.h: run on a worker, done on the service thread).
 * Nothing here reads or writes a struct session. */
#ifndef CORTEX_JOBS_H
#define CORTEX_JOBS_H

#include <sys/types.h>

#include <jansson.h>

#include "config.h"
#include "sandbox.h"
#include "sync.h"

struct session;
struct imgstore;

/* A session's host dirs (root's, 0711, never bound into a sandbox):
 *   DATA/sessions/<id>/disk.img   its disk (ext4 on a loop device, limits.disk_mb)
 *   DATA/sessions/<id>/disk/      where the disk is mounted while the sandbox is up:
 *       home/ workspace/ run/     bound at /home/agent, /workspace, /run/cortex
 *       upper/ work/              the image root's overlay upper (image mode)
 *       stage/                    a repo clone before it moves into workspace/ */
#define JOBS_DISK_IMG "disk.img"
#define JOBS_DISK_DIR "disk"

/* Root-only dirs of the data dir, never bound into a sandbox: what cortexd
 * (root) opens, binds or connects to for a session lives there, never under
 * the session's dirs, which the sandbox can write (home, workspace, run). */
#define JOBS_SOCK_DIR "sock" /* <id>.sock: the listening socket ws-agent serves */
#define JOBS_TRUST_DIR "egress-trust" /* in DATA: ca.pem, bundle.pem for /cortex/ca */
#define JOBS_GATEWAY_SOCK "@gateway.sock" /* in JOBS_SOCK_DIR: the model gateway (no session
                                           id has a @, so no <id>.sock is it) */
#define JOBS_KEEP_DIR "keep"  /* <id>.json: a sandbox a crash keeps (sessions.keep_on_crash) */
#define JOBS_LOG_DIR "logs"  /* <id>.ws-agent.log: ws-agent's stdout and stderr */
#define JOBS_DISK_TEMPLATES "disk-templates" /* ext4-<mb>mb.img: an empty disk of each size in use,
                                              copied for a new session (sandbox_disk_make_from_template) */
/* Open DATA/<sub> (O_PATH|O_DIRECTORY), making it 0700 when missing; refuses
 * a symlink, a dir of another owner, or one open to group or others.
 * Returns the fd, or -1 with err. */
int jobs_private_dir(const config *c, const char *sub, cx_err *err);
/* Remove what a session left in those dirs: its socket, and with the_log its
 * log too (delete).  Missing files are fine. */
void jobs_remove_session_files(const config *c, const char *id, int the_log);

/* The session's disk lock: an flock on DATA/sessions/<id> held while its
 * disk is attached or detached (the prepare and stop jobs) and for the whole
 * of a file operation of the files API (core/files.c), which may attach the
 * disk itself while the session sleeps.  So a file operation never sees the
 * disk come or go under it, and a wake never finds the disk attached
 * read-only for a read.  Returns the fd to close (which unlocks), or -1
 * with err (ENOENT: no session dir). */
int jobs_disk_lock(const char *dir, cx_err *err);

/* Create the sandbox and start ws-agent in it; ready when ws-agent says so.
 * ws-agent gets the ready pipe as fd 3 and, as fd 4, a listening socket
 * cortexd made at DATA/sock/<id>.sock (it serves that, and cortexd connects
 * there: nothing the sandbox can write is on either path). */
struct prepare_job {
	struct session *s;      /* for done only: never touched by run */
	const config *cfg;      /* the daemon's, immutable while running */
	char id[40];
	char dir[4096];
	sandbox *old;           /* owned: a broken sandbox of the session, stopped first */
	int old_pinned;         /* ... which held a pin of image */
	struct imgstore *images; /* thread-safe; the image is pinned here, unpinned by the stop job */
	char image[128];        /* "host" = the host's root, read-only (operator opt-in) */
	uid_t uid;              /* the session's own uid (= gid) */
	uint64_t disk_mb;
	uint32_t cpu_weight, cpu_max_milli;
	uint64_t memory_mb, pids; /* 0 = no limit */
	int gateway_port;       /* the model gateway's TCP port (0 = no gateway): with
	                           cfg->sandbox_net_isolated ws-agent forwards it inside */
	int egress;             /* the egress proxy runs: ws-agent forwards cfg->egress_port to it */
	/* result */
	sandbox *sb;            /* NULL on failure */
	pid_t wsa_pid;
	double ms;
	double disk_ms, sandbox_ms, wsagent_ms; /* the steps of ms: dirs + disk, sandbox, ws-agent ready */
	double queued_ms;       /* submitted -> a worker took it */
	uint64_t submit_us;     /* set by the submitter */
	int image_missing;      /* the image is not in the store (err says so) */
	char agent_cmd[512];    /* the agent inside: the image's claude or /cortex/agent/... */
	char cwd[1024];         /* the image's WorkingDir, else /workspace */
	json_t *env;            /* the image's Env as an object (owned), or NULL */
	cx_err err;
};
void job_prepare_run(void *arg);

/* Stop every process (and remove the session's dir when deleting). */
struct stop_job {
	struct session *s;      /* for done only; NULL when the session is gone */
	struct session *hold;   /* a deleted session's reference: its uid stays taken until
				 * the sandbox is destroyed (done drops it) */
	const config *cfg;      /* the daemon's, immutable while running */
	sandbox *sb;            /* owned by the job */
	int remove_dir;
	struct imgstore *images; /* unpin `image` when set */
	char image[128];
	char id[40];
	char dir[4096];
};
void job_stop_run(void *arg);

/* The runtime disks every sandbox gets read-only: ws-agent with its loader
 * (/cortex/rt), for images without an agent, the agent package
 * (/cortex/agent), and the egress CA's trust files (/cortex/ca).  Made once per content (mke2fs -d) and loop-mounted under
 * DATA/runtime, so mountinfo inside shows no host path.  Thread-safe. */
/* At exit: take the runtime disks off DATA/runtime. */
void jobs_runtime_unmount_all(const config *c);
/* Unmount the session's disk (dir = DATA/sessions/<id>); not mounted: nothing. */
void jobs_detach_disk(const char *dir, const char *id);
int jobs_runtime_mount(const config *c, const char *what /* "rt" | "agent" | "trust" */, char *out, size_t cap,
		       cx_err *err);

/* Freeze the sandbox's cgroup; returns once FROZEN. */
struct freeze_job {
	struct session *s;
	sandbox *sb;            /* borrowed: the session keeps it, nothing else runs meanwhile */
	int rc;
	cx_err err;
};
void job_freeze_run(void *arg);

/* Bring the sandbox in line with a config (files, package mounts). */
struct sync_job {
	struct session *s;
	sandbox *sb;            /* borrowed, as above */
	cconfig *cfg;           /* ref */
	int parallel;
	pid_t wsa_pid;
	struct sync_state state; /* a copy of the session's; the result replaces it */
	struct sync_result r;
};
void job_sync_run(void *arg);

#endif
