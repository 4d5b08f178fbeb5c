/* SPDX-License-Identifier: Apache-2.0 */
#include "vfio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hs-util.h"

static unsigned count_entries(int rootfd, const char *path)
{
	int fd = openat(rootfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

void vfio_probe_host(int rootfd, VfioHost *ret)
{
	VfioHost v = {0};
	struct stat st;
	v.iommu_units = count_entries(rootfd, "sys/class/iommu");
	v.iommu_groups = count_entries(rootfd, "sys/kernel/iommu_groups");
	v.iommu_on = v.iommu_units > 0 && v.iommu_groups > 0;
	v.vfio_pci_loaded = fstatat(rootfd, "sys/bus/pci/drivers/vfio-pci", &st, 0) == 0;

	static char cpuinfo[65536];
	if (hs_read_small(rootfd, "proc/cpuinfo", cpuinfo, sizeof(cpuinfo)) == 0) {
		if (strstr(cpuinfo, "GenuineIntel"))
			snprintf(v.vendor, sizeof(v.vendor), "intel");
		else if (strstr(cpuinfo, "AuthenticAMD"))
			snprintf(v.vendor, sizeof(v.vendor), "amd");
	}
	if (!v.iommu_on) {
		if (!strcmp(v.vendor, "intel"))
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable VT-d in the firmware and boot the "
				 "kernel with intel_iommu=on iommu=pt");
		else if (!strcmp(v.vendor, "amd"))
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable AMD-Vi (IOMMU) in the firmware and "
				 "boot the kernel with amd_iommu=on iommu=pt");
		else
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable it in the firmware (VT-d / AMD-Vi) "
				 "and on the kernel command line (intel_iommu=on or amd_iommu=on)");
	}
	*ret = v;
}

/* ---- PCI devices ---- */

#define PCI_DEVICES "sys/bus/pci/devices"
#define PCI_DRIVERS "sys/bus/pci/drivers"
#define IOMMU_GROUPS "sys/kernel/iommu_groups"
#define VFIO_PCI "vfio-pci"

void (*vfio_step_hook)(const char *step);

static void step(const char *name)
{
	if (vfio_step_hook)
		vfio_step_hook(name);
}

static int hex_digits(const char *s, size_t n, unsigned *ret)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -EINVAL;
		v = v * 16 + (unsigned)d;
	}
	*ret = v;
	return 0;
}

bool vfio_addr_parse(const char *s, VfioAddr ret)
{
	unsigned dom = 0, bus, dev, fn;
	if (!s)
		return false;
	size_t len = strlen(s);
	if (len == 12) {
		if (s[4] != ':' || hex_digits(s, 4, &dom) < 0)
			return false;
		s += 5;
	} else if (len != 7)
		return false;
	if (s[2] != ':' || s[5] != '.' || hex_digits(s, 2, &bus) < 0 ||
	    hex_digits(s + 3, 2, &dev) < 0 || hex_digits(s + 6, 1, &fn) < 0)
		return false;
	if (dev > 0x1f || fn > 7)
		return false;
	snprintf(ret, VFIO_ADDR_SIZE, "%04x:%02x:%02x.%x", dom, bus, dev, fn);
	return true;
}

/* A canonical address as a file name: what sysfs and the claims
 * directory use. */
static bool is_canonical_addr(const char *name)
{
	VfioAddr a;
	return vfio_addr_parse(name, a) && !strcmp(a, name);
}

static void strip_newline(char *s)
{
	s[strcspn(s, "\n")] = '\0';
}

static void dev_path(char *buf, size_t size, const char *addr, const char *file)
{
	snprintf(buf, size, PCI_DEVICES "/%s%s%s", addr, *file ? "/" : "", file);
}

static int read_dev_file(int rootfd, const char *addr, const char *file, char *buf, size_t size)
{
	char path[PATH_MAX];
	dev_path(path, sizeof(path), addr, file);
	int r = hs_read_small(rootfd, path, buf, size);
	if (r == 0)
		strip_newline(buf);
	return r;
}

