/* SPDX-License-Identifier: Apache-2.0 */
/* PCI passthrough for VMs. The host side (devices, IOMMU groups, claims,
 * driver rebinding) is the vfio/ module; its binding runs in the hs-vfio
 * tool, through the spawner, because driver probe and remove block in the
 * kernel. Here: which host functions a spec's devices are, the checks
 * that give clear errors before anything changes, binding before QEMU
 * starts, releasing after it exits (crashes included, and after an hsd
 * restart from the claim records), QEMU's locked-memory limit, hot-plug
 * and unplug over QMP, and /v1/pci. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "hsd.h"
#include "tool.h"
#include "vfio.h"

#define TOOL_TIMEOUT 120.0   /* a bind or release, all devices */
#define DRIVER_TIMEOUT "20"  /* each driver change (hs-vfio --timeout) */
#define UNPLUG_TIMEOUT 10.0  /* the guest lets go of an unplugged device */

struct VmHostdevs {
	QemuHostFn fns[QEMU_MAX_HOSTFNS]; /* bound for this run of QEMU */
	size_t n;
	bool busy;            /* a bind or release in flight */
	QemuHostFn unplugging[QEMU_MAX_HOSTFNS]; /* device_del sent, DEVICE_DELETED awaited */
	size_t n_unplugging;
};

static struct VmHostdevs *vm_hostdevs(Vm *vm)
{
	if (!vm->hostdevs)
		vm->hostdevs = calloc(1, sizeof(*vm->hostdevs));
	return vm->hostdevs;
}

void hostdev_vm_free(Vm *vm)
{
	free(vm->hostdevs);
	vm->hostdevs = NULL;
}

/* ---- set-up ---- */

/* hs-vfio beside hsd: the build tree (daemon/hsd, vfio/hs-vfio) or an
 * installed one (sbin/hsd, libexec/hs-vfio). */
static char *find_tool(void)
{
	const char *env = getenv("HSD_VFIO_TOOL");
	if (env && env[0])
		return strdup(env);
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			static const char *const rel[] = {"../vfio/hs-vfio", "../libexec/hs-vfio",
							  "hs-vfio"};
			for (size_t i = 0; i < ARRAY_SIZE(rel); i++) {
				char *p = hs_strdup_printf("%s/%s", exe, rel[i]);
				if (p && access(p, X_OK) == 0)
					return p;
				free(p);
			}
		}
	}
	return strdup("hs-vfio"); /* from PATH */
}

int hostdev_init(Hsd *h, const char *sysroot, HsError *err)
{
	h->vfio_root = strdup(sysroot);
	h->vfio_tool = find_tool();
	h->pci_claims_dir = hs_strdup_printf("%s/pci", h->state_dir);
	if (!h->vfio_root || !h->vfio_tool || !h->pci_claims_dir)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	if (mkdir(h->pci_claims_dir, 0700) < 0 && errno != EEXIST)
		return hs_error_set(err, -errno, "internal", "cannot create %s: %m",
				    h->pci_claims_dir);
	h->pci_claims_fd = open(h->pci_claims_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->pci_claims_fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open %s: %m",
				    h->pci_claims_dir);
	return 0;
}

void hostdev_free(Hsd *h)
{
	if (h->pci_claims_fd >= 0)
		close(h->pci_claims_fd);
	h->pci_claims_fd = -1;
	free(h->vfio_root);
	free(h->vfio_tool);
	free(h->pci_claims_dir);
}

/* ---- which host functions ---- */

static unsigned addr_function(const char *addr)
{
	size_t n = strlen(addr);
	return n ? (unsigned)(addr[n - 1] - '0') : 0;
}

static int resolve_one(Hsd *h, const VmSpec *s, unsigned dev, QemuHostFn *out, size_t max,
		       size_t *n, HsError *err)
{
	const VmHostdev *hd = &s->hostdevs[dev];
	int rootfd = h->host.rootfd;
	VfioAddr primary;
	char what[40];
	vm_hostdev_describe(hd, what, sizeof(what));
	if (hd->address[0]) {
		snprintf(primary, sizeof(primary), "%s", hd->address);
	} else if (vfio_pci_find_id(rootfd, hd->vendor, hd->device, hd->index, primary) < 0) {
		return hs_error_set(err, -ENODEV, "device-missing",
				    "hostdevs[%u]: this host has no device %04x:%04x number %u "
				    "(hsctl pci list shows what it has)",
				    dev, hd->vendor, hd->device, hd->index);
	}
	VfioPciDev pd;
	if (vfio_pci_read(rootfd, primary, &pd) < 0)
		return hs_error_set(err, -ENODEV, "device-missing",
				    "hostdevs[%u]: this host has no PCI device %s (hsctl pci list "
				    "shows what it has)",
				    dev, primary);
	bool all = hd->all_functions >= 0
			   ? hd->all_functions
			   : addr_function(primary) == 0 && (pd.class_code >> 16) == 0x03;
	VfioAddr fns[8];
	size_t k = 1;
	if (all)
		k = vfio_slot_functions(rootfd, primary, fns, ARRAY_SIZE(fns));
	if (!all || k == 0) {
		snprintf(fns[0], sizeof(fns[0]), "%s", primary);
		k = 1;
	}
	if (k > ARRAY_SIZE(fns))
		k = ARRAY_SIZE(fns);
	bool has_fn0 = addr_function(fns[0]) == 0;
	for (size_t i = 0; i < k; i++) {
		if (*n >= max)
			return hs_error_set(err, -E2BIG, "invalid-spec",
					    "hostdevs: more than %zu host functions", max);
		QemuHostFn *f = &out[(*n)++];
		memset(f, 0, sizeof(*f));
		snprintf(f->addr, sizeof(f->addr), "%s", fns[i]);
		f->dev = dev;
		f->guest_fn = has_fn0 ? addr_function(fns[i]) : (unsigned)i;
		f->multifunction = f->guest_fn == 0 && k > 1;
		f->primary = !strcmp(fns[i], primary);
		VfioPciDev fd;
		f->vga = vfio_pci_read(rootfd, fns[i], &fd) == 0 && (fd.class_code >> 16) == 0x03;
	}
	return 0;
}

