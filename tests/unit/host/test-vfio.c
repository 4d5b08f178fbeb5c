/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "fake-tree.h"
#include "vfio.h"

/* ---- a fake kernel ----
 *
 * The test binary is linked with --wrap=write: after every write() the
 * code under test makes (sysfs writes, claim records), the fake kernel
 * looks at the tree and reacts the way the real one does before such a
 * write returns: an address in a driver's unbind file unbinds the device,
 * one in drivers_probe binds an unbound device to the driver its
 * driver_override names or else to its native driver, and /dev/vfio/<group>
 * exists while a device of the group is on vfio-pci. What it did goes to
 * fk.log, one "unbind ADDR DRIVER" / "probe ADDR DRIVER" line per act. */

#define DEVS "sys/devices/pci0000:00"

typedef struct FakeDev {
	VfioAddr addr;
	char native[VFIO_DRIVER_SIZE]; /* what probing binds without override */
	int group;
} FakeDev;

static struct {
	bool on;
	bool busy;
	bool keep_nodes;    /* leave /dev/vfio nodes when their group empties */
	const char *refuse; /* a driver whose probe fails */
	const char *root;
	FakeDev devs[32];
	size_t n;
	char log[4096];
} fk;

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);

static void fk_log(const char *what, const char *addr, const char *driver)
{
	size_t len = strlen(fk.log);
	snprintf(fk.log + len, sizeof(fk.log) - len, "%s %s %s\n", what, addr, driver);
}

static FakeDev *fk_dev(const char *addr)
{
	for (size_t i = 0; i < fk.n; i++)
		if (!strcmp(fk.devs[i].addr, addr))
			return &fk.devs[i];
	return NULL;
}

static void fk_path(char *buf, size_t size, const char *addr, const char *file)
{
	snprintf(buf, size, DEVS "/%s/%s", addr, file);
}

static void fk_driver_of(const char *addr, char *buf, size_t size)
{
	char rel[256];
	fk_path(rel, sizeof(rel), addr, "driver");
	fake_link_base(fk.root, rel, buf, size);
}

/* A request file's address, the file emptied; false when it holds none. */
static bool fk_take(const char *rel, VfioAddr ret)
{
	char buf[64];
	fake_read(fk.root, rel, buf, sizeof(buf));
	buf[strcspn(buf, "\n")] = '\0';
	if (!vfio_addr_parse(buf, ret))
		return false;
	fake_write(fk.root, rel, "");
	return true;
}

static void fk_unbind_requests(void)
{
	for (size_t i = 0; i < fk.n; i++) {
		char drv[VFIO_DRIVER_SIZE], rel[256];
		VfioAddr a;
		fk_driver_of(fk.devs[i].addr, drv, sizeof(drv));
		snprintf(rel, sizeof(rel), "sys/bus/pci/drivers/%s/unbind", drv);
		if (!drv[0] || !fk_take(rel, a))
			continue;
		char cur[VFIO_DRIVER_SIZE];
		fk_driver_of(a, cur, sizeof(cur));
		if (strcmp(cur, drv))
			continue; /* the kernel says -ENODEV */
		fk_path(rel, sizeof(rel), a, "driver");
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", fk.root, rel);
		unlink(path);
		fk_log("unbind", a, drv);
	}
}

static void fk_probe_request(void)
{
	VfioAddr a;
	FakeDev *d;
	char cur[VFIO_DRIVER_SIZE], ovr[VFIO_DRIVER_SIZE], rel[256], target[256];
	if (!fk_take("sys/bus/pci/drivers_probe", a) || !(d = fk_dev(a)))
		return;
	fk_driver_of(a, cur, sizeof(cur));
	if (cur[0])
		return;
	fk_path(rel, sizeof(rel), a, "driver_override");
	fake_read(fk.root, rel, ovr, sizeof(ovr));
	ovr[strcspn(ovr, "\n")] = '\0';
	const char *drv = ovr[0] && strcmp(ovr, "(null)") ? ovr : d->native;
	snprintf(target, sizeof(target), "sys/bus/pci/drivers/%s", drv);
	if (!drv[0] || !fake_exists(fk.root, target) || (fk.refuse && !strcmp(drv, fk.refuse)))
		return;
	snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s", drv);
	fk_path(rel, sizeof(rel), a, "driver");
	fake_symlink(fk.root, rel, target);
	fk_log("probe", a, drv);
}

