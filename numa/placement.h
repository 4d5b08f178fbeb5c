/* SPDX-License-Identifier: Apache-2.0 */
/* NUMA placement policy: which host node(s) a VM's RAM and vCPUs go to,
 * the guest NUMA cells that mirror them, and optional vCPU pinning.
 * Pure: it reads a NumaTopology (numa_read_topology) and the placements
 * of the VMs already on the host, and does no I/O.
 *
 * Memory a node can give (its "room"), for ordinary RAM:
 *     min(MemFree, (MemTotal - huge page pools) * overcommit - nominal)
 * and for huge pages of size S:
 *     min(free_hugepages * S, nr_hugepages * S - nominal)
 * where nominal is the guest RAM of the placed VMs of the same kind on that
 * node (node_mem; a VM placed with n_nodes 0 counts on every node in
 * proportion to the node's MemTotal, or pool size for huge pages).
 * Why both figures: what a placed VM has reserved but not yet touched is
 * not visible in MemFree (a guest faults its RAM in lazily), so MemFree
 * alone would hand the same memory out twice; the nominal figure alone
 * ignores what the host itself, page cache and processes outside `placed`
 * use. Each is an upper bound of the real room, so the smaller is used.
 * It is conservative: page cache is not in MemFree, and with
 * PlacementRequest.overcommit 1 a VM's RAM counts whole though KSM may
 * share some of it. Huge pages are never overcommitted.
 * Guest cells are sized in granules (2 MiB, or the huge page size) so the
 * memory backends stay aligned; the fit test asks for whole granules.
 *
 * Policy (placement_choose):
 * - A VM whose RAM fits on one node with CPUs stays on that one node; among
 *   those it takes the one least loaded once it is added, load being
 *   (vCPUs of the placed VMs running on the node's CPUs + its own vCPUs) /
 *   CPUs of the node (so 4 vCPUs go to an idle 8-CPU node rather than an
 *   idle 4-CPU one); then the one with the most room; then the lowest id.
 * - Otherwise it spreads over the fewest nodes that together have room,
 *   at least one of them with CPUs; among those sets, the closest (lowest
 *   sum of the distances between its members), then the least loaded, then
 *   the most room, then the lowest ids. Memory-only nodes take part only
 *   here, and only for memory. RAM is split in proportion to each node's
 *   room; a node's cell gets vCPUs in proportion to its RAM, at least one
 *   each while vCPUs last; a memory-only node's cell gets none (the guest
 *   sees a CPU-less NUMA node, as on the host).
 * - req->node >= 0 forces that node (no spreading) after checking it.
 *   A memory-only node holds the RAM and the vCPUs run on the nearest node
 *   with CPUs (least loaded, then lowest id, among equally near ones).
 * - pin_vcpus: each vCPU gets its own host CPU of its cell's node, the
 *   least loaded first (pins of placed VMs count 1, an unpinned vCPU
 *   counts 1/n on each of the n CPUs it may use), lowest number on ties;
 *   past one per CPU it wraps around in the same order.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "numa.h"

#define PLACEMENT_MAX_VCPUS 1024
/* vcpu_cpu[i]: vCPU i is not pinned (it may run on its cell's CPUs). */
#define PLACEMENT_CPU_ANY UINT16_MAX
/* Guest cell granule for ordinary RAM. */
#define PLACEMENT_GRANULE (2ull << 20)

/* A VM already placed (input), or the placement made for one (output).
 * Start one from placement_vm_init(): a zeroed struct would pin every
 * vCPU to CPU 0.
 * Guest cell c is backed by host node nodes[c] and holds the vCPUs
 * first..first+cell_vcpus[c]-1, first being the sum of cell_vcpus before
 * it (QEMU: -numa node,nodeid=c,cpus=first-last,memdev=<node_mem[c] bound
 * to host node nodes[c]>). placement_choose lists the cells on nodes with
 * CPUs first, then the memory-only ones, each by ascending node id. */
