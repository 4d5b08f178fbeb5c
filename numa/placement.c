/* SPDX-License-Identifier: Apache-2.0 */
/* NUMA placement policy (see placement.h). Pure: no I/O. */
#include "placement.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hs-util.h"

#define BITMAP_BYTES (NUMA_MAX_CPUS / 8)
/* Loads are counted in 1/LOAD_SCALE of a vCPU, in integers, so that equal
 * loads compare equal and the choice is deterministic. */
#define LOAD_SCALE ((uint64_t)1 << 20)
/* Distance assumed where the kernel gave none: farther than any real one. */
#define DISTANCE_UNKNOWN 255u
/* Above this many candidate sets of the smallest size, spreading builds
 * sets greedily from each seed instead of trying them all. */
#define MAX_COMBINATIONS 100000u

typedef struct Ctx {
	const NumaTopology *t;
	unsigned n;			    /* nodes in t */
	uint64_t hugepage_size;		    /* of the request; 0 ordinary RAM */
	uint64_t granule;		    /* bytes */
	uint64_t need;			    /* granules the VM needs */
	uint64_t nominal[NUMA_MAX_NODES];   /* bytes placed VMs of the same kind hold */
	unsigned n_vms[NUMA_MAX_NODES];	    /* placed VMs with RAM there */
	uint64_t room[NUMA_MAX_NODES];	    /* bytes */
	uint64_t units[NUMA_MAX_NODES];	    /* room in whole granules */
	uint64_t node_load[NUMA_MAX_NODES]; /* vCPUs on the node's CPUs, scaled */
	uint64_t cpu_load[NUMA_MAX_CPUS];   /* vCPUs on the CPU, scaled */
	int cpu_node[NUMA_MAX_CPUS];	    /* node index of a CPU, -1 none */
	unsigned char all_cpus[BITMAP_BYTES];
} Ctx;

static void why_set(char *why, size_t size, const char *fmt, ...) _printf_(3, 4);

