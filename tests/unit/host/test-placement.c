/* SPDX-License-Identifier: Apache-2.0 */
/* The NUMA placement policy on hand-made topologies: exact node ids, cell
 * sizes and pins, so that a wrong policy fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static NumaTopology *topo_new(void)
{
	NumaTopology *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	return t;
}

/* Node idx (id idx) with CPUs first..first+n_cpus-1; every distance 10 to
 * itself, 20 to others until set_distance. */
static void set_node(NumaTopology *t, unsigned idx, unsigned first, unsigned n_cpus, uint64_t total,
		     uint64_t free)
{
	NumaNode *n = &t->nodes[idx];
	n->id = idx;
	n->mem_total = total;
	n->mem_free = free;
	n->n_cpus = n_cpus;
	for (unsigned c = first; c < first + n_cpus; c++)
		n->cpus[c / 8] |= (unsigned char)(1u << (c % 8));
	if (idx >= t->n_nodes)
		t->n_nodes = idx + 1;
	for (unsigned i = 0; i < t->n_nodes; i++)
		for (unsigned j = 0; j < t->n_nodes; j++)
			if (!t->nodes[i].distance[j])
				t->nodes[i].distance[j] = i == j ? 10 : 20;
}

static void set_distance(NumaTopology *t, unsigned a, unsigned b, unsigned d)
{
	t->nodes[a].distance[b] = d;
	t->nodes[b].distance[a] = d;
}

static void add_hugepages(NumaTopology *t, unsigned idx, uint64_t size, uint64_t nr, uint64_t free)
{
	NumaNode *n = &t->nodes[idx];
	n->hugepages[n->n_hugepage_sizes++] = (NumaHugepages){.size = size, .nr = nr, .free = free};
}

static PlacementRequest req_of(uint64_t memory, unsigned vcpus)
{
	return (PlacementRequest){.memory = memory, .vcpus = vcpus, .node = -1};
}

/* A placed VM on one node, unpinned. */
static void vm_on(PlacementVm *vm, unsigned node, uint64_t memory, unsigned vcpus)
{
	placement_vm_init(vm);
	vm->memory = memory;
	vm->vcpus = vcpus;
	vm->n_nodes = 1;
	vm->nodes[0] = node;
	vm->node_mem[0] = memory;
	vm->cell_vcpus[0] = vcpus;
}

static bool same_cpus(const unsigned char *a, const unsigned char *b)
{
	return memcmp(a, b, NUMA_MAX_CPUS / 8) == 0;
}

static void assert_consistent(const PlacementVm *vm)
{
	uint64_t mem = 0;
	unsigned vcpus = 0;
	for (unsigned k = 0; k < vm->n_nodes; k++) {
		mem += vm->node_mem[k];
		vcpus += vm->cell_vcpus[k];
	}
	assert_int_equal(mem, vm->memory);
	assert_int_equal(vcpus, vm->vcpus);
}

static void test_fits_one_least_loaded(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 8, 64 * GiB, 60 * GiB);
	set_node(t, 1, 8, 8, 64 * GiB, 60 * GiB);
	PlacementVm placed[1], vm;
	vm_on(&placed[0], 0, 4 * GiB, 4);
	PlacementRequest req = req_of(8 * GiB, 4);
	char why[256];
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_nodes, 1);
	assert_int_equal(vm.nodes[0], 1);
	assert_int_equal(vm.node_mem[0], 8 * GiB);
	assert_int_equal(vm.cell_vcpus[0], 4);
	assert_true(same_cpus(vm.cpus, t->nodes[1].cpus));
	for (unsigned v = 0; v < 4; v++)
		assert_int_equal(vm.vcpu_cpu[v], PLACEMENT_CPU_ANY);
	assert_non_null(strstr(why, "node 1"));

	/* Move the load to node 1: node 0 it is. */
	vm_on(&placed[0], 1, 4 * GiB, 4);
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.nodes[0], 0);
	free(t);
}

static void test_tie_breaks(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 8, 64 * GiB, 40 * GiB);
	set_node(t, 1, 8, 8, 64 * GiB, 50 * GiB);
	set_node(t, 2, 16, 8, 64 * GiB, 50 * GiB);
	PlacementRequest req = req_of(8 * GiB, 2);
	PlacementVm vm;
	/* Equal load: the most room (1 and 2), then the lowest id. */
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	/* Same call, same answer. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
		assert_int_equal(vm.nodes[0], 1);
	}
	/* Everything equal: the lowest id. */
	t->nodes[0].mem_free = 50 * GiB;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 0);
	free(t);

	/* Load counted with the new VM: an idle 8-CPU node beats an idle 4-CPU
	 * node with more memory (4 vCPUs: 0.5 per CPU against 1.0). */
	t = topo_new();
	set_node(t, 0, 0, 4, 128 * GiB, 120 * GiB);
	set_node(t, 1, 4, 8, 64 * GiB, 60 * GiB);
	req = req_of(8 * GiB, 4);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	/* Node 0 at 3 vCPUs on 4 CPUs, node 1 at 8 on 8: before adding, node 0
	 * is lighter (0.75 < 1); with the new 4 vCPUs node 1 is (1.5 < 1.75). */
	PlacementVm placed[2];
	vm_on(&placed[0], 0, 1 * GiB, 3);
	vm_on(&placed[1], 1, 1 * GiB, 8);
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	free(t);
}

