/* cortexctl — a thin command-line client for cortexd's HTTP API.
 *
 *   cortexctl [--url URL] [--token TOKEN] COMMAND [ARGS]
 *   cortexctl --help | COMMAND --help
 *
 * The commands are the table `commands` below; help and usage are printed from
 * it.  URL defaults to $CORTEX_URL or http://127.0.0.1:8787; TOKEN to
 * $CORTEX_TOKEN.  Prints the response body; exits 0 on 2xx, 1 on an HTTP
 * error, 2 on usage or transport errors.  Streaming a turn needs a WebSocket
 * client (see docs/protocol.md). */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "caps.h"
#include "cli_exec.h"

enum { EXIT_HTTP_ERROR = 1, EXIT_USAGE = 2 };

/* What every command needs to reach cortexd; strings not owned (argv/env). */
struct cli {
	const char *url;
	const char *token;
};

struct cmd {
	const char *name; /* one or two words, matched against the arguments */
	int (*run)(const struct cli *cli, char **args, int nargs); /* exit status */
	const char *usage; /* operands; a word without [] is required */
	const char *help;  /* one line */
};

/* A handler's answer to operands it cannot use: main prints the usage. */
#define CMD_BAD_ARGS (-1)

/* ---- HTTP ---- */

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t add = size * nmemb;
	if (b->n + add > CX_CAP_HTTP_BODY * 16u)
		return 0; /* refuse absurd responses rather than grow without bound */
	char *np = realloc(b->p, b->n + add + 1);
	if (!np)
		return 0;
	b->p = np;
	memcpy(b->p + b->n, ptr, add);
	b->n += add;
	b->p[b->n] = '\0';
	return add;
}

static size_t to_stdout(char *ptr, size_t size, size_t nmemb, void *ud)
{
	(void)ud;
	size_t n = fwrite(ptr, size, nmemb, stdout);
	fflush(stdout);
	return n * size;
}

/* One request; prints the body.  token may be NULL (no Authorization).
 * upload: the body is this file (a tar); stream: print as it arrives, no time limit. */
static const char *upload_type = "Content-Type: application/x-tar"; /* files put: octet-stream */

static int request_ex(const struct cli *cli, const char *token, const char *method, const char *path,
		      const char *body, FILE *upload, int stream)
{
	char full[2048], auth[400];
	if ((size_t)snprintf(full, sizeof full, "%s%s", cli->url, path) >= sizeof full) {
		fprintf(stderr, "cortexctl: URL longer than %zu bytes\n", sizeof full - 1);
		return EXIT_USAGE;
	}
	if (token &&
	    (size_t)snprintf(auth, sizeof auth, "Authorization: Bearer %s", token) >= sizeof auth) {
		fprintf(stderr, "cortexctl: token longer than %zu bytes\n",
			sizeof auth - sizeof "Authorization: Bearer ");
		return EXIT_USAGE;
	}
	CURL *c = curl_easy_init();
	if (!c)
		return EXIT_USAGE;
	struct curl_slist *h = NULL;
	if (token)
		h = curl_slist_append(h, auth);
	if (body)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (upload)
		h = curl_slist_append(h, upload_type);
	struct buf b = {NULL, 0};
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream ? to_stdout : on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, stream || upload ? 0L : 60L);
	if (upload) {
		struct stat st;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READDATA, upload);
		if (!fstat(fileno(upload), &st))
			curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
	}
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (upload) {
	} else if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	else if (!strcmp(method, "POST"))
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	CURLcode rc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK) {
		fprintf(stderr, "cortexctl: %s %s: %s\n", method, full, curl_easy_strerror(rc));
		free(b.p);
		return EXIT_USAGE;
	}
	if (b.p && *b.p)
		printf("%s\n", b.p);
	free(b.p);
	return status >= 200 && status < 300 ? 0 : EXIT_HTTP_ERROR;
}

static int request(const struct cli *cli, const char *token, const char *method, const char *path,
		   const char *body)
{
	return request_ex(cli, token, method, path, body, NULL, 0);
}

/* ---- commands ---- */

static int cmd_health(const struct cli *cli, char **args, int nargs)
{
	(void)args, (void)nargs;
	return request(cli, NULL, "GET", "/healthz", NULL);
}

