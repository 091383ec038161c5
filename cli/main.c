/* cortexctl — a command-line client for every route of cortexd's API.
 *
 *   cortexctl [--url URL] [--token TOKEN] [--json] COMMAND [ARGS] [--FLAG[=VALUE]...]
 *   cortexctl --help | COMMAND --help | cortexctl completion bash
 *
 * The commands are the table `commands` below: help, usage, flag checks and
 * the bash completion (contrib/cortexctl.bash, compared by e2e.cli) are all
 * printed from it.  URL defaults to $CORTEX_URL or http://127.0.0.1:8787;
 * TOKEN to $CORTEX_TOKEN.  Exit codes: cli.h, docs/cli.md. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_exec.h"

static int cmd_completion(const struct cli *cli, struct opts *o);
/* In the table for help and completion; main hands exec its raw arguments. */
static int cmd_exec(const struct cli *cli, struct opts *o)
{
	(void)cli;
	(void)o;
	return CMD_BAD_ARGS;
}

static const struct cmd commands[] = {
    {"health", cmd_health, "", "", "check that cortexd answers (no token needed)"},
    {"metrics", cmd_metrics, "", "", "print the Prometheus metrics (admin token)"},
    {"metrics summary", cmd_metrics_summary, "", "since=MS",
     "first-token p50/p95 by surface/path, cache hits, cost"},
    {"metrics turns", cmd_metrics_turns, "", "session=ID since=MS limit=N",
     "per-turn records, oldest first"},
    {"users create", cmd_users_create, "NAME", "",
     "create a user and print its token (admin token)"},
    {"sessions create", cmd_sessions_create, "[chat|voice]",
     "surface=chat|voice image=NAME repo=URL ref=REF repo-secret=NAME limit=KEY=N* idle=SECONDS "
     "wait",
     "create a session (--wait: until its agent is hot)"},
    {"sessions ls", cmd_sessions_ls, "", "", "list your sessions"},
    {"sessions show", cmd_sessions_show, "ID", "", "show a session: state, agent, timings"},
    {"sessions sleep", cmd_sessions_sleep, "ID", "",
     "stop the sandbox; home and workspace are kept"},
    {"sessions pause", cmd_sessions_pause, "ID", "",
     "freeze the sandbox; memory and the hot agent are kept"},
    {"sessions wake", cmd_sessions_wake, "ID", "", "start a sleeping or paused session again"},
    {"sessions rm", cmd_sessions_rm, "ID", "", "delete a session, its sandbox and files"},
    {"sessions messages", cmd_sessions_messages, "ID", "limit=N after=CURSOR",
     "print the session's transcript"},
    {"sessions egress", cmd_sessions_egress, "ID", "limit=N",
     "the session's last egress decisions (allowed, denied), oldest first"},
    {"ports get", cmd_ports_get, "ID PORT [PATH]", "",
     "GET PATH from a server listening on PORT inside the session; the body to stdout"},
    {"chat", cmd_chat, "ID", "message/m=TEXT",
     "talk to a session: tokens stream as they come; Ctrl-C cancels the turn (twice: exit)"},
    {"exec", cmd_exec, "ID -- CMD [ARG...]",
     "interactive/i tty/t workdir/w=DIR env/e=NAME=VALUE* timeout=SECONDS",
     "run CMD in the session's sandbox, streaming its output; exits with its code (-it: a terminal)"},
    {"files ls", cmd_files_ls, "ID PATH", "", "list a directory of /workspace or /home/agent"},
    {"files get", cmd_files_get, "ID PATH", "", "print a file's bytes"},
    {"files put", cmd_files_put, "ID PATH FILE", "",
     "write FILE (- for stdin) to PATH, atomically"},
    {"files rm", cmd_files_rm, "ID PATH", "recursive/r",
     "delete a file or an empty dir (-r: a tree)"},
    {"files exists", cmd_files_exists, "ID PATH", "",
     "exit 0 if PATH exists, 2 if not (prints its type)"},
    {"mcp put", cmd_mcp_put, "NAME",
     "from-file=FILE type=stdio|http|sse command=CMD arg=ARG* env=K=V* url=URL header=K=V* "
     "package=NPM@VER",
     "add or replace an MCP server (flags, or a JSON file)"},
    {"mcp ls", cmd_mcp_ls, "", "", "list your MCP servers"},
    {"mcp show", cmd_mcp_show, "NAME", "", "show one MCP server"},
    {"mcp rm", cmd_mcp_rm, "NAME", "", "remove an MCP server"},
    {"secrets put", cmd_secrets_put, "NAME", "from-file=FILE env=VAR file=~/PATH broker-host=HOST*",
     "store a secret; the value is read from stdin or --from-file, never argv"},
    {"secrets ls", cmd_secrets_ls, "", "", "list your secrets (names only)"},
    {"secrets rm", cmd_secrets_rm, "NAME", "", "remove a secret"},
    {"user show", cmd_user_show, "", "", "show your user settings"},
    {"user set", cmd_user_set, "",
     "claude-md=FILE model=MODEL permission-mode=MODE env=K=V* unset-env=K* clear",
     "change fields of your user settings (the others are kept)"},
    {"plugins put", cmd_plugins_put, "NAME DIR", "",
     "upload DIR/{agents,commands,rules}/*.md as a plugin"},
    {"plugins ls", cmd_plugins_ls, "", "", "list your plugins"},
    {"plugins show", cmd_plugins_show, "NAME", "", "show one plugin's files"},
    {"plugins rm", cmd_plugins_rm, "NAME", "", "remove a plugin"},
    {"providers put", cmd_providers_put, "NAME", "base-url=URL model=MODEL kind=KIND key-file=FILE",
     "add or replace a model provider; the API key is read from stdin or --key-file"},
    {"providers ls", cmd_providers_ls, "", "", "list your model providers (no keys)"},
    {"providers show", cmd_providers_show, "NAME", "", "show one model provider (no key)"},
    {"providers rm", cmd_providers_rm, "NAME", "", "remove a model provider"},
    {"network show", cmd_network_show, "", "session=ID",
     "show your egress policy (or a session's)"},
    {"network set", cmd_network_set, "",
     "session=ID mode=none|allowlist|open allow=ENTRY* deny=ENTRY*",
     "set your egress policy (or a session's)"},
    {"network rm", cmd_network_rm, "", "session=ID", "reset the egress policy to the default"},
    {"images ls", cmd_images_ls, "", "", "list the images"},
    {"images show", cmd_images_show, "NAME", "", "show an image and its latest build"},
    {"images build", cmd_images_build, "NAME DIR", "detach",
     "build DIR (or a tar) with its Dockerfile; follows the log with a progress bar (admin)"},
    {"images log", cmd_images_log, "NAME", "",
     "print the build log, following it while the build runs"},
    {"images import", cmd_images_import, "NAME FILE", "",
     "import an OCI layout or docker archive tar (admin)"},
    {"images rm", cmd_images_rm, "NAME", "", "delete an image, canceling its build (admin)"},
    {"completion", cmd_completion, "bash", "", "print the bash completion script"},
};
#define N_COMMANDS (sizeof commands / sizeof *commands)

