/* SPDX-License-Identifier: Apache-2.0 */
/* vCPU and emulator thread pinning: the vCPU thread ids come from QMP
 * (query-cpus-fast), the affinity is set with sched_setaffinity (hsd is
 * root; QEMU's threads are another user's), and every other thread of
 * QEMU gets the emulator set. Threads QEMU makes later inherit from the
 * thread that makes them (the main one: the emulator set). */
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "hsd.h"
#include "numa.h"
#include "placement.h"

/* The host's online CPUs (from the NUMA topology read at start). */
static void online_cpus(const HostInfo *host, cpu_set_t *set)
{
	CPU_ZERO(set);
	for (unsigned n = 0; n < host->numa.n_nodes; n++)
		for (unsigned c = 0; c < NUMA_MAX_CPUS && c < CPU_SETSIZE; c++)
			if (numa_cpu_isset(host->numa.nodes[n].cpus, c))
				CPU_SET(c, set);
}

/* A CPU list of the spec as a set, every CPU checked against the host. */
static int resolve(const char *list, const cpu_set_t *online, cpu_set_t *set, HsError *err)
{
	unsigned char bits[NUMA_MAX_CPUS / 8] = {0};
	if (numa_parse_cpulist(list, bits, NUMA_MAX_CPUS) <= 0)
		return hs_error_set(err, -EINVAL, "invalid-spec", "'%s' is not a CPU list", list);
	CPU_ZERO(set);
	for (unsigned c = 0; c < NUMA_MAX_CPUS && c < CPU_SETSIZE; c++) {
		if (!numa_cpu_isset(bits, c))
			continue;
		if (!CPU_ISSET(c, online))
			return hs_error_set(err, -EINVAL, "invalid-spec",
					    "cpu_pinning: host CPU %u (in '%s') is not online here", c,
					    list);
		CPU_SET(c, set);
	}
	return 0;
}

/* Walking QEMU's threads (/proc/PID/task under the host's root): cb is
 * called for each thread id and stops the walk by failing (err set). */
typedef int (*ThreadCb)(Vm *vm, pid_t tid, const void *ud, HsError *err);

typedef struct ThreadWalk {
	Vm *vm;
	ThreadCb cb;
	const void *ud;
	HsError *err;
	bool failed;
} ThreadWalk;

static int walk_thread(int dfd, const char *name, void *ud)
{
	ThreadWalk *w = ud;
	pid_t tid = (pid_t)strtol(name, NULL, 10);
	if (tid <= 0)
		return 0;
	int r = w->cb(w->vm, tid, w->ud, w->err);
	w->failed = r < 0;
	return r;
}

static int for_each_qemu_thread(Vm *vm, ThreadCb cb, const void *ud, HsError *err)
{
	char path[64];
	snprintf(path, sizeof(path), "proc/%d/task", (int)vm->status.pid);
	ThreadWalk w = {.vm = vm, .cb = cb, .ud = ud, .err = err};
	int r = hs_dir_foreach(vm->hsd->host.rootfd, path, walk_thread, &w);
	if (r < 0 && !w.failed)
		return hs_error_set(err, -ESRCH, "internal", "cannot list QEMU's threads");
	return r;
}

typedef struct Affinity {
	cpu_set_t vcpu[VM_MAX_CPUS];
	cpu_set_t emulator;
} Affinity;

/* Every thread of QEMU: a vCPU onto its set, the others onto the
 * emulator's. */
static int pin_thread(Vm *vm, pid_t tid, const void *ud, HsError *err)
{
	const Affinity *a = ud;
	const cpu_set_t *set = &a->emulator;
	for (unsigned i = 0; i < vm->n_vcpu_tids; i++)
		if (vm->vcpu_tids[i] == tid)
			set = &a->vcpu[i];
	if (sched_setaffinity(tid, sizeof(*set), set) < 0 && errno != ESRCH)
		return hs_error_set(err, -errno, "internal", "cannot pin thread %d: %m", (int)tid);
	return 0;
}

/* Every list is checked before any thread moves, so a refused change
 * changes nothing; what is not pinned gets the placement's CPUs (or all
 * online ones), so unpinning widens a thread again. */
