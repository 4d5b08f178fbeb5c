/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1.1 layer: libmicrohttpd driven from the libev loop through its
 * epoll fd. Handlers answer at once, later (deferred: the connection is
 * suspended meanwhile), as an endless stream (events), or by taking the
 * connection over after an Upgrade (console). The peer's credentials come
 * from SO_PEERCRED. */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "hs-util.h"

typedef struct HttpServer HttpServer;

#define HTTP_PEER_MAX_GROUPS 64

typedef struct HttpPeer {
	bool known;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	/* Supplementary groups at connect time (SO_PEERGROUPS). */
	gid_t groups[HTTP_PEER_MAX_GROUPS];
	unsigned n_groups;
} HttpPeer;

bool http_peer_in_group(const HttpPeer *p, gid_t gid);

typedef struct HttpRequest HttpRequest;

typedef struct HttpOptions {
	size_t max_body;          /* bytes; 0: 1 MiB */
	unsigned max_connections; /* 0: 1024 */
	unsigned idle_timeout;    /* seconds; 0: 30 */
	/* Called for every answered request, as its answer is queued: status,
	 * and the error code when the answer is an error ("" otherwise). */
	void (*answered)(HttpRequest *r, unsigned status, const char *error_code, void *ud);
	void *answered_ud;
} HttpOptions;

/* Called once per request, when its whole body has arrived. The handler
 * must call exactly one of the http_reply_* / http_defer functions. */
typedef void (*HttpHandler)(HttpRequest *req, void *userdata);

/* listen_fd: a listening stream socket, taken. */
HttpServer *http_server_new(struct ev_loop *loop, int listen_fd, const HttpOptions *opts,
			    HttpHandler handler, void *userdata, HsError *err);
HttpServer *http_server_free(HttpServer *s);
unsigned http_server_connections(const HttpServer *s);

const char *http_request_method(const HttpRequest *r);
const char *http_request_path(const HttpRequest *r);
const char *http_request_query(const HttpRequest *r, const char *key);
const char *http_request_header(const HttpRequest *r, const char *name);
const char *http_request_body(const HttpRequest *r, size_t *ret_len);
const HttpPeer *http_request_peer(const HttpRequest *r);

/* Replies. json is stolen. May be called from inside the handler or, after
 * http_defer, at any later time from the loop. */
void http_reply_json(HttpRequest *r, unsigned status, json_t *json);
void http_reply_error(HttpRequest *r, unsigned status, const char *code, const char *fmt, ...)
	_printf_(4, 5);
void http_reply_hserror(HttpRequest *r, const HsError *err);
/* A text body (taken: malloc'd, freed by the server). */
void http_reply_text(HttpRequest *r, unsigned status, const char *content_type, char *body,
		     size_t len);
/* One more header on the reply just given (before it is sent: right after
 * an http_reply_* call, in the same turn of the loop). */
void http_reply_header(HttpRequest *r, const char *name, const char *value);
/* The reply comes later; until then the connection is suspended. */
void http_defer(HttpRequest *r);
/* Called when a deferred request can no longer be answered (server going
 * away). Optional. */
void http_request_on_abort(HttpRequest *r, void (*cb)(HttpRequest *r, void *ud), void *ud);

/* A chunked stream of bytes. read() copies up to max bytes into buf and
 * returns their count; 0 when nothing is ready now (the connection sleeps
 * until http_stream_wake); -1 to end the stream. done() is called once the
 * connection is finished with, for any reason: after it, the stream handle
 * is invalid. */
typedef struct HttpStream HttpStream;
typedef struct HttpStreamOps {
	ssize_t (*read)(void *ud, char *buf, size_t max);
	void (*done)(void *ud);
} HttpStreamOps;
HttpStream *http_reply_stream(HttpRequest *r, const char *content_type, const HttpStreamOps *ops,
			      void *ud);
void http_stream_wake(HttpStream *st);

/* 101 Switching Protocols, then the raw connection (a non-blocking fd) goes
 * to on_upgraded. Close it with http_upgrade_close(handle) only. */
typedef struct HttpUpgrade HttpUpgrade;
typedef void (*HttpUpgradedCb)(HttpUpgrade *u, int fd, const char *extra, size_t extra_len,
			       void *ud);
/* extra: bytes the client sent after its request, already read. If the
 * upgrade never happens (the client leaves first, or is not HTTP/1.1),
 * ud_free(ud) is called instead of on_upgraded; ud_free may be NULL. */
void http_reply_upgrade(HttpRequest *r, const char *protocol, HttpUpgradedCb on_upgraded, void *ud,
			void (*ud_free)(void *ud));
void http_upgrade_close(HttpUpgrade *u);

unsigned http_status_for_error(const HsError *err);