static void fk_nodes_and_overrides(void)
{
	for (size_t i = 0; i < fk.n; i++) {
		char rel[256], buf[64];
		FakeDev *d = &fk.devs[i];
		fk_path(rel, sizeof(rel), d->addr, "driver_override");
		if (!strcmp(fake_read(fk.root, rel, buf, sizeof(buf)), "\n"))
			fake_write(fk.root, rel, "(null)\n");
		if (d->group < 0)
			continue;
		bool used = false;
		for (size_t j = 0; j < fk.n; j++) {
			fk_driver_of(fk.devs[j].addr, buf, sizeof(buf));
			used = used || (fk.devs[j].group == d->group && !strcmp(buf, "vfio-pci"));
		}
		snprintf(rel, sizeof(rel), "dev/vfio/%d", d->group);
		if (used && !fake_exists(fk.root, rel))
			fake_write(fk.root, rel, "");
		else if (!used && !fk.keep_nodes) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", fk.root, rel);
			unlink(path);
		}
	}
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	ssize_t r = __real_write(fd, buf, n);
	if (fk.on && !fk.busy) {
		int saved = errno;
		fk.busy = true;
		fk_unbind_requests();
		fk_probe_request();
		fk_nodes_and_overrides();
		fk.busy = false;
		errno = saved;
	}
	return r;
}

/* A device as sysfs shows it; driver NULL: unbound, group -1: no IOMMU. */
static void fake_pci(const char *root, const char *addr, unsigned vendor, unsigned device,
		     unsigned class_code, const char *driver, int group)
{
	char rel[256], buf[256];
	snprintf(rel, sizeof(rel), DEVS "/%s/vendor", addr);
	snprintf(buf, sizeof(buf), "0x%04x\n", vendor);
	fake_write(root, rel, buf);
	snprintf(rel, sizeof(rel), DEVS "/%s/device", addr);
	snprintf(buf, sizeof(buf), "0x%04x\n", device);
	fake_write(root, rel, buf);
	snprintf(rel, sizeof(rel), DEVS "/%s/class", addr);
	snprintf(buf, sizeof(buf), "0x%06x\n", class_code);
	fake_write(root, rel, buf);
	snprintf(rel, sizeof(rel), DEVS "/%s/driver_override", addr);
	fake_write(root, rel, "(null)\n");
	snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s", addr);
	snprintf(buf, sizeof(buf), "../../../devices/pci0000:00/%s", addr);
	fake_symlink(root, rel, buf);
	if (driver) {
		snprintf(rel, sizeof(rel), "sys/bus/pci/drivers/%s/unbind", driver);
		fake_write(root, rel, "");
		snprintf(rel, sizeof(rel), DEVS "/%s/driver", addr);
		snprintf(buf, sizeof(buf), "../../../bus/pci/drivers/%s", driver);
		fake_symlink(root, rel, buf);
	}
	if (group >= 0) {
		snprintf(rel, sizeof(rel), "sys/kernel/iommu_groups/%d/devices/%s", group, addr);
		snprintf(buf, sizeof(buf), "../../../../devices/pci0000:00/%s", addr);
		fake_symlink(root, rel, buf);
		snprintf(rel, sizeof(rel), DEVS "/%s/iommu_group", addr);
		snprintf(buf, sizeof(buf), "../../../kernel/iommu_groups/%d", group);
		fake_symlink(root, rel, buf);
	}
	if (class_code >> 8 == 0x0300) {
		snprintf(rel, sizeof(rel), DEVS "/%s/boot_vga", addr);
		fake_write(root, rel, "0\n");
	}
	FakeDev *d = &fk.devs[fk.n++];
	snprintf(d->addr, sizeof(d->addr), "%s", addr);
	snprintf(d->native, sizeof(d->native), "%s", driver ? driver : "");
	d->group = group;
}

/* A small desktop: an iGPU driving the console, a discrete GPU with its
 * audio function behind a root port (group 2), a chipset group with an
 * ISA bridge, AHCI and audio (group 3), two identical NICs in their own
 * groups, an unbound device, and an NVMe without IOMMU group. */
static char *host_tree(void)
{
	char *root = fake_tree_new();
	memset(&fk, 0, sizeof(fk));
	fk.root = root;
	fake_write(root, "sys/bus/pci/drivers_probe", "");
	fake_write(root, "sys/bus/pci/drivers/vfio-pci/unbind", "");
	fake_write(root, "sys/bus/pci/drivers/vfio-pci/bind", "");
	fake_write(root, "dev/vfio/vfio", "");
	fake_pci(root, "0000:00:00.0", 0x8086, 0x3e30, 0x060000, NULL, 0);
	fake_pci(root, "0000:00:01.0", 0x8086, 0x1901, 0x060400, "pcieport", 2);
	fake_pci(root, "0000:00:02.0", 0x8086, 0x3e92, 0x030000, "i915", 1);
	fake_write(root, DEVS "/0000:00:02.0/boot_vga", "1\n");
	fake_pci(root, "0000:00:1f.0", 0x8086, 0xa306, 0x060100, "lpc_ich", 3);
	fake_pci(root, "0000:00:1f.2", 0x8086, 0xa352, 0x010601, "ahci", 3);
	fake_pci(root, "0000:00:1f.3", 0x8086, 0xa348, 0x040300, "snd_hda_intel", 3);
	fake_pci(root, "0000:01:00.0", 0x10de, 0x1b80, 0x030000, "nouveau", 2);
	fake_write(root, DEVS "/0000:01:00.0/reset_method", "bus\n");
	fake_pci(root, "0000:01:00.1", 0x10de, 0x10f0, 0x040300, "snd_hda_intel", 2);
	fake_pci(root, "0000:02:00.0", 0x8086, 0x10d3, 0x020000, "e1000e", 4);
	fake_write(root, DEVS "/0000:02:00.0/reset_method", "flr bus\n");
	fake_write(root, DEVS "/0000:02:00.0/reset", "");
	fake_pci(root, "0000:03:00.0", 0x8086, 0x10d3, 0x020000, "e1000e", 5);
	fake_pci(root, "0000:04:00.0", 0x1af4, 0x1041, 0x020000, NULL, 6);
	fake_pci(root, "0000:05:00.0", 0x144d, 0xa808, 0x010802, "nvme", -1);
	fake_write(root, "claims/.keep", "");
	fk.on = true;
	return root;
}

