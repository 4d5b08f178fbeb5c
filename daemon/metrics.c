/* SPDX-License-Identifier: Apache-2.0 */
/* GET /metrics: Prometheus text exposition. QEMU's figures (block stats,
 * vCPU thread ids) are collected every few seconds with asynchronous QMP
 * calls and cached; a scrape only reads the cache and /proc, so a slow or
 * frozen QEMU never delays it: its QMP-based series are simply left out
 * once stale (hsd_vm_stats_age_seconds tells). */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>

#include "hsd.h"

#define COLLECT_EVERY 5.0
#define COLLECT_TIMEOUT 2.0
#define STALE_AFTER 30.0

void metrics_vm_reset(Vm *vm)
{
	json_decref(vm->blockstats);
	vm->blockstats = NULL;
	vm->stats_time = 0;
	vm->n_vcpu_tids = 0;
}

static void on_blockstats(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	vm->stats_inflight = false;
	if (err)
		return;
	json_decref(vm->blockstats);
	vm->blockstats = json_incref(json_object_get(reply, "return"));
	double now = hs_now();
	vm->qmp_rtt = now - vm->stats_sent;
	vm->stats_time = now;
}

static void on_cpus(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	if (err)
		return;
	size_t i;
	json_t *cpu;
	vm->n_vcpu_tids = 0;
	json_array_foreach (json_object_get(reply, "return"), i, cpu) {
		if (vm->n_vcpu_tids >= VM_MAX_CPUS)
			break;
		json_int_t tid = json_integer_value(json_object_get(cpu, "thread-id"));
		if (tid > 0)
			vm->vcpu_tids[vm->n_vcpu_tids++] = (pid_t)tid;
	}
}

/* A QEMU an older hsd started has no nics.json (network.c) telling its
 * taps' names: QEMU's descriptors tell them (fdinfo of a tun fd has "iff:
 * NAME"), in NIC order, a multi-queue tap's several times in a row. */
static void find_taps(Hsd *h, Vm *vm)
{
	bool want = false;
	for (size_t i = 0; i < vm->spec.n_nics; i++)
		want |= (vm->spec.nics[i].type == VM_NIC_BRIDGE ||
			 vm->spec.nics[i].type == VM_NIC_NETWORK) &&
			!vm->tap_names[i][0];
	if (!want)
		return;
	char path[64];
	snprintf(path, sizeof(path), "proc/%d/fdinfo", (int)vm->status.pid);
	int dfd = openat(h->host.rootfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	int fds[VM_MAX_NICS];
	char names[VM_MAX_NICS][16];
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < VM_MAX_NICS) {
		char buf[1024];
		if (de->d_name[0] == '.' || hs_read_small(dirfd(d), de->d_name, buf, sizeof(buf)) < 0)
			continue;
		char *iff = strstr(buf, "iff:");
		if (!iff || sscanf(iff + 4, " %15s", names[n]) != 1)
			continue;
		fds[n++] = atoi(de->d_name);
	}
	closedir(d);
	/* fd order is NIC order (hsd passed them so) */
	for (size_t a = 0; a < n; a++)
		for (size_t b = a + 1; b < n; b++)
			if (fds[b] < fds[a]) {
				int t = fds[a];
				fds[a] = fds[b];
				fds[b] = t;
				char tn[16];
				memcpy(tn, names[a], 16);
				memcpy(names[a], names[b], 16);
				memcpy(names[b], tn, 16);
			}
	size_t k = 0;
	for (size_t i = 0; i < vm->spec.n_nics && k < n; i++) {
		if (vm->spec.nics[i].type != VM_NIC_BRIDGE && vm->spec.nics[i].type != VM_NIC_NETWORK)
			continue;
		snprintf(vm->tap_names[i], sizeof(vm->tap_names[i]), "%s", names[k]);
		while (k < n && !strcmp(names[k], vm->tap_names[i]))
			k++; /* its other queues */
	}
}

static void collect(Hsd *h)
{
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm->qmp || !vm->qmp_ready || vm->stats_inflight)
			continue;
		if (vm->n_vcpu_tids == 0)
			qmp_client_execute(vm->qmp, "query-cpus-fast", NULL, COLLECT_TIMEOUT, on_cpus,
					   vm);
		vm->stats_sent = hs_now();
		if (qmp_client_execute(vm->qmp, "query-blockstats", NULL, COLLECT_TIMEOUT,
				       on_blockstats, vm) == 0)
			vm->stats_inflight = true;
		find_taps(h, vm);
	}
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	collect(w->data);
}