static void place_in_a_row(NumaTopology *t, unsigned n, const unsigned *expect)
{
	PlacementVm *placed = calloc(n, sizeof(*placed));
	assert_non_null(placed);
	PlacementRequest req = req_of(1 * GiB, 2);
	for (unsigned i = 0; i < n; i++) {
		char why[256];
		assert_int_equal(placement_choose(t, placed, i, &req, &placed[i], why, sizeof(why)),
				 0);
		assert_int_equal(placed[i].n_nodes, 1);
		assert_int_equal(placed[i].nodes[0], expect[i]);
	}
	free(placed);
}

static void test_ten_in_a_row(void **state)
{
	/* Two equal nodes: they alternate. */
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 8, 64 * GiB, 64 * GiB);
	set_node(t, 1, 8, 8, 64 * GiB, 64 * GiB);
	static const unsigned alternate[10] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
	place_in_a_row(t, 10, alternate);
	free(t);

	/* 8 CPUs against 4: two VMs to one, with equal loads going to the node
	 * with more room left (node 1 has fewer VMs). 14 vCPUs on 8 CPUs
	 * against 6 on 4 at the end. */
	t = topo_new();
	set_node(t, 0, 0, 8, 64 * GiB, 64 * GiB);
	set_node(t, 1, 8, 4, 64 * GiB, 64 * GiB);
	static const unsigned weighted[10] = {0, 1, 0, 0, 1, 0, 0, 1, 0, 0};
	place_in_a_row(t, 10, weighted);
	free(t);
}

static void test_accounts_nominal_memory(void **state)
{
	/* Node 0 has 24 GiB held by a VM that has touched only 1 GiB: MemFree
	 * says 31, the nominal figure 8. A 16 GiB VM goes to node 1 even
	 * though node 0 is less loaded. */
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 8, 32 * GiB, 31 * GiB);
	set_node(t, 1, 8, 8, 32 * GiB, 20 * GiB);
	PlacementVm placed[2], vm;
	vm_on(&placed[0], 0, 24 * GiB, 1);
	vm_on(&placed[1], 1, 1 * GiB, 8);
	PlacementRequest req = req_of(16 * GiB, 2);
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	/* MemFree caps it: node 1 has 31 GiB nominal room but 20 free; with
	 * node 0's 8 that is 28 in all. */
	req = req_of(29 * GiB, 2);
	char why[256];
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 29.0 GiB, the most any node can give is 20.0 GiB and all "
				 "nodes together 28.0 GiB");
	/* Overcommit 1.5 widens the nominal figure, MemFree still caps:
	 * node 0: min(48 - 24, 31) = 24. */
	req = req_of(22 * GiB, 2);
	req.overcommit = 1.5;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 1);
	assert_int_equal(vm.nodes[0], 0);

	/* A VM never placed counts on every node by MemTotal, and its vCPUs
	 * over all CPUs: 16 GiB over two equal nodes is 8 GiB each. */
	placement_vm_init(&placed[0]);
	placed[0].memory = 16 * GiB;
	placed[0].vcpus = 16;
	t->nodes[0].mem_free = t->nodes[1].mem_free = 32 * GiB;
	req = req_of(24 * GiB, 1);
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 1);
	req = req_of(25 * GiB, 1);
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	/* Its vCPUs: evenly over both nodes (a tie: node 0), or over the CPUs
	 * it is kept to (node 0's: node 1 then). */
	req = req_of(1 * GiB, 1);
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 0);
	placed[0].cpus[0] = 0xff;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	free(t);
}

/* Four nodes in two pairs: 0-1 and 2-3 at 12, across at 20. */
static NumaTopology *four_nodes(uint64_t free0, uint64_t free1, uint64_t free2, uint64_t free3)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 4, 64 * GiB, free0);
	set_node(t, 1, 4, 4, 64 * GiB, free1);
	set_node(t, 2, 8, 4, 64 * GiB, free2);
	set_node(t, 3, 12, 4, 64 * GiB, free3);
	set_distance(t, 0, 1, 12);
	set_distance(t, 2, 3, 12);
	return t;
}

