/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP layer (http.c over libmicrohttpd) fed arbitrary request bytes.
 * One server listens on a UNIX socket for the whole process; each input is
 * written by a fresh client connection, the loop runs without blocking for a
 * bounded number of iterations, the answer is read and discarded, the client
 * closes, and the run ends once every connection is gone again.
 *
 * The handler answers by path, so the fuzzer reaches every kind of reply:
 *   /defer...    deferred, answered a few loop iterations later (or at the
 *                end of the run, after the client has left);
 *   /defer-now   deferred and answered at once from inside the handler;
 *   /stream...   a chunked stream that sleeps between chunks; "endless"
 *                anywhere in the path: it never ends by itself;
 *   /upgrade...  101 and the raw connection, which echoes until the run ends;
 *   /error, /hserror?code=N, /twice (two replies), /none (no reply);
 *   anything else: the request echoed as JSON. */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "http.h"

#define MAX_ITERATIONS 200
#define DRAIN_ITERATIONS 200

typedef struct Deferred {
	HttpRequest *req;
	struct Deferred *next;
} Deferred;

typedef struct Stream {
	struct Stream *next, **prev;
	HttpStream *st;
	unsigned chunks; /* left to send */
	bool endless, nap, end;
} Stream;

typedef struct Upgraded {
	struct Upgraded *next;
	HttpUpgrade *u;
	int fd;
} Upgraded;

static struct ev_loop *loop;
static HttpServer *srv;
static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static Deferred *deferred;
static Stream *streams;
static Upgraded *upgraded;

static void answer_deferred(void)
{
	while (deferred) {
		Deferred *d = deferred;
		deferred = d->next;
		http_reply_json(d->req, 200, json_pack("{s:s}", "deferred", "done"));
		free(d);
	}
}

static void on_abort(HttpRequest *r, void *ud)
{
	/* Only from http_server_free, at exit, when nothing is deferred. */
}

static ssize_t stream_read(void *ud, char *buf, size_t max)
{
	Stream *s = ud;
	if (s->end)
		return -1;
	if (s->nap) {
		s->nap = false;
		return 0; /* sleep until woken */
	}
	if (s->chunks == 0)
		return s->endless ? 0 : -1;
	s->chunks--;
	s->nap = true;
	int n = snprintf(buf, max, "{\"event\":\"tick\",\"left\":%u}\n", s->chunks);
	return n < 0 ? -1 : (size_t)n >= max ? (ssize_t)max : n;
}

static void stream_done(void *ud)
{
	Stream *s = ud;
	*s->prev = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s);
}

static const HttpStreamOps stream_ops = {.read = stream_read, .done = stream_done};

static void on_upgraded(HttpUpgrade *u, int fd, const char *extra, size_t extra_len, void *ud)
{
	Upgraded *up = ud;
	up->u = u;
	up->fd = fd;
	up->next = upgraded;
	upgraded = up;
	if (extra_len > 0)
		fuzz_send_some(fd, extra, extra_len);
}

