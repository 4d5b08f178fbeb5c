/* SPDX-License-Identifier: Apache-2.0 */
/* The VM object and its lifecycle: define, start (fork + exec QEMU, QMP
 * handshake, cont), stop (ACPI, forced, kill), pause/resume, reboot,
 * re-adoption of QEMUs that outlived a previous hsd, and exit handling. */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "argv.h"
#include "hsd.h"
#include "storage.h"
#include "warm.h"
#include "tool.h"
#include "launch.h"
#include "ticket.h"

#define QMP_SOCK "qmp.sock"
#define SERIAL_SOCK "console.sock"
#define PIDFILE "qemu.pid"
#define START_TIMEOUT 30.0
#define FORCE_KILL_TIMEOUT 5.0

typedef enum WaitKind {
	WAIT_START,
	WAIT_EXIT,
} WaitKind;

struct Waiter {
	Waiter *next;
	WaitKind kind;
	VmDoneCb cb;
	void *ud;
};

Vm *vm_find(Hsd *h, const char *name)
{
	for (Vm *vm = h->vms; vm; vm = vm->next)
		if (!strcmp(vm->spec.name, name))
			return vm;
	return NULL;
}

static void vm_insert(Hsd *h, Vm *vm)
{
	Vm **p = &h->vms;
	while (*p && strcmp((*p)->spec.name, vm->spec.name) < 0)
		p = &(*p)->next;
	vm->next = *p;
	*p = vm;
	h->n_vms++;
}

static void vm_unlink(Hsd *h, Vm *vm)
{
	for (Vm **p = &h->vms; *p; p = &(*p)->next)
		if (*p == vm) {
			*p = vm->next;
			h->n_vms--;
			return;
		}
}

static int vm_save_status(Vm *vm)
{
	int r = store_save_status(&vm->hsd->store, vm->spec.name, &vm->status);
	if (r < 0)
		log_error("vm %s: cannot save status: %s", vm->spec.name, strerror(-r));
	return r;
}

void vm_set_state(Vm *vm, VmState state)
{
	VmState old = vm->status.state;
	if (old == state)
		return;
	vm->status.state = state;
	vm_save_status(vm);
	log_info("vm %s: %s -> %s", vm->spec.name, vm_state_to_string(old),
		 vm_state_to_string(state));
	events_publish_state(vm, old);
}

static void waiters_add(Vm *vm, WaitKind kind, VmDoneCb cb, void *ud)
{
	if (!cb)
		return;
	Waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->kind = kind;
	w->cb = cb;
	w->ud = ud;
	Waiter **p = &vm->waiters;
	while (*p)
		p = &(*p)->next;
	*p = w;
}

static void waiters_complete(Vm *vm, WaitKind kind, const HsError *err)
{
	Waiter **p = &vm->waiters;
	while (*p) {
		Waiter *w = *p;
		if (w->kind != kind) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		if (w->cb)
			w->cb(vm, err, w->ud);
		free(w);
	}
}

void vm_forget_waiters(Hsd *h, void *ud)
{
	for (Vm *vm = h->vms; vm; vm = vm->next)
		for (Waiter *w = vm->waiters; w; w = w->next)
			if (w->ud == ud)
				w->cb = NULL;
}

/* The last line QEMU wrote to qemu.log (not hsd's own header and exec
 * lines), for error messages. */
static void file_tail(int dirfd, const char *name, char *out, size_t size)
{
	char buf[4096];
	out[0] = '\0';
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t start = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, start);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* A first line cut by the read window is not whole: skip it. */
	char *first = buf;
	if (start > 0) {
		char *nl = strchr(buf, '\n');
		if (!nl)
			return;
		first = nl + 1;
	}
	for (;;) {
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = '\0';
		char *nl = strrchr(first, '\n');
		char *line = nl ? nl + 1 : first;
		if (*line && !hs_str_has_prefix(line, "hsd: ") &&
		    !hs_str_has_prefix(line, "--- start")) {
			size_t len = strlen(line);
			if (len > size - 1)
				len = size - 1;
			memcpy(out, line, len);
			out[len] = '\0';
			return;
		}
		if (!nl)
			return;
		*nl = '\0';
		n = (ssize_t)(nl - buf);
	}
}

/* ---- process exit ---- */

static void vm_cleanup_process(Vm *vm)
{
	vm_unplace(vm);
	warm_vm_exited(vm);
	hostdev_vm_release(vm);
	network_vm_release(vm);
	firmware_vm_release(vm);
	/* Its cgroup goes with it (busy while the kernel still tears QEMU
	 * down: then at the next start or delete). */
	if (vm->hsd->has_cgroup) {
		HsError cerr;
		if (cgroup_vm_remove(&vm->hsd->cgroup, vm->spec.name, &cerr) < 0)
			log_debug("vm %s: cgroup not removed yet: %s", vm->spec.name, cerr.message);
	}
	if (vm->qmp)
		vm->qmp = qmp_client_free(vm->qmp);
	vm->qmp_ready = false;
	/* Its tickets and SPICE socket (viewers' connections went with QEMU). */
	spice_vm_release(vm);
	agent_vm_release(vm);
	metrics_vm_reset(vm);
	balloon_vm_reset(vm);
	console_detach_serial(vm);
	console_close_clients(vm);
	web_vm_stopped(vm);
	if (vm->pidfd >= 0) {
		ev_io_stop(vm->hsd->loop, &vm->pidfd_watch);
		close(vm->pidfd);
		vm->pidfd = -1;
	}
	ev_timer_stop(vm->hsd->loop, &vm->start_timer);
	ev_timer_stop(vm->hsd->loop, &vm->stop_timer);
	ev_timer_stop(vm->hsd->loop, &vm->exit_grace);
	vm->spawned = false;
	if (vm->run_dirfd >= 0) {
		unlinkat(vm->run_dirfd, QMP_SOCK, 0);
		unlinkat(vm->run_dirfd, SERIAL_SOCK, 0);
		unlinkat(vm->run_dirfd, PIDFILE, 0);
	}
}

static void vm_exited(Vm *vm, const char *how)
{
	VmState was = vm->status.state;
	VmState next;
	char reason[256];
	char mig_error[256] = "";
	json_t *mj = migrate_vm_json(vm);
	if (mj)
		snprintf(mig_error, sizeof(mig_error), "%s",
			 json_string_value(json_object_get(mj, "error")) ?: "");
	json_decref(mj);
	int mig = migrate_vm_exited(vm);

	if (mig == MIGRATE_EXIT_MIGRATED) {
		next = VM_STATE_MIGRATED;
		snprintf(reason, sizeof(reason), "migrated to %.200s", vm->status.migrated_to);
	} else if (mig == MIGRATE_EXIT_INCOMING_FAILED) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "incoming migration failed: %.200s",
			 mig_error[0] ? mig_error : how);
	} else if (vm->start_error[0]) {
		next = VM_STATE_CRASHED;
		snprintf(reason, sizeof(reason), "start failed: %s", vm->start_error);
	} else if (vm->stop_kind == STOP_KILL) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "killed (%s)", how);
	} else if (vm->guest_shutdown && vm->stop_kind == STOP_ACPI) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "shut down (ACPI power button)");
	} else if (vm->guest_shutdown && vm->stop_kind == STOP_AGENT) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "shut down (guest agent)");
	} else if (vm->guest_shutdown) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "guest powered off (%s)",
			 vm->shutdown_reason[0] ? vm->shutdown_reason : "guest-shutdown");
	} else if (vm->stop_kind != STOP_NONE) {
		next = VM_STATE_STOPPED;
		snprintf(reason, sizeof(reason), "stopped (forced, %s)", how);
	} else if (was == VM_STATE_STARTING) {
		char tail[200];
		file_tail(vm->state_dirfd, "qemu.log", tail, sizeof(tail));
		next = VM_STATE_CRASHED;
		snprintf(reason, sizeof(reason), "QEMU failed to start (%s)%s%s", how,
			 tail[0] ? ": " : "", tail);
	} else {
		next = VM_STATE_CRASHED;
		snprintf(reason, sizeof(reason), "QEMU %s unexpectedly", how);
	}
	log_info("vm %s: QEMU pid %d %s", vm->spec.name, (int)vm->status.pid, how);

	vm_cleanup_process(vm);
	snprintf(vm->status.exit_reason, sizeof(vm->status.exit_reason), "%s", reason);
	vm->status.pid = 0;
	vm->status.stopped_at = hs_wall();
	vm->stop_kind = STOP_NONE;
	vm->guest_shutdown = false;
	vm->shutdown_reason[0] = '\0';
	vm->start_error[0] = '\0';
	if (vm->status.state == next)
		vm_save_status(vm);
	else
		vm_set_state(vm, next); /* saves */
	console_shrink(vm);

	HsError err;
	hs_error_set(&err, -ECHILD, "vm-exited", "%s", reason);
	waiters_complete(vm, WAIT_START, &err);
	waiters_complete(vm, WAIT_EXIT, NULL);
}

