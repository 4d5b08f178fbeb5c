/* SPDX-License-Identifier: Apache-2.0 */
/* WebSocket (RFC 6455), the server's side, without I/O: the handshake's
 * accept key, parsing client frames (masked) into message parts, and the
 * headers of server frames (unmasked). hsd's web console (web.c) relays
 * the payloads as a byte stream, so messages are not reassembled: their
 * parts come out as they arrive, the fragmentation rules checked. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
	WS_OP_CONTINUATION = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xa,
};

/* Close status codes hsd sends. */
enum {
	WS_CLOSE_NORMAL = 1000,
	WS_CLOSE_GOING_AWAY = 1001,
	WS_CLOSE_PROTOCOL = 1002,
	WS_CLOSE_TOO_BIG = 1009,
};

#define WS_ACCEPT_LEN 28    /* base64 of a SHA-1 */
#define WS_HEADER_MAX 10    /* a server frame's header: no mask */
#define WS_CONTROL_MAX 125  /* a control frame's payload */

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: -EINVAL unless the key is
 * the base64 of 16 bytes. */
int ws_accept_key(const char *key, char ret_accept[WS_ACCEPT_LEN + 1]);

/* Whether a Sec-WebSocket-Protocol header (a comma-separated list) offers
 * protocol; header may be NULL. */
bool ws_protocol_offered(const char *header, const char *protocol);

typedef struct WsFrame {
	bool fin;
	uint8_t opcode;
	uint8_t *payload; /* inside the parsed buffer, unmasked */
	size_t len;
} WsFrame;

/* One client frame at the start of buf[0..len): its payload is unmasked in
 * place. Returns the bytes it takes, 0 when it is not all there yet,
 * -EPROTO when it breaks the protocol (unmasked, reserved bits, unknown
 * opcode, a fragmented or long control frame, a length with its top bit
 * set), -EMSGSIZE when its payload exceeds max_payload. Nothing is changed
 * unless a frame is returned. */
ssize_t ws_frame_parse(uint8_t *buf, size_t len, size_t max_payload, WsFrame *ret);

/* What a parsed frame means, given the frames before it. */
typedef enum WsEventKind {
	WS_EV_DATA,  /* a part of a message: opcode (text or binary), payload, fin */
	WS_EV_PING,  /* answer with a pong of the same payload */
	WS_EV_PONG,
	WS_EV_CLOSE, /* code (1005: none given) */
} WsEventKind;

typedef struct WsEvent {
	WsEventKind kind;
	uint8_t opcode; /* of the message, for WS_EV_DATA */
	bool fin;       /* its last part */
	const uint8_t *payload;
	size_t len;
	unsigned code;
} WsEvent;

typedef struct WsReader {
	size_t max_message; /* bytes; 0: unlimited */
	bool in_message;
	uint8_t opcode;
	size_t message_len;
} WsReader;

/* -EPROTO: a continuation outside a message, a new message inside one, a
 * close frame with a 1-byte or invalid code; -EMSGSIZE: the message grew
 * past max_message. */
int ws_reader_frame(WsReader *r, const WsFrame *f, WsEvent *ret);

/* A server frame's header for a payload of len bytes; returns its size. */
size_t ws_frame_header(uint8_t hdr[WS_HEADER_MAX], bool fin, uint8_t opcode, size_t len);

/* A whole close frame with a status code (4 bytes). */
size_t ws_close_frame(uint8_t out[4], unsigned code);