/* The host functions of hostdevs[first .. first+count). */
static int resolve(Hsd *h, const VmSpec *s, size_t first, size_t count, QemuHostFn *out,
		   size_t *n, HsError *err)
{
	*n = 0;
	for (size_t d = first; d < first + count; d++) {
		int r = resolve_one(h, s, (unsigned)d, out, QEMU_MAX_HOSTFNS, n, err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < *n; i++)
		for (size_t j = 0; j < i; j++)
			if (!strcmp(out[i].addr, out[j].addr))
				return hs_error_set(err, -EINVAL, "invalid-spec",
						    "hostdevs[%u] and hostdevs[%u] both take %s",
						    out[j].dev, out[i].dev, out[i].addr);
	return 0;
}

/* Everything that can be said before touching a driver: an IOMMU, the
 * devices free (not another VM's, not the host console), their groups
 * viable with what this VM takes. */
static int check_functions(Hsd *h, const char *vm, const QemuHostFn *f, size_t n, HsError *err)
{
	int rootfd = h->host.rootfd;
	vfio_probe_host(rootfd, &h->host.vfio);
	if (!h->host.vfio.iommu_on)
		return hs_error_set(err, -ENODEV, "no-iommu",
				    "host devices need an IOMMU (%s)", h->host.vfio.advice);
	VfioAddr taking[QEMU_MAX_HOSTFNS * 2];
	size_t nt = 0;
	for (size_t i = 0; i < n; i++)
		snprintf(taking[nt++], sizeof(VfioAddr), "%s", f[i].addr);
	VfioClaim *claims = NULL;
	size_t nc = 0;
	if (vfio_claims_list(h->pci_claims_fd, &claims, &nc) == 0)
		for (size_t i = 0; i < nc && nt < ARRAY_SIZE(taking); i++)
			if (!strcmp(claims[i].vm, vm))
				snprintf(taking[nt++], sizeof(VfioAddr), "%s", claims[i].addr);
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		VfioPciDev pd;
		for (size_t c = 0; c < nc; c++)
			if (!strcmp(claims[c].addr, f[i].addr) && strcmp(claims[c].vm, vm)) {
				Vm *o = vm_find(h, claims[c].vm);
				bool active = o && vm_state_is_active(o->status.state);
				r = hs_error_set(err, -EBUSY, "device-busy",
						 "%s is held by VM '%s'%s", f[i].addr, claims[c].vm,
						 active ? ", which is running"
							: " (not running: 'hsctl pci release' gives "
							  "it back to the host)");
			}
		if (r < 0)
			break;
		if (vfio_pci_read(rootfd, f[i].addr, &pd) < 0) {
			r = hs_error_set(err, -ENODEV, "device-missing",
					 "this host has no PCI device %s", f[i].addr);
		} else if (pd.boot_vga && strcmp(pd.driver, "vfio-pci")) {
			r = hs_error_set(err, -EBUSY, "host-device",
					 "%s drives the host's console (boot VGA, driver %s): the "
					 "host needs it",
					 f[i].addr, pd.driver[0] ? pd.driver : "none");
		} else if (pd.group < 0) {
			r = hs_error_set(err, -ENODEV, "no-iommu",
					 "%s is in no IOMMU group: the IOMMU does not cover it",
					 f[i].addr);
		} else {
			char why[400];
			if (vfio_group_check(rootfd, pd.group, taking, nt, why, sizeof(why)) < 0)
				r = hs_error_set(err, -EBUSY, "group-not-viable", "%s: %s",
						 f[i].addr, why);
		}
	}
	free(claims);
	return r;
}

/* ---- running hs-vfio ---- */

typedef void (*ToolCb)(Hsd *h, const char *vm, const HsError *err, void *ud);

typedef struct ToolJob {
	char vm[VM_NAME_MAX + 1];
	ToolCb cb;
	void *ud;
} ToolJob;

/* "hs-vfio: KIND: message" → err. */
static void tool_error(const ToolResult *res, HsError *err)
{
	const char *line = res->output ? strstr(res->output, "hs-vfio: ") : NULL;
	char kind[48] = "", msg[400] = "";
	if (line && sscanf(line, "hs-vfio: %47[a-z-]: %399[^\n]", kind, msg) == 2) {
		int code = -EIO;
		if (!strcmp(kind, "not-found"))
			code = -ENODEV, snprintf(kind, sizeof(kind), "device-missing");
		else if (!strcmp(kind, "invalid"))
			code = -EINVAL;
		else if (!strcmp(kind, "no-iommu"))
			code = -ENODEV;
		else if (!strcmp(kind, "device-busy") || !strcmp(kind, "host-device") ||
			 !strcmp(kind, "group-not-viable"))
			code = -EBUSY;
		hs_error_set(err, code, kind, "%s", msg);
		return;
	}
	char why[300];
	tool_describe_failure(res, why, sizeof(why));
	hs_error_set(err, -EIO, "bind-failed", "hs-vfio: %s", why);
}

static void on_tool_done(Hsd *h, const ToolResult *res, void *ud)
{
	ToolJob *j = ud;
	HsError err;
	if (!res->ok)
		tool_error(res, &err);
	j->cb(h, j->vm, res->ok ? NULL : &err, j->ud);
	free(j);
}