static void describe_wstatus(int wstatus, char *how, size_t size)
{
	if (WIFEXITED(wstatus))
		snprintf(how, size, "exited with status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(how, size, "killed by signal %s",
			 sigabbrev_np(WTERMSIG(wstatus)) ? sigabbrev_np(WTERMSIG(wstatus)) : "?");
	else
		snprintf(how, size, "exited");
}

void vm_spawner_exit(pid_t pid, int wstatus, void *ud)
{
	Hsd *h = ud;
	if (tool_spawner_exit(h, pid, wstatus))
		return;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		if (vm->spawned && vm->status.pid == pid && vm->pidfd >= 0) {
			char how[64];
			describe_wstatus(wstatus, how, sizeof(how));
			vm_exited(vm, how);
			return;
		}
}

static void on_exit_grace(struct ev_loop *loop, ev_timer *w, int revents)
{
	/* The spawner never told (it died?): the exit is known all the same. */
	vm_exited(w->data, "exited");
}

static void on_pidfd(struct ev_loop *loop, ev_io *w, int revents)
{
	Vm *vm = w->data;
	ev_io_stop(loop, w);
	if (vm->spawned) {
		/* The spawner reaps it and sends the status in a moment. */
		spawner_dispatch(&vm->hsd->spawner, vm_spawner_exit, vm->hsd);
		if (vm->pidfd >= 0 && !ev_is_active(&vm->exit_grace)) {
			ev_timer_set(&vm->exit_grace, 2., 0.);
			ev_timer_start(loop, &vm->exit_grace);
		}
		return;
	}
	vm_exited(vm, "exited");
}

/* ---- QMP ---- */

static void vm_quit(Vm *vm)
{
	if (vm->qmp && qmp_client_execute(vm->qmp, "quit", NULL, vm->hsd->qmp_timeout, NULL,
					  NULL) == 0)
		return;
	if (vm->pidfd >= 0)
		hs_pidfd_send_signal(vm->pidfd, SIGTERM);
}

static void on_qmp_event(QmpClient *c, const char *name, json_t *data, double seconds, void *ud)
{
	Vm *vm = ud;

	events_publish(vm->hsd, json_pack("{s:s, s:s, s:s, s:O?, s:f}", "type", "qmp", "vm",
					  vm->spec.name, "event", name, "data", data, "time",
					  seconds));
	if (!strcmp(name, "DEVICE_DELETED")) {
		hostdev_vm_event(vm, name, data);
		network_vm_event(vm, name, data);
	}
	if (!strcmp(name, "SHUTDOWN")) {
		/* The first SHUTDOWN tells why; the one that our own 'quit'
		 * causes ("host-qmp-quit") must not overwrite it. */
		if (vm->shutdown_reason[0])
			return;
		const char *r = json_string_value(json_object_get(data, "reason"));
		snprintf(vm->shutdown_reason, sizeof(vm->shutdown_reason), "%s",
			 r && *r ? r : "unknown");
		vm->guest_shutdown = json_is_true(json_object_get(data, "guest")) ||
				     vm->stop_kind == STOP_ACPI || vm->stop_kind == STOP_AGENT;
		/* -no-shutdown kept QEMU alive to tell us; now let it go. */
		vm_quit(vm);
	} else if (!strcmp(name, "STOP")) {
		if (vm->status.state == VM_STATE_RUNNING && !vm->guest_shutdown)
			vm_set_state(vm, VM_STATE_PAUSED);
	} else if (!strcmp(name, "BALLOON_CHANGE")) {
		vm->balloon_actual = (uint64_t)json_integer_value(json_object_get(data, "actual"));
	} else if (!strcmp(name, "RESUME")) {
		if (vm->status.state == VM_STATE_PAUSED)
			vm_set_state(vm, VM_STATE_RUNNING);
	} else if (!strcmp(name, "VSERPORT_CHANGE")) {
		agent_vm_qmp_event(vm, name, data);
	} else if (!strcmp(name, "MIGRATION") || hs_str_has_prefix(name, "BLOCK_JOB_")) {
		storage_vm_event(vm, name, data);
		warm_vm_event(vm, name, data);
		migrate_vm_event(vm, name, data);
	}
}

static void on_qmp_closed(QmpClient *c, const HsError *err, void *ud)
{
	Vm *vm = ud;
	log_debug("vm %s: QMP closed: %s", vm->spec.name, err ? err->message : "");
	vm->qmp = qmp_client_free(vm->qmp);
	vm->qmp_ready = false;
}

static void start_failed(Vm *vm, const char *msg)
{
	log_error("vm %s: start failed: %s", vm->spec.name, msg);
	snprintf(vm->start_error, sizeof(vm->start_error), "%.199s", msg);
	if (vm->pidfd >= 0)
		hs_pidfd_send_signal(vm->pidfd, SIGKILL);
}

static void on_cont_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	if (err) {
		if (err->code != -ECANCELED)
			start_failed(vm, err->message);
		return;
	}
	ev_timer_stop(vm->hsd->loop, &vm->start_timer);
	vm->start_marks[START_DONE] = hs_now();
	vm_set_state(vm, VM_STATE_RUNNING);
	waiters_complete(vm, WAIT_START, NULL);
}

static void vm_ask_machine_type(Vm *vm);

static void on_adopt_pinned(Vm *vm, const HsError *err, void *ud)
{
	if (err)
		log_warning("vm %s: threads not re-pinned: %s", vm->spec.name, err->message);
}

static void on_adopt_status(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	vm->adopting = false;
	if (err)
		return; /* keep the stored state; calls will tell */
	const char *st = json_string_value(json_object_get(json_object_get(reply, "return"),
							   "status"));
	if (!st)
		return;
	log_info("vm %s: re-adopted QEMU pid %d (QEMU says '%s')", vm->spec.name,
		 (int)vm->status.pid, st);
	storage_vm_adopted(vm);
	vm_ask_machine_type(vm);
	migrate_vm_adopted(vm);
	if (vm->status.state == VM_STATE_INCOMING && vm->migration)
		return; /* the migration says what comes next */
	/* Its vCPU threads known again (live pin changes move them), its
	 * pins and cgroup sub-groups checked. */
	HsError e;
	if ((vm_spec_pinned(&vm->spec) || vm->placement) && strcmp(st, "shutdown") &&
	    pinning_start(vm, on_adopt_pinned, NULL, &e) < 0)
		log_warning("vm %s: threads not re-pinned: %s", vm->spec.name, e.message);
	if (!strcmp(st, "shutdown")) {
		/* The guest powered off while we were away. */
		vm->guest_shutdown = true;
		snprintf(vm->shutdown_reason, sizeof(vm->shutdown_reason), "while hsd was away");
		vm_quit(vm);
	} else if (!strcmp(st, "inmigrate") && vm->status.state == VM_STATE_STARTING) {
		/* A start from saved state (a memory snapshot, a warm clone)
		 * that hsd left half-loaded: start again from the beginning. */
		log_warning("vm %s: killing QEMU left loading its saved state", vm->spec.name);
		vm->stop_kind = STOP_KILL;
		hs_pidfd_send_signal(vm->pidfd, SIGKILL);
	} else if (!strcmp(st, "running")) {
		vm_set_state(vm, VM_STATE_RUNNING);
	} else if (!strcmp(st, "prelaunch") && vm->status.state == VM_STATE_STARTING) {
		qmp_client_execute(vm->qmp, "cont", NULL, vm->hsd->qmp_timeout, on_cont_reply, vm);
	} else if (vm->status.state != VM_STATE_STOPPING) {
		vm_set_state(vm, VM_STATE_PAUSED);
	}
}

static void vm_start_finish(Vm *vm);
static void on_incoming_loaded(Vm *vm, const HsError *err);

