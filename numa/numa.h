/* SPDX-License-Identifier: Apache-2.0 */
/* Host NUMA topology from /sys/devices/system/node through a root
 * directory fd, so tests use fake trees. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NUMA_MAX_NODES 64
#define NUMA_MAX_CPUS 1024
/* Huge page sizes kept per node: x86-64 has 2 MiB and 1 GiB, arm64 with
 * 4 KiB base pages has four (64 KiB, 2 MiB, 32 MiB, 1 GiB). */
#define NUMA_MAX_HUGEPAGE_SIZES 4

/* One huge page size's pool on a node, from
 * nodeN/hugepages/hugepages-<size>kB/{nr_hugepages,free_hugepages}, or the
 * host's, from sys/kernel/mm/hugepages/hugepages-<size>kB (which also has
 * resv_hugepages). */
typedef struct NumaHugepages {
	uint64_t size; /* bytes per page */
	uint64_t nr;   /* pages in the node's pool; a missing file reads as 0 */
	uint64_t free; /* pages of the pool not yet faulted in by anyone; missing: 0 */
	/* Of the free pages, those promised to a mapping (hugetlb reserves a
	 * shared mapping's pages at mmap) but not faulted in yet; <= free. The
	 * kernel keeps this host-wide only: 0 in a node's pool. */
	uint64_t resv;
} NumaHugepages;

typedef struct NumaNode {
	unsigned id;
	uint64_t mem_total;            /* bytes; includes the huge page pools */
	uint64_t mem_free;             /* bytes; excludes the huge page pools */
	unsigned n_cpus;               /* 0: a memory-only node */
	unsigned char cpus[NUMA_MAX_CPUS / 8]; /* bitmap */
	/* Distance to nodes[i] of the same NumaTopology (the kernel lists the
	 * online nodes in id order, the order of nodes[]); 0 unknown. */
	unsigned distance[NUMA_MAX_NODES];
	unsigned n_hugepage_sizes;
	NumaHugepages hugepages[NUMA_MAX_HUGEPAGE_SIZES]; /* by ascending size */
} NumaNode;

typedef struct NumaTopology {
	unsigned n_nodes;
	NumaNode nodes[NUMA_MAX_NODES];
	/* The host-wide pools (sys/kernel/mm/hugepages), by ascending size:
	 * the huge page sizes the host has at all, and their reservations. */
	unsigned n_hugepage_sizes;
	NumaHugepages hugepages[NUMA_MAX_HUGEPAGE_SIZES];
} NumaTopology;

/* A host without /sys/devices/system/node is one node with every CPU
 * online, all memory (from proc/meminfo) and the global huge page pools
 * (sys/kernel/mm/hugepages). A node's missing files leave their fields 0. */
int numa_read_topology(int rootfd, NumaTopology *ret);
/* The pool of huge pages of `size` bytes on node n, or NULL when the node
 * has none of that size. */
const NumaHugepages *numa_node_hugepages(const NumaNode *n, uint64_t size);
/* The host-wide pool of huge pages of `size` bytes, or NULL when the host
 * has no such size. */
const NumaHugepages *numa_host_hugepages(const NumaTopology *t, uint64_t size);
/* A huge page size in words: "2 MiB", "1 GiB", "64 KiB". */
const char *numa_hugepage_size_format(uint64_t size, char *buf, size_t buf_size);
/* The host's huge page sizes in words ("2 MiB, 1 GiB"; "none"). */
const char *numa_hugepage_sizes_format(const NumaTopology *t, char *buf, size_t buf_size);
/* The index of node `id` in t->nodes, or -1. */
int numa_node_index(const NumaTopology *t, unsigned id);
/* Parses a kernel CPU list ("0-3,8,10-11") into a bitmap; returns the
 * count or a negative errno. */
int numa_parse_cpulist(const char *s, unsigned char *bitmap, unsigned max_cpus);
/* The bitmap as a kernel CPU list ("0-3,8"; "" when empty) into buf;
 * returns its length, or -ENOSPC when it does not fit. */
int numa_format_cpulist(const unsigned char *bitmap, unsigned max_cpus, char *buf, size_t size);
static inline bool numa_cpu_isset(const unsigned char *bitmap, unsigned cpu)
{
	return bitmap[cpu / 8] & (1u << (cpu % 8));
}
