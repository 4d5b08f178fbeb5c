/* SPDX-License-Identifier: Apache-2.0 */
/* The web console (docs/architecture.md, "Web console"): a second HTTP/1.1
 * listener on TCP, through the same HTTP layer as the API (http.c), serving
 * only the console page (for a one-time ticket, which becomes a session
 * cookie), spice-html5's and xterm.js's files, and two WebSockets relayed
 * to the VM: /ws/spice to its SPICE UNIX socket, /ws/serial to its serial
 * console. Each relay is a small state machine whose watchers follow its
 * buffers (relay_update): a full buffer stops reading the side that fills
 * it, so a slow viewer stalls only itself. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <nettle/base64.h>

#include "hsd.h"
#include "ticket.h"
#include "web-page.h"
#include "ws.h"

#define WEB_MAX_SOCKETS 64
#define RELAY_BUF (256 * 1024) /* each way, per relay */
#define RELAY_FRAME_MAX (64 * 1024)
#define RELAY_MESSAGE_MAX (1024 * 1024)
/* Room past RELAY_BUF in the viewer's buffer for pongs and the close:
 * data stops at RELAY_BUF, a pong needs at most WS_HEADER_MAX +
 * WS_CONTROL_MAX of it (relay_process), the close 4 more. */
#define RELAY_CONTROL_ROOM 512
#define RELAY_CLOSE_WAIT 2.0
#define SESSION_IDLE 30.0
#define SESSION_MAX (8 * 3600.0)
#define WEB_FILE_MAX (16 * 1024 * 1024)

typedef struct WebSession WebSession;
struct WebSession {
	WebSession *next;
	char id[WEB_TOKEN_LEN + 1];
	char vm[VM_NAME_MAX + 1];
	char kind[16];
	double created, idle_since; /* hs_now() */
	unsigned channels;
};

typedef enum RelayState {
	RELAY_OPEN,
	RELAY_CLOSING, /* our close frame is queued; the viewer's socket goes once it is sent */
} RelayState;

typedef struct WebRelay WebRelay;
struct WebRelay {
	WebRelay *next;
	Web *web;
	Vm *vm;
	WebSession *session;
	bool serial;
	RelayState state;
	HttpUpgrade *upgrade;
	int fd; /* the viewer */
	ev_io rio, wio;
	WsReader reader;
	uint8_t *in; /* raw frames from the viewer */
	size_t in_len;
	uint8_t *out; /* frames to the viewer */
	size_t out_len;
	int bfd; /* the VM's SPICE socket; -1 for serial */
	ev_io brio, bwio;
	uint8_t *bout; /* payloads to the SPICE socket */
	size_t bout_len;
	uint8_t *pending; /* serial output not framed yet; the oldest dropped when full */
	size_t pending_len;
	ev_timer close_timer;
};

struct Web {
	Hsd *h;
	HttpServer *http;
	char *base_url;
	int spice_dirfd, assets_dirfd;
	WebSession *sessions;
	WebRelay *relays;
	unsigned n_relays;
	ev_timer sweep;
};

int web_random_token(char out[WEB_TOKEN_LEN + 1])
{
	uint8_t raw[32];
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return -EIO;
	struct base64_encode_ctx ctx;
	char enc[BASE64_ENCODE_LENGTH(32) + BASE64_ENCODE_FINAL_LENGTH];
	base64url_encode_init(&ctx);
	size_t n = base64_encode_update(&ctx, enc, sizeof(raw), raw);
	n += base64_encode_final(&ctx, enc + n);
	explicit_bzero(raw, sizeof(raw));
	/* 43 characters and one '=' of padding, dropped. */
	memcpy(out, enc, WEB_TOKEN_LEN);
	out[WEB_TOKEN_LEN] = '\0';
	explicit_bzero(enc, sizeof(enc));
	return n >= WEB_TOKEN_LEN ? 0 : -EIO;
}

const char *web_base_url(Hsd *h)
{
	return h->web ? h->web->base_url : NULL;
}

/* ---- sessions ---- */

