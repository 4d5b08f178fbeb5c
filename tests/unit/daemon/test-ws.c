/* SPDX-License-Identifier: Apache-2.0 */
/* WebSocket framing (ws.c): the handshake's accept key, client frames
 * (masking, lengths, fragmentation, control frames, close codes, limits)
 * and server frame headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "ws.h"

/* A masked client frame of payload p[0..n) into out; returns its size. */
static size_t client_frame(uint8_t *out, uint8_t first, const void *p, size_t n)
{
	static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
	size_t pos = 0;
	out[pos++] = first;
	if (n < 126) {
		out[pos++] = (uint8_t)(0x80 | n);
	} else if (n <= 0xffff) {
		out[pos++] = 0x80 | 126;
		out[pos++] = (uint8_t)(n >> 8);
		out[pos++] = (uint8_t)n;
	} else {
		out[pos++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			out[pos++] = (uint8_t)((uint64_t)n >> (8 * i));
	}
	memcpy(out + pos, mask, 4);
	pos += 4;
	for (size_t i = 0; i < n; i++)
		out[pos + i] = ((const uint8_t *)p)[i] ^ mask[i & 3];
	return pos + n;
}

static void test_accept_key(void **state)
{
	char accept[WS_ACCEPT_LEN + 1];
	/* RFC 6455 1.3's example. */
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept), 0);
	assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(ws_accept_key("short==", accept), -EINVAL);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", accept), -EINVAL);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25j!!==", accept), -EINVAL);
	assert_int_equal(ws_accept_key(NULL, accept), -EINVAL);
}

static void test_protocol_offered(void **state)
{
	assert_true(ws_protocol_offered("binary", "binary"));
	assert_true(ws_protocol_offered("base64, binary", "binary"));
	assert_true(ws_protocol_offered(" Binary ,x", "binary"));
	assert_false(ws_protocol_offered("binaryx", "binary"));
	assert_false(ws_protocol_offered("", "binary"));
	assert_false(ws_protocol_offered(NULL, "binary"));
}

static void test_masked_lengths(void **state)
{
	static uint8_t payload[70000], buf[70016];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	const size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 70000};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = client_frame(buf, 0x80 | WS_OP_BINARY, payload, sizes[k]);
		WsFrame f;
		/* Every prefix is incomplete, and left untouched. */
		for (size_t cut = 0; cut < n; cut += (n > 300 ? 997 : 1))
			assert_int_equal(ws_frame_parse(buf, cut, 1 << 20, &f), 0);
		assert_int_equal(ws_frame_parse(buf, n, 1 << 20, &f), (ssize_t)n);
		assert_true(f.fin);
		assert_int_equal(f.opcode, WS_OP_BINARY);
		assert_int_equal(f.len, sizes[k]);
		assert_memory_equal(f.payload, payload, sizes[k] ? sizes[k] : 1);
	}
}

static void test_two_frames_in_one_buffer(void **state)
{
	uint8_t buf[64];
	size_t a = client_frame(buf, 0x80 | WS_OP_TEXT, "abc", 3);
	size_t b = client_frame(buf + a, 0x80 | WS_OP_BINARY, "de", 2);
	WsFrame f;
	assert_int_equal(ws_frame_parse(buf, a + b, 100, &f), (ssize_t)a);
	assert_memory_equal(f.payload, "abc", 3);
	assert_int_equal(ws_frame_parse(buf + a, b, 100, &f), (ssize_t)b);
	assert_memory_equal(f.payload, "de", 2);
}

static void test_protocol_errors(void **state)
{
	uint8_t buf[300];
	WsFrame f;
	/* unmasked */
	uint8_t unmasked[] = {0x82, 0x01, 'x'};
	assert_int_equal(ws_frame_parse(unmasked, sizeof(unmasked), 100, &f), -EPROTO);
	/* reserved bits */
	size_t n = client_frame(buf, 0xc0 | WS_OP_BINARY, "x", 1);
	assert_int_equal(ws_frame_parse(buf, n, 100, &f), -EPROTO);
	/* unknown opcodes */
	n = client_frame(buf, 0x80 | 0x3, "x", 1);
	assert_int_equal(ws_frame_parse(buf, n, 100, &f), -EPROTO);
	n = client_frame(buf, 0x80 | 0xb, "x", 1);
	assert_int_equal(ws_frame_parse(buf, n, 100, &f), -EPROTO);
	/* a fragmented control frame, a long one */
	n = client_frame(buf, WS_OP_PING, "x", 1);
	assert_int_equal(ws_frame_parse(buf, n, 100, &f), -EPROTO);
	static const uint8_t big[126];
	n = client_frame(buf, 0x80 | WS_OP_PING, big, sizeof(big));
	assert_int_equal(ws_frame_parse(buf, n, 1000, &f), -EPROTO);
	/* a 64-bit length with its top bit set */
	uint8_t huge[14] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(ws_frame_parse(huge, sizeof(huge), SIZE_MAX, &f), -EPROTO);
}

