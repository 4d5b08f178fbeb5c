/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl: a thin CLI over hsd's REST API. It builds requests and prints
 * answers; every decision is hsd's. */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "hsctl.h"

static void usage(FILE *f)
{
	fputs("Usage: hsctl [--socket PATH] [--json] COMMAND [ARGS]\n"
	      "\n"
	      "Commands:\n"
	      "  version                     hsctl's and hsd's versions\n"
	      "  host                        QEMU, KVM, CPU, memory, NUMA, huge pages, KSM\n"
	      "  list                        all VMs\n"
	      "  info NAME                   state, pid, uptime, last exit, spec\n"
	      "  create NAME [--memory MiB] [--cpus N] [--accel kvm|tcg] [--machine M]\n"
	      "              [--memory-file]\n"
	      "              [--cpu-model MODEL] [--no-mem-merge] [--balloon SIZE]\n"
	      "              [--balloon-floor SIZE]\n"
	      "              [--kernel F [--initrd F] [--append S]]\n"
	      "              [--template NAME] [--disk-size SIZE] [--disk FILE]...\n"
	      "              [--nic user|none|bridge:BR|network:NET[,vlan=V][,mac=M]\n"
	      "                    [,queues=N][,model=M][,vhost=on|off]]...\n"
	      "              [--from SPEC.json]\n"
	      "              [--cloud-init FILE] [--network-config FILE]\n"
	      "              [--ssh-key FILE] [--hostname H]\n"
	      "              [--agent]       a port for qemu-guest-agent in the guest\n"
	      "              [--vcpu-pin LIST|VCPU:LIST]... [--emulator-pin LIST]\n"
	      "              [--numa-node N] [--hugepages 2M|1G] [--cpu-max PCT]\n"
	      "              [--cpu-weight N] [--memory-overhead SIZE] [--pids-max N]\n"
	      "              [--hostdev DEVICE]... [--hotplug-ports N]\n"
	      "              [--display virtio|qxl|none] [--spice-listen ADDR]\n"
	      "              [--firmware bios|uefi] [--secure-boot] [--tpm]\n"
	      "  set NAME [--balloon SIZE] [--balloon-floor SIZE] [--disk N]\n"
	      "           [--no-limits] [--io-group NAME]\n"
	      "           [--bps-read RATE] [--bps-write RATE] [--bps-total RATE]\n"
	      "           [--bps-read-max RATE] [--bps-write-max RATE] [--bps-total-max RATE]\n"
	      "           [--iops-read N] [--iops-write N] [--iops-total N]\n"
	      "           [--iops-read-max N] [--iops-write-max N] [--iops-total-max N]\n"
	      "                              balloon target, a disk's I/O limits (those\n"
	      "                              given replace the disk's); live if running\n"
	      "  set NAME [--vcpu-pin LIST|VCPU:LIST]... [--emulator-pin LIST] [--no-pin]\n"
	      "                              CPU pinning (replaces the VM's); live if running\n"
	      "  set NAME [--cpu-max PCT|none] [--cpu-weight N|none]\n"
	      "           [--memory-overhead SIZE|none] [--pids-max N|none]\n"
	      "                              cgroup limits (others kept); live if running\n"
	      "  set NAME --hotplug-ports N  spare PCIe ports for hot-plugs (q35; from the\n"
	      "                              next start)\n"
	      "  start NAME [--paused]\n"
	      "  stop NAME [--timeout S] [--force | --agent]\n"
	      "                              --agent: the guest agent's shutdown, not ACPI\n"
	      "  kill|reboot|pause|resume|delete NAME\n"
	      "  qmp NAME JSON               QMP passthrough; prints QEMU's reply\n"
	      "  console NAME [--wait-for TEXT] [--timeout S] [--no-replay]\n"
	      "                              serial console; Ctrl-] detaches\n"
	      "  console NAME --spice [--viewer] [--ttl S]\n"
	      "                              what a SPICE client needs (a URI; on TCP a\n"
	      "                              one-time password); --viewer runs remote-viewer\n"
	      "  events [--vm NAME]          stream of state changes and QMP events\n"
	      "  ksm [--mode auto|off|fixed] [--pages N] [--sleep MS] [--max-cpu F]\n"
	      "                              KSM state, savings per VM; set the policy\n"
	      "  balloon [--mode auto|off] [--low SIZE] [--high SIZE]\n"
	      "                              automatic balloon policy: pressure, what was\n"
	      "                              reclaimed from which VM; set it\n"
	      "  template list               templates: format, sizes, VMs using them\n"
	      "  template show NAME          one template\n"
	      "  template import NAME FILE [--format qcow2|raw]\n"
	      "                              copy an image file into a new template\n"
	      "  template from-vm NAME VM [--disk N | --warm [--stop]]\n"
	      "                              a template from a stopped VM's managed disk;\n"
	      "                              --warm: a running memory_file VM's RAM and\n"
	      "                              devices (resumed after, or --stop)\n"
	      "  template delete NAME        refused while VMs use it\n"
	      "  snapshot list VM            a VM's snapshots, '*' marks the current one\n"
	      "  snapshot create VM SNAP [--memory]\n"
	      "                              snapshot the disks (--memory: and the RAM)\n"
	      "  snapshot rollback VM SNAP   back to SNAP (a running VM restarts)\n"
	      "  snapshot delete VM SNAP     delete SNAP, merging disk layers as needed\n"
	      "  migrate NAME --to DEST [--storage shared|copy] [--address IP]\n"
	      "          [--downtime MS] [--bandwidth RATE] [--multifd N]\n"
	      "          [--auto-converge] [--xbzrle] [--tls] [--postcopy] [--timeout S]\n"
	      "                              live migration to another hsd (DEST: its socket\n"
	      "                              path or ssh://[user@]host[/socket])\n"
	      "  migrate NAME --cancel|--confirm|--abort\n"
	      "                              settle a migration by hand (on the source)\n"
	      "  pci list [--all]            host PCI devices: IOMMU group, driver, holder\n"
	      "  pci attach VM DEVICE [--all-functions|--one-function] [--x-vga]\n"
	      "          [--rom-file F] [--no-rom-bar] [--display off|on|auto]\n"
	      "                              pass a host device (hot-plug if running;\n"
	      "                              DEVICE: 0000:01:00.0 or VENDOR:DEVICE[#N])\n"
	      "  pci detach VM ADDR          unplug it; it goes back to its host driver\n"
	      "  pci release ADDR            give a stopped VM's device back to the host\n"
	      "  network list                networks: type, bridge, parent or PF\n"
	      "  network show NAME           one network, its ports and VFs\n"
	      "  network create NAME --bridge BR [--create] [--vlan-filtering]\n"
	      "  network create NAME --create [--vlan-filtering]\n"
	      "                              a network on a bridge (--create: hsd makes it;\n"
	      "                              alone: bridge hsbr-NAME)\n"
	      "  network create NAME --macvtap PARENT [--mode MODE]\n"
	      "                              macvtap on PARENT (MODE: bridge, vepa,\n"
	      "                              private, passthru)\n"
	      "  network create NAME --sriov PF\n"
	      "                              SR-IOV VFs of PF, passed through with VFIO\n"
	      "  network delete NAME         refused while VMs use it\n"
	      "  sriov list                  SR-IOV PFs, their VFs and who has them\n"
	      "  sriov set PF --numvfs N     how many VFs PF has\n"
	      "  nic list VM                 a VM's NICs (interface, vhost-net when running)\n"
	      "  nic add VM --network NET [--mac MAC] [--model M] [--queues N] [--vlan V]\n"
	      "          [--no-vhost] [--link-down]\n"
	      "                              add a NIC (hot-plug if running)\n"
	      "  nic set VM ID [--link up|down] [--vlan V|none]\n"
	      "                              link state, VLAN (live if running)\n"
	      "  nic del VM ID               remove a NIC (unplug if running)\n"
	      "\n"
	      "Exit codes: 0 ok, 1 error from hsd, 2 usage error, 3 cannot reach hsd.\n",
	      f);
}

