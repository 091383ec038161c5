/* chat.c — `cortexctl chat ID`: the session WebSocket from a terminal.
 *
 * A libwebsockets client.  Lines of stdin (or --message) are sent as
 * messages, one turn at a time; text deltas are printed as they arrive.
 * Ctrl-C during a turn sends {"type":"cancel"}; a second Ctrl-C (or one
 * while idle) exits 130.  A dropped connection is reconnected (backing off,
 * for up to a minute) and {"type":"resume","after_seq":last} picks the turn
 * up where it was cut; frames at or below the last seq are never printed
 * twice.  cortex.error / cortex.revoked are printed on stderr and make the
 * exit status 4.  --json prints every frame as it came instead. */
#include <libwebsockets.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caps.h"
#include "cli.h"

#define OUTQ		 16
#define FRAME_CAP	 (8u << 20) /* one incoming frame, reassembled */
#define RECONNECT_FOR_MS 60000

struct chat {
	const struct cli *cli;
	struct lws_context *ctx;
	struct lws *wsi;
	char host[256], path[512], auth[400];
	int port, tls;
	/* incoming */
	char *in;
	size_t inlen;
	long long last_seq;
	int at_line_start;
	/* outgoing: frames queued for the socket (owned) */
	char *outq[OUTQ];
	int nout;
	/* turn and exit state */
	int connected, ever_connected, turn_running, cancel_sent, oneshot_sent, done, rc, had_error;
	long long reconnect_since; /* ms, 0 while connected */
	int backoff_ms;
	lws_sorted_usec_list_t sul;
	const char *oneshot; /* --message (not owned) */
	/* stdin lines from the reader thread, under mu */
	pthread_mutex_t mu;
	char *lines[OUTQ];
	int nlines, stdin_eof;
};

static struct chat *g_chat; /* for the signal handler */
static volatile sig_atomic_t g_sigint;

static void on_sigint(int sig)
{
	(void)sig;
	g_sigint++;
	if (g_chat && g_chat->ctx)
		lws_cancel_service(g_chat->ctx);
}

static const char *str_or(const char *s, const char *dflt)
{
	return s ? s : dflt;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void queue_frame(struct chat *c, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s || c->nout >= OUTQ) {
		free(s);
		return;
	}
	c->outq[c->nout++] = s;
	if (c->wsi && c->connected)
		lws_callback_on_writable(c->wsi);
}

static void prompt(struct chat *c)
{
	if (!c->oneshot && !c->cli->json && isatty(0) && isatty(2))
		fprintf(stderr, "> ");
}

/* The next stdin line when no turn runs; the exit when nothing is left. */
static void pump(struct chat *c)
{
	if (c->turn_running || !c->connected)
		return;
	if (c->oneshot) {
		if (!c->oneshot_sent) {
			c->oneshot_sent = 1, c->turn_running = 1, c->cancel_sent = 0;
			queue_frame(c,
				    json_pack("{s:s,s:s}", "type", "message", "text", c->oneshot));
		} else {
			c->done = 1;
		}
		return;
	}
	pthread_mutex_lock(&c->mu);
	char *line = NULL;
	if (c->nlines) {
		line = c->lines[0];
		memmove(c->lines, c->lines + 1, (size_t)--c->nlines * sizeof *c->lines);
	} else if (c->stdin_eof) {
		c->done = 1;
	}
	pthread_mutex_unlock(&c->mu);
	if (!line)
		return;
	json_t *m = json_pack("{s:s,s:s}", "type", "message", "text", line);
	free(line);
	if (!m) {
		fprintf(stderr, "cortexctl: that line is not UTF-8; not sent\n");
		prompt(c);
		return;
	}
	c->turn_running = 1, c->cancel_sent = 0;
	queue_frame(c, m);
}

