/* SPDX-License-Identifier: Apache-2.0 */
/* QMP client: transport (non-blocking socket, line framing, output buffer)
 * and dispatch (greeting, capabilities, replies matched by id, events).
 *
 * Framing: QEMU writes one JSON object a line ("\r\n"), as long as the
 * monitor is not in pretty=on mode. We split on '\n' and parse each line.
 *
 * Re-entrancy: every path that runs user callbacks holds the client
 * (client_hold/client_release). qmp_client_free() only marks the client
 * freed, tears the connection down and fails the pending commands; the
 * memory goes when the last holder returns. Code that runs callbacks
 * re-checks c->state afterwards and stops once it is QMP_STATE_CLOSED. */
#include "qmp.h"

#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#define QMP_DEFAULT_MAX_MESSAGE ((size_t)16 * 1024 * 1024)
#define QMP_DEFAULT_HANDSHAKE_TIMEOUT 10.0
#define QMP_READ_CHUNK ((size_t)64 * 1024)
#define QMP_KEEP_BUFFER ((size_t)1024 * 1024) /* larger buffers are freed once empty */
#define QMP_CAPABILITIES_ID "hs-capabilities"

typedef enum QmpState {
	QMP_STATE_GREETING,    /* waiting for {"QMP": ...} */
	QMP_STATE_NEGOTIATING, /* qmp_capabilities sent, waiting for its return */
	QMP_STATE_SYNCING,     /* guest agent: 0xFF + guest-sync-delimited sent */
	QMP_STATE_READY,
	QMP_STATE_CLOSED, /* connection gone, or the client is being freed */
} QmpState;

typedef struct QmpCommand QmpCommand;
struct QmpCommand {
	QmpCommand *prev, *next;
	QmpClient *client;
	char id[32];
	char *name; /* for messages */
	char *wire; /* the serialized line, until it is moved to the output buffer */
	size_t wire_len;
	int fd;     /* sent with the line (SCM_RIGHTS) until it is in the output buffer */
	double timeout;
	bool raw;	   /* execute_raw: put the caller's id back into the reply */
	json_t *caller_id; /* raw only; NULL: the caller gave none */
	QmpReplyCb cb;
	void *userdata;
	ev_timer timer;
};

typedef struct QmpQueuedFd {
	size_t pos;
	int fd;
} QmpQueuedFd;

struct QmpClient {
	struct ev_loop *loop;
	int fd;
	QmpState state;
	QmpCallbacks cbs;
	void *userdata;
	size_t max_message;
	double handshake_timeout;
	json_t *greeting;

	ev_io read_io, write_io;
	ev_timer handshake_timer;

	char *in;
	size_t in_len, in_cap, in_scanned; /* bytes before in_scanned hold no '\n' */
	char *out;
	size_t out_off, out_len, out_cap;
	/* Descriptors to send with the byte at out[pos] (add-fd, getfd), in
	 * order; grows as needed, like the output buffer. */
	QmpQueuedFd *fdq;
	unsigned n_fdq, fdq_cap;

	QmpCommand *head, *tail; /* queued and sent commands, in issue order */
	unsigned n_pending;
	uint64_t next_id;

	unsigned holds; /* client functions on the stack that may run callbacks */
	bool freed;	/* qmp_client_free() was called */

	/* Guest agent mode (QmpOptions.guest_agent). */
	bool agent;
	bool synced_once;
	json_int_t sync_id; /* the id of the sync under way */
};

/* Who is at the other end, for messages. */
static const char *peer_name(const QmpClient *c)
{
	return c->agent ? "guest agent" : "QMP";
}

static void client_hold(QmpClient *c)
{
	c->holds++;
}

static void client_release(QmpClient *c)
{
	if (--c->holds > 0 || !c->freed)
		return;
	json_decref(c->greeting);
	free(c->in);
	free(c->out);
	free(c->fdq);
	free(c);
}

static void command_free(QmpCommand *cmd)
{
	ev_timer_stop(cmd->client->loop, &cmd->timer);
	if (cmd->fd >= 0)
		close(cmd->fd);
	json_decref(cmd->caller_id);
	free(cmd->wire);
	free(cmd->name);
	free(cmd);
}

