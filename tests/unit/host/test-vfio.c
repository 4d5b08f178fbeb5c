/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-tree.h"
#include "vfio.h"

static void test_no_iommu_amd(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/cpuinfo", "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n");
	int fd = fake_open(root);
	VfioHost v;
	vfio_probe_host(fd, &v);
	assert_false(v.iommu_on);
	assert_string_equal(v.vendor, "amd");
	assert_non_null(strstr(v.advice, "amd_iommu=on"));
	assert_non_null(strstr(v.advice, "AMD-Vi"));
	close(fd);
	fake_tree_free(root);
}

static void test_iommu_on_intel(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/cpuinfo", "vendor_id\t: GenuineIntel\n");
	fake_write(root, "sys/class/iommu/dmar0/uevent", "");
	fake_write(root, "sys/kernel/iommu_groups/0/type", "DMA\n");
	fake_write(root, "sys/kernel/iommu_groups/1/type", "DMA\n");
	fake_write(root, "sys/bus/pci/drivers/vfio-pci/new_id", "");
	int fd = fake_open(root);
	VfioHost v;
	vfio_probe_host(fd, &v);
	assert_true(v.iommu_on);
	assert_int_equal(v.iommu_units, 1);
	assert_int_equal(v.iommu_groups, 2);
	assert_true(v.vfio_pci_loaded);
	assert_string_equal(v.advice, "");
	close(fd);
	fake_tree_free(root);
}

static void test_intel_advice_and_real_host(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/cpuinfo", "vendor_id\t: GenuineIntel\n");
	int fd = fake_open(root);
	VfioHost v;
	vfio_probe_host(fd, &v);
	assert_non_null(strstr(v.advice, "intel_iommu=on"));
	assert_non_null(strstr(v.advice, "VT-d"));
	close(fd);
	fake_tree_free(root);
	/* the real host: whatever it has, the answer is consistent */
	fd = open("/", O_RDONLY | O_DIRECTORY);
	vfio_probe_host(fd, &v);
	assert_true(v.iommu_on == (v.advice[0] == '\0'));
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_iommu_amd),
		cmocka_unit_test(test_iommu_on_intel),
		cmocka_unit_test(test_intel_advice_and_real_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
