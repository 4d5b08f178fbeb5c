/* SPDX-License-Identifier: Apache-2.0 */
/* Limits QEMU enforces, set over QMP at every start (before the guest runs)
 * and changed live: per-disk I/O throttling (block_set_io_throttle,
 * throttle groups) and the memory balloon's target. */
#include <inttypes.h>
#include <string.h>

#include "hsd.h"

typedef struct Batch {
	Vm *vm;
	unsigned pending;
	HsError err;
	bool failed;
	VmDoneCb cb;
	void *ud;
} Batch;

static void batch_done_one(Batch *b, const HsError *err)
{
	if (err && !b->failed) {
		b->failed = true;
		b->err = *err;
	}
	if (--b->pending > 0)
		return;
	Vm *vm = b->vm;
	VmDoneCb cb = b->cb;
	void *ud = b->ud;
	HsError e = b->err;
	bool failed = b->failed;
	free(b);
	cb(vm, failed ? &e : NULL, ud);
}

static void on_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	batch_done_one(ud, err);
}

json_t *limits_throttle_args(size_t disk, const VmDiskLimits *l)
{
	/* The virtio-blk device proper, below its PCI proxy (the proxy's id
	 * alone has no block backend). */
	char id[64];
	snprintf(id, sizeof(id), "/machine/peripheral/disk%zu/virtio-backend", disk);
	json_t *a = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "id", id, "bps",
			      (json_int_t)l->bps[0], "bps_rd", (json_int_t)l->bps[1], "bps_wr",
			      (json_int_t)l->bps[2], "iops", (json_int_t)l->iops[0], "iops_rd",
			      (json_int_t)l->iops[1], "iops_wr", (json_int_t)l->iops[2]);
	const char *maxk[3] = {"bps_max", "bps_rd_max", "bps_wr_max"};
	const char *imaxk[3] = {"iops_max", "iops_rd_max", "iops_wr_max"};
	for (int k = 0; k < 3; k++) {
		if (l->bps_max[k])
			json_object_set_new(a, maxk[k], json_integer((json_int_t)l->bps_max[k]));
		if (l->iops_max[k])
			json_object_set_new(a, imaxk[k], json_integer((json_int_t)l->iops_max[k]));
	}
	/* Always name the group: without it QEMU keeps the disk in its old
	 * one (whose limits other disks share). A disk of no group of the
	 * spec's is alone in its own, named after it. */
	char own[32];
	snprintf(own, sizeof(own), "hs-disk%zu", disk);
	json_object_set_new(a, "group", json_string(l->group[0] ? l->group : own));
	return a;
}

int limits_apply(Vm *vm, const VmSpec *spec, bool live_disks, bool live_balloon, VmDoneCb cb,
		 void *ud,
		 HsError *err)
{
	if (!vm->qmp)
		return hs_error_set(err, -ENOTCONN, "not-running", "VM '%s' is not running",
				    vm->spec.name);
	Batch *b = calloc(1, sizeof(*b));
	if (!b)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	b->vm = vm;
	b->cb = cb;
	b->ud = ud;
	b->pending = 1; /* released at the end, so replies cannot finish early */
	bool start = !live_disks && !live_balloon;
	for (size_t i = 0; i < spec->n_disks; i++) {
		/* At start, only disks with limits; live, every disk (all zero
		 * lifts the limits). */
		if (!live_disks && !(start && vm_disk_limits_any(&spec->disks[i].limits)))
			continue;
		b->pending++;
		if (qmp_client_execute(vm->qmp, "block_set_io_throttle",
				       limits_throttle_args(i, &spec->disks[i].limits),
				       vm->hsd->qmp_timeout, on_reply, b) < 0)
			b->pending--;
	}
	/* Live, the target is always set (0: give the guest all back). */
	if (live_balloon || (start && spec->balloon_mib)) {
		uint64_t mib = spec->balloon_mib ? spec->balloon_mib : spec->memory_mib;
		/* The user's target replaces what the automatic policy set; the
		 * policy goes below it again at its next tick if it must. */
		vm->balloon_auto = 0;
		vm->balloon_settling = 0;
		b->pending++;
		if (qmp_client_execute(vm->qmp, "balloon",
				       json_pack("{s:I}", "value", (json_int_t)(mib << 20)),
				       vm->hsd->qmp_timeout, on_reply, b) < 0)
			b->pending--;
	}
	batch_done_one(b, NULL);
	return 0;
}

/* ---- PATCH /v1/vms/NAME: what can change on a running VM ---- */