int ctl_connect(Ctl *ctl)
{
	if (ctl->connected)
		return 0;
	HsError err = {0};
	if (hs_client_connect(&ctl->client, ctl->socket_path, &err) < 0) {
		fprintf(stderr, "hsctl: %s\n", err.message);
		return -1;
	}
	ctl->connected = true;
	return 0;
}

void ctl_release(Ctl *ctl)
{
	hs_client_close(&ctl->client);
	free(ctl->socket_path);
}

int ctl_report(Ctl *ctl, unsigned status, json_t *body, const HsError *err)
{
	if (err) {
		fprintf(stderr, "hsctl: %s\n", err->message);
		return !strcmp(err->kind, "unreachable") ? EXIT_UNREACHABLE : EXIT_HSD_ERROR;
	}
	json_t *e = json_object_get(body, "error");
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *code = json_string_value(json_object_get(e, "code"));
	if (ctl->json && body) {
		json_dumpf(body, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	}
	fprintf(stderr, "hsctl: %s%s%s (HTTP %u)\n", msg ? msg : "request failed",
		code ? ": " : "", code ? code : "", status);
	return EXIT_HSD_ERROR;
}

int ctl_call(Ctl *ctl, const char *method, const char *path, json_t *body, json_t **ret)
{
	unsigned status;
	return ctl_call_status(ctl, method, path, body, &status, ret);
}

int ctl_call_status(Ctl *ctl, const char *method, const char *path, json_t *body,
		    unsigned *ret_status, json_t **ret)
{
	if (ctl_connect(ctl) < 0)
		return EXIT_UNREACHABLE;
	unsigned status = 0;
	json_t *resp = NULL;
	HsError err = {0};
	if (hs_client_request(&ctl->client, method, path, body, &status, &resp, &err) < 0)
		return ctl_report(ctl, 0, NULL, &err);
	if (status >= 300) {
		int r = ctl_report(ctl, status, resp, NULL);
		json_decref(resp);
		return r;
	}
	*ret_status = status;
	*ret = resp;
	return EXIT_OK;
}

void ctl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
}

static void fmt_duration(double s, char *buf, size_t size)
{
	long t = (long)s;
	if (t >= 86400)
		snprintf(buf, size, "%ldd%ldh", t / 86400, (t % 86400) / 3600);
	else if (t >= 3600)
		snprintf(buf, size, "%ldh%ldm", t / 3600, (t % 3600) / 60);
	else if (t >= 60)
		snprintf(buf, size, "%ldm%lds", t / 60, t % 60);
	else
		snprintf(buf, size, "%lds", t);
}

void ctl_fmt_bytes(double b, char *buf, size_t size)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, size, "%.1f %s", b, u[i]);
}

bool ctl_is_name(const char *s)
{
	return s && *s && *s != '-';
}

static int cmd_version(Ctl *ctl, int argc, char **argv)
{
	json_t *j = NULL;
	int r = ctl_call(ctl, "GET", "/v1", NULL, &j);
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:O?}", "hsctl", HS_VERSION, "hsd",
				      json_object_get(j, "version"));
		ctl_print_json(o);
		json_decref(o);
	} else {
		printf("hsctl %s\n", HS_VERSION);
		if (j)
			printf("hsd %s\n", json_string_value(json_object_get(j, "version")));
	}
	json_decref(j);
	return r;
}

/* The host's huge page pools: "2M: 80 total, 16 free, 0 reserved, 64 for
 * hsd's VMs". */
static void print_hugepages(json_t *pools)
{
	size_t i;
	json_t *p;
	if (!json_array_size(pools)) {
		printf("Huge pages: none\n");
		return;
	}
	json_array_foreach (pools, i, p)
		printf("%s %s: %lld total, %lld free, %lld reserved, %lld in hsd's VMs\n",
		       i ? "           " : "Huge pages:", json_string_value(json_object_get(p, "size")),
		       json_integer_value(json_object_get(p, "total")),
		       json_integer_value(json_object_get(p, "free")),
		       json_integer_value(json_object_get(p, "reserved")),
		       json_integer_value(json_object_get(p, "vm_pages")));
}

static int cmd_host(Ctl *ctl, int argc, char **argv)
{
	if (argc != 1) {
		fputs("hsctl: usage: hsctl host\n", stderr);
		return EXIT_USAGE;
	}
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "GET", "/v1/host", NULL, &j);
	if (r)
		return r;
	if (ctl->json) {
		ctl_print_json(j);
		return 0;
	}
	json_t *q = json_object_get(j, "qemu"), *k = json_object_get(j, "kvm"),
	       *c = json_object_get(j, "cpu"), *m = json_object_get(j, "memory"),
	       *ksm = json_object_get(j, "ksm"), *vms = json_object_get(j, "vms");
	char tot[32], avail[32], nom[32];
	ctl_fmt_bytes(json_number_value(json_object_get(m, "total_bytes")), tot, sizeof(tot));
	ctl_fmt_bytes(json_number_value(json_object_get(m, "available_bytes")), avail,
		      sizeof(avail));
	ctl_fmt_bytes(json_number_value(json_object_get(m, "vm_nominal_bytes")), nom, sizeof(nom));
	printf("hsd:        %s\n", json_string_value(json_object_get(j, "hsd_version")));
	printf("QEMU:       %s (%s)%s\n", json_string_value(json_object_get(q, "version")),
	       json_string_value(json_object_get(q, "binary")),
	       json_is_true(json_object_get(q, "sandbox")) ? ", seccomp sandbox" : "");
	printf("KVM:        %s: %s\n", json_is_true(json_object_get(k, "usable")) ? "usable" : "NOT usable",
	       json_string_value(json_object_get(k, "reason")));
	printf("CPU:        %lld x %s\n", json_integer_value(json_object_get(c, "count")),
	       json_string_value(json_object_get(c, "model")));
	printf("Memory:     %s total, %s available, %s nominal in running VMs\n", tot, avail, nom);
	json_t *oc = json_object_get(j, "overcommit");
	if (oc) {
		char lim[32];
		ctl_fmt_bytes(json_number_value(json_object_get(oc, "limit_bytes")), lim,
			      sizeof(lim));
		printf("Overcommit: up to %.2fx host memory (%s of guest memory)\n",
		       json_number_value(json_object_get(oc, "ratio")), lim);
	}
	json_t *io = json_object_get(j, "iommu");
	if (io && json_is_true(json_object_get(io, "enabled")))
		printf("IOMMU:      on, %lld groups%s\n",
		       json_integer_value(json_object_get(io, "groups")),
		       json_is_true(json_object_get(io, "vfio_pci_loaded")) ? ", vfio-pci loaded" : "");
	else if (io)
		printf("IOMMU:      off: %s\n", json_string_value(json_object_get(io, "advice")));
	printf("NUMA nodes: %lld\n", json_integer_value(json_object_get(j, "numa_nodes")));
	size_t ni;
	json_t *node;
	json_array_foreach (json_object_get(j, "numa"), ni, node) {
		char nm[32];
		ctl_fmt_bytes(json_number_value(json_object_get(node, "memory_bytes")), nm,
			      sizeof(nm));
		printf("  node %lld:   %lld CPUs, %s\n", json_integer_value(json_object_get(node, "id")),
		       json_integer_value(json_object_get(node, "cpus")), nm);
	}
	print_hugepages(json_object_get(j, "hugepages"));
	if (!json_is_true(json_object_get(ksm, "present"))) {
		printf("KSM:        not available in this kernel\n");
	} else {
		char saved[32];
		ctl_fmt_bytes(json_number_value(json_object_get(ksm, "saved_bytes")), saved,
			  sizeof(saved));
		printf("KSM:        %s, %lld pages shared by %lld, %s saved\n",
		       json_integer_value(json_object_get(ksm, "run")) == 1 ? "on" : "off",
		       json_integer_value(json_object_get(ksm, "pages_shared")),
		       json_integer_value(json_object_get(ksm, "pages_sharing")), saved);
	}
	printf("VMs:        %lld\n", json_integer_value(json_object_get(vms, "total")));
	return 0;
}