typedef struct Host {
	char *root;
	int rootfd, claimsfd;
} Host;

static Host host_open(void)
{
	Host h = {.root = host_tree()};
	char path[4096];
	h.rootfd = fake_open(h.root);
	snprintf(path, sizeof(path), "%s/claims", h.root);
	h.claimsfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(h.rootfd >= 0 && h.claimsfd >= 0);
	return h;
}

static void host_close(Host *h)
{
	fk.on = false;
	vfio_step_hook = NULL;
	close(h->rootfd);
	close(h->claimsfd);
	fake_tree_free(h->root);
}

static const char *driver_of(const Host *h, const char *addr)
{
	static char buf[VFIO_DRIVER_SIZE];
	char rel[256];
	fk_path(rel, sizeof(rel), addr, "driver");
	return fake_link_base(h->root, rel, buf, sizeof(buf));
}

static const char *override_of(const Host *h, const char *addr)
{
	static char buf[VFIO_DRIVER_SIZE];
	char rel[256];
	fk_path(rel, sizeof(rel), addr, "driver_override");
	return fake_read(h->root, rel, buf, sizeof(buf));
}

static const char *claim_text(const Host *h, const char *addr)
{
	static char buf[1024];
	char rel[256];
	snprintf(rel, sizeof(rel), "claims/%s", addr);
	return fake_read(h->root, rel, buf, sizeof(buf));
}

static bool has_claim(const Host *h, const char *addr)
{
	char rel[256];
	snprintf(rel, sizeof(rel), "claims/%s", addr);
	return fake_exists(h->root, rel);
}

static char steps[512];

static void record_step(const char *step)
{
	size_t len = strlen(steps);
	snprintf(steps + len, sizeof(steps) - len, "%s%s", len ? "," : "", step);
}

/* The device back where the host had it. */
static void assert_given_back(const Host *h, const char *addr, const char *driver)
{
	VfioPciDev d;
	assert_int_equal(vfio_pci_read(h->rootfd, addr, &d), 0);
	assert_string_equal(d.driver, driver);
	assert_string_equal(d.override_, ""); /* "(null)", or "\n" unless a fake kernel ran */
	assert_false(has_claim(h, addr));
}

/* The VM's user: nobody when the test runs as root, else the test's own. */
static long owner_uid(void)
{
	return getuid() == 0 ? 65534 : (long)getuid();
}

static VfioBindOpts to_vm_user(void)
{
	return (VfioBindOpts){.timeout = 2, .owner_uid = owner_uid(), .owner_gid = owner_uid()};
}

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

static void test_addr_parse(void **state)
{
	VfioAddr a;
	assert_true(vfio_addr_parse("0000:01:00.0", a));
	assert_string_equal(a, "0000:01:00.0");
	assert_true(vfio_addr_parse("01:1F.7", a));
	assert_string_equal(a, "0000:01:1f.7");
	assert_true(vfio_addr_parse("ABCD:FF:1f.3", a));
	assert_string_equal(a, "abcd:ff:1f.3");
	assert_false(vfio_addr_parse("0000:01:20.0", a)); /* device > 1f */
	assert_false(vfio_addr_parse("0000:01:00.8", a)); /* function > 7 */
	assert_false(vfio_addr_parse("0000:1:00.0", a));
	assert_false(vfio_addr_parse("0000:01:00.0 ", a));
	assert_false(vfio_addr_parse("00000:01:00.0", a));
	assert_false(vfio_addr_parse("0000-01:00.0", a));
	assert_false(vfio_addr_parse("../../../etc", a));
	assert_false(vfio_addr_parse("", a));
	assert_false(vfio_addr_parse(NULL, a));
}

