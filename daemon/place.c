/* SPDX-License-Identifier: Apache-2.0 */
/* NUMA placement of VMs at start: the host's topology as it is now, the
 * VMs already placed, and the pure policy of numa/placement.c. A VM on one
 * node gets its RAM bound there and its threads on that node's CPUs; a VM
 * too big for one node is spread with a matching guest NUMA topology. On a
 * one-node host nothing is done unless the spec names a node. */
#include <sched.h>
#include <string.h>

#include "hsd.h"
#include "placement.h"

int vm_place(Vm *vm, QemuLaunch *l, HsError *err)
{
	Hsd *h = vm->hsd;
	l->n_numa_cells = 0;
	vm_unplace(vm);
	NumaTopology *topo = malloc(sizeof(*topo));
	if (!topo)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	int r = numa_read_topology(h->host.rootfd, topo);
	if (r < 0 || (topo->n_nodes <= 1 && vm->spec.numa_node < 0)) {
		free(topo);
		return 0;
	}
	size_t n = 0;
	for (Vm *o = h->vms; o; o = o->next)
		n += o != vm && o->placement;
	PlacementVm *placed = calloc(n ? n : 1, sizeof(*placed));
	PlacementVm *res = malloc(sizeof(*res));
	if (!placed || !res) {
		free(topo);
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
		.node = vm->spec.numa_node,
		.overcommit = h->overcommit,
	};
	char why[256] = "";
	placement_vm_init(res);
	r = placement_choose(topo, placed, n, &req, res, why, sizeof(why));
	free(placed);
	free(topo);
	if (r < 0) {
		free(res);
		return hs_error_set(err, r == -ENOENT ? -EINVAL : -ENOSPC,
				    r == -ENOENT ? "invalid-spec" : "no-memory",
				    "VM '%s' cannot be placed: %s", vm->spec.name, why);
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
	log_info("vm %s: placed: %s", vm->spec.name, why);
	return 0;
}

void vm_unplace(Vm *vm)
{
	free(vm->placement);
	vm->placement = NULL;
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