static int read_dev_hex(int rootfd, const char *addr, const char *file, unsigned *ret)
{
	char buf[32], *end;
	int r = read_dev_file(rootfd, addr, file, buf, sizeof(buf));
	if (r < 0)
		return r;
	errno = 0;
	unsigned long v = strtoul(buf, &end, 16);
	if (errno || end == buf || *end || v > 0xffffff)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

/* The bound driver's name; "" when unbound (or the device is gone). */
static void current_driver(int rootfd, const char *addr, char ret[VFIO_DRIVER_SIZE])
{
	char path[PATH_MAX];
	dev_path(path, sizeof(path), addr, "driver");
	if (hs_read_link_base(rootfd, path, ret, VFIO_DRIVER_SIZE) < 0)
		ret[0] = '\0';
}

/* driver_override; "" when unset ("(null)"), or the file is missing. */
static void current_override(int rootfd, const char *addr, char ret[VFIO_DRIVER_SIZE])
{
	if (read_dev_file(rootfd, addr, "driver_override", ret, VFIO_DRIVER_SIZE) < 0 ||
	    !strcmp(ret, "(null)"))
		ret[0] = '\0';
}

static bool dev_has(int rootfd, const char *addr, const char *file)
{
	char path[PATH_MAX];
	struct stat st;
	dev_path(path, sizeof(path), addr, file);
	return fstatat(rootfd, path, &st, 0) == 0;
}

int vfio_pci_read(int rootfd, const char *addr, VfioPciDev *ret)
{
	VfioPciDev d = {.group = -1};
	char buf[64];
	int r;

	if (!vfio_addr_parse(addr, d.addr))
		return -EINVAL;
	if (!dev_has(rootfd, d.addr, ""))
		return -ENOENT;
	if ((r = read_dev_hex(rootfd, d.addr, "vendor", &d.vendor)) < 0 ||
	    (r = read_dev_hex(rootfd, d.addr, "device", &d.device)) < 0 ||
	    (r = read_dev_hex(rootfd, d.addr, "class", &d.class_code)) < 0)
		return r;
	d.bridge = d.class_code >> 16 == 0x06;
	current_driver(rootfd, d.addr, d.driver);
	current_override(rootfd, d.addr, d.override_);

	char path[PATH_MAX], *end;
	dev_path(path, sizeof(path), d.addr, "iommu_group");
	if (hs_read_link_base(rootfd, path, buf, sizeof(buf)) == 0) {
		long g = strtol(buf, &end, 10);
		if (end != buf && !*end && g >= 0 && g <= INT32_MAX)
			d.group = (int)g;
	}
	d.boot_vga =
	    read_dev_file(rootfd, d.addr, "boot_vga", buf, sizeof(buf)) == 0 && !strcmp(buf, "1");
	if (read_dev_file(rootfd, d.addr, "reset_method", d.reset_methods,
			  sizeof(d.reset_methods)) < 0)
		d.reset_methods[0] = '\0';
	d.can_reset = dev_has(rootfd, d.addr, "reset");
	d.n_slot_functions = (unsigned)vfio_slot_functions(rootfd, d.addr, NULL, 0);
	*ret = d;
	return 0;
}

typedef struct AddrList {
	VfioAddr *v;
	size_t n, cap;
} AddrList;

static int collect_addr(int dfd, const char *name, void *ud)
{
	AddrList *l = ud;
	if (!is_canonical_addr(name))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		VfioAddr *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	memcpy(l->v[l->n++], name, VFIO_ADDR_SIZE);
	return 0;
}

static int addr_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The entries of dirfd/path named like a PCI address, sorted (free(*ret)). */
static int list_addrs(int dirfd, const char *path, VfioAddr **ret, size_t *n)
{
	AddrList l = {0};
	int r = hs_dir_foreach(dirfd, path, collect_addr, &l);
	if (r < 0) {
		free(l.v);
		return r;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), addr_cmp);
	*ret = l.v;
	*n = l.n;
	return 0;
}

