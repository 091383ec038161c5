/* http.c — cortexctl's HTTP: one libcurl request per call, a capped body,
 * the status mapped to an exit code, errors printed once. */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "caps.h"
#include "cli.h"

/* A response body is kept up to this; past it the transfer is refused. */
#define RESP_CAP (CX_CAP_HTTP_BODY * 64u)

struct sink {
	const struct http_req *r;
	struct http_resp *out;
	CURL *c;
	int overflow;
};

static long status_of(CURL *c)
{
	long st = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	return st;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct sink *s = ud;
	size_t add = size * nmemb;
	long st = status_of(s->c);
	int ok = st >= 200 && st < 300;
	if (ok && s->r->sink)
		return s->r->sink(ptr, add, s->r->sink_ud);
	if (ok && s->r->stream) {
		size_t n = fwrite(ptr, 1, add, stdout);
		fflush(stdout);
		return n;
	}
	if (s->out->len + add > RESP_CAP) {
		s->overflow = 1;
		return 0; /* refuse absurd responses rather than grow without bound */
	}
	char *np = realloc(s->out->body, s->out->len + add + 1);
	if (!np)
		return 0;
	s->out->body = np;
	memcpy(np + s->out->len, ptr, add);
	s->out->len += add;
	np[s->out->len] = '\0';
	return add;
}

int http_do(const struct cli *cli, const struct http_req *r, struct http_resp *out)
{
	char full[CX_CAP_HTTP_URI + 512], auth[400];
	memset(out, 0, sizeof *out);
	if ((size_t)snprintf(full, sizeof full, "%s%s", cli->url, r->path) >= sizeof full) {
		fprintf(stderr, "cortexctl: URL longer than %zu bytes\n", sizeof full - 1);
		return EXIT_USAGE;
	}
	const char *token = r->no_token ? NULL : cli->token;
	if (token &&
	    (size_t)snprintf(auth, sizeof auth, "Authorization: Bearer %s", token) >= sizeof auth) {
		fprintf(stderr, "cortexctl: token longer than %zu bytes\n", sizeof auth - 23);
		return EXIT_USAGE;
	}
	CURL *c = curl_easy_init();
	if (!c)
		return EXIT_SERVER;
	struct curl_slist *h = NULL;
	if (token)
		h = curl_slist_append(h, auth);
	if (r->body)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (r->upload)
		h = curl_slist_append(h, r->upload_type ? r->upload_type
							: "Content-Type: application/octet-stream");
	h = curl_slist_append(h, "Expect:"); /* cortexd answers at once; no 100-continue dance */
	struct sink s = {r, out, c, 0};
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, r->stream || r->sink || r->upload ? 0L : 120L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
	struct stat st;
	char *slurp = NULL; /* a pipe's bytes: cortexd wants a Content-Length, never chunks */
	if (r->upload && (fstat(fileno(r->upload), &st) || !S_ISREG(st.st_mode))) {
		size_t n = 0;
		slurp = read_stream(r->upload, RESP_CAP, &n);
		if (!slurp) {
			curl_slist_free_all(h);
			curl_easy_cleanup(c);
			return EXIT_USAGE;
		}
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, slurp);
	} else if (r->upload) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READDATA, r->upload);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
	} else if (r->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
	} else if (!strcmp(r->method, "POST") || !strcmp(r->method, "PUT")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	}
	CURLcode rc = curl_easy_perform(c);
	free(slurp);
	out->status = status_of(c);
	char *ct = NULL;
	if (!curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) && ct)
		snprintf(out->type, sizeof out->type, "%s", ct);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (rc == CURLE_WRITE_ERROR && !s.overflow && out->status >= 200 && out->status < 300 &&
	    (r->sink || r->stream))
		return 0; /* the sink stopped it on purpose */
	if (rc != CURLE_OK) {
		fprintf(stderr, "cortexctl: %s %s: %s\n", r->method, full,
			s.overflow ? "response larger than the cap" : curl_easy_strerror(rc));
		http_resp_free(out);
		out->status = 0;
		return EXIT_SERVER;
	}
	return 0;
}