/* hs-vfio with hsd's root and claims, then args. */
static int run_tool_args(Hsd *h, char *const *args, size_t n_args, ToolCb cb, void *ud,
			 const char *vm, HsError *err)
{
	char *argv[16 + 2 * QEMU_MAX_HOSTFNS + 2 * 64];
	size_t a = 0;
	argv[a++] = h->vfio_tool;
	argv[a++] = (char *)"--root";
	argv[a++] = h->vfio_root;
	argv[a++] = (char *)"--claims";
	argv[a++] = h->pci_claims_dir;
	argv[a++] = (char *)"--timeout";
	argv[a++] = (char *)DRIVER_TIMEOUT;
	for (size_t i = 0; i < n_args && a < ARRAY_SIZE(argv) - 1; i++)
		argv[a++] = args[i];
	argv[a] = NULL;
	ToolJob *j = calloc(1, sizeof(*j));
	if (!j)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	snprintf(j->vm, sizeof(j->vm), "%s", vm ? vm : "");
	j->cb = cb;
	j->ud = ud;
	int r = tool_run(h, argv, NULL, 0, TOOL_TIMEOUT, on_tool_done, j, err);
	if (r < 0)
		free(j);
	return r;
}

/* hs-vfio CMD [--vm VM] [--owner UID:GID] ADDR... ("release-vm VM"). */
static int run_tool(Hsd *h, const char *cmd, const char *vm, bool owner, const QemuHostFn *f,
		    size_t n, ToolCb cb, void *ud, HsError *err)
{
	char *args[8 + QEMU_MAX_HOSTFNS];
	char own[48];
	size_t a = 0;
	args[a++] = (char *)cmd;
	if (vm && !strcmp(cmd, "release-vm")) {
		args[a++] = (char *)vm;
	} else if (vm) {
		args[a++] = (char *)"--vm";
		args[a++] = (char *)vm;
	}
	if (owner && h->qemu_user.change) {
		snprintf(own, sizeof(own), "%u:%u", (unsigned)h->qemu_user.uid,
			 (unsigned)h->qemu_user.gid);
		args[a++] = (char *)"--owner";
		args[a++] = own;
	}
	for (size_t i = 0; i < n && a < ARRAY_SIZE(args); i++)
		args[a++] = (char *)f[i].addr;
	return run_tool_args(h, args, a, cb, ud, vm, err);
}

/* ---- a VM's start and exit ---- */

typedef struct BindWait {
	HostdevDoneCb cb;
	void *ud;
} BindWait;

static void on_vm_bound(Hsd *h, const char *name, const HsError *err, void *ud)
{
	BindWait *w = ud;
	Vm *vm = vm_find(h, name);
	if (vm && vm->hostdevs)
		vm->hostdevs->busy = false;
	if (vm) {
		if (err)
			log_warning("vm %s: host devices not bound: %s", name, err->message);
		else
			log_info("vm %s: %zu host PCI functions bound to vfio-pci", name,
				 vm->hostdevs ? vm->hostdevs->n : 0);
		w->cb(vm, err, w->ud);
	}
	free(w);
}

int hostdev_vm_bind(Vm *vm, HostdevDoneCb cb, void *ud, HsError *err)
{
	Hsd *h = vm->hsd;
	if (!vm->spec.n_hostdevs && !network_vm_has_vfs(vm))
		return 0;
	struct VmHostdevs *hd = vm_hostdevs(vm);
	if (!hd)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	size_t n_vfs = 0;
	int r = resolve(h, &vm->spec, 0, vm->spec.n_hostdevs, hd->fns, &hd->n, err);
	/* SR-IOV VFs of the VM's VF NICs go along, after its host devices. */
	if (r == 0)
		r = network_vm_vfs(vm, hd->fns + hd->n, QEMU_MAX_HOSTFNS - hd->n, &n_vfs, err);
	hd->n += n_vfs;
	if (r == 0)
		r = check_functions(h, vm->spec.name, hd->fns, hd->n, err);
	if (r == 0)
		r = network_vm_vfs_configure(vm, err);
	if (r < 0) {
		hd->n = 0;
		return r;
	}
	BindWait *w = calloc(1, sizeof(*w));
	if (!w)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	w->cb = cb;
	w->ud = ud;
	r = run_tool(h, "bind", vm->spec.name, true, hd->fns, hd->n, on_vm_bound, w, err);
	if (r < 0) {
		free(w);
		return r;
	}
	hd->busy = true;
	return 1;
}

bool hostdev_vm_busy(Vm *vm)
{
	return vm->hostdevs && vm->hostdevs->busy;
}

void hostdev_vm_launch(Vm *vm, QemuLaunch *l)
{
	l->n_hostfns = 0;
	if (!vm->hostdevs)
		return;
	memcpy(l->hostfns, vm->hostdevs->fns, vm->hostdevs->n * sizeof(QemuHostFn));
	l->n_hostfns = vm->hostdevs->n;
}

uint64_t hostdev_memlock_bytes(const VmSpec *s)
{
	/* Every VFIO device pins all of guest RAM (one container: once),
	 * plus room for ROMs, MMIO mappings and QEMU's own DMA buffers (the
	 * 1 GiB libvirt allows too). */
	return (s->memory_mib << 20) + (1ull << 30);
}

