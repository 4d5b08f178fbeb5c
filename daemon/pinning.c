/* SPDX-License-Identifier: Apache-2.0 */
/* vCPU and emulator thread pinning: the vCPU thread ids come from QMP
 * (query-cpus-fast), the affinity is set with sched_setaffinity (hsd is
 * root; QEMU's threads are another user's), and every other thread of
 * QEMU gets the emulator set. Threads QEMU makes later inherit from the
 * thread that makes them (the main one: the emulator set). */
#include <sched.h>
#include <string.h>

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

static void place_vcpu_threads(Vm *vm);

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
		place_vcpu_threads(vm);
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

void vm_cgroup_limits(const VmSpec *s, CgroupLimits *l)
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
}

/* vCPU threads with pins go into threaded sub-groups "vcpuN" of the VM's
 * group, whose cpuset follows the pin (where the host has cpuset). */
static void place_vcpu_threads(Vm *vm)
{
	Hsd *h = vm->hsd;
	if (!h->has_cgroup)
		return;
	for (unsigned i = 0; i < vm->spec.cpus && i < vm->n_vcpu_tids; i++) {
		if (!vm->spec.vcpu_pins[i])
			continue;
		char sub[16];
		HsError e;
		snprintf(sub, sizeof(sub), "vcpu%u", i);
		int r = cgroup_vm_place_thread(&h->cgroup, vm->spec.name, sub, vm->vcpu_tids[i],
					       vm->spec.vcpu_pins[i], &e);
		if (r < 0)
			log_warning("vm %s: vCPU %u not in its cgroup: %s", vm->spec.name, i,
				    e.message);
	}
}
