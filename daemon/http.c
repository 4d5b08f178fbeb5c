/* SPDX-License-Identifier: Apache-2.0 */
#include "http.h"

#include <microhttpd.h>
#include <string.h>
#include <sys/socket.h>

typedef enum ReqState {
	REQ_READING,  /* body arriving */
	REQ_DEFERRED, /* handler answers later; connection suspended */
	REQ_READY,    /* a response is waiting to be queued */
	REQ_QUEUED,   /* handed to MHD */
} ReqState;

struct HttpRequest {
	HttpServer *server;
	struct MHD_Connection *conn;
	HttpRequest *next_deferred, **prev_deferred;
	ReqState state;
	bool suspended; /* by us, while deferred */
	char *method, *path;
	char *body;
	size_t body_len;
	bool too_large;
	unsigned status;
	char error_code[48];
	struct MHD_Response *response;
	HttpUpgrade *upgrade; /* ours until upgrade_cb hands it over */
	void (*on_abort)(HttpRequest *r, void *ud);
	void *abort_ud;
};

struct HttpStream {
	HttpServer *server;
	struct MHD_Connection *conn;
	HttpStream *next, **prev;
	const HttpStreamOps *ops;
	void *ud;
	bool suspended;
	bool ended;
};

struct HttpUpgrade {
	HttpServer *server;
	struct MHD_UpgradeResponseHandle *urh;
	HttpUpgradedCb cb;
	void *ud;
	void (*ud_free)(void *ud);
};

struct HttpServer {
	struct ev_loop *loop;
	struct MHD_Daemon *mhd;
	int listen_fd;
	ev_io epoll_watch;
	ev_timer timer;
	ev_idle kick;
	HttpHandler handler;
	void *userdata;
	HttpOptions opts;
	HttpRequest *deferred;
	HttpStream *streams;
	unsigned connections;
	bool stopping;
};

static void server_run(HttpServer *s);

static void server_kick(HttpServer *s)
{
	if (!ev_is_active(&s->kick))
		ev_idle_start(s->loop, &s->kick);
}

static void on_kick(struct ev_loop *loop, ev_idle *w, int revents)
{
	HttpServer *s = w->data;
	ev_idle_stop(loop, w);
	server_run(s);
}

static void on_epoll(struct ev_loop *loop, ev_io *w, int revents)
{
	server_run(w->data);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	server_run(w->data);
}

static void server_run(HttpServer *s)
{
	MHD_UNSIGNED_LONG_LONG timeout;
	bool was_full = s->connections >= s->opts.max_connections;

	MHD_run(s->mhd);
	/* At the connection limit MHD stops watching the listening socket, and
	 * watches it again only at its next run: make that run happen now
	 * that there is room, or waiting clients wait for unrelated events. */
	if (was_full && s->connections < s->opts.max_connections)
		server_kick(s);
	ev_timer_stop(s->loop, &s->timer);
	if (MHD_get_timeout(s->mhd, &timeout) == MHD_YES) {
		ev_timer_set(&s->timer, (double)timeout / 1000.0, 0.);
		ev_timer_start(s->loop, &s->timer);
	}
}

unsigned http_status_for_error(const HsError *err)
{
	switch (-err->code) {
	case EINVAL:
	case ERANGE:
	case E2BIG:
		return 400;
	case EACCES:
	case EPERM:
		return 403;
	case ENOENT:
		return 404;
	case EEXIST:
	case EBUSY:
	case EALREADY:
	case ENOTCONN:
		return 409;
	case EMSGSIZE:
	case EFBIG:
		return 413;
	case ETIMEDOUT:
		return 504;
	case ECANCELED:
	case ENOMEM:
		return 503;
	case EOVERFLOW:
	case ESTALE:
		return 409;
	case ENODEV:
		return 409;
	case EOPNOTSUPP:
		return 501;
	case ENOSPC:
	case EDQUOT:
		return 507;
	case EREMOTEIO:
		return 502;
	default:
		return 500;
	}
}

/* ---- request accessors ---- */

const char *http_request_method(const HttpRequest *r)
{
	return r->method;
}

const char *http_request_path(const HttpRequest *r)
{
	return r->path;
}

const char *http_request_query(const HttpRequest *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_request_header(const HttpRequest *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const HttpRequest *r, size_t *ret_len)
{
	if (ret_len)
		*ret_len = r->body_len;
	return r->body ? r->body : "";
}

bool http_peer_in_group(const HttpPeer *p, gid_t gid)
{
	if (!p->known)
		return false;
	if (p->gid == gid)
		return true;
	for (unsigned i = 0; i < p->n_groups; i++)
		if (p->groups[i] == gid)
			return true;
	return false;
}

const HttpPeer *http_request_peer(const HttpRequest *r)
{
	static const HttpPeer unknown = {.known = false};
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ci && ci->socket_context)
		return ci->socket_context;
	return &unknown;
}