static WebSession *session_find(Web *w, const char *id)
{
	for (WebSession *s = w->sessions; id && s; s = s->next)
		if (!strcmp(s->id, id))
			return s;
	return NULL;
}

static void session_free(Web *w, WebSession *s)
{
	for (WebSession **p = &w->sessions; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	explicit_bzero(s->id, sizeof(s->id));
	free(s);
}

/* The hs_console cookie of a Cookie header, copied to id. */
static bool cookie_session(const char *header, char id[WEB_TOKEN_LEN + 1])
{
	static const char name[] = "hs_console=";
	for (const char *p = header; p && *p;) {
		p += strspn(p, " ;");
		size_t n = strcspn(p, ";");
		if (n == sizeof(name) - 1 + WEB_TOKEN_LEN && !strncmp(p, name, sizeof(name) - 1)) {
			memcpy(id, p + sizeof(name) - 1, WEB_TOKEN_LEN);
			id[WEB_TOKEN_LEN] = '\0';
			return true;
		}
		p += n;
	}
	return false;
}

static bool vm_viewable(Vm *vm)
{
	return vm && (vm->status.state == VM_STATE_RUNNING || vm->status.state == VM_STATE_PAUSED);
}

/* ---- relays ---- */

static void relay_update(WebRelay *r);

static void relay_free(WebRelay *r)
{
	Web *w = r->web;
	struct ev_loop *loop = w->h->loop;
	for (WebRelay **p = &w->relays; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	w->n_relays--;
	ev_io_stop(loop, &r->rio);
	ev_io_stop(loop, &r->wio);
	ev_io_stop(loop, &r->brio);
	ev_io_stop(loop, &r->bwio);
	ev_timer_stop(loop, &r->close_timer);
	if (r->bfd >= 0)
		close(r->bfd);
	http_upgrade_close(r->upgrade);
	if (r->session) {
		r->session->channels--;
		r->session->idle_since = hs_now();
	}
	free(r->in);
	free(r->out);
	free(r->bout);
	free(r->pending);
	free(r);
}

static void relay_queue(WebRelay *r, uint8_t opcode, const void *data, size_t len)
{
	uint8_t hdr[WS_HEADER_MAX];
	size_t hl = ws_frame_header(hdr, true, opcode, len);
	memcpy(r->out + r->out_len, hdr, hl);
	memcpy(r->out + r->out_len + hl, data, len);
	r->out_len += hl + len;
}

/* A close frame to the viewer; the VM's side goes now. */
static void relay_close(WebRelay *r, unsigned code)
{
	if (r->state == RELAY_CLOSING)
		return;
	r->state = RELAY_CLOSING;
	uint8_t frame[4];
	size_t n = ws_close_frame(frame, code);
	memcpy(r->out + r->out_len, frame, n);
	r->out_len += n;
	if (r->bfd >= 0) {
		ev_io_stop(r->web->h->loop, &r->brio);
		ev_io_stop(r->web->h->loop, &r->bwio);
		close(r->bfd);
		r->bfd = -1;
	}
	r->pending_len = 0;
	ev_timer_start(r->web->h->loop, &r->close_timer);
}

/* Serial output waiting for room goes into frames. */
static void relay_pump_serial(WebRelay *r)
{
	while (r->state == RELAY_OPEN && r->pending_len &&
	       r->out_len + WS_HEADER_MAX < RELAY_BUF) {
		size_t n = RELAY_BUF - r->out_len - WS_HEADER_MAX;
		if (n > r->pending_len)
			n = r->pending_len;
		if (n > RELAY_FRAME_MAX)
			n = RELAY_FRAME_MAX;
		relay_queue(r, WS_OP_BINARY, r->pending, n);
		memmove(r->pending, r->pending + n, r->pending_len - n);
		r->pending_len -= n;
	}
}

/* Frames from the viewer, as far as there is room for what they ask. */
static void relay_process(WebRelay *r)
{
	size_t pos = 0;
	while (r->state == RELAY_OPEN) {
		/* Room for a whole frame's payload, and for a pong. */
		if (!r->serial && r->bout_len + RELAY_FRAME_MAX > RELAY_BUF)
			break;
		if (r->out_len + WS_HEADER_MAX + WS_CONTROL_MAX > RELAY_BUF + RELAY_CONTROL_ROOM)
			break;
		WsFrame f;
		WsEvent ev;
		ssize_t n = ws_frame_parse(r->in + pos, r->in_len - pos, RELAY_FRAME_MAX, &f);
		if (n == 0)
			break;
		int e = n < 0 ? (int)n : ws_reader_frame(&r->reader, &f, &ev);
		if (e < 0) {
			log_debug("web: vm %s: WebSocket %s: closed", r->vm->spec.name,
				  e == -EMSGSIZE ? "message too big" : "protocol error");
			relay_close(r, e == -EMSGSIZE ? WS_CLOSE_TOO_BIG : WS_CLOSE_PROTOCOL);
			break;
		}
		pos += (size_t)n;
		switch (ev.kind) {
		case WS_EV_DATA:
			if (r->serial) {
				console_input(r->vm, (const char *)ev.payload, ev.len);
			} else {
				memcpy(r->bout + r->bout_len, ev.payload, ev.len);
				r->bout_len += ev.len;
			}
			break;
		case WS_EV_PING:
			relay_queue(r, WS_OP_PONG, ev.payload, ev.len);
			break;
		case WS_EV_CLOSE:
			relay_close(r, ev.code == 1005 ? WS_CLOSE_NORMAL : ev.code);
			break;
		case WS_EV_PONG:
		default:
			break;
		}
	}
	memmove(r->in, r->in + pos, r->in_len - pos);
	r->in_len -= pos;
}

static bool flush(int fd, uint8_t *buf, size_t *len)
{
	while (*len > 0) {
		ssize_t n = send(fd, buf, *len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN;
		}
		memmove(buf, buf + n, *len - (size_t)n);
		*len -= (size_t)n;
	}
	return true;
}

static void ev_io_set_active(struct ev_loop *loop, ev_io *w, bool on)
{
	if (on && !ev_is_active(w))
		ev_io_start(loop, w);
	else if (!on && ev_is_active(w))
		ev_io_stop(loop, w);
}

/* Sends what can be sent, then watches what there is room for. May free r. */
static void relay_update(WebRelay *r)
{
	struct ev_loop *loop = r->web->h->loop;
	if (r->bfd >= 0 && !flush(r->bfd, r->bout, &r->bout_len)) {
		relay_close(r, WS_CLOSE_GOING_AWAY);
	}
	for (;;) {
		if (!flush(r->fd, r->out, &r->out_len)) {
			relay_free(r); /* the viewer is gone */
			return;
		}
		size_t out0 = r->out_len, in0 = r->in_len, pending0 = r->pending_len;
		relay_pump_serial(r);
		relay_process(r);
		if (r->out_len == out0 && r->in_len == in0 && r->pending_len == pending0)
			break;
	}
	if (r->bfd >= 0 && r->bout_len && !flush(r->bfd, r->bout, &r->bout_len))
		relay_close(r, WS_CLOSE_GOING_AWAY);
	if (r->state == RELAY_CLOSING && !r->out_len) {
		relay_free(r);
		return;
	}
	bool open = r->state == RELAY_OPEN;
	ev_io_set_active(loop, &r->wio, r->out_len > 0);
	ev_io_set_active(loop, &r->rio, open && r->in_len < RELAY_BUF);
	if (r->bfd >= 0) {
		ev_io_set_active(loop, &r->bwio, r->bout_len > 0);
		ev_io_set_active(loop, &r->brio, open && r->out_len + WS_HEADER_MAX < RELAY_BUF);
	}
}

static void on_viewer_read(struct ev_loop *loop, ev_io *io, int revents)
{
	WebRelay *r = io->data;
	ssize_t n = recv(r->fd, r->in + r->in_len, RELAY_BUF - r->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		relay_free(r); /* the viewer left without a close */
		return;
	}
	r->in_len += (size_t)n;
	relay_update(r);
}

static void on_viewer_write(struct ev_loop *loop, ev_io *io, int revents)
{
	relay_update(io->data);
}

static void on_spice_read(struct ev_loop *loop, ev_io *io, int revents)
{
	WebRelay *r = io->data;
	uint8_t buf[RELAY_FRAME_MAX];
	if (r->out_len + WS_HEADER_MAX >= RELAY_BUF) {
		relay_update(r); /* no room: stops this watcher */
		return;
	}
	size_t room = RELAY_BUF - r->out_len - WS_HEADER_MAX;
	ssize_t n = recv(r->bfd, buf, room < sizeof(buf) ? room : sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		relay_close(r, WS_CLOSE_GOING_AWAY); /* SPICE closed the channel */
	} else {
		relay_queue(r, WS_OP_BINARY, buf, (size_t)n);
	}
	relay_update(r);
}

static void on_spice_write(struct ev_loop *loop, ev_io *io, int revents)
{
	relay_update(io->data);
}

static void on_close_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	relay_free(t->data); /* the close frame could not be sent in time */
}

/* Serial output for one viewer: a full buffer loses its oldest bytes. */
static void relay_serial_append(WebRelay *r, const char *data, size_t len)
{
	if (len >= RELAY_BUF) {
		data += len - RELAY_BUF;
		len = RELAY_BUF;
	}
	if (r->pending_len + len > RELAY_BUF) {
		size_t drop = r->pending_len + len - RELAY_BUF;
		memmove(r->pending, r->pending + drop, r->pending_len - drop);
		r->pending_len -= drop;
	}
	memcpy(r->pending + r->pending_len, data, len);
	r->pending_len += len;
}

void web_serial_output(Vm *vm, const char *data, size_t len)
{
	Web *w = vm->hsd->web;
	if (!w)
		return;
	WebRelay *next;
	for (WebRelay *r = w->relays; r; r = next) {
		next = r->next;
		if (r->vm != vm || !r->serial || r->state != RELAY_OPEN)
			continue;
		relay_serial_append(r, data, len);
		relay_update(r);
	}
}

void web_vm_stopped(Vm *vm)
{
	Web *w = vm->hsd->web;
	if (!w)
		return;
	WebRelay *next;
	for (WebRelay *r = w->relays; r; r = next) {
		next = r->next;
		if (r->vm == vm) {
			relay_close(r, WS_CLOSE_GOING_AWAY);
			relay_update(r);
		}
	}
	WebSession *snext;
	for (WebSession *s = w->sessions; s; s = snext) {
		snext = s->next;
		if (!strcmp(s->vm, vm->spec.name) && !s->channels)
			session_free(w, s);
	}
}

typedef struct UpgradeCtx {
	Web *web;
	char session[WEB_TOKEN_LEN + 1];
	bool serial;
	int bfd;
} UpgradeCtx;

static void upgrade_ctx_free(void *ud)
{
	UpgradeCtx *c = ud;
	if (c->bfd >= 0)
		close(c->bfd);
	free(c);
}

static void on_ws_upgraded(HttpUpgrade *u, int fd, const char *extra, size_t extra_len, void *ud)
{
	_cleanup_free_ UpgradeCtx *c = ud;
	Web *w = c->web;
	WebSession *s = session_find(w, c->session);
	Vm *vm = s ? vm_find(w->h, s->vm) : NULL;
	WebRelay *r = calloc(1, sizeof(*r));
	if (r) {
		r->in = malloc(RELAY_BUF);
		r->out = malloc(RELAY_BUF + RELAY_CONTROL_ROOM);
		r->bout = c->serial ? NULL : malloc(RELAY_BUF);
		r->pending = c->serial ? malloc(RELAY_BUF) : NULL;
	}
	/* Checked again: the VM may have stopped while the 101 was sent. */
	if (!r || !r->in || !r->out || (!r->bout && !r->pending) || !vm_viewable(vm) ||
	    w->n_relays >= WEB_MAX_SOCKETS || extra_len > RELAY_BUF) {
		if (r) {
			free(r->in);
			free(r->out);
			free(r->bout);
			free(r->pending);
			free(r);
		}
		if (c->bfd >= 0)
			close(c->bfd);
		http_upgrade_close(u);
		return;
	}
	r->web = w;
	r->vm = vm;
	r->session = s;
	s->channels++;
	r->serial = c->serial;
	r->upgrade = u;
	r->fd = fd;
	r->bfd = c->bfd;
	r->reader.max_message = RELAY_MESSAGE_MAX;
	ev_io_init(&r->rio, on_viewer_read, fd, EV_READ);
	ev_io_init(&r->wio, on_viewer_write, fd, EV_WRITE);
	r->rio.data = r->wio.data = r;
	if (r->bfd >= 0) {
		ev_io_init(&r->brio, on_spice_read, r->bfd, EV_READ);
		ev_io_init(&r->bwio, on_spice_write, r->bfd, EV_WRITE);
		r->brio.data = r->bwio.data = r;
	}
	ev_timer_init(&r->close_timer, on_close_timeout, RELAY_CLOSE_WAIT, 0.);
	r->close_timer.data = r;
	r->next = w->relays;
	w->relays = r;
	w->n_relays++;
	log_info("web: vm %s: %s viewer attached (%u WebSockets)", vm->spec.name,
		 c->serial ? "serial" : "SPICE", w->n_relays);
	memcpy(r->in, extra, extra_len);
	r->in_len = extra_len;
	if (r->serial) {
		size_t n = 0;
		_cleanup_free_ char *ring = console_ring_copy(vm, &n);
		if (ring && n)
			relay_serial_append(r, ring, n);
	}
	c->bfd = -1;
	relay_process(r);
	relay_update(r);
}

/* ---- HTTP ---- */

static void reply_page(HttpRequest *req, unsigned status, const char *title, const char *text)
{
	char *body = hs_strdup_printf(
		"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n"
		"<body><h1>%s</h1><p id=\"error\">%s</p></body></html>\n",
		title, title, text);
	if (!body) {
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	http_reply_text(req, status, "text/html; charset=utf-8", body, strlen(body));
	http_reply_header(req, "Cache-Control", "no-store");
}

static void add_security_headers(HttpRequest *req)
{
	http_reply_header(req, "X-Content-Type-Options", "nosniff");
	http_reply_header(req, "X-Frame-Options", "DENY");
	http_reply_header(req, "Referrer-Policy", "no-referrer");
}

static const char *content_type(const char *path)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{".html", "text/html; charset=utf-8"},
		{".js", "text/javascript; charset=utf-8"},
		{".mjs", "text/javascript; charset=utf-8"},
		{".css", "text/css; charset=utf-8"},
		{".json", "application/json"},
		{".map", "application/json"},
		{".png", "image/png"},
		{".svg", "image/svg+xml"},
		{".ico", "image/x-icon"},
		{".woff2", "font/woff2"},
		{".txt", "text/plain; charset=utf-8"},
		{".md", "text/plain; charset=utf-8"},
	};
	const char *dot = strrchr(path, '.');
	for (size_t i = 0; dot && i < ARRAY_SIZE(types); i++)
		if (!strcmp(dot, types[i].ext))
			return types[i].type;
	return "application/octet-stream";
}