/* Reads the entry of each address listed in dirfd/path into an array of
 * `size`-byte elements, sorted; the ones that fail to read are left out
 * (a device removed meanwhile, a record that does not parse). */
static int read_each(int dirfd, const char *path, size_t size,
		     int (*read_one)(int dirfd, const char *addr, void *ret), void **ret, size_t *n)
{
	_cleanup_free_ VfioAddr *addrs = NULL;
	size_t n_addrs, k = 0;
	int r = list_addrs(dirfd, path, &addrs, &n_addrs);
	if (r == -ENOENT)
		n_addrs = 0;
	else if (r < 0)
		return r;
	_cleanup_free_ char *v = calloc(n_addrs ? n_addrs : 1, size);
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n_addrs; i++)
		if (read_one(dirfd, addrs[i], v + k * size) == 0)
			k++;
	*ret = TAKE_PTR(v);
	*n = k;
	return 0;
}

static int read_dev(int rootfd, const char *addr, void *ret)
{
	return vfio_pci_read(rootfd, addr, ret);
}

int vfio_pci_list(int rootfd, VfioPciDev **ret, size_t *n)
{
	void *v;
	int r = read_each(rootfd, PCI_DEVICES, sizeof(VfioPciDev), read_dev, &v, n);
	if (r == 0)
		*ret = v;
	return r;
}

int vfio_pci_find_id(int rootfd, unsigned vendor, unsigned device, unsigned index, VfioAddr ret)
{
	_cleanup_free_ VfioPciDev *devs = NULL;
	size_t n;
	int r = vfio_pci_list(rootfd, &devs, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (devs[i].vendor == vendor && devs[i].device == device && index-- == 0) {
			memcpy(ret, devs[i].addr, VFIO_ADDR_SIZE);
			return 0;
		}
	return -ENOENT;
}

size_t vfio_slot_functions(int rootfd, const char *addr, VfioAddr *ret, size_t max)
{
	VfioAddr a;
	size_t n = 0;
	if (!vfio_addr_parse(addr, a))
		return 0;
	for (char f = '0'; f <= '7'; f++) {
		a[11] = f;
		if (!dev_has(rootfd, a, ""))
			continue;
		if (n < max)
			memcpy(ret[n], a, VFIO_ADDR_SIZE);
		n++;
	}
	return n;
}

static void group_devices_path(char *buf, size_t size, int group)
{
	snprintf(buf, size, IOMMU_GROUPS "/%d/devices", group);
}

size_t vfio_group_members(int rootfd, int group, VfioAddr *ret, size_t max)
{
	char path[PATH_MAX];
	_cleanup_free_ VfioAddr *m = NULL;
	size_t n;
	group_devices_path(path, sizeof(path), group);
	if (group < 0 || list_addrs(rootfd, path, &m, &n) < 0)
		return 0;
	for (size_t i = 0; i < n && i < max; i++)
		memcpy(ret[i], m[i], VFIO_ADDR_SIZE);
	return n;
}

static bool addr_in(const char *addr, const VfioAddr *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(set[i], addr))
			return true;
	return false;
}

int vfio_group_check(int rootfd, int group, const VfioAddr *taking, size_t n_taking, char *why,
		     size_t why_size)
{
	char path[PATH_MAX], others[1024] = "";
	_cleanup_free_ VfioAddr *m = NULL;
	size_t n, blocking = 0, len = 0;
	group_devices_path(path, sizeof(path), group);
	if (group < 0)
		return -ENOENT;
	int r = list_addrs(rootfd, path, &m, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		VfioPciDev d;
		if (addr_in(m[i], taking, n_taking) || vfio_pci_read(rootfd, m[i], &d) < 0)
			continue;
		if (d.bridge || !d.driver[0] || !strcmp(d.driver, VFIO_PCI))
			continue;
		int k = snprintf(others + len, sizeof(others) - len, "%s%s (%s)",
				 blocking ? ", " : "", d.addr, d.driver);
		if (k > 0 && (size_t)k < sizeof(others) - len)
			len += (size_t)k;
		blocking++;
	}
	if (!blocking)
		return 0;
	if (why && why_size)
		snprintf(why, why_size, "IOMMU group %d also holds %s: %s", group, others,
			 blocking > 1 ? "pass them all or unbind them"
				      : "pass it too or unbind it");
	return -EBUSY;
}

