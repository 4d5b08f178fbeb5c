/* SPDX-License-Identifier: Apache-2.0 */
#include "ws.h"

#include <errno.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <string.h>
#include <strings.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int ws_accept_key(const char *key, char ret_accept[WS_ACCEPT_LEN + 1])
{
	/* 16 bytes in base64: 22 characters and "==". */
	if (!key || strlen(key) != 24 || strcmp(key + 22, "=="))
		return -EINVAL;
	struct base64_decode_ctx dctx;
	uint8_t raw[BASE64_DECODE_LENGTH(24)];
	size_t n = sizeof(raw);
	base64_decode_init(&dctx);
	if (!base64_decode_update(&dctx, &n, raw, 24, key) || !base64_decode_final(&dctx) ||
	    n != 16)
		return -EINVAL;

	struct sha1_ctx ctx;
	uint8_t digest[SHA1_DIGEST_SIZE];
	sha1_init(&ctx);
	sha1_update(&ctx, 24, (const uint8_t *)key);
	sha1_update(&ctx, sizeof(ws_guid) - 1, (const uint8_t *)ws_guid);
	sha1_digest(&ctx, sizeof(digest), digest);
	base64_encode_raw(ret_accept, sizeof(digest), digest);
	ret_accept[WS_ACCEPT_LEN] = '\0';
	return 0;
}

bool ws_protocol_offered(const char *header, const char *protocol)
{
	size_t plen = strlen(protocol);
	for (const char *p = header; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, " \t,");
		if (n == plen && !strncasecmp(p, protocol, n))
			return true;
		p += n;
	}
	return false;
}

ssize_t ws_frame_parse(uint8_t *buf, size_t len, size_t max_payload, WsFrame *ret)
{
	if (len < 2)
		return 0;
	bool fin = buf[0] & 0x80;
	uint8_t opcode = buf[0] & 0x0f;
	if (buf[0] & 0x70)
		return -EPROTO; /* no extension was negotiated */
	switch (opcode) {
	case WS_OP_CONTINUATION:
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		break;
	case WS_OP_CLOSE:
	case WS_OP_PING:
	case WS_OP_PONG:
		if (!fin || (buf[1] & 0x7f) > WS_CONTROL_MAX)
			return -EPROTO;
		break;
	default:
		return -EPROTO;
	}
	if (!(buf[1] & 0x80))
		return -EPROTO; /* a client masks every frame */
	uint64_t plen = buf[1] & 0x7f;
	size_t pos = 2;
	if (plen == 126) {
		if (len < 4)
			return 0;
		plen = (uint64_t)buf[2] << 8 | buf[3];
		pos = 4;
	} else if (plen == 127) {
		if (len < 10)
			return 0;
		plen = 0;
		for (size_t i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
		if (plen >> 63)
			return -EPROTO;
		pos = 10;
	}
	if (plen > max_payload)
		return -EMSGSIZE;
	if (len < pos + 4 || len - pos - 4 < plen)
		return 0;
	const uint8_t *mask = buf + pos;
	uint8_t *payload = buf + pos + 4;
	for (size_t i = 0; i < plen; i++)
		payload[i] ^= mask[i & 3];
	*ret = (WsFrame){.fin = fin, .opcode = opcode, .payload = payload, .len = (size_t)plen};
	return (ssize_t)(pos + 4 + plen);
}

static bool close_code_valid(unsigned code)
{
	/* RFC 6455 7.4: the codes an endpoint may send. */
	if (code >= 3000 && code <= 4999)
		return true;
	return code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006;
}

int ws_reader_frame(WsReader *r, const WsFrame *f, WsEvent *ret)
{
	WsEvent ev = {.payload = f->payload, .len = f->len, .fin = f->fin};
	switch (f->opcode) {
	case WS_OP_PING:
		ev.kind = WS_EV_PING;
		break;
	case WS_OP_PONG:
		ev.kind = WS_EV_PONG;
		break;
	case WS_OP_CLOSE:
		ev.kind = WS_EV_CLOSE;
		ev.code = 1005;
		if (f->len == 1)
			return -EPROTO;
		if (f->len >= 2) {
			ev.code = (unsigned)f->payload[0] << 8 | f->payload[1];
			if (!close_code_valid(ev.code))
				return -EPROTO;
		}
		break;
	case WS_OP_CONTINUATION:
		if (!r->in_message)
			return -EPROTO;
		ev.kind = WS_EV_DATA;
		ev.opcode = r->opcode;
		break;
	default: /* text or binary: a new message */
		if (r->in_message)
			return -EPROTO;
		ev.kind = WS_EV_DATA;
		ev.opcode = f->opcode;
		r->opcode = f->opcode;
		r->message_len = 0;
		break;
	}
	if (ev.kind == WS_EV_DATA) {
		if (r->max_message && f->len > r->max_message - r->message_len)
			return -EMSGSIZE;
		r->message_len += f->len;
		r->in_message = !f->fin;
	}
	*ret = ev;
	return 0;
}

size_t ws_frame_header(uint8_t hdr[WS_HEADER_MAX], bool fin, uint8_t opcode, size_t len)
{
	hdr[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		hdr[1] = (uint8_t)len;
		return 2;
	}
	if (len <= 0xffff) {
		hdr[1] = 126;
		hdr[2] = (uint8_t)(len >> 8);
		hdr[3] = (uint8_t)len;
		return 4;
	}
	hdr[1] = 127;
	uint64_t l = len;
	for (int i = 7; i >= 0; i--) {
		hdr[2 + i] = (uint8_t)l;
		l >>= 8;
	}
	return 10;
}

size_t ws_close_frame(uint8_t out[4], unsigned code)
{
	out[0] = 0x80 | WS_OP_CLOSE;
	out[1] = 2;
	out[2] = (uint8_t)(code >> 8);
	out[3] = (uint8_t)code;
	return 4;
}