/* ---- replies ---- */

static void request_unlink_deferred(HttpRequest *r)
{
	if (!r->prev_deferred)
		return;
	*r->prev_deferred = r->next_deferred;
	if (r->next_deferred)
		r->next_deferred->prev_deferred = r->prev_deferred;
	r->prev_deferred = NULL;
	r->next_deferred = NULL;
}

static void request_set_response(HttpRequest *r, unsigned status, struct MHD_Response *resp)
{
	if (r->state == REQ_READY || r->state == REQ_QUEUED) {
		/* A second reply is a bug in the caller; keep the first. */
		MHD_destroy_response(resp);
		return;
	}
	bool was_deferred = r->state == REQ_DEFERRED;
	r->status = status;
	r->response = resp;
	r->state = REQ_READY;
	if (was_deferred)
		request_unlink_deferred(r);
	/* A reply from inside the handler, right after http_defer, comes
	 * before the suspension: resuming a connection that is not suspended
	 * would make MHD ignore its next suspension (a stream would then be
	 * polled in a busy loop). */
	if (r->suspended) {
		r->suspended = false;
		MHD_resume_connection(r->conn);
		server_kick(r->server);
	}
}

void http_reply_json(HttpRequest *r, unsigned status, json_t *json)
{
	char *s = json ? json_dumps(json, JSON_COMPACT) : NULL;
	json_decref(json);
	if (!s) {
		s = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
		status = 500;
	}
	size_t n = strlen(s);
	char *body = realloc(s, n + 2);
	if (body) {
		body[n++] = '\n';
		body[n] = '\0';
		s = body;
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "application/json");
	request_set_response(r, status, resp);
}

void http_reply_error(HttpRequest *r, unsigned status, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->state == REQ_READING || r->state == REQ_DEFERRED)
		snprintf(r->error_code, sizeof(r->error_code), "%s", code);
	http_reply_json(r, status,
			json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

void http_reply_text(HttpRequest *r, unsigned status, const char *content_type, char *body,
		     size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		http_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	MHD_add_response_header(resp, "Content-Type", content_type);
	request_set_response(r, status, resp);
}

void http_reply_hserror(HttpRequest *r, const HsError *err)
{
	http_reply_error(r, http_status_for_error(err), err->kind[0] ? err->kind : "error", "%s",
			 err->message);
}

void http_reply_header(HttpRequest *r, const char *name, const char *value)
{
	if (r->state == REQ_READY && r->response)
		MHD_add_response_header(r->response, name, value);
}

void http_defer(HttpRequest *r)
{
	if (r->state != REQ_READING)
		return;
	r->state = REQ_DEFERRED;
	HttpServer *s = r->server;
	r->next_deferred = s->deferred;
	if (s->deferred)
		s->deferred->prev_deferred = &r->next_deferred;
	s->deferred = r;
	r->prev_deferred = &s->deferred;
}

void http_request_on_abort(HttpRequest *r, void (*cb)(HttpRequest *r, void *ud), void *ud)
{
	r->on_abort = cb;
	r->abort_ud = ud;
}

/* ---- streams ---- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	HttpStream *st = cls;
	if (st->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	ssize_t n = st->ops->read(st->ud, buf, max);
	if (n < 0) {
		st->ended = true;
		/* A close-delimited (HTTP/1.0) stream that ends here is closed by
		 * MHD during this run, but on a connection that was resumed
		 * before, MHD frees it only at its next run and asks for none:
		 * without one, the connection lingers until unrelated traffic. */
		server_kick(st->server);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (n == 0 && !st->suspended) {
		st->suspended = true;
		MHD_suspend_connection(st->conn);
	}
	return n;
}

static void stream_free(void *cls)
{
	HttpStream *st = cls;
	*st->prev = st->next;
	if (st->next)
		st->next->prev = st->prev;
	if (st->ops->done)
		st->ops->done(st->ud);
	free(st);
}