static void on_qmp_ready(QmpClient *c, json_t *greeting, void *ud)
{
	Vm *vm = ud;
	vm->qmp_ready = true;
	balloon_vm_ready(vm);
	if (vm->adopting)
		network_vm_adopted(vm);
	else if (vm->status.state == VM_STATE_STARTING)
		network_vm_qmp_ready(vm); /* before cont */
	spice_vm_qmp_ready(vm);
	agent_vm_qmp_ready(vm);
	if (vm->adopting) {
		qmp_client_execute(c, "query-status", NULL, vm->hsd->qmp_timeout, on_adopt_status,
				   vm);
		return;
	}
	if (vm->status.state != VM_STATE_STARTING)
		return;
	vm->start_marks[START_QMP] = hs_now();
	if (storage_vm_incoming(vm, on_incoming_loaded) > 0)
		return; /* RAM from a memory snapshot first */
	vm_start_finish(vm);
}

static void on_pinned(Vm *vm, const HsError *err, void *ud);

/* The answer of one step of a start: false when the start goes no further
 * (the step failed: the start fails, saying it could not `what`; or the VM
 * is no longer starting). */
static bool start_step_ok(Vm *vm, const HsError *err, const char *what)
{
	if (err) {
		char msg[200];
		snprintf(msg, sizeof(msg), "cannot %s: %.160s", what, err->message);
		start_failed(vm, msg);
		return false;
	}
	return vm->status.state == VM_STATE_STARTING;
}

static void on_limits_applied(Vm *vm, const HsError *err, void *ud)
{
	if (!start_step_ok(vm, err, "apply the VM's limits"))
		return;
	HsError e;
	bool pin = vm_spec_pinned(&vm->spec) || vm->placement;
	if (pin && pinning_start(vm, on_pinned, NULL, &e) < 0)
		start_failed(vm, e.message);
	else if (!pin)
		on_pinned(vm, NULL, NULL);
}

static void on_pinned(Vm *vm, const HsError *err, void *ud)
{
	if (!start_step_ok(vm, err, "pin the VM's threads"))
		return;
	if (vm->stop_kind == STOP_NONE && vm->start_paused) {
		/* Start paused was asked for. */
		ev_timer_stop(vm->hsd->loop, &vm->start_timer);
		vm->start_marks[START_DONE] = hs_now();
		vm_set_state(vm, VM_STATE_PAUSED);
		waiters_complete(vm, WAIT_START, NULL);
		vm_ask_machine_type(vm);
		return;
	}
	qmp_client_execute(vm->qmp, "cont", NULL, vm->hsd->qmp_timeout, on_cont_reply, vm);
	/* after cont: the guest runs first */
	vm_ask_machine_type(vm);
}

/* Limits first (the guest never runs unthrottled), then run. */
static void on_machine_type(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	const char *t = json_string_value(json_object_get(reply, "return"));
	if (!t)
		return;
	/* "pc-q35-7.2-machine": the QOM type of the machine "pc-q35-7.2". */
	size_t n = strlen(t);
	if (n > 8 && !strcmp(t + n - 8, "-machine"))
		n -= 8;
	snprintf(vm->machine_type, sizeof(vm->machine_type), "%.*s", (int)n, t);
}

static void on_disk_sizes(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	size_t i;
	json_t *b;
	json_array_foreach (json_object_get(reply, "return"), i, b) {
		const char *qdev = json_string_value(json_object_get(b, "qdev"));
		json_int_t size = json_integer_value(json_object_get(
			json_object_get(json_object_get(b, "inserted"), "image"), "virtual-size"));
		unsigned d;
		if (qdev && size > 0 && sscanf(qdev, "/machine/peripheral/disk%u/", &d) == 1 &&
		    d < VM_MAX_DISKS)
			vm->disk_bytes[d] = (uint64_t)size;
	}
}

/* The versioned machine behind an alias ("q35"), and each disk's size:
 * a migration's destination runs that machine and makes disks that size. */
static void vm_ask_machine_type(Vm *vm)
{
	vm->machine_type[0] = '\0';
	memset(vm->disk_bytes, 0, sizeof(vm->disk_bytes));
	qmp_client_execute(vm->qmp, "qom-get",
			   json_pack("{s:s, s:s}", "path", "/machine", "property", "type"),
			   vm->hsd->qmp_timeout, on_machine_type, vm);
	qmp_client_execute(vm->qmp, "query-block", NULL, vm->hsd->qmp_timeout, on_disk_sizes,
			   vm);
}

static void vm_start_finish(Vm *vm)
{
	HsError err;
	if (limits_apply(vm, &vm->spec, false, false, on_limits_applied, NULL, &err) < 0)
		start_failed(vm, err.message);
}

static void on_incoming_loaded(Vm *vm, const HsError *err)
{
	if (err) {
		start_failed(vm, err->message);
		return;
	}
	vm->start_marks[START_LOADED] = hs_now();
	/* A clone's guest runs from here on: its later starts boot. */
	if (warm_vm_fresh(vm))
		warm_vm_resumed(vm);
	if (vm->status.state == VM_STATE_STARTING)
		vm_start_finish(vm);
}

static const QmpCallbacks qmp_callbacks = {
	.ready = on_qmp_ready,
	.event = on_qmp_event,
	.closed = on_qmp_closed,
};

int vm_unix_path(Vm *vm, const char *file, struct sockaddr_un *sa, HsError *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/vms/%s/%s", vm->hsd->run_dir,
		     vm->spec.name, file) >= (int)sizeof(sa->sun_path))
		return hs_error_set(err, -ENAMETOOLONG, "internal",
				    "socket path under run dir '%s' is too long", vm->hsd->run_dir);
	return 0;
}

int vm_unix_listen(Vm *vm, const char *file, int backlog, HsError *err)
{
	struct sockaddr_un sa;
	int r = vm_unix_path(vm, file, &sa, err);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "socket: %m");
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0)
		return hs_error_set(err, -errno, "internal", "cannot listen on %s: %m", sa.sun_path);
	return TAKE_FD(fd);
}

int vm_unix_connect(Vm *vm, const char *file)
{
	struct sockaddr_un sa;
	if (vm_unix_path(vm, file, &sa, NULL) < 0)
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		return -errno;
	return TAKE_FD(fd);
}

static int vm_open_run_dir(Vm *vm)
{
	if (vm->run_dirfd >= 0)
		return 0;
	if (mkdirat(vm->hsd->run_vms_dirfd, vm->spec.name, 0700) < 0 && errno != EEXIST)
		return -errno;
	vm->run_dirfd = openat(vm->hsd->run_vms_dirfd, vm->spec.name,
			       O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return vm->run_dirfd < 0 ? -errno : 0;
}

static void vm_watch_process(Vm *vm, int pidfd, pid_t pid, bool spawned)
{
	vm->pidfd = pidfd;
	vm->spawned = spawned;
	vm->status.pid = pid;
	ev_io_init(&vm->pidfd_watch, on_pidfd, pidfd, EV_READ);
	vm->pidfd_watch.data = vm;
	ev_io_start(vm->hsd->loop, &vm->pidfd_watch);
}

static int vm_connect(Vm *vm)
{
	int fd = vm_unix_connect(vm, QMP_SOCK);
	if (fd < 0)
		return fd;
	vm->qmp = qmp_client_new(vm->hsd->loop, fd, &qmp_callbacks, NULL, vm);
	if (!vm->qmp) {
		close(fd);
		return -ENOMEM;
	}
	fd = vm_unix_connect(vm, SERIAL_SOCK);
	if (fd >= 0)
		console_attach_serial(vm, fd);
	return 0;
}

static void on_start_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Vm *vm = w->data;
	start_failed(vm, "QEMU did not become ready in time");
}

static void rotate_log(int dirfd, const char *name, off_t max)
{
	struct stat st;
	char old[64];
	if (fstatat(dirfd, name, &st, 0) == 0 && st.st_size > max) {
		snprintf(old, sizeof(old), "%s.1", name);
		renameat(dirfd, name, dirfd, old);
	}
}

