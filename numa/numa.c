/* SPDX-License-Identifier: Apache-2.0 */
#include "numa.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hs-util.h"

int numa_parse_cpulist(const char *s, unsigned char *bitmap, unsigned max_cpus)
{
	memset(bitmap, 0, (max_cpus + 7) / 8);
	int count = 0;
	const char *p = s;
	while (*p && *p != '\n') {
		char *end;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		unsigned long a = strtoul(p, &end, 10), b = a;
		p = end;
		if (*p == '-') {
			p++;
			if (!isdigit((unsigned char)*p))
				return -EINVAL;
			b = strtoul(p, &end, 10);
			p = end;
		}
		if (b < a || b >= max_cpus)
			return -ERANGE;
		for (unsigned long c = a; c <= b; c++) {
			if (!(bitmap[c / 8] & (1u << (c % 8))))
				count++;
			bitmap[c / 8] |= (unsigned char)(1u << (c % 8));
		}
		if (*p == ',')
			p++;
		else if (*p && *p != '\n')
			return -EINVAL;
	}
	return count;
}

int numa_format_cpulist(const unsigned char *bitmap, unsigned max_cpus, char *buf, size_t size)
{
	size_t len = 0;
	if (size)
		buf[0] = '\0';
	for (unsigned c = 0; c < max_cpus; c++) {
		if (!numa_cpu_isset(bitmap, c))
			continue;
		unsigned e = c;
		while (e + 1 < max_cpus && numa_cpu_isset(bitmap, e + 1))
			e++;
		int n = e == c ? snprintf(buf + len, size - len, "%s%u", len ? "," : "", c)
			       : snprintf(buf + len, size - len, "%s%u-%u", len ? "," : "", c, e);
		if (n < 0 || (size_t)n >= size - len)
			return -ENOSPC;
		len += (size_t)n;
		c = e;
	}
	return (int)len;
}

/* "Node 0 MemTotal:  123 kB" lines of a node's meminfo. */
static void parse_node_meminfo(const char *buf, NumaNode *n)
{
	for (const char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		unsigned node;
		unsigned long long kb;
		if (sscanf(l, "Node %u MemTotal: %llu kB", &node, &kb) == 2)
			n->mem_total = kb * 1024;
		else if (sscanf(l, "Node %u MemFree: %llu kB", &node, &kb) == 2)
			n->mem_free = kb * 1024;
	}
}

static bool read_u64(int dir, const char *path, uint64_t *ret)
{
	char buf[64], *end;
	if (hs_read_small(dir, path, buf, sizeof(buf)) < 0 || !isdigit((unsigned char)buf[0]))
		return false;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || (*end && *end != '\n'))
		return false;
	*ret = v;
	return true;
}

/* A table of pools by ascending size (a node's, or the host's). */
typedef struct PoolTable {
	unsigned *n;
	NumaHugepages *pools;
} PoolTable;

/* One "hugepages-<size>kB" directory into a table (insertion by ascending
 * size). */
static int add_hugepage_size(int dfd, const char *name, void *ud)
{
	PoolTable *t = ud;
	char *end;
	if (strncmp(name, "hugepages-", 10) || !isdigit((unsigned char)name[10]))
		return 0;
	errno = 0;
	unsigned long long kb = strtoull(name + 10, &end, 10);
	if (errno || strcmp(end, "kB") || kb == 0 || kb > UINT64_MAX / 1024)
		return 0;
	NumaHugepages h = {.size = kb * 1024};
	char file[NAME_MAX + 32];
	snprintf(file, sizeof(file), "%s/nr_hugepages", name);
	if (!read_u64(dfd, file, &h.nr))
		h.nr = 0;
	snprintf(file, sizeof(file), "%s/free_hugepages", name);
	if (!read_u64(dfd, file, &h.free))
		h.free = 0;
	if (h.free > h.nr)
		h.free = h.nr;
	/* Only the host-wide pools have it (a node's reads as 0). */
	snprintf(file, sizeof(file), "%s/resv_hugepages", name);
	if (!read_u64(dfd, file, &h.resv))
		h.resv = 0;
	if (h.resv > h.free)
		h.resv = h.free;
	/* Insertion by size; a size beyond the table's end is dropped. */
	unsigned i = *t->n;
	while (i > 0 && t->pools[i - 1].size > h.size)
		i--;
	if (i > 0 && t->pools[i - 1].size == h.size)
		return 0;
	if (i >= NUMA_MAX_HUGEPAGE_SIZES)
		return 0;
	/* Shift the larger ones up; the largest falls off a full table. */
	unsigned last = *t->n < NUMA_MAX_HUGEPAGE_SIZES ? *t->n : NUMA_MAX_HUGEPAGE_SIZES - 1;
	memmove(&t->pools[i + 1], &t->pools[i], (last - i) * sizeof(h));
	t->pools[i] = h;
	if (*t->n < NUMA_MAX_HUGEPAGE_SIZES)
		(*t->n)++;
	return 0;
}

/* The "hugepages-<size>kB" directories under dir/path (a node's
 * hugepages/ or sys/kernel/mm/hugepages): the smallest
 * NUMA_MAX_HUGEPAGE_SIZES sizes, by ascending size. */
static void read_hugepages(int dir, const char *path, unsigned *ret_n, NumaHugepages *ret_pools)
{
	PoolTable t = {.n = ret_n, .pools = ret_pools};
	*ret_n = 0;
	hs_dir_foreach(dir, path, add_hugepage_size, &t);
}

static const NumaHugepages *find_pool(const NumaHugepages *pools, unsigned n, uint64_t size)
{
	for (unsigned i = 0; i < n && i < NUMA_MAX_HUGEPAGE_SIZES; i++)
		if (pools[i].size == size)
			return &pools[i];
	return NULL;
}