void metrics_init(Hsd *h)
{
	ev_timer_init(&h->metrics_timer, on_timer, 1., COLLECT_EVERY);
	h->metrics_timer.data = h;
	ev_timer_start(h->loop, &h->metrics_timer);
}

void metrics_free(Hsd *h)
{
	ev_timer_stop(h->loop, &h->metrics_timer);
}

/* ---- exposition ---- */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int read_u64_at(int rootfd, const char *path, uint64_t *ret)
{
	char buf[64];
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) < 0)
		return -1;
	*ret = strtoull(buf, NULL, 10);
	return 0;
}

/* utime+stime (ticks) and run-queue wait (ns) of one task. */
static int task_times(int rootfd, pid_t pid, pid_t tid, uint64_t *ret_ticks, uint64_t *ret_wait)
{
	char path[96], buf[1024];
	snprintf(path, sizeof(path), "proc/%d/task/%d/stat", (int)pid, (int)tid);
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) < 0)
		return -1;
	char *p = strrchr(buf, ')');
	unsigned long long ut, st;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return -1;
	*ret_ticks = ut + st;
	*ret_wait = 0;
	snprintf(path, sizeof(path), "proc/%d/task/%d/schedstat", (int)pid, (int)tid);
	unsigned long long run, wait;
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) == 0 &&
	    sscanf(buf, "%llu %llu", &run, &wait) == 2)
		*ret_wait = wait;
	return 0;
}


static void vm_series(Hsd *h, FILE *f, int pass)
{
	double tck = (double)sysconf(_SC_CLK_TCK);
	long page = sysconf(_SC_PAGESIZE);
	double now = hs_now();
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		const char *n = vm->spec.name;
		bool active = vm_state_is_active(vm->status.state) && vm->status.pid > 0;
		switch (pass) {
		case 0:
			fprintf(f, "hsd_vm_info{vm=\"%s\",state=\"%s\",accel=\"%s\"} 1\n", n,
				vm_state_to_string(vm->status.state),
				vm_accel_to_string(vm->spec.accel));
			break;
		case 1:
			fprintf(f, "hsd_vm_running{vm=\"%s\"} %d\n", n,
				vm->status.state == VM_STATE_RUNNING);
			break;
		case 2:
			fprintf(f, "hsd_vm_vcpus{vm=\"%s\"} %u\n", n, vm->spec.cpus);
			break;
		case 3:
			fprintf(f, "hsd_vm_memory_nominal_bytes{vm=\"%s\"} %" PRIu64 "\n", n,
				vm->spec.memory_mib << 20);
			break;
		case 4:
			if (active)
				fprintf(f, "hsd_vm_memory_rss_bytes{vm=\"%s\"} %" PRIu64 "\n", n,
					host_process_rss(h->host.rootfd, vm->status.pid));
			break;
		case 5:
		case 6:
			for (unsigned i = 0; active && i < vm->n_vcpu_tids; i++) {
				uint64_t ticks, wait;
				if (task_times(h->host.rootfd, vm->status.pid, vm->vcpu_tids[i],
					       &ticks, &wait) < 0)
					continue;
				if (pass == 5)
					fprintf(f,
						"hsd_vm_cpu_seconds_total{vm=\"%s\",vcpu=\"%u\"} %.2f\n",
						n, i, (double)ticks / tck);
				else
					fprintf(f,
						"hsd_vm_vcpu_wait_seconds_total{vm=\"%s\",vcpu=\"%u\"} "
						"%.6f\n",
						n, i, (double)wait / 1e9);
			}
			break;
		case 7:
			if (active) {
				KsmProcess p = {0};
				if (ksm_read_process(h->host.rootfd, vm->status.pid, &p) == 0 &&
				    p.present)
					fprintf(f, "hsd_vm_ksm_merging_bytes{vm=\"%s\"} %" PRIu64 "\n",
						n, p.merging_pages * (uint64_t)page);
			}
			break;
		case 8:
			if (active && vm->stats_time > 0)
				fprintf(f, "hsd_vm_stats_age_seconds{vm=\"%s\"} %.3f\n", n,
					now - vm->stats_time);
			break;
		case 9:
			if (active && vm->stats_time > 0 && now - vm->stats_time < STALE_AFTER)
				fprintf(f, "hsd_vm_qmp_rtt_seconds{vm=\"%s\"} %.6f\n", n,
					vm->qmp_rtt);
			break;
		default:
			break;
		}
	}
}