static void command_unlink(QmpClient *c, QmpCommand *cmd)
{
	*(cmd->prev ? &cmd->prev->next : &c->head) = cmd->next;
	*(cmd->next ? &cmd->next->prev : &c->tail) = cmd->prev;
	cmd->prev = cmd->next = NULL;
	c->n_pending--;
}

/* Removes cmd and runs its callback. reply may be NULL; the caller holds c. */
static void command_complete(QmpClient *c, QmpCommand *cmd, json_t *reply, const HsError *err)
{
	command_unlink(c, cmd);
	ev_timer_stop(c->loop, &cmd->timer);
	if (reply && cmd->raw) {
		if (cmd->caller_id)
			json_object_set(reply, "id", cmd->caller_id);
		else
			json_object_del(reply, "id");
	}
	if (cmd->cb)
		cmd->cb(c, reply, err, cmd->userdata);
	command_free(cmd);
}

static void fail_all(QmpClient *c, const HsError *err)
{
	/* Callbacks may free the client, which empties the list itself. */
	while (c->head)
		command_complete(c, c->head, NULL, err);
}

static void client_shutdown(QmpClient *c)
{
	c->state = QMP_STATE_CLOSED;
	ev_io_stop(c->loop, &c->read_io);
	ev_io_stop(c->loop, &c->write_io);
	ev_timer_stop(c->loop, &c->handshake_timer);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->out_off = c->out_len = 0;
	for (unsigned i = 0; i < c->n_fdq; i++)
		close(c->fdq[i].fd);
	c->n_fdq = 0;
}

/* The connection is gone: fail every pending command, then tell the owner
 * (unless the owner freed the client meanwhile). The caller holds c. */
static void client_fail(QmpClient *c, int code, const char *kind, const char *fmt, ...)
    _printf_(4, 5);
static void client_fail(QmpClient *c, int code, const char *kind, const char *fmt, ...)
{
	HsError err;
	va_list ap;

	if (c->state == QMP_STATE_CLOSED)
		return;
	va_start(ap, fmt);
	hs_error_setv(&err, code, kind, fmt, ap);
	va_end(ap);

	client_shutdown(c);
	fail_all(c, &err);
	if (!c->freed && c->cbs.closed)
		c->cbs.closed(c, &err, c->userdata);
}

static int out_append(QmpClient *c, const char *data, size_t len)
{
	if (c->out_cap - c->out_len < len && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		for (unsigned i = 0; i < c->n_fdq; i++)
			c->fdq[i].pos -= c->out_off;
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_cap - c->out_len < len) {
		size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
		if (cap < c->out_len + len)
			cap = c->out_len + len;
		char *p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	ev_io_start(c->loop, &c->write_io);
	return 0;
}

/* A command's line into the output buffer; its descriptor (if any) rides
 * with the line's first byte. */
static int out_append_command(QmpClient *c, QmpCommand *cmd)
{
	if (cmd->fd >= 0 && c->n_fdq == c->fdq_cap) {
		unsigned cap = c->fdq_cap ? c->fdq_cap * 2 : 8;
		QmpQueuedFd *q = realloc(c->fdq, cap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		c->fdq = q;
		c->fdq_cap = cap;
	}
	int r = out_append(c, cmd->wire, cmd->wire_len);
	if (r < 0)
		return r;
	if (cmd->fd >= 0) {
		c->fdq[c->n_fdq].pos = c->out_len - cmd->wire_len;
		c->fdq[c->n_fdq++].fd = cmd->fd;
		cmd->fd = -1;
	}
	free(cmd->wire);
	cmd->wire = NULL;
	return 0;
}

static char *serialize_line(const json_t *msg, size_t *ret_len)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *line = realloc(s, n + 3);
	if (!line) {
		free(s);
		return NULL;
	}
	memcpy(line + n, "\r\n", 3);
	*ret_len = n + 2;
	return line;
}

static int client_sync(QmpClient *c);
static void client_pump(QmpClient *c);

static void on_command_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	QmpCommand *cmd = w->data;
	QmpClient *c = cmd->client;
	HsError err;

	/* A guest agent may still answer it: sync again, which drops
	 * whatever comes before the sync's answer. Commands the callback
	 * issues wait for the sync. */
	bool resync = c->agent && c->state == QMP_STATE_READY && !cmd->wire;

	hs_error_set(&err, -ETIMEDOUT, "timeout", "%s command %s timed out after %g s",
		     peer_name(c), cmd->name, cmd->timeout);
	client_hold(c);
	if (resync)
		c->state = QMP_STATE_SYNCING;
	command_complete(c, cmd, NULL, &err);
	if (c->state == QMP_STATE_CLOSED)
		; /* freed, or failed, meanwhile */
	else if (resync && client_sync(c) < 0)
		client_fail(c, -ENOMEM, "internal", "out of memory");
	else if (!resync)
		client_pump(c);
	client_release(c);
}

