/* SPDX-License-Identifier: Apache-2.0 */
#include "fake-qmp-peer.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* A descriptor that came with the line starting at in[pos]. */
typedef struct PeerFd {
	size_t pos;
	int fd;
} PeerFd;

struct FakePeer {
	struct ev_loop *loop;
	int fd;
	ev_io io;
	char *in;
	size_t in_len, in_cap;
	bool eof;
	PeerFd *fds;
	size_t n_fds, fds_cap;
};

const char fake_peer_greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}";

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
	*(bool *)w->data = true;
}

bool test_run_until(struct ev_loop *loop, bool (*done)(void *arg), void *arg, double seconds)
{
	bool expired = false;
	ev_timer guard;

	ev_now_update(loop);
	ev_timer_init(&guard, on_guard, seconds, 0);
	guard.data = &expired;
	ev_timer_start(loop, &guard);
	while (!(done && done(arg)) && !expired)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &guard);
	return done && done(arg);
}

static void peer_push_fd(FakePeer *p, size_t pos, int fd)
{
	if (p->n_fds == p->fds_cap) {
		p->fds_cap = p->fds_cap * 2 + 8;
		p->fds = realloc(p->fds, p->fds_cap * sizeof(*p->fds));
		assert_non_null(p->fds);
	}
	p->fds[p->n_fds++] = (PeerFd){pos, fd};
}

/* Reads never go past the end of a line: peek for the next '\n', then take
 * the bytes up to it. Linux hands out a descriptor with the first byte of
 * the sendmsg() that carried it, and the client sends a descriptor with its
 * line's first byte, so every descriptor that arrives while a line is being
 * read belongs to that line (reading one byte at a time, as QEMU does, would
 * tell the same, but slowly). */
static void on_peer_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	FakePeer *p = w->data;
	char cbuf[CMSG_SPACE(sizeof(int) * 16)];

	if (p->in_cap - p->in_len < 65536) {
		p->in_cap = p->in_cap * 2 + 65536;
		p->in = realloc(p->in, p->in_cap);
		assert_non_null(p->in);
	}
	char *at = p->in + p->in_len;
	ssize_t n = recv(p->fd, at, p->in_cap - p->in_len, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		p->eof = true;
		ev_io_stop(loop, w);
		return;
	}
	char *nl = memchr(at, '\n', (size_t)n);
	struct iovec iov = {at, nl ? (size_t)(nl - at) + 1 : (size_t)n};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	n = recvmsg(p->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	assert_true(n > 0);
	if (mh.msg_flags & MSG_CTRUNC)
		fail_msg("too many descriptors in one message from the client");
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		/* The line these bytes belong to starts after the last '\n'. */
		const char *last = p->in_len ? memrchr(p->in, '\n', p->in_len) : NULL;
		size_t line = last ? (size_t)(last - p->in) + 1 : 0;
		size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			peer_push_fd(p, line, fd);
		}
	}
	p->in_len += (size_t)n;
}

FakePeer *fake_peer_new(struct ev_loop *loop, int *ret_client_fd)
{
	int sv[2];
	FakePeer *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	p->loop = loop;
	p->fd = sv[1];
	ev_io_init(&p->io, on_peer_readable, p->fd, EV_READ);
	p->io.data = p;
	ev_io_start(loop, &p->io);
	*ret_client_fd = sv[0];
	return p;
}

