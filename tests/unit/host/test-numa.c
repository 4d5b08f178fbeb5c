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

static void test_two_uneven_nodes(void **state)
{
	char *root = fake_tree_new();
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
	close(fd);
	fake_tree_free(root);
}

static void test_four_nodes_one_memoryless(void **state)
{
	char *root = fake_tree_new();
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

static void test_no_numa_dir_is_one_node(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "sys/devices/system/cpu/online", "0-5\n");
	fake_write(root, "proc/meminfo", "MemTotal:       1000 kB\nMemFree:         500 kB\n");
	int fd = fake_open(root);
	NumaTopology t;
	assert_int_equal(numa_read_topology(fd, &t), 0);
	assert_int_equal(t.n_nodes, 1);
	assert_int_equal(t.nodes[0].n_cpus, 6);
	assert_int_equal(t.nodes[0].mem_total, 1000 * 1024);
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
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpulist),
		cmocka_unit_test(test_two_uneven_nodes),
		cmocka_unit_test(test_four_nodes_one_memoryless),
		cmocka_unit_test(test_no_numa_dir_is_one_node),
		cmocka_unit_test(test_real_kernel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
