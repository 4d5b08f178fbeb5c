/* SPDX-License-Identifier: Apache-2.0 */
/* The QEMU guest agent (docs/architecture.md, "Guest agent"; the API in
 * docs/api.md, "agent").
 *
 * A VM whose spec has "agent": true gets a virtio-serial port named
 * org.qemu.guest_agent.0 (argv.c) whose chardev is a socket hsd listens
 * on, qga.sock in the VM's run dir, handed to QEMU like QMP's: QEMU holds
 * it across hsd restarts. hsd connects to it as a client when the guest
 * has the port open (qemu-ga runs): QMP's VSERPORT_CHANGE tells, and
 * query-chardev's frontend-open tells a restarted hsd (or one that missed
 * the event). The protocol is qmp/'s guest agent mode: a sync (0xFF,
 * guest-sync-delimited) at connect and after any timeout, one command at a
 * time, each with a timeout. A guest without an agent, or with a hung one,
 * is normal: it makes only calls to the agent fail, and quickly.
 *
 * What the agent says (OS, host name, interfaces) is cached with the time
 * it was asked, refreshed every AGENT_REFRESH seconds while connected and
 * on demand (GET /v1/vms/NAME/agent). When the guest closes the port (a
 * reboot, qemu-ga stopped) the cache stays, marked "connected": false,
 * with its "updated" time; when QEMU goes it is dropped.
 *
 * fsfreeze: a freeze attempt, answered or not, owes a thaw. hsd sends it
 * itself after a freeze that failed or timed out, again at every later
 * sync until one is confirmed (guest-fsfreeze-thaw, or -status saying
 * "thawed"), and after AGENT_FROZEN_MAX seconds of a freeze nobody thawed:
 * a guest is never left frozen by hsd. */
#include <string.h>

#include "hsd.h"

#define AGENT_SOCK "qga.sock"
#define AGENT_SYNC_TIMEOUT 5.0    /* connect + guest-sync-delimited */
#define AGENT_CMD_TIMEOUT 5.0     /* info, guest-shutdown, guest-fsfreeze-status */
#define AGENT_FREEZE_TIMEOUT 30.0 /* guest-fsfreeze-freeze: the guest flushes first */
#define AGENT_THAW_TIMEOUT 10.0
#define AGENT_REFRESH 30.0    /* cached info refreshed (or the port checked) */
#define AGENT_THAW_RETRY 2.0  /* a thaw owed and no agent: tried again this soon */
#define AGENT_FROZEN_MAX 300.0 /* a freeze no thaw followed: thawed by hsd */
#define AGENT_MAX_MESSAGE ((size_t)1024 * 1024)
#define AGENT_MAX_IFACES 64
#define AGENT_MAX_ADDRS 32
#define AGENT_MAX_STRING 256 /* longer strings from the guest are left out */

enum { Q_INFO, Q_OS, Q_HOSTNAME, Q_IFACES, Q_N };
static const char *const queries[Q_N] = {"guest-info", "guest-get-osinfo",
					  "guest-get-host-name", "guest-network-get-interfaces"};

typedef struct AgentWaiter AgentWaiter;
struct AgentWaiter {
	AgentWaiter *next;
	AgentDoneCb cb;
	void *ud;
};

typedef struct AgentSlot {
	struct VmAgent *a;
	unsigned what;
} AgentSlot;

struct VmAgent {
	Vm *vm;
	bool port_open; /* the guest has the port open (qemu-ga runs) */
	bool active;    /* QEMU runs with the port: between qmp_ready and release */
	QmpClient *c;
	bool synced; /* c answered its first sync */
	ev_timer timer; /* refresh, or the port checked; thaw retries */
	ev_timer frozen_guard;

	/* The cache. */
	char *version, *hostname;
	json_t *os, *interfaces;
	double updated; /* wall clock of the last refresh the agent answered; 0: none */

	/* A refresh under way, and who waits for it. */
	unsigned refreshing;
	bool refresh_answered;
	HsError refresh_err;
	AgentSlot slots[Q_N];
	AgentWaiter *waiters;