static void test_enumerate(void **state)
{
	Host h = host_open();
	_cleanup_free_ VfioPciDev *devs = NULL;
	size_t n;
	fake_write(h.root, DEVS "/0000:03:00.0/driver_override", "vfio-pci\n");
	assert_int_equal(vfio_pci_list(h.rootfd, &devs, &n), 0);
	assert_int_equal(n, 12);
	for (size_t i = 1; i < n; i++)
		assert_true(strcmp(devs[i - 1].addr, devs[i].addr) < 0);
	const VfioPciDev *gpu = &devs[6], *nic = &devs[8], *igpu = &devs[2];
	assert_string_equal(gpu->addr, "0000:01:00.0");
	assert_int_equal(gpu->vendor, 0x10de);
	assert_int_equal(gpu->device, 0x1b80);
	assert_int_equal(gpu->class_code, 0x030000);
	assert_string_equal(gpu->driver, "nouveau");
	assert_string_equal(gpu->override_, "");
	assert_int_equal(gpu->group, 2);
	assert_false(gpu->bridge);
	assert_false(gpu->boot_vga);
	assert_string_equal(gpu->reset_methods, "bus");
	assert_false(gpu->can_reset);
	assert_int_equal(gpu->n_slot_functions, 2);
	assert_string_equal(nic->addr, "0000:02:00.0");
	assert_string_equal(nic->reset_methods, "flr bus");
	assert_true(nic->can_reset);
	assert_int_equal(nic->n_slot_functions, 1);
	assert_true(igpu->boot_vga);
	assert_string_equal(igpu->driver, "i915");
	assert_true(devs[0].bridge && devs[1].bridge && devs[3].bridge);
	assert_string_equal(devs[0].driver, "");
	assert_string_equal(devs[9].override_, "vfio-pci");
	assert_string_equal(devs[10].driver, "");
	assert_int_equal(devs[11].group, -1);
	assert_string_equal(devs[11].reset_methods, "");

	VfioPciDev d;
	assert_int_equal(vfio_pci_read(h.rootfd, "1f.3", &d), -EINVAL);
	assert_int_equal(vfio_pci_read(h.rootfd, "00:1F.3", &d), 0);
	assert_string_equal(d.addr, "0000:00:1f.3");
	assert_string_equal(d.driver, "snd_hda_intel");
	assert_int_equal(d.n_slot_functions, 3);
	assert_int_equal(vfio_pci_read(h.rootfd, "0000:07:00.0", &d), -ENOENT);

	VfioAddr fns[2];
	assert_int_equal(vfio_slot_functions(h.rootfd, "0000:00:1f.2", fns, 2), 3);
	assert_string_equal(fns[0], "0000:00:1f.0");
	assert_string_equal(fns[1], "0000:00:1f.2");
	assert_int_equal(vfio_slot_functions(h.rootfd, "0000:07:00.0", fns, 2), 0);
	host_close(&h);
}

static void test_find_id_and_members(void **state)
{
	Host h = host_open();
	VfioAddr a, m[8];
	assert_int_equal(vfio_pci_find_id(h.rootfd, 0x8086, 0x10d3, 0, a), 0);
	assert_string_equal(a, "0000:02:00.0");
	assert_int_equal(vfio_pci_find_id(h.rootfd, 0x8086, 0x10d3, 1, a), 0);
	assert_string_equal(a, "0000:03:00.0");
	assert_int_equal(vfio_pci_find_id(h.rootfd, 0x8086, 0x10d3, 2, a), -ENOENT);
	assert_int_equal(vfio_pci_find_id(h.rootfd, 0x10de, 0x10f0, 0, a), 0);
	assert_string_equal(a, "0000:01:00.1");

	assert_int_equal(vfio_group_members(h.rootfd, 2, m, 8), 3);
	assert_string_equal(m[0], "0000:00:01.0");
	assert_string_equal(m[1], "0000:01:00.0");
	assert_string_equal(m[2], "0000:01:00.1");
	assert_int_equal(vfio_group_members(h.rootfd, 2, m, 1), 3);
	assert_int_equal(vfio_group_members(h.rootfd, 99, m, 8), 0);
	host_close(&h);
}

static void test_group_viability(void **state)
{
	Host h = host_open();
	char why[512];
	VfioAddr gpu[] = {"0000:01:00.0"}, both[] = {"0000:01:00.0", "0000:01:00.1"};
	assert_int_equal(vfio_group_check(h.rootfd, 2, gpu, 1, why, sizeof(why)), -EBUSY);
	assert_string_equal(why, "IOMMU group 2 also holds 0000:01:00.1 (snd_hda_intel): pass it "
				 "too or unbind it");
	/* the root port (a bridge) does not count */
	assert_int_equal(vfio_group_check(h.rootfd, 2, both, 2, why, sizeof(why)), 0);
	/* another member on vfio-pci, or unbound, is fine */
	fake_symlink(h.root, DEVS "/0000:01:00.1/driver", "../../../bus/pci/drivers/vfio-pci");
	assert_int_equal(vfio_group_check(h.rootfd, 2, gpu, 1, why, sizeof(why)), 0);
	fake_write(h.root, DEVS "/0000:01:00.1/driver", ""); /* replaced below */
	unlink(strcat(strcpy(why, h.root), "/" DEVS "/0000:01:00.1/driver"));
	assert_int_equal(vfio_group_check(h.rootfd, 2, gpu, 1, why, sizeof(why)), 0);
	/* the chipset group: the ISA bridge is ignored, the rest named */
	assert_int_equal(vfio_group_check(h.rootfd, 3, NULL, 0, why, sizeof(why)), -EBUSY);
	assert_string_equal(why, "IOMMU group 3 also holds 0000:00:1f.2 (ahci), 0000:00:1f.3 "
				 "(snd_hda_intel): pass them all or unbind them");
	assert_int_equal(vfio_group_check(h.rootfd, 6, NULL, 0, NULL, 0), 0);
	assert_int_equal(vfio_group_check(h.rootfd, 99, NULL, 0, why, sizeof(why)), -ENOENT);
	host_close(&h);
}