static void test_spread_nearest_pair(void **state)
{
	/* 24 GiB fits on no node; the pairs {0,2}, {1,2} and {2,3} can hold
	 * it, {2,3} is the near one. */
	NumaTopology *t = four_nodes(10 * GiB, 10 * GiB, 14 * GiB, 12 * GiB);
	PlacementRequest req = req_of(24 * GiB, 8);
	PlacementVm vm;
	char why[256];
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.nodes[0], 2);
	assert_int_equal(vm.nodes[1], 3);
	/* 12288 granules of 2 MiB in proportion 7168:6144: 6616.6 and 5671.4,
	 * the spare granule to the larger remainder. */
	assert_int_equal(vm.node_mem[0], 6617 * 2 * MiB);
	assert_int_equal(vm.node_mem[1], 5671 * 2 * MiB);
	assert_int_equal(vm.cell_vcpus[0], 4);
	assert_int_equal(vm.cell_vcpus[1], 4);
	assert_consistent(&vm);
	unsigned char both[NUMA_MAX_CPUS / 8] = {0};
	both[1] = 0xff; /* CPUs 8-15 */
	assert_true(same_cpus(vm.cpus, both));
	assert_non_null(strstr(why, "spread over nodes 2"));

	/* Fewest nodes before nearness: {0,2} is the only pair with room. */
	NumaTopology *u = four_nodes(20 * GiB, 2 * GiB, 20 * GiB, 2 * GiB);
	req = req_of(30 * GiB, 4);
	assert_int_equal(placement_choose(u, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.nodes[0], 0);
	assert_int_equal(vm.nodes[1], 2);
	/* Equal distance sets: the less loaded one. */
	NumaTopology *w = four_nodes(10 * GiB, 10 * GiB, 10 * GiB, 10 * GiB);
	PlacementVm placed[1];
	vm_on(&placed[0], 1, 1 * GiB, 8);
	req = req_of(16 * GiB, 4);
	assert_int_equal(placement_choose(w, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 2);
	assert_int_equal(vm.nodes[1], 3);
	/* Equal distance and load: the roomier set. */
	NumaTopology *x = four_nodes(10 * GiB, 10 * GiB, 12 * GiB, 12 * GiB);
	req = req_of(16 * GiB, 4);
	assert_int_equal(placement_choose(x, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 2);
	assert_int_equal(vm.nodes[1], 3);
	free(x);
	free(t);
	free(u);
	free(w);
}

static void test_split_sums_exactly(void **state)
{
	/* 3 nodes of 10, 7 and 5 GiB (all needed) for 20 GiB + 1 MiB: not a
	 * whole number of granules. */
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 2, 16 * GiB, 10 * GiB);
	set_node(t, 1, 2, 2, 16 * GiB, 7 * GiB);
	set_node(t, 2, 4, 2, 16 * GiB, 5 * GiB);
	PlacementRequest req = req_of(20 * GiB + MiB, 5);
	PlacementVm vm;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 3);
	assert_consistent(&vm);
	/* 10240 granules as 5120:3584:2560 of 11264: 4654.55, 3258.18, 2327.27 ->
	 * 4654 + 3258 + 2327 = 10239, one more to node 0 (remainder .5), and
	 * the odd MiB to the cell with the most room left (node 0: 465 granules
	 * against 326 and 233). */
	assert_int_equal(vm.node_mem[0], 4655 * 2 * MiB + MiB);
	assert_int_equal(vm.node_mem[1], 3258 * 2 * MiB);
	assert_int_equal(vm.node_mem[2], 2327 * 2 * MiB);
	for (unsigned k = 0; k < 3; k++)
		assert_true(vm.node_mem[k] <= t->nodes[k].mem_free);
	/* 5 vCPUs as 2.27, 1.59, 1.14 (by RAM): 2, 1, 1 and the spare to
	 * node 1. */
	assert_int_equal(vm.cell_vcpus[0], 2);
	assert_int_equal(vm.cell_vcpus[1], 2);
	assert_int_equal(vm.cell_vcpus[2], 1);

	/* Exactly all there is (a whole number of granules): fits. */
	req = req_of(22 * GiB, 3);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.node_mem[0], 10 * GiB);
	assert_int_equal(vm.node_mem[1], 7 * GiB);
	assert_int_equal(vm.node_mem[2], 5 * GiB);
	req = req_of(22 * GiB + MiB, 3);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), -ENOSPC);
	free(t);

	/* The odd MiB where the most room is left: node 1 (1024 granules
	 * against 512), not the first cell. */
	t = topo_new();
	set_node(t, 0, 0, 2, 16 * GiB, 5 * GiB);
	set_node(t, 1, 2, 2, 16 * GiB, 10 * GiB);
	req = req_of(12 * GiB + MiB, 3);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.node_mem[0], 4 * GiB);
	assert_int_equal(vm.node_mem[1], 8 * GiB + MiB);
	assert_consistent(&vm);
	free(t);
}