	bool thaw_owed;      /* a freeze was tried; no thaw confirmed since */
	bool thaw_inflight;
	bool frozen;         /* the last freeze succeeded: its caller thaws */
};

/* hsd itself sends the thaw a freeze attempt owes: the freeze failed,
 * or a thaw did. */
static bool thaw_due(const VmAgent *a)
{
	return a->thaw_owed && !a->frozen && !a->thaw_inflight;
}

/* A freeze, thaw or shutdown asked by another module (cb NULL: hsd's own
 * thaw). */
typedef struct AgentOp {
	VmAgent *a;
	AgentDoneCb cb;
	void *ud;
	const char *what;
	double timeout;
} AgentOp;

static void agent_arm(VmAgent *a);
static void agent_send_thaw(VmAgent *a, AgentDoneCb cb, void *ud, double timeout);

/* ---- errors the callers see ---- */

static int unavailable(Vm *vm, HsError *err)
{
	VmAgent *a = vm->agent;
	if (!vm->spec.agent && !a)
		return hs_error_set(err, -ENOTCONN, "agent-unavailable",
				    "VM '%s' has no guest agent port (its spec has no \"agent\": true)",
				    vm->spec.name);
	if (!a || !a->active)
		return hs_error_set(err, -ENOTCONN, "agent-unavailable", "VM '%s' is not running",
				    vm->spec.name);
	if (!a->port_open)
		return hs_error_set(err, -ENOTCONN, "agent-unavailable",
				    "no guest agent runs in VM '%s' (the guest has not opened its port)",
				    vm->spec.name);
	return hs_error_set(err, -ENOTCONN, "agent-unavailable",
			    "the guest agent of VM '%s' does not answer", vm->spec.name);
}

/* qmp/'s errors as the API says them: the agent's own error replies are
 * "agent-error" (502), a closed or cancelled connection "agent-unavailable"
 * (409), a timeout stays "timeout" (504). */
static const HsError *agent_error(const HsError *in, HsError *out)
{
	if (!in)
		return NULL;
	if (!strcmp(in->kind, "qmp-error"))
		hs_error_set(out, -EREMOTEIO, "agent-error", "guest agent: %s", in->message);
	else if (!strcmp(in->kind, "timeout"))
		hs_error_set(out, -ETIMEDOUT, "timeout", "%s", in->message);
	else
		hs_error_set(out, -ENOTCONN, "agent-unavailable", "guest agent: %s", in->message);
	return out;
}

/* ---- the cache ---- */

static const char *short_string(json_t *j)
{
	const char *s = json_string_value(j);
	return s && json_string_length(j) <= AGENT_MAX_STRING ? s : NULL;
}

static void cache_clear(VmAgent *a)
{
	free(a->version);
	free(a->hostname);
	a->version = a->hostname = NULL;
	json_decref(a->os);
	json_decref(a->interfaces);
	a->os = a->interfaces = NULL;
	a->updated = 0;
}

static void set_string(char **dst, const char *s)
{
	if (!s)
		return;
	free(*dst);
	*dst = strdup(s);
}

/* guest-get-osinfo's answer, the members hsd shows, in snake_case. */
static json_t *os_from_agent(json_t *r)
{
	static const char *const keys[][2] = {
	    {"id", "id"},
	    {"name", "name"},
	    {"pretty-name", "pretty_name"},
	    {"version", "version"},
	    {"version-id", "version_id"},
	    {"kernel-release", "kernel"},
	    {"kernel-version", "kernel_version"},
	    {"machine", "machine"},
	};
	json_t *o = json_object();
	for (size_t i = 0; o && i < ARRAY_SIZE(keys); i++) {
		const char *v = short_string(json_object_get(r, keys[i][0]));
		if (v)
			json_object_set_new(o, keys[i][1], json_string(v));
	}
	return o;
}

/* guest-network-get-interfaces' answer as [{"name", "mac", "addresses":
 * ["10.0.2.15/24", ...]}]. */