/* Queues msg (borrowed; its "id" is overwritten). caller_id is stolen. */
static int client_queue(QmpClient *c, json_t *msg, bool raw, json_t *caller_id, int fd,
			double timeout, QmpReplyCb cb, void *userdata)
{
	const char *name = json_string_value(json_object_get(msg, "execute"));
	int r = 0;

	if (!name)
		name = json_string_value(json_object_get(msg, "exec-oob"));
	QmpCommand *cmd = calloc(1, sizeof(*cmd));
	if (!cmd) {
		json_decref(caller_id);
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	cmd->fd = fd;
	cmd->client = c;
	cmd->raw = raw;
	cmd->caller_id = caller_id;
	cmd->cb = cb;
	cmd->userdata = userdata;
	cmd->timeout = timeout;
	ev_timer_init(&cmd->timer, on_command_timeout, timeout > 0 ? timeout : 0, 0);
	cmd->timer.data = cmd;
	snprintf(cmd->id, sizeof(cmd->id), "hs-%" PRIu64, ++c->next_id);
	cmd->name = strdup(name ? name : "?");
	/* A guest agent gets no id: replies come in order, one at a time. */
	if (c->agent)
		json_object_del(msg, "id");
	if (!cmd->name || (!c->agent && json_object_set_new(msg, "id", json_string(cmd->id)) < 0) ||
	    !(cmd->wire = serialize_line(msg, &cmd->wire_len)))
		r = -ENOMEM;
	else if (c->state == QMP_STATE_READY && !(c->agent && c->head))
		r = out_append_command(c, cmd);
	if (r < 0) {
		command_free(cmd);
		return r;
	}
	if (timeout > 0)
		ev_timer_start(c->loop, &cmd->timer);
	cmd->prev = c->tail;
	*(c->tail ? &c->tail->next : &c->head) = cmd;
	c->tail = cmd;
	c->n_pending++;
	return 0;
}

/* Hand the commands queued during the handshake to the output buffer;
 * to a guest agent only the next one, once none is on the wire. */
static int flush_queued(QmpClient *c)
{
	for (QmpCommand *cmd = c->head; cmd; cmd = cmd->next) {
		if (!cmd->wire) {
			if (c->agent)
				return 0;
			continue;
		}
		int r = out_append_command(c, cmd);
		if (r < 0 || c->agent)
			return r;
	}
	return 0;
}

static void client_pump(QmpClient *c)
{
	if (c->state == QMP_STATE_READY && flush_queued(c) < 0)
		client_fail(c, -ENOMEM, "internal", "out of memory");
}

/* Guest agent: 0xFF (the agent's parser starts afresh) and
 * guest-sync-delimited with a new random id. */
static int client_sync(QmpClient *c)
{
	uint32_t id;
	char buf[128];

	if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != sizeof(id))
		id = (uint32_t)(hs_now() * 1e6) ^ (uint32_t)c->next_id;
	c->sync_id = (json_int_t)(id & 0x7fffffff);
	int n = snprintf(buf, sizeof(buf),
			 "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%" JSON_INTEGER_FORMAT
			 "}}\n",
			 c->sync_id);
	c->state = QMP_STATE_SYNCING;
	ev_timer_stop(c->loop, &c->handshake_timer);
	ev_timer_set(&c->handshake_timer, c->handshake_timeout, 0);
	ev_timer_start(c->loop, &c->handshake_timer);
	return out_append(c, buf, (size_t)n);
}

/* Guest agent, syncing: a line is the sync's answer when it has the
 * agent's 0xFF and then {"return": sync_id}; anything else is stale. */
