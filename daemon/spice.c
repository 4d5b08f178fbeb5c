/* SPDX-License-Identifier: Apache-2.0 */
/* A display's SPICE server and console tickets (docs/architecture.md,
 * "Graphical console (SPICE)"; the API in docs/api.md, "display" and
 * "POST /v1/vms/{name}/console-tickets").
 *
 * QEMU runs as an unprivileged user with no access to hsd's directories,
 * and its -spice has no fd= option: so QEMU's SPICE server listens on
 * nothing by path. hsd listens on <run_dir>/vms/<name>/spice.sock itself
 * (0660, the admin group) and hands every connection it accepts to QEMU:
 * getfd, then add_client with skipauth (the UNIX socket has ticketing
 * off: only hsd and local admins reach it). SPICE opens one connection per
 * channel; each is handed over alike. With display.listen, QEMU also
 * listens on TCP at a port of --spice-ports with ticketing on and no
 * password: nobody gets in there until a console ticket sets one
 * (set_password, then expire_password at the ticket's expiry). */
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "hsd.h"
#include "ticket.h"

typedef struct VmSpice {
	Vm *vm;
	int listen_fd;
	ev_io watch;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char host[46]; /* TCP: the address; "" none */
	unsigned port; /* TCP: the port; 0 none */
	unsigned seq;  /* names of the descriptors handed over */
} VmSpice;

/* Connections taken from the backlog at one wake-up. */
#define SPICE_ACCEPT_BATCH 16

static bool port_taken(unsigned port, void *ud)
{
	Hsd *h = ud;
	for (Vm *o = h->vms; o; o = o->next)
		if (o->spice && o->spice->port == port)
			return true;
	return false;
}

static void spice_free(VmSpice *sp)
{
	if (!sp)
		return;
	Vm *vm = sp->vm;
	ev_io_stop(vm->hsd->loop, &sp->watch);
	if (sp->listen_fd >= 0)
		close(sp->listen_fd);
	if (vm->run_dirfd >= 0)
		(void)unlinkat(vm->run_dirfd, SPICE_SOCK, 0);
	free(sp);
}

/* The VM's socket, made afresh: 0660, to the admin group when there is one. */
static VmSpice *spice_new(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	VmSpice *sp = calloc(1, sizeof(*sp));
	if (!sp) {
		hs_error_set(err, -ENOMEM, "internal", "out of memory");
		return NULL;
	}
	sp->vm = vm;
	struct sockaddr_un sa;
	int fd = vm_unix_path(vm, SPICE_SOCK, &sa, err);
	if (fd >= 0)
		fd = vm_unix_listen(vm, SPICE_SOCK, 64, err);
	if (fd < 0) {
		free(sp);
		return NULL;
	}
	sp->listen_fd = fd;
	/* Accepted in a loop until EAGAIN: the loop never blocks. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		hs_error_set(err, -errno, "internal", "fcntl: %m");
		spice_free(sp);
		return NULL;
	}
	snprintf(sp->path, sizeof(sp->path), "%s", sa.sun_path);
	if (fchmodat(vm->run_dirfd, SPICE_SOCK, 0660, 0) < 0)
		log_warning("vm %s: chmod %s: %m", vm->spec.name, sp->path);
	if (h->has_admin_group && geteuid() == 0 &&
	    fchownat(vm->run_dirfd, SPICE_SOCK, (uid_t)-1, h->admin_gid, AT_SYMLINK_NOFOLLOW) < 0)
		log_warning("vm %s: cannot give %s to group %u: %m", vm->spec.name, sp->path,
			    (unsigned)h->admin_gid);
	return sp;
}

int spice_vm_launch(Vm *vm, QemuLaunch *l, HsError *err)
{
	Hsd *h = vm->hsd;
	const VmDisplay *d = &vm->spec.display;
	vm->spice = (spice_free(vm->spice), NULL);
	if (d->type == VM_DISPLAY_NONE)
		return 0;
	unsigned port = 0;
	if (d->listen[0]) {
		port = hs_tcp_port_free(d->listen, h->spice_port_lo, h->spice_port_hi, port_taken, h);
		if (!port)
			return hs_error_set(err, -EBUSY, "no-free-port",
					    "display.listen: no free port in %u-%u on %s "
					    "(--spice-ports)",
					    h->spice_port_lo, h->spice_port_hi, d->listen);
	}
	VmSpice *sp = spice_new(vm, err);
	if (!sp)
		return err ? err->code : -EIO;
	sp->port = port;
	if (port)
		snprintf(sp->host, sizeof(sp->host), "%s", d->listen);
	vm->spice = sp;
	l->spice_port = port;
	return 0;
}

static void on_add_client(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	if (err)
		log_warning("vm %s: a SPICE connection not handed to QEMU: %s", vm->spec.name,
			    err->message);
}

static void on_spice_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	VmSpice *sp = w->data;
	Vm *vm = sp->vm;
	for (int i = 0; i < SPICE_ACCEPT_BATCH; i++) {
		int fd = accept4(sp->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warning("vm %s: SPICE socket: accept: %m", vm->spec.name);
			return;
		}
		if (!vm->qmp || !vm->qmp_ready) {
			close(fd);
			continue;
		}
		/* Both commands at once: QEMU runs them in order, and
		 * add_client takes the descriptor getfd named. */
		char name[32];
		snprintf(name, sizeof(name), "hs-spice%u", sp->seq++);
		double t = vm->hsd->qmp_timeout;
		if (qmp_client_execute_fd(vm->qmp, "getfd", json_pack("{s:s}", "fdname", name), fd,
					  t, NULL, NULL) < 0)
			continue;
		qmp_client_execute(vm->qmp, "add_client",
				   json_pack("{s:s, s:s, s:b}", "protocol", "spice", "fdname", name,
					     "skipauth", 1),
				   t, on_add_client, vm);
	}
}