static json_t *interfaces_from_agent(json_t *r)
{
	json_t *out = json_array(), *ifc, *ip;
	size_t i, k;
	json_array_foreach (r, i, ifc) {
		const char *name = short_string(json_object_get(ifc, "name"));
		if (!name || json_array_size(out) >= AGENT_MAX_IFACES)
			continue;
		json_t *o = json_pack("{s:s}", "name", name), *addrs = json_array();
		const char *mac = short_string(json_object_get(ifc, "hardware-address"));
		if (mac)
			json_object_set_new(o, "mac", json_string(mac));
		json_array_foreach (json_object_get(ifc, "ip-addresses"), k, ip) {
			const char *addr = short_string(json_object_get(ip, "ip-address"));
			json_t *prefix = json_object_get(ip, "prefix");
			if (!addr || json_array_size(addrs) >= AGENT_MAX_ADDRS)
				continue;
			json_array_append_new(addrs,
					      json_is_integer(prefix)
						  ? json_sprintf("%s/%" JSON_INTEGER_FORMAT, addr,
								 json_integer_value(prefix))
						  : json_string(addr));
		}
		json_object_set_new(o, "addresses", addrs);
		json_array_append_new(out, o);
	}
	return out;
}

json_t *agent_vm_json(Vm *vm)
{
	VmAgent *a = vm->agent;
	if (!vm->spec.agent && !a)
		return NULL;
	json_t *o = json_pack("{s:b}", "connected", agent_vm_available(vm));
	if (!a || !o)
		return o;
	if (a->version)
		json_object_set_new(o, "version", json_string(a->version));
	if (a->os)
		json_object_set(o, "os", a->os);
	if (a->hostname)
		json_object_set_new(o, "hostname", json_string(a->hostname));
	if (a->interfaces)
		json_object_set(o, "interfaces", a->interfaces);
	if (a->updated > 0)
		json_object_set_new(o, "updated", json_integer((json_int_t)a->updated));
	if (a->frozen)
		json_object_set_new(o, "fs_frozen", json_true());
	return o;
}

/* ---- refresh ---- */

static void waiters_done(VmAgent *a, const HsError *err)
{
	AgentWaiter *w = a->waiters;
	a->waiters = NULL;
	json_auto_t *j = err ? NULL : agent_vm_json(a->vm);
	while (w) {
		AgentWaiter *next = w->next;
		w->cb(a->vm, err, j, w->ud);
		free(w);
		w = next;
	}
}

static void refresh_done(VmAgent *a)
{
	HsError e;
	if (a->refresh_answered)
		a->updated = hs_wall();
	waiters_done(a, a->refresh_answered ? NULL : agent_error(&a->refresh_err, &e));
}

static void on_refresh_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	AgentSlot *s = ud;
	VmAgent *a = s->a;
	json_t *r = json_object_get(reply, "return");

	if (!err) {
		a->refresh_answered = true;
		switch (s->what) {
		case Q_INFO:
			set_string(&a->version, short_string(json_object_get(r, "version")));
			break;
		case Q_OS:
			json_decref(a->os);
			a->os = os_from_agent(r);
			break;
		case Q_HOSTNAME:
			set_string(&a->hostname, short_string(json_object_get(r, "host-name")));
			break;
		case Q_IFACES:
		default:
			json_decref(a->interfaces);
			a->interfaces = interfaces_from_agent(r);
			break;
		}
	} else if (!strcmp(err->kind, "qmp-error")) {
		/* An old or restricted agent without that command: it answered. */
		a->refresh_answered = true;
		log_debug("vm %s: guest agent: %s: %s", a->vm->spec.name, queries[s->what],
			  err->message);
	} else {
		a->refresh_err = *err;
	}
	if (--a->refreshing == 0)
		refresh_done(a);
}

/* Asks the agent everything hsd caches; the waiters are answered when the
 * last reply (or timeout) is in. */
