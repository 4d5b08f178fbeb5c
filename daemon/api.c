/* SPDX-License-Identifier: Apache-2.0 */
/* The REST API, /v1: routing, request bodies, and answers. Lifecycle calls
 * answer once the change is done (start: running; stop: exited), with the
 * connection suspended meanwhile; nothing here blocks the loop. */
#include <fcntl.h>
#include <string.h>

#include "hsd.h"
#include "ticket.h"
#include "warm.h"


static bool peer_is_admin(Hsd *h, const HttpPeer *p)
{
	return p->known && (p->uid == 0 || p->uid == h->api_uid ||
			    (h->has_admin_group && http_peer_in_group(p, h->admin_gid)));
}

static bool peer_allowed(Hsd *h, const HttpPeer *p)
{
	return peer_is_admin(h, p) ||
	       (p->known && h->has_api_group && http_peer_in_group(p, h->api_gid));
}

void api_answered(HttpRequest *req, unsigned status, const char *error_code, void *userdata)
{
	Hsd *h = userdata;
	const char *m = http_request_method(req);
	const char *path = http_request_path(req);
	bool console = strstr(path, "/console") != NULL;
	if (h->audit_fd < 0 || (!strcmp(m, "GET") && !console && status != 403))
		return;
	const HttpPeer *p = http_request_peer(req);
	json_auto_t *j = json_pack("{s:f, s:i, s:i, s:i, s:s, s:s, s:i, s:s}", "time", hs_wall(),
				   "uid", p->known ? (int)p->uid : -1, "gid",
				   p->known ? (int)p->gid : -1, "pid", p->known ? (int)p->pid : -1,
				   "method", m, "path", path, "status", (int)status, "result",
				   status < 400 ? "ok" : error_code[0] ? error_code : "error");
	_cleanup_free_ char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (!line)
		return;
	size_t n = strlen(line);
	line[n] = '\n';
	/* One write: O_APPEND keeps concurrent lines whole. */
	if (write(h->audit_fd, line, n + 1) < 0)
		log_warning("audit log: %m");
	line[n] = '\0';
}

/* Parses the body as a JSON object. An empty body gives an empty object
 * when allow_empty. Replies with an error and returns NULL on failure. */
json_t *body_json(HttpRequest *req, bool allow_empty)
{
	size_t len;
	const char *body = http_request_body(req, &len);
	if (len == 0) {
		if (allow_empty)
			return json_object();
		http_reply_error(req, 400, "invalid-json", "a JSON object body is required");
		return NULL;
	}
	json_error_t je;
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		http_reply_error(req, 400, "invalid-json", "malformed JSON at line %d column %d: %s",
				 je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		http_reply_error(req, 400, "invalid-json", "the body must be a JSON object");
		return NULL;
	}
	return j;
}

/* Refuses members other than the allowed ones. */
int object_keys_check(json_t *j, const char *const *allowed, HsError *err)
{
	const char *key;
	json_t *v;
	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, "invalid-request", "a JSON object is needed");
	json_object_foreach (j, key, v) {
		bool ok = false;
		for (size_t i = 0; allowed[i]; i++)
			ok |= !strcmp(key, allowed[i]);
		if (!ok)
			return hs_error_set(err, -EINVAL, "invalid-request", "unknown field '%s'",
					    key);
	}
	return 0;
}

bool body_keys_ok(HttpRequest *req, json_t *j, const char *const *allowed)
{
	HsError err;
	if (object_keys_check(j, allowed, &err) == 0)
		return true;
	http_reply_hserror(req, &err);
	return false;
}

Pending *pending_new(Hsd *h, HttpRequest *req)
{
	Pending *p = calloc(1, sizeof(*p));
	if (p) {
		p->req = req;
		p->hsd = h;
	}
	return p;
}

static void on_vm_done(Vm *vm, const HsError *err, void *ud)
{
	Pending *p = ud;
	if (err)
		http_reply_hserror(p->req, err);
	else
		http_reply_json(p->req, 200, vm_to_json(vm, true));
	free(p);
}

void reply_or_defer(HttpRequest *req, Pending *p, int r, const HsError *err)
{
	if (r < 0) {
		free(p);
		http_reply_hserror(req, err);
	} else {
		http_defer(req);
	}
}