int pinning_apply(Vm *vm, const VmSpec *spec, HsError *err)
{
	static Affinity a; /* 32 KiB: not on the stack */
	cpu_set_t online, base;
	int r;
	online_cpus(&vm->hsd->host, &online);
	base = online;
	if (vm->placement) {
		CPU_ZERO(&base);
		for (unsigned c = 0; c < NUMA_MAX_CPUS && c < CPU_SETSIZE; c++)
			if (numa_cpu_isset(vm->placement->cpus, c))
				CPU_SET(c, &base);
	}
	for (unsigned i = 0; i < VM_MAX_CPUS; i++) {
		a.vcpu[i] = base;
		if (i < spec->cpus && spec->vcpu_pins[i] &&
		    (r = resolve(spec->vcpu_pins[i], &online, &a.vcpu[i], err)) < 0)
			return r;
	}
	a.emulator = base;
	if (spec->emulator_pin && (r = resolve(spec->emulator_pin, &online, &a.emulator, err)) < 0)
		return r;
	return for_each_qemu_thread(vm, pin_thread, &a, err);
}

typedef struct PinCtx {
	Vm *vm;
	VmDoneCb cb;
	void *ud;
} PinCtx;

static void on_cpus(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	PinCtx *p = ud;
	Vm *vm = p->vm;
	VmDoneCb cb = p->cb;
	void *pud = p->ud;
	free(p);
	if (err) {
		if (err->code != -ECANCELED || !vm->hsd->stopping)
			cb(vm, err, pud);
		return;
	}
	size_t i;
	json_t *cpu;
	vm->n_vcpu_tids = 0;
	json_array_foreach (json_object_get(reply, "return"), i, cpu) {
		json_int_t idx = json_integer_value(json_object_get(cpu, "cpu-index"));
		json_int_t tid = json_integer_value(json_object_get(cpu, "thread-id"));
		if (idx >= 0 && idx < VM_MAX_CPUS && tid > 0) {
			vm->vcpu_tids[idx] = (pid_t)tid;
			if ((unsigned)idx + 1 > vm->n_vcpu_tids)
				vm->n_vcpu_tids = (unsigned)idx + 1;
		}
	}
	HsError e;
	int r = pinning_apply(vm, &vm->spec, &e);
	if (r == 0)
		pinning_place_threads(vm, &vm->spec);
	cb(vm, r < 0 ? &e : NULL, pud);
}

int pinning_start(Vm *vm, VmDoneCb cb, void *ud, HsError *err)
{
	PinCtx *p = calloc(1, sizeof(*p));
	if (!p)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	*p = (PinCtx){.vm = vm, .cb = cb, .ud = ud};
	if (qmp_client_execute(vm->qmp, "query-cpus-fast", NULL, vm->hsd->qmp_timeout, on_cpus,
			       p) < 0) {
		free(p);
		return hs_error_set(err, -ENOTCONN, "vm-exited", "QMP is gone");
	}
	return 0;
}

/* The host block device a disk's I/O goes to: a block device's own
 * number, or the device of the file system holding the file (managed
 * disks: the VM's state directory). */
static int disk_device(const Vm *vm, const VmDisk *d, unsigned *major_, unsigned *minor_)
{
	struct stat st;
	int r = d->managed ? fstat(vm->state_dirfd, &st) : stat(d->path, &st);
	if (r < 0)
		return -errno;
	dev_t dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	return cgroup_io_device(vm->hsd->host.rootfd, major(dev), minor(dev), major_, minor_);
}