static void agent_refresh(VmAgent *a)
{
	if (a->refreshing)
		return; /* joins the one under way */
	a->refresh_answered = false;
	hs_error_set(&a->refresh_err, -ENOTCONN, "disconnected", "not connected");
	for (unsigned i = 0; a->c && i < Q_N; i++) {
		if (i == Q_INFO && a->version)
			continue; /* once per connection is enough */
		a->slots[i] = (AgentSlot){a, i};
		if (qmp_client_execute(a->c, queries[i], NULL, AGENT_CMD_TIMEOUT, on_refresh_reply,
				       &a->slots[i]) == 0)
			a->refreshing++;
	}
	if (!a->refreshing)
		refresh_done(a);
}

/* ---- the connection ---- */

static void on_agent_ready(QmpClient *c, json_t *greeting, void *ud)
{
	VmAgent *a = ud;
	a->synced = true;
	log_info("vm %s: guest agent connected", a->vm->spec.name);
	free(a->version); /* asked again: the agent may be another one */
	a->version = NULL;
	if (thaw_due(a))
		agent_send_thaw(a, NULL, NULL, AGENT_THAW_TIMEOUT);
	agent_refresh(a);
	agent_arm(a);
}

static void agent_disconnect(VmAgent *a)
{
	/* Pending commands fail (their callbacks run) while a->c is set. */
	QmpClient *c = a->c;
	if (c)
		qmp_client_free(c);
	a->c = NULL;
	a->synced = false;
}

static void on_agent_closed(QmpClient *c, const HsError *err, void *ud)
{
	VmAgent *a = ud;
	if (a->synced)
		log_info("vm %s: guest agent disconnected: %s", a->vm->spec.name, err->message);
	else
		log_debug("vm %s: no guest agent: %s", a->vm->spec.name, err->message);
	agent_disconnect(a);
	agent_arm(a);
}

static const QmpCallbacks agent_callbacks = {
	.ready = on_agent_ready,
	.closed = on_agent_closed,
};

static void agent_connect(VmAgent *a)
{
	if (a->c || !a->active || !a->port_open)
		return;
	int fd = vm_unix_connect(a->vm, AGENT_SOCK);
	if (fd < 0) {
		log_debug("vm %s: cannot connect to %s: %s", a->vm->spec.name, AGENT_SOCK,
			  strerror(-fd));
		return;
	}
	const QmpOptions o = {
		.guest_agent = true,
		.handshake_timeout = AGENT_SYNC_TIMEOUT,
		.max_message = AGENT_MAX_MESSAGE,
	};
	a->c = qmp_client_new(a->vm->hsd->loop, fd, &agent_callbacks, &o, a);
	if (!a->c)
		log_warning("vm %s: guest agent client: %m", a->vm->spec.name);
}

/* query-chardev: whether the guest has the agent's port open (for a
 * restarted hsd, or an event missed). */
static void on_chardevs(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	VmAgent *a = ud;
	json_t *ch;
	size_t i;
	if (err || !a->active)
		return;
	json_array_foreach (json_object_get(reply, "return"), i, ch) {
		const char *label = json_string_value(json_object_get(ch, "label"));
		if (label && !strcmp(label, "hs-qga")) {
			a->port_open = json_is_true(json_object_get(ch, "frontend-open"));
			agent_connect(a);
		}
	}
}

static void agent_check_port(VmAgent *a)
{
	Vm *vm = a->vm;
	if (vm->qmp && vm->qmp_ready)
		qmp_client_execute(vm->qmp, "query-chardev", NULL, vm->hsd->qmp_timeout, on_chardevs,
				   a);
}

static void on_agent_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	VmAgent *a = w->data;
	if (a->c && a->synced && thaw_due(a))
		agent_send_thaw(a, NULL, NULL, AGENT_THAW_TIMEOUT);
	if (a->c && a->synced)
		agent_refresh(a);
	else if (!a->c)
		agent_check_port(a);
	agent_arm(a);
}

