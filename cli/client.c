/* SPDX-License-Identifier: Apache-2.0 */
#include "client.h"

#include <http_parser.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct Resp {
	char *body;
	size_t len;
	bool complete;
	int (*on_line)(const char *line, size_t len, void *ud);
	void *ud;
	bool stop;
	bool streaming;
} Resp;

char *hs_client_default_socket(void)
{
	const char *e = getenv("HSD_SOCKET");
	if (e && *e)
		return strdup(e);
	if (geteuid() == 0)
		return strdup("/run/hsd/hsd.sock");
	const char *xr = getenv("XDG_RUNTIME_DIR");
	return xr ? hs_strdup_printf("%s/hsd/hsd.sock", xr) : strdup("/run/hsd/hsd.sock");
}

int hs_client_connect(HsClient *c, const char *path, HsError *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	c->fd = -1;
	c->socket_path = strdup(path);
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path) >= (int)sizeof(sa.sun_path))
		return hs_error_set(err, -ENAMETOOLONG, "unreachable", "socket path too long: %s",
				    path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hs_error_set(err, -errno, "unreachable", "socket: %m");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED)
			return hs_error_set(err, -e, "unreachable", "hsd is not running at %s",
					    path);
		return hs_error_set(err, -e, "unreachable", "cannot reach hsd at %s: %s", path,
				    strerror(e));
	}
	c->fd = fd;
	return 0;
}

void hs_client_close(HsClient *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->socket_path);
	c->socket_path = NULL;
}