static void handle_sync_line(QmpClient *c, const char *line, size_t len)
{
	const char *ff = memrchr(line, 0xff, len);
	if (!ff)
		return;
	size_t rest = len - (size_t)(ff + 1 - line);
	json_auto_t *msg = json_loadb(ff + 1, rest, 0, NULL);
	json_t *ret = json_object_get(msg, "return");
	if (!json_is_integer(ret) || json_integer_value(ret) != c->sync_id)
		return;
	ev_timer_stop(c->loop, &c->handshake_timer);
	c->state = QMP_STATE_READY;
	bool first = !c->synced_once;
	c->synced_once = true;
	client_pump(c);
	if (first && c->state == QMP_STATE_READY && c->cbs.ready)
		c->cbs.ready(c, NULL, c->userdata);
}

static void handle_greeting(QmpClient *c, json_t *msg)
{
	static const char caps[] =
	    "{\"execute\":\"qmp_capabilities\",\"id\":\"" QMP_CAPABILITIES_ID "\"}\r\n";

	if (!json_is_object(json_object_get(msg, "QMP"))) {
		client_fail(c, -EPROTO, "protocol-error", "expected the QMP greeting from QEMU");
		return;
	}
	c->greeting = json_incref(msg);
	if (out_append(c, caps, sizeof(caps) - 1) < 0) {
		client_fail(c, -ENOMEM, "internal", "out of memory");
		return;
	}
	c->state = QMP_STATE_NEGOTIATING;
}

static void handle_capabilities_reply(QmpClient *c, json_t *msg)
{
	json_t *error = json_object_get(msg, "error");

	if (error) {
		const char *desc = json_string_value(json_object_get(error, "desc"));
		client_fail(c, -EPROTO, "protocol-error", "qmp_capabilities failed: %s",
			    desc ? desc : "no description");
		return;
	}
	ev_timer_stop(c->loop, &c->handshake_timer);
	c->state = QMP_STATE_READY;
	if (flush_queued(c) < 0) {
		client_fail(c, -ENOMEM, "internal", "out of memory");
		return;
	}
	if (c->cbs.ready)
		c->cbs.ready(c, c->greeting, c->userdata);
}

static void handle_event(QmpClient *c, json_t *msg, const char *name)
{
	json_t *ts = json_object_get(msg, "timestamp");
	double seconds = hs_wall();

	if (json_is_object(ts))
		seconds = json_number_value(json_object_get(ts, "seconds")) +
			  json_number_value(json_object_get(ts, "microseconds")) / 1e6;
	if (c->cbs.event)
		c->cbs.event(c, name, json_object_get(msg, "data"), seconds, c->userdata);
}

static void handle_reply(QmpClient *c, json_t *msg)
{
	const char *id = json_string_value(json_object_get(msg, "id"));
	json_t *error = json_object_get(msg, "error");
	QmpCommand *cmd;

	if (c->agent) {
		/* The reply of the one command on the wire. */
		cmd = c->head && !c->head->wire ? c->head : NULL;
		if (!cmd)
			return;
		id = cmd->id;
	}
	if (!id)
		return; /* we always send an id: not an answer to us */
	if (c->state == QMP_STATE_NEGOTIATING) {
		if (strcmp(id, QMP_CAPABILITIES_ID) == 0)
			handle_capabilities_reply(c, msg);
		return;
	}
	for (cmd = c->head; cmd; cmd = cmd->next)
		if (!cmd->wire && strcmp(cmd->id, id) == 0)
			break;
	if (!cmd)
		return; /* timed out meanwhile, or not ours */
	if (error) {
		const char *desc = json_string_value(json_object_get(error, "desc"));
		HsError err;
		hs_error_set(&err, -EREMOTEIO, "qmp-error", "%s",
			     desc ? desc : "QEMU returned an error without a description");
		command_complete(c, cmd, msg, &err);
	} else {
		command_complete(c, cmd, msg, NULL);
	}
	if (c->agent)
		client_pump(c);
}

/* QEMU prints uint64 values above INT64_MAX (UINT64_MAX is its "unknown",
 * as in the balloon's guest-stats), which jansson refuses as integers. A
 * copy of the line where every such integer (outside strings) is written
 * as a real ("N.0"), so it parses with its magnitude; NULL when the line
 * has none (or on allocation failure). */