int api_check_spec_files(Hsd *h, const VmSpec *spec, HsError *err)
{
	/* Every file must be reachable beneath an allowed directory. */
	const char *paths[2 + VM_MAX_DISKS];
	const char *fields[2 + VM_MAX_DISKS];
	char disk_fields[VM_MAX_DISKS][48];
	size_t np = 0;
	if (spec->kernel)
		paths[np] = spec->kernel, fields[np++] = "kernel";
	if (spec->initrd)
		paths[np] = spec->initrd, fields[np++] = "initrd";
	for (size_t i = 0; i < spec->n_disks; i++) {
		if (spec->disks[i].managed)
			continue;
		snprintf(disk_fields[i], sizeof(disk_fields[i]), "disks[%zu].path", i);
		paths[np] = spec->disks[i].path, fields[np++] = disk_fields[i];
	}
	for (size_t i = 0; i < np; i++) {
		int fd = paths_open_beneath(&h->allowed, paths[i], O_RDONLY, fields[i], err);
		if (fd < 0)
			return fd;
		close(fd);
	}
	return 0;
}

static void handle_create(Hsd *h, HttpRequest *req)
{
	json_auto_t *j = body_json(req, false);
	if (!j)
		return;
	VmSpec spec;
	HsError err = {0};
	bool clone = json_object_get(j, "warm_template") != NULL;
	if (clone) {
		/* A clone of a warm template: its spec is the template's. */
		json_t *cj = warm_clone_spec(h, j, &err);
		if (!cj) {
			http_reply_hserror(req, &err);
			return;
		}
		json_decref(j);
		j = cj;
	}
	VmSpecDefaults defs = {
		.accel = h->host.kvm_usable ? VM_ACCEL_KVM : VM_ACCEL_TCG,
		.check_files = true,
	};
	if (vm_spec_from_json(j, &defs, &spec, &err) < 0) {
		http_reply_hserror(req, &err);
		return;
	}
	if (vm_check_host_hugepages(h, &spec, &err) < 0 ||
	    api_check_spec_files(h, &spec, &err) < 0 ||
	    network_spec_check(h, &spec, NULL, &err) < 0) {
		vm_spec_clear(&spec);
		http_reply_hserror(req, &err);
		return;
	}
	bool managed = false;
	for (size_t i = 0; i < spec.n_disks; i++)
		managed |= spec.disks[i].managed;
	Vm *vm;
	log_info("api: create vm=%s uid=%u", spec.name, (unsigned)http_request_peer(req)->uid);
	if (vm_define(h, &spec, &vm, &err) < 0) {
		vm_spec_clear(&spec);
		http_reply_hserror(req, &err);
		return;
	}
	if (clone && warm_vm_created(vm, &err) < 0) {
		HsError derr;
		vm_delete(vm, &derr);
		http_reply_hserror(req, &err);
		return;
	}
	if (managed)
		api_create_storage(h, vm, req); /* answers once its disks are made */
	else
		http_reply_json(req, 201, vm_to_json(vm, true));
}

static void handle_list(Hsd *h, HttpRequest *req)
{
	json_t *a = json_array();
	for (Vm *vm = h->vms; vm; vm = vm->next)
		json_array_append_new(a, vm_to_json(vm, false));
	http_reply_json(req, 200, json_pack("{s:o}", "vms", a));
}

static void handle_start(Hsd *h, Vm *vm, HttpRequest *req)
{
	static const char *const keys[] = {"paused", NULL};
	json_auto_t *j = body_json(req, true);
	if (!j || !body_keys_ok(req, j, keys))
		return;
	json_t *paused = json_object_get(j, "paused");
	if (paused && !json_is_boolean(paused)) {
		http_reply_error(req, 400, "invalid-request", "paused: must be true or false");
		return;
	}
	HsError err = {0};
	Pending *p = pending_new(h, req);
	int r = p ? vm_start(vm, json_is_true(paused), on_vm_done, p, &err)
		  : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	reply_or_defer(req, p, r, &err);
}