static void test_bind_and_release(void **state)
{
	Host h = host_open();
	VfioBindOpts opts = to_vm_user();
	long prev_uid = getuid() == 0 ? 123 : (long)getuid();
	long prev_gid = getuid() == 0 ? 456 : (long)getgid();
	HsError err = {0};
	struct stat st;
	char node[4096];

	/* the node exists already (as when another vfio user had the group)
	 * with an owner to go back to */
	fk.keep_nodes = true;
	fake_write(h.root, "dev/vfio/4", "");
	snprintf(node, sizeof(node), "%s/dev/vfio/4", h.root);
	assert_int_equal(chown(node, (uid_t)prev_uid, (gid_t)prev_gid), 0);

	steps[0] = '\0';
	vfio_step_hook = record_step;
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "02:00.0", "web", &opts, &err), 0);
	assert_string_equal(steps, "claim,override,unbind,probe,bound");
	assert_string_equal(fk.log, "unbind 0000:02:00.0 e1000e\nprobe 0000:02:00.0 vfio-pci\n");
	assert_string_equal(driver_of(&h, "0000:02:00.0"), "vfio-pci");
	assert_string_equal(override_of(&h, "0000:02:00.0"), "vfio-pci");
	char want[512];
	snprintf(want, sizeof(want),
		 "vm=web\norig_driver=e1000e\norig_override=\nstate=bound\ngroup=4\n"
		 "owner_uid=%ld\nowner_gid=%ld\nprev_uid=%ld\nprev_gid=%ld\n",
		 owner_uid(), owner_uid(), prev_uid, prev_gid);
	assert_string_equal(claim_text(&h, "0000:02:00.0"), want);
	assert_int_equal(stat(node, &st), 0);
	assert_int_equal(st.st_uid, owner_uid());
	assert_int_equal(st.st_gid, owner_uid());

	VfioClaim c;
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:02:00.0", &c), 0);
	assert_string_equal(c.vm, "web");
	assert_int_equal(c.state, VFIO_CLAIM_BOUND);
	assert_int_equal(c.prev_uid, prev_uid);

	/* another VM may not release it */
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:02:00.0", "db", 2, &err), -EBUSY);
	assert_string_equal(err.kind, "device-busy");
	assert_true(has_claim(&h, "0000:02:00.0"));

	steps[0] = fk.log[0] = '\0';
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:02:00.0", "web", 2, &err), 0);
	assert_string_equal(steps, "release,restore-override,release-unbind,release-probe,unclaim");
	assert_string_equal(fk.log, "unbind 0000:02:00.0 vfio-pci\nprobe 0000:02:00.0 e1000e\n");
	assert_given_back(&h, "0000:02:00.0", "e1000e");
	assert_int_equal(stat(node, &st), 0);
	assert_int_equal(st.st_uid, prev_uid);
	assert_int_equal(st.st_gid, prev_gid);
	/* nothing to release: fine */
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:02:00.0", NULL, 2, &err), 0);
	host_close(&h);
}

/* Two functions of one group for one VM: the node goes back to its owner
 * only when the last claim on the group goes. */
static void test_group_owner_shared(void **state)
{
	Host h = host_open();
	HsError err = {0};
	struct stat st;
	char node[4096];
	VfioBindOpts opts = to_vm_user();
	fk.keep_nodes = true;
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:01:00.0", "gpu", &opts, &err), 0);
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:01:00.1", "gpu", &opts, &err), 0);
	VfioClaim c;
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:01:00.1", &c), 0);
	assert_int_equal(c.prev_uid, getuid()); /* not the VM user the first bind gave it */
	snprintf(node, sizeof(node), "%s/dev/vfio/2", h.root);
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:01:00.0", NULL, 2, &err), 0);
	assert_int_equal(stat(node, &st), 0);
	assert_int_equal(st.st_uid, owner_uid());
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:01:00.1", NULL, 2, &err), 0);
	assert_int_equal(stat(node, &st), 0);
	assert_int_equal(st.st_uid, getuid());
	assert_given_back(&h, "0000:01:00.0", "nouveau");
	assert_given_back(&h, "0000:01:00.1", "snd_hda_intel");
	host_close(&h);
}