typedef struct PatchCtx {
	Pending *p;
	VmSpec spec; /* the VM's spec with the changes, kept if they apply */
} PatchCtx;

static void patch_commit(Vm *vm, PatchCtx *c)
{
	int r = store_save_spec(&vm->hsd->store, &c->spec);
	if (r < 0) {
		http_reply_error(c->p->req, 500, "internal", "cannot save VM '%s': %s",
				 vm->spec.name, strerror(-r));
		vm_spec_clear(&c->spec);
		return;
	}
	vm_spec_clear(&vm->spec);
	vm->spec = c->spec;
	memset(&c->spec, 0, sizeof(c->spec));
	log_info("vm %s: limits changed", vm->spec.name);
	http_reply_json(c->p->req, 200, vm_to_json(vm, true));
}

static void on_patch_applied(Vm *vm, const HsError *err, void *ud)
{
	PatchCtx *c = ud;
	if (err) {
		/* QEMU refused (or went away): nothing is stored; what QEMU
		 * took before the refusal is put back at the next start. */
		http_reply_hserror(c->p->req, err);
		vm_spec_clear(&c->spec);
	} else {
		patch_commit(vm, c);
	}
	free(c->p);
	free(c);
}

void api_patch_vm(Hsd *h, Vm *vm, HttpRequest *req)
{
	static const char *const keys[] = {"balloon_mib", "balloon_floor_mib", "disks",
					   "cpu_pinning", "resources",	 "hotplug_ports", "display",
					   NULL};
	json_auto_t *j = body_json(req, false);
	if (!j)
		return;
	if (json_object_get(j, "hugepages")) {
		http_reply_error(req, 400, "invalid-request",
				 "hugepages: cannot change on a defined VM: QEMU sets up the "
				 "guest RAM's backing when it starts and cannot swap it; define a "
				 "new VM with the huge page size wanted");
		return;
	}
	if (!body_keys_ok(req, j, keys))
		return;
	HsError err = {0};
	PatchCtx *c = calloc(1, sizeof(*c));
	if (!c || vm_spec_copy(&vm->spec, &c->spec) < 0) {
		free(c);
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	json_t *bal = json_object_get(j, "balloon_mib"), *disks = json_object_get(j, "disks");
	json_t *bfloor = json_object_get(j, "balloon_floor_mib");
	if (bal || bfloor) {
		/* Out of range integers become values the check refuses. */
		if ((bal && !json_is_integer(bal)) || (bfloor && !json_is_integer(bfloor))) {
			http_reply_error(req, 400, "invalid-spec", "%s: must be an integer (MiB)",
					 bal && !json_is_integer(bal) ? "balloon_mib"
								       : "balloon_floor_mib");
			goto fail;
		}
		if (bal)
			c->spec.balloon_mib = json_integer_value(bal) < 0
						      ? UINT64_MAX
						      : (uint64_t)json_integer_value(bal);
		if (bfloor)
			c->spec.balloon_floor_mib = json_integer_value(bfloor) < 0
							    ? UINT64_MAX
							    : (uint64_t)json_integer_value(bfloor);
		if (vm_spec_check_balloon(&c->spec, &err) < 0) {
			http_reply_hserror(req, &err);
			goto fail;
		}
		if (c->spec.balloon_mib == vm->spec.memory_mib)
			c->spec.balloon_mib = 0;
		if (c->spec.balloon_mib && vm->spec.hugepage_size) {
			http_reply_error(req, 400, "invalid-spec", VM_BALLOON_HUGEPAGES_ERROR);
			goto fail;
		}
	}
	if (disks) {
		if (!json_is_array(disks) || json_array_size(disks) > vm->spec.n_disks) {
			http_reply_error(req, 400, "invalid-spec",
					 "disks: an array of at most %zu entries (null: unchanged, or "
					 "{\"limits\": {...}})",
					 vm->spec.n_disks);
			goto fail;
		}
		size_t i;
		json_t *d;
		json_array_foreach(disks, i, d) {
			if (json_is_null(d))
				continue;
			char field[48];
			snprintf(field, sizeof(field), "disks[%zu]", i);
			if (!json_is_object(d) || json_object_size(d) != 1 ||
			    !json_object_get(d, "limits")) {
				http_reply_error(req, 400, "invalid-spec",
						 "%s: only {\"limits\": {...}} can change", field);
				goto fail;
			}
			snprintf(field, sizeof(field), "disks[%zu].limits", i);
			if (vm_disk_limits_from_json(json_object_get(d, "limits"), field,
						     &c->spec.disks[i].limits, &err) < 0) {
				http_reply_hserror(req, &err);
				goto fail;
			}
		}
	}
	/* The display: QEMU has the new one from its next start. */
	json_t *disp = json_object_get(j, "display");
	if (disp && vm_display_from_json(disp, "display", &c->spec.display, &err) < 0) {
		http_reply_hserror(req, &err);
		goto fail;
	}
	json_t *pin = json_object_get(j, "cpu_pinning"), *res = json_object_get(j, "resources");
	/* Spare PCIe ports for hot-plugs: QEMU has them from its next start. */
	json_t *ports = json_object_get(j, "hotplug_ports");
	if (pin || res || ports) {
		/* Checked as part of a whole spec, like at create. */
		json_auto_t *full = vm_spec_to_json(&vm->spec);
		if (pin)
			json_object_set(full, "cpu_pinning", pin);
		if (res)
			json_object_set(full, "resources", res);
		if (ports)
			json_object_set(full, "hotplug_ports", ports);
		VmSpecDefaults defs = {.accel = vm->spec.accel, .check_files = false};
		VmSpec t;
		if (vm_spec_from_json(full, &defs, &t, &err) < 0) {
			http_reply_hserror(req, &err);
			goto fail;
		}
		for (unsigned i = 0; i < VM_MAX_CPUS; i++) {
			free(c->spec.vcpu_pins[i]);
			c->spec.vcpu_pins[i] = TAKE_PTR(t.vcpu_pins[i]);
		}
		free(c->spec.emulator_pin);
		c->spec.emulator_pin = TAKE_PTR(t.emulator_pin);
		c->spec.cpu_max_pct = t.cpu_max_pct;
		c->spec.cpu_weight = t.cpu_weight;
		c->spec.memory_overhead_mib = t.memory_overhead_mib;
		c->spec.pids_max = t.pids_max;
		c->spec.hotplug_ports = t.hotplug_ports;
		vm_spec_clear(&t);
	}
	bool live = (vm->status.state == VM_STATE_RUNNING || vm->status.state == VM_STATE_PAUSED) &&
		    vm->qmp && vm->qmp_ready;
	if (!live) {
		if (vm_state_is_active(vm->status.state)) {
			http_reply_error(req, 409, "conflict", "VM '%s' is %s; try again",
					 vm->spec.name, vm_state_to_string(vm->status.state));
			goto fail;
		}
		c->p = NULL;
		int r = store_save_spec(&h->store, &c->spec);
		if (r < 0) {
			http_reply_error(req, 500, "internal", "cannot save VM '%s': %s",
					 vm->spec.name, strerror(-r));
			goto fail;
		}
		vm_spec_clear(&vm->spec);
		vm->spec = c->spec;
		free(c);
		http_reply_json(req, 200, vm_to_json(vm, true));
		return;
	}
	/* Pins first: synchronous, and refused pins change nothing else. A
	 * VM whose vCPU threads hsd has not looked up yet pins them at its
	 * next start (or now, if they are known from metrics). */
	if (pin && pinning_apply(vm, &c->spec, &err) < 0) {
		http_reply_hserror(req, &err);
		goto fail;
	}
	/* Pins move the emulator's cpuset, disk limits io.max. */
	if ((res || pin || disks) && h->has_cgroup) {
		CgroupLimits cl;
		vm_cgroup_limits(vm, &c->spec, &cl);
		int cr = cgroup_vm_set_limits(&h->cgroup, vm->spec.name, &cl, &err);
		if (cr < 0) {
			http_reply_hserror(req, &err);
			goto fail;
		}
		vm->cgroup_skipped = (unsigned)cr;
	}
	if (pin)
		pinning_place_threads(vm, &c->spec);
	c->p = pending_new(h, req);
	if (!c->p) {
		http_reply_error(req, 500, "internal", "out of memory");
		goto fail;
	}
	if (!disks && !bal) {
		/* Nothing for QEMU (pins and cgroup limits are applied above). */
		patch_commit(vm, c);
		free(c->p);
		free(c);
		return;
	}
	if (limits_apply(vm, &c->spec, disks != NULL, bal != NULL, on_patch_applied, c, &err) < 0) {
		free(c->p);
		http_reply_hserror(req, &err);
		goto fail;
	}
	http_defer(req);
	return;
fail:
	vm_spec_clear(&c->spec);
	free(c);
}