static void handle_stop(Hsd *h, Vm *vm, HttpRequest *req, StopKind kind)
{
	static const char *const keys[] = {"timeout", "force", "agent", NULL};
	static const char *const no_keys[] = {NULL};
	json_auto_t *j = body_json(req, true);
	if (!j || !body_keys_ok(req, j, kind == STOP_KILL ? no_keys : keys))
		return;
	json_t *t = json_object_get(j, "timeout"), *f = json_object_get(j, "force");
	if (t && (!json_is_number(t) || json_number_value(t) <= 0 ||
		  json_number_value(t) > 3600)) {
		http_reply_error(req, 400, "invalid-request",
				 "timeout: must be a number of seconds, above 0 and at most 3600");
		return;
	}
	if (f && !json_is_boolean(f)) {
		http_reply_error(req, 400, "invalid-request", "force: must be true or false");
		return;
	}
	/* "agent": the guest agent's guest-shutdown instead of ACPI. */
	json_t *ag = json_object_get(j, "agent");
	if (ag && (!json_is_boolean(ag) || (json_is_true(ag) && json_is_true(f)))) {
		http_reply_error(req, 400, "invalid-request",
				 "agent: must be true or false, and not true with force");
		return;
	}
	if (json_is_true(f) && kind == STOP_ACPI)
		kind = STOP_FORCE;
	if (json_is_true(ag) && kind == STOP_ACPI)
		kind = STOP_AGENT;
	HsError err = {0};
	Pending *p = pending_new(h, req);
	int r = p ? vm_stop(vm, kind, t ? json_number_value(t) : 0, on_vm_done, p, &err)
		  : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	reply_or_defer(req, p, r, &err);
}

static void handle_simple(Hsd *h, Vm *vm, HttpRequest *req, const char *action)
{
	static const char *const keys[] = {NULL};
	json_auto_t *j = body_json(req, true);
	if (!j || !body_keys_ok(req, j, keys))
		return;
	HsError err = {0};
	Pending *p = pending_new(h, req);
	int r;
	if (!p)
		r = hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	else if (!strcmp(action, "reboot"))
		r = vm_reboot(vm, on_vm_done, p, &err);
	else
		r = vm_pause(vm, !strcmp(action, "pause"), on_vm_done, p, &err);
	reply_or_defer(req, p, r, &err);
}

static void on_qmp_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Pending *p = ud;
	if (reply)
		http_reply_json(p->req, 200, json_incref(reply));
	else
		http_reply_hserror(p->req, err);
	free(p);
}