/* A relative path of plain names: no "..", no hidden files, no empty
 * components. */
static bool web_path_ok(const char *rel)
{
	if (!*rel || strlen(rel) > 255)
		return false;
	for (const char *p = rel; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || p[0] == '.')
			return false;
		for (size_t i = 0; i < n; i++) {
			char c = p[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
				return false;
		}
		p += n;
		if (*p == '/')
			p++;
		if (!*p && p[-1] == '/')
			return false;
	}
	return true;
}

/* rel beneath dirfd, never leaving it (not even through a symbolic link). */
static int open_beneath(int dirfd, const char *rel)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)
		fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	return fd;
}

static void serve_file(HttpRequest *req, int dirfd, const char *rel)
{
	if (dirfd < 0 || !web_path_ok(rel)) {
		reply_page(req, 404, "Not found", "No such file.");
		return;
	}
	_cleanup_close_ int fd = open_beneath(dirfd, rel);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		reply_page(req, 404, "Not found", "No such file.");
		return;
	}
	if (st.st_size > WEB_FILE_MAX) {
		reply_page(req, 413, "Error", "The file is too big.");
		return;
	}
	size_t len = 0, size = (size_t)st.st_size;
	char *data = malloc(size ? size : 1);
	while (data && len < size) {
		ssize_t n = pread(fd, data + len, size - len, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (!data || len < size) {
		free(data);
		reply_page(req, 500, "Error", "Cannot read the file.");
		return;
	}
	http_reply_text(req, 200, content_type(rel), data, len);
	http_reply_header(req, "Cache-Control", "max-age=3600");
	add_security_headers(req);
}

/* The console page, for a kind, with its placeholders filled in. */
static char *page_render(const char *vm, const char *kind, size_t *ret_len)
{
	const char *tpl = web_page_console_html;
	size_t cap = web_page_console_html_len + 256, n = 0;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	for (const char *p = tpl; p < tpl + web_page_console_html_len;) {
		const char *val = NULL;
		size_t skip = 0;
		if (!strncmp(p, "@VM@", 4))
			val = vm, skip = 4;
		else if (!strncmp(p, "@KIND@", 6))
			val = kind, skip = 6;
		if (val) {
			size_t l = strlen(val);
			if (n + l >= cap) {
				free(out);
				return NULL;
			}
			memcpy(out + n, val, l);
			n += l;
			p += skip;
		} else {
			if (n + 1 >= cap) {
				free(out);
				return NULL;
			}
			out[n++] = *p++;
		}
	}
	*ret_len = n;
	return out;
}

static void handle_console(Web *w, HttpRequest *req)
{
	const char *token = http_request_query(req, "token");
	char vm_name[TICKET_VM_SIZE], kind[16];
	TicketKind tk;
	int r = token ? ticket_take(w->h->tickets, token, vm_name, &tk) : -ENOENT;
	if (r == 0)
		snprintf(kind, sizeof(kind), "%s", ticket_kind_to_string(tk));
	if (r < 0) {
		log_info("web: console refused: %s",
			 !token ? "no ticket"
			 : r == -EALREADY ? "ticket used already"
			 : r == -ETIME	 ? "ticket expired"
					 : "unknown ticket");
		reply_page(req, 403, "Console unavailable",
			   "This console link is not valid: it is unknown, was used already, or "
			   "expired. Ask for a new one.");
		return;
	}
	Vm *vm = vm_find(w->h, vm_name);
	if (!vm_viewable(vm)) {
		reply_page(req, 403, "Console unavailable", "The VM is not running.");
		return;
	}
	WebSession *s = calloc(1, sizeof(*s));
	if (!s || web_random_token(s->id) < 0) {
		free(s);
		reply_page(req, 500, "Error", "Out of memory.");
		return;
	}
	snprintf(s->vm, sizeof(s->vm), "%s", vm_name);
	snprintf(s->kind, sizeof(s->kind), "%s", kind);
	s->created = s->idle_since = hs_now();
	size_t len = 0;
	char *page = page_render(vm_name, kind, &len);
	if (!page) {
		free(s);
		reply_page(req, 500, "Error", "Out of memory.");
		return;
	}
	s->next = w->sessions;
	w->sessions = s;
	log_info("web: vm %s: %s console opened", vm_name, kind);
	http_reply_text(req, 200, "text/html; charset=utf-8", page, len);
	_cleanup_free_ char *cookie =
		hs_strdup_printf("hs_console=%s; HttpOnly; SameSite=Strict; Path=/", s->id);
	http_reply_header(req, "Set-Cookie", cookie);
	http_reply_header(req, "Cache-Control", "no-store");
	add_security_headers(req);
}

/* A browser's WebSocket comes from a page of this origin. */
static bool origin_ok(HttpRequest *req)
{
	const char *origin = http_request_header(req, "Origin");
	const char *host = http_request_header(req, "Host");
	if (!origin)
		return true; /* not a browser: the cookie is all there is */
	if (!host)
		return false;
	const char *rest = !strncmp(origin, "http://", 7)    ? origin + 7
			   : !strncmp(origin, "https://", 8) ? origin + 8
							     : NULL;
	return rest && !strcasecmp(rest, host);
}

static int spice_connect(Web *w, const char *vm, HsError *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vms/%s/spice.sock", w->h->run_dir,
		     vm) >= (int)sizeof(sa.sun_path))
		return hs_error_set(err, -ENAMETOOLONG, "internal", "SPICE socket path too long");
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "socket: %m");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return hs_error_set(err, -errno, "no-display", "VM '%s' has no SPICE server: %m",
				    vm);
	return TAKE_FD(fd);
}

