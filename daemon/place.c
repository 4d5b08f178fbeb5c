/* SPDX-License-Identifier: Apache-2.0 */
/* NUMA placement of VMs at start: the host's topology as it is now, the
 * VMs already placed, and the pure policy of numa/placement.c. A VM on one
 * node gets its RAM bound there and its threads on that node's CPUs; a VM
 * too big for one node is spread with a matching guest NUMA topology. On a
 * one-node host nothing is done unless the spec names a node. */
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "hsd.h"
#include "placement.h"

/* Where a running VM was placed, in its run directory: an hsd that
 * re-adopts the VM counts it again (vm_placement_load). */
#define PLACEMENT_FILE "placement.json"

static void placement_save(Vm *vm)
{
	const PlacementVm *p = vm->placement;
	char cpus[4096];
	if (numa_format_cpulist(p->cpus, NUMA_MAX_CPUS, cpus, sizeof(cpus)) < 0)
		return;
	json_t *cells = json_array(), *pins = json_array();
	for (unsigned i = 0; i < p->n_nodes; i++)
		json_array_append_new(cells, json_pack("{s:i, s:I, s:i}", "host_node",
						       (int)p->nodes[i], "memory",
						       (json_int_t)p->node_mem[i], "vcpus",
						       (int)p->cell_vcpus[i]));
	for (unsigned i = 0; i < p->vcpus; i++)
		json_array_append_new(pins, json_integer(p->vcpu_cpu[i] == PLACEMENT_CPU_ANY
								 ? -1
								 : (json_int_t)p->vcpu_cpu[i]));
	json_auto_t *j = json_pack("{s:I, s:i, s:I, s:o, s:s, s:o}", "memory",
				   (json_int_t)p->memory, "vcpus", (int)p->vcpus, "hugepage_size",
				   (json_int_t)p->hugepage_size, "cells", cells, "cpus", cpus,
				   "vcpu_cpu", pins);
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int r = text ? hs_write_file_replace(vm->run_dirfd, PLACEMENT_FILE, text, strlen(text),
					     0600)
		     : -ENOMEM;
	if (r < 0)
		log_warning("vm %s: placement not recorded (%s): a restarted hsd will not count it",
			    vm->spec.name, strerror(-r));
}

/* The API error code of a start the huge page pools cannot back. */
#define HUGEPAGES_ERROR "no-hugepages"