/* Block statistics from the cached query-blockstats. */
static void block_series(Hsd *h, FILE *f, const char *metric, const char *key, double scale)
{
	double now = hs_now();
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm_state_is_active(vm->status.state) || !vm->blockstats ||
		    now - vm->stats_time >= STALE_AFTER)
			continue;
		size_t i;
		json_t *dev;
		json_array_foreach (vm->blockstats, i, dev) {
			const char *id = json_string_value(json_object_get(dev, "qdev"));
			json_t *st = json_object_get(dev, "stats");
			json_t *v = json_object_get(st, key);
			if (!id || !v)
				continue;
			/* "/machine/peripheral/disk0/virtio-backend" -> disk0 */
			char disk[64];
			const char *p = strstr(id, "/peripheral/");
			snprintf(disk, sizeof(disk), "%s", p ? p + 12 : id);
			disk[strcspn(disk, "/")] = '\0';
			fprintf(f, "%s{vm=\"%s\",disk=\"%s\"} %.9g\n", metric, vm->spec.name, disk,
				(double)json_integer_value(v) * scale);
		}
	}
}

static void net_series(Hsd *h, FILE *f, const char *metric, const char *stat)
{
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm_state_is_active(vm->status.state))
			continue;
		for (size_t i = 0; i < vm->spec.n_nics; i++) {
			if (!vm->tap_names[i][0])
				continue;
			char path[128];
			uint64_t v;
			snprintf(path, sizeof(path), "sys/class/net/%s/statistics/%s",
				 vm->tap_names[i], stat);
			if (read_u64_at(h->host.rootfd, path, &v) == 0)
				fprintf(f, "%s{vm=\"%s\",nic=\"%s\"} %" PRIu64 "\n", metric,
					vm->spec.name, vm->spec.nics[i].id, v);
		}
	}
}