static int cmd_list(Ctl *ctl, int argc, char **argv)
{
	if (argc != 1) {
		fputs("hsctl: usage: hsctl list\n", stderr);
		return EXIT_USAGE;
	}
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "GET", "/v1/vms", NULL, &j);
	if (r)
		return r;
	if (ctl->json) {
		ctl_print_json(j);
		return 0;
	}
	printf("%-24s %-9s %4s %8s %8s %8s\n", "NAME", "STATE", "CPUS", "MEMORY", "PID", "UPTIME");
	size_t i;
	json_t *vm;
	json_array_foreach (json_object_get(j, "vms"), i, vm) {
		char up[32] = "-", pid[16] = "-", mem[32];
		json_t *u = json_object_get(vm, "uptime_s");
		if (u)
			fmt_duration(json_number_value(u), up, sizeof(up));
		if (json_integer_value(json_object_get(vm, "pid")) > 0)
			snprintf(pid, sizeof(pid), "%lld",
				 json_integer_value(json_object_get(vm, "pid")));
		snprintf(mem, sizeof(mem), "%lldM",
			 json_integer_value(json_object_get(vm, "memory_mib")));
		printf("%-24s %-9s %4lld %8s %8s %8s\n",
		       json_string_value(json_object_get(vm, "name")),
		       json_string_value(json_object_get(vm, "state")),
		       json_integer_value(json_object_get(vm, "cpus")), mem, pid, up);
	}
	return 0;
}

/* A disk hsd made: its template (or blank), size and chain of layers, the
 * VM's writes on top ("storage" of GET /v1/vms/NAME; st may be NULL). */
static void print_managed_disk(size_t idx, json_t *d, json_t *st)
{
	const char *t = json_string_value(json_object_get(st, "template"));
	if (!t)
		t = json_string_value(json_object_get(d, "template"));
	json_t *size = json_object_get(st, "size");
	if (!size)
		size = json_object_get(d, "size");
	char sz[32] = "size unknown";
	if (json_number_value(size) > 0)
		ctl_fmt_bytes(json_number_value(size), sz, sizeof(sz));
	printf("Disk %zu:      %s%s, %s", idx, t ? "template " : "blank", t ? t : "", sz);
	size_t n = json_array_size(json_object_get(st, "chain"));
	if (st)
		printf(", %zu layer%s", n, n == 1 ? "" : "s");
	printf("%s\n", json_is_true(json_object_get(d, "readonly")) ? ", read-only" : "");
}

/* What the guest gets on its first boot. */
static void print_cloud_init(json_t *ci)
{
	const char *ud = json_string_value(json_object_get(ci, "user_data"));
	const char *nc = json_string_value(json_object_get(ci, "network_config"));
	const char *keys = json_string_value(json_object_get(ci, "ssh_key"));
	const char *host = json_string_value(json_object_get(ci, "hostname"));
	unsigned n_keys = 0;
	for (const char *l = keys; l && *l;) {
		size_t len = strcspn(l, "\n");
		size_t sp = strspn(l, " \t");
		if (sp < len && l[sp] != '#')
			n_keys++;
		l += len + (l[len] == '\n');
	}
	printf("Cloud-init:  ");
	if (ud) {
		size_t len = strcspn(ud, "\n");
		printf("user-data %.*s (%zu bytes)", (int)(len > 40 ? 40 : len), ud, strlen(ud));
	} else {
		printf("no user-data");
	}
	if (nc)
		printf(", network-config");
	if (n_keys)
		printf(", %u SSH key%s", n_keys, n_keys == 1 ? "" : "s");
	if (host)
		printf(", hostname %s", host);
	printf("\n");
}

/* The balloon's target, floor and the policy's target, what the guest has
 * while it runs, and the memory statistics it reports. */
static void print_balloon(json_t *vm, json_t *spec)
{
	json_int_t target = json_integer_value(json_object_get(spec, "balloon_mib"));
	json_int_t mem = json_integer_value(json_object_get(spec, "memory_mib"));
	json_t *b = json_object_get(vm, "balloon");
	json_int_t fl = json_integer_value(json_object_get(b, "floor_mib"));
	json_t *actual = json_object_get(vm, "balloon_actual_mib");
	json_t *autot = json_object_get(b, "auto_target_mib"), *st = json_object_get(b, "stats");
	if (target > 0 || fl > 0 || autot || (actual && json_integer_value(actual) < mem)) {
		if (target > 0)
			printf("Balloon:     target %lld MiB", target);
		else
			printf("Balloon:     no target (all %lld MiB)", mem);
		if (fl > 0)
			printf(", floor %lld MiB (automatic policy %s)", fl,
			       json_is_true(json_object_get(b, "auto")) ? "on" : "off");
		if (autot)
			printf(", policy target %lld MiB", json_integer_value(autot));
		if (actual)
			printf(", guest has %lld MiB", json_integer_value(actual));
		printf("\n");
	}
	if (!st)
		return;
	printf("Guest mem:   ");
	const char *sep = "";
	static const char *const keys[] = {"free_mib", "available_mib", "total_mib",
					   "disk_caches_mib"};
	static const char *const words[] = {"free", "available", "total", "caches"};
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		json_t *v = json_object_get(st, keys[i]);
		if (v) {
			printf("%s%s %lld MiB", sep, words[i], json_integer_value(v));
			sep = ", ";
		}
	}
	json_t *maj = json_object_get(st, "major_faults");
	if (maj)
		printf("%s%lld major faults", sep, json_integer_value(maj));
	printf(" (%.0f s ago)\n", json_number_value(json_object_get(st, "age_s")));
}

/* A running VM's SPICE server: hsd's socket, and its TCP address with
 * display.listen ("[v6]:port" for an IPv6 one). */
static void print_spice(json_t *sp)
{
	const char *sock = json_string_value(json_object_get(sp, "socket"));
	if (!sock)
		return;
	printf("SPICE:       %s", sock);
	const char *host = json_string_value(json_object_get(sp, "host"));
	json_int_t port = json_integer_value(json_object_get(sp, "port"));
	if (host && port > 0) {
		bool v6 = strchr(host, ':') != NULL;
		printf(", TCP %s%s%s:%lld (password: hsctl console --spice)", v6 ? "[" : "", host,
		       v6 ? "]" : "", (long long)port);
	}
	printf("\n");
}

/* "Firmware: UEFI, Secure Boot (OVMF_CODE_4M.secboot.fd)" and "TPM: 2.0 (swtpm pid N)". */
static void print_firmware(json_t *fw)
{
	if (!fw)
		return;
	const char *type = json_string_value(json_object_get(fw, "type"));
	if (type && !strcmp(type, "uefi"))
		printf("Firmware:    UEFI%s (%s)\n",
		       json_is_true(json_object_get(fw, "secure_boot")) ? ", Secure Boot" : "",
		       json_string_value(json_object_get(fw, "code")));
	json_t *tpm = json_object_get(fw, "tpm");
	if (!tpm)
		return;
	printf("TPM:         %s", json_string_value(json_object_get(tpm, "version")));
	if (json_is_true(json_object_get(tpm, "running")))
		printf(" (swtpm pid %lld)", json_integer_value(json_object_get(tpm, "swtpm_pid")));
	printf("\n");
}