/* ---- claims ---- */

const char *vfio_claim_state_to_string(VfioClaimState s)
{
	switch (s) {
	case VFIO_CLAIM_BINDING:
		return "binding";
	case VFIO_CLAIM_BOUND:
		return "bound";
	case VFIO_CLAIM_RELEASING:
		return "releasing";
	default:
		return "unknown";
	}
}

static int claim_state_from_string(const char *s, VfioClaimState *ret)
{
	for (VfioClaimState st = VFIO_CLAIM_BINDING; st <= VFIO_CLAIM_RELEASING; st++)
		if (!strcmp(s, vfio_claim_state_to_string(st))) {
			*ret = st;
			return 0;
		}
	return -EINVAL;
}

static int parse_long(const char *s, long *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int claim_parse(const char *addr, char *text, VfioClaim *ret)
{
	VfioClaim c = {
	    .group = -1, .owner_uid = -1, .owner_gid = -1, .prev_uid = -1, .prev_gid = -1};
	bool has_state = false;
	char *save = NULL;
	long v;
	memcpy(c.addr, addr, VFIO_ADDR_SIZE);
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *val = strchr(line, '=');
		if (!val)
			return -EBADMSG;
		*val++ = '\0';
		int r = 0;
		if (!strcmp(line, "vm"))
			r = snprintf(c.vm, sizeof(c.vm), "%s", val) >= (int)sizeof(c.vm) ? -EINVAL
											 : 0;
		else if (!strcmp(line, "orig_driver"))
			snprintf(c.orig_driver, sizeof(c.orig_driver), "%s", val);
		else if (!strcmp(line, "orig_override"))
			snprintf(c.orig_override, sizeof(c.orig_override), "%s", val);
		else if (!strcmp(line, "state"))
			has_state = (r = claim_state_from_string(val, &c.state)) == 0;
		else if (!strcmp(line, "group") && (r = parse_long(val, &v)) == 0)
			c.group = v >= 0 && v <= INT32_MAX ? (int)v : -1;
		else if (!strcmp(line, "owner_uid"))
			r = parse_long(val, &c.owner_uid);
		else if (!strcmp(line, "owner_gid"))
			r = parse_long(val, &c.owner_gid);
		else if (!strcmp(line, "prev_uid"))
			r = parse_long(val, &c.prev_uid);
		else if (!strcmp(line, "prev_gid"))
			r = parse_long(val, &c.prev_gid);
		if (r < 0)
			return -EBADMSG;
	}
	if (!c.vm[0] || !has_state)
		return -EBADMSG;
	*ret = c;
	return 0;
}

int vfio_claim_read(int claimsfd, const char *addr, VfioClaim *ret)
{
	VfioAddr a;
	_cleanup_free_ char *text = NULL;
	if (!vfio_addr_parse(addr, a))
		return -EINVAL;
	int r = hs_read_file(claimsfd, a, 4096, &text, NULL);
	if (r < 0)
		return r == -EFBIG ? -EBADMSG : r;
	return claim_parse(a, text, ret);
}

static int read_claim(int claimsfd, const char *addr, void *ret)
{
	return vfio_claim_read(claimsfd, addr, ret);
}

int vfio_claims_list(int claimsfd, VfioClaim **ret, size_t *n)
{
	void *v;
	int r = read_each(claimsfd, ".", sizeof(VfioClaim), read_claim, &v, n);
	if (r == 0)
		*ret = v;
	return r;
}

static int claim_format(const VfioClaim *c, char *buf, size_t size)
{
	int n =
	    snprintf(buf, size,
		     "vm=%s\norig_driver=%s\norig_override=%s\nstate=%s\ngroup=%d\n"
		     "owner_uid=%ld\nowner_gid=%ld\nprev_uid=%ld\nprev_gid=%ld\n",
		     c->vm, c->orig_driver, c->orig_override, vfio_claim_state_to_string(c->state),
		     c->group, c->owner_uid, c->owner_gid, c->prev_uid, c->prev_gid);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : n;
}

