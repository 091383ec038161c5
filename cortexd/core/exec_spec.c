/* exec_spec.c — checking an exec request (exec.h): pure, no session. */
#include "exec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"

void exec_spec_clear(struct exec_spec *sp)
{
	for (char **a = sp->argv; a && *a; a++)
		free(*a);
	for (char **e = sp->env; e && *e; e++)
		free(*e);
	free(sp->argv);
	free(sp->env);
	free(sp->stdin_data);
	memset(sp, 0, sizeof *sp);
}

long exec_b64_decode(const char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	int bits = 0;
	long o = 0;
	size_t pad = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '=') {
			pad++;
			continue;
		}
		const char *f = in[i] ? memchr(t, in[i], 64) : NULL;
		if (!f || pad)
			return -1; /* not base64, or data after padding */
		acc = acc << 6 | (uint32_t)(f - t);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(acc >> bits & 0xff);
		}
	}
	if (pad > 2 || (n % 4 && pad) || bits >= 6)
		return -1;
	return o;
}

static int bad(char *msg, size_t mcap, const char *m)
{
	snprintf(msg, mcap, "%s", m);
	return -1;
}

/* A JSON string without NUL, or NULL. */
static const char *nul_free(json_t *v)
{
	const char *s = json_string_value(v);
	return s && strlen(s) == json_string_length(v) ? s : NULL;
}