static void echo_upgraded(void)
{
	char buf[4096];
	for (Upgraded *up = upgraded; up; up = up->next) {
		ssize_t n = recv(up->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			fuzz_send_some(up->fd, buf, (size_t)n);
	}
}

static void close_upgraded(void)
{
	while (upgraded) {
		Upgraded *up = upgraded;
		upgraded = up->next;
		http_upgrade_close(up->u);
		free(up);
	}
}

static json_t *echo_json(HttpRequest *r)
{
	size_t len;
	const char *body = http_request_body(r, &len);
	const HttpPeer *p = http_request_peer(r);
	/* Fails (NULL) on bytes that are not UTF-8: http.c then answers 500. */
	return json_pack("{s:s, s:s, s:s?, s:s?, s:s%, s:{s:b, s:I}}", "method",
			 http_request_method(r), "path", http_request_path(r), "q",
			 http_request_query(r, "q"), "content_type",
			 http_request_header(r, "Content-Type"), "body", body, len, "peer", "known",
			 p->known, "uid", (json_int_t)p->uid);
}

static void handler(HttpRequest *r, void *ud)
{
	const char *path = http_request_path(r);

	if (!strcmp(path, "/defer-now")) {
		http_defer(r);
		http_reply_json(r, 202, json_pack("{s:b}", "now", 1));
	} else if (hs_str_has_prefix(path, "/defer")) {
		Deferred *d = calloc(1, sizeof(*d));
		if (!d) {
			http_reply_error(r, 500, "internal", "out of memory");
			return;
		}
		http_defer(r);
		http_request_on_abort(r, on_abort, d);
		d->req = r;
		d->next = deferred;
		deferred = d;
	} else if (hs_str_has_prefix(path, "/stream")) {
		Stream *s = calloc(1, sizeof(*s));
		if (!s) {
			http_reply_error(r, 500, "internal", "out of memory");
			return;
		}
		s->chunks = (unsigned)strlen(path) % 4;
		s->endless = strstr(path, "endless") != NULL;
		s->st = http_reply_stream(r, "application/x-ndjson", &stream_ops, s);
		if (!s->st) {
			free(s);
			return;
		}
		s->next = streams;
		if (s->next)
			s->next->prev = &s->next;
		s->prev = &streams;
		streams = s;
	} else if (hs_str_has_prefix(path, "/upgrade")) {
		Upgraded *up = calloc(1, sizeof(*up));
		if (!up) {
			http_reply_error(r, 500, "internal", "out of memory");
			return;
		}
		up->fd = -1;
		const char *proto = http_request_query(r, "proto");
		http_reply_upgrade(r, proto && *proto ? proto : "hsd-console", on_upgraded, up,
				   free);
	} else if (!strcmp(path, "/error")) {
		http_reply_error(r, 404, "not-found", "nothing at %s (%s)", path,
				 http_request_method(r));
	} else if (!strcmp(path, "/hserror")) {
		const char *code = http_request_query(r, "code");
		HsError err;
		hs_error_set(&err, -(code ? atoi(code) : 0), "test-error", "code %s",
			     code ? code : "(none)");
		http_reply_hserror(r, &err);
	} else if (!strcmp(path, "/twice")) {
		http_reply_json(r, 200, echo_json(r));
		http_reply_error(r, 500, "twice", "a second reply");
	} else if (!strcmp(path, "/none")) {
		/* no reply: http.c answers 500 itself */
	} else {
		http_reply_json(r, 200, echo_json(r));
	}
}

static void at_exit(void)
{
	answer_deferred();
	srv = http_server_free(srv);
	ev_loop_destroy(loop);
	loop = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fuzz_tmpdir("fuzz-http");
	if ((size_t)snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/hsd.sock", dir) >=
	    sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		fuzz_die("socket path");
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0)
		fuzz_die("listening socket");
	loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
	if (!loop)
		fuzz_die("ev_loop_new");
	HttpOptions opts = {.max_body = 8192, .max_connections = 8, .idle_timeout = 5};
	HsError err;
	srv = http_server_new(loop, fd, &opts, handler, NULL, &err);
	if (!srv) {
		fprintf(stderr, "fuzz-http: %s\n", err.message);
		exit(2);
	}
	atexit(at_exit);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fuzz_die("socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		fuzz_die("connect");

	size_t off = 0;
	unsigned idle = 0;
	for (unsigned it = 0; it < MAX_ITERATIONS; it++) {
		bool progress = false, eof = false;
		if (off < size) {
			ssize_t w = fuzz_send_some(fd, data + off, size - off);
			if (w < 0)
				off = size; /* the server closed the connection */
			else
				off += (size_t)w;
			progress = w != 0;
		}
		if (fuzz_drain(fd, &eof) > 0)
			progress = true;
		if (eof)
			break;
		echo_upgraded();
		if (it % 3 == 2 && deferred) {
			answer_deferred();
			progress = true;
		}
		for (Stream *s = streams; s; s = s->next)
			http_stream_wake(s->st);
		ev_run(loop, EVRUN_NOWAIT);
		idle = progress ? 0 : idle + 1;
		if (off == size && idle > 5)
			break;
	}
	close(fd);

	/* The client is gone: finish whatever is still open, then every
	 * connection must go within a bounded number of iterations. */
	for (unsigned it = 0; it < DRAIN_ITERATIONS; it++) {
		answer_deferred();
		for (Stream *s = streams; s; s = s->next) {
			s->end = true;
			http_stream_wake(s->st);
		}
		close_upgraded();
		ev_run(loop, EVRUN_NOWAIT);
		if (!deferred && !streams && !upgraded && http_server_connections(srv) == 0)
			return 0;
	}
	fprintf(stderr,
		"fuzz-http: after the client left: %u connections, deferred %s, "
		"streams %s\n",
		http_server_connections(srv), deferred ? "left" : "none",
		streams ? "left" : "none");
	abort();
}