int hostdev_set_memlock(Vm *vm, pid_t pid, HsError *err)
{
	struct rlimit rl;
	uint64_t want = hostdev_memlock_bytes(&vm->spec);
	if (prlimit(pid, RLIMIT_MEMLOCK, NULL, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur >= want && rl.rlim_max >= want)
		return 0;
	rl.rlim_cur = rl.rlim_max = want;
	if (prlimit(pid, RLIMIT_MEMLOCK, &rl, NULL) < 0)
		return hs_error_set(err, -errno, "internal",
				    "cannot raise QEMU's locked-memory limit to %" PRIu64
				    " MiB (VFIO pins guest RAM): %m",
				    want >> 20);
	log_info("vm %s: QEMU may lock %" PRIu64 " MiB (VFIO pins guest RAM)", vm->spec.name,
		 want >> 20);
	return 0;
}

static bool vm_holds_claims(Hsd *h, const char *vm)
{
	VfioClaim *claims = NULL;
	size_t n = 0;
	bool any = false;
	if (vfio_claims_list(h->pci_claims_fd, &claims, &n) == 0)
		for (size_t i = 0; i < n; i++)
			any |= !strcmp(claims[i].vm, vm);
	free(claims);
	return any;
}

static void on_vm_released(Hsd *h, const char *name, const HsError *err, void *ud)
{
	Vm *vm = vm_find(h, name);
	if (vm && vm->hostdevs)
		vm->hostdevs->busy = false;
	if (err)
		log_warning("%s%s: host devices not all given back: %s", name[0] ? "vm " : "pci",
			    name, err->message);
	else
		log_info("%s%s: host devices given back to their drivers", name[0] ? "vm " : "pci",
			 name);
	/* Recovery after a restart releases for several VMs at once: no "vm". */
	events_publish(h, json_pack("{s:s, s:s*, s:b, s:s*, s:f}", "type", "hostdevs", "vm",
				    name[0] ? name : NULL, "released", !err, "error",
				    err ? err->message : NULL, "time", hs_wall()));
}

static void unplugs_vm_gone(const char *vm);

void hostdev_vm_release(Vm *vm)
{
	Hsd *h = vm->hsd;
	unplugs_vm_gone(vm->spec.name);
	if (h->stopping || h->pci_claims_fd < 0 || !vm_holds_claims(h, vm->spec.name))
		return; /* (hsd stopping: the claims are recovered at the next start) */
	HsError err;
	if (run_tool(h, "release-vm", vm->spec.name, false, NULL, 0, on_vm_released, NULL, &err) <
	    0) {
		log_warning("vm %s: cannot release its host devices: %s", vm->spec.name,
			    err.message);
		return;
	}
	if (vm_hostdevs(vm)) {
		vm->hostdevs->busy = true;
		vm->hostdevs->n = 0;
		vm->hostdevs->n_unplugging = 0;
	}
}

/* After a restart (or a crash of hsd): every claim of a VM whose QEMU is
 * gone goes back to the host. */
void hostdev_recover(Hsd *h)
{
	VfioClaim *claims = NULL;
	size_t n = 0;
	if (h->pci_claims_fd < 0 || vfio_claims_list(h->pci_claims_fd, &claims, &n) < 0 || !n) {
		free(claims);
		return;
	}
	char *argv[1 + 2 * 64];
	size_t a = 0;
	argv[a++] = (char *)"recover";
	for (Vm *vm = h->vms; vm && a < ARRAY_SIZE(argv) - 2; vm = vm->next)
		if (vm_state_is_active(vm->status.state)) {
			argv[a++] = (char *)"--keep";
			argv[a++] = vm->spec.name;
		}
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		Vm *vm = vm_find(h, claims[i].vm);
		if (!vm || !vm_state_is_active(vm->status.state)) {
			log_info("pci %s: claimed by VM '%s', whose QEMU is gone: giving it back",
				 claims[i].addr, claims[i].vm);
			any = true;
		}
	}
	free(claims);
	if (!any)
		return;
	HsError err;
	if (run_tool_args(h, argv, a, on_vm_released, NULL, "", &err) < 0)
		log_warning("pci: recovery not run: %s", err.message);
}

int hostdev_vm_check_migratable(Vm *vm, HsError *err)
{
	if (!vm->spec.n_hostdevs && network_vm_has_vfs(vm))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' has SR-IOV VF NICs: a VF's state lives in the NIC "
				    "and cannot migrate; remove them first (or use bridge NICs)",
				    vm->spec.name);
	if (!vm->spec.n_hostdevs)
		return 0;
	char d[40];
	return hs_error_set(err, -EBUSY, "conflict",
			    "VM '%s' has host devices passed through (%s%s): their state lives "
			    "in the hardware and cannot migrate; detach them first",
			    vm->spec.name, vm_hostdev_describe(&vm->spec.hostdevs[0], d, sizeof(d)),
			    vm->spec.n_hostdevs > 1 ? ", ..." : "");
}

json_t *hostdev_vm_json(Vm *vm)
{
	if (!vm->spec.n_hostdevs && !network_vm_has_vfs(vm))
		return NULL;
	json_t *a = json_array();
	VfioClaim *claims = NULL;
	size_t n = 0;
	if (vfio_claims_list(vm->hsd->pci_claims_fd, &claims, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (!strcmp(claims[i].vm, vm->spec.name))
				json_array_append_new(
					a, json_pack("{s:s, s:s}", "address", claims[i].addr, "state",
						     vfio_claim_state_to_string(claims[i].state)));
	free(claims);
	return a;
}

/* ---- /v1/pci ---- */

static json_t *pci_dev_json(const VfioPciDev *d, const VfioClaim *c)
{
	char id[16], cls[8];
	snprintf(id, sizeof(id), "%04x:%04x", d->vendor, d->device);
	snprintf(cls, sizeof(cls), "%06x", d->class_code);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:b, s:b, s:i}", "address", d->addr, "id", id,
			      "class", cls, "driver", d->driver[0] ? d->driver : NULL, "bridge",
			      d->bridge, "boot_vga", d->boot_vga, "slot_functions",
			      (int)d->n_slot_functions);
	json_object_set_new(o, "iommu_group", d->group >= 0 ? json_integer(d->group) : json_null());
	if (d->reset_methods[0])
		json_object_set_new(o, "reset_methods", json_string(d->reset_methods));
	if (d->override_[0])
		json_object_set_new(o, "driver_override", json_string(d->override_));
	if (c)
		json_object_set_new(o, "claim",
				    json_pack("{s:s, s:s, s:s?}", "vm", c->vm, "state",
					      vfio_claim_state_to_string(c->state), "host_driver",
					      c->orig_driver[0] ? c->orig_driver : NULL));
	return o;
}