/* What the guest agent said (the VM's "agent"), when it answered. */
static void print_agent(json_t *ag)
{
	if (!ag)
		return;
	bool on = json_is_true(json_object_get(ag, "connected"));
	json_int_t updated = json_integer_value(json_object_get(ag, "updated"));
	printf("Guest agent: %s", on ? "connected" : "not connected");
	if (updated > 0) {
		char when[32];
		time_t t = (time_t)updated;
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		printf(" (%s %s)", on ? "answers of" : "last answers", when);
	}
	printf("\n");
	json_t *os = json_object_get(ag, "os");
	const char *pretty = json_string_value(json_object_get(os, "pretty_name"));
	const char *osname = json_string_value(json_object_get(os, "name"));
	const char *kernel = json_string_value(json_object_get(os, "kernel"));
	if (pretty || osname || kernel)
		printf("Guest OS:    %s%s%s%s\n", pretty ? pretty : osname ? osname : "",
		       kernel && (pretty || osname) ? ", " : "", kernel ? "kernel " : "",
		       kernel ? kernel : "");
	const char *host = json_string_value(json_object_get(ag, "hostname"));
	if (host)
		printf("Hostname:    %s\n", host);
	size_t i, k;
	json_t *ifc, *addr;
	bool any = false;
	json_array_foreach (json_object_get(ag, "interfaces"), i, ifc) {
		const char *n = json_string_value(json_object_get(ifc, "name"));
		if (!n || !strcmp(n, "lo"))
			continue;
		json_array_foreach (json_object_get(ifc, "addresses"), k, addr) {
			printf("%s%s %s\n", any ? "             " : "Addresses:   ",
			       json_string_value(addr), n);
			any = true;
		}
	}
}

static void print_vm(json_t *vm)
{
	json_t *spec = json_object_get(vm, "spec");
	printf("Name:        %s\n", json_string_value(json_object_get(vm, "name")));
	printf("State:       %s\n", json_string_value(json_object_get(vm, "state")));
	if (json_integer_value(json_object_get(vm, "pid")) > 0)
		printf("QEMU pid:    %lld\n", json_integer_value(json_object_get(vm, "pid")));
	json_t *u = json_object_get(vm, "uptime_s");
	if (u) {
		char up[32];
		fmt_duration(json_number_value(u), up, sizeof(up));
		printf("Uptime:      %s\n", up);
	}
	json_t *steps = json_object_get(vm, "start_timing_ms");
	if (steps) {
		printf("Last start:  %.1f ms (", json_number_value(json_object_get(steps, "total")));
		static const char *const names[][2] = {{"spawn", "spawn"},
						       {"qemu_init", "QEMU"},
						       {"load", "load"},
						       {"resume", "resume"}};
		const char *sep = "";
		for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
			json_t *v = json_object_get(steps, names[i][0]);
			if (v) {
				printf("%s%s %.1f", sep, names[i][1], json_number_value(v));
				sep = ", ";
			}
		}
		printf(")\n");
	}
	const char *reason = json_string_value(json_object_get(vm, "exit_reason"));
	if (reason && *reason)
		printf("Last exit:   %s\n", reason);
	json_t *mig = json_object_get(vm, "migration");
	if (mig) {
		char line[512];
		ctl_fmt_migration(mig, line, sizeof(line));
		const char *role = json_string_value(json_object_get(mig, "role"));
		bool in = role && !strcmp(role, "destination");
		printf("Migration:   %s %s: %s\n", in ? "from" : "to",
		       json_string_value(json_object_get(mig, in ? "from" : "to")), line);
	}
	if (spec) {
		printf("vCPUs:       %lld\n", json_integer_value(json_object_get(spec, "cpus")));
		ctl_print_placement(vm);
		const char *hp = json_string_value(json_object_get(spec, "hugepages"));
		printf("Memory:      %lld MiB%s%s%s\n",
		       json_integer_value(json_object_get(spec, "memory_mib")),
		       hp ? " on huge pages of " : "", hp ? hp : "", hp ? " (hugetlb)" : "");
		json_t *ksm = json_object_get(vm, "ksm");
		if (json_is_true(json_object_get(ksm, "merges")))
			printf("KSM:         may merge guest RAM\n");
		else if (ksm)
			printf("KSM:         does not apply: %s\n",
			       json_string_value(json_object_get(ksm, "reason")));
		print_balloon(vm, spec);
		printf("Accel:       %s\n", json_string_value(json_object_get(spec, "accel")));
		printf("Machine:     %s\n", json_string_value(json_object_get(spec, "machine")));
		print_firmware(json_object_get(vm, "firmware"));
		const char *cm = json_string_value(json_object_get(spec, "cpu_model"));
		printf("CPU model:   %s\n", cm ? cm : "(QEMU's default)");
		const char *k = json_string_value(json_object_get(spec, "kernel"));
		if (k) {
			printf("Kernel:      %s\n", k);
			const char *i = json_string_value(json_object_get(spec, "initrd"));
			const char *c = json_string_value(json_object_get(spec, "cmdline"));
			if (i)
				printf("Initrd:      %s\n", i);
			if (c)
				printf("Cmdline:     %s\n", c);
		}
		size_t idx;
		json_t *d;
		json_array_foreach (json_object_get(spec, "disks"), idx, d) {
			json_t *st = json_array_get(json_object_get(vm, "storage"), idx);
			if (json_is_object(st) || !json_object_get(d, "path"))
				print_managed_disk(idx, d, st);
			else
				printf("Disk %zu:      %s (%s%s)\n", idx,
				       json_string_value(json_object_get(d, "path")),
				       json_string_value(json_object_get(d, "format")),
				       json_is_true(json_object_get(d, "readonly")) ? ", read-only"
										    : "");
			char lim[512];
			if (ctl_fmt_disk_limits(json_object_get(d, "limits"), lim, sizeof(lim)))
				printf("             I/O limits: %s\n", lim);
		}
		json_array_foreach (json_object_get(spec, "nics"), idx, d)
			ctl_print_nic(d, json_object_get(vm, "nics_state"), idx);
		print_spice(json_object_get(vm, "spice"));
		print_agent(json_object_get(vm, "agent"));
		json_array_foreach (json_object_get(spec, "hostdevs"), idx, d) {
			const char *a = json_string_value(json_object_get(d, "address"));
			json_t *af = json_object_get(d, "all_functions");
			if (a)
				printf("Host PCI %zu:  %s", idx, a);
			else
				printf("Host PCI %zu:  %s #%lld", idx,
				       json_string_value(json_object_get(d, "id")),
				       json_integer_value(json_object_get(d, "index")));
			printf("%s%s\n", af ? (json_is_true(af) ? ", all functions" : ", one function") : "",
			       json_is_true(json_object_get(d, "x_vga")) ? ", x-vga" : "");
		}
		json_t *hb = json_object_get(vm, "hostdevs_bound");
		if (json_array_size(hb)) {
			printf("Bound:       ");
			json_array_foreach (hb, idx, d)
				printf("%s%s (%s)", idx ? ", " : "",
				       json_string_value(json_object_get(d, "address")),
				       json_string_value(json_object_get(d, "state")));
			printf("\n");
		}
	}
	json_t *ci = json_object_get(spec, "cloud_init");
	if (json_is_object(ci))
		print_cloud_init(ci);
	const char *tail = json_string_value(json_object_get(vm, "console_tail"));
	if (tail && *tail)
		printf("Console (last lines):\n%s\n", tail);
}

static int cmd_info(Ctl *ctl, int argc, char **argv)
{
	if (argc != 2 || !ctl_is_name(argv[1])) {
		fputs("hsctl: usage: hsctl info NAME\n", stderr);
		return EXIT_USAGE;
	}
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s", argv[1]);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "GET", path, NULL, &j);
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(j);
	else
		print_vm(j);
	return 0;
}

int ctl_parse_uint(const char *opt, const char *s, unsigned long long max,
		      unsigned long long *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max) {
		fprintf(stderr, "hsctl: %s: '%s' is not a whole number up to %llu\n", opt, s, max);
		return -1;
	}
	*ret = v;
	return 0;
}

char *ctl_abs_path(const char *opt, const char *p)
{
	char *r = realpath(p, NULL);
	if (!r)
		fprintf(stderr, "hsctl: %s: cannot use '%s': %s\n", opt, p, strerror(errno));
	return r;
}

static const char *detect_format(const char *path)
{
	unsigned char magic[4] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		(void)!read(fd, magic, 4);
		close(fd);
	}
	return !memcmp(magic, "QFI\xfb", 4) ? "qcow2" : "raw";
}

/* Files given to create for cloud-init: at most this many bytes (hsd's own
 * limit for user-data; it has smaller ones for the others). */
#define CLOUD_INIT_FILE_MAX (1024 * 1024)

