/* SPDX-License-Identifier: Apache-2.0 */
/* The REST API of storage: templates and snapshots. Every call that
 * touches images answers once the work is done (the connection waits,
 * the loop does not). */
#include <string.h>

#include "hsd.h"
#include "storage.h"
#include "warm.h"

/* Answers a deferred request once the storage work is done: the error, or
 * the result ({} when none) with `status`. */
static void reply_storage_done(Pending *p, const HsError *err, json_t *result, int status)
{
	if (err)
		http_reply_hserror(p->req, err);
	else
		http_reply_json(p->req, status, result ? json_incref(result) : json_object());
	free(p);
}

/* Something new was made (a template, a snapshot). */
static void on_storage_done(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	reply_storage_done(ud, err, result, 201);
}

static void on_storage_done_200(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	reply_storage_done(ud, err, result, 200);
}

static const char *string_field(HttpRequest *req, json_t *j, const char *key, bool required)
{
	json_t *v = json_object_get(j, key);
	if (!v && !required)
		return NULL;
	if (!json_is_string(v)) {
		http_reply_error(req, 400, "invalid-request", "%s: %s", key,
				 v ? "must be a string" : "required");
		return (const char *)-1;
	}
	return json_string_value(v);
}

#define BAD ((const char *)-1)

static void template_create(Hsd *h, HttpRequest *req)
{
	static const char *const keys[] = {"name", "file", "format", "vm", "disk", "warm", "then",
					   NULL};
	json_auto_t *j = body_json(req, false);
	if (!j || !body_keys_ok(req, j, keys))
		return;
	const char *name = string_field(req, j, "name", true);
	const char *file = name == BAD ? BAD : string_field(req, j, "file", false);
	const char *format = file == BAD ? BAD : string_field(req, j, "format", false);
	const char *vmname = format == BAD ? BAD : string_field(req, j, "vm", false);
	if (name == BAD || file == BAD || format == BAD || vmname == BAD)
		return;
	if (!file == !vmname) {
		http_reply_error(req, 400, "invalid-request",
				 "give either 'file' (import an image) or 'vm' (from a stopped "
				 "VM's disk)");
		return;
	}
	json_t *warm = json_object_get(j, "warm");
	const char *then = vmname == BAD ? BAD : string_field(req, j, "then", false);
	if (then == BAD)
		return;
	if ((warm && !json_is_boolean(warm)) || (json_is_true(warm) && !vmname) ||
	    (then && (!json_is_true(warm) || (strcmp(then, "resume") && strcmp(then, "stop"))))) {
		http_reply_error(req, 400, "invalid-request",
				 "warm: true with 'vm' (a running VM with memory_file); then: "
				 "\"resume\" (default) or \"stop\", with warm only");
		return;
	}
	json_t *disk = json_object_get(j, "disk");
	if (disk && (!json_is_integer(disk) || json_integer_value(disk) < 0 ||
		     json_integer_value(disk) >= VM_MAX_DISKS || file)) {
		http_reply_error(req, 400, "invalid-request",
				 "disk: a disk index of the VM (with 'vm' only)");
		return;
	}
	HsError err = {0};
	Pending *p = pending_new(h, req);
	int r;
	if (!p) {
		r = hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	} else if (file) {
		log_info("api: template import %s from %s", name, file);
		r = template_import(h, name, file, format, on_storage_done, p, &err);
	} else if (json_is_true(warm)) {
		Vm *vm = vm_find(h, vmname);
		log_info("api: warm template %s from vm %s", name, vmname);
		r = vm ? warm_template_capture(h, name, vm, then && !strcmp(then, "stop"),
					       on_storage_done, p, &err)
		       : hs_error_set(&err, -ENOENT, "not-found", "no VM named '%s'", vmname);
	} else {
		Vm *vm = vm_find(h, vmname);
		log_info("api: template %s from vm %s", name, vmname);
		r = vm ? template_from_vm(h, name, vm, disk ? (unsigned)json_integer_value(disk) : 0,
					  on_storage_done, p, &err)
		       : hs_error_set(&err, -ENOENT, "not-found", "no VM named '%s'", vmname);
	}
	reply_or_defer(req, p, r, &err);
}

void api_templates(Hsd *h, HttpRequest *req, const char *name)
{
	const char *m = http_request_method(req);
	HsError err = {0};
	if (!name) {
		if (!strcmp(m, "GET"))
			http_reply_json(req, 200, json_pack("{s:o}", "templates",
							    template_list_json(h)));
		else if (!strcmp(m, "POST"))
			template_create(h, req);
		else
			method_not_allowed(req, "GET, POST");
		return;
	}
	if (!strcmp(m, "GET")) {
		json_t *t = template_get_json(h, name, &err);
		if (t)
			http_reply_json(req, 200, t);
		else
			http_reply_hserror(req, &err);
	} else if (!strcmp(m, "DELETE")) {
		log_info("api: template delete %s", name);
		if (template_delete(h, name, &err) < 0)
			http_reply_hserror(req, &err);
		else
			http_reply_json(req, 200, json_pack("{s:s, s:s}", "name", name, "state",
							    "deleted"));
	} else {
		method_not_allowed(req, "GET, DELETE");
	}
}