/* The timer's next tick: soon while a thaw is owed and no agent answers. */
static void agent_arm(VmAgent *a)
{
	struct ev_loop *loop = a->vm->hsd->loop;
	ev_timer_stop(loop, &a->timer);
	if (!a->active)
		return;
	ev_timer_set(&a->timer, a->thaw_owed && !a->frozen ? AGENT_THAW_RETRY : AGENT_REFRESH, 0.);
	ev_timer_start(loop, &a->timer);
}

/* ---- fsfreeze and shutdown ---- */

static void op_done(AgentOp *op, const HsError *err, json_t *ret)
{
	HsError e;
	if (op->cb)
		op->cb(op->a->vm, agent_error(err, &e), ret, op->ud);
	free(op);
}

static void on_frozen_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
	VmAgent *a = w->data;
	log_warning("vm %s: guest file systems frozen for %g s and not thawed: thawing",
		    a->vm->spec.name, AGENT_FROZEN_MAX);
	a->frozen = false;
	if (thaw_due(a))
		agent_send_thaw(a, NULL, NULL, AGENT_THAW_TIMEOUT);
}

static void thaw_confirmed(VmAgent *a)
{
	a->thaw_owed = a->frozen = false;
	ev_timer_stop(a->vm->hsd->loop, &a->frozen_guard);
	agent_arm(a);
}

static void on_fsfreeze_status(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	AgentOp *op = ud;
	VmAgent *a = op->a;
	const char *st = json_string_value(json_object_get(reply, "return"));
	HsError e;
	a->thaw_inflight = false;
	if (st && !strcmp(st, "thawed")) {
		thaw_confirmed(a);
		json_auto_t *zero = json_integer(0);
		op_done(op, NULL, zero);
		return;
	}
	if (err && !strcmp(err->kind, "qmp-error")) {
		/* Neither thaw nor status works in this agent: nothing more
		 * hsd can do. */
		log_warning("vm %s: guest-fsfreeze-status: %s; no more thaws tried",
			    a->vm->spec.name, err->message);
		a->thaw_owed = false;
	}
	if (st)
		hs_error_set(&e, -EREMOTEIO, "agent-error",
			     "guest-fsfreeze-thaw failed and the guest's file systems are %s; "
			     "hsd tries again",
			     st);
	agent_arm(a); /* the thaw is tried again */
	if (op->cb)
		op->cb(a->vm, st ? &e : agent_error(err, &e), NULL, op->ud);
	free(op);
}

static void on_thaw_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	AgentOp *op = ud;
	VmAgent *a = op->a;
	if (!err) {
		a->thaw_inflight = false;
		thaw_confirmed(a);
		op_done(op, NULL, json_object_get(reply, "return"));
		return;
	}
	log_warning("vm %s: guest-fsfreeze-thaw: %s", a->vm->spec.name, err->message);
	/* Did it thaw all the same? (Timed out: asked after the resync.) */
	if (a->c && qmp_client_execute(a->c, "guest-fsfreeze-status", NULL, AGENT_CMD_TIMEOUT,
				       on_fsfreeze_status, op) == 0)
		return;
	a->thaw_inflight = false;
	agent_arm(a);
	op_done(op, err, NULL);
}

static AgentOp *op_new(VmAgent *a, AgentDoneCb cb, void *ud, const char *what, double timeout)
{
	AgentOp *op = calloc(1, sizeof(*op));
	if (op)
		*op = (AgentOp){a, cb, ud, what, timeout};
	return op;
}

/* From a thaw attempt on, hsd sees to it that one gets through. */
static void agent_send_thaw(VmAgent *a, AgentDoneCb cb, void *ud, double timeout)
{
	AgentOp *op = op_new(a, cb, ud, "guest-fsfreeze-thaw", timeout);
	HsError e;
	a->frozen = false;
	ev_timer_stop(a->vm->hsd->loop, &a->frozen_guard);
	if (!op || !a->c ||
	    qmp_client_execute(a->c, op->what, NULL, timeout, on_thaw_reply, op) < 0) {
		if (cb)
			cb(a->vm, unavailable(a->vm, &e) < 0 ? &e : NULL, NULL, ud);
		free(op);
		agent_arm(a); /* tried again soon */
		return;
	}
	a->thaw_inflight = true;
}

