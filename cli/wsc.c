/* wsc.c — see wsc.h. */
#include "wsc.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read more bytes into w->buf; 0 on EOF, -1 on error. */
static int fill(struct wsc *w)
{
	if (w->cap - w->len < 65536) {
		size_t nc = w->cap ? w->cap * 2 : 131072;
		if (nc > WSC_MAX_MESSAGE + 65536)
			return -1;
		unsigned char *nb = realloc(w->buf, nc);
		if (!nb)
			return -1;
		w->buf = nb;
		w->cap = nc;
	}
	ssize_t n;
	do
		n = recv(w->fd, w->buf + w->len, w->cap - w->len, 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n == 0 ? 0 : -1;
	w->len += (size_t)n;
	return 1;
}


int wsc_connect(struct wsc *w, const char *base, const char *path, const char *token, char *err, size_t ecap)
{
	memset(w, 0, sizeof *w);
	w->fd = -1;
	char host[256], port[16] = "80";
	if (strncmp(base, "http://", 7)) {
		snprintf(err, ecap, "only http:// URLs are supported for WebSockets (got %.200s)", base);
		return -1;
	}
	const char *h = base + 7, *end = h + strcspn(h, "/"), *colon = memchr(h, ':', (size_t)(end - h));
	size_t hl = (size_t)((colon ? colon : end) - h);
	if (!hl || hl >= sizeof host || (colon && (size_t)(end - colon - 1) >= sizeof port)) {
		snprintf(err, ecap, "bad URL %.200s", base);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (colon) {
		memcpy(port, colon + 1, (size_t)(end - colon - 1));
		port[end - colon - 1] = '\0';
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g) {
		snprintf(err, ecap, "%s: %s", host, gai_strerror(g));
		return -1;
	}
	for (struct addrinfo *a = ai; a && w->fd < 0; a = a->ai_next) {
		w->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (w->fd >= 0 && connect(w->fd, a->ai_addr, a->ai_addrlen) < 0) {
			close(w->fd);
			w->fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (w->fd < 0) {
		snprintf(err, ecap, "connect %s:%s: %s", host, port, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	unsigned char nonce[16];
	char key[32], req[2048];
	if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce)
		memset(nonce, 7, sizeof nonce);
	sodium_bin2base64(key, sizeof key, nonce, sizeof nonce, sodium_base64_VARIANT_ORIGINAL);
	int n = snprintf(req, sizeof req,
			 "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
			 path, host, port, key, token ? token : "");
	if (n < 0 || (size_t)n >= sizeof req || write_all(w->fd, req, (size_t)n) < 0) {
		snprintf(err, ecap, "cannot send the upgrade request");
		return -1;
	}
	/* The reply head, then whatever follows it stays in buf. */
	for (;;) {
		unsigned char *e = w->len >= 4 ? memmem(w->buf, w->len, "\r\n\r\n", 4) : NULL;
		if (e) {
			size_t head = (size_t)(e - w->buf) + 4;
			if (w->len < 12 || memcmp(w->buf + 9, "101", 3)) {
				/* A refusal: the body (JSON) says why; read a little of it. */
				while (w->len - head < 512 && fill(w) > 0)
					;
				snprintf(err, ecap, "%.12s %.*s", w->buf + 9, (int)(w->len - head < 600 ? w->len - head : 600),
					 w->buf + head);
				return -1;
			}
			memmove(w->buf, w->buf + head, w->len - head);
			w->len -= head;
			return 0;
		}
		if (w->len > 16384 || fill(w) <= 0) {
			snprintf(err, ecap, "no WebSocket upgrade from %s", base);
			return -1;
		}
	}
}

static int send_frame(struct wsc *w, int opcode, const void *data, size_t len)
{
	unsigned char hdr[14];
	size_t h = 0;
	hdr[h++] = (unsigned char)(0x80 | opcode);
	if (len < 126) {
		hdr[h++] = (unsigned char)(0x80 | len);
	} else if (len < 65536) {
		hdr[h++] = 0x80 | 126;
		hdr[h++] = (unsigned char)(len >> 8);
		hdr[h++] = (unsigned char)len;
	} else {
		hdr[h++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			hdr[h++] = (unsigned char)((uint64_t)len >> (8 * i));
	}
	unsigned char mask[4];
	if (getrandom(mask, 4, 0) != 4)
		memset(mask, 0x5a, 4);
	memcpy(hdr + h, mask, 4);
	h += 4;
	unsigned char *m = malloc(len ? len : 1);
	if (!m)
		return -1;
	for (size_t i = 0; i < len; i++)
		m[i] = ((const unsigned char *)data)[i] ^ mask[i & 3];
	int rc = write_all(w->fd, hdr, h) < 0 || write_all(w->fd, m, len) < 0 ? -1 : 0;
	free(m);
	return rc;
}

int wsc_send_text(struct wsc *w, const char *data, size_t len)
{
	return send_frame(w, 1, data, len);
}

/* A whole frame at the start of buf: its header and payload sizes, or 0. */
static int frame_at(const struct wsc *w, size_t *hlen, uint64_t *plen)
{
	if (w->len < 2)
		return 0;
	const unsigned char *b = w->buf;
	size_t h = 2;
	uint64_t n = b[1] & 0x7f;
	if (n == 126) {
		if (w->len < 4)
			return 0;
		n = (uint64_t)b[2] << 8 | b[3];
		h = 4;
	} else if (n == 127) {
		if (w->len < 10)
			return 0;
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | b[2 + i];
		h = 10;
	}
	if (b[1] & 0x80)
		h += 4; /* a server must not mask, but tolerate it */
	*hlen = h;
	*plen = n;
	return w->len >= h && w->len - h >= n;
}

int wsc_pending(const struct wsc *w)
{
	size_t h;
	uint64_t n;
	return frame_at(w, &h, &n);
}

int wsc_recv(struct wsc *w, char **out, size_t *len)
{
	for (;;) {
		size_t h;
		uint64_t n;
		while (!frame_at(w, &h, &n)) {
			if (w->len >= 10 && frame_at(w, &h, &n) == 0 && n > WSC_MAX_MESSAGE)
				return -1;
			int r = fill(w);
			if (r <= 0)
				return r;
		}
		unsigned char *b = w->buf, op = b[0] & 0x0f, fin = b[0] & 0x80;
		unsigned char *p = b + h;
		if (b[1] & 0x80)
			for (uint64_t i = 0; i < n; i++)
				p[i] ^= b[h - 4 + (i & 3)];
		int ret = -2; /* -2: go on */
		if (op == 8) {
			ret = 0;
		} else if (op == 9) {
			if (send_frame(w, 10, p, (size_t)n) < 0)
				ret = -1;
		} else if (op == 1 || op == 2 || op == 0) {
			if (w->msg_len + n > WSC_MAX_MESSAGE) {
				ret = -1;
			} else {
				char *nm = realloc(w->msg, w->msg_len + n + 1);
				if (!nm) {
					ret = -1;
				} else {
					memcpy(nm + w->msg_len, p, (size_t)n);
					w->msg = nm;
					w->msg_len += n;
					w->msg[w->msg_len] = '\0';
					if (fin) {
						*out = w->msg;
						*len = w->msg_len;
						w->msg = NULL;
						w->msg_len = 0;
						ret = 1;
					}
				}
			}
		}
		size_t used = h + (size_t)n;
		memmove(w->buf, w->buf + used, w->len - used);
		w->len -= used;
		if (ret != -2)
			return ret;
	}
}

void wsc_close(struct wsc *w)
{
	if (w->fd >= 0) {
		(void)send_frame(w, 8, "\x03\xe8", 2);
		close(w->fd);
	}
	free(w->buf);
	free(w->msg);
	memset(w, 0, sizeof *w);
	w->fd = -1;
}
