/* cli.h — what cortexctl's parts share: the connection, the exit codes, the
 * command table's shape, option scanning, HTTP calls and output helpers.
 *
 *   main.c          options, the command table, help, dispatch, completion
 *   http.c          libcurl requests, status -> exit code, error printing
 *   out.c           human tables and --json output
 *   cmd_sessions.c  health, metrics, users, sessions, files
 *   cmd_settings.c  mcp, secrets, user, plugins, providers, network
 *   cmd_images.c    images (build tars a dir with libarchive, follows the log)
 *   chat.c          chat: a libwebsockets client on the session WebSocket
 *   exec.c, wsc.c   exec: its own option parser and a small WebSocket client
 *                   (cli_exec.h, wsc.h) */
#ifndef CORTEXCTL_CLI_H
#define CORTEXCTL_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Exit codes (docs/cli.md "Exit status"; the man page says the same). */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1, /* bad command line or input, locally or a 400/405/411/413/415/416/422 */
	EXIT_NOT_FOUND = 2, /* 404 */
	EXIT_AUTH = 3,	    /* 401, 403 */
	EXIT_SERVER = 4,   /* 5xx (but 503), unreachable, a broken stream, a cortex.error in chat */
	EXIT_CONFLICT = 5, /* 409, 423, 429, 503, 507: refused for now */
	EXIT_INTERRUPTED = 130,
};

/* A handler's answer to operands it cannot use: main prints the usage. */
#define CMD_BAD_ARGS (-1)

/* What every command needs to reach cortexd; strings not owned (argv/env). */
struct cli {
	const char *url;
	const char *token;
	int json; /* --json: raw JSON on stdout, no tables, no progress bars */
};

/* Operands and --flags of one command, scanned against its table entry. */
#define OPT_MAX 32
struct opts {
	char *pos[16]; /* operands, in order (not owned) */
	int npos;
	struct {
		const char *name; /* without "--" (not owned: the table's) */
		const char *val;  /* NULL for a switch */
	} flag[OPT_MAX];
	int nflag;
};

struct cmd {
	const char *name; /* one or two words, matched against the arguments */
	int (*run)(const struct cli *cli, struct opts *o); /* exit status or CMD_BAD_ARGS */
	const char *usage; /* operands; a word without [] is required */
	const char *flags; /* "image=NAME env=K=V* force": =VALUE takes a value, * repeats */
	const char *help;  /* one line */
};

/* Option lookups: the last value of a flag, or NULL; whether a switch is on. */
const char *opt_get(const struct opts *o, const char *name);
int opt_has(const struct opts *o, const char *name);
/* The i-th value of a repeatable flag, or NULL past the last. */
const char *opt_nth(const struct opts *o, const char *name, int i);
/* A flag's value as an integer in [lo, hi]; 0 ok (*out set, or untouched when
 * absent), -1 printed. */
int opt_int(const struct opts *o, const char *name, long long lo, long long hi, long long *out);

/* ---- http.c ---- */

struct http_req {
	const char *method;
	const char *path; /* /v1/... (already escaped) */
	const char *body; /* JSON body, or NULL */
	FILE *upload;	  /* a body read from this file, or NULL */
	const char *upload_type;
	int no_token; /* /healthz */
	int stream;   /* write the body to stdout as it arrives (2xx only) */
	size_t (*sink)(char *p, size_t n, void *ud); /* instead: give each chunk here */
	void *sink_ud;
};

struct http_resp {
	long status; /* 0: no response (transport error, printed) */
	char *body;  /* NUL-terminated, owned; NULL when streamed or empty */
	size_t len;
	char type[80]; /* Content-Type, "" if none */
};

/* One request.  Returns 0 when a response came (any status), EXIT_SERVER or
 * EXIT_USAGE after printing why not. */
int http_do(const struct cli *cli, const struct http_req *r, struct http_resp *out);
void http_resp_free(struct http_resp *r);
int http_exit_code(long status);
/* The response as an exit code; on an error prints the body (--json: to
 * stdout as is) or "cortexctl: CODE: MESSAGE (HTTP n)" to stderr. */
int http_report(const struct cli *cli, const struct http_resp *r);

/* A JSON call: body (not stolen; may be NULL) in, the parsed 2xx answer out
 * (*out NULL for an empty body).  Errors are reported; returns the exit code. */
