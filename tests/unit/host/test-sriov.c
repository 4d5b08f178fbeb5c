/* SPDX-License-Identifier: Apache-2.0 */
/* SR-IOV on a fake sysfs: PFs eth1 (4 VFs at most) and eth2 (8), eth0
 * without SR-IOV, lo without a device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "assert-error.h"
#include "fake-tree.h"
#include "sriov.h"

/* sys/bus/pci/devices/<addr>/<name> -> target. */
static void dev_link(const char *root, const char *addr, const char *name, const char *target)
{
	char rel[512];
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/%s", addr, name);
	fake_symlink(root, rel, target);
}

/* A PCI device; with `netdev`, its interface (net/<netdev> and
 * sys/class/net/<netdev>/device). */
static void add_device(const char *root, const char *addr, const char *driver,
		       const char *netdev)
{
	char rel[256], target[256];
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s", addr);
	fake_mkdir(root, rel);
	if (driver) {
		snprintf(target, sizeof(target), "../../../../bus/pci/drivers/%s", driver);
		dev_link(root, addr, "driver", target);
	}
	if (netdev) {
		snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/net/%s", addr, netdev);
		fake_mkdir(root, rel);
		snprintf(rel, sizeof(rel), "sys/class/net/%s/device", netdev);
		snprintf(target, sizeof(target), "../../../bus/pci/devices/%s", addr);
		fake_symlink(root, rel, target);
	}
}

static void add_pf(const char *root, const char *addr, const char *ifname, unsigned total)
{
	char rel[256], value[16];
	add_device(root, addr, "ice", ifname);
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/sriov_totalvfs", addr);
	snprintf(value, sizeof(value), "%u\n", total);
	fake_write(root, rel, value);
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/sriov_numvfs", addr);
	fake_write(root, rel, "0\n");
}

/* VF `index` of the PF at pf_addr, what the kernel makes when numvfs grows. */
static void add_vf(const char *root, const char *pf_addr, unsigned index, const char *addr,
		   const char *driver, const char *netdev)
{
	char rel[256], target[64];
	add_device(root, addr, driver, NULL);
	if (netdev) {
		snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/net/%s", addr, netdev);
		fake_mkdir(root, rel);
	}
	snprintf(target, sizeof(target), "../%s", pf_addr);
	dev_link(root, addr, "physfn", target);
	snprintf(rel, sizeof(rel), "virtfn%u", index);
	snprintf(target, sizeof(target), "../%s", addr);
	dev_link(root, pf_addr, rel, target);
}