static void spice_watch(VmSpice *sp)
{
	ev_io_init(&sp->watch, on_spice_accept, sp->listen_fd, EV_READ);
	sp->watch.data = sp;
	ev_io_start(sp->vm->hsd->loop, &sp->watch);
}

/* A re-adopted QEMU: whether it has SPICE, and where on TCP. */
static void on_adopt_query_spice(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	json_t *ret = json_object_get(reply, "return");
	if (err || !json_is_true(json_object_get(ret, "enabled")) || vm->spice ||
	    !vm_state_is_active(vm->status.state))
		return;
	HsError e = {0};
	VmSpice *sp = spice_new(vm, &e);
	if (!sp) {
		log_warning("vm %s: no SPICE socket: %s", vm->spec.name, e.message);
		return;
	}
	json_int_t port = json_integer_value(json_object_get(ret, "port"));
	const char *host = json_string_value(json_object_get(ret, "host"));
	if (port > 0 && port <= 65535 && host) {
		sp->port = (unsigned)port;
		snprintf(sp->host, sizeof(sp->host), "%s", host);
	}
	vm->spice = sp;
	spice_watch(sp);
}

void spice_vm_qmp_ready(Vm *vm)
{
	if (vm->spice) {
		spice_watch(vm->spice);
		return;
	}
	if (vm->adopting)
		qmp_client_execute(vm->qmp, "query-spice", NULL, vm->hsd->qmp_timeout,
				   on_adopt_query_spice, vm);
}

void spice_vm_release(Vm *vm)
{
	vm->spice = (spice_free(vm->spice), NULL);
	if (vm->hsd->tickets)
		ticket_void_vm(vm->hsd->tickets, vm->spec.name);
}

json_t *spice_vm_json(Vm *vm)
{
	const VmSpice *sp = vm->spice;
	if (!sp)
		return NULL;
	json_t *o = json_pack("{s:s}", "socket", sp->path);
	if (o && sp->port) {
		json_object_set_new(o, "host", json_string(sp->host));
		json_object_set_new(o, "port", json_integer(sp->port));
	}
	return o;
}

/* ---- POST /v1/vms/NAME/console-tickets ---- */

typedef struct TicketReq {
	Pending *p;
	char token[TICKET_TOKEN_SIZE];
	json_t *answer;
	unsigned pending; /* QMP replies still to come */
	bool failed;      /* answered with an error already */
} TicketReq;

static void ticket_req_free(TicketReq *t)
{
	explicit_bzero(t->token, sizeof(t->token));
	json_decref(t->answer);
	free(t->p);
	free(t);
}

/* The ticket goes with the request that failed: a password QEMU never
 * took must not be handed out by it later. */
static void ticket_req_fail(TicketReq *t, int code, const char *kind, const char *msg)
{
	HsError e;
	(void)ticket_take(t->p->hsd->tickets, t->token, NULL, NULL);
	t->failed = true;
	hs_error_set(&e, code, kind, "%s", msg);
	http_reply_hserror(t->p->req, &e);
}

/* set_password's, then expire_password's reply (QEMU runs them in order):
 * the answer goes once both are in. */
static void on_password(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	TicketReq *t = ud;
	if (err && !t->failed) {
		char msg[480];
		snprintf(msg, sizeof(msg), "QEMU did not take the SPICE password: %.400s",
			 err->message);
		ticket_req_fail(t, err->code == -ETIMEDOUT ? -ETIMEDOUT : -EREMOTEIO, "qmp-error",
				msg);
	}
	if (--t->pending)
		return;
	if (!t->failed)
		http_reply_json(t->p->req, 201, json_incref(t->answer));
	ticket_req_free(t);
}

/* A SPICE password: 20 letters and digits (over 119 random bits; no
 * character any client's URI parser could take for something else). */
#define SPICE_PASSWORD_LEN 20
static int spice_password(char *buf, size_t size)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[32];
	if (size < SPICE_PASSWORD_LEN + 1)
		return -EINVAL;
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -EIO;
	/* 62 letters: 256 % 62 != 0, so reject values above the last whole
	 * multiple (248) to keep them uniform. */
	size_t n = 0;
	for (size_t i = 0; i < sizeof(r) && n < SPICE_PASSWORD_LEN; i++)
		if (r[i] < 248)
			buf[n++] = a[r[i] % 62];
	explicit_bzero(r, sizeof(r));
	if (n < SPICE_PASSWORD_LEN)
		return -EAGAIN; /* 13 of 32 bytes refused: about never */
	buf[n] = '\0';
	return 0;
}