HttpStream *http_reply_stream(HttpRequest *r, const char *content_type, const HttpStreamOps *ops,
			      void *ud)
{
	HttpStream *st = calloc(1, sizeof(*st));
	if (!st) {
		http_reply_error(r, 500, "internal", "out of memory");
		return NULL;
	}
	st->server = r->server;
	st->conn = r->conn;
	st->ops = ops;
	st->ud = ud;
	struct MHD_Response *resp =
		MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
	if (!resp) {
		free(st);
		http_reply_error(r, 500, "internal", "out of memory");
		return NULL;
	}
	st->next = r->server->streams;
	if (st->next)
		st->next->prev = &st->next;
	r->server->streams = st;
	st->prev = &r->server->streams;
	MHD_add_response_header(resp, "Content-Type", content_type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	request_set_response(r, 200, resp);
	return st;
}

void http_stream_wake(HttpStream *st)
{
	if (st && st->suspended) {
		st->suspended = false;
		MHD_resume_connection(st->conn);
		server_kick(st->server);
	}
}

/* ---- upgrade ---- */

static void upgrade_cb(void *cls, struct MHD_Connection *connection, void *con_cls,
		       const char *extra_in, size_t extra_in_size, MHD_socket sock,
		       struct MHD_UpgradeResponseHandle *urh)
{
	HttpUpgrade *u = cls;
	HttpRequest *r = con_cls;
	if (r)
		r->upgrade = NULL; /* the handler's now */
	u->urh = urh;
	hs_fd_nonblock(sock, true);
	u->cb(u, sock, extra_in, extra_in_size, u->ud);
}

void http_upgrade_close(HttpUpgrade *u)
{
	if (!u)
		return;
	MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
	/* The close resumes the connection inside MHD, which acts on it only
	 * at its next run: without one (e.g. the console client left, so no
	 * socket event will come), the socket and its connection slot stay
	 * until unrelated traffic runs MHD. */
	server_kick(u->server);
	free(u);
}

static void upgrade_free_unused(HttpUpgrade *u)
{
	if (u && u->ud_free)
		u->ud_free(u->ud);
	free(u);
}

void http_reply_upgrade(HttpRequest *r, const char *protocol, HttpUpgradedCb on_upgraded, void *ud,
			void (*ud_free)(void *ud))
{
	HttpUpgrade *u = calloc(1, sizeof(*u));
	if (!u) {
		if (ud_free)
			ud_free(ud);
		http_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	u->server = r->server;
	u->cb = on_upgraded;
	u->ud = ud;
	u->ud_free = ud_free;
	struct MHD_Response *resp = MHD_create_response_for_upgrade(upgrade_cb, u);
	if (!resp) {
		upgrade_free_unused(u);
		http_reply_error(r, 500, "internal", "cannot upgrade");
		return;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, protocol);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "Upgrade");
	request_set_response(r, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
	if (r->response == resp)
		r->upgrade = u;
	else
		upgrade_free_unused(u); /* a second reply, dropped */
}

/* ---- MHD callbacks ---- */

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			      enum MHD_ConnectionNotificationCode toe)
{
	HttpServer *s = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		s->connections++;
		HttpPeer *peer = calloc(1, sizeof(*peer));
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct ucred uc;
		socklen_t len = sizeof(uc);
		if (peer && ci &&
		    getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0) {
			peer->known = true;
			peer->uid = uc.uid;
			peer->gid = uc.gid;
			peer->pid = uc.pid;
			socklen_t glen = sizeof(peer->groups);
			if (getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERGROUPS, peer->groups,
				       &glen) == 0)
				peer->n_groups = glen / sizeof(gid_t);
		}
		*socket_context = peer;
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		s->connections--;
		free(*socket_context);
		*socket_context = NULL;
	}
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	HttpRequest *r = *con_cls;
	if (!r)
		return;
	request_unlink_deferred(r);
	if (r->response)
		MHD_destroy_response(r->response);
	/* The upgrade never happened (MHD refused it, e.g. for HTTP/1.0, or the
	 * client left before the 101 was sent). */
	upgrade_free_unused(r->upgrade);
	free(r->method);
	free(r->path);
	free(r->body);
	free(r);
	*con_cls = NULL;
}