/* The text of the file given to opt, as a JSON string; NULL with the error
 * printed. Any file that reads (a pipe, /dev/stdin, a symbolic link). */
static json_t *read_text_file(const char *opt, const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "hsctl: %s: cannot read '%s': %s\n", opt, path, strerror(errno));
		return NULL;
	}
	_cleanup_free_ char *buf = malloc(CLOUD_INIT_FILE_MAX + 1);
	size_t len = 0;
	while (buf && len <= CLOUD_INIT_FILE_MAX) {
		ssize_t n = read(fd, buf + len, CLOUD_INIT_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "hsctl: %s: cannot read '%s': %s\n", opt, path,
				strerror(errno));
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (!buf) {
		fprintf(stderr, "hsctl: out of memory\n");
		return NULL;
	}
	if (len > CLOUD_INIT_FILE_MAX) {
		fprintf(stderr, "hsctl: %s: '%s' is larger than 1 MiB\n", opt, path);
		return NULL;
	}
	if (memchr(buf, '\0', len)) {
		fprintf(stderr, "hsctl: %s: '%s' is not a text file (it has NUL bytes)\n", opt,
			path);
		return NULL;
	}
	buf[len] = '\0';
	/* Never send a private key anywhere, even to be refused. */
	if (!strcmp(opt, "--ssh-key") && strstr(buf, "PRIVATE KEY")) {
		fprintf(stderr, "hsctl: %s: '%s' is a private key; give the public key (.pub)\n",
			opt, path);
		return NULL;
	}
	json_t *j = json_stringn(buf, len);
	if (!j)
		fprintf(stderr, "hsctl: %s: '%s' is not UTF-8 text\n", opt, path);
	return j;
}

static int create_post(Ctl *ctl, json_t *spec)
{
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "POST", "/v1/vms", spec, &j);
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(j);
	else
		printf("created %s\n", json_string_value(json_object_get(j, "name")));
	return 0;
}

/* The pinning options into the spec's cpu_pinning: --vcpu-pin replaces
 * its "vcpus" (of a --from file), --emulator-pin its "emulator". */
static int add_pins(json_t *spec, const CtlPins *pins)
{
	json_t *cpus = json_object_get(spec, "cpus");
	json_int_t n = cpus ? json_integer_value(cpus) : 1; /* hsd's default */
	if (pins->max_vcpu >= 0 && pins->max_vcpu >= n) {
		fprintf(stderr,
			"hsctl: create: --vcpu-pin %ld:%s: the VM has %lld vCPU%s (0 to %lld); "
			"give --cpus for more\n",
			pins->max_vcpu, pins->vcpu[pins->max_vcpu], n, n == 1 ? "" : "s", n - 1);
		return -1;
	}
	json_t *p = json_object_get(spec, "cpu_pinning");
	if (!json_is_object(p)) {
		p = json_object();
		json_object_set_new(spec, "cpu_pinning", p);
	}
	json_t *vcpus = ctl_pins_vcpus_json(pins, n > 0 ? (unsigned)n : 0);
	if (vcpus)
		json_object_set_new(p, "vcpus", vcpus);
	if (pins->emulator)
		json_object_set_new(p, "emulator", json_string(pins->emulator));
	return 0;
}

/* Is template `name` a warm one (a booted guest: hsctl create clones it)? */
static bool is_warm_template(Ctl *ctl, const char *name)
{
	json_auto_t *t = NULL;
	_cleanup_free_ char *path = hs_strdup_printf("/v1/templates/%s", name);
	unsigned status = 0;
	HsError err = {0};
	/* Quiet: any failure is for the create itself to report. */
	if (!path || ctl_connect(ctl) < 0 ||
	    hs_client_request(&ctl->client, "GET", path, NULL, &status, &t, &err) < 0 ||
	    status != 200)
		return false;
	const char *k = json_string_value(json_object_get(t, "kind"));
	return k && !strcmp(k, "warm");
}