static void handle_ws(Web *w, HttpRequest *req, bool serial)
{
	const char *up = http_request_header(req, "Upgrade");
	const char *key = http_request_header(req, "Sec-WebSocket-Key");
	const char *version = http_request_header(req, "Sec-WebSocket-Version");
	char accept[WS_ACCEPT_LEN + 1], id[WEB_TOKEN_LEN + 1];
	if (!up || strcasecmp(up, "websocket") || !version || strcmp(version, "13") ||
	    ws_accept_key(key, accept) < 0) {
		reply_page(req, 400, "Bad request", "A WebSocket (version 13) is expected here.");
		if (version && strcmp(version, "13"))
			http_reply_header(req, "Sec-WebSocket-Version", "13");
		return;
	}
	WebSession *s = cookie_session(http_request_header(req, "Cookie"), id)
				? session_find(w, id)
				: NULL;
	if (!s || !origin_ok(req) || strcmp(s->kind, serial ? "serial" : "spice") ||
	    hs_now() > s->created + SESSION_MAX) {
		reply_page(req, 403, "Forbidden", "No console session.");
		return;
	}
	Vm *vm = vm_find(w->h, s->vm);
	if (!vm_viewable(vm) || (serial && vm->serial_fd < 0)) {
		reply_page(req, 403, "Console unavailable", "The VM is not running.");
		return;
	}
	if (w->n_relays >= WEB_MAX_SOCKETS) {
		reply_page(req, 503, "Busy", "Too many console connections.");
		return;
	}
	UpgradeCtx *c = calloc(1, sizeof(*c));
	if (!c) {
		reply_page(req, 500, "Error", "Out of memory.");
		return;
	}
	c->web = w;
	c->serial = serial;
	c->bfd = -1;
	memcpy(c->session, s->id, sizeof(c->session));
	if (!serial) {
		HsError err = {0};
		c->bfd = spice_connect(w, s->vm, &err);
		if (c->bfd < 0) {
			log_info("web: vm %s: %s", s->vm, err.message);
			free(c);
			reply_page(req, 502, "Console unavailable", "The VM's display cannot be reached.");
			return;
		}
	}
	http_reply_upgrade(req, "websocket", on_ws_upgraded, c, upgrade_ctx_free);
	http_reply_header(req, "Sec-WebSocket-Accept", accept);
	if (ws_protocol_offered(http_request_header(req, "Sec-WebSocket-Protocol"), "binary"))
		http_reply_header(req, "Sec-WebSocket-Protocol", "binary");
}

