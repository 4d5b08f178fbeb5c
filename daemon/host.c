/* SPDX-License-Identifier: Apache-2.0 */
/* What the host offers: QEMU version and features, KVM (and why not),
 * CPU, memory, NUMA nodes, KSM. Probed once at start (blocking, before the
 * loop runs); memory figures refreshed on each request. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <spawn.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "hsd.h"
#include "ksm.h"
#include "numa.h"

extern char **environ;

/* Runs argv (no shell), returns up to size-1 bytes of its stdout. */
static int run_capture(char *const argv[], char *buf, size_t size)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		return -r;
	}
	size_t len = 0;
	for (;;) {
		char tmp[4096];
		ssize_t n = read(p[0], tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = (size_t)n;
		if (len + take > size - 1)
			take = size - 1 - len;
		memcpy(buf + len, tmp, take);
		len += take;
	}
	buf[len] = '\0';
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static void probe_kvm(HostInfo *host)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		host->kvm_usable = false;
		snprintf(host->kvm_reason, sizeof(host->kvm_reason),
			 errno == ENOENT ? "/dev/kvm does not exist (no hardware virtualisation, "
					   "or the kvm module is not loaded)"
					 : "cannot open /dev/kvm: %s",
			 strerror(errno));
		return;
	}
	int v = ioctl(fd, KVM_GET_API_VERSION, 0);
	close(fd);
	if (v != KVM_API_VERSION) {
		host->kvm_usable = false;
		snprintf(host->kvm_reason, sizeof(host->kvm_reason),
			 "/dev/kvm has API version %d, want %d", v, KVM_API_VERSION);
		return;
	}
	host->kvm_usable = true;
	snprintf(host->kvm_reason, sizeof(host->kvm_reason), "/dev/kvm opens, API version %d", v);
}

void host_check_kvm_for(HostInfo *host, const QemuUser *user)
{
	snprintf(host->qemu_user, sizeof(host->qemu_user), "%s", user->change ? user->name : "");
	if (!host->kvm_usable || !user->change)
		return;
	struct stat st;
	if (stat("/dev/kvm", &st) < 0)
		return;
	bool ok = (st.st_mode & 0006) == 0006 || (st.st_uid == user->uid && (st.st_mode & 0600) == 0600);
	bool in_group = st.st_gid == user->gid;
	for (size_t i = 0; i < user->n_groups; i++)
		in_group |= st.st_gid == user->groups[i];
	ok |= in_group && (st.st_mode & 0060) == 0060;
	if (ok)
		return;
	host->kvm_usable = false;
	snprintf(host->kvm_reason, sizeof(host->kvm_reason),
		 "/dev/kvm is mode %04o owned by %u:%u, so QEMU (user '%s') cannot open it; "
		 "the usual udev rule makes it 0660 root:kvm, and hsd puts '%s' in group kvm",
		 (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
		 user->name, user->name);
}

uint64_t host_process_rss(int rootfd, pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "proc/%d/status", (int)pid);
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) < 0)
		return 0;
	const char *p = strstr(buf, "VmRSS:");
	unsigned long long kb;
	return p && sscanf(p, "VmRSS: %llu kB", &kb) == 1 ? kb * 1024 : 0;
}

int host_read_meminfo(int rootfd, uint64_t *ret_total, uint64_t *ret_available)
{
	char buf[8192];
	unsigned long long total, avail;
	int r = hs_read_small(rootfd, "proc/meminfo", buf, sizeof(buf));
	if (r < 0)
		return r;
	const char *t = strstr(buf, "MemTotal:"), *a = strstr(buf, "MemAvailable:");
	if (!t || !a || sscanf(t, "MemTotal: %llu kB", &total) != 1 ||
	    sscanf(a, "MemAvailable: %llu kB", &avail) != 1)
		return -EINVAL;
	*ret_total = total * 1024;
	*ret_available = avail * 1024;
	return 0;
}

void host_refresh(HostInfo *host)
{
	host_read_meminfo(host->rootfd, &host->mem_total, &host->mem_available);
	if (ksm_read_stats(host->rootfd, &host->ksm) < 0)
		host->ksm.present = false;
	if (numa_read_topology(host->rootfd, &host->numa) < 0)
		host->numa.n_nodes = 0;
	vfio_probe_host(host->rootfd, &host->vfio);
}

void host_probe(HostInfo *host, const char *qemu_binary)
{
	static char out[65536];
	snprintf(host->qemu_binary, sizeof(host->qemu_binary), "%s", qemu_binary);

	char *const vargv[] = {(char *)qemu_binary, (char *)"--version", NULL};
	if (run_capture(vargv, out, sizeof(out)) == 0) {
		const char *p = strstr(out, "version ");
		if (p)
			sscanf(p + 8, "%63s", host->qemu_version);
	}
	char *const hargv[] = {(char *)qemu_binary, (char *)"-help", NULL};
	if (run_capture(hargv, out, sizeof(out)) == 0)
		host->qemu_sandbox = strstr(out, "\n-sandbox") != NULL;

	probe_kvm(host);

	_cleanup_fclose_ FILE *f = fopen("/proc/cpuinfo", "re");
	char line[512];
	host->cpus = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "processor", 9))
			host->cpus++;
		else if (!host->cpu_model[0] && !strncmp(line, "model name", 10)) {
			char *c = strchr(line, ':');
			if (c) {
				c += 2;
				c[strcspn(c, "\n")] = '\0';
				snprintf(host->cpu_model, sizeof(host->cpu_model), "%s", c);
			}
		}
	}
	host_refresh(host);
}

/* Huge page pools, by size: the host's (with h: its reservations, and the
 * pages hsd's active VMs are backed by) or a node's. */
