/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-tree.h"
#include "numa.h"

static void test_cpulist(void **state)
{
	unsigned char bm[NUMA_MAX_CPUS / 8];
	assert_int_equal(numa_parse_cpulist("0-3,8,10-11\n", bm, NUMA_MAX_CPUS), 7);
	assert_true(numa_cpu_isset(bm, 0));
	assert_true(numa_cpu_isset(bm, 3));
	assert_false(numa_cpu_isset(bm, 4));
	assert_true(numa_cpu_isset(bm, 8));
	assert_true(numa_cpu_isset(bm, 11));
	assert_int_equal(numa_parse_cpulist("", bm, NUMA_MAX_CPUS), 0);
	assert_int_equal(numa_parse_cpulist("\n", bm, NUMA_MAX_CPUS), 0);
	assert_int_equal(numa_parse_cpulist("0-1,1-2", bm, NUMA_MAX_CPUS), 3);
	assert_int_equal(numa_parse_cpulist("3-1", bm, NUMA_MAX_CPUS), -ERANGE);
	assert_int_equal(numa_parse_cpulist("5000", bm, NUMA_MAX_CPUS), -ERANGE);
	assert_int_equal(numa_parse_cpulist("a", bm, NUMA_MAX_CPUS), -EINVAL);
	assert_int_equal(numa_parse_cpulist("1-", bm, NUMA_MAX_CPUS), -EINVAL);
	assert_int_equal(numa_parse_cpulist("1;2", bm, NUMA_MAX_CPUS), -EINVAL);
}