static int cmd_create(Ctl *ctl, int argc, char **argv)
{
	static const struct option base_opts[] = {
		{"memory", required_argument, NULL, 'm'}, {"cpus", required_argument, NULL, 'c'},
		{"accel", required_argument, NULL, 'a'},  {"machine", required_argument, NULL, 'M'},
		{"kernel", required_argument, NULL, 'k'}, {"initrd", required_argument, NULL, 'i'},
		{"append", required_argument, NULL, 'A'}, {"disk", required_argument, NULL, 'd'},
		{"nic", required_argument, NULL, 'n'},    {"from", required_argument, NULL, 'f'},
		{"cpu-model", required_argument, NULL, 'C'},
		{"no-mem-merge", no_argument, NULL, 'X'},
		{"template", required_argument, NULL, 'T'},
		{"disk-size", required_argument, NULL, 'S'},
		{"cloud-init", required_argument, NULL, 'u'},
		{"network-config", required_argument, NULL, 'w'},
		{"ssh-key", required_argument, NULL, 'K'},
		{"hostname", required_argument, NULL, 'H'},
		{"balloon", required_argument, NULL, 'B'},
		{"balloon-floor", required_argument, NULL, 'F'},
		{"vcpu-pin", required_argument, NULL, 'P'},
		{"emulator-pin", required_argument, NULL, 'E'},
		{"numa-node", required_argument, NULL, 'N'},
		{"hugepages", required_argument, NULL, 'G'},
		{"hostdev", required_argument, NULL, 'D'},
		{"hotplug-ports", required_argument, NULL, 'Q'},
		{"memory-file", no_argument, NULL, 'R'},
		{"agent", no_argument, NULL, 'g'}, /* the guest agent's port */
		{"display", required_argument, NULL, 'Y'},
		{"spice-listen", required_argument, NULL, 'Z'},
		{"firmware", required_argument, NULL, 0x100},
		{"secure-boot", no_argument, NULL, 0x101},
		{"tpm", no_argument, NULL, 0x102},
	};
	struct option opts[ARRAY_SIZE(base_opts) + CTL_N_RESOURCE_OPTS + 1] = {0};
	memcpy(opts, base_opts, sizeof(base_opts));
	memcpy(opts + ARRAY_SIZE(base_opts), ctl_resource_opts, sizeof(ctl_resource_opts));
	json_auto_t *spec = NULL;
	json_auto_t *res = json_object();
	json_t *disks = json_array(), *nics = NULL;
	json_auto_t *hostdevs = NULL;
	json_auto_t *cloud_init = json_object();
	const char *template = NULL, *disk_size = NULL;
	const char *display = NULL, *spice_listen = NULL;
	static CtlPins pins = {.max_vcpu = -1};
	unsigned long long v;
	int c;
	const char *name = NULL;

	/* --from first (as "--from F" or "--from=F"), so flags override the
	 * file. */
	for (int i = 1; i < argc; i++) {
		const char *file = NULL;
		if (!strcmp(argv[i], "--from") && i + 1 < argc)
			file = argv[i + 1];
		else if (hs_str_has_prefix(argv[i], "--from="))
			file = argv[i] + 7;
		if (!file)
			continue;
		json_error_t je;
		json_decref(spec);
		spec = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
		if (!spec || !json_is_object(spec)) {
			fprintf(stderr, "hsctl: --from %s: %s\n", file,
				spec ? "not a JSON object" : je.text);
			json_decref(disks);
			return EXIT_USAGE;
		}
	}
	if (!spec)
		spec = json_object();
	optind = 0;
	int others = 0; /* options besides --template */
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		char *p;
		others += c != 'T';
		switch (c) {
		case 'R':
			json_object_set_new(spec, "memory_file", json_true());
			break;
		case 'g':
			json_object_set_new(spec, "agent", json_true());
			break;
		case 'Y':
			if (strcmp(optarg, "virtio") && strcmp(optarg, "qxl") && strcmp(optarg, "none")) {
				fputs("hsctl: --display: virtio, qxl or none\n", stderr);
				goto usage;
			}
			display = optarg;
			break;
		case 'Z':
			spice_listen = optarg;
			break;
		case 0x100:
			if (strcmp(optarg, "bios") && strcmp(optarg, "uefi")) {
				fputs("hsctl: --firmware: bios or uefi\n", stderr);
				goto usage;
			}
			json_object_set_new(spec, "firmware", json_string(optarg));
			break;
		case 0x101: /* Secure Boot is UEFI's */
			json_object_set_new(spec, "firmware", json_string("uefi"));
			json_object_set_new(spec, "secure_boot", json_true());
			break;
		case 0x102:
			json_object_set_new(spec, "tpm", json_true());
			break;
		case 'm':
			if (ctl_parse_uint("--memory", optarg, UINT32_MAX, &v) < 0)
				goto usage;
			json_object_set_new(spec, "memory_mib", json_integer((json_int_t)v));
			break;
		case 'c':
			if (ctl_parse_uint("--cpus", optarg, 1024, &v) < 0)
				goto usage;
			json_object_set_new(spec, "cpus", json_integer((json_int_t)v));
			break;
		case 'a':
			json_object_set_new(spec, "accel", json_string(optarg));
			break;
		case 'M':
			json_object_set_new(spec, "machine", json_string(optarg));
			break;
		case 'C':
			json_object_set_new(spec, "cpu_model", json_string(optarg));
			break;
		case 'X':
			json_object_set_new(spec, "mem_merge", json_false());
			break;
		case 'k':
		case 'i':
			if (!(p = ctl_abs_path(c == 'k' ? "--kernel" : "--initrd", optarg)))
				goto usage;
			json_object_set_new(spec, c == 'k' ? "kernel" : "initrd", json_string(p));
			free(p);
			break;
		case 'A':
			json_object_set_new(spec, "cmdline", json_string(optarg));
			break;
		case 'd':
			if (!(p = ctl_abs_path("--disk", optarg)))
				goto usage;
			json_array_append_new(disks, json_pack("{s:s, s:s}", "path", p, "format",
							       detect_format(p)));
			free(p);
			break;
		case 'n': {
			json_t *nic;
			if (ctl_nic_parse(optarg, &nic) < 0)
				goto usage;
			if (!nics)
				nics = json_array();
			if (nic)
				json_array_append_new(nics, nic);
			break;
		}
		case 'T':
			template = optarg;
			break;
		case 'S':
			disk_size = optarg; /* as given: hsd parses "20G" */
			break;
		case 'u':
		case 'w':
		case 'K': {
			const char *opt = c == 'u' ? "--cloud-init" : c == 'w' ? "--network-config"
									 : "--ssh-key";
			json_t *text = read_text_file(opt, optarg);
			if (!text)
				goto usage;
			json_object_set_new(cloud_init,
					    c == 'u'   ? "user_data"
					    : c == 'w' ? "network_config"
						       : "ssh_key",
					    text);
			break;
		}
		case 'H':
			json_object_set_new(cloud_init, "hostname", json_string(optarg));
			break;
		case 'D': {
			json_t *hd = json_object();
			if (ctl_hostdev_parse(optarg, hd) < 0) {
				json_decref(hd);
				goto usage;
			}
			if (!hostdevs)
				hostdevs = json_array();
			json_array_append_new(hostdevs, hd);
			break;
		}
		case 'Q':
			if (ctl_parse_uint("--hotplug-ports", optarg, 8, &v) < 0)
				goto usage;
			json_object_set_new(spec, "hotplug_ports", json_integer((json_int_t)v));
			break;
		case 'B':
		case 'F': {
			uint64_t mib;
			int r = c == 'B' ? ctl_parse_balloon("--balloon", optarg, &mib)
					 : ctl_parse_balloon_floor("--balloon-floor", optarg, &mib);
			if (r < 0)
				goto usage;
			json_object_set_new(spec, c == 'B' ? "balloon_mib" : "balloon_floor_mib",
					    json_integer((json_int_t)mib));
			break;
		}
		case 'P':
			if (ctl_pins_add_vcpu(&pins, optarg) < 0)
				goto usage;
			break;
		case 'E':
			if (ctl_pins_set_emulator(&pins, optarg) < 0)
				goto usage;
			break;
		case 'N':
			if (ctl_parse_uint("--numa-node", optarg, CTL_MAX_NUMA_NODE, &v) < 0)
				goto usage;
			json_object_set_new(spec, "numa_node", json_integer((json_int_t)v));
			break;
		case 'G':
			/* As given: hsd checks the size and that the host has it. */
			json_object_set_new(spec, "hugepages", json_string(optarg));
			break;
		case 'f':
			break;
		default:
			if (c < CTL_OPT_RESOURCE || c >= CTL_OPT_RESOURCE + CTL_N_RESOURCE_OPTS ||
			    ctl_resource_opt(c, optarg, res) < 0)
				goto usage;
			break;
		}
	}
	/* The NAME may stand anywhere among the options. */
	if (optind < argc && ctl_is_name(argv[optind]) && !name)
		name = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "hsctl: create: unexpected '%s'\n", argv[optind]);
		goto usage;
	}
	if (name)
		json_object_set_new(spec, "name", json_string(name));
	if (!json_object_get(spec, "name")) {
		fputs("hsctl: create: a NAME is needed\n", stderr);
		goto usage;
	}
	if (template && is_warm_template(ctl, template)) {
		/* A clone: everything comes from the template. */
		if (others || json_object_size(spec) > 1) {
			fputs("hsctl: create: a clone of a warm template takes its settings from "
			      "the template (give only NAME and --template)\n",
			      stderr);
			goto usage;
		}
		json_decref(disks);
		json_decref(nics);
		json_object_set_new(spec, "warm_template", json_string(template));
		return create_post(ctl, spec);
	}
	/* A disk hsd makes (over a template, or blank) comes first: it boots. */
	if (template || disk_size) {
		json_t *d = json_object();
		if (template)
			json_object_set_new(d, "template", json_string(template));
		if (disk_size)
			json_object_set_new(d, "size", json_string(disk_size));
		json_array_insert_new(disks, 0, d);
	}
	if (json_array_size(disks))
		json_object_set(spec, "disks", disks);
	/* The options override the file's cloud-init fields one by one. */
	if (json_object_size(cloud_init)) {
		json_t *ci = json_object_get(spec, "cloud_init");
		if (json_is_object(ci))
			json_object_update(ci, cloud_init);
		else
			json_object_set(spec, "cloud_init", cloud_init);
	}
	if (pins.any && add_pins(spec, &pins) < 0)
		goto usage;
	if (json_object_size(res)) {
		json_t *into = json_object_get(spec, "resources");
		if (!json_is_object(into)) {
			into = json_object();
			json_object_set_new(spec, "resources", into);
		}
		ctl_resources_merge(into, res);
	}
	if (hostdevs)
		json_object_set(spec, "hostdevs", hostdevs);
	if (display || spice_listen) {
		/* --spice-listen alone: a virtio display (or the file's). */
		json_t *d = json_object_get(spec, "display");
		if (!json_is_object(d)) {
			d = json_pack("{s:s}", "type", "virtio");
			json_object_set_new(spec, "display", d);
		}
		if (display)
			json_object_set_new(d, "type", json_string(display));
		if (spice_listen)
			json_object_set_new(d, "listen", json_string(spice_listen));
	}
	if (nics)
		json_object_set(spec, "nics", nics);
	else if (!json_object_get(spec, "nics"))
		json_object_set_new(spec, "nics", json_pack("[{s:s}]", "type", "user"));
	json_decref(disks);
	json_decref(nics);
	return create_post(ctl, spec);