static void pci_list(Hsd *h, HttpRequest *req)
{
	VfioPciDev *devs = NULL;
	VfioClaim *claims = NULL;
	size_t n = 0, nc = 0;
	if (vfio_pci_list(h->host.rootfd, &devs, &n) < 0)
		n = 0;
	if (vfio_claims_list(h->pci_claims_fd, &claims, &nc) < 0)
		nc = 0;
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		const VfioClaim *c = NULL;
		for (size_t k = 0; k < nc; k++)
			if (!strcmp(claims[k].addr, devs[i].addr))
				c = &claims[k];
		json_array_append_new(a, pci_dev_json(&devs[i], c));
	}
	vfio_probe_host(h->host.rootfd, &h->host.vfio);
	json_t *o = json_pack("{s:o, s:b}", "devices", a, "iommu", h->host.vfio.iommu_on);
	if (!h->host.vfio.iommu_on)
		json_object_set_new(o, "advice", json_string(h->host.vfio.advice));
	free(devs);
	free(claims);
	http_reply_json(req, 200, o);
}

typedef struct Release {
	HttpRequest *req;
	VfioAddr addr;
} Release;

static void on_pci_released(Hsd *h, const char *vm, const HsError *err, void *ud)
{
	Release *p = ud;
	VfioPciDev d;
	if (err)
		http_reply_hserror(p->req, err);
	else if (vfio_pci_read(h->host.rootfd, p->addr, &d) == 0)
		http_reply_json(p->req, 200, pci_dev_json(&d, NULL));
	else
		http_reply_json(p->req, 200, json_pack("{s:s}", "address", p->addr));
	free(p);
}

static void pci_release(Hsd *h, HttpRequest *req, const char *addr_s)
{
	VfioAddr addr;
	VfioClaim c;
	if (!vfio_addr_parse(addr_s, addr)) {
		http_reply_error(req, 400, "invalid", "'%s' is not a PCI address like 0000:01:00.0",
				 addr_s);
		return;
	}
	if (vfio_claim_read(h->pci_claims_fd, addr, &c) < 0) {
		http_reply_error(req, 404, "not-found", "%s is not held by any VM", addr);
		return;
	}
	Vm *vm = vm_find(h, c.vm);
	if (vm && (vm_state_is_active(vm->status.state) || hostdev_vm_busy(vm))) {
		http_reply_error(req, 409, "device-busy",
				 "%s is in use by VM '%s', which is %s: stop it, or detach the "
				 "device (hsctl pci detach %s %s)",
				 addr, c.vm,
				 hostdev_vm_busy(vm) ? "binding or releasing its devices"
						     : vm_state_to_string(vm->status.state),
				 c.vm, addr);
		return;
	}
	log_info("api: pci release %s (held by '%s') uid=%u", addr, c.vm,
		 (unsigned)http_request_peer(req)->uid);
	Release *p = calloc(1, sizeof(*p));
	HsError err;
	QemuHostFn f = {0};
	snprintf(f.addr, sizeof(f.addr), "%s", addr);
	if (p) {
		p->req = req;
		snprintf(p->addr, sizeof(p->addr), "%s", addr);
	}
	int r = p ? run_tool(h, "release", NULL, false, &f, 1, on_pci_released, p, &err)
		  : hs_error_set(&err, -ENOMEM, "internal", "out of memory");
	if (r < 0) {
		free(p);
		http_reply_hserror(req, &err);
	} else {
		http_defer(req);
	}
}

void api_pci(Hsd *h, HttpRequest *req, const char *rest)
{
	const char *m = http_request_method(req);
	if (!rest[0]) {
		if (strcmp(m, "GET"))
			method_not_allowed(req, "GET");
		else
			pci_list(h, req);
		return;
	}
	const char *slash = strchr(rest, '/');
	if (!slash || strcmp(slash, "/release")) {
		http_reply_error(req, 404, "not-found", "no such resource '/v1/pci/%s'", rest);
		return;
	}
	if (strcmp(m, "POST")) {
		method_not_allowed(req, "POST");
		return;
	}
	char addr[32];
	snprintf(addr, sizeof(addr), "%.*s", (int)(slash - rest), rest);
	pci_release(h, req, addr);
}

/* ---- hot-plug and unplug ---- */

/* A spec with hostdev j added (at the end) or with index `drop` removed;
 * validated as a whole (duplicates, one VGA). */
static int spec_with(const VmSpec *s, json_t *add, size_t drop, VmSpec *ret, HsError *err)
{
	json_auto_t *j = vm_spec_to_json(s);
	if (!j)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	json_t *a = json_object_get(j, "hostdevs");
	if (!a) {
		a = json_array();
		json_object_set_new(j, "hostdevs", a);
	}
	if (add)
		json_array_append(a, add);
	else
		json_array_remove(a, drop);
	VmSpecDefaults d = {.accel = s->accel, .check_files = false};
	return vm_spec_from_json(j, &d, ret, err);
}

typedef struct Plug {
	Hsd *h;
	HttpRequest *req;
	char vm[VM_NAME_MAX + 1];
	VmSpec spec; /* the VM's spec with the device added */
	QemuHostFn fns[8];
	size_t n, added;
	char bus[32];
	int slot;
} Plug;

static void plug_free(Plug *p)
{
	vm_spec_clear(&p->spec);
	free(p);
}

static void plug_fail(Plug *p, Vm *vm, const HsError *err, bool bound)
{
	http_reply_hserror(p->req, err);
	if (vm && bound && p->added == 0) {
		/* Nothing reached QEMU: the devices go straight back. */
		HsError e;
		if (run_tool(p->h, "release", vm->spec.name, false, p->fns, p->n, on_vm_released,
			     NULL, &e) < 0)
			log_warning("vm %s: cannot release %s: %s", p->vm, p->fns[0].addr,
				    e.message);
	} else if (vm && p->added) {
		/* Some functions are in QEMU: out again, released when the guest
		 * lets them go (or QEMU exits). */
		char id[32];
		qemu_hostfn_id(p->fns[p->n - p->added].addr, id, sizeof(id));
		if (vm->qmp)
			qmp_client_execute(vm->qmp, "device_del", json_pack("{s:s}", "id", id),
					   p->h->qmp_timeout, NULL, NULL);
	}
	plug_free(p);
}

static void plug_next(Plug *p, Vm *vm);

