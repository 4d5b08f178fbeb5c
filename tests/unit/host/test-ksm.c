/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-tree.h"
#include "ksm.h"

static void write_ksm(const char *root, const char *knob, const char *v)
{
	char rel[256];
	snprintf(rel, sizeof(rel), "sys/kernel/mm/ksm/%s", knob);
	fake_write(root, rel, v);
}

static void test_absent(void **state)
{
	char *root = fake_tree_new();
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_false(s.present);
	assert_int_equal(ksm_write_knob(fd, "run", 1), -ENOENT);
	close(fd);
	fake_tree_free(root);
}

static void test_read_all(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "1\n");
	write_ksm(root, "pages_to_scan", "100\n");
	write_ksm(root, "sleep_millisecs", "20\n");
	write_ksm(root, "pages_shared", "1000\n");
	write_ksm(root, "pages_sharing", "9000\n");
	write_ksm(root, "pages_unshared", "50\n");
	write_ksm(root, "pages_volatile", "7\n");
	write_ksm(root, "full_scans", "3\n");
	write_ksm(root, "merge_across_nodes", "1\n");
	write_ksm(root, "general_profit", "-4096\n");
	write_ksm(root, "ksm_zero_pages", "10\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_true(s.present);
	assert_int_equal(s.run, 1);
	assert_int_equal(s.pages_to_scan, 100);
	assert_int_equal(s.sleep_millisecs, 20);
	assert_int_equal(s.pages_shared, 1000);
	assert_int_equal(s.pages_sharing, 9000);
	assert_int_equal(s.pages_unshared, 50);
	assert_int_equal(s.pages_volatile, 7);
	assert_int_equal(s.full_scans, 3);
	assert_int_equal(s.merge_across_nodes, 1);
	assert_true(s.has_general_profit);
	assert_int_equal(s.general_profit, -4096);
	assert_true(s.has_zero_pages);
	assert_int_equal(ksm_saved_bytes(&s, 4096), (9000 + 10) * 4096ull);
	close(fd);
	fake_tree_free(root);
}

static void test_old_kernel_without_optional_files(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "0\n");
	write_ksm(root, "pages_sharing", "5\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_true(s.present);
	assert_int_equal(s.run, 0);
	assert_false(s.has_general_profit);
	assert_false(s.has_zero_pages);
	assert_int_equal(s.merge_across_nodes, -1);
	assert_int_equal(ksm_saved_bytes(&s, 4096), 5 * 4096);
	close(fd);
	fake_tree_free(root);
}

static void test_garbage_is_an_error(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "yes please\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), -EINVAL);
	close(fd);
	fake_tree_free(root);
}

static void test_write_knob(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "0\n");
	write_ksm(root, "pages_to_scan", "100\n");
	int fd = fake_open(root);
	assert_int_equal(ksm_write_knob(fd, "run", 1), 0);
	assert_int_equal(ksm_write_knob(fd, "pages_to_scan", 4000), 0);
	assert_int_equal(ksm_write_knob(fd, "../../../etc/passwd", 1), -EINVAL);
	assert_int_equal(ksm_write_knob(fd, "pages_shared", 1), -EINVAL);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_int_equal(s.run, 1);
	assert_int_equal(s.pages_to_scan, 4000);
	close(fd);
	fake_tree_free(root);
}

static void test_process(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/42/ksm_merging_pages", "123\n");
	fake_write(root, "proc/42/ksm_stat", "ksm_rmap_items 200\nksm_merging_pages 123\n"
					     "ksm_process_profit 4096\n");
	fake_write(root, "proc/43/ksm_stat", "ksm_merging_pages 9\n");
	int fd = fake_open(root);
	KsmProcess p;
	assert_int_equal(ksm_read_process(fd, 42, &p), 0);
	assert_true(p.present);
	assert_int_equal(p.merging_pages, 123);
	assert_true(p.has_profit);
	assert_int_equal(p.profit, 4096);
	assert_int_equal(ksm_read_process(fd, 43, &p), 0);
	assert_true(p.present);
	assert_int_equal(p.merging_pages, 9);
	assert_false(p.has_profit);
	assert_int_equal(ksm_read_process(fd, 44, &p), 0);
	assert_false(p.present);
	close(fd);
	fake_tree_free(root);
}

/* The real kernel's tree, read-only: must parse whatever this kernel has. */
static void test_real_kernel(void **state)
{
	int fd = open("/", O_RDONLY | O_DIRECTORY);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	if (s.present)
		assert_true(s.run >= 0 && s.run <= 2);
	KsmProcess p;
	assert_int_equal(ksm_read_process(fd, getpid(), &p), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_absent),
		cmocka_unit_test(test_read_all),
		cmocka_unit_test(test_old_kernel_without_optional_files),
		cmocka_unit_test(test_garbage_is_an_error),
		cmocka_unit_test(test_write_knob),
		cmocka_unit_test(test_process),
		cmocka_unit_test(test_real_kernel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