static void on_freeze_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	AgentOp *op = ud;
	VmAgent *a = op->a;
	if (!err) {
		a->frozen = true;
		ev_timer_stop(a->vm->hsd->loop, &a->frozen_guard);
		ev_timer_set(&a->frozen_guard, AGENT_FROZEN_MAX, 0.);
		ev_timer_start(a->vm->hsd->loop, &a->frozen_guard);
		op_done(op, NULL, json_object_get(reply, "return"));
		return;
	}
	/* An error reply: the agent thawed what it had frozen itself. No
	 * answer: some file systems may be frozen, or freeze later: thaw now
	 * (after the resync that follows a timeout). */
	log_warning("vm %s: guest-fsfreeze-freeze: %s", a->vm->spec.name, err->message);
	if (!strcmp(err->kind, "qmp-error"))
		a->thaw_owed = false;
	else if (err->code != -ECANCELED && thaw_due(a))
		agent_send_thaw(a, NULL, NULL, AGENT_THAW_TIMEOUT);
	op_done(op, err, NULL);
}

int agent_vm_fsfreeze(Vm *vm, bool freeze, double timeout, AgentDoneCb cb, void *ud,
		      HsError *err)
{
	VmAgent *a = vm->agent;
	if (timeout <= 0)
		timeout = freeze ? AGENT_FREEZE_TIMEOUT : AGENT_THAW_TIMEOUT;
	/* A thaw goes to an agent that is still syncing too; with none, hsd
	 * sends it once one answers. */
	if (!freeze && a && !a->c && a->thaw_owed) {
		a->frozen = false;
		agent_arm(a);
	}
	if (freeze ? !agent_vm_available(vm) : !a || !a->c)
		return unavailable(vm, err);
	if (!freeze) {
		agent_send_thaw(a, cb, ud, timeout);
		return 0;
	}
	AgentOp *op = op_new(a, cb, ud, "guest-fsfreeze-freeze", timeout);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	int r = qmp_client_execute(a->c, op->what, NULL, timeout, on_freeze_reply, op);
	if (r < 0) {
		free(op);
		return unavailable(vm, err);
	}
	a->thaw_owed = true; /* from the attempt on */
	return 0;
}

static void on_shutdown_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	AgentOp *op = ud;
	/* guest-shutdown answers nothing when it works: a timeout, or the
	 * agent going away, is success. Only its error replies are not. */
	op_done(op, err && !strcmp(err->kind, "qmp-error") ? err : NULL, NULL);
}

int agent_vm_shutdown(Vm *vm, AgentDoneCb cb, void *ud, HsError *err)
{
	if (!agent_vm_available(vm))
		return unavailable(vm, err);
	AgentOp *op = op_new(vm->agent, cb, ud, "guest-shutdown", AGENT_CMD_TIMEOUT);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	if (qmp_client_execute(vm->agent->c, op->what, json_pack("{s:s}", "mode", "powerdown"),
			       op->timeout, on_shutdown_reply, op) < 0) {
		free(op);
		return unavailable(vm, err);
	}
	return 0;
}

/* ---- the VM's life ---- */

bool agent_vm_available(Vm *vm)
{
	VmAgent *a = vm->agent;
	return a && a->c && a->synced && qmp_client_is_ready(a->c);
}

int agent_vm_refresh(Vm *vm, AgentDoneCb cb, void *ud, HsError *err)
{
	if (!agent_vm_available(vm))
		return unavailable(vm, err);
	AgentWaiter *w = calloc(1, sizeof(*w));
	if (!w)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	*w = (AgentWaiter){vm->agent->waiters, cb, ud};
	vm->agent->waiters = w;
	agent_refresh(vm->agent);
	return 0;
}