static json_t *hugepage_pools_json(const NumaHugepages *pools, unsigned n, Hsd *h)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < n && i < NUMA_MAX_HUGEPAGE_SIZES; i++) {
		const NumaHugepages *p = &pools[i];
		char sz[16];
		json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "size",
				      vm_hugepages_to_string(p->size, sz, sizeof(sz)), "size_bytes",
				      (json_int_t)p->size, "total", (json_int_t)p->nr, "free",
				      (json_int_t)p->free);
		if (h) {
			uint64_t vm_pages = 0;
			for (Vm *vm = h->vms; vm; vm = vm->next)
				if (vm_state_is_active(vm->status.state) &&
				    vm->spec.hugepage_size == p->size)
					vm_pages += (vm->spec.memory_mib << 20) / p->size;
			json_object_set_new(o, "reserved", json_integer((json_int_t)p->resv));
			json_object_set_new(o, "vm_pages", json_integer((json_int_t)vm_pages));
		}
		json_array_append_new(a, o);
	}
	return a;
}

json_t *host_to_json(const HostInfo *host, Hsd *h)
{
	unsigned counts[_VM_STATE_MAX] = {0};
	uint64_t nominal = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		counts[vm->status.state]++;
		if (vm_state_is_active(vm->status.state))
			nominal += vm->spec.memory_mib << 20;
	}
	json_t *states = json_object();
	for (int i = 0; i < _VM_STATE_MAX; i++)
		json_object_set_new(states, vm_state_to_string((VmState)i),
				    json_integer(counts[i]));
	json_t *nodes = json_array();
	for (unsigned i = 0; i < host->numa.n_nodes; i++) {
		const NumaNode *n = &host->numa.nodes[i];
		json_t *node = json_pack("{s:i, s:i, s:I, s:I}", "id", (int)n->id, "cpus",
					 (int)n->n_cpus, "memory_bytes", (json_int_t)n->mem_total,
					 "free_bytes", (json_int_t)n->mem_free);
		json_object_set_new(node, "hugepages",
				    hugepage_pools_json(n->hugepages, n->n_hugepage_sizes, NULL));
		json_array_append_new(nodes, node);
	}
	uint64_t committed = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		if (vm_state_is_active(vm->status.state) || vm->pacing)
			committed += vm->spec.memory_mib << 20;
	json_t *overcommit = json_pack("{s:f, s:I, s:I}", "ratio", h->overcommit, "limit_bytes",
				       (json_int_t)(h->overcommit * (double)host->mem_total),
				       "committed_bytes", (json_int_t)committed);
	json_t *iommu = json_pack("{s:b, s:i, s:i, s:b, s:s}", "enabled", host->vfio.iommu_on, "units",
				  (int)host->vfio.iommu_units, "groups", (int)host->vfio.iommu_groups,
				  "vfio_pci_loaded", host->vfio.vfio_pci_loaded, "advice",
				  host->vfio.advice);
	json_t *allowed = json_array();
	for (size_t i = 0; i < h->allowed.n; i++)
		json_array_append_new(allowed, json_string(h->allowed.dirs[i]));
	const KsmStats *k = &host->ksm;
	json_t *ksm = json_pack("{s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:I}", "present", k->present,
				"run", k->run, "pages_shared", (json_int_t)k->pages_shared,
				"pages_sharing", (json_int_t)k->pages_sharing, "pages_unshared",
				(json_int_t)k->pages_unshared, "pages_to_scan",
				(json_int_t)k->pages_to_scan, "sleep_millisecs",
				(json_int_t)k->sleep_millisecs, "saved_bytes",
				(json_int_t)ksm_saved_bytes(k, sysconf(_SC_PAGESIZE)));
	char ctl[128];
	json_t *cgroup = h->has_cgroup
				 ? json_pack("{s:b, s:s+, s:s, s:b, s:s, s:s}", "enabled", 1, "mount", "/",
					     h->cgroup.mount, "base", h->cgroup.base, "delegated",
					     h->cgroup.delegated, "controllers",
					     cgroup_controllers_format(h->cgroup.controllers, ctl,
								       sizeof(ctl)),
					     "missing", h->cgroup.missing)
				 : json_pack("{s:b, s:s}", "enabled", 0, "missing",
					     "no cgroup v2 mount found");
	json_t *out = json_pack("{s:s, s:{s:s, s:s, s:b, s:s}, s:{s:b, s:s}, s:{s:s, s:i}, s:{s:I, s:I, "
			 "s:I}, s:o, s:o, s:i, s:o, s:o, s:{s:i, s:o}, s:{s:s, s:s, s:s, s:o}}",
			 "hsd_version", HS_VERSION, "qemu", "binary", host->qemu_binary, "version",
			 host->qemu_version, "sandbox", host->qemu_sandbox, "user",
			 host->qemu_user[0] ? host->qemu_user : "(hsd's own)", "kvm", "usable",
			 host->kvm_usable, "reason", host->kvm_reason, "cpu", "model",
			 host->cpu_model, "count", (int)host->cpus, "memory", "total_bytes",
			 (json_int_t)host->mem_total, "available_bytes",
			 (json_int_t)host->mem_available, "vm_nominal_bytes", (json_int_t)nominal,
			 "overcommit", overcommit, "iommu", iommu, "numa_nodes", (int)host->numa.n_nodes, "numa", nodes, "ksm", ksm, "vms",
			 "total", (int)h->n_vms, "by_state", states, "paths", "state_dir",
			 h->state_dir, "run_dir", h->run_dir, "socket", h->socket_path,
			 "allowed_dirs", allowed);
	json_object_set_new(out, "cgroup", cgroup);
	json_object_set_new(out, "hugepages",
			    hugepage_pools_json(host->numa.hugepages, host->numa.n_hugepage_sizes, h));
	return out;
}