/* Formatting gives back the list parsing takes, ranges folded. */
static void test_cpulist_format(void **state)
{
	unsigned char bm[NUMA_MAX_CPUS / 8];
	char buf[64];
	assert_int_equal(numa_parse_cpulist("8,0-3,10,11,5", bm, NUMA_MAX_CPUS), 8);
	assert_int_equal(numa_format_cpulist(bm, NUMA_MAX_CPUS, buf, sizeof(buf)), 13);
	assert_string_equal(buf, "0-3,5,8,10-11");
	numa_parse_cpulist("", bm, NUMA_MAX_CPUS);
	assert_int_equal(numa_format_cpulist(bm, NUMA_MAX_CPUS, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	numa_parse_cpulist("1023", bm, NUMA_MAX_CPUS);
	assert_int_equal(numa_format_cpulist(bm, NUMA_MAX_CPUS, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "1023");
	numa_parse_cpulist("0,2,4,6,8", bm, NUMA_MAX_CPUS);
	assert_int_equal(numa_format_cpulist(bm, NUMA_MAX_CPUS, buf, 6), -ENOSPC);
}

static void add_node(const char *root, unsigned id, const char *cpus, unsigned long long kb,
		     unsigned long long free_kb, const char *dist)
{
	char rel[128], buf[512];
	snprintf(rel, sizeof(rel), "sys/devices/system/node/node%u/cpulist", id);
	fake_write(root, rel, cpus);
	snprintf(rel, sizeof(rel), "sys/devices/system/node/node%u/meminfo", id);
	snprintf(buf, sizeof(buf),
		 "Node %u MemTotal:       %llu kB\nNode %u MemFree:        %llu kB\n"
		 "Node %u MemUsed:        1 kB\n",
		 id, kb, id, free_kb, id);
	fake_write(root, rel, buf);
	snprintf(rel, sizeof(rel), "sys/devices/system/node/node%u/distance", id);
	fake_write(root, rel, dist);
}

/* nodeN/hugepages/hugepages-<kb>kB/{nr,free}_hugepages; NULL leaves a
 * file out. */
static void add_hugepages(const char *root, unsigned id, unsigned long long kb, const char *nr,
			  const char *free_pages)
{
	char rel[160];
	if (nr) {
		snprintf(rel, sizeof(rel),
			 "sys/devices/system/node/node%u/hugepages/hugepages-%llukB/nr_hugepages", id,
			 kb);
		fake_write(root, rel, nr);
	}
	if (free_pages) {
		snprintf(rel, sizeof(rel),
			 "sys/devices/system/node/node%u/hugepages/hugepages-%llukB/free_hugepages",
			 id, kb);
		fake_write(root, rel, free_pages);
	}
	if (!nr && !free_pages) {
		snprintf(rel, sizeof(rel),
			 "sys/devices/system/node/node%u/hugepages/hugepages-%llukB/surplus_hugepages",
			 id, kb);
		fake_write(root, rel, "0\n");
	}
}

/* sys/kernel/mm/hugepages/hugepages-<kb>kB/{nr,free,resv}_hugepages. */
static void add_host_hugepages(const char *root, unsigned long long kb, const char *nr,
			       const char *free_pages, const char *resv)
{
	static const char *const files[3] = {"nr", "free", "resv"};
	const char *values[3] = {nr, free_pages, resv};
	char rel[128];
	for (int i = 0; i < 3; i++) {
		snprintf(rel, sizeof(rel), "sys/kernel/mm/hugepages/hugepages-%llukB/%s_hugepages",
			 kb, files[i]);
		fake_write(root, rel, values[i]);
	}
}

static void test_one_node(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0-11\n", 65536, 32768, "10\n");
	add_hugepages(root, 0, 2048, "512\n", "500\n");
	add_hugepages(root, 0, 1048576, "4\n", "1\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 1);
	const NumaNode *n = &t.nodes[0];
	assert_int_equal(n->id, 0);
	assert_int_equal(n->n_cpus, 12);
	assert_int_equal(n->mem_total, 65536ull * 1024);
	assert_int_equal(n->mem_free, 32768ull * 1024);
	assert_int_equal(n->distance[0], 10);
	assert_int_equal(n->n_hugepage_sizes, 2);
	assert_int_equal(n->hugepages[0].size, 2ull << 20);
	assert_int_equal(n->hugepages[0].nr, 512);
	assert_int_equal(n->hugepages[0].free, 500);
	assert_int_equal(n->hugepages[1].size, 1ull << 30);
	assert_int_equal(n->hugepages[1].nr, 4);
	assert_int_equal(n->hugepages[1].free, 1);
	assert_ptr_equal(numa_node_hugepages(n, 1ull << 30), &n->hugepages[1]);
	assert_null(numa_node_hugepages(n, 4096));
	assert_int_equal(numa_node_index(&t, 0), 0);
	assert_int_equal(numa_node_index(&t, 1), -1);
	close(fd);
	fake_tree_free(root);
}

static void test_two_uneven_nodes(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 1, "4-5\n", 2048, 1024, "21 10\n");
	add_node(root, 0, "0-3\n", 8192, 4096, "10 21\n");
	fake_write(root, "sys/devices/system/node/online", "0-1\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 2);
	assert_int_equal(t.nodes[0].id, 0);
	assert_int_equal(t.nodes[0].n_cpus, 4);
	assert_int_equal(t.nodes[0].mem_total, 8192ull * 1024);
	assert_int_equal(t.nodes[0].mem_free, 4096ull * 1024);
	assert_int_equal(t.nodes[0].distance[1], 21);
	assert_int_equal(t.nodes[1].id, 1);
	assert_int_equal(t.nodes[1].n_cpus, 2);
	assert_true(numa_cpu_isset(t.nodes[1].cpus, 5));
	assert_int_equal(t.nodes[1].distance[1], 10);
	assert_int_equal(t.nodes[0].n_hugepage_sizes, 0);
	assert_int_equal(t.nodes[1].n_hugepage_sizes, 0);
	assert_int_equal(numa_node_index(&t, 1), 1);
	close(fd);
	fake_tree_free(root);
}

static void test_four_nodes_one_memoryless(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0-7\n", 16384, 100, "10 16 16 16\n");
	add_node(root, 1, "8-15\n", 16384, 200, "16 10 16 16\n");
	add_node(root, 2, "16-23\n", 16384, 300, "16 16 10 16\n");
	add_node(root, 3, "\n", 0, 0, "16 16 16 10\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 4);
	assert_int_equal(t.nodes[3].n_cpus, 0);
	assert_int_equal(t.nodes[3].mem_total, 0);
	assert_int_equal(t.nodes[2].distance[0], 16);
	close(fd);
	fake_tree_free(root);
}

/* Four nodes, uneven CPUs and memory; node 2 memory-only with sparse id 5
 * after it; hugepages on two nodes, some files missing or broken. */
static void test_four_nodes_hugepages(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0-15,32-47\n", 131072, 65536, "10 21 31 31\n");
	add_node(root, 1, "16-23\n", 65536, 60000, "21 10 31 31\n");
	add_node(root, 2, "\n", 262144, 262000, "31 31 10 17\n");
	add_node(root, 5, "24-27,48\n", 32768, 1024, "31 31 17 10\n");
	add_hugepages(root, 0, 2048, "1024\n", "1000\n");
	add_hugepages(root, 0, 1048576, "16\n", "16\n");
	add_hugepages(root, 1, 1048576, "8\n", NULL);   /* no free_hugepages */
	add_hugepages(root, 1, 2048, NULL, "7\n");      /* no nr_hugepages */
	add_hugepages(root, 5, 2048, "junk\n", "3\n"); /* unreadable count */
	add_hugepages(root, 5, 64, NULL, NULL);          /* a size with neither file */
	fake_write(root, "sys/devices/system/node/node5/hugepages/hugepages-bogus/nr_hugepages",
		   "9\n");
	fake_write(root, "sys/devices/system/node/node5/hugepages/hugepages-2048/nr_hugepages",
		   "9\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 4);
	static const unsigned ids[4] = {0, 1, 2, 5}, cpus[4] = {32, 8, 0, 5};
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(t.nodes[i].id, ids[i]);
		assert_int_equal(t.nodes[i].n_cpus, cpus[i]);
	}
	assert_int_equal(numa_node_index(&t, 5), 3);
	assert_int_equal(numa_node_index(&t, 3), -1);
	assert_true(numa_cpu_isset(t.nodes[0].cpus, 47));
	assert_false(numa_cpu_isset(t.nodes[0].cpus, 16));
	assert_true(numa_cpu_isset(t.nodes[3].cpus, 48));
	assert_int_equal(t.nodes[2].mem_total, 262144ull * 1024);
	assert_int_equal(t.nodes[3].mem_free, 1024ull * 1024);
	/* Distances by position: nodes[3] (id 5) is the 4th column. */
	assert_int_equal(t.nodes[2].distance[3], 17);
	assert_int_equal(t.nodes[3].distance[0], 31);

	const NumaNode *n = &t.nodes[0];
	assert_int_equal(n->n_hugepage_sizes, 2);
	assert_int_equal(n->hugepages[0].size, 2048ull * 1024);
	assert_int_equal(n->hugepages[0].nr, 1024);
	assert_int_equal(n->hugepages[0].free, 1000);
	assert_int_equal(n->hugepages[1].size, 1ull << 30);
	assert_int_equal(n->hugepages[1].nr, 16);
	assert_int_equal(n->hugepages[1].free, 16);

	n = &t.nodes[1];
	assert_int_equal(n->n_hugepage_sizes, 2);
	const NumaHugepages *h = numa_node_hugepages(n, 1ull << 30);
	assert_non_null(h);
	assert_int_equal(h->nr, 8);
	assert_int_equal(h->free, 0);
	h = numa_node_hugepages(n, 2ull << 20);
	assert_non_null(h);
	assert_int_equal(h->nr, 0);
	assert_int_equal(h->free, 0); /* never more free than in the pool */

	assert_int_equal(t.nodes[2].n_hugepage_sizes, 0);

	n = &t.nodes[3];
	assert_int_equal(n->n_hugepage_sizes, 2);
	assert_int_equal(n->hugepages[0].size, 64 * 1024);
	assert_int_equal(n->hugepages[0].nr, 0);
	assert_int_equal(n->hugepages[1].size, 2ull << 20);
	assert_int_equal(n->hugepages[1].nr, 0);
	assert_int_equal(n->hugepages[1].free, 0);
	close(fd);
	fake_tree_free(root);
}

/* A node directory with nothing in it reads as a node with nothing. */
static void test_missing_files(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0-3\n", 4096, 2048, "10 20\n");
	fake_write(root, "sys/devices/system/node/node1/uevent", "");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 2);
	const NumaNode *n = &t.nodes[1];
	assert_int_equal(n->id, 1);
	assert_int_equal(n->n_cpus, 0);
	assert_int_equal(n->mem_total, 0);
	assert_int_equal(n->mem_free, 0);
	assert_int_equal(n->distance[0], 0);
	assert_int_equal(n->n_hugepage_sizes, 0);
	assert_int_equal(t.nodes[0].distance[1], 20);
	close(fd);
	fake_tree_free(root);
}

/* More sizes than the table holds: the smallest ones stay. */
static void test_many_hugepage_sizes(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0\n", 4096, 2048, "10\n");
	static const unsigned long long kb[6] = {16777216, 64, 1048576, 32768, 2048, 524288};
	for (unsigned i = 0; i < 6; i++)
		add_hugepages(root, 0, kb[i], "1\n", "1\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	const NumaNode *n = &t.nodes[0];
	assert_int_equal(n->n_hugepage_sizes, NUMA_MAX_HUGEPAGE_SIZES);
	static const unsigned long long want[4] = {64, 2048, 32768, 524288};
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(n->hugepages[i].size, want[i] * 1024);
	close(fd);
	fake_tree_free(root);
}

static void test_no_numa_dir_is_one_node(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	fake_write(root, "sys/devices/system/cpu/online", "0-5\n");
	fake_write(root, "proc/meminfo", "MemTotal:       1000 kB\nMemFree:         500 kB\n");
	add_host_hugepages(root, 2048, "64\n", "60\n", "2\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 1);
	assert_int_equal(t.nodes[0].n_cpus, 6);
	assert_int_equal(t.nodes[0].mem_total, 1000 * 1024);
	assert_int_equal(t.nodes[0].mem_free, 500 * 1024);
	assert_int_equal(t.nodes[0].n_hugepage_sizes, 1);
	assert_int_equal(t.nodes[0].hugepages[0].size, 2ull << 20);
	assert_int_equal(t.nodes[0].hugepages[0].nr, 64);
	assert_int_equal(t.nodes[0].hugepages[0].free, 60);
	/* The same pools host-wide, where the reservations are. */
	assert_int_equal(t.nodes[0].hugepages[0].resv, 0);
	assert_int_equal(t.n_hugepage_sizes, 1);
	assert_int_equal(numa_host_hugepages(&t, 2ull << 20)->free, 60);
	assert_int_equal(numa_host_hugepages(&t, 2ull << 20)->resv, 2);
	close(fd);
	fake_tree_free(root);
}

static void test_real_kernel(void **state)
{
	int fd = open("/", O_RDONLY | O_DIRECTORY);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_true(t.n_nodes >= 1);
	unsigned cpus = 0;
	for (unsigned i = 0; i < t.n_nodes; i++)
		cpus += t.nodes[i].n_cpus;
	assert_int_equal(cpus, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	for (unsigned i = 0; i < t.n_nodes; i++)
		for (unsigned k = 0; k < t.nodes[i].n_hugepage_sizes; k++)
			assert_true(t.nodes[i].hugepages[k].free <= t.nodes[i].hugepages[k].nr);
	close(fd);
}

/* The host-wide pools (sys/kernel/mm/hugepages) with their reservations,
 * beside the nodes' own; a node's pool has none. */
static void test_host_hugepages(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_node(root, 0, "0-1\n", 4096, 2048, "10 20\n");
	add_node(root, 1, "2-3\n", 4096, 2048, "20 10\n");
	add_hugepages(root, 0, 2048, "40\n", "30\n");
	add_hugepages(root, 1, 2048, "40\n", "40\n");
	add_host_hugepages(root, 2048, "80\n", "70\n", "8\n");
	/* A broken reservation figure: more than is free. */
	add_host_hugepages(root, 1048576, "2\n", "1\n", "5\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 2);
	assert_int_equal(t.n_hugepage_sizes, 2);
	const NumaHugepages *h = numa_host_hugepages(&t, 2ull << 20);
	assert_ptr_equal(h, &t.hugepages[0]);
	assert_int_equal(h->nr, 80);
	assert_int_equal(h->free, 70);
	assert_int_equal(h->resv, 8);
	h = numa_host_hugepages(&t, 1ull << 30);
	assert_non_null(h);
	assert_int_equal(h->resv, 1);
	assert_null(numa_host_hugepages(&t, 4ull << 20));
	assert_int_equal(numa_node_hugepages(&t.nodes[0], 2ull << 20)->free, 30);
	assert_int_equal(numa_node_hugepages(&t.nodes[0], 2ull << 20)->resv, 0);
	char buf[64];
	assert_string_equal(numa_hugepage_sizes_format(&t, buf, sizeof(buf)), "2 MiB, 1 GiB");
	assert_string_equal(numa_hugepage_size_format(64 << 10, buf, sizeof(buf)), "64 KiB");
	assert_string_equal(numa_hugepage_size_format(3000, buf, sizeof(buf)), "3000 B");
	close(fd);
	fake_tree_free(root);

	/* None at all. */
	memset(&t, 0, sizeof(t));
	assert_string_equal(numa_hugepage_sizes_format(&t, buf, sizeof(buf)), "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpulist),
		cmocka_unit_test(test_cpulist_format),
		cmocka_unit_test(test_one_node),
		cmocka_unit_test(test_two_uneven_nodes),
		cmocka_unit_test(test_four_nodes_one_memoryless),
		cmocka_unit_test(test_four_nodes_hugepages),
		cmocka_unit_test(test_missing_files),
		cmocka_unit_test(test_many_hugepage_sizes),
		cmocka_unit_test(test_no_numa_dir_is_one_node),
		cmocka_unit_test(test_host_hugepages),
		cmocka_unit_test(test_real_kernel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
