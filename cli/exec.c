/* exec.c — `cortexctl exec [OPTIONS] ID -- CMD [ARG...]`: a command in a
 * session's sandbox through the session WebSocket ("exec" frame,
 * docs/protocol.md "Exec").  Its stdout and stderr stream to ours, byte for
 * byte (encoding base64 on the wire); cortexctl exits with its exit code
 * (128 + n when a signal ended it).  -i sends our stdin to it; -t gives it a
 * terminal (a pty inside), puts ours in raw mode and follows SIGWINCH with
 * resize frames; -it is an interactive shell.  -w DIR: its cwd; -e
 * NAME=VALUE: its environment; --timeout S: killed after S seconds.  When
 * cortexd refuses or cannot start it: the message on stderr and exit 1;
 * transport or usage errors: 2. */
#include "cli_exec.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "wsc.h"

static volatile sig_atomic_t winch;
static void on_winch(int sig)
{
	(void)sig;
	winch = 1;
}

/* base64 with libsodium (the classic alphabet, padded: what cortexd speaks). */
static char *b64_enc(const unsigned char *in, size_t n)
{
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(cap);
	if (out)
		sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* Decodes in place (the bytes never outgrow the text); returns the length, or -1. */
static long b64_dec(char *s)
{
	size_t n = 0, len = strlen(s);
	if (sodium_base642bin((unsigned char *)s, len, s, len, NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) < 0)
		return -1;
	return (long)n;
}

static int send_obj(struct wsc *w, json_t *o)
{
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	int rc = txt ? wsc_send_text(w, txt, strlen(txt)) : -1;
	free(txt);
	return rc;
}

static void term_size(unsigned *cols, unsigned *rows)
{
	struct winsize ws;
	*cols = 80;
	*rows = 24;
	if ((ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) && ws.ws_col &&
	    ws.ws_row) {
		*cols = ws.ws_col;
		*rows = ws.ws_row;
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

struct opts {
	int in, tty, timeout;
	const char *cwd, *id;
	json_t *env, *cmd;
};

static int parse(char **args, int nargs, struct opts *o)
{
	int i = 0;
	for (; i < nargs && args[i][0] == '-' && strcmp(args[i], "--"); i++) {
		const char *a = args[i];
		if (!strcmp(a, "-i") || !strcmp(a, "-t") || !strcmp(a, "-it") || !strcmp(a, "-ti")) {
			o->in |= strchr(a, 'i') != NULL;
			o->tty |= strchr(a, 't') != NULL;
		} else if (!strcmp(a, "--interactive")) {
			o->in = 1;
		} else if (!strcmp(a, "--tty")) {
			o->tty = 1;
		} else if (i + 1 < nargs && (!strcmp(a, "-w") || !strcmp(a, "--workdir"))) {
			o->cwd = args[++i];
		} else if (i + 1 < nargs && (!strcmp(a, "-e") || !strcmp(a, "--env"))) {
			json_array_append_new(o->env, json_string(args[++i]));
		} else if (i + 1 < nargs && !strcmp(a, "--timeout")) {
			o->timeout = atoi(args[++i]);
		} else {
			fprintf(stderr, "cortexctl exec: unknown option '%s'\n", a);
			return -1;
		}
	}
	if (i >= nargs || args[i][0] == '-')
		return -1;
	o->id = args[i++];
	if (i >= nargs || strcmp(args[i], "--") || i + 1 >= nargs)
		return -1;
	for (i++; i < nargs; i++)
		json_array_append_new(o->cmd, json_string(args[i]));
	return 0;
}

/* One frame from cortexd; returns -1 to go on, else the exit status. */
static int on_message(char *msg, size_t len)
{
	json_t *f = json_loadb(msg, len, 0, NULL);
	const char *type = json_string_value(json_object_get(f, "type"));
	const char *id = json_string_value(json_object_get(f, "id"));
	int rc = -1;
	if (!type || !id || strcmp(id, "1")) {
		if (type && !strcmp(type, "cortex.error") && !id) /* the session's own error */
			fprintf(stderr, "cortexctl exec: %s\n", json_string_value(json_object_get(f, "message")));
	} else if (!strcmp(type, "cortex.stdout") || !strcmp(type, "cortex.stderr")) {
		char *d = strdup(json_string_value(json_object_get(f, "data")) ?: "");
		long n = d ? b64_dec(d) : -1;
		if (n > 0)
			(void)write_all(!strcmp(type, "cortex.stdout") ? STDOUT_FILENO : STDERR_FILENO, d, (size_t)n);
		free(d);
	} else if (!strcmp(type, "cortex.exit")) {
		json_t *c = json_object_get(f, "code");
		const char *e = json_string_value(json_object_get(f, "error"));
		if (e)
			fprintf(stderr, "cortexctl exec: %s\n", e);
		if (json_is_true(json_object_get(f, "timed_out")))
			fprintf(stderr, "cortexctl exec: timed out\n");
		rc = json_is_integer(c) ? (int)json_integer_value(c) : 255;
	} else if (!strcmp(type, "cortex.error")) {
		fprintf(stderr, "cortexctl exec: %s: %s\n", json_string_value(json_object_get(f, "code")),
			json_string_value(json_object_get(f, "message")));
		rc = 1;
	}
	json_decref(f);
	return rc;
}

static int run(struct wsc *w, const struct opts *o)
{
	int in_open = o->in;
	for (;;) {
		if (winch && o->tty) {
			winch = 0;
			unsigned cols, rows;
			term_size(&cols, &rows);
			send_obj(w, json_pack("{s:s,s:s,s:i,s:i}", "type", "resize", "id", "1", "cols", cols, "rows", rows));
		}
		while (wsc_pending(w)) {
			char *m;
			size_t len;
			if (wsc_recv(w, &m, &len) != 1)
				break;
			int rc = on_message(m, len);
			free(m);
			if (rc >= 0)
				return rc;
		}
		struct pollfd p[2] = {{w->fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
		if (poll(p, in_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 2;
		}
		if (p[0].revents) {
			char *m;
			size_t len;
			int r = wsc_recv(w, &m, &len);
			if (r <= 0) {
				fprintf(stderr, "cortexctl exec: the connection to cortexd closed\n");
				return 2;
			}
			int rc = on_message(m, len);
			free(m);
			if (rc >= 0)
				return rc;
		}
		if (in_open && p[1].revents) {
			unsigned char buf[16384];
			ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
			if (n < 0 && errno == EINTR)
				continue;
			char *d = n > 0 ? b64_enc(buf, (size_t)n) : NULL;
			if (n <= 0) {
				in_open = 0;
				send_obj(w, json_pack("{s:s,s:s,s:b}", "type", "stdin", "id", "1", "eof", 1));
			} else {
				send_obj(w, json_pack("{s:s,s:s,s:s}", "type", "stdin", "id", "1", "data", d));
			}
			free(d);
		}
	}
}

int cli_exec(const char *url, const char *token, char **args, int nargs)
{
	struct opts o = {0};
	o.env = json_array();
	o.cmd = json_array();
	int rc = 2;
	struct wsc w = {.fd = -1};
	struct termios saved;
	int raw = 0;
	if (parse(args, nargs, &o) < 0) {
		rc = -1; /* usage */
		goto out;
	}
	char path[300], err[800];
	snprintf(path, sizeof path, "/v1/sessions/%.200s/ws", o.id);
	if (wsc_connect(&w, url, path, token, err, sizeof err) < 0) {
		fprintf(stderr, "cortexctl exec: %s\n", err);
		rc = strstr(err, "404") || strstr(err, "401") ? 1 : 2;
		goto out;
	}
	json_t *f = json_pack("{s:s,s:s,s:O,s:s}", "type", "exec", "id", "1", "cmd", o.cmd, "encoding", "base64");
	if (json_array_size(o.env))
		json_object_set(f, "env", o.env);
	if (o.cwd)
		json_object_set_new(f, "cwd", json_string(o.cwd));
	if (o.timeout > 0)
		json_object_set_new(f, "timeout_s", json_integer(o.timeout));
	if (o.tty) {
		unsigned cols, rows;
		term_size(&cols, &rows);
		json_object_set_new(f, "pty", json_pack("{s:i,s:i}", "cols", cols, "rows", rows));
		signal(SIGWINCH, on_winch);
		if (o.in && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
			struct termios t = saved;
			cfmakeraw(&t);
			raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
		}
	}
	if (send_obj(&w, f) < 0 ||
	    (!o.in && send_obj(&w, json_pack("{s:s,s:s,s:b}", "type", "stdin", "id", "1", "eof", 1)) < 0)) {
		fprintf(stderr, "cortexctl exec: cannot send to cortexd\n");
		goto out;
	}
	rc = run(&w, &o);
out:
	if (raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	wsc_close(&w);
	json_decref(o.env);
	json_decref(o.cmd);
	return rc;
}