/* Starts QEMU now. The caller has checked that it may. */
static int vm_launch(Vm *vm, bool paused, HsError *err)
{
	Hsd *h = vm->hsd;
	int r;

	r = vm_open_run_dir(vm);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot make run dir: %s", strerror(-r));

	_cleanup_close_ int qmp_listen = vm_unix_listen(vm, QMP_SOCK, 4, err);
	if (qmp_listen < 0)
		return qmp_listen;
	_cleanup_close_ int serial_listen = vm_unix_listen(vm, SERIAL_SOCK, 4, err);
	if (serial_listen < 0)
		return serial_listen;

	rotate_log(vm->state_dirfd, "qemu.log", 1 << 20);
	rotate_log(vm->state_dirfd, "console.log", 4 << 20);
	_cleanup_close_ int log_fd = openat(vm->state_dirfd, "qemu.log",
					    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open qemu.log: %m");

	QemuLaunch launch = {
		.binary = h->host.qemu_binary,
		.sandbox = h->host.qemu_sandbox,
		.tcg_tb_size_mib = h->tcg_tb_size,
	};
	ChildFds fds;
	r = launch_prepare(&vm->spec, &h->allowed, vm->state_dirfd, h->host.rootfd, qmp_listen,
			   serial_listen, &fds, &launch, err);
	if (r < 0)
		return r;
	static QemuDiskChain chains[VM_MAX_DISKS];
	static char clone_info[WARM_CLONE_INFO_SIZE];
	r = storage_vm_launch(vm, &fds, &launch, chains, err);
	if (r == 0)
		r = warm_vm_launch(vm, &fds, &launch, clone_info, err);
	launch.incoming |= migrate_vm_incoming(vm);
	if (r == 0)
		r = vm_place(vm, &launch, err);
	if (r == 0)
		r = network_vm_launch(vm, &fds, &launch, err);
	hostdev_vm_launch(vm, &launch);
	if (r == 0)
		r = spice_vm_launch(vm, &launch, err);
	if (r == 0)
		r = agent_vm_launch(vm, &fds, &launch, err);
	/* Last: swtpm is started here, and stopped again on every failure
	 * below until QEMU's exit does it. */
	if (r == 0)
		r = firmware_vm_launch(vm, &fds, &launch, err);
	if (r < 0) {
		firmware_vm_release(vm);
		fds.src[0] = fds.src[1] = -1;
		child_fds_close(&fds);
		return r;
	}
	char **argv = NULL;
	r = qemu_argv_build(&vm->spec, &launch, &argv);
	if (r < 0) {
		firmware_vm_release(vm);
		fds.src[0] = fds.src[1] = -1;
		child_fds_close(&fds);
		return hs_error_set(err, r, "internal", "cannot build QEMU's command line");
	}
	{
		_cleanup_free_ char *line = strv_join(argv);
		log_debug("vm %s: exec %s", vm->spec.name, line ? line : "?");
		if (line) {
			char hdr[64];
			int n = snprintf(hdr, sizeof(hdr), "\n--- start %.0f ---\n", hs_wall());
			(void)!write(log_fd, hdr, (size_t)n);
			(void)!write(log_fd, "hsd: exec ", 10);
			(void)!write(log_fd, line, strlen(line));
			(void)!write(log_fd, "\n", 1);
		}
	}

	/* Record the intent before acting: a crash from here on is sorted
	 * out on restart from the pidfile. */
	vm->status.started_at = hs_wall();
	vm->status.exit_reason[0] = '\0';
	vm->balloon_actual = 0; /* known again at the guest's first BALLOON_CHANGE */
	vm->stop_kind = STOP_NONE;
	vm->guest_shutdown = false;
	vm->start_paused = paused;
	vm->start_mono = hs_now();
	vm->start_error[0] = '\0';
	/* No QEMU without its record on disk: if the intent cannot be saved
	 * (disk full), the start is refused. */
	VmStatus before = vm->status;
	vm->status.state = VM_STATE_STARTING;
	r = vm_save_status(vm);
	if (r < 0) {
		firmware_vm_release(vm);
		vm->status = before;
		fds.src[0] = fds.src[1] = -1;
		child_fds_close(&fds);
		strv_free(argv);
		return hs_error_set(err, r, r == -ENOSPC || r == -EDQUOT ? "no-space" : "internal",
				    "cannot record the start of VM '%s': %s", vm->spec.name,
				    strerror(-r));
	}
	vm->status.state = before.state;
	vm_set_state(vm, VM_STATE_STARTING);

	int go[2];
	if (pipe2(go, O_CLOEXEC) < 0) {
		r = -errno;
		firmware_vm_release(vm);
		fds.src[0] = fds.src[1] = -1;
		child_fds_close(&fds);
		strv_free(argv);
		vm->status.state = VM_STATE_STOPPED;
		vm_save_status(vm);
		return hs_error_set(err, r, "internal", "pipe: %s", strerror(-r));
	}
	/* Its cgroup, made (or re-found) now; QEMU starts in it. */
	int cg_fd = -1;
	if (h->has_cgroup) {
		HsError cerr = {0};
		CgroupLimits cl;
		vm_cgroup_limits(vm, &vm->spec, &cl);
		int cr = cgroup_vm_create(&h->cgroup, vm->spec.name, &cl, &cerr);
		if (cr >= 0) {
			cg_fd = cgroup_vm_fd(&h->cgroup, vm->spec.name);
			vm->cgroup_skipped = (unsigned)cr;
			if (cr > 0) {
				char names[64];
				log_warning("vm %s: limits of %s not applied: %s", vm->spec.name,
					    cgroup_controllers_format((unsigned)cr, names,
								      sizeof(names)),
					    h->cgroup.missing);
			}
		} else {
			log_warning("vm %s: no cgroup: %s", vm->spec.name, cerr.message);
		}
	}
	pid_t pid = spawner_spawn(&h->spawner, argv, &fds, log_fd, vm->run_dirfd, PIDFILE, go[0],
				  cg_fd, &h->qemu_user, !vm->spec.no_mem_merge, vm_spawner_exit, h,
				  err);
	if (cg_fd >= 0)
		close(cg_fd);
	close(go[0]);
	strv_free(argv);
	/* The spawner passed copies to QEMU; the listening sockets close with
	 * their _cleanup_close_ owners. */
	fds.src[0] = fds.src[1] = -1;
	child_fds_close(&fds);
	if (pid < 0) {
		close(go[1]);
		firmware_vm_release(vm);
		vm->status.state = VM_STATE_STOPPED;
		snprintf(vm->status.exit_reason, sizeof(vm->status.exit_reason), "%.200s",
			 err ? err->message : "cannot start QEMU");
		vm_save_status(vm);
		return pid;
	}

	vm->start_marks[START_SPAWNED] = hs_now();
	int pidfd = hs_pidfd_open(pid);
	if (pidfd < 0) {
		r = -errno;
		close(go[1]); /* the child sees EOF and exits without exec */
		firmware_vm_release(vm);
		vm->status.state = VM_STATE_STOPPED;
		vm_save_status(vm);
		return hs_error_set(err, r, "internal", "pidfd_open: %s", strerror(-r));
	}
	vm_watch_process(vm, pidfd, pid, true);
	/* VFIO pins guest RAM: QEMU's locked-memory limit covers it, set
	 * while the child still waits for its go (and is still root). */
	if (launch.n_hostfns && hostdev_set_memlock(vm, pid, err) < 0) {
		close(go[1]);
		start_failed(vm, err->message);
		return 0;
	}
	r = vm_save_status(vm);
	if (r < 0) {
		/* Without the pid on disk, QEMU must not run: the child sees EOF
		 * and exits; its exit is handled as a failed start. */
		close(go[1]);
		start_failed(vm, "cannot record QEMU's pid (state dir full?)");
		snprintf(vm->start_error, sizeof(vm->start_error),
			 "cannot record QEMU's pid: %s", strerror(-r));
		return 0;
	}
	/* The pid is on disk: the child may exec QEMU now. */
	(void)!write(go[1], "g", 1);
	close(go[1]);

	r = vm_connect(vm);
	if (r < 0) {
		start_failed(vm, "cannot connect to QMP");
	}
	ev_timer_init(&vm->start_timer, on_start_timeout, START_TIMEOUT, 0.);
	vm->start_timer.data = vm;
	ev_timer_start(h->loop, &vm->start_timer);
	return 0;
}

/* ---- admission: overcommit limit and pacing ---- */

static uint64_t committed_bytes(Hsd *h)
{
	uint64_t sum = 0;
	for (Vm *o = h->vms; o; o = o->next)
		if (vm_state_is_active(o->status.state) || o->pacing || o->warm_loading)
			sum += o->spec.memory_mib << 20;
	return sum;
}

/* Memory hsd keeps free for the host itself. */
static uint64_t host_reserve(const HostInfo *host)
{
	uint64_t r = host->mem_total / 32;
	return r < (512ull << 20) ? 512ull << 20 : r;
}

/* Guest RAM a VM takes from the host's ordinary memory: none with huge
 * pages (those come from the pools, set aside already and checked at
 * launch: place.c). */
static uint64_t ordinary_ram_bytes(const VmSpec *s)
{
	return s->hugepage_size ? 0 : s->memory_mib << 20;
}

/* 0: start now; 1: wait for memory; <0: refused. */
static int vm_admit(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	/* MemTotal and MemAvailable (placement and host devices read what
	 * they need themselves) */
	host_read_meminfo(h->host.rootfd, &h->host.mem_total, &h->host.mem_available);
	uint64_t mem = ordinary_ram_bytes(&vm->spec);
	double limit = h->overcommit * (double)h->host.mem_total;
	uint64_t committed = committed_bytes(h) + (vm->pacing ? 0 : vm->spec.memory_mib << 20);
	if (h->host.mem_total && (double)committed > limit)
		return hs_error_set(err, -EOVERFLOW, "overcommit",
				    "starting '%s' (%" PRIu64 " MiB) would commit %.1f GiB of guest "
				    "memory, over the limit of %.2f x %.1f GiB = %.1f GiB "
				    "(--overcommit)",
				    vm->spec.name, vm->spec.memory_mib, (double)committed / (1 << 30),
				    h->overcommit, (double)h->host.mem_total / (1 << 30),
				    limit / (1 << 30));
	/* VMs started in the last minute have not touched all their memory
	 * yet (and KSM has not merged it): count what they may still take. */
	uint64_t pending = 0;
	double wall = hs_wall();
	for (Vm *o = h->vms; o; o = o->next) {
		if (o == vm || !vm_state_is_active(o->status.state) || o->status.pid <= 0 ||
		    wall - o->status.started_at > 60)
			continue;
		/* Huge pages are not in VmRSS, and were taken at start. */
		uint64_t nominal = ordinary_ram_bytes(&o->spec);
		uint64_t rss = host_process_rss(h->host.rootfd, o->status.pid);
		/* A warm clone's pages still its template's are not its own:
		 * it may yet write each of them (copy-on-write). */
		uint64_t shared = warm_vm_shared_bytes(o);
		rss = rss > shared ? rss - shared : 0;
		if (rss < nominal)
			pending += nominal - rss;
	}
	uint64_t need = mem + host_reserve(&h->host) + pending;
	return h->host.mem_available >= need ? 0 : 1;
}

/* QEMU's start once what it maps is there: 1 while a warm template's RAM
 * loads (the start goes on from vm_warm_ready). */
static int vm_launch_when_ready(Vm *vm, bool paused, HsError *err)
{
	int r = warm_vm_prepare(vm, err);
	return r == 0 ? vm_launch(vm, paused, err) : r;
}

static void vm_start_failed_early(Vm *vm, const HsError *err)
{
	vm_unplace(vm); /* not started: holds no node */
	hostdev_vm_release(vm);
	network_vm_release(vm);
	waiters_complete(vm, WAIT_START, err);
}

static void on_hostdevs_bound(Vm *vm, const HsError *err, void *ud)
{
	HsError e;
	if (!err && vm_launch_when_ready(vm, vm->start_paused, &e) < 0)
		err = &e;
	if (err)
		vm_start_failed_early(vm, err);
}

void vm_warm_ready(Vm *vm, const HsError *err)
{
	HsError e;
	vm->warm_loading = false;
	if (!err && vm_launch(vm, vm->start_paused, &e) < 0)
		err = &e;
	if (err)
		vm_start_failed_early(vm, err);
}

/* QEMU's start, after its host devices are bound and its warm template's
 * RAM is loaded (1: the start goes on from on_hostdevs_bound or
 * vm_warm_ready). */
static int vm_bind_and_launch(Vm *vm, bool paused, HsError *err)
{
	vm->start_paused = paused;
	int r = hostdev_vm_bind(vm, on_hostdevs_bound, NULL, err);
	return r == 0 ? vm_launch_when_ready(vm, paused, err) : r;
}

static void on_pacing(struct ev_loop *loop, ev_timer *w, int revents)
{
	Vm *vm = w->data;
	HsError err = {0};
	int r = vm_admit(vm, &err);
	if (r == 1 && hs_now() - vm->pacing_since < vm->hsd->pacing_timeout)
		return; /* KSM is boosted meanwhile; look again */
	ev_timer_stop(loop, w);
	vm->pacing = false;
	if (r == 1) {
		HostInfo *host = &vm->hsd->host;
		hs_error_set(&err, -ENOMEM, "insufficient-memory",
			     "VM '%s' needs %" PRIu64 " MiB plus the host's reserve of %" PRIu64
			     " MiB, but only %" PRIu64 " MiB were available after waiting %.0f s "
			     "for KSM and ballooning to free memory",
			     vm->spec.name, ordinary_ram_bytes(&vm->spec) >> 20, host_reserve(host) >> 20,
			     host->mem_available >> 20, vm->hsd->pacing_timeout);
		r = -ENOMEM;
	} else if (r == 0) {
		log_info("vm %s: memory available after %.1f s; starting", vm->spec.name,
			 hs_now() - vm->pacing_since);
		r = vm_bind_and_launch(vm, vm->start_paused, &err);
		if (r < 0) {
			vm_unplace(vm); /* not started: holds no node */
			network_vm_release(vm);
		}
	}
	if (r < 0)
		waiters_complete(vm, WAIT_START, &err);
}

int vm_start(Vm *vm, bool paused, VmDoneCb cb, void *ud, HsError *err)
{
	Hsd *h = vm->hsd;

	if (vm->deleting)
		return hs_error_set(err, -ENOENT, "not-found", "no VM named '%s'", vm->spec.name);
	if (vm->status.state == VM_STATE_MIGRATED)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' migrated to %s: this is the record it left here (delete "
				    "it, or migrate the VM back)",
				    vm->spec.name, vm->status.migrated_to);
	if (vm_state_is_active(vm->status.state) || vm->pacing || vm->warm_loading ||
	    hostdev_vm_busy(vm))
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is already %s", vm->spec.name,
				    vm->pacing ? "starting (waiting for memory)"
				    : vm->warm_loading ? "starting (loading its warm template's RAM)"
				    : hostdev_vm_busy(vm)
					    ? "binding or releasing its host devices (try again in a moment)"
					    : vm_state_to_string(vm->status.state));
	if (vm->spec.accel == VM_ACCEL_KVM && !h->host.kvm_usable)
		return hs_error_set(err, -ENODEV, "kvm-unavailable",
				    "VM '%s' asks for accel 'kvm' but KVM is not usable: %s",
				    vm->spec.name, h->host.kvm_reason);
	int r = storage_vm_check_idle(vm, err);
	if (r < 0)
		return r;
	memset(vm->start_marks, 0, sizeof(vm->start_marks));
	vm->start_marks[START_ASKED] = hs_now();
	r = vm_admit(vm, err);
	if (r < 0)
		return r;
	if (r == 1) {
		/* Pacing: hold the start until the host can back it, while
		 * KSM scans hard; the caller's answer waits. */
		log_info("vm %s: waiting for memory (%" PRIu64 " MiB available)", vm->spec.name,
			 h->host.mem_available >> 20);
		vm->pacing = true;
		vm->pacing_since = hs_now();
		vm->start_paused = paused;
		ev_timer_init(&vm->pacing_timer, on_pacing, 0.5, 0.5);
		vm->pacing_timer.data = vm;
		ev_timer_start(h->loop, &vm->pacing_timer);
		waiters_add(vm, WAIT_START, cb, ud);
		return 0;
	}
	r = vm_bind_and_launch(vm, paused, err);
	if (r < 0) {
		vm_unplace(vm); /* not started: holds no node */
		network_vm_release(vm);
		return r;
	}
	waiters_add(vm, WAIT_START, cb, ud);
	return 0;
}