int api_json(const struct cli *cli, const char *method, const char *path, json_t *body,
	     json_t **out);
/* The same, then prints: --json the raw body; otherwise human(out) when
 * given, else the JSON indented. */
/* GET path, its body streamed to stdout as it comes; the exit code. */
int api_stream_get(const struct cli *cli, const char *path);
int api_print(const struct cli *cli, const char *method, const char *path, json_t *body,
	      void (*human)(json_t *v));

/* "/v1/" prefix + name checked as one path segment ([A-Za-z0-9._@:-], 1..64)
 * into buf; -1 printed. */
int path_join(char *buf, size_t cap, const char *prefix, const char *name, const char *tail);

/* ---- out.c ---- */

/* A table: columns named, each row's values from these keys of each object. */
void out_table(json_t *rows, const char *const *cols, const char *const *keys);
void out_json(json_t *v); /* indented, to stdout */
/* A value as short text ("-" for null/absent, numbers plain, ms timestamps as UTC). */
void out_value(char *buf, size_t cap, json_t *v, const char *key);
void out_object(json_t *o); /* "key: value" lines */

/* Reads all of a file (or stdin for "-") up to cap bytes, NUL-terminated;
 * NULL printed. */
char *read_input(const char *path, size_t cap, size_t *len);
char *read_stream(FILE *f, size_t cap, size_t *len);

/* ---- command handlers ---- */
int cmd_health(const struct cli *, struct opts *);
int cmd_metrics(const struct cli *, struct opts *);
int cmd_metrics_summary(const struct cli *, struct opts *);
int cmd_metrics_turns(const struct cli *, struct opts *);
int cmd_users_create(const struct cli *, struct opts *);
int cmd_sessions_create(const struct cli *, struct opts *);
int cmd_sessions_ls(const struct cli *, struct opts *);
int cmd_sessions_show(const struct cli *, struct opts *);
int cmd_sessions_sleep(const struct cli *, struct opts *);
int cmd_sessions_pause(const struct cli *, struct opts *);
int cmd_sessions_wake(const struct cli *, struct opts *);
int cmd_sessions_rm(const struct cli *, struct opts *);
int cmd_sessions_messages(const struct cli *, struct opts *);
int cmd_files_ls(const struct cli *, struct opts *);
int cmd_files_get(const struct cli *, struct opts *);
int cmd_sessions_egress(const struct cli *, struct opts *);
int cmd_ports_get(const struct cli *, struct opts *);
int cmd_files_put(const struct cli *, struct opts *);
int cmd_files_rm(const struct cli *, struct opts *);
int cmd_files_exists(const struct cli *, struct opts *);
int cmd_mcp_put(const struct cli *, struct opts *);
int cmd_mcp_ls(const struct cli *, struct opts *);
int cmd_mcp_show(const struct cli *, struct opts *);
int cmd_mcp_rm(const struct cli *, struct opts *);
int cmd_secrets_put(const struct cli *, struct opts *);
int cmd_secrets_ls(const struct cli *, struct opts *);
int cmd_secrets_rm(const struct cli *, struct opts *);
int cmd_user_show(const struct cli *, struct opts *);
int cmd_user_set(const struct cli *, struct opts *);
int cmd_plugins_put(const struct cli *, struct opts *);
int cmd_plugins_ls(const struct cli *, struct opts *);
int cmd_plugins_show(const struct cli *, struct opts *);
int cmd_plugins_rm(const struct cli *, struct opts *);
int cmd_providers_put(const struct cli *, struct opts *);
int cmd_providers_ls(const struct cli *, struct opts *);
int cmd_providers_show(const struct cli *, struct opts *);
int cmd_providers_rm(const struct cli *, struct opts *);
int cmd_network_show(const struct cli *, struct opts *);
int cmd_network_set(const struct cli *, struct opts *);
int cmd_network_rm(const struct cli *, struct opts *);
int cmd_images_ls(const struct cli *, struct opts *);
int cmd_images_show(const struct cli *, struct opts *);
int cmd_images_build(const struct cli *, struct opts *);
int cmd_images_log(const struct cli *, struct opts *);
int cmd_images_import(const struct cli *, struct opts *);
int cmd_images_rm(const struct cli *, struct opts *);
int cmd_chat(const struct cli *, struct opts *);

#endif