void fake_peer_close(FakePeer *p)
{
	ev_io_stop(p->loop, &p->io);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

FakePeer *fake_peer_free(FakePeer *p)
{
	if (!p)
		return NULL;
	fake_peer_close(p);
	for (size_t i = 0; i < p->n_fds; i++)
		close(p->fds[i].fd);
	free(p->fds);
	free(p->in);
	free(p);
	return NULL;
}

void fake_peer_shutdown_read(FakePeer *p)
{
	ev_io_stop(p->loop, &p->io);
	assert_int_equal(shutdown(p->fd, SHUT_RD), 0);
}

int fake_peer_send(FakePeer *p, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			/* Socket buffer full: let the client read. */
			ev_run(p->loop, EVRUN_NOWAIT);
			continue;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int fake_peer_send_line(FakePeer *p, const char *text)
{
	int r = fake_peer_send(p, text, strlen(text));
	return r < 0 ? r : fake_peer_send(p, "\r\n", 2);
}

int fake_peer_send_chunked(FakePeer *p, const char *text, size_t chunk)
{
	size_t len = strlen(text);

	for (size_t off = 0; off < len; off += chunk) {
		int r = fake_peer_send(p, text + off, len - off < chunk ? len - off : chunk);
		if (r < 0)
			return r;
		/* The client's fd is readable now, so this returns promptly. */
		ev_run(p->loop, EVRUN_ONCE);
	}
	return 0;
}

static bool has_line(void *arg)
{
	FakePeer *p = arg;
	return p->eof || (p->in_len > 0 && memchr(p->in, '\n', p->in_len));
}

json_t *fake_peer_recv_fds(FakePeer *p, int *fds, size_t max_fds, size_t *ret_n_fds)
{
	json_error_t jerr;
	size_t n_fds = 0;

	assert_true(test_run_until(p->loop, has_line, p, 2.0));
	char *nl = p->in ? memchr(p->in, '\n', p->in_len) : NULL;
	if (!nl)
		fail_msg("client closed the connection instead of sending a message");
	size_t len = (size_t)(nl - p->in) + 1;
	json_t *msg = json_loadb(p->in, len, 0, &jerr);
	if (!msg)
		fail_msg("client sent invalid JSON: %s: %.*s", jerr.text, (int)len, p->in);
	memmove(p->in, p->in + len, p->in_len - len);
	p->in_len -= len;

	/* This line's descriptors are the ones at position 0, in arrival order. */
	size_t keep = 0;
	for (size_t i = 0; i < p->n_fds; i++) {
		if (p->fds[i].pos >= len) {
			p->fds[keep] = p->fds[i];
			p->fds[keep++].pos -= len;
			continue;
		}
		assert_int_equal(p->fds[i].pos, 0);
		if (n_fds < max_fds)
			fds[n_fds] = p->fds[i].fd;
		else
			close(p->fds[i].fd);
		n_fds++;
	}
	p->n_fds = keep;
	if (ret_n_fds)
		*ret_n_fds = n_fds;
	return msg;
}

json_t *fake_peer_recv(FakePeer *p)
{
	return fake_peer_recv_fds(p, NULL, 0, NULL);
}

json_t *fake_peer_recv_fd(FakePeer *p, int *ret_fd)
{
	int fds[8];
	size_t n;
	json_t *msg = fake_peer_recv_fds(p, fds, (sizeof(fds) / sizeof(fds[0])), &n);

	if (n > 1) {
		for (size_t i = 0; i < n && i < (sizeof(fds) / sizeof(fds[0])); i++)
			close(fds[i]);
		fail_msg("%zu descriptors came with one message, expected at most one", n);
	}
	if (ret_fd)
		*ret_fd = n ? fds[0] : -1;
	else if (n)
		close(fds[0]);
	return msg;
}

char *fake_peer_expect(FakePeer *p, const char *execute)
{
	json_t *msg = fake_peer_recv(p);
	const char *name = json_string_value(json_object_get(msg, "execute"));
	const char *id = json_string_value(json_object_get(msg, "id"));

	assert_non_null(name);
	assert_string_equal(name, execute);
	assert_non_null(id);
	char *ret = strdup(id);
	json_decref(msg);
	return ret;
}

static bool has_input(void *arg)
{
	FakePeer *p = arg;
	return p->in_len > 0;
}

bool fake_peer_has_input(FakePeer *p, double seconds)
{
	return test_run_until(p->loop, has_input, p, seconds);
}

void fake_peer_handshake(FakePeer *p)
{
	assert_int_equal(fake_peer_send_line(p, fake_peer_greeting), 0);
	char *id = fake_peer_expect(p, "qmp_capabilities");
	char *reply = NULL;
	assert_true(asprintf(&reply, "{\"return\": {}, \"id\": \"%s\"}", id) > 0);
	assert_int_equal(fake_peer_send_line(p, reply), 0);
	free(reply);
	free(id);
}

json_int_t fake_peer_expect_agent_sync(FakePeer *p)
{
	assert_true(test_run_until(p->loop, has_input, p, 2.0));
	assert_int_equal((unsigned char)p->in[0], 0xff);
	assert_int_equal(p->n_fds, 0);
	memmove(p->in, p->in + 1, --p->in_len);
	json_t *msg = fake_peer_recv(p);
	assert_string_equal(json_string_value(json_object_get(msg, "execute")),
			    "guest-sync-delimited");
	assert_null(json_object_get(msg, "id"));
	json_t *id = json_object_get(json_object_get(msg, "arguments"), "id");
	assert_true(json_is_integer(id));
	json_int_t ret = json_integer_value(id);
	json_decref(msg);
	return ret;
}

void fake_peer_agent_sync(FakePeer *p)
{
	char *reply = NULL;
	json_int_t id = fake_peer_expect_agent_sync(p);
	assert_true(asprintf(&reply, "\xff{\"return\": %" JSON_INTEGER_FORMAT "}\n", id) > 0);
	assert_int_equal(fake_peer_send(p, reply, strlen(reply)), 0);
	free(reply);
}

static bool eof_seen(void *arg)
{
	return ((FakePeer *)arg)->eof;
}

bool fake_peer_got_eof(FakePeer *p)
{
	return test_run_until(p->loop, eof_seen, p, 2.0);
}