static int cmd_user_create(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	json_t *o = json_pack("{s:s}", "name", args[0]);
	char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!body) {
		fprintf(stderr, "cortexctl: user name is not valid UTF-8\n");
		return EXIT_USAGE;
	}
	int rc = request(cli, cli->token, "POST", "/v1/users", body);
	free(body);
	return rc;
}

static int cmd_session_create(const struct cli *cli, char **args, int nargs)
{
	const char *surface = nargs > 0 && !strcmp(args[0], "voice") ? "voice" : "chat";
	char body[64];
	snprintf(body, sizeof body, "{\"surface\":\"%s\"}", surface);
	return request(cli, cli->token, "POST", "/v1/sessions", body);
}

static int cmd_session_list(const struct cli *cli, char **args, int nargs)
{
	(void)args, (void)nargs;
	return request(cli, cli->token, "GET", "/v1/sessions", NULL);
}

/* METHOD /v1/sessions/ID[/TAIL]; an id that could leave that path is refused. */
static int session_call(const struct cli *cli, const char *method, const char *id, const char *tail)
{
	if (strlen(id) >= CX_CAP_NAME || strchr(id, '/')) {
		fprintf(stderr, "cortexctl: not a session id: '%.80s'\n", id);
		return CMD_BAD_ARGS;
	}
	char path[128];
	snprintf(path, sizeof path, "/v1/sessions/%s%s%s", id, tail ? "/" : "", tail ? tail : "");
	return request(cli, cli->token, method, path, NULL);
}

static int cmd_session_get(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return session_call(cli, "GET", args[0], NULL);
}

static int cmd_session_delete(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return session_call(cli, "DELETE", args[0], NULL);
}

static int cmd_session_sleep(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return session_call(cli, "POST", args[0], "sleep");
}

static int cmd_session_wake(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return session_call(cli, "POST", args[0], "wake");
}

static int cmd_session_messages(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return session_call(cli, "GET", args[0], "messages");
}

/* ---- images ---- */

static int image_path(const char *name, const char *tail, char *out, size_t cap)
{
	if (strlen(name) > 64 || strchr(name, '/') || strchr(name, '?')) {
		fprintf(stderr, "cortexctl: not an image name: '%.80s'\n", name);
		return -1;
	}
	snprintf(out, cap, "/v1/images/%s%s", name, tail);
	return 0;
}

static int image_call(const struct cli *cli, const char *method, const char *name, const char *tail,
		      const char *file, int stream)
{
	char path[128];
	if (image_path(name, tail, path, sizeof path) < 0)
		return CMD_BAD_ARGS;
	FILE *f = NULL;
	if (file && !(f = fopen(file, "rb"))) {
		fprintf(stderr, "cortexctl: %s: %s\n", file, strerror(errno));
		return EXIT_USAGE;
	}
	int rc = request_ex(cli, cli->token, method, path, NULL, f, stream);
	if (f)
		fclose(f);
	return rc;
}

static int cmd_image_list(const struct cli *cli, char **args, int nargs)
{
	(void)args, (void)nargs;
	return request(cli, cli->token, "GET", "/v1/images", NULL);
}

static int cmd_image_get(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return image_call(cli, "GET", args[0], "", NULL, 0);
}

static int cmd_image_build(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return image_call(cli, "POST", args[0], "/build", args[1], 0);
}

static int cmd_image_import(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return image_call(cli, "POST", args[0], "/import", args[1], 0);
}

static int cmd_image_log(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return image_call(cli, "GET", args[0], "/log", NULL, 1);
}

static int cmd_image_delete(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return image_call(cli, "DELETE", args[0], "", NULL, 0);
}

/* ---- files (docs/protocol.md "Files") ---- */

/* METHOD /v1/sessions/ID/files?path=PATH[&recursive=1], PATH escaped. */
static int files_call(const struct cli *cli, const char *method, char **args, const char *extra, FILE *upload,
		      int stream)
{
	if (strlen(args[0]) >= CX_CAP_NAME || strchr(args[0], '/') || strchr(args[0], '?')) {
		fprintf(stderr, "cortexctl: not a session id: '%.80s'\n", args[0]);
		return CMD_BAD_ARGS;
	}
	char *q = curl_easy_escape(NULL, args[1], 0);
	if (!q)
		return EXIT_USAGE;
	char path[4200];
	int n = snprintf(path, sizeof path, "/v1/sessions/%s/files?path=%s%s", args[0], q, extra);
	curl_free(q);
	if (n < 0 || (size_t)n >= sizeof path) {
		fprintf(stderr, "cortexctl: path too long\n");
		return EXIT_USAGE;
	}
	return request_ex(cli, cli->token, method, path, NULL, upload, stream);
}