static VmAgent *agent_get(Vm *vm)
{
	if (!vm->agent && (vm->agent = calloc(1, sizeof(*vm->agent)))) {
		vm->agent->vm = vm;
		ev_init(&vm->agent->timer, on_agent_timer);
		vm->agent->timer.data = vm->agent;
		ev_init(&vm->agent->frozen_guard, on_frozen_guard);
		vm->agent->frozen_guard.data = vm->agent;
	}
	return vm->agent;
}

int agent_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err)
{
	if (!vm->spec.agent)
		return 0;
	int fd = vm_unix_listen(vm, AGENT_SOCK, 1, err);
	if (fd < 0)
		return fd;
	l->agent_fd = child_fds_add(fds, fd);
	if (l->agent_fd < 0)
		return hs_error_set(err, l->agent_fd, "internal", "too many descriptors for QEMU");
	return 0;
}

void agent_vm_qmp_ready(Vm *vm)
{
	if (!vm->spec.agent || !agent_get(vm))
		return;
	VmAgent *a = vm->agent;
	a->active = true;
	/* A start: the guest opens the port later (VSERPORT_CHANGE). A
	 * restarted hsd, or a guest resumed from saved state: ask. */
	agent_check_port(a);
	agent_arm(a);
}

void agent_vm_qmp_event(Vm *vm, const char *name, json_t *data)
{
	VmAgent *a = vm->agent;
	const char *id = json_string_value(json_object_get(data, "id"));
	if (!a || !a->active || strcmp(name, "VSERPORT_CHANGE") || !id ||
	    strcmp(id, QEMU_GUEST_AGENT_PORT_ID))
		return;
	a->port_open = json_is_true(json_object_get(data, "open"));
	log_debug("vm %s: guest agent port %s", vm->spec.name, a->port_open ? "open" : "closed");
	if (a->port_open) {
		agent_connect(a);
	} else {
		/* qemu-ga stopped or the guest reboots: the cache stays, stale. */
		agent_disconnect(a);
		agent_arm(a);
	}
}

void agent_vm_release(Vm *vm)
{
	VmAgent *a = vm->agent;
	/* (Also when QEMU went before hsd knew the agent: an adoption.) */
	if (vm->run_dirfd >= 0)
		(void)unlinkat(vm->run_dirfd, AGENT_SOCK, 0);
	if (!a)
		return;
	a->active = a->port_open = false;
	agent_disconnect(a);
	HsError e;
	hs_error_set(&e, -ENOTCONN, "agent-unavailable", "VM '%s' is not running", vm->spec.name);
	waiters_done(a, &e);
	ev_timer_stop(vm->hsd->loop, &a->timer);
	ev_timer_stop(vm->hsd->loop, &a->frozen_guard);
	a->thaw_owed = a->thaw_inflight = a->frozen = false;
	cache_clear(a);
}

void agent_vm_free(Vm *vm)
{
	VmAgent *a = vm->agent;
	if (!a)
		return;
	/* hsd stops; QEMU (and the socket) stay for the next hsd. */
	a->active = false;
	agent_disconnect(a);
	HsError e;
	hs_error_set(&e, -ECANCELED, "shutting-down", "hsd is shutting down");
	waiters_done(a, &e);
	ev_timer_stop(vm->hsd->loop, &a->timer);
	ev_timer_stop(vm->hsd->loop, &a->frozen_guard);
	cache_clear(a);
	free(a);
	vm->agent = NULL;
}

/* ---- API ---- */

static void on_api_refreshed(Vm *vm, const HsError *err, json_t *ret, void *ud)
{
	Pending *p = ud;
	if (err)
		http_reply_hserror(p->req, err);
	else
		http_reply_json(p->req, 200, json_incref(ret));
	free(p);
}

void api_vm_agent(Hsd *h, Vm *vm, HttpRequest *req)
{
	HsError err = {0};
	Pending *p = pending_new(h, req);
	int r = p ? agent_vm_refresh(vm, on_api_refreshed, p, &err)
		  : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	reply_or_defer(req, p, r, &err);
}