static void test_vcpus_across_cells(void **state)
{
	/* Node 1 gives 24 GiB, node 0 8: RAM 3:1, vCPUs follow. */
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 4, 16 * GiB, 8 * GiB);
	set_node(t, 1, 4, 4, 32 * GiB, 24 * GiB);
	PlacementRequest req = req_of(32 * GiB, 8);
	PlacementVm vm;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.nodes[0], 0);
	assert_int_equal(vm.nodes[1], 1);
	assert_int_equal(vm.node_mem[0], 8 * GiB);
	assert_int_equal(vm.node_mem[1], 24 * GiB);
	assert_int_equal(vm.cell_vcpus[0], 2);
	assert_int_equal(vm.cell_vcpus[1], 6);
	/* vCPUs 0-1 on node 0's CPUs, 2-7 on node 1's. */
	unsigned char set[NUMA_MAX_CPUS / 8];
	assert_int_equal(placement_vcpu_cpus(t, &vm, 1, set), 4);
	assert_true(same_cpus(set, t->nodes[0].cpus));
	assert_int_equal(placement_vcpu_cpus(t, &vm, 2, set), 4);
	assert_true(same_cpus(set, t->nodes[1].cpus));

	/* 3 vCPUs: 0.75 and 2.25: 1 and 2. */
	req = req_of(32 * GiB, 3);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.cell_vcpus[0], 1);
	assert_int_equal(vm.cell_vcpus[1], 2);
	/* 1 vCPU: it goes to the cell with the most RAM; the other is CPU-less. */
	req = req_of(32 * GiB, 1);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.cell_vcpus[0], 0);
	assert_int_equal(vm.cell_vcpus[1], 1);
	/* 7 vCPUs: 1.75 and 5.25: 2 and 5. */
	req = req_of(32 * GiB, 7);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.cell_vcpus[0], 2);
	assert_int_equal(vm.cell_vcpus[1], 5);

	/* RAM 1:7 and 2 vCPUs: 0.25 and 1.75 round to 0 and 2; each cell
	 * with CPUs gets one. */
	t->nodes[0].mem_free = 4 * GiB;
	t->nodes[1].mem_free = 28 * GiB;
	req = req_of(32 * GiB, 2);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.node_mem[0], 4 * GiB);
	assert_int_equal(vm.cell_vcpus[0], 1);
	assert_int_equal(vm.cell_vcpus[1], 1);
	/* 4 vCPUs: 0.5 and 3.5: 1 and 3 (the tie to the first). */
	req = req_of(32 * GiB, 4);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.cell_vcpus[0], 1);
	assert_int_equal(vm.cell_vcpus[1], 3);
	free(t);
}