void http_resp_free(struct http_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

int http_exit_code(long st)
{
	if (st >= 200 && st < 300)
		return EXIT_OK;
	switch (st) {
	case 404:
		return EXIT_NOT_FOUND;
	case 401:
	case 403:
		return EXIT_AUTH;
	case 409:
	case 423:
	case 429:
	case 503:
	case 507:
		return EXIT_CONFLICT;
	default:
		return st >= 400 && st < 500 ? EXIT_USAGE : EXIT_SERVER;
	}
}

int http_report(const struct cli *cli, const struct http_resp *r)
{
	int code = http_exit_code(r->status);
	if (code == EXIT_OK)
		return code;
	if (cli->json && r->body && *r->body) {
		printf("%s\n", r->body);
		return code;
	}
	json_t *e = r->body ? json_loads(r->body, 0, NULL) : NULL;
	json_t *err = json_object_get(e, "error");
	const char *ec = json_string_value(json_object_get(err, "code"));
	const char *msg = json_string_value(json_object_get(err, "message"));
	if (ec)
		fprintf(stderr, "cortexctl: %s: %s (HTTP %ld)\n", ec, msg ? msg : "", r->status);
	else
		fprintf(stderr, "cortexctl: HTTP %ld%s%.300s\n", r->status,
			r->body && *r->body ? ": " : "", r->body ? r->body : "");
	json_decref(e);
	return code;
}

int api_json(const struct cli *cli, const char *method, const char *path, json_t *body,
	     json_t **out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct http_req rq = {.method = method, .path = path, .body = text};
	struct http_resp rs;
	*out = NULL;
	if (body && !text) {
		fprintf(stderr, "cortexctl: the request body is not valid JSON text (UTF-8?)\n");
		return EXIT_USAGE;
	}
	int rc = http_do(cli, &rq, &rs);
	free(text);
	if (rc)
		return rc;
	rc = http_report(cli, &rs);
	if (rc == EXIT_OK && rs.body && *rs.body) {
		json_error_t je;
		*out = json_loads(rs.body, JSON_DECODE_ANY, &je);
		if (!*out) {
			fprintf(stderr, "cortexctl: %s %s: the answer is not JSON: %s\n", method,
				path, je.text);
			rc = EXIT_SERVER;
		}
	}
	http_resp_free(&rs);
	return rc;
}

int api_print(const struct cli *cli, const char *method, const char *path, json_t *body,
	      void (*human)(json_t *v))
{
	json_t *v = NULL;
	int rc = api_json(cli, method, path, body, &v);
	if (rc == EXIT_OK && v) {
		if (cli->json) {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			printf("%s\n", s ? s : "null");
			free(s);
		} else if (human) {
			human(v);
		} else {
			out_json(v);
		}
	}
	json_decref(v);
	return rc;
}

int path_join(char *buf, size_t cap, const char *prefix, const char *name, const char *tail)
{
	size_t n = strlen(name);
	int ok = n > 0 && n < CX_CAP_NAME && strcmp(name, ".") && strcmp(name, "..");
	for (const char *p = name; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		     (*p >= '0' && *p <= '9') || strchr("._@:-", *p);
	if (!ok) {
		fprintf(stderr, "cortexctl: not a valid name or id: '%.80s'\n", name);
		return -1;
	}
	if ((size_t)snprintf(buf, cap, "%s%s%s", prefix, name, tail ? tail : "") >= cap)
		return -1;
	return 0;
}

char *read_stream(FILE *f, size_t cap, size_t *len)
{
	size_t n = 0, size = 65536;
	char *buf = malloc(size + 1);
	while (buf) {
		n += fread(buf + n, 1, size - n, f);
		if (ferror(f) || n > cap) {
			fprintf(stderr, "cortexctl: input %s\n",
				ferror(f) ? "unreadable" : "larger than the cap");
			free(buf);
			return NULL;
		}
		if (feof(f))
			break;
		char *nb = n == size ? realloc(buf, (size *= 2) + 1) : buf;
		if (!nb)
			free(buf);
		buf = nb;
	}
	if (!buf)
		return NULL;
	buf[n] = '\0';
	*len = n;
	return buf;
}

char *read_input(const char *path, size_t cap, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f) {
		fprintf(stderr, "cortexctl: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	char *buf = read_stream(f, cap, len);
	if (f != stdin)
		fclose(f);
	return buf;
}

int api_stream_get(const struct cli *cli, const char *path)
{
	struct http_req rq = {.method = "GET", .path = path, .stream = 1};
	struct http_resp rs;
	int rc = http_do(cli, &rq, &rs);
	if (!rc)
		rc = http_report(cli, &rs);
	http_resp_free(&rs);
	return rc;
}