static char *reals_for_big_integers(const char *line, size_t len, size_t *ret_len)
{
	/* Each big integer (20 digits or so) grows by 2. */
	char *out = malloc(len + len / 8 + 16);
	size_t o = 0, big = 0;
	bool in_string = false;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		char ch = line[i];
		if (in_string) {
			out[o++] = line[i++];
			if (ch == '\\' && i < len)
				out[o++] = line[i++];
			else if (ch == '"')
				in_string = false;
			continue;
		}
		if (ch == '"') {
			in_string = true;
			out[o++] = line[i++];
			continue;
		}
		if (ch != '-' && (ch < '0' || ch > '9')) {
			out[o++] = line[i++];
			continue;
		}
		/* A number: copied whole; a plain integer too big gets ".0". */
		size_t tok = i;
		while (i < len && line[i] && strchr("0123456789+-.eE", line[i]))
			i++;
		memcpy(out + o, line + tok, i - tok);
		o += i - tok;
		size_t first = line[tok] == '-' ? tok + 1 : tok, digits = i - first;
		bool integer = digits > 0;
		for (size_t k = first; k < i; k++)
			integer &= line[k] >= '0' && line[k] <= '9';
		/* INT64_MAX has 19 digits. */
		if (integer &&
		    (digits > 19 ||
		     (digits == 19 && memcmp(line + first, "9223372036854775807", 19) > 0))) {
			out[o++] = '.';
			out[o++] = '0';
			big++;
		}
	}
	if (!big) {
		free(out);
		return NULL;
	}
	*ret_len = o;
	return out;
}

static void handle_line(QmpClient *c, const char *line, size_t len)
{
	json_error_t jerr;
	size_t i;

	for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'); i++)
		;
	if (i == len)
		return; /* blank line */
	if (c->state == QMP_STATE_SYNCING) {
		handle_sync_line(c, line, len);
		return;
	}

	json_auto_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
	if (!msg) {
		size_t fixed_len;
		_cleanup_free_ char *fixed = reals_for_big_integers(line, len, &fixed_len);
		if (fixed)
			msg = json_loadb(fixed, fixed_len, JSON_DECODE_ANY, &jerr);
	}
	if (!msg) {
		client_fail(c, -EPROTO, "protocol-error", "invalid JSON from %s: %s",
			    c->agent ? "the guest agent" : "QEMU", jerr.text);
		return;
	}
	if (!json_is_object(msg)) {
		client_fail(c, -EPROTO, "protocol-error", "%s message is not a JSON object",
			    peer_name(c));
		return;
	}
	if (c->state == QMP_STATE_GREETING) {
		handle_greeting(c, msg);
		return;
	}
	const char *event = json_string_value(json_object_get(msg, "event"));
	if (event)
		handle_event(c, msg, event);
	else if (json_object_get(msg, "return") || json_object_get(msg, "error"))
		handle_reply(c, msg);
	/* Anything else is unknown to this client and ignored. */
}

static void process_input(QmpClient *c)
{
	size_t start = 0;

	while (c->state != QMP_STATE_CLOSED) {
		char *nl = memchr(c->in + c->in_scanned, '\n', c->in_len - c->in_scanned);
		if (!nl) {
			c->in_scanned = c->in_len;
			break;
		}
		size_t line = start, len = (size_t)(nl - c->in) - start;
		start = c->in_scanned = (size_t)(nl - c->in) + 1;
		if (len > 0 && c->in[line + len - 1] == '\r')
			len--;
		if (len > c->max_message) {
			client_fail(c, -EMSGSIZE, "protocol-error", "%s message exceeds %zu bytes",
				    peer_name(c), c->max_message);
			return;
		}
		handle_line(c, c->in + line, len);
	}
	if (c->state == QMP_STATE_CLOSED)
		return;
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	c->in_scanned -= start;
	if (c->in_len == 0 && c->in_cap > QMP_KEEP_BUFFER) {
		free(c->in); /* do not hold on to the memory of one huge reply */
		c->in = NULL;
		c->in_cap = 0;
	}
	/* An incomplete line: allow for its "\r" still to be stripped. */
	if (c->in_len > c->max_message + 1)
		client_fail(c, -EMSGSIZE, "protocol-error", "%s message exceeds %zu bytes",
			    peer_name(c), c->max_message);
}