static void handle_qmp(Hsd *h, Vm *vm, HttpRequest *req)
{
	const HttpPeer *peer = http_request_peer(req);
	if (!peer_is_admin(h, peer)) {
		http_reply_error(req, 403, "forbidden",
				 "QMP passthrough is for root and the admin group only");
		return;
	}
	json_t *j = body_json(req, false);
	if (!j)
		return;
	_cleanup_free_ char *line = json_dumps(j, JSON_COMPACT);
	log_info("qmp passthrough: vm=%s uid=%u pid=%d: %s", vm->spec.name, (unsigned)peer->uid,
		 (int)peer->pid, line ? line : "?");
	HsError err = {0};
	Pending *p = pending_new(h, req);
	if (!p) {
		json_decref(j);
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	int r = vm_qmp_passthrough(vm, j, on_qmp_reply, p, &err);
	reply_or_defer(req, p, r, &err);
}

typedef struct ConsoleCtx {
	Hsd *hsd;
	char name[VM_NAME_MAX + 1];
	bool replay;
} ConsoleCtx;

static void on_console_upgraded(HttpUpgrade *u, int fd, const char *extra, size_t extra_len,
				void *ud)
{
	ConsoleCtx *ctx = ud;
	Vm *vm = vm_find(ctx->hsd, ctx->name);
	bool replay = ctx->replay;
	free(ctx);
	if (!vm || vm->serial_fd < 0) {
		http_upgrade_close(u);
		return;
	}
	console_attach_client(vm, u, fd, extra, extra_len, replay);
}

static void handle_console(Hsd *h, Vm *vm, HttpRequest *req)
{
	const char *up = http_request_header(req, "Upgrade");
	if (!up || strcasecmp(up, "hs-console")) {
		http_reply_error(req, 426, "upgrade-required",
				 "the console needs 'Connection: Upgrade' and 'Upgrade: hs-console'");
		return;
	}
	if (vm->serial_fd < 0) {
		http_reply_error(req, 409, "not-running", "VM '%s' is %s: no console to attach to",
				 vm->spec.name, vm_state_to_string(vm->status.state));
		return;
	}
	ConsoleCtx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	ctx->hsd = h;
	const char *rp = http_request_query(req, "replay");
	ctx->replay = !rp || strcmp(rp, "0");
	snprintf(ctx->name, sizeof(ctx->name), "%s", vm->spec.name);
	http_reply_upgrade(req, "hs-console", on_console_upgraded, ctx, free);
}

void method_not_allowed(HttpRequest *req, const char *allowed)
{
	http_reply_error(req, 405, "method-not-allowed", "%s %s: allowed: %s",
			 http_request_method(req), http_request_path(req), allowed);
}

static void handle_migrate(Vm *vm, HttpRequest *req);
static void handle_migration(Vm *vm, HttpRequest *req, bool cancel);
static void handle_migration_finish(Hsd *h, Vm *vm, HttpRequest *req, bool confirm);

static void handle_vm(Hsd *h, HttpRequest *req, const char *name, const char *action)
{
	const char *m = http_request_method(req);
	if (!vm_name_is_valid(name)) {
		http_reply_error(req, 404, "not-found", "no VM named '%s'", name);
		return;
	}
	Vm *vm = vm_find(h, name);
	if (!vm) {
		http_reply_error(req, 404, "not-found", "no VM named '%s'", name);
		return;
	}
	if (!action) {
		if (!strcmp(m, "GET")) {
			http_reply_json(req, 200, vm_to_json(vm, true));
		} else if (!strcmp(m, "DELETE")) {
			HsError err = {0};
			log_info("api: delete vm=%s uid=%u", name,
				 (unsigned)http_request_peer(req)->uid);
			if (vm_delete(vm, &err) < 0)
				http_reply_hserror(req, &err);
			else
				http_reply_json(req, 200, json_pack("{s:s, s:s}", "name", name,
								    "state", "deleted"));
		} else if (!strcmp(m, "PATCH")) {
			log_info("api: patch vm=%s uid=%u", name,
				 (unsigned)http_request_peer(req)->uid);
			HsError err = {0};
			if (migrate_vm_check_idle(vm, &err) < 0)
				http_reply_hserror(req, &err);
			else
				api_patch_vm(h, vm, req);
		} else {
			method_not_allowed(req, "GET, PATCH, DELETE");
		}
		return;
	}
	if (!strcmp(action, "console")) {
		if (strcmp(m, "GET") && strcmp(m, "POST"))
			method_not_allowed(req, "GET, POST");
		else
			handle_console(h, vm, req);
		return;
	}
	if (!strcmp(action, "agent")) {
		if (strcmp(m, "GET"))
			method_not_allowed(req, "GET");
		else
			api_vm_agent(h, vm, req);
		return;
	}
	if (!strcmp(action, "console-tickets")) {
		if (strcmp(m, "POST"))
			method_not_allowed(req, "POST");
		else
			api_vm_console_tickets(h, vm, req);
		return;
	}
	if (!strcmp(action, "migrate")) {
		if (strcmp(m, "POST"))
			method_not_allowed(req, "POST");
		else
			handle_migrate(vm, req);
		return;
	}
	if (!strcmp(action, "migration")) {
		if (!strcmp(m, "GET"))
			handle_migration(vm, req, false);
		else if (!strcmp(m, "DELETE"))
			handle_migration(vm, req, true);
		else
			method_not_allowed(req, "GET, DELETE");
		return;
	}
	if (!strcmp(action, "migration/confirm") || !strcmp(action, "migration/abort")) {
		if (strcmp(m, "POST"))
			method_not_allowed(req, "POST");
		else
			handle_migration_finish(h, vm, req, !strcmp(action, "migration/confirm"));
		return;
	}
	static const char *const actions[] = {"start",  "stop",  "kill", "reboot",
					      "pause",  "resume", "qmp",  NULL};
	bool known = false;
	for (size_t i = 0; actions[i]; i++)
		known |= !strcmp(action, actions[i]);
	if (!known) {
		http_reply_error(req, 404, "not-found", "no such action '%s'", action);
		return;
	}
	if (strcmp(m, "POST")) {
		method_not_allowed(req, "POST");
		return;
	}
	log_info("api: %s vm=%s uid=%u", action, name, (unsigned)http_request_peer(req)->uid);
	if (!strcmp(action, "start"))
		handle_start(h, vm, req);
	else if (!strcmp(action, "stop"))
		handle_stop(h, vm, req, STOP_ACPI);
	else if (!strcmp(action, "kill"))
		handle_stop(h, vm, req, STOP_KILL);
	else if (!strcmp(action, "qmp"))
		handle_qmp(h, vm, req);
	else
		handle_simple(h, vm, req, action);
}

/* POST /v1/vms/NAME/migrate: a migration to where the body says. */
static void handle_migrate(Vm *vm, HttpRequest *req)
{
	json_auto_t *j = body_json(req, false);
	HsError err = {0};
	if (!j)
		return;
	log_info("api: migrate vm=%s uid=%u", vm->spec.name, (unsigned)http_request_peer(req)->uid);
	if (migrate_start(vm, j, &err) < 0)
		http_reply_hserror(req, &err);
	else
		http_reply_json(req, 202, vm_to_json(vm, true));
}

/* GET /v1/vms/NAME/migration: its state; DELETE: cancel it. */
static void handle_migration(Vm *vm, HttpRequest *req, bool cancel)
{
	HsError err = {0};
	if (!cancel) {
		json_t *mj = migrate_vm_json(vm);
		if (mj)
			http_reply_json(req, 200, mj);
		else
			http_reply_error(req, 404, "not-found", "VM '%s' has no migration",
					 vm->spec.name);
		return;
	}
	log_info("api: migration cancel vm=%s uid=%u", vm->spec.name,
		 (unsigned)http_request_peer(req)->uid);
	if (migrate_cancel(vm, &err) < 0)
		http_reply_hserror(req, &err);
	else
		http_reply_json(req, 200, vm_to_json(vm, true));
}

/* POST /v1/vms/NAME/migration/confirm (the destination runs it: the
 * source lets its QEMU go) or .../abort (it does not: resume here). */
static void handle_migration_finish(Hsd *h, Vm *vm, HttpRequest *req, bool confirm)
{
	static const char *const no_keys[] = {NULL};
	json_auto_t *j = body_json(req, true);
	HsError err = {0};
	if (!j || !body_keys_ok(req, j, no_keys))
		return;
	log_info("api: migration %s vm=%s uid=%u", confirm ? "confirm" : "abort", vm->spec.name,
		 (unsigned)http_request_peer(req)->uid);
	Pending *p = pending_new(h, req);
	int r = p ? migrate_finish(vm, confirm, on_vm_done, p, &err)
		  : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	reply_or_defer(req, p, r, &err);
}

/* POST /v1/migrations/incoming: this hsd receives a VM. */
static void handle_incoming(Hsd *h, HttpRequest *req)
{
	json_auto_t *j = body_json(req, false);
	HsError err = {0};
	if (!j)
		return;
	log_info("api: incoming migration uid=%u", (unsigned)http_request_peer(req)->uid);
	if (migrate_incoming(h, j, req, &err) < 0)
		http_reply_hserror(req, &err);
}

/* DELETE /v1/migrations/incoming/NAME: the driver gives it up. */
static void handle_incoming_cancel(Hsd *h, HttpRequest *req, const char *name)
{
	HsError err = {0};
	if (!vm_name_is_valid(name)) {
		http_reply_error(req, 404, "not-found", "no incoming migration of '%s'", name);
		return;
	}
	log_info("api: incoming migration cancel vm=%s uid=%u", name,
		 (unsigned)http_request_peer(req)->uid);
	if (migrate_incoming_cancel(h, name, &err) < 0)
		http_reply_hserror(req, &err);
	else
		http_reply_json(req, 200, json_pack("{s:s, s:s}", "vm", name, "state", "cancelled"));
}

/* /v1/vms/NAME/snapshots[/SNAP[/rollback]]; rest is what follows
 * "/snapshots". */
static void handle_snapshots(Hsd *h, HttpRequest *req, const char *name, const char *rest)
{
	Vm *vm = vm_name_is_valid(name) ? vm_find(h, name) : NULL;
	HsError err = {0};
	if (!vm) {
		http_reply_error(req, 404, "not-found", "no VM named '%s'", name);
		return;
	}
	if (strcmp(http_request_method(req), "GET") && migrate_vm_check_idle(vm, &err) < 0) {
		http_reply_hserror(req, &err);
		return;
	}
	if (!rest[0] || !strcmp(rest, "/")) {
		api_snapshots(h, vm, req, NULL, NULL);
		return;
	}
	if (rest[0] != '/') {
		http_reply_error(req, 404, "not-found", "no such resource '%s'",
				 http_request_path(req));
		return;
	}
	char snap[80];
	const char *s = rest + 1, *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof(snap) || (slash && strchr(slash + 1, '/'))) {
		http_reply_error(req, 404, "not-found", "no such resource '%s'",
				 http_request_path(req));
		return;
	}
	memcpy(snap, s, n);
	snap[n] = '\0';
	api_snapshots(h, vm, req, snap, slash ? slash + 1 : NULL);
}