usage:
	json_decref(disks);
	json_decref(nics);
	fputs("hsctl: usage: hsctl create NAME [--memory MiB] [--cpus N] [--accel kvm|tcg] "
	      "[--machine M] [--memory-file] [--cpu-model MODEL] [--no-mem-merge] [--balloon SIZE] "
	      "[--balloon-floor SIZE] "
	      "[--kernel F --initrd F "
	      "--append S] [--template NAME] [--disk-size SIZE] [--disk FILE]... "
	      "[--nic user|none|bridge:BR|network:NET[,KEY=VALUE]...]... [--from FILE] "
	      "[--cloud-init FILE] "
	      "[--network-config FILE] [--ssh-key FILE] [--hostname H] [--agent] "
	      "[--vcpu-pin LIST|VCPU:LIST]... [--emulator-pin LIST] [--numa-node N] "
	      "[--hugepages 2M|1G] [--cpu-max PCT] [--cpu-weight N] [--memory-overhead SIZE] "
	      "[--pids-max N] [--display virtio|qxl|none] [--spice-listen ADDR] "
	      "[--firmware bios|uefi] [--secure-boot] [--tpm]\n",
	      stderr);
	return EXIT_USAGE;
}

static int cmd_action(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"timeout", required_argument, NULL, 't'},
		{"force", no_argument, NULL, 'f'},
		{"paused", no_argument, NULL, 'p'},
		{"agent", no_argument, NULL, 'a'},
		{0},
	};
	const char *action = argv[0];
	json_auto_t *body = json_object();
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 't': {
			char *end;
			double t = strtod(optarg, &end);
			if (strcmp(action, "stop") || end == optarg || *end || t <= 0) {
				fprintf(stderr, "hsctl: --timeout: only for stop, in seconds > 0\n");
				return EXIT_USAGE;
			}
			json_object_set_new(body, "timeout", json_real(t));
			break;
		}
		case 'f':
			if (strcmp(action, "stop")) {
				fputs("hsctl: --force: only for stop\n", stderr);
				return EXIT_USAGE;
			}
			json_object_set_new(body, "force", json_true());
			break;
		case 'a':
			if (strcmp(action, "stop")) {
				fputs("hsctl: --agent: only for stop\n", stderr);
				return EXIT_USAGE;
			}
			json_object_set_new(body, "agent", json_true());
			break;
		case 'p':
			if (strcmp(action, "start")) {
				fputs("hsctl: --paused: only for start\n", stderr);
				return EXIT_USAGE;
			}
			json_object_set_new(body, "paused", json_true());
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || !ctl_is_name(argv[optind])) {
		fprintf(stderr, "hsctl: usage: hsctl %s NAME%s\n", action,
			!strcmp(action, "stop")    ? " [--timeout S] [--force | --agent]"
			: !strcmp(action, "start") ? " [--paused]"
						   : "");
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	json_auto_t *j = NULL;
	int r;
	if (!strcmp(action, "delete")) {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s", name);
		r = ctl_call(ctl, "DELETE", path, NULL, &j);
	} else {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/%s", name, action);
		r = ctl_call(ctl, "POST", path, body, &j);
	}
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(j);
	else
		printf("%s: %s\n", name, json_string_value(json_object_get(j, "state")));
	return 0;
}

static int cmd_qmp(Ctl *ctl, int argc, char **argv)
{
	if (argc != 3 || !ctl_is_name(argv[1])) {
		fputs("hsctl: usage: hsctl qmp NAME '{\"execute\": \"query-status\"}'\n", stderr);
		return EXIT_USAGE;
	}
	json_error_t je;
	json_auto_t *msg = json_loads(argv[2], JSON_DECODE_ANY, &je);
	if (!msg) {
		fprintf(stderr, "hsctl: qmp: the command is not JSON: %s\n", je.text);
		return EXIT_USAGE;
	}
	if (json_is_string(msg)) { /* hsctl qmp vm '"query-status"' */
		json_t *m = json_pack("{s:O}", "execute", msg);
		json_decref(msg);
		msg = m;
	}
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/qmp", argv[1]);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "POST", path, msg, &j);
	if (r)
		return r;
	ctl_print_json(j);
	if (json_object_get(j, "error")) {
		const char *d = json_string_value(
			json_object_get(json_object_get(j, "error"), "desc"));
		fprintf(stderr, "hsctl: QEMU: %s\n", d ? d : "error");
		return EXIT_HSD_ERROR;
	}
	return 0;
}

typedef struct EvCtx {
	bool json;
} EvCtx;

static int on_event_line(const char *line, size_t len, void *ud)
{
	EvCtx *ctx = ud;
	if (len == 0)
		return 0; /* heartbeat */
	json_auto_t *e = json_loadb(line, len, 0, NULL);
	const char *type = json_string_value(json_object_get(e, "type"));
	if (ctx->json || !e || !type) {
		printf("%.*s\n", (int)len, line);
	} else if (!strcmp(type, "hello")) {
		return 0;
	} else {
		char ts[32] = "";
		time_t t = (time_t)json_number_value(json_object_get(e, "time"));
		struct tm tm;
		if (t && localtime_r(&t, &tm))
			strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
		const char *vm = json_string_value(json_object_get(e, "vm"));
		if (!strcmp(type, "state")) {
			const char *reason = json_string_value(json_object_get(e, "reason"));
			printf("%s %s state %s -> %s%s%s\n", ts, vm ? vm : "-",
			       json_string_value(json_object_get(e, "previous")),
			       json_string_value(json_object_get(e, "state")),
			       reason ? ": " : "", reason ? reason : "");
		} else if (!strcmp(type, "qmp")) {
			_cleanup_free_ char *d =
				json_object_get(e, "data") && !json_is_null(json_object_get(e, "data"))
					? json_dumps(json_object_get(e, "data"), JSON_COMPACT)
					: NULL;
			printf("%s %s qmp %s%s%s\n", ts, vm ? vm : "-",
			       json_string_value(json_object_get(e, "event")), d ? " " : "",
			       d ? d : "");
		} else {
			printf("%.*s\n", (int)len, line);
		}
	}
	fflush(stdout);
	return 0;
}

static int cmd_events(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"vm", required_argument, NULL, 'v'}, {0}};
	const char *vm = NULL;
	int c;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		if (c != 'v')
			return EXIT_USAGE;
		vm = optarg;
	}
	if (optind != argc || (vm && !ctl_is_name(vm))) {
		fputs("hsctl: usage: hsctl events [--vm NAME]\n", stderr);
		return EXIT_USAGE;
	}
	if (ctl_connect(ctl) < 0)
		return EXIT_UNREACHABLE;
	_cleanup_free_ char *path = vm ? hs_strdup_printf("/v1/events?vm=%s", vm)
				       : strdup("/v1/events");
	EvCtx ctx = {.json = ctl->json};
	unsigned status = 0;
	json_auto_t *ej = NULL;
	HsError err = {0};
	if (hs_client_stream(&ctl->client, path, on_event_line, &ctx, &status, &ej, &err) < 0)
		return ctl_report(ctl, 0, NULL, &err);
	if (status != 200)
		return ctl_report(ctl, status, ej, NULL);
	return 0;
}