static enum MHD_Result queue_ready(HttpRequest *r)
{
	struct MHD_Response *resp = r->response;
	r->response = NULL;
	r->state = REQ_QUEUED;
	HttpServer *s = r->server;
	if (s->opts.answered)
		s->opts.answered(r, r->status, r->error_code, s->opts.answered_ud);
	enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
				      const char *method, const char *version,
				      const char *upload_data, size_t *upload_data_size,
				      void **con_cls)
{
	HttpServer *s = cls;
	HttpRequest *r = *con_cls;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->server = s;
		r->conn = conn;
		r->method = strdup(method);
		r->path = strdup(url);
		*con_cls = r;
		if (!r->method || !r->path)
			return MHD_NO;
		const char *cl =
			MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		if (cl && strtoull(cl, NULL, 10) > s->opts.max_body) {
			r->too_large = true;
			http_reply_error(r, 413, "body-too-large",
					 "request body exceeds %zu bytes", s->opts.max_body);
			return queue_ready(r);
		}
		return MHD_YES;
	}

	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (r->too_large || r->state != REQ_READING)
			return MHD_YES;
		if (r->body_len + n > s->opts.max_body) {
			r->too_large = true;
			free(r->body);
			r->body = NULL;
			r->body_len = 0;
			return MHD_YES;
		}
		char *nb = realloc(r->body, r->body_len + n + 1);
		if (!nb)
			return MHD_NO;
		memcpy(nb + r->body_len, upload_data, n);
		r->body = nb;
		r->body_len += n;
		r->body[r->body_len] = '\0';
		return MHD_YES;
	}

	switch (r->state) {
	case REQ_READING:
		if (r->too_large) {
			http_reply_error(r, 413, "body-too-large",
					 "request body exceeds %zu bytes", s->opts.max_body);
		} else if (s->stopping) {
			http_reply_error(r, 503, "shutting-down", "hsd is shutting down");
		} else {
			s->handler(r, s->userdata);
		}
		if (r->state == REQ_DEFERRED) {
			r->suspended = true;
			MHD_suspend_connection(conn);
			return MHD_YES;
		}
		if (r->state != REQ_READY)
			http_reply_error(r, 500, "internal", "no reply");
		return queue_ready(r);
	case REQ_READY:
		return queue_ready(r);
	case REQ_DEFERRED:
	case REQ_QUEUED:
	default:
		return MHD_YES;
	}
}

_printf_(2, 0) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	if (getenv("HSD_DEBUG_HTTP"))
		vfprintf(stderr, fmt, ap);
}

HttpServer *http_server_new(struct ev_loop *loop, int listen_fd, const HttpOptions *opts,
			    HttpHandler handler, void *userdata, HsError *err)
{
	HttpServer *s = calloc(1, sizeof(*s));
	if (!s) {
		hs_error_set(err, -ENOMEM, "internal", "out of memory");
		return NULL;
	}
	s->loop = loop;
	s->handler = handler;
	s->userdata = userdata;
	s->listen_fd = listen_fd;
	if (opts)
		s->opts = *opts;
	if (!s->opts.max_body)
		s->opts.max_body = 1 << 20;
	if (!s->opts.max_connections)
		s->opts.max_connections = 1024;
	if (!s->opts.idle_timeout)
		s->opts.idle_timeout = 30;

	hs_fd_nonblock(listen_fd, true);
	/* The logger comes first, or MHD logs to stderr until it sees it. */
	s->mhd = MHD_start_daemon(
		MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG,
		0, NULL, NULL, access_handler, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_NOTIFY_COMPLETED, request_completed,
		s, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s, MHD_OPTION_CONNECTION_LIMIT,
		s->opts.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, s->opts.idle_timeout,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
	if (!s->mhd) {
		hs_error_set(err, -EIO, "internal", "cannot start the HTTP server");
		close(listen_fd);
		free(s);
		return NULL;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	ev_io_init(&s->epoll_watch, on_epoll, di->epoll_fd, EV_READ);
	s->epoll_watch.data = s;
	ev_io_start(loop, &s->epoll_watch);
	ev_init(&s->timer, on_timer);
	s->timer.data = s;
	ev_idle_init(&s->kick, on_kick);
	s->kick.data = s;
	server_kick(s);
	return s;
}

unsigned http_server_connections(const HttpServer *s)
{
	return s->connections;
}

HttpServer *http_server_free(HttpServer *s)
{
	if (!s)
		return NULL;
	s->stopping = true;
	/* MHD must not be stopped with suspended connections. */
	while (s->deferred) {
		HttpRequest *r = s->deferred;
		if (r->on_abort)
			r->on_abort(r, r->abort_ud);
		if (r->state == REQ_DEFERRED)
			http_reply_error(r, 503, "shutting-down", "hsd is shutting down");
	}
	for (HttpStream *st = s->streams; st; st = st->next) {
		st->ended = true;
		http_stream_wake(st);
	}
	MHD_run(s->mhd);
	ev_io_stop(s->loop, &s->epoll_watch);
	ev_timer_stop(s->loop, &s->timer);
	ev_idle_stop(s->loop, &s->kick);
	/* MHD_stop_daemon closes the listening socket itself. */
	MHD_stop_daemon(s->mhd);
	free(s);
	return NULL;
}