static void test_bind_busy_and_idempotent(void **state)
{
	Host h = host_open();
	HsError err = {0};
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:03:00.0", "a", NULL, &err), 0);
	const char *before = claim_text(&h, "0000:03:00.0");
	char saved[1024];
	snprintf(saved, sizeof(saved), "%s", before);
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:03:00.0", "b", NULL, &err), -EBUSY);
	assert_string_equal(err.kind, "device-busy");
	assert_string_equal(err.message, "0000:03:00.0 is held by VM 'a' (bound)");
	assert_string_equal(claim_text(&h, "0000:03:00.0"), saved);

	steps[0] = fk.log[0] = '\0';
	vfio_step_hook = record_step;
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "03:00.0", "a", NULL, &err), 0);
	assert_string_equal(steps, "");
	assert_string_equal(fk.log, "");
	assert_string_equal(claim_text(&h, "0000:03:00.0"), saved);
	/* half bound (the driver went meanwhile): bound again, the original
	 * driver kept (not vfio-pci) */
	unlink(strcat(strcpy(saved, h.root), "/" DEVS "/0000:03:00.0/driver"));
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "03:00.0", "a", NULL, &err), 0);
	assert_string_equal(steps, "override,unbind,probe,bound");
	assert_string_equal(driver_of(&h, "0000:03:00.0"), "vfio-pci");
	VfioClaim c;
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:03:00.0", &c), 0);
	assert_string_equal(c.orig_driver, "e1000e");
	assert_int_equal(c.state, VFIO_CLAIM_BOUND);
	host_close(&h);
}

static void test_bind_refusals(void **state)
{
	Host h = host_open();
	HsError err = {0};
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:00:02.0", "a", NULL, &err), -EPERM);
	assert_string_equal(err.kind, "host-device");
	assert_non_null(strstr(err.message, "0000:00:02.0 (8086:3e92) is the host's boot display"));
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:07:00.0", "a", NULL, &err), -ENOENT);
	assert_string_equal(err.kind, "not-found");
	assert_string_equal(err.message, "no PCI device 0000:07:00.0 on this host");
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:05:00.0", "a", NULL, &err), -ENODEV);
	assert_string_equal(err.kind, "no-iommu");
	assert_non_null(strstr(err.message, "0000:05:00.0 has no IOMMU group"));
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "5:0.0", "a", NULL, &err), -EINVAL);
	assert_string_equal(err.kind, "invalid");
	assert_int_equal(
	    vfio_bind(h.rootfd, h.claimsfd, "0000:02:00.0", "a\nstate=bound", NULL, &err), -EINVAL);
	assert_string_equal(err.kind, "invalid");
	assert_string_equal(fk.log, "");
	assert_string_equal(driver_of(&h, "0000:05:00.0"), "nvme");
	assert_string_equal(driver_of(&h, "0000:00:02.0"), "i915");
	VfioPciDev d;
	assert_int_equal(vfio_device_check(h.rootfd, h.claimsfd, "0000:02:00.0", NULL, &d, &err),
			 0);
	assert_string_equal(d.driver, "e1000e");
	_cleanup_free_ VfioClaim *claims = NULL;
	size_t n;
	assert_int_equal(vfio_claims_list(h.claimsfd, &claims, &n), 0);
	assert_int_equal(n, 0);
	host_close(&h);
}

/* vfio-pci does not take the device: bind-failed, and the device is given
 * back (the override cleared first, so probing finds e1000e again). */
static void test_bind_timeout(void **state)
{
	Host h = host_open();
	HsError err = {0};
	VfioBindOpts opts = {.timeout = 0.2, .owner_uid = -1, .owner_gid = -1};
	fk.refuse = "vfio-pci";
	double t0 = hs_now();
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:02:00.0", "a", &opts, &err),
			 -ETIMEDOUT);
	assert_true(hs_now() - t0 >= 0.2);
	assert_string_equal(err.kind, "bind-failed");
	assert_non_null(strstr(err.message, "0000:02:00.0 did not bind to vfio-pci within 0.2 s "
					    "(driver: none)"));
	assert_non_null(strstr(err.message, "given back to the host"));
	assert_string_equal(fk.log, "unbind 0000:02:00.0 e1000e\nprobe 0000:02:00.0 e1000e\n");
	assert_given_back(&h, "0000:02:00.0", "e1000e");

	/* no fake kernel at all, vfio-pci not loaded: said so */
	fk.on = false;
	char path[4096];
	snprintf(path, sizeof(path), "%s/sys/bus/pci/drivers/vfio-pci", h.root);
	hs_rm_rf_at(AT_FDCWD, path);
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:04:00.0", "a", &opts, &err),
			 -ETIMEDOUT);
	assert_non_null(strstr(err.message, "the vfio-pci module is not loaded"));
	assert_false(has_claim(&h, "0000:04:00.0"));
	host_close(&h);
}