static void web_handle(HttpRequest *req, void *userdata)
{
	Web *w = userdata;
	const char *m = http_request_method(req);
	const char *path = http_request_path(req);
	/* GET only: not even HEAD, which would spend a ticket unseen. */
	if (strcmp(m, "GET")) {
		reply_page(req, 405, "Method not allowed", "Only GET is served here.");
		http_reply_header(req, "Allow", "GET");
		return;
	}
	if (!strcmp(path, "/console/"))
		handle_console(w, req);
	else if (!strcmp(path, "/console/console.js")) {
		char *js = malloc(web_page_console_js_len);
		if (!js) {
			reply_page(req, 500, "Error", "Out of memory.");
			return;
		}
		memcpy(js, web_page_console_js, web_page_console_js_len);
		http_reply_text(req, 200, "text/javascript; charset=utf-8", js,
				web_page_console_js_len);
		add_security_headers(req);
	} else if (!strncmp(path, "/spice-html5/", 13))
		serve_file(req, w->spice_dirfd, path + 13);
	else if (!strncmp(path, "/assets/", 8))
		serve_file(req, w->assets_dirfd, path + 8);
	else if (!strcmp(path, "/ws/spice"))
		handle_ws(w, req, false);
	else if (!strcmp(path, "/ws/serial"))
		handle_ws(w, req, true);
	else
		reply_page(req, 404, "Not found", "Nothing here.");
}

