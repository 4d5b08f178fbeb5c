/* SPDX-License-Identifier: Apache-2.0 */
/* The serial console: hsd stays connected to QEMU's serial socket, keeps a
 * ring of recent output (QEMU itself appends everything to console.log, even
 * while hsd is away), replays the ring to a client that attaches, then relays
 * both ways. Each client has a bounded output buffer: one that cannot keep up
 * is dropped, never waited for. */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

#include "hsd.h"

#define CLIENT_BUF_MAX (256 * 1024)
#define INPUT_BUF_MAX (64 * 1024)

struct ConsoleClient {
	ConsoleClient *next;
	Vm *vm;
	HttpUpgrade *upgrade;
	int fd;
	ev_io rio, wio;
	char *out;
	size_t out_len;
};

#define CONSOLE_KEEP_STOPPED 4096

static void ring_copy(Vm *vm, char *out);

static void ring_append(Vm *vm, const char *data, size_t len)
{
	if (!vm->ring_full) {
		/* (Re)grow a shrunk ring to its full size, keeping its content. */
		char *nr = malloc(CONSOLE_RING_SIZE);
		if (!nr)
			return;
		if (vm->ring)
			ring_copy(vm, nr);
		free(vm->ring);
		vm->ring = nr;
		vm->ring_head = 0;
		vm->ring_full = true;
	}
	for (size_t i = 0; i < len; i++) {
		size_t pos = (vm->ring_head + vm->ring_len) % CONSOLE_RING_SIZE;
		vm->ring[pos] = data[i];
		if (vm->ring_len < CONSOLE_RING_SIZE)
			vm->ring_len++;
		else
			vm->ring_head = (vm->ring_head + 1) % CONSOLE_RING_SIZE;
	}
}

static void client_free(ConsoleClient *c)
{
	Vm *vm = c->vm;
	for (ConsoleClient **p = &vm->consoles; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	ev_io_stop(vm->hsd->loop, &c->rio);
	ev_io_stop(vm->hsd->loop, &c->wio);
	http_upgrade_close(c->upgrade);
	free(c->out);
	free(c);
}

static void client_flush(ConsoleClient *c)
{
	while (c->out_len > 0) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				ev_io_start(c->vm->hsd->loop, &c->wio);
				return;
			}
			client_free(c);
			return;
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	ev_io_stop(c->vm->hsd->loop, &c->wio);
}

static void client_send(ConsoleClient *c, const char *data, size_t len)
{
	if (c->out_len + len > CLIENT_BUF_MAX) {
		log_info("vm %s: console client too slow; dropped", c->vm->spec.name);
		client_free(c);
		return;
	}
	char *nb = realloc(c->out, c->out_len + len);
	if (!nb) {
		client_free(c);
		return;
	}
	memcpy(nb + c->out_len, data, len);
	c->out = nb;
	c->out_len += len;
	client_flush(c);
}

static void serial_flush_input(Vm *vm)
{
	while (vm->pending_input_len > 0 && vm->serial_fd >= 0) {
		ssize_t n = send(vm->serial_fd, vm->pending_input, vm->pending_input_len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				ev_io_start(vm->hsd->loop, &vm->serial_wwatch);
				return;
			}
			vm->pending_input_len = 0;
			break;
		}
		memmove(vm->pending_input, vm->pending_input + n,
			vm->pending_input_len - (size_t)n);
		vm->pending_input_len -= (size_t)n;
	}
	ev_io_stop(vm->hsd->loop, &vm->serial_wwatch);
}

static void serial_input(Vm *vm, const char *data, size_t len)
{
	if (vm->serial_fd < 0)
		return;
	if (vm->pending_input_len + len > INPUT_BUF_MAX)
		return; /* the guest is not reading; drop like a UART would */
	char *nb = realloc(vm->pending_input, vm->pending_input_len + len);
	if (!nb)
		return;
	memcpy(nb + vm->pending_input_len, data, len);
	vm->pending_input = nb;
	vm->pending_input_len += len;
	serial_flush_input(vm);
}

static void on_client_read(struct ev_loop *loop, ev_io *w, int revents)
{
	ConsoleClient *c = w->data;
	char buf[4096];
	ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_free(c);
		return;
	}
	serial_input(c->vm, buf, (size_t)n);
}

static void on_client_write(struct ev_loop *loop, ev_io *w, int revents)
{
	client_flush(w->data);
}

static void on_serial_read(struct ev_loop *loop, ev_io *w, int revents)
{
	Vm *vm = w->data;
	char buf[16384];
	ssize_t n = recv(vm->serial_fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		console_detach_serial(vm);
		return;
	}
	ring_append(vm, buf, (size_t)n);
	web_serial_output(vm, buf, (size_t)n);
	ConsoleClient *next;
	for (ConsoleClient *c = vm->consoles; c; c = next) {
		next = c->next;
		client_send(c, buf, (size_t)n);
	}
}