void api_vm_console_tickets(Hsd *h, Vm *vm, HttpRequest *req)
{
	static const char *const keys[] = {"kind", "ttl", NULL};
	json_auto_t *j = body_json(req, true);
	if (!j || !body_keys_ok(req, j, keys))
		return;
	json_t *jk = json_object_get(j, "kind"), *jt = json_object_get(j, "ttl");
	TicketKind kind = vm->spice ? TICKET_SPICE : TICKET_SERIAL;
	if (jk && !json_is_null(jk) &&
	    (!json_is_string(jk) || ticket_kind_from_string(json_string_value(jk), &kind) < 0)) {
		http_reply_error(req, 400, "invalid-request", "kind: must be 'spice' or 'serial'");
		return;
	}
	double ttl = TICKET_TTL_DEFAULT;
	if (jt && !json_is_null(jt)) {
		if (!json_is_number(jt) || json_number_value(jt) < TICKET_TTL_MIN ||
		    json_number_value(jt) > TICKET_TTL_MAX) {
			http_reply_error(req, 400, "invalid-request",
					 "ttl: must be a number of seconds from %d to %d",
					 TICKET_TTL_MIN, TICKET_TTL_MAX);
			return;
		}
		ttl = json_number_value(jt);
	}
	VmState st = vm->status.state;
	if (st != VM_STATE_RUNNING && st != VM_STATE_PAUSED) {
		http_reply_error(req, 409, "not-running",
				 "VM '%s' is %s: a console ticket needs it running or paused",
				 vm->spec.name, vm_state_to_string(st));
		return;
	}
	if (kind == TICKET_SPICE && !vm->spice) {
		http_reply_error(req, 409, "no-display",
				 "VM '%s' has no display (display.type none%s): no SPICE console",
				 vm->spec.name,
				 vm->spec.display.type != VM_DISPLAY_NONE ? " when it started" : "");
		return;
	}
	char token[TICKET_TOKEN_SIZE];
	double expires;
	int r = ticket_issue(h->tickets, vm->spec.name, kind, ttl, token, &expires);
	if (r < 0) {
		http_reply_error(req, r == -ENOSPC ? 503 : 500,
				 r == -ENOSPC ? "too-many-tickets" : "internal",
				 "cannot issue a console ticket: %s", strerror(-r));
		return;
	}
	json_t *answer = json_pack("{s:s, s:s, s:s, s:f}", "vm", vm->spec.name, "kind",
				   ticket_kind_to_string(kind), "token", token, "expires_at",
				   expires);
	if (!answer) {
		ticket_void_vm(h->tickets, vm->spec.name);
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	/* The browser's way in, when hsd's web console listens. */
	if (web_base_url(h))
		json_object_set_new(answer, "url", json_sprintf("%s/console/?token=%s",
								 web_base_url(h), token));
	if (kind != TICKET_SPICE || !vm->spice->port) {
		explicit_bzero(token, sizeof(token));
		http_reply_json(req, 201, answer);
		return;
	}
	/* TCP: a password for a native client, valid as long as the ticket.
	 * QEMU has one password per server: a newer ticket's replaces it
	 * (connected: keep leaves clients in). */
	char pw[SPICE_PASSWORD_LEN + 1];
	TicketReq *t = calloc(1, sizeof(*t));
	if (!t || spice_password(pw, sizeof(pw)) < 0 || !vm->qmp ||
	    !(t->p = pending_new(h, req))) {
		free(t);
		json_decref(answer);
		explicit_bzero(token, sizeof(token));
		http_reply_error(req, 500, "internal", "cannot make a SPICE password");
		return;
	}
	memcpy(t->token, token, sizeof(token));
	explicit_bzero(token, sizeof(token));
	t->answer = answer;
	json_object_set_new(answer, "spice", json_pack("{s:s, s:I, s:s}", "host", vm->spice->host,
							"port", (json_int_t)vm->spice->port,
							"password", pw));
	char when[32];
	snprintf(when, sizeof(when), "+%.0f", ttl);
	double tmo = h->qmp_timeout;
	r = qmp_client_execute(vm->qmp, "set_password",
			       json_pack("{s:s, s:s, s:s}", "protocol", "spice", "password", pw,
					 "connected", "keep"),
			       tmo, on_password, t);
	explicit_bzero(pw, sizeof(pw));
	if (r < 0) {
		/* The client is closed: nothing will call back. */
		ticket_req_fail(t, -ENOTCONN, "not-running", "the VM is going away");
		ticket_req_free(t);
		return;
	}
	t->pending = 1;
	r = qmp_client_execute(vm->qmp, "expire_password",
			       json_pack("{s:s, s:s}", "protocol", "spice", "time", when), tmo,
			       on_password, t);
	if (r == 0)
		t->pending++;
	else
		ticket_req_fail(t, -ENOTCONN, "not-running", "the VM is going away");
	http_defer(req);
}
