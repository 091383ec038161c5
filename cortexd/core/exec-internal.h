/* exec-internal.h — what exec.c and exec_launch.c share (see exec.h). */
#ifndef CORTEX_EXEC_INTERNAL_H
#define CORTEX_EXEC_INTERNAL_H

#include "exec.h"

#define EXEC_READ_CHUNK (16u << 10)
#define EXEC_WAIT_TICK_US (20 * 1000)      /* a command waiting for its session to wake looks again */
#define EXEC_WAIT_MAX_US (120ull * 1000000) /* ... at most this long */
#define EXEC_DRAIN_US (2 * 1000000)         /* output still open this long after the exit: closed */

enum ex_state { EX_WAIT, EX_LAUNCH, EX_RUN };
enum ex_role { R_OUT, R_ERR, R_EXIT, R_IN, R_N };

struct exec;
struct ex_pipe {
	struct exec *x;
	enum ex_role role;
	int fd;            /* owned until adopted, then wsi's */
	struct lws *wsi;
	int open;
	unsigned char carry[4]; /* a UTF-8 sequence cut by the read */
	size_t ncarry;
};

struct exec {
	struct exec *next;   /* in s->execs */
	struct session *s;   /* a reference */
	struct client *c;    /* not owned; NULL for a one-shot */
	struct exec_spec sp;
	enum ex_state st;
	pid_t pid;
	struct ex_pipe p[R_N]; /* a pty: R_OUT is the master, also written as stdin */
	int exited;          /* status read, or the exit fd reached EOF, or we killed it */
	int status, have_status, sandbox_gone, killed, timed_out, cancelled, paused, orphan;
	int wake_asked;
	char *in_buf;        /* stdin waiting for the command */
	size_t in_len;
	int in_eof;          /* close stdin once in_buf is written */
	uint64_t t0_us, wait_until_us;
	lws_sorted_usec_list_t sul_wait, sul_timeout;
	/* one-shot */
	exec_done_fn done;
	void *arg;
	char *buf[2];
	size_t nbuf[2];
	int truncated;
};

/* exec.c */
void exec_send_obj(struct exec *x, json_t *o);  /* to its client (o consumed) */
void exec_fail(struct exec *x, const char *code, const char *msg); /* did not start: frees x */
void exec_free(struct exec *x);
void exec_kill(struct exec *x);                  /* closes the exit fd: init kills the group */
void exec_in_flush(struct exec *x);              /* write waiting stdin */
void exec_timeout_cb(lws_sorted_usec_list_t *sul);
void exec_count_started(void);
/* exec_launch.c */
void exec_try_launch(struct exec *x);            /* launch now, or wait for the sandbox */

#endif