static void on_serial_write(struct ev_loop *loop, ev_io *w, int revents)
{
	serial_flush_input(w->data);
}

void console_attach_serial(Vm *vm, int fd)
{
	console_detach_serial(vm);
	vm->serial_fd = fd;
	ev_io_init(&vm->serial_watch, on_serial_read, fd, EV_READ);
	vm->serial_watch.data = vm;
	ev_io_start(vm->hsd->loop, &vm->serial_watch);
	ev_io_init(&vm->serial_wwatch, on_serial_write, fd, EV_WRITE);
	vm->serial_wwatch.data = vm;
}

void console_detach_serial(Vm *vm)
{
	if (vm->serial_fd < 0)
		return;
	ev_io_stop(vm->hsd->loop, &vm->serial_watch);
	ev_io_stop(vm->hsd->loop, &vm->serial_wwatch);
	close(vm->serial_fd);
	vm->serial_fd = -1;
	vm->pending_input_len = 0;
}

void console_close_clients(Vm *vm)
{
	while (vm->consoles)
		client_free(vm->consoles);
}

unsigned console_client_count(Vm *vm)
{
	unsigned n = 0;
	for (ConsoleClient *c = vm->consoles; c; c = c->next)
		n++;
	return n;
}

void console_seed_from_log(Vm *vm)
{
	if (vm->state_dirfd < 0)
		return;
	_cleanup_close_ int fd = openat(vm->state_dirfd, "console.log", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t start = end > CONSOLE_RING_SIZE ? end - CONSOLE_RING_SIZE : 0;
	_cleanup_free_ char *buf = malloc(CONSOLE_RING_SIZE);
	if (!buf)
		return;
	ssize_t n = pread(fd, buf, CONSOLE_RING_SIZE, start);
	if (n > 0)
		ring_append(vm, buf, (size_t)n);
}

static void ring_copy(Vm *vm, char *out)
{
	size_t size = vm->ring_full ? CONSOLE_RING_SIZE : vm->ring_len;
	for (size_t i = 0; i < vm->ring_len; i++)
		out[i] = vm->ring[(vm->ring_head + i) % size];
}

void console_shrink(Vm *vm)
{
	if (!vm->ring_full)
		return;
	size_t keep = vm->ring_len < CONSOLE_KEEP_STOPPED ? vm->ring_len : CONSOLE_KEEP_STOPPED;
	char *small = keep ? malloc(keep) : NULL;
	if (keep && !small)
		return;
	for (size_t i = 0; i < keep; i++)
		small[i] = vm->ring[(vm->ring_head + vm->ring_len - keep + i) % CONSOLE_RING_SIZE];
	free(vm->ring);
	vm->ring = small;
	vm->ring_head = 0;
	vm->ring_len = keep;
	vm->ring_full = false;
}

void console_attach_client(Vm *vm, HttpUpgrade *u, int fd, const char *extra, size_t extra_len,
			   bool replay)
{
	ConsoleClient *c = calloc(1, sizeof(*c));
	if (!c) {
		http_upgrade_close(u);
		return;
	}
	c->vm = vm;
	c->upgrade = u;
	c->fd = fd;
	ev_io_init(&c->rio, on_client_read, fd, EV_READ);
	c->rio.data = c;
	ev_io_init(&c->wio, on_client_write, fd, EV_WRITE);
	c->wio.data = c;
	c->next = vm->consoles;
	vm->consoles = c;
	ev_io_start(vm->hsd->loop, &c->rio);
	if (extra_len)
		serial_input(vm, extra, extra_len);
	if (replay && vm->ring_len) {
		_cleanup_free_ char *copy = malloc(vm->ring_len);
		if (copy) {
			ring_copy(vm, copy);
			client_send(c, copy, vm->ring_len);
		}
	}
}

void console_input(Vm *vm, const char *data, size_t len)
{
	serial_input(vm, data, len);
}

char *console_ring_copy(Vm *vm, size_t *ret_len)
{
	char *copy = vm->ring_len ? malloc(vm->ring_len) : NULL;
	if (copy)
		ring_copy(vm, copy);
	*ret_len = copy ? vm->ring_len : 0;
	return copy;
}

char *console_tail(Vm *vm, unsigned lines)
{
	if (!vm->ring_len)
		return strdup("");
	char *buf = malloc(vm->ring_len + 1);
	if (!buf)
		return NULL;
	ring_copy(vm, buf);
	size_t n = vm->ring_len;
	buf[n] = '\0';
	/* Printable ASCII only: it goes into JSON and terminals. */
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (ch == '\r')
			buf[i] = ' ';
		else if ((ch < 0x20 && ch != '\n' && ch != '\t') || ch >= 0x7f)
			buf[i] = '.';
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	size_t pos = n;
	unsigned seen = 0;
	while (pos > 0) {
		if (buf[pos - 1] == '\n' && ++seen == lines)
			break;
		pos--;
	}
	memmove(buf, buf + pos, n - pos + 1);
	return buf;
}