static int cmd_files_ls(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return files_call(cli, "GET", args, "", NULL, 0);
}

static int cmd_files_get(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	return files_call(cli, "GET", args, "", NULL, 1); /* the bytes, as they come */
}

static int cmd_files_put(const struct cli *cli, char **args, int nargs)
{
	(void)nargs;
	FILE *f = !strcmp(args[2], "-") ? stdin : fopen(args[2], "rb");
	if (!f) {
		fprintf(stderr, "cortexctl: %s: %s\n", args[2], strerror(errno));
		return EXIT_USAGE;
	}
	upload_type = "Content-Type: application/octet-stream";
	int rc = files_call(cli, "PUT", args, "", f, 0);
	if (f != stdin)
		fclose(f);
	return rc;
}

static int cmd_files_rm(const struct cli *cli, char **args, int nargs)
{
	if (nargs > 2 && strcmp(args[2], "-r"))
		return CMD_BAD_ARGS;
	return files_call(cli, "DELETE", args, nargs > 2 ? "&recursive=1" : "", NULL, 0);
}

static int cmd_exec(const struct cli *cli, char **args, int nargs)
{
	int rc = cli_exec(cli->url, cli->token, args, nargs);
	return rc < 0 ? CMD_BAD_ARGS : rc;
}

static const struct cmd commands[] = {
    {"health", cmd_health, "", "check that cortexd answers (no token needed)"},
    {"user create", cmd_user_create, "NAME", "create a user and print its token (admin token)"},
    {"session create", cmd_session_create, "[chat|voice]", "create a session (default: chat)"},
    {"session list", cmd_session_list, "", "list your sessions"},
    {"session get", cmd_session_get, "ID", "show a session: state, agent, timings"},
    {"session delete", cmd_session_delete, "ID", "delete a session, its sandbox and files"},
    {"session sleep", cmd_session_sleep, "ID", "stop the sandbox; home and workspace are kept"},
    {"session wake", cmd_session_wake, "ID", "start a sleeping session's sandbox again"},
    {"session messages", cmd_session_messages, "ID", "print the session's transcript"},
    {"image list", cmd_image_list, "", "list the images"},
    {"image get", cmd_image_get, "NAME", "show an image and its latest build"},
    {"image build", cmd_image_build, "NAME CONTEXT.tar", "build a tar context with a Dockerfile (admin token)"},
    {"image log", cmd_image_log, "NAME", "print the build log, following it while the build runs"},
    {"image import", cmd_image_import, "NAME IMAGE.tar", "import an OCI layout or docker archive (admin token)"},
    {"image delete", cmd_image_delete, "NAME", "delete an image, canceling its build (admin token)"},
    {"files ls", cmd_files_ls, "ID PATH", "list a directory of /workspace or /home/agent (JSON)"},
    {"files get", cmd_files_get, "ID PATH", "print a file's bytes"},
    {"files put", cmd_files_put, "ID PATH FILE", "write FILE (- for stdin) to PATH, atomically"},
    {"files rm", cmd_files_rm, "ID PATH [-r]", "delete a file or an empty dir (-r: a tree)"},
    {"exec", cmd_exec, "[OPTIONS] ID -- CMD [ARG...]",
     "run CMD in the session's sandbox, streaming its output; exits with its code (-i: send stdin, -t: a terminal, "
     "-it: interactive, -w DIR, -e NAME=VALUE, --timeout S)"},
};
#define N_COMMANDS (sizeof commands / sizeof *commands)

/* ---- help and usage, from the table ---- */

#define GLOBAL_USAGE "cortexctl [--url URL] [--token TOKEN]"

static void print_command_line(FILE *out, const struct cmd *c)
{
	char left[64];
	snprintf(left, sizeof left, "%s%s%s", c->name, *c->usage ? " " : "", c->usage);
	fprintf(out, "  %-30s %s\n", left, c->help);
}