/* Earlier spellings, still accepted; not listed in help or completion. */
static const struct {
	const char *old, *now;
} aliases[] = {
    {"user create", "users create"},
    {"session create", "sessions create"},
    {"session list", "sessions ls"},
    {"session get", "sessions show"},
    {"session delete", "sessions rm"},
    {"session sleep", "sessions sleep"},
    {"session wake", "sessions wake"},
    {"session pause", "sessions pause"},
    {"session messages", "sessions messages"},
    {"image list", "images ls"},
    {"image get", "images show"},
    {"image build", "images build"},
    {"image log", "images log"},
    {"image import", "images import"},
    {"image delete", "images rm"},
};

#define GLOBAL_USAGE "cortexctl [--url URL] [--token TOKEN] [--json]"

/* ---- the table: lookups, usage, help ---- */

static void usage_words(char *out, size_t cap, const struct cmd *c)
{
	size_t off = (size_t)snprintf(out, cap, "%s%s%s", c->name, *c->usage ? " " : "", c->usage);
	for (const char *p = c->flags; *p && off < cap;) {
		size_t len = strcspn(p, " ");
		const char *eq = memchr(p, '=', len),
			   *slash = memchr(p, '/', eq ? (size_t)(eq - p) : len);
		size_t nlen = slash ? (size_t)(slash - p) : eq ? (size_t)(eq - p) : len;
		int rep = p[len - 1] == '*';
		int n =
		    snprintf(out + off, cap - off, " [--%.*s%s%.*s]%s", (int)nlen, p, eq ? " " : "",
			     eq ? (int)(len - (size_t)(eq - p) - 1 - (size_t)rep) : 0,
			     eq ? eq + 1 : "", rep ? "..." : "");
		off += n > 0 ? (size_t)n : 0;
		p += len;
		p += strspn(p, " ");
	}
}