/* One node or a spread, from the policy; fills the launch's cells. */
static int place_on_nodes(Vm *vm, const NumaTopology *topo, QemuLaunch *l, HsError *err)
{
	Hsd *h = vm->hsd;
	size_t n = 0;
	for (Vm *o = h->vms; o; o = o->next)
		n += o != vm && o->placement;
	PlacementVm *placed = calloc(n ? n : 1, sizeof(*placed));
	PlacementVm *res = malloc(sizeof(*res));
	if (!placed || !res) {
		free(placed);
		free(res);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	n = 0;
	for (Vm *o = h->vms; o; o = o->next)
		if (o != vm && o->placement)
			placed[n++] = *o->placement;
	PlacementRequest req = {
		.memory = vm->spec.memory_mib << 20,
		.vcpus = vm->spec.cpus,
		.hugepage_size = vm->spec.hugepage_size,
		.node = vm->spec.numa_node,
		.overcommit = h->overcommit,
	};
	char why[256] = "";
	placement_vm_init(res);
	int r = placement_choose(topo, placed, n, &req, res, why, sizeof(why));
	free(placed);
	if (r < 0) {
		free(res);
		if (r == -ENOENT)
			return hs_error_set(err, -EINVAL, "invalid-spec",
					    "VM '%s' cannot be placed: %s", vm->spec.name, why);
		if (!vm->spec.hugepage_size)
			return hs_error_set(err, -ENOSPC, "no-memory", "VM '%s' cannot be placed: %s",
					    vm->spec.name, why);
		/* Too few huge pages: as without placement (409), with the
		 * knob to turn. */
		char node[16] = "N";
		if (vm->spec.numa_node >= 0)
			snprintf(node, sizeof(node), "%d", vm->spec.numa_node);
		return hs_error_set(err, -EBUSY, HUGEPAGES_ERROR,
				    "VM '%s' cannot be placed: %s; raise "
				    "/sys/devices/system/node/node%s/hugepages/hugepages-%llukB/"
				    "nr_hugepages",
				    vm->spec.name, why, node,
				    (unsigned long long)(vm->spec.hugepage_size >> 10));
	}
	if (res->n_nodes > QEMU_MAX_NUMA_CELLS) {
		free(res);
		return hs_error_set(err, -ENOSPC, "no-memory",
				    "VM '%s' would span more than %d NUMA nodes", vm->spec.name,
				    QEMU_MAX_NUMA_CELLS);
	}
	unsigned first = 0;
	for (unsigned i = 0; i < res->n_nodes; i++) {
		l->numa_cells[i] = (QemuNumaCell){.host_node = res->nodes[i],
						  .mem_mib = res->node_mem[i] >> 20,
						  .first_vcpu = first,
						  .n_vcpus = res->cell_vcpus[i]};
		first += res->cell_vcpus[i];
	}
	l->n_numa_cells = res->n_nodes;
	vm->placement = res;
	placement_save(vm);
	log_info("vm %s: placed: %s", vm->spec.name, why);
	return 0;
}

/* A VM of huge pages as their admission sees it: its memory, and where
 * it is placed (placement NULL: not placed). */
static void hugepage_vm(const VmSpec *spec, const PlacementVm *placement, PlacementVm *ret)
{
	if (placement) {
		*ret = *placement;
		return;
	}
	placement_vm_init(ret);
	ret->memory = spec->memory_mib << 20;
	ret->vcpus = spec->cpus;
	ret->hugepage_size = spec->hugepage_size;
}

/* Another VM whose QEMU is starting on huge pages of `size`: its pages may
 * not show in the kernel's figures yet. */
static bool starting_on(const Vm *o, const Vm *vm, uint64_t size)
{
	return o != vm && o->status.state == VM_STATE_STARTING && o->spec.hugepage_size == size;
}

/* At start: the host's pools can back the VM now, counting the other VMs
 * hsd is starting. */
static int check_hugepages(Vm *vm, const NumaTopology *topo, HsError *err)
{
	uint64_t size = vm->spec.hugepage_size;
	size_t n = 0;
	for (Vm *o = vm->hsd->vms; o; o = o->next)
		n += starting_on(o, vm, size);
	PlacementVm *me = malloc(sizeof(*me));
	PlacementVm *starting = calloc(n ? n : 1, sizeof(*starting));
	if (!me || !starting) {
		free(me);
		free(starting);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	n = 0;
	for (Vm *o = vm->hsd->vms; o; o = o->next)
		if (starting_on(o, vm, size))
			hugepage_vm(&o->spec, o->placement, &starting[n++]);
	hugepage_vm(&vm->spec, vm->placement, me);
	char why[400] = "";
	int r = placement_check_hugepages(topo, me, starting, n, why, sizeof(why));
	free(me);
	free(starting);
	if (r < 0)
		return hs_error_set(err, r == -ENOENT ? -ENODEV : r == -ENOSPC ? -EBUSY : r,
				    HUGEPAGES_ERROR, "VM '%s' cannot start: %s", vm->spec.name, why);
	return 0;
}

int vm_place(Vm *vm, QemuLaunch *l, HsError *err)
{
	Hsd *h = vm->hsd;
	l->n_numa_cells = 0;
	vm_unplace(vm);
	NumaTopology *topo = malloc(sizeof(*topo));
	if (!topo)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	int r = numa_read_topology(h->host.rootfd, topo);
	if (r < 0) {
		free(topo);
		if (!vm->spec.hugepage_size)
			return 0;
		return hs_error_set(err, r, "internal",
				    "VM '%s': cannot read the host's huge page pools: %s",
				    vm->spec.name, strerror(-r));
	}
	if (topo->n_nodes > 1 || vm->spec.numa_node >= 0)
		r = place_on_nodes(vm, topo, l, err);
	if (r == 0 && vm->spec.hugepage_size)
		r = check_hugepages(vm, topo, err);
	free(topo);
	if (r < 0) {
		l->n_numa_cells = 0;
		vm_unplace(vm);
	}
	return r;
}

int vm_check_host_hugepages(Hsd *h, const VmSpec *spec, HsError *err)
{
	if (!spec->hugepage_size)
		return 0;
	NumaTopology *topo = malloc(sizeof(*topo));
	PlacementVm *vm = malloc(sizeof(*vm));
	if (!topo || !vm) {
		free(topo);
		free(vm);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	char why[400] = "";
	int r = numa_read_topology(h->host.rootfd, topo);
	if (r < 0) {
		hs_error_set(err, r, "internal", "cannot read the host's huge page pools: %s",
			     strerror(-r));
	} else {
		/* Only whether the size exists: how many are free is the
		 * start's question. */
		hugepage_vm(spec, NULL, vm);
		r = placement_check_hugepages(topo, vm, NULL, 0, why, sizeof(why));
		r = r == -ENOENT ? hs_error_set(err, -EINVAL, "invalid-spec", "hugepages: %s", why)
				 : 0;
	}
	free(topo);
	free(vm);
	return r;
}

void vm_unplace(Vm *vm)
{
	free(vm->placement);
	vm->placement = NULL;
	if (vm->run_dirfd >= 0)
		unlinkat(vm->run_dirfd, PLACEMENT_FILE, 0);
}

int vm_placement_load(Vm *vm)
{
	_cleanup_free_ char *data = NULL;
	if (vm->run_dirfd < 0 || hs_read_file(vm->run_dirfd, PLACEMENT_FILE, 1 << 20, &data,
					      NULL) < 0)
		return -ENOENT;
	json_auto_t *j = json_loads(data, 0, NULL);
	PlacementVm *p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	placement_vm_init(p);
	json_t *cells = json_object_get(j, "cells"), *pins = json_object_get(j, "vcpu_cpu");
	const char *cpus = json_string_value(json_object_get(j, "cpus"));
	json_int_t mem = json_integer_value(json_object_get(j, "memory"));
	json_int_t vcpus = json_integer_value(json_object_get(j, "vcpus"));
	bool ok = mem > 0 && vcpus > 0 && vcpus <= PLACEMENT_MAX_VCPUS && cpus &&
		  json_array_size(cells) >= 1 && json_array_size(cells) <= NUMA_MAX_NODES &&
		  json_array_size(pins) <= (size_t)vcpus &&
		  numa_parse_cpulist(cpus, p->cpus, NUMA_MAX_CPUS) >= 0;
	if (ok) {
		p->memory = (uint64_t)mem;
		p->vcpus = (unsigned)vcpus;
		p->hugepage_size = (uint64_t)json_integer_value(json_object_get(j, "hugepage_size"));
		p->n_nodes = (unsigned)json_array_size(cells);
	}
	size_t i;
	json_t *c;
	json_array_foreach (ok ? cells : NULL, i, c) {
		json_int_t node = json_integer_value(json_object_get(c, "host_node"));
		json_int_t cm = json_integer_value(json_object_get(c, "memory"));
		json_int_t cv = json_integer_value(json_object_get(c, "vcpus"));
		ok = ok && node >= 0 && node < NUMA_MAX_NODES && cm >= 0 && cv >= 0 && cv <= vcpus;
		if (ok) {
			p->nodes[i] = (unsigned)node;
			p->node_mem[i] = (uint64_t)cm;
			p->cell_vcpus[i] = (unsigned)cv;
		}
	}
	json_array_foreach (ok ? pins : NULL, i, c) {
		json_int_t cpu = json_integer_value(c);
		p->vcpu_cpu[i] = cpu >= 0 && cpu < NUMA_MAX_CPUS ? (uint16_t)cpu : PLACEMENT_CPU_ANY;
	}
	if (!ok) {
		free(p);
		log_warning("vm %s: %s is not a placement; not counted", vm->spec.name,
			    PLACEMENT_FILE);
		return -EINVAL;
	}
	free(vm->placement);
	vm->placement = p;
	return 0;
}

json_t *vm_placement_json(Vm *vm)
{
	if (!vm->placement)
		return NULL;
	const PlacementVm *p = vm->placement;
	json_t *cells = json_array();
	for (unsigned i = 0; i < p->n_nodes; i++)
		json_array_append_new(cells, json_pack("{s:i, s:I, s:i}", "host_node",
						       (int)p->nodes[i], "memory_mib",
						       (json_int_t)(p->node_mem[i] >> 20), "vcpus",
						       (int)p->cell_vcpus[i]));
	return json_pack("{s:o}", "cells", cells);
}