unsigned vm_count_pacing(Hsd *h)
{
	unsigned n = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		n += vm->pacing;
	return n;
}

/* ---- stop ---- */

static void on_stop_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Vm *vm = w->data;
	if (vm->pidfd < 0)
		return;
	if (vm->stop_kind == STOP_ACPI || vm->stop_kind == STOP_AGENT) {
		log_info("vm %s: no %s shutdown in time; forcing", vm->spec.name,
			 vm->stop_kind == STOP_ACPI ? "ACPI" : "guest agent");
		vm->stop_kind = STOP_FORCE;
		hs_pidfd_send_signal(vm->pidfd, SIGTERM);
		ev_timer_set(&vm->stop_timer, FORCE_KILL_TIMEOUT, 0.);
		ev_timer_start(loop, &vm->stop_timer);
	} else {
		log_info("vm %s: QEMU ignores SIGTERM; killing", vm->spec.name);
		hs_pidfd_send_signal(vm->pidfd, SIGKILL);
	}
}

/* The shutdown request failed: no use waiting for the guest. */
static void stop_request_failed(Vm *vm, StopKind kind, const HsError *err)
{
	if (err && err->code != -ECANCELED && vm->pidfd >= 0 && vm->stop_kind == kind) {
		log_info("vm %s: %s failed (%s); forcing", vm->spec.name,
			 kind == STOP_ACPI ? "system_powerdown" : "guest-shutdown", err->message);
		vm->stop_kind = STOP_FORCE;
		hs_pidfd_send_signal(vm->pidfd, SIGTERM);
		/* SIGKILL if QEMU does not go within the force timeout. */
		ev_timer_stop(vm->hsd->loop, &vm->stop_timer);
		ev_timer_set(&vm->stop_timer, FORCE_KILL_TIMEOUT, 0.);
		ev_timer_start(vm->hsd->loop, &vm->stop_timer);
	}
}

