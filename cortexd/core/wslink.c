/* wslink.c — see wslink.h. */
#include "wslink.h"

#include <libwebsockets.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"; /* RFC 6455 §1.3 */

void wsl_new_key(char key_b64[25])
{
	uint8_t raw[16];
	randombytes_buf(raw, sizeof raw);
	sodium_bin2base64(key_b64, 25, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
}

int wsl_request(char *buf, size_t cap, const char *protocol, const char *key_b64)
{
	int n = snprintf(buf, cap,
			 "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
			 key_b64, protocol);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* The value of header name (case-insensitive) in head, trimmed: 0 found. */
static int header(const char *head, size_t len, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = head, *end = head + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		if ((size_t)(eol - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
			const char *v = p + nl + 1, *e = eol;
			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - v) >= cap)
				return -1;
			memcpy(out, v, (size_t)(e - v));
			out[e - v] = '\0';
			return 0;
		}
		p = eol + 1;
	}
	return -1;
}

int wsl_check_reply(const char *head, size_t len, const char *key_b64, const char **why)
{
	char v[128], want[64];
	if (len < 12 || memcmp(head, "HTTP/1.1 101", 12)) {
		*why = "not a 101 Switching Protocols reply";
		return -1;
	}
	if (header(head, len, "upgrade", v, sizeof v) < 0 || strcasecmp(v, "websocket")) {
		*why = "no Upgrade: websocket";
		return -1;
	}
	char src[64];
	uint8_t sha[20];
	snprintf(src, sizeof src, "%s%s", key_b64, GUID);
	lws_SHA1((const unsigned char *)src, strlen(src), sha);
	sodium_bin2base64(want, sizeof want, sha, sizeof sha, sodium_base64_VARIANT_ORIGINAL);
	if (header(head, len, "sec-websocket-accept", v, sizeof v) < 0 || strcmp(v, want)) {
		*why = "a wrong Sec-WebSocket-Accept";
		return -1;
	}
	return 0;
}

size_t wsl_header(uint8_t hdr[14], uint8_t opcode, uint64_t len, const uint8_t mask[4])
{
	size_t n = 2;
	hdr[0] = (uint8_t)(0x80 | (opcode & 0x0f));
	if (len < 126) {
		hdr[1] = (uint8_t)(0x80 | len);
	} else if (len < 65536) {
		hdr[1] = 0x80 | 126;
		hdr[2] = (uint8_t)(len >> 8);
		hdr[3] = (uint8_t)len;
		n = 4;
	} else {
		hdr[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			hdr[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	memcpy(hdr + n, mask, 4);
	return n + 4;
}

void wsl_mask(uint8_t *p, size_t n, const uint8_t mask[4])
{
	for (size_t i = 0; i < n; i++)
		p[i] ^= mask[i & 3];
}

/* Bytes of header a frame needs, once its first two are in. */
static unsigned head_len(const uint8_t *h)
{
	unsigned l7 = h[1] & 0x7f;
	return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* The header in rx->hdr is complete: check it and start the payload. */
static int start_frame(struct wsl_rx *rx, const char **why)
{
	const uint8_t *h = rx->hdr;
	uint8_t op = h[0] & 0x0f;
	if (h[0] & 0x70) {
		*why = "RSV bits set (no extension was negotiated)";
		return -1;
	}
	if (h[1] & 0x80) {
		*why = "a masked frame from the server";
		return -1;
	}
	uint64_t len = h[1] & 0x7f;
	if (len == 126) {
		len = ((uint64_t)h[2] << 8) | h[3];
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = (len << 8) | h[2 + i];
		if (len >> 63) {
			*why = "a 64-bit length with the top bit set";
			return -1;
		}
	}
	if (op >= 8) {
		if (op != 8 && op != 9 && op != 10) {
			*why = "an unknown control opcode";
			return -1;
		}
		if (!(h[0] & 0x80) || len > 125) {
			*why = "a fragmented or oversized control frame";
			return -1;
		}
		rx->ctl_have = 0;
	} else if (op > 2) {
		*why = "an unknown data opcode";
		return -1;
	}
	rx->opcode = op;
	rx->left = len;
	rx->in_frame = 1;
	return 0;
}

static int end_control(struct wsl_rx *rx, wsl_deliver cb, void *arg)
{
	rx->in_frame = 0;
	if (rx->opcode == 8)
		return cb(arg, WSL_CLOSE, rx->ctl, rx->ctl_have);
	if (rx->opcode == 9)
		return cb(arg, WSL_PING, rx->ctl, rx->ctl_have);
	return 0; /* pong */
}

int wsl_feed(struct wsl_rx *rx, const uint8_t *p, size_t n, wsl_deliver cb, void *arg, const char **why)
{
	const uint8_t *end = p + n;
	while (p < end) {
		if (!rx->in_frame) {
			/* gather the header: 2 bytes say how long it is */
			while (p < end && (rx->hdr_have < 2 || rx->hdr_have < head_len(rx->hdr)))
				rx->hdr[rx->hdr_have++] = *p++;
			if (rx->hdr_have < 2 || rx->hdr_have < head_len(rx->hdr))
				return 0;
			rx->hdr_have = 0;
			if (start_frame(rx, why) < 0)
				return -1;
			if (rx->opcode >= 8 && rx->left == 0) {
				int rc = end_control(rx, cb, arg);
				if (rc)
					return rc;
				continue;
			}
			if (rx->left == 0) {
				rx->in_frame = 0; /* an empty data frame */
				continue;
			}
		}
		size_t take = (size_t)(end - p) < rx->left ? (size_t)(end - p) : (size_t)rx->left;
		if (rx->opcode >= 8) {
			memcpy(rx->ctl + rx->ctl_have, p, take);
			rx->ctl_have += (unsigned)take;
		} else {
			int rc = cb(arg, WSL_DATA, p, take);
			if (rc)
				return rc;
		}
		p += take;
		rx->left -= take;
		if (rx->left == 0) {
			if (rx->opcode >= 8) {
				int rc = end_control(rx, cb, arg);
				if (rc)
					return rc;
			} else {
				rx->in_frame = 0;
			}
		}
	}
	return 0;
}