static void test_explicit_node(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 8, 64 * GiB, 60 * GiB);
	set_node(t, 1, 8, 8, 16 * GiB, 12 * GiB);
	set_node(t, 2, 0, 0, 64 * GiB, 64 * GiB); /* memory-only */
	set_distance(t, 1, 2, 12);
	PlacementVm placed[1], vm;
	vm_on(&placed[0], 1, 2 * GiB, 8);
	char why[256];

	/* The policy would take node 0; asked for 1, node 1 it is. */
	PlacementRequest req = req_of(8 * GiB, 4);
	req.node = 1;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_nodes, 1);
	assert_int_equal(vm.nodes[0], 1);
	assert_true(same_cpus(vm.cpus, t->nodes[1].cpus));
	assert_string_equal(why, "node 1 as asked (room for 12.0 GiB)");

	/* Too small: no spreading, and the figures. */
	req.memory = 16 * GiB;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "node 1 can give 12.0 GiB (MemTotal 16.0 GiB, 2.0 GiB held by 1 "
				 "placed VM, MemFree 12.0 GiB), the VM needs 16.0 GiB");

	/* Nonexistent. */
	req.node = 7;
	req.memory = 1 * GiB;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), -ENOENT);
	assert_string_equal(why, "node 7 does not exist; the host has nodes 0, 1, 2");

	/* Memory-only: RAM there, vCPUs on the nearest node with CPUs (1, at
	 * 12, though 0 is idle). */
	req.node = 2;
	req.memory = 32 * GiB;
	req.pin_vcpus = true;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_nodes, 1);
	assert_int_equal(vm.nodes[0], 2);
	assert_int_equal(vm.node_mem[0], 32 * GiB);
	assert_int_equal(vm.cell_vcpus[0], 4);
	assert_true(same_cpus(vm.cpus, t->nodes[1].cpus));
	for (unsigned v = 0; v < 4; v++)
		assert_int_equal(vm.vcpu_cpu[v], 8 + v);
	assert_non_null(strstr(why, "vCPUs on node 1"));
	unsigned char set[NUMA_MAX_CPUS / 8];
	req.pin_vcpus = false;
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(placement_vcpu_cpus(t, &vm, 0, set), 8);
	assert_true(same_cpus(set, t->nodes[1].cpus));

	/* Memory-only and no node with CPUs at all. */
	NumaTopology *u = topo_new();
	set_node(u, 0, 0, 0, 64 * GiB, 64 * GiB);
	req = req_of(1 * GiB, 1);
	req.node = 0;
	assert_int_equal(placement_choose(u, NULL, 0, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "node 0 has no CPUs, and no node of the host has any");
	req.node = -1;
	assert_int_equal(placement_choose(u, NULL, 0, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "no node of the host has CPUs");
	free(u);
	free(t);
}

static void test_memory_only_node_for_memory(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 4, 8 * GiB, 6 * GiB);
	set_node(t, 1, 4, 4, 8 * GiB, 6 * GiB);
	set_node(t, 2, 0, 0, 64 * GiB, 64 * GiB); /* memory-only, near 0 */
	set_distance(t, 0, 2, 12);
	PlacementVm vm;
	/* Fits on a node with CPUs: never the memory-only one, roomiest as it is. */
	PlacementRequest req = req_of(4 * GiB, 4);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 1);
	assert_int_equal(vm.nodes[0], 0);
	/* 16 GiB fits on node 2 alone, which cannot run vCPUs: spread over the
	 * nearest pair with CPUs, {0,2}; cell 1 is CPU-less. 8192 granules as
	 * 3072:32768 -> 702.2 and 7489.8. */
	req = req_of(16 * GiB, 4);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.nodes[0], 0);
	assert_int_equal(vm.nodes[1], 2);
	assert_int_equal(vm.node_mem[0], 702 * 2 * MiB);
	assert_int_equal(vm.node_mem[1], 7490 * 2 * MiB);
	assert_int_equal(vm.cell_vcpus[0], 4);
	assert_int_equal(vm.cell_vcpus[1], 0);
	assert_true(same_cpus(vm.cpus, t->nodes[0].cpus));
	/* Node 0 has one granule left: it still gets a cell, and all vCPUs. */
	PlacementVm placed[2];
	vm_on(&placed[0], 0, 8 * GiB - 2 * MiB, 1);
	vm_on(&placed[1], 1, 8 * GiB, 1);
	req = req_of(4 * GiB, 3);
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.nodes[0], 0);
	assert_int_equal(vm.nodes[1], 2);
	assert_int_equal(vm.node_mem[0], 2 * MiB);
	assert_int_equal(vm.node_mem[1], 4 * GiB - 2 * MiB);
	assert_int_equal(vm.cell_vcpus[0], 3);
	assert_int_equal(vm.cell_vcpus[1], 0);
	/* 1 granule and 1 MiB over nodes with 1 and 2048 granules of room: the
	 * granule rounds to node 2, the odd MiB goes to node 0's empty cell. */
	req = req_of(3 * MiB, 1);
	t->nodes[2].mem_free = 4 * GiB;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	assert_int_equal(vm.node_mem[0], 1 * MiB);
	assert_int_equal(vm.node_mem[1], 2 * MiB);
	t->nodes[2].mem_free = 64 * GiB;
	req = req_of(16 * GiB, 4);

	/* Nodes with CPUs full: the memory-only node alone will not do. */
	vm_on(&placed[0], 0, 8 * GiB, 1);
	vm_on(&placed[1], 1, 8 * GiB, 1);
	char why[256];
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 16.0 GiB: the nodes with CPUs have no room left (the "
				 "memory-only ones could give 64.0 GiB)");
	free(t);
}