/* The tighter of a direction's own limit and the total (0: none). */
static uint64_t tighter(uint64_t dir, uint64_t total)
{
	return !dir ? total : !total ? dir : dir < total ? dir : total;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

/* io.max, the kernel's backstop under QEMU's exact per-disk throttling:
 * one line per host block device the VM's disks are on. A direction is
 * capped there only when every disk of the VM on that device caps it, at
 * the sum of their rates (io.max has no bursts and no totals: a total
 * caps each direction). Disks on no block device (tmpfs, overlayfs) have
 * none. */
static void io_limits(const Vm *vm, const VmSpec *s, CgroupLimits *l)
{
	/* [device][rbps, wbps, riops, wiops]; UINT64_MAX marks "uncapped". */
	uint64_t sum[CGROUP_MAX_IO][4];
	for (size_t i = 0; i < s->n_disks && vm; i++) {
		const VmDiskLimits *dl = &s->disks[i].limits;
		unsigned ma, mi;
		if (disk_device(vm, &s->disks[i], &ma, &mi) < 0)
			continue;
		size_t k = 0;
		while (k < l->n_io && (l->io[k].major != ma || l->io[k].minor != mi))
			k++;
		if (k == l->n_io) {
			if (k == CGROUP_MAX_IO)
				continue;
			l->io[l->n_io++] = (CgroupIoLimit){.major = ma, .minor = mi};
			memset(sum[k], 0, sizeof(sum[k]));
		}
		const uint64_t v[4] = {tighter(dl->bps[1], dl->bps[0]), tighter(dl->bps[2], dl->bps[0]),
				       tighter(dl->iops[1], dl->iops[0]),
				       tighter(dl->iops[2], dl->iops[0])};
		for (size_t j = 0; j < 4; j++)
			sum[k][j] = !v[j] || sum[k][j] == UINT64_MAX ? UINT64_MAX
								       : sat_add(sum[k][j], v[j]);
	}
	size_t n = 0;
	for (size_t k = 0; k < l->n_io; k++) {
		CgroupIoLimit *a = &l->io[k];
		uint64_t *f[4] = {&a->rbps, &a->wbps, &a->riops, &a->wiops};
		bool any = false;
		for (size_t j = 0; j < 4; j++) {
			*f[j] = sum[k][j] == UINT64_MAX ? 0 : sum[k][j];
			any |= *f[j] != 0;
		}
		if (any)
			l->io[n++] = *a;
	}
	l->n_io = n;
}

void vm_cgroup_limits(const Vm *vm, const VmSpec *s, CgroupLimits *l)
{
	memset(l, 0, sizeof(*l));
	/* percent of one CPU per 100 ms period */
	l->cpu_quota_us = (uint64_t)s->cpu_max_pct * 1000;
	l->cpu_period_us = s->cpu_max_pct ? 100000 : 0;
	l->cpu_weight = s->cpu_weight;
	if (s->memory_overhead_mib) {
		l->memory_max = (s->memory_mib + s->memory_overhead_mib) << 20;
		l->memory_high = (s->memory_mib + s->memory_overhead_mib * 3 / 4) << 20;
	}
	l->pids_max = s->pids_max;
	io_limits(vm, s, l);
	/* The emulator threads' cpuset: their pin, else the placement's CPUs
	 * and nodes. */
	if (s->emulator_pin)
		snprintf(l->cpuset_cpus, sizeof(l->cpuset_cpus), "%s", s->emulator_pin);
	if (vm && vm->placement) {
		const PlacementVm *p = vm->placement;
		if (!s->emulator_pin &&
		    numa_format_cpulist(p->cpus, NUMA_MAX_CPUS, l->cpuset_cpus,
					sizeof(l->cpuset_cpus)) < 0)
			l->cpuset_cpus[0] = '\0';
		size_t len = 0;
		for (unsigned i = 0; i < p->n_nodes && len < sizeof(l->cpuset_mems); i++)
			len += (size_t)snprintf(l->cpuset_mems + len, sizeof(l->cpuset_mems) - len,
						"%s%u", i ? "," : "", p->nodes[i]);
		if (len >= sizeof(l->cpuset_mems))
			l->cpuset_mems[0] = '\0';
	}
}

/* Threads of a pinned or placed VM sit in threaded sub-groups of its
 * cgroup: vCPU N in "vcpuN" (cpuset: its pin; "" inherits), every other
 * thread in "emu" (cpuset from the VM's limits). Threads QEMU makes later
 * start in the group of the thread making them: the main one, in emu. */
static int place_thread(Vm *vm, pid_t tid, const void *ud, HsError *err)
{
	const VmSpec *s = ud;
	char sub[16] = "emu";
	const char *cpus = NULL;
	for (unsigned i = 0; i < vm->n_vcpu_tids && i < s->cpus; i++)
		if (vm->vcpu_tids[i] == tid) {
			snprintf(sub, sizeof(sub), "vcpu%u", i);
			cpus = s->vcpu_pins[i] ? s->vcpu_pins[i] : "";
		}
	HsError e;
	if (cgroup_vm_place_thread(&vm->hsd->cgroup, s->name, sub, tid, cpus, &e) < 0 &&
	    e.code != -ESRCH)
		log_warning("vm %s: thread %d not in its cgroup's %s: %s", s->name, (int)tid, sub,
			    e.message);
	return 0;
}

void pinning_place_threads(Vm *vm, const VmSpec *spec)
{
	if (!vm->hsd->has_cgroup || !vm->n_vcpu_tids || !vm->status.pid)
		return;
	HsError e;
	if (for_each_qemu_thread(vm, place_thread, spec, &e) < 0)
		log_warning("vm %s: threads not placed in cgroups: %s", spec->name, e.message);
}