static void test_release_originally_unbound(void **state)
{
	Host h = host_open();
	HsError err = {0};
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:04:00.0", "a", NULL, &err), 0);
	assert_string_equal(driver_of(&h, "0000:04:00.0"), "vfio-pci");
	assert_true(fake_exists(h.root, "dev/vfio/6"));
	assert_non_null(strstr(claim_text(&h, "0000:04:00.0"), "orig_driver=\n"));
	fk.log[0] = '\0';
	assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:04:00.0", "a", 2, &err), 0);
	assert_string_equal(fk.log, "unbind 0000:04:00.0 vfio-pci\n"); /* no probe */
	assert_given_back(&h, "0000:04:00.0", "");
	assert_false(fake_exists(h.root, "dev/vfio/6"));
	host_close(&h);
}

static const char *crash_at;

static void crash_hook(const char *step)
{
	if (!strcmp(step, crash_at))
		_exit(99);
}

/* Runs fn in a child that dies at step `at`. */
static void crash_child(const Host *h, const char *at, bool bind)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		VfioBindOpts opts = to_vm_user();
		crash_at = at;
		vfio_step_hook = crash_hook;
		if (bind)
			vfio_bind(h->rootfd, h->claimsfd, "0000:02:00.0", "a", &opts, NULL);
		else
			vfio_release(h->rootfd, h->claimsfd, "0000:02:00.0", "a", 2, NULL);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 99);
}