static void on_plug_added(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Plug *p = ud;
	Vm *vm = vm_find(p->h, p->vm);
	if (err || !vm) {
		HsError e;
		if (!err)
			hs_error_set(&e, -EBUSY, "conflict", "VM '%s' went away", p->vm);
		plug_fail(p, vm, err ? err : &e, true);
		return;
	}
	p->added++;
	plug_next(p, vm);
}

/* device_add of the functions, function 0 last (adding it announces the
 * slot to the guest). */
static void plug_next(Plug *p, Vm *vm)
{
	if (p->added < p->n) {
		QemuHostFn *f = &p->fns[p->n - 1 - p->added];
		QemuHostFnPlace place = {.bus = p->bus, .slot = p->slot};
		qmp_client_execute(vm->qmp, "device_add", qemu_hostfn_props(&p->spec, f, &place),
				   p->h->qmp_timeout, on_plug_added, p);
		return;
	}
	int r = store_save_spec(&p->h->store, &p->spec);
	if (r < 0)
		log_warning("vm %s: hot-plugged %s not recorded in its spec: %s", p->vm,
			    p->fns[0].addr, strerror(-r));
	VmSpec old = vm->spec;
	vm->spec = p->spec;
	memset(&p->spec, 0, sizeof(p->spec));
	vm_spec_clear(&old);
	struct VmHostdevs *hd = vm_hostdevs(vm);
	for (size_t i = 0; hd && i < p->n && hd->n < QEMU_MAX_HOSTFNS; i++)
		hd->fns[hd->n++] = p->fns[i];
	log_info("vm %s: hot-plugged %s (%zu function%s)", p->vm, p->fns[0].addr, p->n,
		 p->n == 1 ? "" : "s");
	http_reply_json(p->req, 200, vm_to_json(vm, true));
	plug_free(p);
}

static void on_plug_bound(Hsd *h, const char *name, const HsError *err, void *ud)
{
	Plug *p = ud;
	Vm *vm = vm_find(h, name);
	if (vm && vm->hostdevs)
		vm->hostdevs->busy = false;
	HsError e;
	if (!err && (!vm || !vm->qmp_ready || !vm_state_is_active(vm->status.state)))
		err = &e, hs_error_set(&e, -EBUSY, "conflict", "VM '%s' stopped meanwhile", p->vm);
	if (!err && hostdev_set_memlock(vm, vm->status.pid, &e) < 0)
		err = &e;
	if (err) {
		/* A failed bind released what it bound; after a bind, release. */
		plug_fail(p, vm, err, err == &e);
		return;
	}
	plug_next(p, vm);
}

static bool port_empty(json_t *devices, const char *port)
{
	size_t i;
	json_t *d;
	json_array_foreach (devices, i, d) {
		const char *id = json_string_value(json_object_get(d, "qdev_id"));
		if (id && !strcmp(id, port)) {
			json_t *inner = json_object_get(json_object_get(d, "pci_bridge"), "devices");
			return json_array_size(inner) == 0;
		}
	}
	return false;
}

int hostdev_hotplug_place(Vm *vm, json_t *reply, char *bus, size_t size, int *slot,
			  HsError *err)
{
	json_t *devices = json_object_get(json_array_get(json_object_get(reply, "return"), 0),
					  "devices");
	bus[0] = '\0';
	*slot = -1;
	if (vm_machine_is_q35(vm->spec.machine)) {
		for (unsigned k = 0; k < vm->spec.hotplug_ports && !bus[0]; k++) {
			char port[32];
			snprintf(port, sizeof(port), "hs-hotport%u", k);
			if (port_empty(devices, port))
				snprintf(bus, size, "%s", port);
		}
		if (!bus[0])
			return hs_error_set(err, -ENOSPC, "no-free-slot",
					    "VM '%s' has no free PCIe port for a hot-plug (it has %u: "
					    "more with hsctl set --hotplug-ports, from its next start; "
					    "or add the device while the VM is stopped)",
					    vm->spec.name, vm->spec.hotplug_ports);
		return 0;
	}
	bool used[32] = {0};
	size_t i;
	json_t *d;
	json_array_foreach (devices, i, d)
		used[json_integer_value(json_object_get(d, "slot")) & 31] = true;
	for (int s = 0x18; s < 0x20 && *slot < 0; s++)
		if (!used[s])
			*slot = s;
	if (*slot < 0)
		return hs_error_set(err, -ENOSPC, "no-free-slot",
				    "VM '%s' has no free PCI slot (0x18-0x1f) for a hot-plug",
				    vm->spec.name);
	snprintf(bus, size, "pci.0");
	return 0;
}

/* Where the device goes: an empty spare root port (q35), a free slot
 * from 0x18 up on the PCI bus (pc). */
static void on_plug_pci(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Plug *p = ud;
	Vm *vm = vm_find(p->h, p->vm);
	HsError e;
	if (err || !vm) {
		hs_error_set(&e, -EBUSY, "conflict", "VM '%s' went away", p->vm);
		plug_fail(p, vm, err ? err : &e, false);
		return;
	}
	if (hostdev_hotplug_place(vm, reply, p->bus, sizeof(p->bus), &p->slot, &e) < 0) {
		plug_fail(p, vm, &e, false);
		return;
	}
	/* The functions are placed; bind them now. */
	for (size_t i = 0; i < p->n; i++)
		p->fns[i].dev = (unsigned)(p->spec.n_hostdevs - 1);
	if (run_tool(p->h, "bind", p->vm, true, p->fns, p->n, on_plug_bound, p, &e) < 0) {
		plug_fail(p, vm, &e, false);
		return;
	}
	vm_hostdevs(vm)->busy = true;
}