static void print_usage(FILE *out)
{
	fprintf(out, "usage: " GLOBAL_USAGE " COMMAND [ARGS]\n"
		     "       cortexctl --help | COMMAND --help\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		print_command_line(out, &commands[i]);
	fprintf(out, "\nURL defaults to $CORTEX_URL or http://127.0.0.1:8787, TOKEN to "
		     "$CORTEX_TOKEN.\n"
		     "Prints the response body.  Exit status: 0 on a 2xx response, 1 on an "
		     "HTTP error,\n2 on a usage or transport error.\n");
}

static void print_command_usage(FILE *out, const struct cmd *c)
{
	fprintf(out, "usage: " GLOBAL_USAGE " %s%s%s\n", c->name, *c->usage ? " " : "", c->usage);
}

/* How many operands a command needs: the words of its usage not in []. */
static int required_operands(const struct cmd *c)
{
	int n = 0;
	for (const char *p = c->usage; *p;) {
		p += strspn(p, " ");
		if (!*p)
			break;
		if (*p != '[')
			n++;
		p += strcspn(p, " ");
	}
	return n;
}

/* Do the words of name match args[0..]?  *nwords = how many. */
static int name_matches(const char *name, char **args, int nargs, int *nwords)
{
	int w = 0;
	for (const char *p = name; *p; w++) {
		size_t len = strcspn(p, " ");
		if (w >= nargs || strlen(args[w]) != len || strncmp(args[w], p, len) != 0)
			return 0;
		p += len + (p[len] == ' ');
	}
	*nwords = w;
	return 1;
}

static const struct cmd *find_command(char **args, int nargs, int *nwords)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (name_matches(commands[i].name, args, nargs, nwords))
			return &commands[i];
	return NULL;
}

static int is_help(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* COMMAND --help for a group ("session --help"): every command in it. */
static int help_for_group(const char *group)
{
	size_t len = strlen(group);
	int found = 0;
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strncmp(commands[i].name, group, len) && commands[i].name[len] == ' ') {
			if (!found++)
				printf("usage: " GLOBAL_USAGE " %s SUBCOMMAND [ARGS]\n\n", group);
			print_command_line(stdout, &commands[i]);
		}
	return found;
}

static int unknown_command(char **args, int nargs)
{
	fprintf(stderr, "cortexctl: unknown command '%s%s%s'\n\n", args[0], nargs > 1 ? " " : "",
		nargs > 1 ? args[1] : "");
	print_usage(stderr);
	return EXIT_USAGE;
}

/* ---- main ---- */

/* Leading --url/--token options; *first = index of the command.  Returns -1
 * to go on, else the exit status. */
static int parse_options(int argc, char **argv, struct cli *cli, int *first)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i += 2) {
		if (is_help(argv[i])) {
			print_usage(stdout);
			return 0;
		}
		int is_url = !strcmp(argv[i], "--url"), is_token = !strcmp(argv[i], "--token");
		if (!is_url && !is_token) {
			fprintf(stderr, "cortexctl: unknown option '%s'\n\n", argv[i]);
			print_usage(stderr);
			return EXIT_USAGE;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "cortexctl: %s needs a value\n\n", argv[i]);
			print_usage(stderr);
			return EXIT_USAGE;
		}
		if (is_url)
			cli->url = argv[i + 1];
		else
			cli->token = argv[i + 1];
	}
	if (i >= argc) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	*first = i;
	return -1;
}

int main(int argc, char **argv)
{
	struct cli cli = {getenv("CORTEX_URL") ? getenv("CORTEX_URL") : "http://127.0.0.1:8787",
			  getenv("CORTEX_TOKEN")};
	int first = 0, rc = parse_options(argc, argv, &cli, &first);
	if (rc >= 0)
		return rc;
	char **args = argv + first;
	int nargs = argc - first, nwords = 0;
	const struct cmd *c = find_command(args, nargs, &nwords);
	int asks_help = 0;
	for (int i = c ? nwords : 1; i < nargs && strcmp(args[i], "--"); i++) /* after --: the command's */
		asks_help |= is_help(args[i]);
	if (!c) {
		if (asks_help && help_for_group(args[0]))
			return 0;
		return unknown_command(args, nargs);
	}
	if (asks_help) {
		print_command_usage(stdout, c);
		printf("\n%s\n", c->help);
		return 0;
	}
	args += nwords;
	nargs -= nwords;
	if (nargs < required_operands(c)) {
		fprintf(stderr, "cortexctl: %s: missing %s\n", c->name, c->usage);
		print_command_usage(stderr, c);
		return EXIT_USAGE;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = c->run(&cli, args, nargs);
	curl_global_cleanup();
	if (rc == CMD_BAD_ARGS) {
		print_command_usage(stderr, c);
		return EXIT_USAGE;
	}
	return rc;
}