/* A host policy's settings (/v1/ksm, /v1/balloon), for GET or PUT: GET
 * shows its state, PUT changes some settings and shows the state after. */
static void host_setting(Hsd *h, HttpRequest *req, json_t *(*show)(Hsd *h),
			 int (*configure)(Hsd *h, json_t *body, HsError *err))
{
	if (!strcmp(http_request_method(req), "GET")) {
		http_reply_json(req, 200, show(h));
		return;
	}
	json_auto_t *j = body_json(req, false);
	HsError err = {0};
	if (!j)
		return;
	if (configure(h, j, &err) < 0)
		http_reply_hserror(req, &err);
	else
		http_reply_json(req, 200, show(h));
}

/* GET /v1/ksm: KSM's state, and apart from it what warm templates save
 * (their clones share the template's pages without KSM). */
static json_t *ksm_show(Hsd *h)
{
	json_t *j = ksm_tuner_to_json(h);
	uint64_t saved = 0;
	json_object_set_new(j, "warm_templates", warm_host_json(h, &saved));
	json_object_set_new(j, "warm_saved_bytes", json_integer((json_int_t)saved));
	return j;
}

void api_handle(HttpRequest *req, void *userdata)
{
	Hsd *h = userdata;
	const char *m = http_request_method(req);
	const char *path = http_request_path(req);

	if (!peer_allowed(h, http_request_peer(req))) {
		http_reply_error(req, 403, "forbidden", "uid %u may not use hsd",
				 (unsigned)http_request_peer(req)->uid);
		return;
	}
	if (!strcmp(path, "/v1") || !strcmp(path, "/v1/")) {
		if (strcmp(m, "GET"))
			method_not_allowed(req, "GET");
		else
			http_reply_json(req, 200,
					json_pack("{s:s, s:s}", "name", "hsd", "version", HS_VERSION));
		return;
	}
	if (!strcmp(path, "/v1/host")) {
		if (strcmp(m, "GET")) {
			method_not_allowed(req, "GET");
			return;
		}
		host_refresh(&h->host);
		http_reply_json(req, 200, host_to_json(&h->host, h));
		return;
	}
	if (!strcmp(path, "/metrics")) {
		if (strcmp(m, "GET"))
			method_not_allowed(req, "GET");
		else
			metrics_reply(h, req);
		return;
	}
	if (!strcmp(path, "/v1/ksm")) {
		if (strcmp(m, "GET") && strcmp(m, "PUT")) {
			method_not_allowed(req, "GET, PUT");
			return;
		}
		host_setting(h, req, ksm_show, ksm_tuner_configure);
		return;
	}
	if (!strcmp(path, "/v1/balloon")) {
		if (strcmp(m, "GET") && strcmp(m, "PUT"))
			method_not_allowed(req, "GET, PUT");
		else
			host_setting(h, req, balloon_to_json, balloon_configure);
		return;
	}
	if (!strcmp(path, "/v1/events")) {
		if (strcmp(m, "GET")) {
			method_not_allowed(req, "GET");
			return;
		}
		events_subscribe(h, req, http_request_query(req, "vm"));
		return;
	}
	if (!strcmp(path, "/v1/vms")) {
		if (!strcmp(m, "GET"))
			handle_list(h, req);
		else if (!strcmp(m, "POST"))
			handle_create(h, req);
		else
			method_not_allowed(req, "GET, POST");
		return;
	}
	if (!strcmp(path, "/v1/migrations/incoming")) {
		if (strcmp(m, "POST"))
			method_not_allowed(req, "POST");
		else
			handle_incoming(h, req);
		return;
	}
	if (hs_str_has_prefix(path, "/v1/migrations/incoming/")) {
		if (strcmp(m, "DELETE"))
			method_not_allowed(req, "DELETE");
		else
			handle_incoming_cancel(h, req, path + strlen("/v1/migrations/incoming/"));
		return;
	}
	if (!strcmp(path, "/v1/templates")) {
		api_templates(h, req, NULL);
		return;
	}
	if (!strcmp(path, "/v1/networks") || hs_str_has_prefix(path, "/v1/networks/")) {
		api_networks(h, req, path[12] ? path + 13 : "");
		return;
	}
	if (!strcmp(path, "/v1/sriov") || hs_str_has_prefix(path, "/v1/sriov/")) {
		api_sriov(h, req, path[9] ? path + 10 : "");
		return;
	}
	if (!strcmp(path, "/v1/pci") || hs_str_has_prefix(path, "/v1/pci/")) {
		api_pci(h, req, path[7] ? path + 8 : "");
		return;
	}
	if (hs_str_has_prefix(path, "/v1/templates/")) {
		const char *name = path + strlen("/v1/templates/");
		if (!vm_name_is_valid(name))
			http_reply_error(req, 404, "not-found", "no template named '%s'", name);
		else
			api_templates(h, req, name);
		return;
	}
	if (hs_str_has_prefix(path, "/v1/vms/")) {
		char name[128], action[64];
		const char *rest = path + strlen("/v1/vms/");
		const char *slash = strchr(rest, '/');
		size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
		if (n == 0 || n >= sizeof(name)) {
			http_reply_error(req, 404, "not-found", "no such resource '%s'", path);
			return;
		}
		memcpy(name, rest, n);
		name[n] = '\0';
		if (slash && hs_str_has_prefix(slash, "/snapshots")) {
			handle_snapshots(h, req, name, slash + strlen("/snapshots"));
			return;
		}
		if (slash && (!strcmp(slash, "/nics") || hs_str_has_prefix(slash, "/nics/"))) {
			Vm *vm = vm_name_is_valid(name) ? vm_find(h, name) : NULL;
			if (!vm)
				http_reply_error(req, 404, "not-found", "no VM named '%s'", name);
			else
				api_vm_nics(h, vm, req, slash[5] ? slash + strlen("/nics/") : NULL);
			return;
		}
		if (slash && (!strcmp(slash, "/hostdevs") || hs_str_has_prefix(slash, "/hostdevs/"))) {
			Vm *vm = vm_name_is_valid(name) ? vm_find(h, name) : NULL;
			if (!vm)
				http_reply_error(req, 404, "not-found", "no VM named '%s'", name);
			else
				api_vm_hostdevs(h, vm, req,
						slash[9] ? slash + strlen("/hostdevs/") : NULL);
			return;
		}
		if (slash && slash[1]) {
			/* One level of actions; migration/ has two. */
			const char *inner = strchr(slash + 1, '/');
			if ((inner && (!hs_str_has_prefix(slash + 1, "migration/") ||
				       strchr(inner + 1, '/'))) ||
			    strlen(slash + 1) >= sizeof(action)) {
				http_reply_error(req, 404, "not-found", "no such resource '%s'",
						 path);
				return;
			}
			snprintf(action, sizeof(action), "%s", slash + 1);
			handle_vm(h, req, name, action);
		} else {
			handle_vm(h, req, name, NULL);
		}
		return;
	}
	http_reply_error(req, 404, "not-found", "no such resource '%s'", path);
}