static void on_powerdown_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	stop_request_failed(ud, STOP_ACPI, err);
}

static void on_agent_shutdown(Vm *vm, const HsError *err, json_t *ret, void *ud)
{
	stop_request_failed(vm, STOP_AGENT, err);
}

int vm_stop(Vm *vm, StopKind kind, double timeout, VmDoneCb cb, void *ud, HsError *err)
{
	if (!vm_state_is_active(vm->status.state) || vm->pidfd < 0)
		return hs_error_set(err, -ENOTCONN, "not-running", "VM '%s' is not running (%s)",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	if (timeout <= 0)
		timeout = vm->hsd->default_stop_timeout;
	/* A paused or starting guest cannot act on the power button. */
	if (kind == STOP_ACPI && (vm->status.state != VM_STATE_RUNNING || !vm->qmp))
		kind = STOP_FORCE;
	/* Nor run its agent; and an agent that is not there is said, not
	 * replaced by another way. */
	if (kind == STOP_AGENT && kind > vm->stop_kind) {
		if (vm->status.state != VM_STATE_RUNNING)
			return hs_error_set(err, -ENOTCONN, "agent-unavailable",
					    "VM '%s' is %s: its guest agent cannot shut it down",
					    vm->spec.name, vm_state_to_string(vm->status.state));
		if (agent_vm_shutdown(vm, on_agent_shutdown, NULL, err) < 0)
			return -ENOTCONN;
	}
	if (kind > vm->stop_kind) {
		vm->stop_kind = kind;
		ev_timer_stop(vm->hsd->loop, &vm->stop_timer);
		ev_timer_init(&vm->stop_timer, on_stop_timeout,
			      kind <= STOP_ACPI ? timeout : FORCE_KILL_TIMEOUT, 0.);
		vm->stop_timer.data = vm;
		switch (kind) {
		case STOP_ACPI:
			qmp_client_execute(vm->qmp, "system_powerdown", NULL, vm->hsd->qmp_timeout,
					   on_powerdown_reply, vm);
			ev_timer_start(vm->hsd->loop, &vm->stop_timer);
			break;
		case STOP_AGENT: /* guest-shutdown sent above */
			ev_timer_start(vm->hsd->loop, &vm->stop_timer);
			break;
		case STOP_FORCE:
			hs_pidfd_send_signal(vm->pidfd, SIGTERM);
			ev_timer_start(vm->hsd->loop, &vm->stop_timer);
			break;
		case STOP_KILL:
			hs_pidfd_send_signal(vm->pidfd, SIGKILL);
			break;
		case STOP_NONE:
		default:
			break;
		}
		if (vm->status.state != VM_STATE_STARTING)
			vm_set_state(vm, VM_STATE_STOPPING);
	}
	waiters_add(vm, WAIT_EXIT, cb, ud);
	return 0;
}

/* ---- simple QMP-backed actions ---- */

typedef struct CmdCtx {
	Vm *vm;
	VmDoneCb cb;
	void *ud;
	VmState on_success;
	bool set_state;
} CmdCtx;

/* A QMP call cut short because QEMU went away is answered as such (500
 * vm-exited), not as a transport detail; at hsd's own shutdown, 503. */
static const HsError *qmp_error_for_caller(Vm *vm, const HsError *err, HsError *buf)
{
	if (!err)
		return NULL;
	if (vm->hsd->stopping) {
		hs_error_set(buf, -ECANCELED, "shutting-down", "hsd is shutting down");
		return buf;
	}
	if (!strcmp(err->kind, "disconnected") || !strcmp(err->kind, "cancelled")) {
		hs_error_set(buf, -ECHILD, "vm-exited",
			     "VM '%s': QEMU exited or closed its monitor during the call (%s)",
			     vm->spec.name, err->message);
		return buf;
	}
	return err;
}

static void on_cmd_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	CmdCtx *ctx = ud;
	HsError buf;
	if (!err && ctx->set_state && vm_state_is_active(ctx->vm->status.state))
		vm_set_state(ctx->vm, ctx->on_success);
	if (ctx->cb)
		ctx->cb(ctx->vm, qmp_error_for_caller(ctx->vm, err, &buf), ctx->ud);
	free(ctx);
}

typedef struct PassCtx {
	Vm *vm;
	QmpReplyCb cb;
	void *ud;
} PassCtx;

static void on_pass_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	PassCtx *ctx = ud;
	HsError buf;
	ctx->cb(c, reply, qmp_error_for_caller(ctx->vm, err, &buf), ctx->ud);
	free(ctx);
}