const NumaHugepages *numa_node_hugepages(const NumaNode *n, uint64_t size)
{
	return find_pool(n->hugepages, n->n_hugepage_sizes, size);
}

const NumaHugepages *numa_host_hugepages(const NumaTopology *t, uint64_t size)
{
	return find_pool(t->hugepages, t->n_hugepage_sizes, size);
}

const char *numa_hugepage_size_format(uint64_t size, char *buf, size_t buf_size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned u = 0;
	while (u + 1 < ARRAY_SIZE(units) && size >= 1024 && size % 1024 == 0) {
		size /= 1024;
		u++;
	}
	snprintf(buf, buf_size, "%llu %s", (unsigned long long)size, units[u]);
	return buf;
}

const char *numa_hugepage_sizes_format(const NumaTopology *t, char *buf, size_t buf_size)
{
	size_t len = 0;
	snprintf(buf, buf_size, "none");
	for (unsigned i = 0; i < t->n_hugepage_sizes && i < NUMA_MAX_HUGEPAGE_SIZES; i++) {
		char one[32];
		int w = snprintf(buf + len, buf_size - len, "%s%s", i ? ", " : "",
				 numa_hugepage_size_format(t->hugepages[i].size, one, sizeof(one)));
		if (w < 0 || (size_t)w >= buf_size - len)
			break;
		len += (size_t)w;
	}
	return buf;
}

int numa_node_index(const NumaTopology *t, unsigned id)
{
	for (unsigned i = 0; i < t->n_nodes && i < NUMA_MAX_NODES; i++)
		if (t->nodes[i].id == id)
			return (int)i;
	return -1;
}

static int cmp_node(const void *a, const void *b)
{
	const NumaNode *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int single_node(int rootfd, NumaTopology *t)
{
	static char buf[16384];
	NumaNode *n = &t->nodes[0];
	memset(t, 0, sizeof(*t));
	t->n_nodes = 1;
	if (hs_read_small(rootfd, "sys/devices/system/cpu/online", buf, sizeof(buf)) == 0) {
		int c = numa_parse_cpulist(buf, n->cpus, NUMA_MAX_CPUS);
		n->n_cpus = c > 0 ? (unsigned)c : 0;
	}
	if (hs_read_small(rootfd, "proc/meminfo", buf, sizeof(buf)) == 0) {
		unsigned long long kb;
		const char *p = strstr(buf, "MemTotal:");
		if (p && sscanf(p, "MemTotal: %llu kB", &kb) == 1)
			n->mem_total = kb * 1024;
		p = strstr(buf, "MemFree:");
		if (p && sscanf(p, "MemFree: %llu kB", &kb) == 1)
			n->mem_free = kb * 1024;
	}
	n->distance[0] = 10;
	read_hugepages(rootfd, "sys/kernel/mm/hugepages", &n->n_hugepage_sizes, n->hugepages);
	read_hugepages(rootfd, "sys/kernel/mm/hugepages", &t->n_hugepage_sizes, t->hugepages);
	/* A node's pool never has reservations of its own. */
	for (unsigned i = 0; i < n->n_hugepage_sizes; i++)
		n->hugepages[i].resv = 0;
	return 0;
}

int numa_read_topology(int rootfd, NumaTopology *ret)
{
	static char buf[16384];
	NumaTopology *t = ret;
	int dfd = openat(rootfd, "sys/devices/system/node", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? single_node(rootfd, t) : -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	memset(t, 0, sizeof(*t));
	struct dirent *de;
	while ((de = readdir(d)) && t->n_nodes < NUMA_MAX_NODES) {
		char *end;
		if (strncmp(de->d_name, "node", 4) || !isdigit((unsigned char)de->d_name[4]))
			continue;
		unsigned long id = strtoul(de->d_name + 4, &end, 10);
		if (*end || id >= NUMA_MAX_NODES)
			continue;
		NumaNode *n = &t->nodes[t->n_nodes++];
		n->id = (unsigned)id;
		char path[64];
		snprintf(path, sizeof(path), "node%u/cpulist", n->id);
		if (hs_read_small(dirfd(d), path, buf, sizeof(buf)) == 0) {
			int c = numa_parse_cpulist(buf, n->cpus, NUMA_MAX_CPUS);
			n->n_cpus = c > 0 ? (unsigned)c : 0;
		}
		snprintf(path, sizeof(path), "node%u/meminfo", n->id);
		if (hs_read_small(dirfd(d), path, buf, sizeof(buf)) == 0)
			parse_node_meminfo(buf, n);
		snprintf(path, sizeof(path), "node%u/distance", n->id);
		if (hs_read_small(dirfd(d), path, buf, sizeof(buf)) == 0) {
			char *p = buf;
			for (unsigned i = 0; i < NUMA_MAX_NODES; i++) {
				char *e;
				unsigned long v = strtoul(p, &e, 10);
				if (e == p)
					break;
				n->distance[i] = (unsigned)v;
				p = e;
			}
		}
		snprintf(path, sizeof(path), "node%u/hugepages", n->id);
		read_hugepages(dirfd(d), path, &n->n_hugepage_sizes, n->hugepages);
		for (unsigned i = 0; i < n->n_hugepage_sizes; i++)
			n->hugepages[i].resv = 0;
	}
	closedir(d);
	if (t->n_nodes == 0)
		return single_node(rootfd, t);
	qsort(t->nodes, t->n_nodes, sizeof(NumaNode), cmp_node);
	read_hugepages(rootfd, "sys/kernel/mm/hugepages", &t->n_hugepage_sizes, t->hugepages);
	return 0;
}