static int claim_write(int claimsfd, const VfioClaim *c)
{
	char buf[1024];
	int n = claim_format(c, buf, sizeof(buf));
	if (n < 0)
		return n;
	return hs_write_file_atomic(claimsfd, c->addr, buf, (size_t)n, 0600);
}

static int claim_set_state(int claimsfd, VfioClaim *c, VfioClaimState state, HsError *err)
{
	if (c->state == state)
		return 0;
	c->state = state;
	int r = claim_write(claimsfd, c);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot update the claim on %s: %s",
				    c->addr, strerror(-r));
	return 0;
}

/* Records a new claim, exclusively: the complete record is written to a
 * temp file and linked to its final name, which fails with -EEXIST when
 * another claim is there. */
static int claim_create(int claimsfd, const VfioClaim *c)
{
	char buf[1024], tmp[64];
	int n = claim_format(c, buf, sizeof(buf));
	if (n < 0)
		return n;
	snprintf(tmp, sizeof(tmp), ".%s.new.%d", c->addr, (int)getpid());
	_cleanup_close_ int fd =
	    openat(claimsfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	int r = hs_write_all(fd, buf, (size_t)n);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && linkat(claimsfd, tmp, claimsfd, c->addr, 0) < 0)
		r = -errno;
	unlinkat(claimsfd, tmp, 0);
	if (r == 0 && fsync(claimsfd) < 0)
		r = -errno;
	return r;
}