static void test_oversize(void **state)
{
	uint8_t buf[300];
	static const uint8_t p[200];
	WsFrame f;
	size_t n = client_frame(buf, 0x80 | WS_OP_BINARY, p, sizeof(p));
	assert_int_equal(ws_frame_parse(buf, n, 199, &f), -EMSGSIZE);
	/* Known from the header alone, before the payload arrives. */
	assert_int_equal(ws_frame_parse(buf, 4, 199, &f), -EMSGSIZE);
	assert_int_equal(ws_frame_parse(buf, n, 200, &f), (ssize_t)n);

	/* A message of fragments, each small, growing past the limit. */
	WsReader r = {.max_message = 5};
	WsEvent ev;
	uint8_t b[32];
	n = client_frame(b, WS_OP_BINARY, "abc", 3);
	assert_int_equal(ws_frame_parse(b, n, 100, &f), (ssize_t)n);
	assert_int_equal(ws_reader_frame(&r, &f, &ev), 0);
	n = client_frame(b, 0x80 | WS_OP_CONTINUATION, "def", 3);
	assert_int_equal(ws_frame_parse(b, n, 100, &f), (ssize_t)n);
	assert_int_equal(ws_reader_frame(&r, &f, &ev), -EMSGSIZE);
}

static WsEvent feed(WsReader *r, uint8_t first, const char *p, size_t n, int expect)
{
	uint8_t buf[256];
	WsFrame f;
	WsEvent ev = {0};
	size_t len = client_frame(buf, first, p, n);
	assert_int_equal(ws_frame_parse(buf, len, 200, &f), (ssize_t)len);
	assert_int_equal(ws_reader_frame(r, &f, &ev), expect);
	return ev;
}

static void test_fragmentation(void **state)
{
	WsReader r = {0};
	WsEvent ev = feed(&r, WS_OP_BINARY, "he", 2, 0);
	assert_int_equal(ev.kind, WS_EV_DATA);
	assert_int_equal(ev.opcode, WS_OP_BINARY);
	assert_false(ev.fin);
	/* A ping between the fragments is fine. */
	ev = feed(&r, 0x80 | WS_OP_PING, "p", 1, 0);
	assert_int_equal(ev.kind, WS_EV_PING);
	assert_memory_equal(ev.payload, "p", 1);
	ev = feed(&r, WS_OP_CONTINUATION, "ll", 2, 0);
	assert_int_equal(ev.opcode, WS_OP_BINARY);
	assert_false(ev.fin);
	/* A new message before this one ends is not. */
	WsReader copy = r;
	feed(&copy, 0x80 | WS_OP_TEXT, "x", 1, -EPROTO);
	ev = feed(&r, 0x80 | WS_OP_CONTINUATION, "o", 1, 0);
	assert_true(ev.fin);
	assert_int_equal(ev.opcode, WS_OP_BINARY);
	assert_int_equal(r.message_len, 5);
	/* A continuation with no message started. */
	feed(&r, 0x80 | WS_OP_CONTINUATION, "x", 1, -EPROTO);
	/* An unfragmented text message. */
	ev = feed(&r, 0x80 | WS_OP_TEXT, "hi", 2, 0);
	assert_int_equal(ev.opcode, WS_OP_TEXT);
	assert_true(ev.fin);
}

static void test_close(void **state)
{
	WsReader r = {0};
	WsEvent ev = feed(&r, 0x80 | WS_OP_CLOSE, "", 0, 0);
	assert_int_equal(ev.kind, WS_EV_CLOSE);
	assert_int_equal(ev.code, 1005);
	ev = feed(&r, 0x80 | WS_OP_CLOSE, "\x03\xe8" "bye", 5, 0);
	assert_int_equal(ev.code, 1000);
	feed(&r, 0x80 | WS_OP_CLOSE, "\x03", 1, -EPROTO);
	feed(&r, 0x80 | WS_OP_CLOSE, "\x03\xed", 2, -EPROTO); /* 1005: never sent */
	feed(&r, 0x80 | WS_OP_CLOSE, "\x00\x10", 2, -EPROTO);
	ev = feed(&r, 0x80 | WS_OP_CLOSE, "\x0f\xa0", 2, 0); /* 4000: private use */
	assert_int_equal(ev.code, 4000);
	ev = feed(&r, 0x80 | WS_OP_PONG, "", 0, 0);
	assert_int_equal(ev.kind, WS_EV_PONG);

	uint8_t out[4];
	assert_int_equal(ws_close_frame(out, WS_CLOSE_GOING_AWAY), 4);
	assert_memory_equal(out, "\x88\x02\x03\xe9", 4);
}

static void test_server_header(void **state)
{
	uint8_t h[WS_HEADER_MAX];
	assert_int_equal(ws_frame_header(h, true, WS_OP_BINARY, 5), 2);
	assert_memory_equal(h, "\x82\x05", 2);
	assert_int_equal(ws_frame_header(h, true, WS_OP_PONG, 0), 2);
	assert_memory_equal(h, "\x8a\x00", 2);
	assert_int_equal(ws_frame_header(h, false, WS_OP_TEXT, 126), 4);
	assert_memory_equal(h, "\x01\x7e\x00\x7e", 4);
	assert_int_equal(ws_frame_header(h, true, WS_OP_BINARY, 65535), 4);
	assert_memory_equal(h, "\x82\x7e\xff\xff", 4);
	assert_int_equal(ws_frame_header(h, true, WS_OP_BINARY, 65536), 10);
	assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_key),
		cmocka_unit_test(test_protocol_offered),
		cmocka_unit_test(test_masked_lengths),
		cmocka_unit_test(test_two_frames_in_one_buffer),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_fragmentation),
		cmocka_unit_test(test_close),
		cmocka_unit_test(test_server_header),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