static void *read_stdin(void *arg)
{
	struct chat *c = arg;
	sigset_t ss; /* Ctrl-C is the service loop's, not a short read here */
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	char *buf = malloc(CX_CAP_MESSAGE_TEXT + 2);
	while (buf && fgets(buf, CX_CAP_MESSAGE_TEXT + 2, stdin)) {
		size_t n = strlen(buf);
		if (n && buf[n - 1] == '\n')
			buf[--n] = '\0';
		if (!n)
			continue;
		pthread_mutex_lock(&c->mu);
		if (c->nlines < OUTQ)
			c->lines[c->nlines++] = strdup(buf);
		else
			fprintf(stderr, "cortexctl: %d lines wait already; this one is dropped\n",
				OUTQ);
		if (c->ctx)
			lws_cancel_service(c->ctx);
		pthread_mutex_unlock(&c->mu);
	}
	free(buf);
	pthread_mutex_lock(&c->mu);
	c->stdin_eof = 1;
	if (c->ctx)
		lws_cancel_service(c->ctx);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void end_turn(struct chat *c)
{
	if (!c->at_line_start && !c->cli->json)
		putchar('\n');
	c->at_line_start = 1;
	fflush(stdout);
	c->turn_running = 0;
	g_sigint = 0; /* the next Ctrl-C cancels the next turn, or exits while idle */
	prompt(c);
}

/* One whole frame from cortexd. */
static void on_frame(struct chat *c, const char *text, size_t len)
{
	json_t *f = json_loadb(text, len, 0, NULL);
	if (!f)
		return;
	json_t *sv = json_object_get(f, "seq");
	if (json_is_integer(sv)) {
		if (json_integer_value(sv) <= c->last_seq) { /* already shown before a reconnect */
			json_decref(f);
			return;
		}
		c->last_seq = json_integer_value(sv);
	}
	const char *type = json_string_value(json_object_get(f, "type"));
	type = type ? type : "";
	if (c->cli->json) {
		fwrite(text, 1, len, stdout);
		putchar('\n');
		fflush(stdout);
	}
	if (!strcmp(type, "stream_event")) {
		json_t *ev = json_object_get(f, "event"), *d = json_object_get(ev, "delta");
		const char *t = json_string_value(json_object_get(d, "text"));
		if (!c->cli->json && t &&
		    !strcmp(str_or(json_string_value(json_object_get(d, "type")), ""),
			    "text_delta")) {
			fputs(t, stdout);
			fflush(stdout);
			c->at_line_start = t[0] ? t[strlen(t) - 1] == '\n' : c->at_line_start;
		}
	} else if (!strcmp(type, "cortex.progress") && !c->cli->json && isatty(2)) {
		fprintf(stderr, "[%s]\n",
			str_or(json_string_value(json_object_get(f, "phase")), "progress"));
	} else if (!strcmp(type, "cortex.done")) {
		int cancelled = json_is_true(json_object_get(f, "cancelled"));
		if (!c->cli->json && (cancelled || isatty(2))) {
			if (!c->at_line_start)
				putchar('\n'), c->at_line_start = 1;
			fflush(stdout);
			json_t *t = json_object_get(f, "timings");
			fprintf(stderr, "[%s; first token %.0f ms, total %.0f ms]\n",
				cancelled ? "cancelled" : "done",
				json_number_value(json_object_get(t, "first_token_ms")),
				json_number_value(json_object_get(t, "total_ms")));
		}
		if (json_is_true(json_object_get(f, "is_error")) && !cancelled)
			c->had_error = 1;
		end_turn(c);
	} else if (!strcmp(type, "cortex.error") || !strcmp(type, "cortex.revoked")) {
		if (!c->at_line_start && !c->cli->json)
			putchar('\n'), c->at_line_start = 1;
		fflush(stdout);
		const char *code = str_or(json_string_value(json_object_get(f, "code")),
					  json_string_value(json_object_get(f, "reason")));
		fprintf(stderr, "cortexctl: %s: %s: %s\n",
			!strcmp(type, "cortex.error") ? "error" : "revoked", code ? code : "?",
			str_or(json_string_value(json_object_get(f, "message")), ""));
		c->had_error = 1;
		/* a refused resume or message leaves no turn running */
		end_turn(c);
	}
	json_decref(f);
}

static void reconnect(lws_sorted_usec_list_t *sul);

static void connect_now(struct chat *c)
{
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = c->ctx;
	ci.address = c->host;
	ci.port = c->port;
	ci.path = c->path;
	ci.host = c->host;
	ci.origin = c->host;
	ci.ssl_connection = c->tls ? LCCSCF_USE_SSL : 0;
	ci.protocol = NULL;
	ci.pwsi = &c->wsi;
	ci.userdata = c;
	if (!lws_client_connect_via_info(&ci))
		c->wsi = NULL; /* the error callback said why, or the retry does */
}

/* The connection is gone: retry with backoff, or give up. */
static void lost(struct chat *c, const char *why, int status)
{
	c->connected = 0;
	c->wsi = NULL;
	if (c->done)
		return;
	if (!c->ever_connected || (status >= 400 && status < 500)) {
		fprintf(stderr, "cortexctl: chat: %s\n", why);
		c->rc = status ? http_exit_code(status) : EXIT_SERVER;
		c->done = 1;
		return;
	}
	if (!c->reconnect_since) {
		c->reconnect_since = now_ms();
		c->backoff_ms = 250;
		fprintf(stderr, "\ncortexctl: connection lost (%s); reconnecting\n", why);
		c->at_line_start = 1;
	}
	if (now_ms() - c->reconnect_since > RECONNECT_FOR_MS) {
		fprintf(stderr, "cortexctl: chat: could not reconnect for %d s\n",
			RECONNECT_FOR_MS / 1000);
		c->rc = EXIT_SERVER;
		c->done = 1;
		return;
	}
	lws_sul_schedule(c->ctx, 0, &c->sul, reconnect, (lws_usec_t)c->backoff_ms * 1000);
	c->backoff_ms = c->backoff_ms * 2 > 4000 ? 4000 : c->backoff_ms * 2;
}

static void reconnect(lws_sorted_usec_list_t *sul)
{
	struct chat *c = lws_container_of(sul, struct chat, sul);
	connect_now(c);
	if (!c->wsi)
		lost(c, "connect failed", 0);
}

static int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	struct chat *c = g_chat;
	(void)user;
	if (!c)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = (unsigned char **)in, *end = (*p) + len;
		if (c->auth[0] && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
							       (unsigned char *)c->auth,
							       (int)strlen(c->auth), p, end))
			return -1;
		break;
	}
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		c->connected = 1;
		if (c->reconnect_since) /* pick the turn up where the cut left it */
			fprintf(stderr, "cortexctl: reconnected; resuming after seq %lld\n",
				c->last_seq);
		if (c->ever_connected)
			queue_frame(c, json_pack("{s:s,s:I}", "type", "resume", "after_seq",
						 (json_int_t)c->last_seq));
		c->ever_connected = 1, c->reconnect_since = 0;
		if (!c->turn_running)
			prompt(c);
		pump(c);
		if (c->nout)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		int st = wsi ? (int)lws_http_client_http_response(wsi) : 0;
		char why[300];
		snprintf(why, sizeof why, "%s", in ? (const char *)in : "connection failed");
		if (st)
			snprintf(why, sizeof why, "the server answered HTTP %d (%s)", st,
				 st == 401   ? "bad token"
				 : st == 404 ? "no such session"
					     : "refused");
		lost(c, why, st);
		break;
	}
	case LWS_CALLBACK_CLIENT_CLOSED:
		lost(c, "closed by the server or the network", 0);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (c->inlen + len > FRAME_CAP) {
			fprintf(stderr, "cortexctl: a frame over %u bytes; dropped\n", FRAME_CAP);
			c->inlen = 0;
			return 0;
		}
		char *np = realloc(c->in, c->inlen + len + 1);
		if (!np)
			return -1;
		c->in = np;
		memcpy(c->in + c->inlen, in, len);
		c->inlen += len;
		if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
			on_frame(c, c->in, c->inlen);
			c->inlen = 0;
			pump(c);
		}
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (c->nout) {
			size_t n = strlen(c->outq[0]);
			unsigned char *buf = malloc(LWS_PRE + n);
			if (!buf)
				return -1;
			memcpy(buf + LWS_PRE, c->outq[0], n);
			int w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT);
			free(buf);
			if (w < (int)n)
				return -1;
			free(c->outq[0]);
			memmove(c->outq, c->outq + 1, (size_t)--c->nout * sizeof *c->outq);
			if (c->nout)
				lws_callback_on_writable(wsi);
		}
		break;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (!c)
			break;
		if (g_sigint >= 2 || (g_sigint == 1 && !c->turn_running)) {
			c->rc = EXIT_INTERRUPTED;
			c->done = 1;
		} else if (g_sigint == 1 && !c->cancel_sent) {
			c->cancel_sent = 1;
			fprintf(stderr,
				"\ncortexctl: cancelling the turn (Ctrl-C again to quit)\n");
			c->at_line_start = 1;
			queue_frame(c, json_pack("{s:s}", "type", "cancel"));
		}
		pump(c);
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {{"cortexctl-chat", on_event, 0, 0, 0, NULL, 0},
						 {NULL, NULL, 0, 0, 0, NULL, 0}};