static void test_pinning(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 4, 64 * GiB, 64 * GiB);
	set_node(t, 1, 4, 4, 64 * GiB, 64 * GiB);
	PlacementVm placed[2], vm;
	/* Node 1: CPUs 4 and 5 carry a pinned vCPU each; node 0 is busier. */
	vm_on(&placed[0], 1, 1 * GiB, 2);
	placed[0].vcpu_cpu[0] = 4;
	placed[0].vcpu_cpu[1] = 5;
	vm_on(&placed[1], 0, 1 * GiB, 8);
	PlacementRequest req = req_of(1 * GiB, 2);
	req.pin_vcpus = true;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	assert_int_equal(vm.vcpu_cpu[0], 6);
	assert_int_equal(vm.vcpu_cpu[1], 7);
	assert_int_equal(vm.vcpu_cpu[2], PLACEMENT_CPU_ANY);
	assert_true(same_cpus(vm.cpus, t->nodes[1].cpus)); /* emulator threads */
	unsigned char set[NUMA_MAX_CPUS / 8];
	assert_int_equal(placement_vcpu_cpus(t, &vm, 1, set), 1);
	assert_true(numa_cpu_isset(set, 7));

	/* 6 vCPUs on 4 CPUs: the idle two, the others, then around again. */
	req.vcpus = 6;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.nodes[0], 1);
	static const unsigned expect[6] = {6, 7, 4, 5, 6, 7};
	for (unsigned v = 0; v < 6; v++)
		assert_int_equal(vm.vcpu_cpu[v], expect[v]);

	/* An unpinned placed VM loads its node's CPUs evenly (1/4 each), a
	 * pinned one its CPU (1): CPU 6 is pinned, so 4, 5, 7 come first. */
	PlacementVm more[2];
	vm_on(&more[0], 1, 1 * GiB, 1);
	vm_on(&more[1], 1, 1 * GiB, 1);
	more[1].vcpu_cpu[0] = 6;
	req.vcpus = 4;
	req.node = 1;
	assert_int_equal(placement_choose(t, more, 2, &req, &vm, NULL, 0), 0);
	static const unsigned expect2[4] = {4, 5, 7, 6};
	for (unsigned v = 0; v < 4; v++)
		assert_int_equal(vm.vcpu_cpu[v], expect2[v]);
	/* Unpinned but kept to CPUs 4-5 (its cpus): 2 vCPUs each there, more
	 * than the pinned 1 on CPU 6: 7, 6, 4, 5. */
	more[0].vcpus = more[0].cell_vcpus[0] = 4;
	more[0].cpus[0] = 0x30;
	assert_int_equal(placement_choose(t, more, 2, &req, &vm, NULL, 0), 0);
	static const unsigned expect4[4] = {7, 6, 4, 5};
	for (unsigned v = 0; v < 4; v++)
		assert_int_equal(vm.vcpu_cpu[v], expect4[v]);

	/* 8:1 and 12:1 oversubscription: every CPU equally often. */
	for (unsigned ratio = 8; ratio <= 12; ratio += 4) {
		req = req_of(1 * GiB, 4 * ratio);
		req.pin_vcpus = true;
		assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
		unsigned count[8] = {0};
		for (unsigned v = 0; v < 4 * ratio; v++) {
			assert_true(vm.vcpu_cpu[v] < 4);
			count[vm.vcpu_cpu[v]]++;
		}
		for (unsigned c = 0; c < 4; c++)
			assert_int_equal(count[c], ratio);
	}

	/* A spread VM pins each cell within its own node. */
	NumaTopology *u = topo_new();
	set_node(u, 0, 0, 2, 8 * GiB, 8 * GiB);
	set_node(u, 1, 2, 2, 8 * GiB, 8 * GiB);
	req = req_of(16 * GiB, 4);
	req.pin_vcpus = true;
	assert_int_equal(placement_choose(u, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 2);
	static const unsigned expect3[4] = {0, 1, 2, 3};
	for (unsigned v = 0; v < 4; v++)
		assert_int_equal(vm.vcpu_cpu[v], expect3[v]);
	free(u);
	free(t);
}

static void test_hugepages(void **state)
{
	NumaTopology *t = topo_new();
	/* Node 0: idle, lots of MemFree, no free 1 GiB pages. Node 1: busy,
	 * a pool of 16 x 1 GiB, all free, and 30 GiB MemFree. */
	set_node(t, 0, 0, 8, 64 * GiB, 60 * GiB);
	set_node(t, 1, 8, 8, 64 * GiB, 30 * GiB);
	add_hugepages(t, 0, 2 * MiB, 0, 0);
	add_hugepages(t, 0, 1 * GiB, 4, 0);
	add_hugepages(t, 1, 2 * MiB, 0, 0);
	add_hugepages(t, 1, 1 * GiB, 16, 16);
	PlacementVm placed[2], vm;
	vm_on(&placed[0], 1, 1 * GiB, 8);
	PlacementRequest req = req_of(8 * GiB, 2);
	req.hugepage_size = 1 * GiB;
	char why[256];
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.nodes[0], 1);
	assert_int_equal(vm.hugepage_size, 1 * GiB);
	assert_string_equal(why, "node 1: 1.25 vCPUs per CPU with this VM, room for 16.0 GiB of "
				 "1.0 GiB huge pages");

	/* A hugepage VM already holds 12 of node 1's pages (not faulted in, so
	 * still free): 4 left; an 8 GiB VM does not fit. */
	vm_on(&placed[1], 1, 12 * GiB, 2);
	placed[1].hugepage_size = 1 * GiB;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 8.0 GiB of 1.0 GiB huge pages, the most any node can give "
				 "is 4.0 GiB and all nodes together 4.0 GiB");
	/* 2 MiB pages: none anywhere. */
	req.hugepage_size = 2 * MiB;
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), -ENOSPC);

	/* Ordinary RAM: the pools are not available (node 0: 64 - 4 = 60,
	 * MemFree 60; node 1: 64 - 16 - 1 = 47, MemFree 30), and the hugepage
	 * VM does not count against ordinary RAM. */
	req = req_of(31 * GiB, 1);
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.nodes[0], 0);
	t->nodes[0].mem_free = 64 * GiB;
	req = req_of(61 * GiB, 1);
	assert_int_equal(placement_choose(t, placed, 2, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_nodes, 2);

	/* Not a whole number of pages; not a page size. */
	req = req_of(3 * GiB / 2, 1);
	req.hugepage_size = 1 * GiB;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -EINVAL);
	req.hugepage_size = 3000;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -EINVAL);

	/* Spread with huge pages: cells in whole pages. */
	NumaTopology *u = topo_new();
	set_node(u, 0, 0, 2, 16 * GiB, 8 * GiB);
	set_node(u, 1, 2, 2, 16 * GiB, 8 * GiB);
	add_hugepages(u, 0, 1 * GiB, 3, 3);
	add_hugepages(u, 1, 1 * GiB, 2, 2);
	req = req_of(5 * GiB, 2);
	req.hugepage_size = 1 * GiB;
	assert_int_equal(placement_choose(u, NULL, 0, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.node_mem[0], 3 * GiB);
	assert_int_equal(vm.node_mem[1], 2 * GiB);
	free(u);
	free(t);
}