static int cmd_ksm(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"pages", required_argument, NULL, 'p'},
		{"sleep", required_argument, NULL, 's'},
		{"max-cpu", required_argument, NULL, 'c'},
		{"boost-max-cpu", required_argument, NULL, 'b'},
		{"pressure-available", required_argument, NULL, 'a'},
		{0},
	};
	json_auto_t *body = json_object();
	unsigned long long v;
	int c, idx = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, &idx)) >= 0) {
		switch (c) {
		case 'm':
			json_object_set_new(body, "mode", json_string(optarg));
			break;
		case 'p':
			if (ctl_parse_uint("--pages", optarg, 1000000, &v) < 0)
				return EXIT_USAGE;
			json_object_set_new(body, "pages_to_scan", json_integer((json_int_t)v));
			break;
		case 's':
			if (ctl_parse_uint("--sleep", optarg, 60000, &v) < 0)
				return EXIT_USAGE;
			json_object_set_new(body, "sleep_millisecs", json_integer((json_int_t)v));
			break;
		case 'c':
		case 'b':
		case 'a': {
			/* a fraction in (0, 1]: the option's name, with '_' for
			 * '-', is the policy's key */
			const char *name = opts[idx].name;
			char *end;
			double f = strtod(optarg, &end);
			if (end == optarg || *end || f <= 0 || f > 1) {
				fprintf(stderr, "hsctl: --%s: %s\n", name,
					c == 'a' ? "a share of the host's memory, e.g. 0.5"
						 : "a fraction of one CPU, e.g. 0.2");
				return EXIT_USAGE;
			}
			char key[32];
			snprintf(key, sizeof(key), "%s", name);
			for (char *k = key; *k; k++)
				if (*k == '-')
					*k = '_';
			json_object_set_new(body, key, json_real(f));
			break;
		}
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fputs("hsctl: usage: hsctl ksm [--mode auto|off|fixed] [--pages N] [--sleep MS] "
		      "[--max-cpu F] [--boost-max-cpu F] [--pressure-available F]\n",
		      stderr);
		return EXIT_USAGE;
	}
	json_auto_t *j = NULL;
	int r = ctl_show_or_set(ctl, "/v1/ksm", body, &j);
	if (r || ctl->json)
		return r;
	json_t *cfg = json_object_get(j, "config"), *st = json_object_get(j, "stats");
	char saved[32], vmb[32];
	ctl_fmt_bytes(json_number_value(json_object_get(j, "saved_bytes")), saved, sizeof(saved));
	ctl_fmt_bytes(json_number_value(json_object_get(j, "vm_merging_bytes")), vmb, sizeof(vmb));
	if (!json_is_true(json_object_get(j, "present"))) {
		printf("KSM:          not available in this kernel\n");
		return 0;
	}
	printf("KSM:          %s, mode %s, phase %s%s%s\n",
	       json_integer_value(json_object_get(st, "run")) == 1 ? "running" : "stopped",
	       json_string_value(json_object_get(cfg, "mode")),
	       json_string_value(json_object_get(j, "phase")),
	       json_is_true(json_object_get(j, "pressure")) ? " (memory pressure)" : "",
	       json_is_true(json_object_get(j, "cpu_capped")) ? " (capped by CPU)" : "");
	printf("Scanning:     %lld pages every %lld ms",
	       json_integer_value(json_object_get(st, "pages_to_scan")),
	       json_integer_value(json_object_get(st, "sleep_millisecs")));
	json_t *cpu = json_object_get(j, "ksmd_cpu");
	if (cpu)
		printf(", ksmd at %.1f%% of a CPU (cap %.0f%%, under pressure %.0f%%)",
		       100 * json_number_value(cpu),
		       100 * json_number_value(json_object_get(cfg, "max_cpu")),
		       100 * json_number_value(json_object_get(cfg, "boost_max_cpu")));
	json_t *nice = json_object_get(j, "ksmd_nice");
	if (nice)
		printf(", nice %lld", json_integer_value(nice));
	printf("\n");
	printf("Pages:        %lld shared, %lld sharing, %lld unshared, %lld volatile, %lld full "
	       "scans\n",
	       json_integer_value(json_object_get(st, "pages_shared")),
	       json_integer_value(json_object_get(st, "pages_sharing")),
	       json_integer_value(json_object_get(st, "pages_unshared")),
	       json_integer_value(json_object_get(st, "pages_volatile")),
	       json_integer_value(json_object_get(st, "full_scans")));
	printf("Saved:        %s (host), %s merged in running VMs\n", saved, vmb);
	const char *e = json_string_value(json_object_get(j, "error"));
	if (e)
		printf("Error:        %s\n", e);
	size_t i;
	json_t *vm;
	if (json_array_size(json_object_get(j, "vms")))
		printf("%-24s %-9s %12s\n", "VM", "MERGE", "MERGED");
	json_array_foreach (json_object_get(j, "vms"), i, vm) {
		char mb[32];
		ctl_fmt_bytes(json_number_value(json_object_get(vm, "merging_bytes")), mb,
			      sizeof(mb));
		printf("%-24s %-9s %12s\n", json_string_value(json_object_get(vm, "name")),
		       json_object_get(vm, "guest_ram_not_merged")	  ? "off"
		       : json_is_true(json_object_get(vm, "mem_merge")) ? "on"
									  : "off",
		       mb);
	}
	/* Apart from KSM: clones share their warm template's pages. */
	json_t *warm = json_object_get(j, "warm_templates");
	if (json_array_size(warm)) {
		char ws[32];
		ctl_fmt_bytes(json_number_value(json_object_get(j, "warm_saved_bytes")), ws,
			      sizeof(ws));
		printf("Warm:         %s saved by clones sharing their template's RAM (not KSM)\n",
		       ws);
		printf("%-24s %10s %10s %8s %12s %12s\n", "TEMPLATE", "RAM", "HELD", "CLONES",
		       "SHARED", "SAVED");
	}
	json_array_foreach (warm, i, vm) {
		char ram[32], held[32], shared[32], sv[32], clones[32];
		ctl_fmt_bytes(json_number_value(json_object_get(vm, "ram_size")), ram, sizeof(ram));
		ctl_fmt_bytes(json_number_value(json_object_get(vm, "held_bytes")), held,
			      sizeof(held));
		ctl_fmt_bytes(json_number_value(json_object_get(vm, "clones_shared_bytes")), shared,
			      sizeof(shared));
		ctl_fmt_bytes(json_number_value(json_object_get(vm, "saved_bytes")), sv, sizeof(sv));
		snprintf(clones, sizeof(clones), "%lld/%lld",
			 json_integer_value(json_object_get(vm, "clones_running")),
			 json_integer_value(json_object_get(vm, "clones")));
		printf("%-24s %10s %10s %8s %12s %12s\n",
		       json_string_value(json_object_get(vm, "name")), ram, held, clones, shared, sv);
	}
	return 0;
}

int ctl_show_or_set(Ctl *ctl, const char *path, json_t *body, json_t **ret)
{
	int r = json_object_size(body) ? ctl_call(ctl, "PUT", path, body, ret)
				       : ctl_call(ctl, "GET", path, NULL, ret);
	if (r == 0 && ctl->json)
		ctl_print_json(*ret);
	return r;
}

static const struct {
	const char *name;
	int (*fn)(Ctl *ctl, int argc, char **argv);
} commands[] = {
	{"version", cmd_version}, {"host", cmd_host},     {"list", cmd_list},
	{"info", cmd_info},       {"create", cmd_create}, {"start", cmd_action},
	{"stop", cmd_action},     {"kill", cmd_action},   {"reboot", cmd_action},
	{"pause", cmd_action},    {"resume", cmd_action}, {"delete", cmd_action},
	{"qmp", cmd_qmp},         {"console", cmd_console}, {"events", cmd_events},
	{"ksm", cmd_ksm},         {"template", cmd_template}, {"snapshot", cmd_snapshot},
	{"set", cmd_set},         {"migrate", cmd_migrate}, {"balloon", cmd_balloon},
	{"pci", cmd_pci},         {"network", cmd_network}, {"sriov", cmd_sriov},
	{"nic", cmd_nic},
};


int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	static Ctl ctl = {.client.fd = -1};
	int c;

	while ((c = getopt_long(argc, argv, "+hj", opts, NULL)) >= 0) {
		switch (c) {
		case 's':
			free(ctl.socket_path);
			ctl.socket_path = strdup(optarg);
			break;
		case 'j':
			ctl.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("hsctl %s\n", HS_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* --json may also follow the command (hsctl list --json). */
	int kept = optind;
	for (int i = optind; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			while (i < argc)
				argv[kept++] = argv[i++];
			break;
		}
		if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j"))
			ctl.json = true;
		else
			argv[kept++] = argv[i];
	}
	argc = kept;
	argv[argc] = NULL;
	if (!ctl.socket_path)
		ctl.socket_path = hs_client_default_socket();
	ctl.client.fd = -1;
	const char *cmd = argv[optind];
	int r = -1;
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(cmd, commands[i].name)) {
			r = commands[i].fn(&ctl, argc - optind, argv + optind);
			break;
		}
	if (r < 0) {
		fprintf(stderr, "hsctl: unknown command '%s' (see hsctl --help)\n", cmd);
		r = EXIT_USAGE;
	}
	ctl_release(&ctl);
	return r;
}
