/* SPDX-License-Identifier: Apache-2.0 */
/* Host NUMA topology from /sys/devices/system/node through a root
 * directory fd, so tests use fake trees. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define NUMA_MAX_NODES 64
#define NUMA_MAX_CPUS 1024

typedef struct NumaNode {
	unsigned id;
	uint64_t mem_total;            /* bytes */
	uint64_t mem_free;             /* bytes */
	unsigned n_cpus;
	unsigned char cpus[NUMA_MAX_CPUS / 8]; /* bitmap */
	unsigned distance[NUMA_MAX_NODES];     /* to node i; 0 unknown */
} NumaNode;

typedef struct NumaTopology {
	unsigned n_nodes;
	NumaNode nodes[NUMA_MAX_NODES];
} NumaTopology;

/* A host without /sys/devices/system/node is one node with every CPU
 * online and all memory (from proc/meminfo). */
int numa_read_topology(int rootfd, NumaTopology *ret);
/* Parses a kernel CPU list ("0-3,8,10-11") into a bitmap; returns the
 * count or a negative errno. */
int numa_parse_cpulist(const char *s, unsigned char *bitmap, unsigned max_cpus);
static inline bool numa_cpu_isset(const unsigned char *bitmap, unsigned cpu)
{
	return bitmap[cpu / 8] & (1u << (cpu % 8));
}