/* http[s]://host[:port][/prefix] into c. */
static int parse_url(struct chat *c, const char *url, const char *id)
{
	const char *p = url;
	if (!strncmp(p, "https://", 8))
		c->tls = 1, p += 8;
	else if (!strncmp(p, "http://", 7))
		p += 7;
	else
		return -1;
	size_t hl = strcspn(p, ":/");
	if (!hl || hl >= sizeof c->host)
		return -1;
	memcpy(c->host, p, hl);
	c->host[hl] = '\0';
	p += hl;
	c->port = c->tls ? 443 : 80;
	if (*p == ':') {
		char *end;
		long port = strtol(p + 1, &end, 10);
		if (port < 1 || port > 65535)
			return -1;
		c->port = (int)port;
		p = end;
	}
	size_t pre = strlen(p);
	while (pre && p[pre - 1] == '/')
		pre--;
	char tail[128];
	snprintf(tail, sizeof tail, "/%s/ws", id);
	if ((size_t)snprintf(c->path, sizeof c->path, "%.*s/v1/sessions%s", (int)pre, p, tail) >=
	    sizeof c->path)
		return -1;
	return 0;
}

int cmd_chat(const struct cli *cli, struct opts *o)
{
	static struct chat c; /* the signal handler and callbacks find it */
	memset(&c, 0, sizeof c);
	c.cli = cli;
	c.oneshot = opt_get(o, "message");
	c.at_line_start = 1;
	char probe[160];
	if (path_join(probe, sizeof probe, "/", o->pos[0], NULL) < 0)
		return EXIT_USAGE;
	if (parse_url(&c, cli->url, o->pos[0]) < 0) {
		fprintf(stderr, "cortexctl: chat needs an http:// or https:// URL, not '%s'\n",
			cli->url);
		return EXIT_USAGE;
	}
	if (cli->token &&
	    (size_t)snprintf(c.auth, sizeof c.auth, "Bearer %s", cli->token) >= sizeof c.auth)
		return EXIT_USAGE;
	pthread_mutex_init(&c.mu, NULL);
	lws_set_log_level(0, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.gid = -1;
	info.uid = -1;
	if (c.tls)
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	g_chat = &c;
	c.ctx = lws_create_context(&info);
	if (!c.ctx) {
		fprintf(stderr, "cortexctl: chat: cannot start the WebSocket client\n");
		return EXIT_SERVER;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigint;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	pthread_t reader;
	int have_reader = !c.oneshot && pthread_create(&reader, NULL, read_stdin, &c) == 0;
	connect_now(&c);
	if (!c.wsi && !c.done)
		lost(&c, "connect failed", 0);
	while (!c.done)
		if (lws_service(c.ctx, 0) < 0)
			break;
	signal(SIGINT, SIG_DFL);
	c.done = 1; /* the closes that destroying the context calls back are no loss */
	pthread_mutex_lock(&c.mu);
	struct lws_context *ctx = c.ctx;
	c.ctx = NULL; /* the reader, still in fgets, no longer pokes it */
	pthread_mutex_unlock(&c.mu);
	lws_context_destroy(ctx);
	g_chat = NULL;
	if (have_reader) /* blocked in fgets: it goes with the process */
		pthread_detach(reader);
	for (int i = 0; i < c.nout; i++)
		free(c.outq[i]);
	pthread_mutex_lock(&c.mu);
	for (int i = 0; i < c.nlines; i++)
		free(c.lines[i]);
	c.nlines = 0;
	pthread_mutex_unlock(&c.mu);
	free(c.in);
	fflush(stdout);
	if (c.rc)
		return c.rc;
	return c.had_error ? EXIT_SERVER : EXIT_OK;
}