static void print_command_line(FILE *out, const struct cmd *c)
{
	char left[64];
	snprintf(left, sizeof left, "%s%s%s", c->name, *c->usage ? " " : "", c->usage);
	fprintf(out, "  %-28s %s\n", left, c->help);
}

static void print_usage(FILE *out)
{
	fprintf(out, "usage: " GLOBAL_USAGE " COMMAND [ARGS]\n"
		     "       cortexctl --help | COMMAND --help\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		print_command_line(out, &commands[i]);
	fprintf(out,
		"\nURL defaults to $CORTEX_URL or http://127.0.0.1:8787, TOKEN to $CORTEX_TOKEN.\n"
		"--json prints the server's JSON as is (errors too); otherwise tables.\n"
		"Exit status: 0 ok, 1 usage or bad input, 2 not found, 3 auth (401/403),\n"
		"4 server error or unreachable, 5 conflict or refused (409/429/503). See "
		"cortexctl(1).\n");
}

static void print_command_usage(FILE *out, const struct cmd *c)
{
	char u[600];
	usage_words(u, sizeof u, c);
	fprintf(out, "usage: " GLOBAL_USAGE " %s\n", u);
}

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

/* Words of name against args[0..]; *nwords = how many matched. */
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

static const struct cmd *by_name(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

/* The longest matching name, aliases included. */
static const struct cmd *find_command(char **args, int nargs, int *nwords)
{
	const struct cmd *best = NULL;
	int bw = 0, w;
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (name_matches(commands[i].name, args, nargs, &w) && w > bw)
			best = &commands[i], bw = w;
	for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
		if (name_matches(aliases[i].old, args, nargs, &w) && w > bw)
			best = by_name(aliases[i].now), bw = w;
	*nwords = bw;
	return best;
}

static int is_help(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* "sessions --help": every command of the group. */
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

/* ---- flags ---- */

/* Does the spec word at p (len bytes) name this flag?  *takes: needs a value. */
static int spec_word_is(const char *p, size_t len, const char *name, size_t nlen, int shortf,
			int *takes, const char **canon, size_t *clen)
{
	const char *eq = memchr(p, '=', len), *slash = memchr(p, '/', eq ? (size_t)(eq - p) : len);
	size_t longlen = slash ? (size_t)(slash - p) : eq ? (size_t)(eq - p) : len;
	*takes = eq != NULL;
	*canon = p;
	*clen = longlen;
	if (shortf)
		return slash && (size_t)((eq ? eq : p + len) - slash - 1) == nlen &&
		       !strncmp(slash + 1, name, nlen);
	return longlen == nlen && !strncmp(p, name, nlen);
}

/* Global options may stand anywhere; the command's flags after its name. */
static int scan_args(const struct cmd *c, char **args, int nargs, struct cli *cli, struct opts *o)
{
	int only_pos = 0;
	for (int i = 0; i < nargs; i++) {
		char *a = args[i];
		if (only_pos || a[0] != '-' || !a[1]) {
			if (o->npos >= (int)(sizeof o->pos / sizeof *o->pos))
				return -1;
			o->pos[o->npos++] = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			only_pos = 1;
			continue;
		}
		int shortf = a[1] != '-';
		const char *name = a + (shortf ? 1 : 2), *eqv = strchr(name, '=');
		size_t nlen = eqv ? (size_t)(eqv - name) : strlen(name);
		if (!shortf && !eqv && !strcmp(name, "json")) {
			cli->json = 1;
			continue;
		}
		if (!shortf && (!strncmp(name, "url", nlen) || !strncmp(name, "token", nlen)) &&
		    (nlen == 3 || nlen == 5)) {
			const char *v = eqv ? eqv + 1 : i + 1 < nargs ? args[++i] : NULL;
			if (!v) {
				fprintf(stderr, "cortexctl: --%.*s needs a value\n", (int)nlen,
					name);
				return -1;
			}
			*(nlen == 3 ? &cli->url : &cli->token) = v;
			continue;
		}
		int found = 0, takes = 0;
		const char *canon = NULL;
		size_t clen = 0;
		for (const char *p = c->flags; *p && !found;) {
			size_t len = strcspn(p, " ");
			found = spec_word_is(p, len, name, nlen, shortf, &takes, &canon, &clen);
			p += len;
			p += strspn(p, " ");
		}
		if (!found) {
			fprintf(stderr, "cortexctl: %s: unknown option '%s'\n", c->name, a);
			return -1;
		}
		if (o->nflag >= OPT_MAX) {
			fprintf(stderr, "cortexctl: too many options (at most %d)\n", OPT_MAX);
			return -1;
		}
		const char *v = NULL;
		if (takes && !(v = eqv ? eqv + 1 : i + 1 < nargs ? args[++i] : NULL)) {
			fprintf(stderr, "cortexctl: %s needs a value\n", a);
			return -1;
		}
		if (!takes && eqv) {
			fprintf(stderr, "cortexctl: %.*s takes no value\n", (int)(eqv - a), a);
			return -1;
		}
		/* the canonical long name, NUL-terminated in a static copy */
		static char names[OPT_MAX][40];
		snprintf(names[o->nflag], sizeof names[0], "%.*s", (int)clen, canon);
		o->flag[o->nflag].name = names[o->nflag];
		o->flag[o->nflag++].val = v;
	}
	return 0;
}

const char *opt_nth(const struct opts *o, const char *name, int n)
{
	for (int i = 0; i < o->nflag; i++)
		if (!strcmp(o->flag[i].name, name) && n-- == 0)
			return o->flag[i].val;
	return NULL;
}

const char *opt_get(const struct opts *o, const char *name)
{
	const char *v = NULL;
	for (int i = 0; i < o->nflag; i++)
		if (!strcmp(o->flag[i].name, name))
			v = o->flag[i].val;
	return v;
}

int opt_has(const struct opts *o, const char *name)
{
	for (int i = 0; i < o->nflag; i++)
		if (!strcmp(o->flag[i].name, name))
			return 1;
	return 0;
}

int opt_int(const struct opts *o, const char *name, long long lo, long long hi, long long *out)
{
	const char *v = opt_get(o, name);
	if (!v)
		return 0;
	char *end;
	long long x = strtoll(v, &end, 10);
	if (!*v || *end || x < lo || x > hi) {
		fprintf(stderr, "cortexctl: --%s must be an integer from %lld to %lld\n", name, lo,
			hi);
		return -1;
	}
	*out = x;
	return 0;
}

/* ---- bash completion, printed from the table ---- */

static void print_flags_words(const struct cmd *c)
{
	for (const char *p = c->flags; *p;) {
		size_t len = strcspn(p, " ");
		const char *eq = memchr(p, '=', len),
			   *slash = memchr(p, '/', eq ? (size_t)(eq - p) : len);
		size_t nlen = slash ? (size_t)(slash - p) : eq ? (size_t)(eq - p) : len;
		printf(" --%.*s", (int)nlen, p);
		p += len;
		p += strspn(p, " ");
	}
}

static int cmd_completion(const struct cli *cli, struct opts *o)
{
	(void)cli;
	if (strcmp(o->pos[0], "bash"))
		return CMD_BAD_ARGS;
	printf("# bash completion for cortexctl; generated by `cortexctl completion bash`\n"
	       "# (e2e.cli checks that this file matches the command table).\n"
	       "_cortexctl() {\n"
	       "    local cur=${COMP_WORDS[COMP_CWORD]} i w1= w2=\n"
	       "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
	       "        case ${COMP_WORDS[i]} in\n"
	       "            --url|--token) ((i++)) ;;\n"
	       "            -*) ;;\n"
	       "            *) if [[ -z $w1 ]]; then w1=${COMP_WORDS[i]}; elif [[ -z $w2 ]]; then "
	       "w2=${COMP_WORDS[i]}; fi ;;\n"
	       "        esac\n"
	       "    done\n"
	       "    local words=\n"
	       "    if [[ -z $w1 ]]; then\n"
	       "        words=\"--url --token --json --help");
	const char *prev = "";
	for (size_t i = 0; i < N_COMMANDS; i++) {
		size_t g = strcspn(commands[i].name, " ");
		if (strcspn(prev, " ") != g || strncmp(prev, commands[i].name, g))
			printf(" %.*s", (int)g, commands[i].name);
		prev = commands[i].name;
	}
	printf("\"\n    else\n        case \"$w1 $w2\" in\n");
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const struct cmd *c = &commands[i];
		const char *sp = strchr(c->name, ' ');
		if (!sp)
			continue;
		printf("            \"%s\") words=\"--json --help", c->name);
		print_flags_words(c);
		printf("\" ;;\n");
	}
	printf("            *) case $w1 in\n");
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const struct cmd *c = &commands[i];
		size_t g = strcspn(c->name, " ");
		if (i && !strncmp(commands[i - 1].name, c->name, g) &&
		    strcspn(commands[i - 1].name, " ") == g)
			continue; /* one line per group */
		printf("                %.*s) words=\"", (int)g, c->name);
		int first = 1;
		for (size_t j = i; j < N_COMMANDS && !strncmp(commands[j].name, c->name, g) &&
				   strcspn(commands[j].name, " ") == g;
		     j++) {
			if (commands[j].name[g] == ' ')
				printf("%s%s", first ? "" : " ", commands[j].name + g + 1),
				    first = 0;
			else
				printf("%s--json --help", first ? "" : " "),
				    print_flags_words(&commands[j]), first = 0;
		}
		printf("\" ;;\n");
	}
	printf("            esac ;;\n"
	       "        esac\n"
	       "    fi\n"
	       "    if [[ $cur == -* || -z $w2 || $words == *--json* ]]; then\n"
	       "        COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
	       "    fi\n"
	       "    [[ ${#COMPREPLY[@]} -eq 0 && $cur != -* ]] && COMPREPLY=($(compgen -f -- "
	       "\"$cur\"))\n"
	       "    return 0\n"
	       "}\n"
	       "complete -F _cortexctl cortexctl\n");
	return 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	struct cli cli = {getenv("CORTEX_URL") ? getenv("CORTEX_URL") : "http://127.0.0.1:8787",
			  getenv("CORTEX_TOKEN"), 0};
	/* leading global options */
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (is_help(argv[i])) {
			print_usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--json")) {
			cli.json = 1;
			continue;
		}
		int is_url = !strcmp(argv[i], "--url"), is_token = !strcmp(argv[i], "--token");
		if ((!is_url && !is_token) || i + 1 >= argc) {
			fprintf(stderr, "cortexctl: %s '%s'\n\n",
				is_url || is_token ? "a value is missing after" : "unknown option",
				argv[i]);
			print_usage(stderr);
			return EXIT_USAGE;
		}
		*(is_url ? &cli.url : &cli.token) = argv[++i];
	}
	char **args = argv + i;
	int nargs = argc - i, nwords = 0;
	if (nargs == 0) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	const struct cmd *c = find_command(args, nargs, &nwords);
	int asks_help = 0;
	for (int k = c ? nwords : 1; k < nargs && strcmp(args[k], "--"); k++) /* after --: the command's */
		asks_help |= is_help(args[k]);
	if (!c) {
		if (asks_help && help_for_group(args[0]))
			return 0;
		fprintf(stderr, "cortexctl: unknown command '%s%s%s'\n\n", args[0],
			nargs > 1 ? " " : "", nargs > 1 ? args[1] : "");
		print_usage(stderr);
		return EXIT_USAGE;
	}
	if (asks_help) {
		print_command_usage(stdout, c);
		printf("\n%s\n\nGlobal options: --url URL, --token TOKEN, --json.  See "
		       "cortexctl(1).\n",
		       c->help);
		return 0;
	}
	if (c->run == cmd_exec) {
		/* Its own parser (cli/exec.c): everything after -- is the command's,
		 * and -it is two switches, as in docker exec. */
		int rc = cli_exec(cli.url, cli.token, args + nwords, nargs - nwords);
		if (rc == CMD_BAD_ARGS)
			print_command_usage(stderr, c);
		return rc == CMD_BAD_ARGS ? EXIT_USAGE : rc;
	}
	struct opts o = {0};
	if (scan_args(c, args + nwords, nargs - nwords, &cli, &o) < 0) {
		print_command_usage(stderr, c);
		return EXIT_USAGE;
	}
	int req = required_operands(c), max = 0;
	for (const char *p = c->usage; *p; p += strcspn(p, " "), p += strspn(p, " "))
		max++;
	if (o.npos < req || o.npos > max) {
		fprintf(stderr, "cortexctl: %s: %s operands\n", c->name,
			o.npos < req ? "missing" : "too many");
		print_command_usage(stderr, c);
		return EXIT_USAGE;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = c->run(&cli, &o);
	curl_global_cleanup();
	if (rc == CMD_BAD_ARGS) {
		print_command_usage(stderr, c);
		return EXIT_USAGE;
	}
	return rc;
}