static void test_crash_recovery(void **state)
{
	static const struct {
		bool bind;
		const char *step, *state, *driver, *override;
	} cases[] = {
	    {true, "claim", NULL, "e1000e", "(null)\n"},
	    {true, "override", "binding", "e1000e", "(null)\n"},
	    {true, "unbind", "binding", "e1000e", "vfio-pci"},
	    {true, "probe", "binding", "", "vfio-pci"},
	    {true, "bound", "binding", "vfio-pci", "vfio-pci"},
	    {false, "release", "bound", "vfio-pci", "vfio-pci"},
	    {false, "restore-override", "releasing", "vfio-pci", "vfio-pci"},
	    {false, "release-unbind", "releasing", "vfio-pci", "(null)\n"},
	    {false, "release-probe", "releasing", "", "(null)\n"},
	    {false, "unclaim", "releasing", "e1000e", "(null)\n"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		Host h = host_open();
		HsError err = {0};
		VfioBindOpts opts = to_vm_user();
		if (!cases[i].bind)
			assert_int_equal(
			    vfio_bind(h.rootfd, h.claimsfd, "0000:02:00.0", "a", &opts, &err), 0);
		crash_child(&h, cases[i].step, cases[i].bind);
		/* where the crash left it */
		VfioClaim c;
		int r = vfio_claim_read(h.claimsfd, "0000:02:00.0", &c);
		if (!cases[i].state)
			assert_int_equal(r, -ENOENT);
		else {
			assert_int_equal(r, 0);
			assert_string_equal(vfio_claim_state_to_string(c.state), cases[i].state);
			assert_string_equal(c.orig_driver, "e1000e");
		}
		assert_string_equal(driver_of(&h, "0000:02:00.0"), cases[i].driver);
		assert_string_equal(override_of(&h, "0000:02:00.0"), cases[i].override);
		/* recovery: whatever the state, the device goes back */
		assert_int_equal(vfio_release(h.rootfd, h.claimsfd, "0000:02:00.0", NULL, 2, &err),
				 0);
		assert_given_back(&h, "0000:02:00.0", "e1000e");
		assert_false(fake_exists(h.root, "dev/vfio/4"));
		host_close(&h);
	}
}

static void test_claims_list(void **state)
{
	Host h = host_open();
	HsError err = {0};
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:03:00.0", "zeta", NULL, &err), 0);
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:02:00.0", "alpha", NULL, &err), 0);
	fake_write(h.root, "claims/0000:09:00.0", "garbage\n");
	fake_write(h.root, "claims/0000:0a:00.0", "vm=x\nstate=sleeping\n");
	fake_write(h.root, "claims/.0000:02:00.0.new.1", "vm=y\nstate=bound\n");
	VfioClaim c;
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:09:00.0", &c), -EBADMSG);
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:0a:00.0", &c), -EBADMSG);
	assert_int_equal(vfio_claim_read(h.claimsfd, "0000:0b:00.0", &c), -ENOENT);
	_cleanup_free_ VfioClaim *claims = NULL;
	size_t n;
	assert_int_equal(vfio_claims_list(h.claimsfd, &claims, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(claims[0].addr, "0000:02:00.0");
	assert_string_equal(claims[0].vm, "alpha");
	assert_string_equal(claims[1].addr, "0000:03:00.0");
	assert_string_equal(claims[1].vm, "zeta");
	assert_int_equal(claims[1].group, 5);
	assert_int_equal(claims[1].owner_uid, -1);
	host_close(&h);
}

/* Runs the built hs-vfio with --root/--claims on the fake tree: its exit
 * status, its stdout or stderr (err) in out. */
static int run_tool(const Host *h, const char *env, const char *args, bool err, char *out,
		    size_t size)
{
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "%s '%s' --root '%s' --claims '%s/claims' --timeout 1 %s %s",
		 env, getenv("HS_VFIO_TOOL"), h->root, h->root, args,
		 err ? "2>&1 >/dev/null" : "2>/dev/null");
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, size - 1, p);
	out[n] = '\0';
	int status = pclose(p);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_tool(void **state)
{
	if (!getenv("HS_VFIO_TOOL"))
		skip();
	Host h = host_open();
	HsError err = {0};
	char out[8192];
	assert_int_equal(vfio_bind(h.rootfd, h.claimsfd, "0000:03:00.0", "a", NULL, &err), 0);

	assert_int_equal(run_tool(&h, "", "list", false, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "0000:00:00.0\t8086:3e30\t060000\t-\t0\t-\t-\t-\t0\n"
				    "0000:00:01.0\t8086:1901\t060400\tpcieport\t2\t-\t-\t-\t0\n"
				    "0000:00:02.0\t8086:3e92\t030000\ti915\t1\t-\t-\t-\t1\n"));
	assert_non_null(strstr(out,
			       "0000:02:00.0\t8086:10d3\t020000\te1000e\t4\t-\t-\tflr bus\t0\n"
			       "0000:03:00.0\t8086:10d3\t020000\tvfio-pci\t5\ta\tbound\t-\t0\n"));
	assert_non_null(strstr(out, "0000:05:00.0\t144d:a808\t010802\tnvme\t-\t-\t-\t-\t0\n"));

	assert_int_equal(run_tool(&h, "", "bind --vm b 0000:03:00.0", true, out, sizeof(out)), 1);
	assert_string_equal(out, "hs-vfio: device-busy: 0000:03:00.0 is held by VM 'a' (bound)\n");
	assert_int_equal(run_tool(&h, "", "check --vm b 0000:01:00.0", true, out, sizeof(out)), 1);
	assert_string_equal(out, "hs-vfio: group-not-viable: IOMMU group 2 also holds 0000:01:00.1 "
				 "(snd_hda_intel): pass it too or unbind it\n");
	assert_int_equal(run_tool(&h, "", "check --vm b 01:00.0 01:00.1", true, out, sizeof(out)),
			 0);
	assert_int_equal(run_tool(&h, "", "check 0000:00:02.0", true, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "hs-vfio: host-device: "));
	assert_int_equal(run_tool(&h, "", "bind 0000:02:00.0", true, out, sizeof(out)), 2);
	assert_int_equal(run_tool(&h, "", "frobnicate", true, out, sizeof(out)), 2);
	assert_int_equal(run_tool(&h, "", "release --vm b 0000:03:00.0", true, out, sizeof(out)),
			 1);
	assert_string_equal(out, "hs-vfio: device-busy: 0000:03:00.0 is held by VM 'a', not 'b'\n");

	/* a crash injected into the tool, recovered by the library */
	assert_int_equal(run_tool(&h, "HS_VFIO_FAULT=unbind", "bind --vm c 0000:02:00.0", true, out,
				  sizeof(out)),
			 99);
	assert_string_equal(override_of(&h, "0000:02:00.0"), "vfio-pci");
	assert_non_null(strstr(claim_text(&h, "0000:02:00.0"), "vm=c\n"));
	/* recover keeps a's claim (its QEMU lives), gives c's device back */
	assert_int_equal(run_tool(&h, "", "recover --keep a", true, out, sizeof(out)), 0);
	assert_given_back(&h, "0000:02:00.0", "e1000e");
	assert_true(has_claim(&h, "0000:03:00.0"));
	host_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_iommu_amd),
	    cmocka_unit_test(test_iommu_on_intel),
	    cmocka_unit_test(test_intel_advice_and_real_host),
	    cmocka_unit_test(test_addr_parse),
	    cmocka_unit_test(test_enumerate),
	    cmocka_unit_test(test_find_id_and_members),
	    cmocka_unit_test(test_group_viability),
	    cmocka_unit_test(test_bind_and_release),
	    cmocka_unit_test(test_group_owner_shared),
	    cmocka_unit_test(test_bind_busy_and_idempotent),
	    cmocka_unit_test(test_bind_refusals),
	    cmocka_unit_test(test_bind_timeout),
	    cmocka_unit_test(test_release_originally_unbound),
	    cmocka_unit_test(test_crash_recovery),
	    cmocka_unit_test(test_claims_list),
	    cmocka_unit_test(test_tool),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