typedef struct PlacementVm {
	/* Bytes of guest RAM. */
	uint64_t memory;
	/* vCPUs, at most PLACEMENT_MAX_VCPUS. */
	unsigned vcpus;
	/* 0: ordinary RAM; else the size of the huge pages backing it, bytes. */
	uint64_t hugepage_size;
	/* Guest cells: 1 when it fits on one node. 0 in an input VM that was
	 * never placed: its RAM counts on every node in proportion to the
	 * node's size, its vCPUs over cpus (or all host CPUs). */
	unsigned n_nodes;
	/* Host node id (not index into NumaTopology.nodes) of each cell. */
	unsigned nodes[NUMA_MAX_NODES];
	/* Guest RAM of each cell, bytes (the guest NUMA cell sizes); they sum
	 * to memory, and are whole granules but for one cell's remainder. */
	uint64_t node_mem[NUMA_MAX_NODES];
	/* vCPUs of each cell; they sum to vcpus. 0: a CPU-less guest cell. */
	unsigned cell_vcpus[NUMA_MAX_NODES];
	/* Host CPUs of the placement: those of the nodes with CPUs it spans
	 * (for an explicit memory-only node, its nearest node with CPUs). The
	 * emulator and I/O threads run here, and so do unpinned vCPUs, each
	 * kept to its cell's node (placement_vcpu_cpus). Empty in an input VM:
	 * its cells' nodes' CPUs. */
	unsigned char cpus[NUMA_MAX_CPUS / 8];
	/* Host CPU of each vCPU, or PLACEMENT_CPU_ANY; entries past vcpus are
	 * unused. */
	uint16_t vcpu_cpu[PLACEMENT_MAX_VCPUS];
} PlacementVm;

typedef struct PlacementRequest {
	/* Bytes of guest RAM; > 0. */
	uint64_t memory;
	/* 1..PLACEMENT_MAX_VCPUS. */
	unsigned vcpus;
	/* Give each vCPU its own host CPU (see the policy above). */
	bool pin_vcpus;
	/* 0: ordinary RAM. Else back the RAM with huge pages of this size
	 * (bytes, a power of two: 2 MiB, 1 GiB); memory must be a multiple of
	 * it, and only those pools count. */
	uint64_t hugepage_size;
	/* -1: the policy chooses; >= 0: this host node id. */
	int node;
	/* Ordinary RAM only: the nominal room is (MemTotal - pools) *
	 * overcommit (1.5 lets guests' RAM add up to 150% when KSM shares
	 * pages; MemFree still caps it). <= 0 means 1. */
	double overcommit;
} PlacementRequest;

/* Sets every field to "nothing": no cells, no CPUs, no pins. */
void placement_vm_init(PlacementVm *vm);

/* Chooses where to place req given the VMs already on the host.
 * Returns 0 and fills *ret (ret->memory, vcpus and hugepage_size are the
 * request's), with a one-line account of the choice in why; or a negative
 * errno with the reason in why (ret untouched):
 *   -ENOSPC  not enough room ("needs 64.0 GiB, the most any node can give
 *            is 31.2 GiB and all nodes together 60.0 GiB"), or no node has
 *            CPUs;
 *   -ENOENT  req->node is not a node of the host;
 *   -EINVAL  a malformed request (0 memory or vCPUs, too many vCPUs, a bad
 *            huge page size or memory not a multiple of it);
 *   -ENODEV  the topology has no nodes.
 * why may be NULL; why_size 0 means no message. */
int placement_choose(const NumaTopology *topo, const PlacementVm *placed, size_t n_placed,
		     const PlacementRequest *req, PlacementVm *ret, char *why, size_t why_size);

/* Admission of a VM backed by huge pages, just before its QEMU starts:
 * can the host's pools back it now? vm->memory and vm->hugepage_size (> 0)
 * say what it needs; its cells (n_nodes > 0: placed) say from which nodes.
 * `starting` are other VMs whose QEMU is starting: their pages may not
 * show in the kernel's figures yet, so each of the same huge page size
 * counts whole (on its cells' nodes, and host-wide); a VM already running
 * has taken its pages (QEMU preallocates them), and the figures show it.
 *   host-wide: pages needed <= free - resv - starting
 *   per cell:  pages needed on node N <= N's free - starting on N
 * (the kernel keeps reservations host-wide only, so a node's figure is
 * free pages less what starting VMs placed there will take).
 * Returns 0; -ENOENT when the host has no huge pages of that size; -EINVAL
 * for a malformed request (memory not a whole number of pages); -ENOSPC
 * when too few are free: why names the figures and the knob to raise
 * ("needs 64 huge pages of 2 MiB on node 0, 32 free; raise ..."). */
int placement_check_hugepages(const NumaTopology *topo, const PlacementVm *vm,
			      const PlacementVm *starting, size_t n_starting, char *why,
			      size_t why_size);

/* The host CPUs vCPU `vcpu` of vm may run on: its pinned CPU; else its
 * cell's node's CPUs within vm->cpus, or vm->cpus when that leaves none (a
 * memory-only cell), or the cell node's CPUs when vm->cpus is empty, or all
 * host CPUs when the VM has no cells. Returns how many. */
unsigned placement_vcpu_cpus(const NumaTopology *topo, const PlacementVm *vm, unsigned vcpu,
			     unsigned char ret_cpus[NUMA_MAX_CPUS / 8]);