/* Another claim (any VM) on a device of `group`: 1 and *ret, or 0. */
static int group_other_claim(int claimsfd, int group, const char *addr, VfioClaim *ret)
{
	_cleanup_free_ VfioClaim *claims = NULL;
	size_t n;
	if (group < 0 || vfio_claims_list(claimsfd, &claims, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (claims[i].group == group && strcmp(claims[i].addr, addr)) {
			*ret = claims[i];
			return 1;
		}
	return 0;
}

/* ---- bind and release ---- */

static int write_override(int rootfd, const char *addr, const char *driver)
{
	char path[PATH_MAX];
	dev_path(path, sizeof(path), addr, "driver_override");
	/* An empty write ("\n") clears it. */
	return hs_write_value_at(rootfd, path, driver[0] ? driver : "\n");
}

static int unbind_current(int rootfd, const char *addr)
{
	char path[PATH_MAX];
	dev_path(path, sizeof(path), addr, "driver/unbind");
	return hs_write_value_at(rootfd, path, addr);
}

static int drivers_probe(int rootfd, const char *addr)
{
	return hs_write_value_at(rootfd, "sys/bus/pci/drivers_probe", addr);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Polls the driver link until it names `want`; on -ETIMEDOUT ret_driver
 * says what it names then. */
static int wait_driver(int rootfd, const char *addr, const char *want, double timeout,
		       char ret_driver[VFIO_DRIVER_SIZE])
{
	double end = hs_now() + timeout;
	for (;;) {
		current_driver(rootfd, addr, ret_driver);
		if (!strcmp(ret_driver, want))
			return 0;
		if (hs_now() >= end)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
}

static int wait_node(int rootfd, const char *node, double timeout)
{
	double end = hs_now() + timeout;
	struct stat st;
	while (fstatat(rootfd, node, &st, 0) < 0) {
		if (errno != ENOENT)
			return -errno;
		if (hs_now() >= end)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
	return 0;
}

static bool vm_name_ok(const char *vm)
{
	if (!vm || !vm[0] || strlen(vm) >= sizeof(((VfioClaim *)0)->vm))
		return false;
	for (const char *p = vm; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

static void vfio_node_path(char *buf, size_t size, int group)
{
	snprintf(buf, size, "dev/vfio/%d", group);
}

/* Gives the device back after a failed bind and returns the bind's error. */
static int bind_failed(int rootfd, int claimsfd, const char *addr, const char *vm, double timeout,
		       HsError *err, int code, const char *fmt, ...) _printf_(8, 9);
static int bind_failed(int rootfd, int claimsfd, const char *addr, const char *vm, double timeout,
		       HsError *err, int code, const char *fmt, ...)
{
	HsError rel = {0};
	char msg[sizeof(err->message)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (vfio_release(rootfd, claimsfd, addr, vm, timeout, &rel) < 0)
		return hs_error_set(err, code, "bind-failed", "%s; giving it back failed too: %s",
				    msg, rel.message);
	return hs_error_set(err, code, "bind-failed", "%s; it is given back to the host", msg);
}

/* /dev/vfio/<group> to the VM's user, its previous owner recorded first. */
static int set_owner(int rootfd, int claimsfd, VfioClaim *c, const VfioBindOpts *o)
{
	char node[64];
	struct stat st;
	VfioClaim other;
	vfio_node_path(node, sizeof(node), c->group);
	int r = wait_node(rootfd, node, o->timeout);
	if (r < 0)
		return r;
	if (c->prev_uid < 0) {
		/* A device of the group claimed before already gave it away: the
		 * owner to go back to is the one that claim recorded. */
		if (group_other_claim(claimsfd, c->group, c->addr, &other) && other.prev_uid >= 0) {
			c->prev_uid = other.prev_uid;
			c->prev_gid = other.prev_gid;
		} else {
			if (fstatat(rootfd, node, &st, 0) < 0)
				return -errno;
			c->prev_uid = st.st_uid;
			c->prev_gid = st.st_gid;
		}
	}
	c->owner_uid = o->owner_uid;
	c->owner_gid = o->owner_gid;
	r = claim_write(claimsfd, c);
	if (r < 0)
		return r;
	if (fchownat(rootfd, node, (uid_t)o->owner_uid, (gid_t)o->owner_gid, 0) < 0)
		return -errno;
	return 0;
}

static int not_an_addr(const char *addr, HsError *err)
{
	return hs_error_set(err, -EINVAL, "invalid",
			    "'%s' is not a PCI address (like 0000:01:00.0)", addr ? addr : "");
}

static int held_by(const VfioClaim *c, HsError *err)
{
	return hs_error_set(err, -EBUSY, "device-busy", "%s is held by VM '%s' (%s)", c->addr,
			    c->vm, vfio_claim_state_to_string(c->state));
}

int vfio_device_check(int rootfd, int claimsfd, const char *addr, const char *vm, VfioPciDev *ret,
		      HsError *err)
{
	VfioPciDev d;
	VfioClaim c;
	int r = vfio_pci_read(rootfd, addr, &d);
	if (r == -EINVAL)
		return not_an_addr(addr, err);
	if (r == -ENOENT)
		return hs_error_set(err, r, "not-found", "no PCI device %s on this host", addr);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot read PCI device %s: %s", addr,
				    strerror(-r));
	if (d.group < 0)
		return hs_error_set(err, -ENODEV, "no-iommu",
				    "%s has no IOMMU group: the IOMMU is off (enable VT-d / AMD-Vi "
				    "and boot with intel_iommu=on or amd_iommu=on)",
				    d.addr);
	r = claimsfd < 0 ? -ENOENT : vfio_claim_read(claimsfd, d.addr, &c);
	if (r < 0 && r != -ENOENT)
		return hs_error_set(err, r, "internal", "cannot read the claim on %s: %s", d.addr,
				    strerror(-r));
	if (r == 0 && (!vm || strcmp(c.vm, vm)))
		return held_by(&c, err);
	if (d.boot_vga)
		return hs_error_set(err, -EPERM, "host-device",
				    "%s (%04x:%04x) is the host's boot display (boot_vga = 1): "
				    "passing it would take the console away",
				    d.addr, d.vendor, d.device);
	*ret = d;
	return 0;
}

int vfio_bind(int rootfd, int claimsfd, const char *addr, const char *vm, const VfioBindOpts *opts,
	      HsError *err)
{
	VfioBindOpts o = opts ? *opts : (VfioBindOpts){.owner_uid = -1, .owner_gid = -1};
	VfioAddr a;
	VfioPciDev d;
	VfioClaim c;
	char drv[VFIO_DRIVER_SIZE];
	int r;

	if (o.timeout <= 0)
		o.timeout = 5;
	if (!vm_name_ok(vm))
		return hs_error_set(err, -EINVAL, "invalid", "invalid VM name for %s",
				    addr ? addr : "");
	if ((r = vfio_device_check(rootfd, claimsfd, addr, vm, &d, err)) < 0)
		return r;
	memcpy(a, d.addr, sizeof(a));
	r = vfio_claim_read(claimsfd, a, &c);
	if (r < 0 && r != -ENOENT)
		return hs_error_set(err, r, "internal", "cannot read the claim on %s: %s", a,
				    strerror(-r));
	if (r == -ENOENT) {
		step("claim");
		c = (VfioClaim){.state = VFIO_CLAIM_BINDING,
				.group = d.group,
				.owner_uid = -1,
				.owner_gid = -1,
				.prev_uid = -1,
				.prev_gid = -1};
		memcpy(c.addr, a, sizeof(a));
		snprintf(c.vm, sizeof(c.vm), "%s", vm);
		memcpy(c.orig_driver, d.driver, sizeof(c.orig_driver));
		memcpy(c.orig_override, d.override_, sizeof(c.orig_override));
		r = claim_create(claimsfd, &c);
		if (r == -EEXIST) { /* claimed meanwhile */
			r = vfio_claim_read(claimsfd, a, &c);
			if (r == 0 && strcmp(c.vm, vm))
				return held_by(&c, err);
		}
		if (r < 0)
			return hs_error_set(err, r, "internal", "cannot record the claim on %s: %s",
					    a, strerror(-r));
	} else if (c.state == VFIO_CLAIM_BOUND && !strcmp(d.driver, VFIO_PCI) &&
		   (o.owner_uid < 0 || (c.owner_uid == o.owner_uid && c.owner_gid == o.owner_gid)))
		return 0; /* already done */
	if ((r = claim_set_state(claimsfd, &c, VFIO_CLAIM_BINDING, err)) < 0)
		return r;

	step("override");
	current_override(rootfd, a, drv);
	if (strcmp(drv, VFIO_PCI) && (r = write_override(rootfd, a, VFIO_PCI)) < 0)
		return bind_failed(rootfd, claimsfd, a, vm, o.timeout, err, r,
				   "cannot set driver_override of %s: %s", a, strerror(-r));
	step("unbind");
	current_driver(rootfd, a, drv);
	if (drv[0] && strcmp(drv, VFIO_PCI) && (r = unbind_current(rootfd, a)) < 0)
		return bind_failed(rootfd, claimsfd, a, vm, o.timeout, err, r,
				   "cannot unbind %s from %s: %s", a, drv, strerror(-r));
	step("probe");
	current_driver(rootfd, a, drv);
	if (strcmp(drv, VFIO_PCI)) {
		int probe = drivers_probe(rootfd, a);
		r = wait_driver(rootfd, a, VFIO_PCI, o.timeout, drv);
		if (r < 0) {
			struct stat st;
			bool loaded = fstatat(rootfd, PCI_DRIVERS "/" VFIO_PCI, &st, 0) == 0;
			return bind_failed(
			    rootfd, claimsfd, a, vm, o.timeout, err, r,
			    "%s did not bind to vfio-pci within %g s (driver: %s)%s%s", a,
			    o.timeout, drv[0] ? drv : "none",
			    loaded ? ""
				   : ": the vfio-pci module is not loaded "
				     "(modprobe vfio-pci)",
			    probe < 0 ? ": drivers_probe failed" : "");
		}
	}
	step("bound");
	if (o.owner_uid >= 0 && (r = set_owner(rootfd, claimsfd, &c, &o)) < 0)
		return bind_failed(rootfd, claimsfd, a, vm, o.timeout, err, r,
				   "cannot give /dev/vfio/%d of %s to %ld:%ld: %s", c.group, a,
				   o.owner_uid, o.owner_gid, strerror(-r));
	c.state = VFIO_CLAIM_BOUND;
	r = claim_write(claimsfd, &c);
	if (r < 0)
		return bind_failed(rootfd, claimsfd, a, vm, o.timeout, err, r,
				   "cannot update the claim on %s: %s", a, strerror(-r));
	return 0;
}

/* /dev/vfio/<group> back to the owner it had, unless another claim still
 * holds the group. A node already gone is fine. */
static int restore_owner(int rootfd, int claimsfd, const VfioClaim *c)
{
	char node[64];
	VfioClaim other;
	if (c->owner_uid < 0 || c->prev_uid < 0 ||
	    group_other_claim(claimsfd, c->group, c->addr, &other))
		return 0;
	vfio_node_path(node, sizeof(node), c->group);
	if (fchownat(rootfd, node, (uid_t)c->prev_uid, (gid_t)c->prev_gid, 0) < 0 &&
	    errno != ENOENT)
		return -errno;
	return 0;
}

int vfio_release(int rootfd, int claimsfd, const char *addr, const char *vm, double timeout,
		 HsError *err)
{
	VfioAddr a;
	VfioClaim c;
	char drv[VFIO_DRIVER_SIZE];
	bool timed_out = false;
	int r;

	if (timeout <= 0)
		timeout = 5;
	if (!vfio_addr_parse(addr, a))
		return not_an_addr(addr, err);
	r = vfio_claim_read(claimsfd, a, &c);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot read the claim on %s: %s", a,
				    strerror(-r));
	if (vm && strcmp(c.vm, vm))
		return hs_error_set(err, -EBUSY, "device-busy", "%s is held by VM '%s', not '%s'",
				    a, c.vm, vm);

	step("release");
	if ((r = claim_set_state(claimsfd, &c, VFIO_CLAIM_RELEASING, err)) < 0)
		return r;
	/* A device removed from the host meanwhile: nothing to give back. */
	bool present = dev_has(rootfd, a, "");

	/* The override first: probing with vfio-pci still in it would bind
	 * vfio-pci again (LXD #12128). */
	step("restore-override");
	current_override(rootfd, a, drv);
	if (present && strcmp(drv, c.orig_override) &&
	    (r = write_override(rootfd, a, c.orig_override)) < 0)
		return hs_error_set(err, r, "bind-failed",
				    "cannot restore driver_override of %s to '%s': %s", a,
				    c.orig_override, strerror(-r));
	step("release-unbind");
	current_driver(rootfd, a, drv);
	if (present && drv[0] && strcmp(drv, c.orig_driver) && (r = unbind_current(rootfd, a)) < 0)
		return hs_error_set(err, r, "bind-failed", "cannot unbind %s from %s: %s", a, drv,
				    strerror(-r));
	step("release-probe");
	current_driver(rootfd, a, drv);
	if (present && c.orig_driver[0] && strcmp(drv, c.orig_driver)) {
		(void)drivers_probe(rootfd, a);
		timed_out = wait_driver(rootfd, a, c.orig_driver, timeout, drv) < 0;
	}
	step("unclaim");
	r = restore_owner(rootfd, claimsfd, &c);
	if (r < 0)
		return hs_error_set(err, r, "internal",
				    "cannot give /dev/vfio/%d back to %ld:%ld: %s", c.group,
				    c.prev_uid, c.prev_gid, strerror(-r));
	if (unlinkat(claimsfd, a, 0) < 0 && errno != ENOENT)
		return hs_error_set(err, -errno, "internal", "cannot remove the claim on %s: %s", a,
				    strerror(errno));
	(void)fsync(claimsfd);
	if (timed_out)
		return hs_error_set(
		    err, -ETIMEDOUT, "bind-failed",
		    "%s did not come back to %s within %g s (driver: %s); its claim "
		    "is removed and driver_override restored, so the host may still "
		    "probe it",
		    a, c.orig_driver, timeout, drv[0] ? drv : "none");
	return 0;
}