/* Sessions idle (no WebSocket) for SESSION_IDLE go; any past SESSION_MAX
 * goes with its relays. */
static void on_sweep(struct ev_loop *loop, ev_timer *t, int revents)
{
	Web *w = t->data;
	double now = hs_now();
	WebSession *next;
	for (WebSession *s = w->sessions; s; s = next) {
		next = s->next;
		if (now > s->created + SESSION_MAX && s->channels) {
			WebRelay *rnext;
			for (WebRelay *r = w->relays; r; r = rnext) {
				rnext = r->next;
				if (r->session == s) {
					relay_close(r, WS_CLOSE_GOING_AWAY);
					relay_update(r);
				}
			}
		}
		if (!s->channels && (now > s->created + SESSION_MAX || now - s->idle_since > SESSION_IDLE))
			session_free(w, s);
	}
}

static int open_dir(const char *path, const char *what)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		log_warning("web: %s %s: %m (not served)", what, path);
	return fd;
}

int web_init(Hsd *h, const HsdOptions *o, HsError *err)
{
	if (!o->web_listen)
		return 0;
	struct sockaddr_storage sa;
	socklen_t sa_len;
	int r = hsd_parse_listen(o->web_listen, &sa, &sa_len);
	if (r < 0)
		return hs_error_set(err, r, "invalid-option", "web-listen: '%s' is not ADDR:PORT",
				    o->web_listen);
	_cleanup_close_ int fd =
		socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "socket: %m");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sa_len) < 0)
		return hs_error_set(err, -errno, "internal", "web console: cannot bind %s: %m",
				    o->web_listen);
	if (listen(fd, 64) < 0)
		return hs_error_set(err, -errno, "internal", "listen: %m");
	Web *w = calloc(1, sizeof(*w));
	if (!w)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	w->h = h;
	w->base_url = hs_strdup_printf("http://%s", o->web_listen);
	w->spice_dirfd = open_dir(o->spice_html5_dir ? o->spice_html5_dir : WEB_SPICE_HTML5_DIR,
				  "spice-html5 dir");
	w->assets_dirfd = o->web_assets ? open_dir(o->web_assets, "web assets dir") : -1;
	/* The viewers' WebSockets, and a few page and file requests. */
	HttpOptions hopts = {.max_body = 4096, .max_connections = WEB_MAX_SOCKETS + 32,
			     .idle_timeout = 30};
	w->http = http_server_new(h->loop, TAKE_FD(fd), &hopts, web_handle, w, err);
	if (!w->http) {
		web_free(w);
		return err->code;
	}
	ev_timer_init(&w->sweep, on_sweep, 5., 5.);
	w->sweep.data = w;
	ev_timer_start(h->loop, &w->sweep);
	h->web = w;
	log_info("web console on %s", w->base_url);
	return 0;
}

Web *web_free(Web *w)
{
	if (!w)
		return NULL;
	while (w->relays)
		relay_free(w->relays);
	while (w->sessions)
		session_free(w, w->sessions);
	ev_timer_stop(w->h->loop, &w->sweep);
	http_server_free(w->http);
	if (w->spice_dirfd >= 0)
		close(w->spice_dirfd);
	if (w->assets_dirfd >= 0)
		close(w->assets_dirfd);
	free(w->base_url);
	free(w);
	return NULL;
}