void api_snapshots(Hsd *h, Vm *vm, HttpRequest *req, const char *snap, const char *action)
{
	const char *m = http_request_method(req);
	HsError err = {0};
	int r;
	Pending *p;
	if (!snap) {
		if (!strcmp(m, "GET")) {
			http_reply_json(req, 200, json_pack("{s:o}", "snapshots",
							    storage_snapshots_json(vm)));
			return;
		}
		if (strcmp(m, "POST")) {
			method_not_allowed(req, "GET, POST");
			return;
		}
		static const char *const keys[] = {"name", "memory", NULL};
		json_auto_t *j = body_json(req, false);
		if (!j || !body_keys_ok(req, j, keys))
			return;
		const char *name = string_field(req, j, "name", true);
		if (name == BAD)
			return;
		json_t *mem = json_object_get(j, "memory");
		if (mem && !json_is_boolean(mem)) {
			http_reply_error(req, 400, "invalid-request", "memory: must be true or false");
			return;
		}
		log_info("api: snapshot create vm=%s snapshot=%s%s", vm->spec.name, name,
			 json_is_true(mem) ? " (memory)" : "");
		p = pending_new(h, req);
		r = p ? storage_snapshot_create(vm, name, json_is_true(mem), on_storage_done, p,
						&err)
		      : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
		reply_or_defer(req, p, r, &err);
		return;
	}
	if (action && strcmp(action, "rollback")) {
		http_reply_error(req, 404, "not-found", "no such action '%s'", action);
		return;
	}
	if (action) {
		if (strcmp(m, "POST")) {
			method_not_allowed(req, "POST");
			return;
		}
		static const char *const no_keys[] = {NULL};
		json_auto_t *j = body_json(req, true);
		if (!j || !body_keys_ok(req, j, no_keys))
			return;
		log_info("api: snapshot rollback vm=%s snapshot=%s", vm->spec.name, snap);
		p = pending_new(h, req);
		r = p ? storage_snapshot_rollback(vm, snap, on_storage_done_200, p, &err)
		      : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
		reply_or_defer(req, p, r, &err);
		return;
	}
	if (!strcmp(m, "DELETE")) {
		log_info("api: snapshot delete vm=%s snapshot=%s", vm->spec.name, snap);
		p = pending_new(h, req);
		r = p ? storage_snapshot_delete(vm, snap, on_storage_done_200, p, &err)
		      : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
		reply_or_defer(req, p, r, &err);
	} else if (!strcmp(m, "GET")) {
		json_auto_t *all = storage_snapshots_json(vm);
		size_t i;
		json_t *s;
		json_array_foreach(all, i, s)
			if (!strcmp(json_string_value(json_object_get(s, "name")), snap)) {
				http_reply_json(req, 200, json_incref(s));
				return;
			}
		http_reply_error(req, 404, "not-found", "VM '%s' has no snapshot '%s'",
				 vm->spec.name, snap);
	} else {
		method_not_allowed(req, "GET, DELETE");
	}
}

typedef struct CreateCtx {
	Pending *p;
	char name[VM_NAME_MAX + 1];
} CreateCtx;

static void on_created(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	CreateCtx *c = ud;
	Vm *vm = vm_find(h, c->name);
	if (err) {
		/* The VM cannot exist without its disks. */
		HsError derr;
		if (vm && vm_delete(vm, &derr) < 0)
			log_error("vm %s: cannot remove after failed disk creation: %s", c->name,
				  derr.message);
		http_reply_hserror(c->p->req, err);
	} else if (vm) {
		http_reply_json(c->p->req, 201, vm_to_json(vm, true));
	} else {
		http_reply_error(c->p->req, 500, "internal", "VM '%s' vanished", c->name);
	}
	free(c->p);
	free(c);
}

void api_create_storage(Hsd *h, Vm *vm, HttpRequest *req)
{
	HsError err = {0};
	CreateCtx *c = calloc(1, sizeof(*c));
	Pending *p = c ? pending_new(h, req) : NULL;
	if (!p) {
		free(c);
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	c->p = p;
	snprintf(c->name, sizeof(c->name), "%s", vm->spec.name);
	int r = storage_vm_create(vm, on_created, c, &err);
	if (r < 0) {
		HsError derr;
		vm_delete(vm, &derr);
		free(p);
		free(c);
		http_reply_hserror(req, &err);
		return;
	}
	http_defer(req);
}