static void client_read(QmpClient *c)
{
	if (c->in_cap - c->in_len < QMP_READ_CHUNK) {
		size_t cap = c->in_cap * 2 > c->in_len + QMP_READ_CHUNK
				 ? c->in_cap * 2
				 : c->in_len + QMP_READ_CHUNK;
		char *p = realloc(c->in, cap);
		if (!p) {
			client_fail(c, -ENOMEM, "internal", "out of memory");
			return;
		}
		c->in = p;
		c->in_cap = cap;
	}
	ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
	if (n < 0) {
		int r = -errno;
		if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR)
			return;
		client_fail(c, r, "disconnected", "cannot read from %s socket: %s", peer_name(c),
			    strerror(-r));
		return;
	}
	if (n == 0) {
		client_fail(c, -ECONNRESET, "disconnected", "QEMU closed the %s connection",
			    peer_name(c));
		return;
	}
	c->in_len += (size_t)n;
	process_input(c);
}

static void client_write(QmpClient *c)
{
	while (c->out_off < c->out_len) {
		size_t len = c->out_len - c->out_off;
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {c->out + c->out_off, len};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		bool with_fd = c->n_fdq > 0 && c->fdq[0].pos == c->out_off;
		/* A descriptor goes with the first byte of its line; stop
		 * before the next one's line. */
		unsigned next = with_fd ? 1 : 0;
		if (next < c->n_fdq)
			iov.iov_len = c->fdq[next].pos - c->out_off;
		if (with_fd) {
			memset(cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &c->fdq[0].fd, sizeof(int));
		}
		ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0 && with_fd) {
			close(c->fdq[0].fd);
			memmove(&c->fdq[0], &c->fdq[1], sizeof(c->fdq[0]) * --c->n_fdq);
		}
		if (n < 0) {
			int r = -errno;
			if (r == -EINTR)
				continue;
			if (r == -EAGAIN || r == -EWOULDBLOCK)
				return;
			client_fail(c, r, "disconnected", "cannot write to QMP socket: %s",
				    strerror(-r));
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > QMP_KEEP_BUFFER) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	ev_io_stop(c->loop, &c->write_io);
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	QmpClient *c = w->data;
	client_hold(c);
	client_read(c);
	client_release(c);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
	QmpClient *c = w->data;
	client_hold(c);
	client_write(c);
	client_release(c);
}

static void on_handshake_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	QmpClient *c = w->data;
	client_hold(c);
	if (c->agent)
		client_fail(c, -ETIMEDOUT, "timeout",
			    "the guest agent did not answer guest-sync-delimited within %g s",
			    c->handshake_timeout);
	else
		client_fail(c, -ETIMEDOUT, "timeout", "QMP handshake timed out after %g s",
			    c->handshake_timeout);
	client_release(c);
}

QmpClient *qmp_client_new(struct ev_loop *loop, int fd, const QmpCallbacks *cbs,
			  const QmpOptions *opts, void *userdata)
{
	_cleanup_close_ int owned_fd = fd;
	int r;

	if (!loop || fd < 0) {
		errno = EINVAL;
		return NULL;
	}
	r = hs_fd_nonblock(fd, true);
	if (r == 0)
		r = hs_fd_cloexec(fd, true);
	if (r < 0) {
		errno = -r;
		return NULL;
	}
	QmpClient *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;

	c->loop = loop;
	c->fd = TAKE_FD(owned_fd);
	if (cbs)
		c->cbs = *cbs;
	c->userdata = userdata;
	c->max_message = opts && opts->max_message ? opts->max_message : QMP_DEFAULT_MAX_MESSAGE;
	c->handshake_timeout = opts && opts->handshake_timeout > 0 ? opts->handshake_timeout
								   : QMP_DEFAULT_HANDSHAKE_TIMEOUT;
	ev_io_init(&c->read_io, on_read, c->fd, EV_READ);
	ev_io_init(&c->write_io, on_write, c->fd, EV_WRITE);
	ev_timer_init(&c->handshake_timer, on_handshake_timeout, c->handshake_timeout, 0);
	c->read_io.data = c->write_io.data = c->handshake_timer.data = c;
	ev_io_start(loop, &c->read_io);
	c->agent = opts && opts->guest_agent;
	if (!c->agent) {
		ev_timer_start(loop, &c->handshake_timer);
	} else if (client_sync(c) < 0) {
		c->freed = true;
		client_hold(c);
		client_shutdown(c);
		client_release(c); /* frees it */
		errno = ENOMEM;
		return NULL;
	}
	return c;
}