static void why_set(char *why, size_t size, const char *fmt, ...)
{
	if (!why || !size)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

/* "31.2 GiB", "512.0 MiB". */
static const char *fmt_size(char buf[32], uint64_t bytes)
{
	if (bytes == 0 || bytes >= (1ull << 30))
		snprintf(buf, 32, "%.1f GiB", (double)bytes / (double)(1ull << 30));
	else
		snprintf(buf, 32, "%.1f MiB", (double)bytes / (double)(1ull << 20));
	return buf;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_sub(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* a * b / c without overflow in the product (c > 0). */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c, uint64_t *ret_rem)
{
	unsigned __int128 p = (unsigned __int128)a * b;
	if (ret_rem)
		*ret_rem = (uint64_t)(p % c);
	unsigned __int128 q = p / c;
	return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
}

static unsigned bm_count(const unsigned char *b)
{
	unsigned n = 0;
	for (unsigned i = 0; i < BITMAP_BYTES; i++)
		n += (unsigned)__builtin_popcount(b[i]);
	return n;
}

static void bm_set(unsigned char *b, unsigned cpu)
{
	b[cpu / 8] |= (unsigned char)(1u << (cpu % 8));
}

static unsigned bm_and_count(const unsigned char *a, const unsigned char *b)
{
	unsigned n = 0;
	for (unsigned i = 0; i < BITMAP_BYTES; i++)
		n += (unsigned)__builtin_popcount(a[i] & b[i]);
	return n;
}

static unsigned distance(const Ctx *c, unsigned i, unsigned j)
{
	if (i == j)
		return 0;
	unsigned d = c->t->nodes[i].distance[j];
	return d ? d : DISTANCE_UNKNOWN;
}

void placement_vm_init(PlacementVm *vm)
{
	memset(vm, 0, sizeof(*vm));
	for (unsigned i = 0; i < PLACEMENT_MAX_VCPUS; i++)
		vm->vcpu_cpu[i] = PLACEMENT_CPU_ANY;
}

static void all_host_cpus(const NumaTopology *t, unsigned char *ret)
{
	memset(ret, 0, BITMAP_BYTES);
	for (unsigned i = 0; i < t->n_nodes && i < NUMA_MAX_NODES; i++)
		for (unsigned b = 0; b < BITMAP_BYTES; b++)
			ret[b] |= t->nodes[i].cpus[b];
}

/* The CPUs the unpinned vCPUs of cell `cell` may use; a cell of -1 stands
 * for vCPUs outside every cell. */
static unsigned cell_cpus(const NumaTopology *t, const PlacementVm *vm, int cell,
			  unsigned char *ret)
{
	bool any_vm_cpu = bm_count(vm->cpus) > 0;
	int idx = cell >= 0 ? numa_node_index(t, vm->nodes[cell]) : -1;
	if (idx >= 0) {
		const unsigned char *node = t->nodes[idx].cpus;
		for (unsigned b = 0; b < BITMAP_BYTES; b++)
			ret[b] = any_vm_cpu ? node[b] & vm->cpus[b] : node[b];
		unsigned n = bm_count(ret);
		if (n)
			return n;
	}
	if (any_vm_cpu)
		memcpy(ret, vm->cpus, BITMAP_BYTES);
	else
		all_host_cpus(t, ret);
	return bm_count(ret);
}

/* The cell of vCPU v, or -1 beyond the cells' vCPUs. */
static int cell_of_vcpu(const PlacementVm *vm, unsigned v)
{
	unsigned first = 0;
	for (unsigned c = 0; c < vm->n_nodes && c < NUMA_MAX_NODES; c++) {
		if (v < first + vm->cell_vcpus[c])
			return (int)c;
		first += vm->cell_vcpus[c];
	}
	return -1;
}

unsigned placement_vcpu_cpus(const NumaTopology *topo, const PlacementVm *vm, unsigned vcpu,
			     unsigned char ret_cpus[NUMA_MAX_CPUS / 8])
{
	if (vcpu < PLACEMENT_MAX_VCPUS && vm->vcpu_cpu[vcpu] < NUMA_MAX_CPUS) {
		memset(ret_cpus, 0, BITMAP_BYTES);
		bm_set(ret_cpus, vm->vcpu_cpu[vcpu]);
		return 1;
	}
	return cell_cpus(topo, vm, cell_of_vcpu(vm, vcpu), ret_cpus);
}

/* Adds k unpinned vCPUs spread evenly over `set` (n CPUs) to the loads. */
static void add_spread_load(Ctx *c, const unsigned char *set, unsigned n, unsigned k)
{
	if (!n || !k)
		return;
	for (unsigned cpu = 0; cpu < NUMA_MAX_CPUS; cpu++)
		if (numa_cpu_isset(set, cpu))
			c->cpu_load[cpu] += k * LOAD_SCALE / n;
	for (unsigned i = 0; i < c->n; i++) {
		unsigned in = bm_and_count(set, c->t->nodes[i].cpus);
		if (in)
			c->node_load[i] += k * LOAD_SCALE * in / n;
	}
}

static void account_vm(Ctx *c, const PlacementVm *vm)
{
	const NumaTopology *t = c->t;
	/* RAM, when of the kind the request asks for. */
	if (vm->hugepage_size == c->hugepage_size && vm->n_nodes == 0) {
		double total = 0;
		uint64_t w[NUMA_MAX_NODES];
		for (unsigned i = 0; i < c->n; i++) {
			const NumaHugepages *h =
			    numa_node_hugepages(&t->nodes[i], c->hugepage_size);
			w[i] = c->hugepage_size ? (h ? sat_mul(h->nr, h->size) : 0)
						: t->nodes[i].mem_total;
			total += (double)w[i];
		}
		for (unsigned i = 0; total > 0 && i < c->n; i++) {
			c->nominal[i] += (uint64_t)((double)vm->memory * ((double)w[i] / total));
			if (w[i])
				c->n_vms[i]++;
		}
	} else if (vm->hugepage_size == c->hugepage_size) {
		bool counted[NUMA_MAX_NODES] = {false};
		for (unsigned k = 0; k < vm->n_nodes && k < NUMA_MAX_NODES; k++) {
			int i = numa_node_index(t, vm->nodes[k]);
			if (i < 0)
				continue;
			c->nominal[i] += vm->node_mem[k];
			if (!counted[i])
				c->n_vms[i]++;
			counted[i] = true;
		}
	}
	/* vCPUs: pinned ones where pinned, the others per cell. */
	unsigned vcpus = vm->vcpus < PLACEMENT_MAX_VCPUS ? vm->vcpus : PLACEMENT_MAX_VCPUS;
	unsigned unpinned[NUMA_MAX_NODES + 1] = {0}; /* [n_nodes]: outside every cell */
	unsigned n_cells = vm->n_nodes < NUMA_MAX_NODES ? vm->n_nodes : NUMA_MAX_NODES;
	for (unsigned v = 0; v < vcpus; v++) {
		unsigned cpu = vm->vcpu_cpu[v];
		if (cpu < NUMA_MAX_CPUS) {
			c->cpu_load[cpu] += LOAD_SCALE;
			if (c->cpu_node[cpu] >= 0)
				c->node_load[c->cpu_node[cpu]] += LOAD_SCALE;
			continue;
		}
		int cell = cell_of_vcpu(vm, v);
		unpinned[cell >= 0 ? (unsigned)cell : n_cells]++;
	}
	for (unsigned k = 0; k <= n_cells; k++) {
		if (!unpinned[k])
			continue;
		unsigned char set[BITMAP_BYTES];
		unsigned n = cell_cpus(t, vm, k < n_cells ? (int)k : -1, set);
		add_spread_load(c, set, n, unpinned[k]);
	}
}

static void compute_room(Ctx *c, double overcommit)
{
	for (unsigned i = 0; i < c->n; i++) {
		const NumaNode *node = &c->t->nodes[i];
		uint64_t nominal_room, cap;
		if (c->hugepage_size) {
			const NumaHugepages *h = numa_node_hugepages(node, c->hugepage_size);
			nominal_room = h ? sat_sub(sat_mul(h->nr, h->size), c->nominal[i]) : 0;
			cap = h ? sat_mul(h->free, h->size) : 0;
		} else {
			uint64_t pools = 0;
			for (unsigned k = 0;
			     k < node->n_hugepage_sizes && k < NUMA_MAX_HUGEPAGE_SIZES; k++) {
				uint64_t p =
				    sat_mul(node->hugepages[k].nr, node->hugepages[k].size);
				pools = p > UINT64_MAX - pools ? UINT64_MAX : pools + p;
			}
			uint64_t base = sat_sub(node->mem_total, pools);
			if (overcommit > 0 && overcommit != 1.0) {
				double b = (double)base * overcommit;
				base = b >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)b;
			}
			nominal_room = sat_sub(base, c->nominal[i]);
			cap = node->mem_free;
		}
		c->room[i] = nominal_room < cap ? nominal_room : cap;
		c->units[i] = c->room[i] / c->granule;
	}
}

/* a_load / a_cpus < b_load / b_cpus (the CPU counts are > 0). */
static int cmp_load(uint64_t a_load, unsigned a_cpus, uint64_t b_load, unsigned b_cpus)
{
	unsigned __int128 x = (unsigned __int128)a_load * b_cpus;
	unsigned __int128 y = (unsigned __int128)b_load * a_cpus;
	return x < y ? -1 : x > y;
}

static double load_per_cpu(uint64_t load, unsigned cpus)
{
	return cpus ? (double)load / (double)LOAD_SCALE / cpus : 0;
}

/* Nodes of a spread placement, by index, ascending. */
typedef struct NodeSet {
	unsigned n;
	unsigned idx[NUMA_MAX_NODES];
	uint64_t units; /* room, granules */
	uint64_t cost;	/* sum of the distances between members */
	uint64_t load;	/* scaled vCPUs on its CPUs, the new VM's included */
	unsigned cpus;	/* CPUs of its nodes */
} NodeSet;

static void set_measure(const Ctx *c, NodeSet *s, unsigned vcpus)
{
	s->units = s->cost = 0;
	s->load = (uint64_t)vcpus * LOAD_SCALE;
	s->cpus = 0;
	for (unsigned a = 0; a < s->n; a++) {
		unsigned i = s->idx[a];
		s->units += c->units[i];
		s->cpus += c->t->nodes[i].n_cpus;
		if (c->t->nodes[i].n_cpus)
			s->load += c->node_load[i];
		for (unsigned b = 0; b < s->n; b++)
			s->cost += distance(c, i, s->idx[b]);
	}
}

/* Whether a is a better spread than b (both usable). */
static bool set_better(const NodeSet *a, const NodeSet *b)
{
	if (a->n != b->n)
		return a->n < b->n;
	if (a->cost != b->cost)
		return a->cost < b->cost;
	int l = cmp_load(a->load, a->cpus, b->load, b->cpus);
	if (l)
		return l < 0;
	if (a->units != b->units)
		return a->units > b->units;
	for (unsigned k = 0; k < a->n; k++)
		if (a->idx[k] != b->idx[k])
			return a->idx[k] < b->idx[k];
	return false;
}

/* Room enough, and CPUs for the vCPUs. */
static bool set_usable(const Ctx *c, const NodeSet *s)
{
	return s->units >= c->need && s->cpus > 0;
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

/* From each seed with CPUs, add the node nearest to the set (then the one
 * with most room, then the lowest) until there is room. */
static bool spread_greedy(const Ctx *c, const unsigned *elig, unsigned m, unsigned vcpus,
			  NodeSet *best)
{
	bool found = false;
	for (unsigned s = 0; s < m; s++) {
		if (!c->t->nodes[elig[s]].n_cpus)
			continue;
		NodeSet cand = {.n = 1, .idx = {elig[s]}};
		bool in[NUMA_MAX_NODES] = {false};
		in[elig[s]] = true;
		uint64_t units = c->units[elig[s]];
		while (units < c->need && cand.n < m) {
			int pick = -1;
			uint64_t pick_d = 0;
			for (unsigned k = 0; k < m; k++) {
				unsigned i = elig[k];
				if (in[i])
					continue;
				uint64_t d = 0;
				for (unsigned a = 0; a < cand.n; a++)
					d += distance(c, cand.idx[a], i);
				if (pick < 0 || d < pick_d ||
				    (d == pick_d && c->units[i] > c->units[pick])) {
					pick = (int)i;
					pick_d = d;
				}
			}
			if (pick < 0)
				break;
			in[pick] = true;
			cand.idx[cand.n++] = (unsigned)pick;
			units += c->units[pick];
		}
		qsort(cand.idx, cand.n, sizeof(cand.idx[0]), cmp_unsigned);
		set_measure(c, &cand, vcpus);
		if (set_usable(c, &cand) && (!found || set_better(&cand, best))) {
			*best = cand;
			found = true;
		}
	}
	return found;
}

/* The smallest usable sets, all of them tried (lexicographic order, so
 * ties keep the lowest indexes), or greedy ones when there are too many. */
static bool spread_choose(const Ctx *c, unsigned vcpus, NodeSet *best)
{
	unsigned elig[NUMA_MAX_NODES], m = 0;
	for (unsigned i = 0; i < c->n; i++)
		if (c->units[i] > 0)
			elig[m++] = i;
	/* The fewest nodes that could hold it: the roomiest ones. */
	uint64_t sorted[NUMA_MAX_NODES];
	for (unsigned k = 0; k < m; k++)
		sorted[k] = c->units[elig[k]];
	for (unsigned a = 1; a < m; a++)
		for (unsigned b = a; b > 0 && sorted[b - 1] < sorted[b]; b--) {
			uint64_t x = sorted[b];
			sorted[b] = sorted[b - 1];
			sorted[b - 1] = x;
		}
	unsigned kmin = 0;
	uint64_t acc = 0;
	while (kmin < m && acc < c->need)
		acc += sorted[kmin++];
	if (acc < c->need)
		return false;
	for (unsigned k = kmin; k <= m; k++) {
		/* C(m, k), saturating at the limit. */
		uint64_t combos = 1;
		for (unsigned j = 1; j <= k && combos <= MAX_COMBINATIONS; j++)
			combos = combos * (m - k + j) / j;
		if (combos > MAX_COMBINATIONS)
			return spread_greedy(c, elig, m, vcpus, best);
		unsigned pos[NUMA_MAX_NODES];
		for (unsigned j = 0; j < k; j++)
			pos[j] = j;
		bool found = false;
		for (;;) {
			NodeSet cand = {.n = k};
			for (unsigned j = 0; j < k; j++)
				cand.idx[j] = elig[pos[j]];
			set_measure(c, &cand, vcpus);
			if (set_usable(c, &cand) && (!found || set_better(&cand, best))) {
				*best = cand;
				found = true;
			}
			/* Next combination. */
			int j = (int)k - 1;
			while (j >= 0 && pos[j] == m - k + (unsigned)j)
				j--;
			if (j < 0)
				break;
			pos[j]++;
			for (unsigned q = (unsigned)j + 1; q < k; q++)
				pos[q] = pos[q - 1] + 1;
		}
		if (found)
			return true;
	}
	return false;
}

/* Splits `total` in proportion to weights w[0..n) (sum > 0) by largest
 * remainder (ties to the lowest i); the shares sum to total exactly. When
 * total <= the sum of the weights, no share exceeds its weight. */
static void split_proportional(uint64_t total, const uint64_t *w, unsigned n, uint64_t *ret)
{
	uint64_t sum = 0, given = 0, rem[NUMA_MAX_NODES];
	for (unsigned i = 0; i < n; i++)
		sum += w[i];
	for (unsigned i = 0; i < n; i++) {
		/* All weights 0: as if equal. */
		ret[i] = sum ? mul_div(total, w[i], sum, &rem[i]) : mul_div(total, 1, n, &rem[i]);
		given += ret[i];
	}
	/* Fewer than n left; each to the largest remainder, lowest first. */
	while (given < total) {
		unsigned best = 0;
		for (unsigned i = 1; i < n; i++)
			if (rem[i] > rem[best])
				best = i;
		ret[best]++;
		rem[best] = 0;
		given++;
	}
}

/* RAM of the cells (on node indexes order[]) in proportion to their room,
 * in whole granules, and the part of a granule where most room is left.
 * Every cell gets some: the set is the smallest usable one, so the VM
 * needs at least one granule per node (need >= n_nodes). */
static void split_memory(const Ctx *c, PlacementVm *vm, const unsigned *order)
{
	unsigned m = vm->n_nodes;
	uint64_t w[NUMA_MAX_NODES] = {0}, units[NUMA_MAX_NODES] = {0};
	for (unsigned k = 0; k < m; k++)
		w[k] = c->units[order[k]];
	uint64_t whole = vm->memory / c->granule, part = vm->memory % c->granule;
	split_proportional(whole, w, m, units);
	/* A cell rounded down to nothing takes a granule from the largest. */
	int empty = -1;
	for (unsigned k = 0; k < m; k++) {
		if (units[k])
			continue;
		unsigned from = 0;
		for (unsigned j = 1; j < m; j++)
			if (units[j] > units[from])
				from = j;
		if (units[from] > 1) {
			units[from]--;
			units[k] = 1;
		} else {
			empty = (int)k; /* whole == n_nodes - 1: it gets the part */
		}
	}
	unsigned to = 0;
	for (unsigned k = 1; k < m; k++)
		if (w[k] - units[k] > w[to] - units[to])
			to = k;
	if (empty >= 0)
		to = (unsigned)empty;
	for (unsigned k = 0; k < m; k++)
		vm->node_mem[k] = units[k] * c->granule + (k == to ? part : 0);
}

/* vCPUs of the cells: those on nodes with CPUs in proportion to their RAM,
 * at least one each while vCPUs last (the cells with most RAM first). */
static void split_vcpus(const Ctx *c, PlacementVm *vm)
{
	unsigned cpu_cells[NUMA_MAX_NODES], m = 0;
	uint64_t w[NUMA_MAX_NODES] = {0}, share[NUMA_MAX_NODES] = {0};
	for (unsigned k = 0; k < vm->n_nodes; k++) {
		vm->cell_vcpus[k] = 0;
		int i = numa_node_index(c->t, vm->nodes[k]);
		if (i >= 0 && c->t->nodes[i].n_cpus) {
			w[m] = vm->node_mem[k];
			cpu_cells[m++] = k;
		}
	}
	if (vm->vcpus < m) {
		/* One each to the cells with the most RAM. */
		for (unsigned v = 0; v < vm->vcpus; v++) {
			int best = -1;
			for (unsigned a = 0; a < m; a++)
				if (!vm->cell_vcpus[cpu_cells[a]] && (best < 0 || w[a] > w[best]))
					best = (int)a;
			if (best < 0)
				break;
			vm->cell_vcpus[cpu_cells[best]] = 1;
		}
		return;
	}
	split_proportional(vm->vcpus, w, m, share);
	for (unsigned a = 0; a < m; a++) {
		if (share[a])
			continue;
		/* Take one from the cell with the most (the last among equals). */
		unsigned from = 0;
		for (unsigned b = 1; b < m; b++)
			if (share[b] >= share[from])
				from = b;
		share[from]--;
		share[a] = 1;
	}
	for (unsigned a = 0; a < m; a++)
		vm->cell_vcpus[cpu_cells[a]] = (unsigned)share[a];
}

static int cmp_cpu(const Ctx *c, unsigned a, unsigned b)
{
	if (c->cpu_load[a] != c->cpu_load[b])
		return c->cpu_load[a] < c->cpu_load[b] ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* Pins the vCPUs of each cell to the CPUs of `cpu_node[cell]` (a node
 * index), least loaded first, wrapping around. */
static void pin_vcpus(const Ctx *c, PlacementVm *vm, const int *cpu_node)
{
	unsigned first = 0;
	for (unsigned k = 0; k < vm->n_nodes; k++) {
		unsigned order[NUMA_MAX_CPUS], n = 0;
		const unsigned char *cpus = c->t->nodes[cpu_node[k]].cpus;
		for (unsigned cpu = 0; cpu < NUMA_MAX_CPUS; cpu++)
			if (numa_cpu_isset(cpus, cpu))
				order[n++] = cpu;
		/* Insertion sort by (load, number): stable and small. */
		for (unsigned a = 1; a < n; a++)
			for (unsigned b = a; b > 0 && cmp_cpu(c, order[b - 1], order[b]) > 0; b--) {
				unsigned x = order[b];
				order[b] = order[b - 1];
				order[b - 1] = x;
			}
		for (unsigned v = 0; v < vm->cell_vcpus[k] && n; v++)
			vm->vcpu_cpu[first + v] = (uint16_t)order[v % n];
		first += vm->cell_vcpus[k];
	}
}

/* The node with CPUs nearest to index `mem`: then least loaded with vcpus
 * more, then the lowest. -1 when no node has CPUs. */
static int nearest_cpu_node(const Ctx *c, unsigned mem, unsigned vcpus)
{
	int best = -1;
	uint64_t add = (uint64_t)vcpus * LOAD_SCALE;
	for (unsigned i = 0; i < c->n; i++) {
		const NumaNode *n = &c->t->nodes[i];
		if (!n->n_cpus)
			continue;
		if (best < 0) {
			best = (int)i;
			continue;
		}
		unsigned d = distance(c, mem, i), bd = distance(c, mem, (unsigned)best);
		if (d != bd) {
			if (d < bd)
				best = (int)i;
			continue;
		}
		if (cmp_load(c->node_load[i] + add, n->n_cpus, c->node_load[best] + add,
			     c->t->nodes[best].n_cpus) < 0)
			best = (int)i;
	}
	return best;
}

static void describe_room(const Ctx *c, unsigned i, char *buf, size_t size)
{
	const NumaNode *n = &c->t->nodes[i];
	char a[32], b[32], d[32];
	if (c->hugepage_size) {
		const NumaHugepages *h = numa_node_hugepages(n, c->hugepage_size);
		snprintf(buf, size, "pool %s, %s held by %u placed VM%s, %s free",
			 fmt_size(a, h ? sat_mul(h->nr, h->size) : 0), fmt_size(b, c->nominal[i]),
			 c->n_vms[i], c->n_vms[i] == 1 ? "" : "s",
			 fmt_size(d, h ? sat_mul(h->free, h->size) : 0));
	} else {
		snprintf(buf, size, "MemTotal %s, %s held by %u placed VM%s, MemFree %s",
			 fmt_size(a, n->mem_total), fmt_size(b, c->nominal[i]), c->n_vms[i],
			 c->n_vms[i] == 1 ? "" : "s", fmt_size(d, n->mem_free));
	}
}

static int check_request(const PlacementRequest *req, char *kind, size_t kind_size, char *why,
			 size_t why_size)
{
	char a[32];
	if (!req->memory || !req->vcpus) {
		why_set(why, why_size, "a VM needs memory and at least one vCPU");
		return -EINVAL;
	}
	if (req->vcpus > PLACEMENT_MAX_VCPUS) {
		why_set(why, why_size, "%u vCPUs: at most %u can be placed", req->vcpus,
			PLACEMENT_MAX_VCPUS);
		return -EINVAL;
	}
	uint64_t hp = req->hugepage_size;
	if (hp && (hp < 4096 || (hp & (hp - 1)))) {
		why_set(why, why_size, "%llu bytes is not a huge page size",
			(unsigned long long)hp);
		return -EINVAL;
	}
	if (hp && req->memory % hp) {
		why_set(why, why_size,
			"%llu bytes of memory is not a whole number of %s huge pages",
			(unsigned long long)req->memory, fmt_size(a, hp));
		return -EINVAL;
	}
	if (hp)
		snprintf(kind, kind_size, " of %s huge pages", fmt_size(a, hp));
	else
		kind[0] = '\0';
	return 0;
}

int placement_choose(const NumaTopology *topo, const PlacementVm *placed, size_t n_placed,
		     const PlacementRequest *req, PlacementVm *ret, char *why, size_t why_size)
{
	Ctx ctx, *c = &ctx; /* ~16 KiB */
	char kind[48], a[32], b[32], d[32], detail[160];
	int r = check_request(req, kind, sizeof(kind), why, why_size);
	if (r < 0)
		return r;
	if (!topo->n_nodes) {
		why_set(why, why_size, "the host's NUMA topology is unknown");
		return -ENODEV;
	}

	memset(c, 0, sizeof(*c));
	c->t = topo;
	c->n = topo->n_nodes < NUMA_MAX_NODES ? topo->n_nodes : NUMA_MAX_NODES;
	c->hugepage_size = req->hugepage_size;
	c->granule = req->hugepage_size ? req->hugepage_size : PLACEMENT_GRANULE;
	c->need = req->memory / c->granule + (req->memory % c->granule != 0);
	for (unsigned cpu = 0; cpu < NUMA_MAX_CPUS; cpu++)
		c->cpu_node[cpu] = -1;
	for (unsigned i = 0; i < c->n; i++)
		for (unsigned cpu = 0; cpu < NUMA_MAX_CPUS; cpu++)
			if (numa_cpu_isset(topo->nodes[i].cpus, cpu) && c->cpu_node[cpu] < 0)
				c->cpu_node[cpu] = (int)i;
	all_host_cpus(topo, c->all_cpus);
	for (size_t k = 0; k < n_placed; k++)
		account_vm(c, &placed[k]);
	compute_room(c, req->overcommit);

	PlacementVm vm;
	placement_vm_init(&vm);
	vm.memory = req->memory;
	vm.vcpus = req->vcpus;
	vm.hugepage_size = req->hugepage_size;
	int cpu_node[NUMA_MAX_NODES]; /* per cell: node index whose CPUs it runs on */
	uint64_t add = (uint64_t)req->vcpus * LOAD_SCALE;
	uint64_t most = 0, total = 0;
	for (unsigned i = 0; i < c->n; i++) {
		most = c->room[i] > most ? c->room[i] : most;
		total += c->room[i];
	}
	bool any_cpus = bm_count(c->all_cpus) > 0;

	if (req->node >= 0) {
		int i = numa_node_index(topo, (unsigned)req->node);
		if (i < 0) {
			char ids[NUMA_MAX_NODES * 4] = "";
			for (unsigned k = 0; k < c->n; k++) {
				size_t len = strlen(ids);
				snprintf(ids + len, sizeof(ids) - len, "%s%u", k ? ", " : "",
					 topo->nodes[k].id);
			}
			why_set(why, why_size, "node %d does not exist; the host has node%s %s",
				req->node, c->n == 1 ? "" : "s", ids);
			return -ENOENT;
		}
		if (c->units[i] < c->need) {
			describe_room(c, (unsigned)i, detail, sizeof(detail));
			why_set(why, why_size, "node %d can give %s%s (%s), the VM needs %s",
				req->node, fmt_size(a, c->room[i]), kind, detail,
				fmt_size(b, req->memory));
			return -ENOSPC;
		}
		int run = topo->nodes[i].n_cpus ? i : nearest_cpu_node(c, (unsigned)i, req->vcpus);
		if (run < 0) {
			why_set(why, why_size,
				"node %d has no CPUs, and no node of the host has any", req->node);
			return -ENOSPC;
		}
		vm.n_nodes = 1;
		vm.nodes[0] = topo->nodes[i].id;
		vm.node_mem[0] = req->memory;
		vm.cell_vcpus[0] = req->vcpus;
		cpu_node[0] = run;
		if (run == i)
			why_set(why, why_size, "node %d as asked (room for %s%s)", req->node,
				fmt_size(a, c->room[i]), kind);
		else
			why_set(why, why_size,
				"memory on node %d as asked (room for %s%s; it has no CPUs), "
				"vCPUs on node %u, the nearest with CPUs",
				req->node, fmt_size(a, c->room[i]), kind, topo->nodes[run].id);
		goto done;
	}

	/* One node with CPUs, when it fits on one. */
	int best = -1;
	for (unsigned i = 0; i < c->n; i++) {
		const NumaNode *n = &topo->nodes[i];
		if (!n->n_cpus || c->units[i] < c->need)
			continue;
		if (best >= 0) {
			int l = cmp_load(c->node_load[i] + add, n->n_cpus, c->node_load[best] + add,
					 topo->nodes[best].n_cpus);
			if (l > 0 || (l == 0 && c->room[i] <= c->room[best]))
				continue;
		}
		best = (int)i;
	}
	if (best >= 0) {
		vm.n_nodes = 1;
		vm.nodes[0] = topo->nodes[best].id;
		vm.node_mem[0] = req->memory;
		vm.cell_vcpus[0] = req->vcpus;
		cpu_node[0] = best;
		why_set(why, why_size, "node %u: %.2f vCPUs per CPU with this VM, room for %s%s",
			topo->nodes[best].id,
			load_per_cpu(c->node_load[best] + add, topo->nodes[best].n_cpus),
			fmt_size(a, c->room[best]), kind);
		goto done;
	}

	/* Spread over the fewest, closest nodes. */
	NodeSet set;
	if (!any_cpus || !spread_choose(c, req->vcpus, &set)) {
		uint64_t cpu_room = 0, all_units = 0;
		for (unsigned i = 0; i < c->n; i++) {
			if (topo->nodes[i].n_cpus)
				cpu_room += c->room[i];
			all_units += c->units[i];
		}
		if (!any_cpus)
			why_set(why, why_size, "no node of the host has CPUs");
		else if (all_units >= c->need) /* then no node with CPUs has a granule */
			why_set(why, why_size,
				"needs %s%s: the nodes with CPUs have no room left (the "
				"memory-only ones could give %s)",
				fmt_size(a, req->memory), kind, fmt_size(b, total - cpu_room));
		else
			why_set(why, why_size,
				"needs %s%s, the most any node can give is %s and all nodes "
				"together %s",
				fmt_size(a, req->memory), kind, fmt_size(b, most),
				fmt_size(d, total));
		return -ENOSPC;
	}
	/* Cells: nodes with CPUs first, then memory-only ones, by id. */
	unsigned order[NUMA_MAX_NODES] = {0}, m = 0;
	for (int pass = 0; pass < 2; pass++)
		for (unsigned k = 0; k < set.n; k++)
			if ((topo->nodes[set.idx[k]].n_cpus > 0) == (pass == 0))
				order[m++] = set.idx[k];
	vm.n_nodes = m;
	for (unsigned k = 0; k < m; k++) {
		vm.nodes[k] = topo->nodes[order[k]].id;
		cpu_node[k] = (int)order[k];
	}
	split_memory(c, &vm, order);
	split_vcpus(c, &vm);
	{
		char list[NUMA_MAX_NODES * 32] = "";
		for (unsigned k = 0; k < m; k++) {
			size_t len = strlen(list);
			snprintf(list + len, sizeof(list) - len, "%s%u (%s)", k ? " + " : "",
				 vm.nodes[k], fmt_size(a, vm.node_mem[k]));
		}
		uint64_t most_cpu = 0;
		for (unsigned i = 0; i < c->n; i++)
			if (topo->nodes[i].n_cpus && c->room[i] > most_cpu)
				most_cpu = c->room[i];
		why_set(
		    why, why_size,
		    "spread over nodes %s: needs %s%s, the most a node with CPUs can give is %s",
		    list, fmt_size(b, req->memory), kind, fmt_size(d, most_cpu));
	}

done:
	for (unsigned k = 0; k < vm.n_nodes; k++) {
		const NumaNode *n = &topo->nodes[cpu_node[k]];
		if (n->n_cpus)
			for (unsigned byte = 0; byte < BITMAP_BYTES; byte++)
				vm.cpus[byte] |= n->cpus[byte];
	}
	if (req->pin_vcpus)
		pin_vcpus(c, &vm, cpu_node);
	*ret = vm;
	return 0;
}

/* Pages of `size` that starting VMs will take: host-wide, or on node id
 * `node` (-1: host-wide). */
static uint64_t starting_pages(const PlacementVm *starting, size_t n, uint64_t size, int node)
{
	uint64_t pages = 0;
	for (size_t i = 0; i < n; i++) {
		const PlacementVm *o = &starting[i];
		if (o->hugepage_size != size)
			continue;
		if (node < 0) {
			pages += o->memory / size;
			continue;
		}
		for (unsigned k = 0; k < o->n_nodes && k < NUMA_MAX_NODES; k++)
			if (o->nodes[k] == (unsigned)node)
				pages += o->node_mem[k] / size;
	}
	return pages;
}

int placement_check_hugepages(const NumaTopology *topo, const PlacementVm *vm,
			      const PlacementVm *starting, size_t n_starting, char *why,
			      size_t why_size)
{
	uint64_t size = vm->hugepage_size;
	char sz[32], sizes[128];
	if (!size || vm->memory % size) {
		why_set(why, why_size, "%llu bytes of memory is not a whole number of huge pages",
			(unsigned long long)vm->memory);
		return -EINVAL;
	}
	numa_hugepage_size_format(size, sz, sizeof(sz));
	const NumaHugepages *host = numa_host_hugepages(topo, size);
	if (!host) {
		why_set(why, why_size, "the host has no huge pages of %s (its sizes: %s)", sz,
			numa_hugepage_sizes_format(topo, sizes, sizeof(sizes)));
		return -ENOENT;
	}
	unsigned long long kb = (unsigned long long)(size >> 10);
	for (unsigned k = 0; k < vm->n_nodes && k < NUMA_MAX_NODES; k++) {
		int i = numa_node_index(topo, vm->nodes[k]);
		const NumaHugepages *h = i < 0 ? NULL : numa_node_hugepages(&topo->nodes[i], size);
		uint64_t need = vm->node_mem[k] / size, free_pages = h ? h->free : 0;
		uint64_t others = starting_pages(starting, n_starting, size, (int)vm->nodes[k]);
		if (need <= sat_sub(free_pages, others))
			continue;
		why_set(why, why_size,
			"needs %llu huge pages of %s on node %u, %llu available (%llu free less %llu "
			"for VMs being started); raise "
			"/sys/devices/system/node/node%u/hugepages/hugepages-%llukB/nr_hugepages",
			(unsigned long long)need, sz, vm->nodes[k],
			(unsigned long long)sat_sub(free_pages, others),
			(unsigned long long)free_pages, (unsigned long long)others, vm->nodes[k], kb);
		return -ENOSPC;
	}
	uint64_t need = vm->memory / size;
	uint64_t others = starting_pages(starting, n_starting, size, -1);
	uint64_t avail = sat_sub(sat_sub(host->free, host->resv), others);
	if (need <= avail)
		return 0;
	why_set(why, why_size,
		"needs %llu huge pages of %s, %llu available (%llu free less %llu reserved and "
		"%llu for VMs being started); raise "
		"/sys/kernel/mm/hugepages/hugepages-%llukB/nr_hugepages "
		"(/proc/sys/vm/nr_hugepages for the default size)",
		(unsigned long long)need, sz, (unsigned long long)avail,
		(unsigned long long)host->free, (unsigned long long)host->resv,
		(unsigned long long)others, kb);
	return -ENOSPC;
}