static int env_name_ok(const char *e)
{
	const char *eq = strchr(e, '=');
	if (!eq || eq == e)
		return 0;
	for (const char *p = e; p < eq; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_' || (p > e && *p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

static int parse_argv(json_t *cmd, struct exec_spec *out, size_t *total, char *msg, size_t mcap)
{
	size_t n = json_array_size(cmd);
	if (!json_is_array(cmd) || n < 1 || n > EXEC_MAX_ARGS)
		return bad(msg, mcap, "\"cmd\" must be an array of 1 to 1024 strings");
	if (!(out->argv = calloc(n + 1, sizeof *out->argv)))
		return bad(msg, mcap, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *a = nul_free(json_array_get(cmd, i));
		if (!a || (i == 0 && !*a))
			return bad(msg, mcap, "\"cmd\" entries must be strings without NUL (the first non-empty)");
		*total += strlen(a) + 1;
		if (!(out->argv[i] = strdup(a)))
			return bad(msg, mcap, "out of memory");
	}
	const char *a0 = out->argv[0];
	if (a0[0] != '/' && (a0[0] == '-' || strchr(a0, '=')))
		return bad(msg, mcap, "\"cmd\"[0] must be an absolute path or a program name looked up in PATH");
	return 0;
}

static int parse_env(json_t *env, struct exec_spec *out, size_t *total, char *msg, size_t mcap)
{
	size_t n = json_array_size(env);
	if (env && (!json_is_array(env) || n > EXEC_MAX_ENV))
		return bad(msg, mcap, "\"env\" must be an array of at most 256 \"NAME=value\" strings");
	if (!(out->env = calloc(n + 1, sizeof *out->env)))
		return bad(msg, mcap, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *e = nul_free(json_array_get(env, i));
		if (!e || !env_name_ok(e))
			return bad(msg, mcap, "\"env\" entries must be \"NAME=value\" (NAME: letters, digits, _; no NUL)");
		*total += strlen(e) + 1;
		if (!(out->env[i] = strdup(e)))
			return bad(msg, mcap, "out of memory");
	}
	return 0;
}

static int parse_pty(json_t *pty, struct exec_spec *out, char *msg, size_t mcap)
{
	if (!pty || json_is_false(pty) || json_is_null(pty))
		return 0;
	out->pty = 1;
	out->cols = 80;
	out->rows = 24;
	if (json_is_true(pty))
		return 0;
	json_t *c = json_object_get(pty, "cols"), *r = json_object_get(pty, "rows");
	if (!json_is_object(pty) || (c && !json_is_integer(c)) || (r && !json_is_integer(r)))
		return bad(msg, mcap, "\"pty\" must be true or {\"cols\":N,\"rows\":N}");
	if (c)
		out->cols = (unsigned)(json_integer_value(c) < 1 || json_integer_value(c) > 1000 ? 0 : json_integer_value(c));
	if (r)
		out->rows = (unsigned)(json_integer_value(r) < 1 || json_integer_value(r) > 1000 ? 0 : json_integer_value(r));
	if (!out->cols || !out->rows)
		return bad(msg, mcap, "\"pty\" cols and rows must be from 1 to 1000");
	return 0;
}

int exec_spec_parse(json_t *o, int http, const config *cfg, struct exec_spec *out, char *msg, size_t mcap)
{
	memset(out, 0, sizeof *out);
	static const char *const ws_keys[] = {"type", "id", "cmd", "cwd", "env", "timeout_s", "pty", "encoding", NULL};
	static const char *const http_keys[] = {"cmd", "cwd", "env", "timeout_s", "stdin", "encoding", NULL};
	const char *const *keys = http ? http_keys : ws_keys;
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		size_t i = 0;
		while (keys[i] && strcmp(keys[i], k))
			i++;
		if (!keys[i]) {
			snprintf(msg, mcap, "unknown member \"%.40s\" (cmd, cwd, env, timeout_s, %s)", k,
				 http ? "stdin, encoding" : "pty, encoding");
			return -1;
		}
	}
	const char *id = http ? "" : nul_free(json_object_get(o, "id"));
	if (!id || strlen(id) > EXEC_ID_MAX)
		return bad(msg, mcap, "\"id\" must be a string of 1 to 64 bytes");
	snprintf(out->id, sizeof out->id, "%s", id);
	size_t total = 0;
	if (parse_argv(json_object_get(o, "cmd"), out, &total, msg, mcap) < 0 ||
	    parse_env(json_object_get(o, "env"), out, &total, msg, mcap) < 0)
		return -1;
	if (total > EXEC_MAX_STRINGS)
		return bad(msg, mcap, "\"cmd\" and \"env\" together exceed 96 KiB");
	json_t *cw = json_object_get(o, "cwd");
	const char *cwd = cw ? nul_free(cw) : "/workspace";
	cx_err err = CX_ERR_INIT;
	if (!cwd || strlen(cwd) >= sizeof out->cwd)
		return bad(msg, mcap, "\"cwd\" must be a string (a dir under /workspace or /home/agent)");
	if (files_path_ok(cwd, &err) < 0) {
		snprintf(msg, mcap, "\"cwd\": %s", err.msg);
		return -1;
	}
	snprintf(out->cwd, sizeof out->cwd, "%s", cwd);
	json_t *t = json_object_get(o, "timeout_s");
	int max_t = cfg ? cfg->exec_max_timeout_s : 86400;
	if (t && (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > max_t)) {
		snprintf(msg, mcap, "\"timeout_s\" must be an integer from 0 (none) to %d (exec.max_timeout_s)", max_t);
		return -1;
	}
	out->timeout_s = t ? (int)json_integer_value(t) : http ? (cfg ? cfg->exec_default_timeout_s : 60) : 0;
	if (http && out->timeout_s == 0)
		out->timeout_s = max_t; /* a one-shot always ends */
	json_t *enc = json_object_get(o, "encoding");
	const char *es = enc ? nul_free(enc) : "utf-8";
	if (!es || (strcmp(es, "utf-8") && strcmp(es, "base64")))
		return bad(msg, mcap, "\"encoding\" must be \"utf-8\" or \"base64\"");
	out->base64 = !strcmp(es, "base64");
	if (!http && parse_pty(json_object_get(o, "pty"), out, msg, mcap) < 0)
		return -1;
	json_t *in = http ? json_object_get(o, "stdin") : NULL;
	if (in) {
		if (!json_is_string(in))
			return bad(msg, mcap, "\"stdin\" must be a string");
		size_t n = json_string_length(in);
		if (!(out->stdin_data = malloc(n + 1)))
			return bad(msg, mcap, "out of memory");
		if (out->base64) {
			long r = exec_b64_decode(json_string_value(in), n, out->stdin_data);
			if (r < 0)
				return bad(msg, mcap, "\"stdin\" is not valid base64");
			out->stdin_len = (size_t)r;
		} else {
			memcpy(out->stdin_data, json_string_value(in), n);
			out->stdin_len = n;
		}
	}
	return 0;
}