QmpClient *qmp_client_free(QmpClient *c)
{
	HsError err;

	if (!c || c->freed)
		return NULL;
	c->freed = true;
	client_hold(c);
	client_shutdown(c);
	hs_error_set(&err, -ECANCELED, "cancelled", "the QMP client was freed");
	fail_all(c, &err);
	client_release(c);
	return NULL;
}

int qmp_client_execute(QmpClient *c, const char *command, json_t *arguments, double timeout,
		       QmpReplyCb cb, void *userdata)
{
	json_auto_t *args = arguments;

	if (!c || !command || (args && !json_is_object(args)))
		return -EINVAL;
	if (c->state == QMP_STATE_CLOSED)
		return -ENOTCONN;
	json_auto_t *msg = json_object();
	if (!msg)
		return -ENOMEM;
	json_t *name = json_string(command);
	if (!name)
		return -EINVAL; /* not UTF-8 (or out of memory) */
	if (json_object_set_new(msg, "execute", name) < 0 ||
	    (args && json_object_set(msg, "arguments", args) < 0))
		return -ENOMEM;
	return client_queue(c, msg, false, NULL, -1, timeout, cb, userdata);
}

int qmp_client_execute_fd(QmpClient *c, const char *command, json_t *arguments, int fd,
			  double timeout, QmpReplyCb cb, void *userdata)
{
	json_auto_t *args = arguments;

	if (!c || !command || fd < 0 || (args && !json_is_object(args))) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	if (c->state == QMP_STATE_CLOSED) {
		close(fd);
		return -ENOTCONN;
	}
	json_auto_t *msg = json_object();
	json_t *name = json_string(command);
	if (!msg || !name) {
		json_decref(name);
		close(fd);
		return !msg ? -ENOMEM : -EINVAL; /* not UTF-8, as in qmp_client_execute() */
	}
	if (json_object_set_new(msg, "execute", name) < 0 ||
	    (args && json_object_set(msg, "arguments", args) < 0)) {
		close(fd);
		return -ENOMEM;
	}
	return client_queue(c, msg, false, NULL, fd, timeout, cb, userdata);
}

int qmp_client_execute_raw(QmpClient *c, json_t *msg_in, double timeout, QmpReplyCb cb,
			   void *userdata, HsError *err)
{
	json_auto_t *msg = msg_in;
	const char *key;
	json_t *value;

	if (!c)
		return hs_error_set(err, -EINVAL, "invalid-argument", "no QMP client");
	if (!json_is_object(msg))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "QMP command must be a JSON object");
	json_t *execute = json_object_get(msg, "execute"), *oob = json_object_get(msg, "exec-oob");
	if (!execute == !oob)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "QMP command needs either \"execute\" or \"exec-oob\"");
	if (!json_is_string(execute ? execute : oob))
		return hs_error_set(err, -EINVAL, "invalid-argument", "\"%s\" must be a string",
				    execute ? "execute" : "exec-oob");
	json_object_foreach(msg, key, value) {
		if (strcmp(key, "execute") && strcmp(key, "exec-oob") && strcmp(key, "arguments") &&
		    strcmp(key, "id"))
			return hs_error_set(err, -EINVAL, "invalid-argument",
					    "unexpected member \"%s\" in QMP command", key);
	}
	json_t *args = json_object_get(msg, "arguments");
	if (args && !json_is_object(args))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "\"arguments\" must be a JSON object");
	if (c->state == QMP_STATE_CLOSED)
		return hs_error_set(err, -ENOTCONN, "disconnected", "the QMP connection is closed");

	int r = client_queue(c, msg, true, json_incref(json_object_get(msg, "id")), -1, timeout,
			     cb, userdata);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot queue QMP command: %s",
				    strerror(-r));
	return 0;
}

bool qmp_client_is_ready(const QmpClient *c)
{
	return c && (c->state == QMP_STATE_READY ||
		     (c->state == QMP_STATE_SYNCING && c->synced_once));
}

bool qmp_client_is_closed(const QmpClient *c)
{
	return !c || c->state == QMP_STATE_CLOSED;
}

unsigned qmp_client_pending(const QmpClient *c)
{
	return c ? c->n_pending : 0;
}

void *qmp_client_get_userdata(const QmpClient *c)
{
	return c ? c->userdata : NULL;
}