void metrics_reply(Hsd *h, HttpRequest *req)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f) {
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	host_refresh(&h->host);
	unsigned counts[_VM_STATE_MAX] = {0};
	uint64_t nominal = 0, committed = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		counts[vm->status.state]++;
		if (vm_state_is_active(vm->status.state))
			nominal += vm->spec.memory_mib << 20;
		if (vm_state_is_active(vm->status.state) || vm->pacing)
			committed += vm->spec.memory_mib << 20;
	}
	family(f, "hsd_info", "gauge", "hsd's version.");
	fprintf(f, "hsd_info{version=\"%s\",qemu=\"%s\"} 1\n", HS_VERSION, h->host.qemu_version);
	family(f, "hsd_vms", "gauge", "VMs by state.");
	for (int i = 0; i < _VM_STATE_MAX; i++)
		fprintf(f, "hsd_vms{state=\"%s\"} %u\n", vm_state_to_string((VmState)i), counts[i]);
	family(f, "hsd_host_memory_total_bytes", "gauge", "Host memory (MemTotal).");
	fprintf(f, "hsd_host_memory_total_bytes %" PRIu64 "\n", h->host.mem_total);
	family(f, "hsd_host_memory_available_bytes", "gauge", "Host MemAvailable.");
	fprintf(f, "hsd_host_memory_available_bytes %" PRIu64 "\n", h->host.mem_available);
	family(f, "hsd_host_vm_memory_nominal_bytes", "gauge",
	       "Guest memory of the VMs that run (nominal).");
	fprintf(f, "hsd_host_vm_memory_nominal_bytes %" PRIu64 "\n", nominal);
	family(f, "hsd_host_vm_memory_committed_bytes", "gauge",
	       "Guest memory committed: running VMs and starts waiting for memory.");
	fprintf(f, "hsd_host_vm_memory_committed_bytes %" PRIu64 "\n", committed);
	family(f, "hsd_host_overcommit_limit_bytes", "gauge",
	       "Most guest memory hsd admits (--overcommit x host memory).");
	fprintf(f, "hsd_host_overcommit_limit_bytes %.0f\n",
		h->overcommit * (double)h->host.mem_total);
	family(f, "hsd_vm_starts_waiting", "gauge", "Starts held back until memory is there.");
	fprintf(f, "hsd_vm_starts_waiting %u\n", vm_count_pacing(h));

	KsmStats k;
	long page = sysconf(_SC_PAGESIZE);
	if (ksm_read_stats(h->host.rootfd, &k) == 0 && k.present) {
		family(f, "hsd_ksm_pages_shared", "gauge", "KSM: shared pages in use.");
		fprintf(f, "hsd_ksm_pages_shared %" PRIu64 "\n", k.pages_shared);
		family(f, "hsd_ksm_pages_sharing", "gauge", "KSM: page sites sharing them.");
		fprintf(f, "hsd_ksm_pages_sharing %" PRIu64 "\n", k.pages_sharing);
		family(f, "hsd_ksm_saved_bytes", "gauge", "Memory saved by KSM.");
		fprintf(f, "hsd_ksm_saved_bytes %" PRIu64 "\n", ksm_saved_bytes(&k, page));
		family(f, "hsd_ksm_full_scans_total", "counter", "KSM full scans.");
		fprintf(f, "hsd_ksm_full_scans_total %" PRIu64 "\n", k.full_scans);
		uint64_t ticks;
		if (h->ksm.ksmd && ksm_read_cpu_ticks(h->host.rootfd, h->ksm.ksmd, &ticks) == 0) {
			family(f, "hsd_ksmd_cpu_seconds_total", "counter", "CPU time of ksmd.");
			fprintf(f, "hsd_ksmd_cpu_seconds_total %.2f\n",
				(double)ticks / (double)sysconf(_SC_CLK_TCK));
		}
	}

	static const struct {
		const char *name, *type, *help;
	} vm_families[] = {
		{"hsd_vm_info", "gauge", "A VM, its state and accelerator."},
		{"hsd_vm_running", "gauge", "1 while the VM runs."},
		{"hsd_vm_vcpus", "gauge", "vCPUs of the VM."},
		{"hsd_vm_memory_nominal_bytes", "gauge", "Guest memory (nominal)."},
		{"hsd_vm_memory_rss_bytes", "gauge", "Resident memory of the VM's QEMU."},
		{"hsd_vm_cpu_seconds_total", "counter", "CPU time of a vCPU thread."},
		{"hsd_vm_vcpu_wait_seconds_total", "counter",
		 "Time a vCPU thread waited for a host CPU (run-queue delay; steal, as the "
		 "guest sees it)."},
		{"hsd_vm_ksm_merging_bytes", "gauge", "Guest memory merged by KSM."},
		{"hsd_vm_stats_age_seconds", "gauge",
		 "Age of the QMP-based figures; QMP-based series are left out past 30 s."},
		{"hsd_vm_qmp_rtt_seconds", "gauge", "Round trip of the last QMP statistics call."},
	};
	for (int pass = 0; pass < (int)ARRAY_SIZE(vm_families); pass++) {
		family(f, vm_families[pass].name, vm_families[pass].type, vm_families[pass].help);
		vm_series(h, f, pass);
	}
	static const struct {
		const char *name, *key, *help;
		double scale;
	} blk[] = {
		{"hsd_vm_block_read_bytes_total", "rd_bytes", "Bytes read by a disk.", 1},
		{"hsd_vm_block_written_bytes_total", "wr_bytes", "Bytes written by a disk.", 1},
		{"hsd_vm_block_read_ops_total", "rd_operations", "Read operations of a disk.", 1},
		{"hsd_vm_block_write_ops_total", "wr_operations", "Write operations of a disk.", 1},
		{"hsd_vm_block_read_time_seconds_total", "rd_total_time_ns",
		 "Time spent reading, per disk.", 1e-9},
		{"hsd_vm_block_write_time_seconds_total", "wr_total_time_ns",
		 "Time spent writing, per disk.", 1e-9},
	};
	for (size_t i = 0; i < ARRAY_SIZE(blk); i++) {
		family(f, blk[i].name, "counter", blk[i].help);
		block_series(h, f, blk[i].name, blk[i].key, blk[i].scale);
	}
	/* A tap's tx is what the guest receives. */
	static const struct {
		const char *name, *stat, *help;
	} net[] = {
		{"hsd_vm_network_receive_bytes_total", "tx_bytes", "Bytes the guest received."},
		{"hsd_vm_network_transmit_bytes_total", "rx_bytes", "Bytes the guest sent."},
		{"hsd_vm_network_receive_packets_total", "tx_packets", "Packets the guest received."},
		{"hsd_vm_network_transmit_packets_total", "rx_packets", "Packets the guest sent."},
	};
	for (size_t i = 0; i < ARRAY_SIZE(net); i++) {
		family(f, net[i].name, "counter", net[i].help);
		net_series(h, f, net[i].name, net[i].stat);
	}
	fclose(f);
	http_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}