static int send_request(HsClient *c, const char *method, const char *path, json_t *body,
			const char *extra_headers, HsError *err)
{
	_cleanup_free_ char *b = body ? json_dumps(body, JSON_COMPACT) : NULL;
	size_t blen = b ? strlen(b) : 0;
	_cleanup_free_ char *hdr = hs_strdup_printf(
		"%s %s HTTP/1.1\r\nHost: hsd\r\nUser-Agent: hsctl/%s\r\nAccept: "
		"application/json\r\n%s%s",
		method, path, HS_VERSION, extra_headers ? extra_headers : "",
		b ? "Content-Type: application/json\r\n" : "");
	_cleanup_free_ char *full = hs_strdup_printf("%sContent-Length: %zu\r\n\r\n%s", hdr, blen,
						     b ? b : "");
	if (!full)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	size_t len = strlen(full);
	size_t off = 0;
	while (off < len) {
		ssize_t n = send(c->fd, full + off, len - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return hs_error_set(err, -errno, "unreachable",
					    "lost the connection to hsd: %m");
		}
		off += (size_t)n;
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	Resp *r = p->data;
	char *nb = realloc(r->body, r->len + len + 1);
	if (!nb)
		return 1;
	memcpy(nb + r->len, at, len);
	r->body = nb;
	r->len += len;
	r->body[r->len] = '\0';
	if (r->streaming && r->on_line && p->status_code == 200) {
		char *nl;
		while (!r->stop && (nl = memchr(r->body, '\n', r->len))) {
			size_t ll = (size_t)(nl - r->body);
			*nl = '\0';
			if (r->on_line(r->body, ll, r->ud))
				r->stop = true;
			memmove(r->body, nl + 1, r->len - ll - 1);
			r->len -= ll + 1;
			r->body[r->len] = '\0';
		}
		if (r->stop)
			return 1;
	}
	return 0;
}

static int on_complete(http_parser *p)
{
	Resp *r = p->data;
	r->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static int wait_readable(HsClient *c, HsError *err)
{
	if (c->timeout <= 0)
		return 0;
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int r;
	while ((r = poll(&pfd, 1, (int)(c->timeout * 1000))) < 0 && errno == EINTR)
		;
	if (r == 0)
		return hs_error_set(err, -ETIMEDOUT, "timeout",
				    "hsd did not answer within %.0f s", c->timeout);
	return 0;
}

/* Reads and parses until the message is complete (or upgraded, or the
 * stream consumer stops). Returns the number of unparsed bytes left in buf
 * (upgrade), or a negative errno. */
static int read_response(HsClient *c, http_parser *p, Resp *resp, char **ret_extra,
			 size_t *ret_extra_len, HsError *err)
{
	http_parser_settings s;
	http_parser_settings_init(&s);
	s.on_body = on_body;
	s.on_message_complete = on_complete;
	http_parser_init(p, HTTP_RESPONSE);
	p->data = resp;
	char buf[16384];
	for (;;) {
		int r = wait_readable(c, err);
		if (r < 0)
			return r;
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return hs_error_set(err, -errno, "unreachable",
					    "lost the connection to hsd: %m");
		}
		size_t done = http_parser_execute(p, &s, buf, (size_t)n);
		if (resp->stop)
			return 0;
		if (p->upgrade) {
			if (ret_extra) {
				*ret_extra_len = (size_t)n - done;
				*ret_extra = malloc(*ret_extra_len + 1);
				if (*ret_extra)
					memcpy(*ret_extra, buf + done, *ret_extra_len);
			}
			return 0;
		}
		if (resp->complete)
			return 0;
		if (n == 0)
			return hs_error_set(err, -ECONNRESET, "unreachable",
					    "hsd closed the connection before answering");
		if (HTTP_PARSER_ERRNO(p) != HPE_OK)
			return hs_error_set(err, -EPROTO, "protocol",
					    "bad HTTP from hsd: %s",
					    http_errno_description(HTTP_PARSER_ERRNO(p)));
	}
}

static json_t *parse_body(Resp *r)
{
	if (!r->len)
		return NULL;
	return json_loadb(r->body, r->len, 0, NULL);
}

int hs_client_request(HsClient *c, const char *method, const char *path, json_t *body,
		      unsigned *ret_status, json_t **ret_json, HsError *err)
{
	int r = send_request(c, method, path, body, NULL, err);
	if (r < 0)
		return r;
	http_parser p;
	Resp resp = {0};
	r = read_response(c, &p, &resp, NULL, NULL, err);
	if (r >= 0) {
		*ret_status = p.status_code;
		*ret_json = parse_body(&resp);
		if (!*ret_json && resp.len)
			r = hs_error_set(err, -EPROTO, "protocol", "hsd answered %u with non-JSON: %.200s",
					 p.status_code, resp.body);
	}
	free(resp.body);
	return r < 0 ? r : 0;
}

int hs_client_stream(HsClient *c, const char *path,
		     int (*on_line)(const char *line, size_t len, void *ud), void *ud,
		     unsigned *ret_status, json_t **ret_error, HsError *err)
{
	int r = send_request(c, "GET", path, NULL, NULL, err);
	if (r < 0)
		return r;
	http_parser p;
	Resp resp = {.on_line = on_line, .ud = ud, .streaming = true};
	double saved = c->timeout;
	c->timeout = 0;
	r = read_response(c, &p, &resp, NULL, NULL, err);
	c->timeout = saved;
	*ret_status = p.status_code;
	*ret_error = p.status_code != 200 ? parse_body(&resp) : NULL;
	free(resp.body);
	return r;
}

int hs_client_upgrade(HsClient *c, const char *path, const char *protocol, char **ret_extra,
		      size_t *ret_extra_len, unsigned *ret_status, json_t **ret_json,
		      HsError *err)
{
	_cleanup_free_ char *h =
		hs_strdup_printf("Connection: Upgrade\r\nUpgrade: %s\r\n", protocol);
	int r = send_request(c, "GET", path, NULL, h, err);
	if (r < 0)
		return r;
	http_parser p;
	Resp resp = {0};
	*ret_extra = NULL;
	*ret_extra_len = 0;
	r = read_response(c, &p, &resp, ret_extra, ret_extra_len, err);
	*ret_status = p.status_code;
	*ret_json = NULL;
	if (r >= 0 && (!p.upgrade || p.status_code != 101)) {
		*ret_json = parse_body(&resp);
		free(*ret_extra);
		*ret_extra = NULL;
		r = -EPROTO;
	}
	free(resp.body);
	return r;
}