static void test_enospc_message(void **state)
{
	NumaTopology *t = topo_new();
	set_node(t, 0, 0, 4, 32 * GiB, 31949 * MiB);
	set_node(t, 1, 4, 4, 32 * GiB, 29491 * MiB);
	PlacementRequest req = req_of(64 * GiB, 4);
	PlacementVm vm;
	vm.n_nodes = 77; /* untouched on failure */
	char why[256];
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 64.0 GiB, the most any node can give is 31.2 GiB and all "
				 "nodes together 60.0 GiB");
	assert_int_equal(vm.n_nodes, 77);
	/* Small figures in MiB; a short buffer truncates, NULL is fine. */
	set_node(t, 0, 0, 4, 1 * GiB, 300 * MiB);
	set_node(t, 1, 4, 4, 1 * GiB, 200 * MiB);
	req = req_of(1 * GiB, 1);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 1.0 GiB, the most any node can give is 300.0 MiB and all "
				 "nodes together 500.0 MiB");
	char tiny[6];
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, tiny, sizeof(tiny)), -ENOSPC);
	assert_string_equal(tiny, "needs");
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), -ENOSPC);
	free(t);
}

static void test_bad_requests(void **state)
{
	NumaTopology *t = topo_new();
	PlacementVm vm;
	char why[256];
	PlacementRequest req = req_of(1 * GiB, 1);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -ENODEV);
	set_node(t, 0, 0, 4, 8 * GiB, 8 * GiB);
	req.vcpus = 0;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -EINVAL);
	req = req_of(0, 1);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -EINVAL);
	req = req_of(1 * GiB, PLACEMENT_MAX_VCPUS + 1);
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), -EINVAL);
	req = req_of(1 * GiB, PLACEMENT_MAX_VCPUS);
	req.pin_vcpus = true;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.vcpu_cpu[PLACEMENT_MAX_VCPUS - 1], 3);
	free(t);
}

/* Many small nodes (8 sockets of 5): C(40,5) sets of 5 are too many to
 * try, so sets grow greedily from each seed; the first socket's five win. */