static int setup(void **state)
{
	char *root = fake_tree_new();
	assert_non_null(root);
	add_pf(root, "0000:01:00.0", "eth1", 4);
	fake_write(root, "sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "3\n");
	add_vf(root, "0000:01:00.0", 0, "0000:01:10.0", "iavf", "eth5");
	add_vf(root, "0000:01:00.0", 1, "0000:01:10.1", "vfio-pci", NULL);
	add_vf(root, "0000:01:00.0", 2, "0000:01:10.2", NULL, NULL);
	add_pf(root, "0000:02:00.0", "eth2", 8);
	add_device(root, "0000:00:19.0", "e1000e", "eth0");
	fake_mkdir(root, "sys/class/net/lo");
	*state = root;
	return 0;
}

static int teardown(void **state)
{
	fake_tree_free(*state);
	return 0;
}

static void assert_vf(const SriovVf *vf, unsigned index, const char *addr, const char *driver,
		      const char *netdev)
{
	assert_int_equal(vf->index, index);
	assert_string_equal(vf->address, addr);
	assert_string_equal(vf->driver, driver);
	assert_string_equal(vf->netdev, netdev);
}

static void test_read(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	SriovPf pf;
	HsError err = {0};
	assert_int_equal(sriov_pf_read(rootfd, "eth1", &pf, &err), 0);
	assert_string_equal(pf.name, "eth1");
	assert_string_equal(pf.address, "0000:01:00.0");
	assert_int_equal(pf.totalvfs, 4);
	assert_int_equal(pf.numvfs, 3);
	assert_int_equal(pf.n_vfs, 3);
	assert_vf(&pf.vfs[0], 0, "0000:01:10.0", "iavf", "eth5");
	assert_vf(&pf.vfs[1], 1, "0000:01:10.1", "vfio-pci", "");
	assert_vf(&pf.vfs[2], 2, "0000:01:10.2", "", "");
	sriov_pf_clear(&pf);
	assert_null(pf.vfs);
	sriov_pf_clear(NULL);

	assert_int_equal(sriov_pf_read(rootfd, "eth2", &pf, &err), 0);
	assert_int_equal(pf.totalvfs, 8);
	assert_int_equal(pf.numvfs, 0);
	assert_int_equal(pf.n_vfs, 0);
	assert_null(pf.vfs);
	sriov_pf_clear(&pf);
}

static void test_errors(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	SriovPf pf;
	HsError err = {0};
	assert_error(sriov_pf_read(rootfd, "eth9", &pf, &err), &err, -ENODEV, "not-found", "eth9");
	assert_error(sriov_pf_read(rootfd, "eth0", &pf, &err), &err, -EOPNOTSUPP, "not-sriov",
		     "eth0");
	assert_error(sriov_pf_read(rootfd, "lo", &pf, &err), &err, -EOPNOTSUPP, "not-sriov",
		     "lo");
	assert_error(sriov_pf_read(rootfd, "../eth1", &pf, &err), &err, -EINVAL, "invalid",
		     "../eth1");
	assert_error(sriov_pf_read(rootfd, "..", &pf, &err), &err, -EINVAL, "invalid", "..");
	assert_error(sriov_set_numvfs(rootfd, "eth9", 1, &err), &err, -ENODEV, "not-found",
		     "eth9");
	assert_error(sriov_set_numvfs(rootfd, "eth0", 1, &err), &err, -EOPNOTSUPP, "not-sriov",
		     "eth0");

	/* A PF whose sriov_totalvfs says 0 has no SR-IOV either. */
	add_pf(*state, "0000:03:00.0", "eth3", 0);
	assert_error(sriov_pf_read(rootfd, "eth3", &pf, &err), &err, -EOPNOTSUPP, "not-sriov",
		     "eth3");
	hs_rm_rf_at(rootfd, "sys/class/net/eth3");
}

static void test_list(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	SriovPf *pfs;
	size_t n;
	HsError err = {0};
	assert_int_equal(sriov_list(rootfd, &pfs, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(pfs[0].name, "eth1");
	assert_int_equal(pfs[0].n_vfs, 3);
	assert_vf(&pfs[0].vfs[1], 1, "0000:01:10.1", "vfio-pci", "");
	assert_string_equal(pfs[1].name, "eth2");
	assert_string_equal(pfs[1].address, "0000:02:00.0");
	sriov_list_free(pfs, n);

	/* No sys/class/net at all: none. */
	char *empty = fake_tree_new();
	_cleanup_close_ int emptyfd = fake_open(empty);
	assert_int_equal(sriov_list(emptyfd, &pfs, &n, &err), 0);
	assert_int_equal(n, 0);
	sriov_list_free(pfs, n);
	fake_tree_free(empty);
}

static char *numvfs(const char *root, const char *pf_addr, char *buf, size_t size)
{
	char rel[128];
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/sriov_numvfs", pf_addr);
	return fake_read(root, rel, buf, size);
}

static void test_set_numvfs(void **state)
{
	const char *root = *state;
	_cleanup_close_ int rootfd = fake_open(root);
	HsError err = {0};
	char buf[32];

	assert_int_equal(sriov_set_numvfs(rootfd, "eth2", 2, &err), 0);
	assert_string_equal(numvfs(root, "0000:02:00.0", buf, sizeof(buf)), "2");
	/* From 2 to 8 (through 0: test_set_numvfs_through_zero). */
	assert_int_equal(sriov_set_numvfs(rootfd, "eth2", 8, &err), 0);
	assert_string_equal(numvfs(root, "0000:02:00.0", buf, sizeof(buf)), "8");
	assert_int_equal(sriov_set_numvfs(rootfd, "eth2", 8, &err), 0);
	assert_int_equal(sriov_set_numvfs(rootfd, "eth2", 0, &err), 0);
	assert_string_equal(numvfs(root, "0000:02:00.0", buf, sizeof(buf)), "0");

	assert_error(sriov_set_numvfs(rootfd, "eth2", 9, &err), &err, -ERANGE, "invalid", "eth2");
	assert_string_equal(numvfs(root, "0000:02:00.0", buf, sizeof(buf)), "0");
}

/* The values written to sriov_numvfs files, in order, ";"-terminated. */
static char numvfs_writes[256];

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	char path[512];
	if (strstr(fake_fd_path(fd, path, sizeof(path)), "/sriov_numvfs")) {
		size_t used = strlen(numvfs_writes);
		snprintf(numvfs_writes + used, sizeof(numvfs_writes) - used, "%.*s;", (int)n,
			 (const char *)buf);
	}
	return __real_write(fd, buf, n);
}

/* The kernel takes a new non-zero count only from 0. */
static void test_set_numvfs_through_zero(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	HsError err = {0};
	numvfs_writes[0] = '\0';
	assert_int_equal(sriov_set_numvfs(rootfd, "eth1", 4, &err), 0);
	assert_string_equal(numvfs_writes, "0;4;");
	numvfs_writes[0] = '\0';
	assert_int_equal(sriov_set_numvfs(rootfd, "eth1", 0, &err), 0);
	assert_int_equal(sriov_set_numvfs(rootfd, "eth1", 1, &err), 0);
	assert_int_equal(sriov_set_numvfs(rootfd, "eth1", 1, &err), 0); /* no change */
	assert_string_equal(numvfs_writes, "0;1;");
}

static void test_vf_pick(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	SriovVf vf;
	HsError err = {0};
	/* Free ones no host driver holds first (vfio-pci or none), in order. */
	assert_int_equal(sriov_vf_pick(rootfd, "eth1", NULL, 0, &vf, &err), 0);
	assert_string_equal(vf.address, "0000:01:10.1");
	const char taken1[][16] = {"0000:01:10.1"};
	assert_int_equal(sriov_vf_pick(rootfd, "eth1", taken1, 1, &vf, &err), 0);
	assert_string_equal(vf.address, "0000:01:10.2");
	assert_int_equal(vf.index, 2);
	/* Then one the host's VF driver has (iavf here). */
	const char taken2[][16] = {"0000:01:10.2", "0000:01:10.1"};
	assert_int_equal(sriov_vf_pick(rootfd, "eth1", taken2, 2, &vf, &err), 0);
	assert_string_equal(vf.address, "0000:01:10.0");
	assert_string_equal(vf.driver, "iavf");
	/* All taken; none enabled; no such PF. */
	const char taken3[][16] = {"0000:01:10.2", "0000:01:10.0", "0000:01:10.1"};
	assert_error(sriov_vf_pick(rootfd, "eth1", taken3, 3, &vf, &err), &err, -EBUSY,
		     "no-free-vf", "eth1 has no free virtual function");
	assert_error(sriov_vf_pick(rootfd, "eth2", NULL, 0, &vf, &err), &err, -EBUSY,
		     "no-free-vf", "0 of 8 enabled");
	assert_error(sriov_vf_pick(rootfd, "eth9", NULL, 0, &vf, &err), &err, -ENODEV,
		     "not-found", "eth9");
}

static void test_vf_of(void **state)
{
	_cleanup_close_ int rootfd = fake_open(*state);
	char pf[IFNAMSIZ];
	unsigned index = 99;
	assert_int_equal(sriov_vf_of(rootfd, "0000:01:10.2", pf, &index), 0);
	assert_string_equal(pf, "eth1");
	assert_int_equal(index, 2);
	assert_int_equal(sriov_vf_of(rootfd, "0000:01:10.0", pf, &index), 0);
	assert_int_equal(index, 0);
	/* A PF, a plain device, no device at all: not VFs. */
	assert_int_equal(sriov_vf_of(rootfd, "0000:01:00.0", pf, &index), -ENOENT);
	assert_int_equal(sriov_vf_of(rootfd, "0000:00:19.0", pf, &index), -ENOENT);
	assert_int_equal(sriov_vf_of(rootfd, "0000:09:00.0", pf, &index), -ENOENT);
	assert_int_equal(sriov_vf_of(rootfd, "../x", pf, &index), -EINVAL);

	/* A VF whose PF has no interface (its driver let go of it). */
	add_pf(*state, "0000:04:00.0", NULL, 2);
	add_vf(*state, "0000:04:00.0", 0, "0000:04:10.0", "vfio-pci", NULL);
	assert_int_equal(sriov_vf_of(rootfd, "0000:04:10.0", pf, &index), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_numvfs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_numvfs_through_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vf_pick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vf_of, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
