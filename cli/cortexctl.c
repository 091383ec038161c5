/* cortexctl — a thin command-line client for cortexd's HTTP API.
 *
 *   cortexctl [--url URL] [--token TOKEN] COMMAND ...
 *     health
 *     user create NAME                 (admin token)
 *     session create [chat|voice]
 *     session list | get ID | delete ID | sleep ID | wake ID | messages ID
 *
 * URL defaults to $CORTEX_URL or http://127.0.0.1:8787; TOKEN to $CORTEX_TOKEN.
 * Prints the response body; exits 0 on 2xx, 1 on an HTTP error, 2 on usage or
 * transport errors.  Streaming a turn needs a WebSocket client (see docs/protocol.md). */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"

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

static int request(const char *url, const char *token, const char *method, const char *path,
		   const char *body)
{
	CURL *c = curl_easy_init();
	if (!c)
		return 2;
	char full[2048], auth[400];
	snprintf(full, sizeof full, "%s%s", url, path);
	struct curl_slist *h = NULL;
	if (token) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
	}
	if (body)
		h = curl_slist_append(h, "Content-Type: application/json");
	struct buf b = {NULL, 0};
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	if (body)
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
		return 2;
	}
	if (b.p && *b.p)
		printf("%s\n", b.p);
	free(b.p);
	return status >= 200 && status < 300 ? 0 : 1;
}

static int usage(void)
{
	fputs("usage: cortexctl [--url URL] [--token TOKEN] COMMAND\n"
	      "  health\n"
	      "  user create NAME\n"
	      "  session create [chat|voice]\n"
	      "  session list|get ID|delete ID|sleep ID|wake ID|messages ID\n",
	      stderr);
	return 2;
}

int main(int argc, char **argv)
{
	const char *url = getenv("CORTEX_URL") ? getenv("CORTEX_URL") : "http://127.0.0.1:8787";
	const char *token = getenv("CORTEX_TOKEN");
	int i = 1;
	for (; i < argc - 1 && !strncmp(argv[i], "--", 2); i += 2) {
		if (!strcmp(argv[i], "--url"))
			url = argv[i + 1];
		else if (!strcmp(argv[i], "--token"))
			token = argv[i + 1];
		else
			return usage();
	}
	if (i >= argc)
		return usage();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const char *cmd = argv[i], *sub = i + 1 < argc ? argv[i + 1] : NULL;
	const char *arg = i + 2 < argc ? argv[i + 2] : NULL;
	char path[512], body[512];
	int rc;
	if (!strcmp(cmd, "health")) {
		rc = request(url, NULL, "GET", "/healthz", NULL);
	} else if (!strcmp(cmd, "user") && sub && !strcmp(sub, "create") && arg) {
		json_t *o = json_pack("{s:s}", "name", arg);
		char *s = json_dumps(o, JSON_COMPACT);
		rc = request(url, token, "POST", "/v1/users", s);
		free(s);
		json_decref(o);
	} else if (!strcmp(cmd, "session") && sub && !strcmp(sub, "create")) {
		snprintf(body, sizeof body, "{\"surface\":\"%s\"}",
			 arg && !strcmp(arg, "voice") ? "voice" : "chat");
		rc = request(url, token, "POST", "/v1/sessions", body);
	} else if (!strcmp(cmd, "session") && sub && !strcmp(sub, "list")) {
		rc = request(url, token, "GET", "/v1/sessions", NULL);
	} else if (!strcmp(cmd, "session") && sub && arg && strlen(arg) < 64 && !strchr(arg, '/')) {
		if (!strcmp(sub, "get") || !strcmp(sub, "delete")) {
			snprintf(path, sizeof path, "/v1/sessions/%s", arg);
			rc = request(url, token, !strcmp(sub, "get") ? "GET" : "DELETE", path, NULL);
		} else if (!strcmp(sub, "sleep") || !strcmp(sub, "wake")) {
			snprintf(path, sizeof path, "/v1/sessions/%s/%s", arg, sub);
			rc = request(url, token, "POST", path, NULL);
		} else if (!strcmp(sub, "messages")) {
			snprintf(path, sizeof path, "/v1/sessions/%s/messages", arg);
			rc = request(url, token, "GET", path, NULL);
		} else {
			rc = usage();
		}
	} else {
		rc = usage();
	}
	curl_global_cleanup();
	return rc;
}