static int hostdev_attach(Hsd *h, Vm *vm, HttpRequest *req, HsError *err)
{
	json_t *body = body_json(req, false);
	if (!body)
		return 1; /* answered */
	VmHostdev probe;
	int r = vm_hostdev_from_json(body, "body", &probe, err);
	if (r < 0) {
		json_decref(body);
		return r;
	}
	vm_hostdev_clear(&probe);
	if (vm->spec.n_hostdevs >= VM_MAX_HOSTDEVS) {
		json_decref(body);
		return hs_error_set(err, -EINVAL, "invalid-spec", "VM '%s' has %d host devices "
				    "already, the most it may have", vm->spec.name, VM_MAX_HOSTDEVS);
	}
	Plug *p = calloc(1, sizeof(*p));
	if (!p) {
		json_decref(body);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	p->h = h;
	p->req = req;
	snprintf(p->vm, sizeof(p->vm), "%s", vm->spec.name);
	r = spec_with(&vm->spec, body, 0, &p->spec, err);
	json_decref(body);
	if (r < 0) {
		free(p);
		return r;
	}
	bool active = vm_state_is_active(vm->status.state);
	if (!active && hostdev_vm_busy(vm)) {
		plug_free(p);
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is still giving its host devices back; try again in a "
				    "moment",
				    vm->spec.name);
	}
	if (!active) {
		/* A stopped VM: the spec only; devices are bound at its start. */
		r = store_save_spec(&h->store, &p->spec);
		if (r < 0) {
			plug_free(p);
			return hs_error_set(err, r, "internal", "cannot save VM '%s': %s",
					    vm->spec.name, strerror(-r));
		}
		VmSpec old = vm->spec;
		vm->spec = p->spec;
		memset(&p->spec, 0, sizeof(p->spec));
		vm_spec_clear(&old);
		plug_free(p);
		http_reply_json(req, 200, vm_to_json(vm, true));
		return 1;
	}
	if ((vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED) ||
	    !vm->qmp_ready || hostdev_vm_busy(vm) || (r = migrate_vm_check_idle(vm, err)) < 0) {
		plug_free(p);
		return r < 0 ? r
			     : hs_error_set(err, -EBUSY, "conflict",
					    "VM '%s' is %s; host devices are hot-plugged into a "
					    "running or paused VM",
					    vm->spec.name,
					    hostdev_vm_busy(vm) ? "binding or releasing host devices"
								: vm_state_to_string(vm->status.state));
	}
	r = resolve_one(h, &p->spec, (unsigned)(p->spec.n_hostdevs - 1), p->fns,
			ARRAY_SIZE(p->fns), &p->n, err);
	for (size_t i = 0; r == 0 && i < p->n; i++)
		for (size_t k = 0; vm->hostdevs && k < vm->hostdevs->n; k++)
			if (!strcmp(vm->hostdevs->fns[k].addr, p->fns[i].addr))
				r = hs_error_set(err, -EBUSY, "device-busy",
						 "%s is already in VM '%s'", p->fns[i].addr,
						 vm->spec.name);
	if (r == 0)
		r = check_functions(h, vm->spec.name, p->fns, p->n, err);
	if (r < 0) {
		plug_free(p);
		return r;
	}
	log_info("api: hot-plug %s into vm=%s uid=%u", p->fns[0].addr, vm->spec.name,
		 (unsigned)http_request_peer(req)->uid);
	qmp_client_execute(vm->qmp, "query-pci", NULL, h->qmp_timeout, on_plug_pci, p);
	http_defer(req);
	return 1;
}

/* An unplug in flight: device_del sent, each function's DEVICE_DELETED
 * awaited; then its devices go back to the host. */
typedef struct Unplug {
	Hsd *h;
	HttpRequest *req; /* NULL once answered (the guest was slow) */
	char vm[VM_NAME_MAX + 1];
	QemuHostFn fns[8];
	size_t n;
	bool gone[8];
	ev_timer timer;
	struct Unplug *next;
} Unplug;

static Unplug *unplugs;

static void unplug_free(Unplug *u)
{
	for (Unplug **pp = &unplugs; *pp; pp = &(*pp)->next)
		if (*pp == u) {
			*pp = u->next;
			break;
		}
	ev_timer_stop(u->h->loop, &u->timer);
	free(u);
}

static bool unplug_live(Unplug *u);

static void on_unplug_released(Hsd *h, const char *name, const HsError *err, void *ud)
{
	on_vm_released(h, name, err, NULL);
	Unplug *u = ud;
	if (!unplug_live(u))
		return;
	if (u->req) {
		if (err)
			http_reply_hserror(u->req, err);
		else
			http_reply_json(u->req, 200,
					json_pack("{s:s, s:s, s:b}", "vm", u->vm, "address",
						  u->fns[0].addr, "released", true));
	}
	unplug_free(u);
}

static void on_unplug_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Unplug *u = w->data;
	if (u->req)
		http_reply_json(u->req, 202,
				json_pack("{s:s, s:s, s:b, s:s}", "vm", u->vm, "address",
					  u->fns[0].addr, "released", false, "message",
					  "the guest has not let the device go yet: it goes back to "
					  "the host when the guest does, or when the VM stops"));
	u->req = NULL;
}

void hostdev_vm_event(Vm *vm, const char *name, json_t *data)
{
	const char *id = json_string_value(json_object_get(data, "device"));
	if (!id || !hs_str_has_prefix(id, "hd-"))
		return;
	for (Unplug *u = unplugs; u; u = u->next) {
		if (strcmp(u->vm, vm->spec.name))
			continue;
		bool all = true, mine = false;
		for (size_t i = 0; i < u->n; i++) {
			char fid[32];
			qemu_hostfn_id(u->fns[i].addr, fid, sizeof(fid));
			if (!strcmp(fid, id))
				u->gone[i] = mine = true;
			all &= u->gone[i];
		}
		if (!mine || !all)
			continue;
		/* Out of QEMU: forget them, give them back. */
		struct VmHostdevs *hd = vm->hostdevs;
		for (size_t i = 0; hd && i < u->n; i++)
			for (size_t k = 0; k < hd->n; k++)
				if (!strcmp(hd->fns[k].addr, u->fns[i].addr)) {
					hd->fns[k] = hd->fns[--hd->n];
					break;
				}
		log_info("vm %s: guest let %s go; giving it back to the host", vm->spec.name,
			 u->fns[0].addr);
		HsError e;
		ev_timer_stop(u->h->loop, &u->timer);
		if (run_tool(vm->hsd, "release", vm->spec.name, false, u->fns, u->n,
			     on_unplug_released, u, &e) < 0) {
			if (u->req)
				http_reply_hserror(u->req, &e);
			unplug_free(u);
		}
		return;
	}
}