static int vm_require_qmp(Vm *vm, HsError *err)
{
	if (!vm_state_is_active(vm->status.state))
		return hs_error_set(err, -ENOTCONN, "not-running", "VM '%s' is not running (%s)",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	if (!vm->qmp)
		return hs_error_set(err, -ENOTCONN, "qmp-unavailable",
				    "VM '%s': no QMP connection to its QEMU", vm->spec.name);
	return 0;
}

static int vm_command(Vm *vm, const char *cmd, bool set_state, VmState on_success, VmDoneCb cb,
		      void *ud, HsError *err)
{
	int r = vm_require_qmp(vm, err);
	if (r < 0)
		return r;
	CmdCtx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	*ctx = (CmdCtx){.vm = vm, .cb = cb, .ud = ud, .on_success = on_success,
			.set_state = set_state};
	r = qmp_client_execute(vm->qmp, cmd, NULL, vm->hsd->qmp_timeout, on_cmd_reply, ctx);
	if (r < 0) {
		free(ctx);
		return hs_error_set(err, r, "qmp-unavailable", "VM '%s': QMP is closed",
				    vm->spec.name);
	}
	return 0;
}

int vm_reboot(Vm *vm, VmDoneCb cb, void *ud, HsError *err)
{
	if (vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED)
		return hs_error_set(err, -ENOTCONN, "not-running", "VM '%s' is not running (%s)",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	return vm_command(vm, "system_reset", false, VM_STATE_RUNNING, cb, ud, err);
}

int vm_pause(Vm *vm, bool pause, VmDoneCb cb, void *ud, HsError *err)
{
	VmState want = pause ? VM_STATE_RUNNING : VM_STATE_PAUSED;
	int r = migrate_vm_check_idle(vm, err);
	if (r < 0)
		return r;
	if (vm->status.state != want) {
		if (vm->status.state == (pause ? VM_STATE_PAUSED : VM_STATE_RUNNING))
			return hs_error_set(err, -EALREADY, "conflict", "VM '%s' is already %s",
					    vm->spec.name, vm_state_to_string(vm->status.state));
		return hs_error_set(err, -ENOTCONN, "not-running", "VM '%s' is %s",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	}
	return vm_command(vm, pause ? "stop" : "cont", true,
			  pause ? VM_STATE_PAUSED : VM_STATE_RUNNING, cb, ud, err);
}

int vm_qmp_passthrough(Vm *vm, json_t *msg, QmpReplyCb cb, void *ud, HsError *err)
{
	int r = vm_require_qmp(vm, err);
	if (r < 0) {
		json_decref(msg);
		return r;
	}
	PassCtx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		json_decref(msg);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	*ctx = (PassCtx){.vm = vm, .cb = cb, .ud = ud};
	r = qmp_client_execute_raw(vm->qmp, msg, vm->hsd->qmp_timeout, on_pass_reply, ctx, err);
	if (r < 0)
		free(ctx);
	return r;
}

/* ---- define / load / delete ---- */

static Vm *vm_new(Hsd *h, VmSpec *spec)
{
	Vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return NULL;
	vm->hsd = h;
	vm->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	vm->pidfd = -1;
	vm->serial_fd = -1;
	vm->run_dirfd = -1;
	vm->state_dirfd = -1;
	ev_init(&vm->start_timer, on_start_timeout);
	vm->start_timer.data = vm;
	ev_init(&vm->stop_timer, on_stop_timeout);
	vm->stop_timer.data = vm;
	ev_init(&vm->exit_grace, on_exit_grace);
	vm->exit_grace.data = vm;
	ev_init(&vm->pacing_timer, on_pacing);
	vm->pacing_timer.data = vm;
	return vm;
}

static void vm_free(Vm *vm)
{
	if (!vm)
		return;
	HsError err;
	hs_error_set(&err, -ECANCELED, "shutting-down", "hsd is shutting down");
	waiters_complete(vm, WAIT_START, &err);
	waiters_complete(vm, WAIT_EXIT, &err);
	migrate_vm_free(vm);
	hostdev_vm_free(vm);
	network_vm_free(vm);
	firmware_vm_free(vm);
	/* Leave QEMU running: the next hsd adopts it. */
	if (vm->qmp)
		vm->qmp = qmp_client_free(vm->qmp);
	agent_vm_free(vm);
	spice_vm_release(vm);
	console_detach_serial(vm);
	console_close_clients(vm);
	web_vm_stopped(vm);
	if (vm->pidfd >= 0) {
		ev_io_stop(vm->hsd->loop, &vm->pidfd_watch);
		close(vm->pidfd);
	}
	ev_timer_stop(vm->hsd->loop, &vm->start_timer);
	ev_timer_stop(vm->hsd->loop, &vm->stop_timer);
	ev_timer_stop(vm->hsd->loop, &vm->exit_grace);
	ev_timer_stop(vm->hsd->loop, &vm->pacing_timer);
	if (vm->run_dirfd >= 0)
		close(vm->run_dirfd);
	if (vm->state_dirfd >= 0)
		close(vm->state_dirfd);
	free(vm->ring);
	free(vm->pending_input);
	metrics_vm_reset(vm);
	storage_vm_free(vm);
	vm_unplace(vm);
	vm_spec_clear(&vm->spec);
	free(vm);
}

void vm_free_all(Hsd *h)
{
	while (h->vms) {
		Vm *vm = h->vms;
		h->vms = vm->next;
		vm_free(vm);
	}
	h->n_vms = 0;
}

int vm_define(Hsd *h, VmSpec *spec, Vm **ret, HsError *err)
{
	if (vm_find(h, spec->name))
		return hs_error_set(err, -EEXIST, "conflict", "a VM named '%s' already exists",
				    spec->name);
	/* A MAC is unique on the host: two VMs on one bridge with the same MAC
	 * break each other's networking. */
	for (size_t i = 0; i < spec->n_nics; i++)
		for (Vm *o = h->vms; o; o = o->next)
			for (size_t j = 0; j < o->spec.n_nics; j++)
				if (!strcmp(spec->nics[i].mac, o->spec.nics[j].mac))
					return hs_error_set(err, -EEXIST, "mac-in-use",
							    "nics[%zu].mac: %s is already used by VM "
							    "'%s'",
							    i, spec->nics[i].mac, o->spec.name);
	int r = firmware_spec_check(h, spec, err);
	if (r < 0)
		return r;
	VmStatus st = {.state = VM_STATE_DEFINED};
	r = store_create(&h->store, spec, &st);
	if (r == -EEXIST)
		return hs_error_set(err, r, "conflict", "a VM named '%s' already exists",
				    spec->name);
	if (r < 0)
		return hs_error_set(err, r, r == -ENOSPC ? "no-space" : "internal",
				    "cannot store VM '%s': %s", spec->name, strerror(-r));
	Vm *vm = vm_new(h, spec);
	if (!vm)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	vm->status = st;
	vm->state_dirfd = store_vm_dirfd(&h->store, vm->spec.name);
	vm_insert(h, vm);
	log_info("vm %s: defined", vm->spec.name);
	/* Made at start if this fails (or hsd dies first). */
	HsError ferr;
	if (firmware_vm_prepare(vm, &ferr) < 0)
		log_warning("vm %s: %s", vm->spec.name, ferr.message);
	events_publish_state(vm, VM_STATE_DEFINED);
	*ret = vm;
	return 0;
}

/* Is `pid` the QEMU we started for this VM? Its argv names our pidfile. */
static bool pid_is_our_qemu(Vm *vm, pid_t pid)
{
	char path[64], want[4096];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	_cleanup_free_ char *data = NULL;
	size_t len;
	if (hs_read_file(AT_FDCWD, path, 1 << 20, &data, &len) < 0)
		return false;
	int n = snprintf(want, sizeof(want), "guest=%s,debug-threads=on", vm->spec.name);
	char sock[4096];
	int m = snprintf(sock, sizeof(sock), "socket,id=hs-qmp,fd=3,server=on,wait=off");
	bool name_ok = false, qmp_ok = false;
	for (size_t off = 0; off < len; off += strlen(data + off) + 1) {
		if (!strncmp(data + off, want, (size_t)n) && data[off + (size_t)n] == '\0')
			name_ok = true;
		if (!strncmp(data + off, sock, (size_t)m))
			qmp_ok = true;
	}
	return name_ok && qmp_ok;
}

static void vm_adopt(Vm *vm)
{
	_cleanup_free_ char *data = NULL;
	pid_t pid = 0;
	int pidfd = -1;

	if (vm_open_run_dir(vm) == 0 &&
	    hs_read_file(vm->run_dirfd, PIDFILE, 64, &data, NULL) == 0)
		pid = (pid_t)strtol(data, NULL, 10);
	if (pid <= 0 && vm->status.pid > 0)
		pid = vm->status.pid;
	if (pid > 0 && (pidfd = hs_pidfd_open(pid)) >= 0 && !pid_is_our_qemu(vm, pid)) {
		close(pidfd);
		pidfd = -1;
	}
	if (pidfd < 0) {
		VmState was = vm->status.state;
		vm_cleanup_process(vm);
		vm->status.pid = 0;
		vm->status.stopped_at = hs_wall();
		if (was == VM_STATE_STOPPING) {
			snprintf(vm->status.exit_reason, sizeof(vm->status.exit_reason),
				 "stopped while hsd was not running");
			vm_set_state(vm, VM_STATE_STOPPED);
		} else if (was == VM_STATE_STARTING && vm->status.pid == 0) {
			/* hsd died before QEMU was let go: it never ran. */
			snprintf(vm->status.exit_reason, sizeof(vm->status.exit_reason),
				 "start interrupted (hsd exited during the start)");
			vm_set_state(vm, VM_STATE_STOPPED);
		} else {
			snprintf(vm->status.exit_reason, sizeof(vm->status.exit_reason),
				 "QEMU exited while hsd was not running");
			vm_set_state(vm, VM_STATE_CRASHED);
		}
		vm_save_status(vm);
		firmware_vm_adopt(vm); /* a swtpm left behind is stopped */
		return;
	}
	vm_watch_process(vm, pidfd, pid, false);
	firmware_vm_adopt(vm);
	vm_placement_load(vm); /* counted again by the next placement */
	vm->adopting = true;
	if (vm->status.state == VM_STATE_STOPPING)
		vm->status.state = VM_STATE_RUNNING; /* re-derived from QEMU below */
	vm_save_status(vm);
	if (vm_connect(vm) < 0)
		log_warning("vm %s: re-adopted pid %d but cannot reach its QMP socket",
			    vm->spec.name, (int)pid);
}

int vm_load(Hsd *h, VmSpec *spec, const VmStatus *status)
{
	Vm *vm = vm_new(h, spec);
	if (!vm)
		return -ENOMEM;
	vm->status = *status;
	vm->state_dirfd = store_vm_dirfd(&h->store, vm->spec.name);
	vm_insert(h, vm);
	console_seed_from_log(vm);
	if (vm_state_is_active(vm->status.state))
		vm_adopt(vm);
	else
		console_shrink(vm);
	storage_vm_load(vm);
	migrate_vm_loaded(vm);
	return 0;
}

int vm_delete(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	if (vm_state_is_active(vm->status.state))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; stop it before deleting it", vm->spec.name,
				    vm_state_to_string(vm->status.state));
	if (vm->warm_loading)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is starting (loading its warm template's RAM); try "
				    "again in a moment",
				    vm->spec.name);
	if (hostdev_vm_busy(vm))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is still giving its host devices back; try again in a "
				    "moment",
				    vm->spec.name);
	HsError busy;
	if (storage_vm_check_idle(vm, &busy) < 0 && busy.code == -EBUSY &&
	    !strstr(busy.message, "unfinished"))
		return hs_error_set(err, -EBUSY, "conflict", "%s", busy.message);
	int r = store_delete(&h->store, vm->spec.name);
	if (r < 0 && r != -ENOENT)
		return hs_error_set(err, r, "internal", "cannot delete VM '%s': %s", vm->spec.name,
				    strerror(-r));
	hs_rm_rf_at(h->run_vms_dirfd, vm->spec.name);
	if (h->has_cgroup) {
		HsError cerr;
		cgroup_vm_remove(&h->cgroup, vm->spec.name, &cerr);
	}
	vm_unlink(h, vm);
	events_publish(h, json_pack("{s:s, s:s, s:s, s:s, s:f}", "type", "state", "vm",
				    vm->spec.name, "state", "deleted", "previous",
				    vm_state_to_string(vm->status.state), "time", hs_wall()));
	log_info("vm %s: deleted", vm->spec.name);
	vm_free(vm);
	return 0;
}

/* The last start's steps, ms: from the request to QEMU spawned (admission,
 * storage, arguments), to QMP ready (QEMU's own start-up), to its saved
 * state loaded, to running (or paused: limits, pins, cont), and in all.
 * NULL before any start hsd saw through. */
static double ms_tenths(double seconds)
{
	return (double)(int64_t)(seconds * 1e4 + 0.5) / 10;
}

static json_t *start_timing_json(const Vm *vm)
{
	static const char *const names[] = {NULL, "spawn", "qemu_init", "load", "resume"};
	const double *m = vm->start_marks;
	if (m[START_ASKED] <= 0 || m[START_DONE] <= 0)
		return NULL;
	json_t *o = json_object();
	double prev = m[START_ASKED];
	for (int i = START_SPAWNED; i <= START_DONE; i++) {
		if (m[i] <= 0)
			continue; /* not a step of this start (nothing to load) */
		json_object_set_new(o, names[i], json_real(ms_tenths(m[i] - prev)));
		prev = m[i];
	}
	json_object_set_new(o, "total", json_real(ms_tenths(m[START_DONE] - m[START_ASKED])));
	return o;
}

json_t *vm_to_json(Vm *vm, bool with_spec)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:i}", "name", vm->spec.name, "state",
			      vm_state_to_string(vm->status.state), "memory_mib",
			      (json_int_t)vm->spec.memory_mib, "cpus", (int)vm->spec.cpus, "pid",
			      (int)vm->status.pid);
	if (!o)
		return NULL;
	json_object_set_new(o, "accel", json_string(vm_accel_to_string(vm->spec.accel)));
	bool active = vm_state_is_active(vm->status.state);
	if (vm->status.started_at > 0)
		json_object_set_new(o, "started_at", json_real(vm->status.started_at));
	if (active && vm->status.started_at > 0)
		json_object_set_new(o, "uptime_s", json_real(hs_wall() - vm->status.started_at));
	if (vm->status.stopped_at > 0)
		json_object_set_new(o, "stopped_at", json_real(vm->status.stopped_at));
	if (vm->status.exit_reason[0])
		json_object_set_new(o, "exit_reason", json_string(vm->status.exit_reason));
	if (vm->status.state == VM_STATE_MIGRATED)
		json_object_set_new(o, "migrated_to", json_string(vm->status.migrated_to));
	if (with_spec) {
		json_object_set_new(o, "qmp_connected", json_boolean(vm->qmp_ready));
		json_object_set_new(o, "spec", vm_spec_to_json(&vm->spec));
		_cleanup_free_ char *tail = console_tail(vm, 10);
		json_object_set_new(o, "console_tail", json_string(tail ? tail : ""));
		json_object_set_new(o, "console_clients", json_integer(console_client_count(vm)));
		json_t *warm = warm_vm_json(vm);
		if (warm)
			json_object_set_new(o, "warm", warm);
		json_t *timing = start_timing_json(vm);
		if (timing)
			json_object_set_new(o, "start_timing_ms", timing);
		if (vm->spec.firmware != VM_FIRMWARE_BIOS || vm->spec.tpm)
			json_object_set_new(o, "firmware", firmware_vm_json(vm));
		json_t *disks = storage_vm_disks_json(vm);
		if (disks)
			json_object_set_new(o, "storage", disks);
		char cg[300];
		if (active && vm->hsd->has_cgroup &&
		    cgroup_vm_path(&vm->hsd->cgroup, vm->spec.name, cg, sizeof(cg)) == 0)
			json_object_set_new(o, "cgroup", json_string(cg));
		if (active && vm->hsd->has_cgroup) {
			/* What io.max holds (or would, where the host lacks io). */
			static CgroupLimits cl; /* 5 KiB: not on the stack */
			vm_cgroup_limits(vm, &vm->spec, &cl);
			json_t *io = json_array();
			for (size_t i = 0; i < cl.n_io; i++) {
				char line[200];
				json_array_append_new(io, json_string(cgroup_io_line(
								  &cl.io[i], line, sizeof(line))));
			}
			json_object_set_new(o, "cgroup_io_max", io);
		}
		if (active && vm->cgroup_skipped) {
			char names[64];
			json_object_set_new(o, "cgroup_skipped",
					    json_string(cgroup_controllers_format(vm->cgroup_skipped,
										  names, sizeof(names))));
		}
		json_t *mj = migrate_vm_json(vm);
		if (mj)
			json_object_set_new(o, "migration", mj);
		json_t *hj = hostdev_vm_json(vm);
		if (hj)
			json_object_set_new(o, "hostdevs_bound", hj);
		json_t *nj = active ? network_vm_json(vm) : NULL;
		if (nj)
			json_object_set_new(o, "nics_state", nj);
		json_t *sj = active ? spice_vm_json(vm) : NULL;
		if (sj)
			json_object_set_new(o, "spice", sj);
		json_t *aj = agent_vm_json(vm);
		if (aj)
			json_object_set_new(o, "agent", aj);
		if (active && vm->machine_type[0])
			json_object_set_new(o, "machine_type", json_string(vm->machine_type));
		if (active && vm->spec.n_disks && vm->disk_bytes[0]) {
			json_t *sizes = json_array();
			for (size_t i = 0; i < vm->spec.n_disks; i++)
				json_array_append_new(sizes,
						      json_integer((json_int_t)vm->disk_bytes[i]));
			json_object_set_new(o, "disk_sizes", sizes);
		}
		const char *no_ksm = vm_spec_ksm_excluded(&vm->spec);
		json_object_set_new(o, "ksm",
				    no_ksm ? json_pack("{s:b, s:s}", "merges", 0, "reason", no_ksm)
					   : json_pack("{s:b}", "merges", 1));
		json_t *pl = active ? vm_placement_json(vm) : NULL;
		if (pl)
			json_object_set_new(o, "placement", pl);
		if (active && vm->balloon_actual)
			json_object_set_new(o, "balloon_actual_mib",
					    json_integer((json_int_t)(vm->balloon_actual >> 20)));
		json_object_set_new(o, "balloon", balloon_vm_json(vm));
	}
	return o;
}