static void test_many_nodes_greedy(void **state)
{
	NumaTopology *t = topo_new();
	for (unsigned i = 0; i < 40; i++)
		set_node(t, i, i * 2, 2, 2 * GiB, 1 * GiB);
	for (unsigned i = 0; i < 40; i++)
		for (unsigned j = 0; j < 40; j++)
			t->nodes[i].distance[j] = i == j ? 10 : i / 5 == j / 5 ? 11 : 30;
	PlacementRequest req = req_of(5 * GiB, 5);
	PlacementVm vm;
	assert_int_equal(placement_choose(t, NULL, 0, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 5);
	for (unsigned k = 0; k < 5; k++) {
		assert_int_equal(vm.nodes[k], k);
		assert_int_equal(vm.node_mem[k], 1 * GiB);
		assert_int_equal(vm.cell_vcpus[k], 1);
	}
	/* Load node 0: the four others of its socket. */
	PlacementVm placed[1];
	vm_on(&placed[0], 0, 1 * MiB, 10);
	req = req_of(4 * GiB, 4);
	assert_int_equal(placement_choose(t, placed, 1, &req, &vm, NULL, 0), 0);
	assert_int_equal(vm.n_nodes, 4);
	/* 4 of 40: C(40,4) = 91390 sets, all tried: 1-4 (same socket, 0 loaded). */
	for (unsigned k = 0; k < 4; k++)
		assert_int_equal(vm.nodes[k], k + 1);
	free(t);
}

static void add_host_hugepages(NumaTopology *t, uint64_t size, uint64_t nr, uint64_t free,
			       uint64_t resv)
{
	t->hugepages[t->n_hugepage_sizes++] =
	    (NumaHugepages){.size = size, .nr = nr, .free = free, .resv = resv};
}

/* A VM of huge pages not placed on nodes (n_nodes 0). */
static void hugepage_vm(PlacementVm *vm, uint64_t memory, uint64_t size)
{
	placement_vm_init(vm);
	vm->memory = memory;
	vm->vcpus = 1;
	vm->hugepage_size = size;
}

/* Admission of a huge page VM at start: host-wide free less reserved less
 * what starting VMs take; per node when placed; the messages name the
 * figures and the file to raise. */
static void test_check_hugepages(void **state)
{
	NumaTopology *t = topo_new();
	char why[512];
	set_node(t, 0, 0, 2, 8 * GiB, 4 * GiB);
	set_node(t, 1, 2, 2, 8 * GiB, 4 * GiB);
	add_hugepages(t, 0, 2 * MiB, 100, 80);
	add_hugepages(t, 1, 2 * MiB, 100, 20);
	add_host_hugepages(t, 2 * MiB, 200, 100, 10);
	PlacementVm vm, starting[3];

	/* Not placed: 90 available host-wide (100 free - 10 reserved). */
	hugepage_vm(&vm, 180 * MiB, 2 * MiB); /* 90 pages */
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), 0);
	hugepage_vm(&vm, 182 * MiB, 2 * MiB); /* 91 pages */
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), -ENOSPC);
	assert_string_equal(why, "needs 91 huge pages of 2 MiB, 90 available (100 free less 10 "
				 "reserved and 0 for VMs being started); raise "
				 "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages "
				 "(/proc/sys/vm/nr_hugepages for the default size)");

	/* Starting VMs of the same size count whole; of another size, not. */
	hugepage_vm(&vm, 100 * MiB, 2 * MiB); /* 50 pages */
	hugepage_vm(&starting[0], 60 * MiB, 2 * MiB);	/* 30 */
	hugepage_vm(&starting[1], 1 * GiB, 1 * GiB);	/* another size */
	assert_int_equal(placement_check_hugepages(t, &vm, starting, 2, why, sizeof(why)), 0);
	hugepage_vm(&starting[2], 40 * MiB, 2 * MiB); /* 20 more: 50 > 90 - 50 */
	assert_int_equal(placement_check_hugepages(t, &vm, starting, 3, why, sizeof(why)),
			 -ENOSPC);
	assert_non_null(strstr(why, "needs 50 huge pages of 2 MiB, 40 available (100 free less 10 "
				    "reserved and 50 for VMs being started)"));

	/* Placed on node 1: its 20 free pages, less a starting VM's there. */
	vm_on(&vm, 1, 40 * MiB, 1);
	vm.hugepage_size = 2 * MiB;
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), 0);
	vm_on(&starting[0], 1, 4 * MiB, 1);
	starting[0].hugepage_size = 2 * MiB;
	vm_on(&starting[1], 0, 100 * MiB, 1); /* on the other node: not counted there */
	starting[1].hugepage_size = 2 * MiB;
	assert_int_equal(placement_check_hugepages(t, &vm, starting, 2, why, sizeof(why)),
			 -ENOSPC);
	assert_string_equal(why, "needs 20 huge pages of 2 MiB on node 1, 18 available (20 free "
				 "less 2 for VMs being started); raise "
				 "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/"
				 "nr_hugepages");
	/* Spread over both: each cell against its node. */
	vm_on(&vm, 0, 160 * MiB, 1);
	vm.hugepage_size = 2 * MiB;
	vm.n_nodes = 2;
	vm.nodes[1] = 1;
	vm.node_mem[0] = 140 * MiB; /* 70 of node 0's 80 */
	vm.node_mem[1] = 20 * MiB;  /* 10 of node 1's 20 */
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), 0);
	vm.node_mem[0] = 180 * MiB; /* 90 > 80 */
	vm.memory = 200 * MiB;
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "needs 90 huge pages of 2 MiB on node 0, 80 available"));

	/* A size the host does not have; a node without the pool. */
	hugepage_vm(&vm, 1 * GiB, 1 * GiB);
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), -ENOENT);
	assert_string_equal(why, "the host has no huge pages of 1 GiB (its sizes: 2 MiB)");
	add_host_hugepages(t, 1 * GiB, 4, 4, 0);
	vm_on(&vm, 0, 1 * GiB, 1);
	vm.hugepage_size = 1 * GiB;
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "needs 1 huge pages of 1 GiB on node 0, 0 available"));
	assert_non_null(strstr(why, "hugepages-1048576kB/nr_hugepages"));

	/* Malformed: not a whole number of pages, or no size. */
	hugepage_vm(&vm, 3 * MiB, 2 * MiB);
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, why, sizeof(why)), -EINVAL);
	hugepage_vm(&vm, 4 * MiB, 0);
	assert_int_equal(placement_check_hugepages(t, &vm, NULL, 0, NULL, 0), -EINVAL);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fits_one_least_loaded),
		cmocka_unit_test(test_tie_breaks),
		cmocka_unit_test(test_ten_in_a_row),
		cmocka_unit_test(test_accounts_nominal_memory),
		cmocka_unit_test(test_spread_nearest_pair),
		cmocka_unit_test(test_split_sums_exactly),
		cmocka_unit_test(test_vcpus_across_cells),
		cmocka_unit_test(test_explicit_node),
		cmocka_unit_test(test_memory_only_node_for_memory),
		cmocka_unit_test(test_pinning),
		cmocka_unit_test(test_hugepages),
		cmocka_unit_test(test_check_hugepages),
		cmocka_unit_test(test_enospc_message),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_many_nodes_greedy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