static bool unplug_live(Unplug *u)
{
	for (Unplug *o = unplugs; o; o = o->next)
		if (o == u)
			return true;
	return false;
}

static void on_unplug_sent(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Unplug *u = ud;
	if (!err || !unplug_live(u))
		return;
	/* QEMU refused (or is gone): the device stays where it was. */
	log_warning("vm %s: device_del of %s: %s", u->vm, u->fns[0].addr, err->message);
	if (u->req)
		http_reply_hserror(u->req, err);
	unplug_free(u);
}

/* The VM's QEMU is gone: its unplugs are over (the devices go back with
 * the rest). */
static void unplugs_vm_gone(const char *vm)
{
	for (Unplug *u = unplugs, *next; u; u = next) {
		next = u->next;
		if (strcmp(u->vm, vm))
			continue;
		if (u->req)
			http_reply_json(u->req, 200,
					json_pack("{s:s, s:s, s:b, s:s}", "vm", u->vm, "address",
						  u->fns[0].addr, "released", true, "message",
						  "the VM stopped; its host devices go back to the host"));
		unplug_free(u);
	}
}

static int hostdev_detach(Hsd *h, Vm *vm, HttpRequest *req, const char *addr_s, HsError *err)
{
	VfioAddr addr;
	if (!vfio_addr_parse(addr_s, addr))
		return hs_error_set(err, -EINVAL, "invalid",
				    "'%s' is not a PCI address like 0000:01:00.0", addr_s);
	/* The spec's entry: by its address, or the device its id resolves to. */
	size_t k = vm->spec.n_hostdevs;
	QemuHostFn fns[8];
	size_t n = 0;
	for (size_t i = 0; i < vm->spec.n_hostdevs && k == vm->spec.n_hostdevs; i++) {
		HsError ignore;
		n = 0;
		if (resolve_one(h, &vm->spec, (unsigned)i, fns, ARRAY_SIZE(fns), &n, &ignore) == 0)
			for (size_t f = 0; f < n; f++)
				if (fns[f].primary && !strcmp(fns[f].addr, addr))
					k = i;
		if (!strcmp(vm->spec.hostdevs[i].address, addr))
			k = i;
	}
	if (k == vm->spec.n_hostdevs)
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no host device %s",
				    vm->spec.name, addr);
	VmSpec next;
	int r = spec_with(&vm->spec, NULL, k, &next, err);
	if (r < 0)
		return r;
	bool live = vm_state_is_active(vm->status.state);
	if ((live && !vm->qmp_ready) || hostdev_vm_busy(vm)) {
		vm_spec_clear(&next);
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; try again in a moment", vm->spec.name,
				    hostdev_vm_busy(vm) ? "binding or releasing host devices"
							: "starting");
	}
	r = store_save_spec(&h->store, &next);
	if (r < 0) {
		vm_spec_clear(&next);
		return hs_error_set(err, r, "internal", "cannot save VM '%s': %s", vm->spec.name,
				    strerror(-r));
	}
	VmSpec old = vm->spec;
	vm->spec = next;
	vm_spec_clear(&old);
	/* In QEMU now: the functions this run bound for it. */
	size_t in = 0;
	for (size_t f = 0; f < n; f++)
		for (size_t i = 0; live && vm->hostdevs && i < vm->hostdevs->n; i++)
			if (!strcmp(vm->hostdevs->fns[i].addr, fns[f].addr))
				fns[in++] = vm->hostdevs->fns[i];
	log_info("api: detach %s from vm=%s uid=%u%s", addr, vm->spec.name,
		 (unsigned)http_request_peer(req)->uid, in ? "" : " (spec only)");
	if (!in) {
		http_reply_json(req, 200, vm_to_json(vm, true));
		return 1;
	}
	Unplug *u = calloc(1, sizeof(*u));
	if (!u)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	u->h = h;
	u->req = req;
	snprintf(u->vm, sizeof(u->vm), "%s", vm->spec.name);
	memcpy(u->fns, fns, in * sizeof(fns[0]));
	u->n = in;
	ev_timer_init(&u->timer, on_unplug_timeout, UNPLUG_TIMEOUT, 0.);
	u->timer.data = u;
	ev_timer_start(h->loop, &u->timer);
	u->next = unplugs;
	unplugs = u;
	/* Function 0 takes the whole slot with it. */
	const QemuHostFn *f0 = &u->fns[0];
	for (size_t i = 0; i < in; i++)
		if (u->fns[i].guest_fn == 0)
			f0 = &u->fns[i];
	char id[32];
	qemu_hostfn_id(f0->addr, id, sizeof(id));
	qmp_client_execute(vm->qmp, "device_del", json_pack("{s:s}", "id", id), h->qmp_timeout,
			   on_unplug_sent, u);
	http_defer(req);
	return 1;
}

void api_vm_hostdevs(Hsd *h, Vm *vm, HttpRequest *req, const char *addr)
{
	const char *m = http_request_method(req);
	HsError err = {0};
	int r;
	if (!addr) {
		if (strcmp(m, "POST")) {
			method_not_allowed(req, "POST");
			return;
		}
		r = hostdev_attach(h, vm, req, &err);
	} else {
		if (strcmp(m, "DELETE")) {
			method_not_allowed(req, "DELETE");
			return;
		}
		r = hostdev_detach(h, vm, req, addr, &err);
	}
	if (r < 0)
		http_reply_hserror(req, &err);
}
