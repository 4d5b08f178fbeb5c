/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl set: what can change on a VM, running or not (PATCH /v1/vms/NAME):
 * the balloon target, one disk's I/O limits and the CPU pinning. Also the parsing of sizes
 * and rates these take, and the words info uses to show the limits. hsd
 * checks everything again; hsctl checks the command line so that a mistake
 * is named by its option. */
#include <getopt.h>
#include <string.h>

#include "hsctl.h"

/* QEMU's ceiling for every throttling value (THROTTLE_VALUE_MAX). */
#define LIMIT_MAX 1000000000000000ull

/* The limit options, [what][kind][burst]: what 0 bytes/s, 1 IO/s; kind 0
 * total, 1 read, 2 write; burst 0 the rate, 1 its burst (_max). The key in
 * the limits object is the name with '_' for '-'. */
enum { LIM_N = 12 };
static const char *const limit_names[LIM_N] = {
	"bps-total",  "bps-total-max",	"bps-read",   "bps-read-max",
	"bps-write",  "bps-write-max",	"iops-total", "iops-total-max",
	"iops-read",  "iops-read-max",	"iops-write", "iops-write-max",
};
static const char *const kind_names[3] = {"total", "read", "write"};

static size_t lim_index(int what, int kind, int burst)
{
	return (size_t)(what * 6 + kind * 2 + burst);
}

int ctl_parse_balloon(const char *opt, const char *s, uint64_t *ret_mib)
{
	if (!strcmp(s, "all")) {
		*ret_mib = 0;
		return 0;
	}
	return ctl_parse_mib(opt, s, "; 0 or all for all of the memory", ret_mib);
}

int ctl_parse_mib(const char *opt, const char *s, const char *zero, uint64_t *ret_mib)
{
	size_t digits = strspn(s, "0123456789");
	if (digits && !s[digits]) { /* a bare number: MiB, as for --memory */
		unsigned long long v;
		if (ctl_parse_uint(opt, s, UINT32_MAX, &v) < 0)
			return -1;
		*ret_mib = v;
		return 0;
	}
	uint64_t bytes;
	if (hs_parse_size(s, &bytes) < 0) {
		fprintf(stderr,
			"hsctl: %s: '%s' is not a size: MiB, or a number with a suffix K, M, G or "
			"T (powers of 1024) as in 512M or 1.5G%s\n",
			opt, s, zero);
		return -1;
	}
	if (bytes % (1u << 20)) {
		fprintf(stderr, "hsctl: %s: '%s' is not a whole number of MiB\n", opt, s);
		return -1;
	}
	if ((bytes >> 20) > UINT32_MAX) {
		fprintf(stderr, "hsctl: %s: '%s' is too large\n", opt, s);
		return -1;
	}
	*ret_mib = bytes >> 20;
	return 0;
}

int ctl_parse_balloon_floor(const char *opt, const char *s, uint64_t *ret_mib)
{
	if (!strcmp(s, "none")) {
		*ret_mib = 0;
		return 0;
	}
	return ctl_parse_mib(opt, s, "; 0 or none: no floor", ret_mib);
}

/* Bytes per second: "10M", "10MiB/s", "1.5G", "4096". */
static int parse_rate(const char *opt, const char *s, uint64_t *ret)
{
	_cleanup_free_ char *t = strdup(s);
	if (!t) {
		fputs("hsctl: out of memory\n", stderr);
		return -1;
	}
	size_t len = strlen(t);
	if (len > 2 && !strcmp(t + len - 2, "/s"))
		t[len - 2] = '\0';
	if (hs_parse_size(t, ret) < 0) {
		fprintf(stderr,
			"hsctl: %s: '%s' is not a rate: bytes per second, as a whole number or "
			"with a suffix K, M, G or T (powers of 1024), e.g. 10M\n",
			opt, s);
		return -1;
	}
	if (*ret > LIMIT_MAX) {
		fprintf(stderr, "hsctl: %s: '%s' is above QEMU's limit (%llu bytes/s)\n", opt, s,
			LIMIT_MAX);
		return -1;
	}
	return 0;
}

void ctl_append(char *s, size_t size, const char *fmt, ...)
{
	size_t len = strlen(s);
	if (len && len + 2 < size) {
		strcpy(s + len, ", ");
		len += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s + len, size - len, fmt, ap);
	va_end(ap);
}

/* The key of limit i in the limits object: "bps_read_max". */
static void limit_key(size_t i, char key[32])
{
	snprintf(key, 32, "%s", limit_names[i]);
	for (char *p = key; *p; p++)
		if (*p == '-')
			*p = '_';
}

static uint64_t limit_value(json_t *limits, size_t i)
{
	char key[32];
	limit_key(i, key);
	json_int_t v = json_integer_value(json_object_get(limits, key));
	return v > 0 ? (uint64_t)v : 0;
}

bool ctl_fmt_disk_limits(json_t *limits, char *buf, size_t size)
{
	buf[0] = '\0';
	for (int what = 0; what < 2; what++)
		for (int k = 0; k < 3; k++) {
			uint64_t rate = limit_value(limits, lim_index(what, k, 0));
			uint64_t burst = limit_value(limits, lim_index(what, k, 1));
			if (!rate)
				continue;
			if (what == 0) {
				char r[32], b[32];
				ctl_fmt_bytes((double)rate, r, sizeof(r));
				ctl_fmt_bytes((double)burst, b, sizeof(b));
				if (burst)
					ctl_append(buf, size, "%s %s/s (bursts to %s/s)", kind_names[k],
					       r, b);
				else
					ctl_append(buf, size, "%s %s/s", kind_names[k], r);
			} else if (burst) {
				ctl_append(buf, size, "%llu IOPS %s (bursts to %llu)",
				       (unsigned long long)rate, kind_names[k],
				       (unsigned long long)burst);
			} else {
				ctl_append(buf, size, "%llu IOPS %s", (unsigned long long)rate,
				       kind_names[k]);
			}
		}
	const char *group = json_string_value(json_object_get(limits, "group"));
	if (group)
		ctl_append(buf, size, "group %s", group);
	return buf[0] != '\0';
}

static void set_usage(void)
{
	fputs("hsctl: usage: hsctl set NAME [--balloon SIZE] [--balloon-floor SIZE] [--disk N] "
	      "[--bps-total|--bps-read|"
	      "--bps-write RATE] [--bps-total-max|--bps-read-max|--bps-write-max RATE] "
	      "[--iops-total|--iops-read|--iops-write N] [--iops-total-max|--iops-read-max|"
	      "--iops-write-max N] [--io-group NAME] [--no-limits] [--vcpu-pin LIST|VCPU:LIST]... "
	      "[--emulator-pin LIST] [--no-pin] [--cpu-max PCT|none] [--cpu-weight N|none] "
	      "[--memory-overhead SIZE|none] [--pids-max N|none] [--hotplug-ports N]\n",
	      stderr);
}

/* The limits given, checked as QEMU would: they replace the disk's limits
 * as a whole, so a burst needs its rate in the same command. */
static int check_limits(const uint64_t v[LIM_N])
{
	for (int what = 0; what < 2; what++) {
		const char *w = what ? "iops" : "bps";
		bool total = v[lim_index(what, 0, 0)];
		if (total && (v[lim_index(what, 1, 0)] || v[lim_index(what, 2, 0)])) {
			fprintf(stderr,
				"hsctl: set: --%s-total cannot be combined with --%s-read or "
				"--%s-write (QEMU limits either the total or each direction)\n",
				w, w, w);
			return -1;
		}
		for (int k = 0; k < 3; k++) {
			uint64_t rate = v[lim_index(what, k, 0)], burst = v[lim_index(what, k, 1)];
			const char *rn = limit_names[lim_index(what, k, 0)];
			const char *bn = limit_names[lim_index(what, k, 1)];
			if (burst && !rate) {
				fprintf(stderr,
					"hsctl: set: --%s needs --%s too (the limits given replace "
					"the disk's limits)\n",
					bn, rn);
				return -1;
			}
			if (burst && burst < rate) {
				fprintf(stderr, "hsctl: set: --%s must not be below --%s\n", bn,
					rn);
				return -1;
			}
		}
	}
	return 0;
}

/* The line saying what changed: "web1: disk 0 limited to read 10.0 MiB/s;
 * balloon target 512 MiB; vCPU pins 0→2, 1→3 (live)". */
static void print_result(const char *name, json_t *vm, long disk, bool balloon, bool floor_set,
			 bool pins, bool res, bool ports)
{
	json_t *spec = json_object_get(vm, "spec");
	const char *state = json_string_value(json_object_get(vm, "state"));
	bool live = state && (!strcmp(state, "running") || !strcmp(state, "paused"));
	printf("%s:", name);
	if (disk >= 0) {
		json_t *d = json_array_get(json_object_get(spec, "disks"), (size_t)disk);
		char lim[512];
		if (ctl_fmt_disk_limits(json_object_get(d, "limits"), lim, sizeof(lim)))
			printf(" disk %ld limited to %s", disk, lim);
		else
			printf(" disk %ld not limited", disk);
	}
	if (balloon) {
		json_int_t target = json_integer_value(json_object_get(spec, "balloon_mib"));
		json_int_t mem = json_integer_value(json_object_get(spec, "memory_mib"));
		if (target > 0)
			printf("%s balloon target %lld MiB of %lld MiB", disk >= 0 ? ";" : "",
			       target, mem);
		else
			printf("%s no balloon target: all %lld MiB", disk >= 0 ? ";" : "", mem);
	}
	if (floor_set) {
		json_int_t fl = json_integer_value(json_object_get(spec, "balloon_floor_mib"));
		const char *sep = disk >= 0 || balloon ? ";" : "";
		if (fl > 0)
			printf("%s balloon floor %lld MiB", sep, fl);
		else
			printf("%s no balloon floor (not in the automatic policy)", sep);
	}
	if (pins) {
		char p[1024];
		const char *sep = disk >= 0 || balloon || floor_set ? ";" : "";
		if (ctl_fmt_pinning(spec, p, sizeof(p)))
			printf("%s vCPU pins %s", sep, p);
		else
			printf("%s no CPU pinning", sep);
	}
	if (res) {
		json_t *r = json_object_get(spec, "resources");
		const char *sep = disk >= 0 || balloon || floor_set || pins ? ";" : "";
		const char *k;
		json_t *v;
		if (!json_object_size(r))
			printf("%s no cgroup limits", sep);
		else
			printf("%s cgroup limits", sep);
		json_object_foreach (r, k, v)
			printf(" %s=%lld", k, json_integer_value(v));
	}
	if (ports) {
		/* QEMU's devices are made at its start: never live. */
		const char *sep = disk >= 0 || balloon || floor_set || pins || res ? ";" : "";
		printf("%s %lld spare PCIe ports for hot-plugs%s", sep,
		       json_integer_value(json_object_get(spec, "hotplug_ports")),
		       live ? " (from the next start)" : "");
		if (disk < 0 && !balloon && !floor_set && !pins && !res) {
			printf(" (stored)\n");
			return;
		}
	}
	printf(" (%s)\n", live ? "live" : "stored; applied at the next start");
}

int cmd_set(Ctl *ctl, int argc, char **argv)
{
	enum { OPT_BALLOON = 'b', OPT_FLOOR = 'f', OPT_DISK = 'd', OPT_GROUP = 'g', OPT_NO_LIMITS = 'N',
	       OPT_VCPU_PIN = 'P', OPT_EMULATOR_PIN = 'E', OPT_NO_PIN = 'U', OPT_PORTS = 'H',
	       OPT_LIMIT = 0x100 };
	struct option opts[LIM_N + 10 + CTL_N_RESOURCE_OPTS];
	size_t n = 0;
	for (size_t i = 0; i < CTL_N_RESOURCE_OPTS; i++)
		opts[n++] = ctl_resource_opts[i];
	opts[n++] = (struct option){"balloon", required_argument, NULL, OPT_BALLOON};
	opts[n++] = (struct option){"balloon-floor", required_argument, NULL, OPT_FLOOR};
	opts[n++] = (struct option){"disk", required_argument, NULL, OPT_DISK};
	opts[n++] = (struct option){"io-group", required_argument, NULL, OPT_GROUP};
	opts[n++] = (struct option){"no-limits", no_argument, NULL, OPT_NO_LIMITS};
	opts[n++] = (struct option){"vcpu-pin", required_argument, NULL, OPT_VCPU_PIN};
	opts[n++] = (struct option){"emulator-pin", required_argument, NULL, OPT_EMULATOR_PIN};
	opts[n++] = (struct option){"no-pin", no_argument, NULL, OPT_NO_PIN};
	opts[n++] = (struct option){"hotplug-ports", required_argument, NULL, OPT_PORTS};
	for (size_t i = 0; i < LIM_N; i++)
		opts[n++] = (struct option){limit_names[i], required_argument, NULL,
					    OPT_LIMIT + (int)i};
	opts[n] = (struct option){0};

	uint64_t v[LIM_N] = {0}, balloon = 0, bfloor = 0;
	bool any_limit = false, no_limits = false, has_balloon = false, no_pin = false;
	json_auto_t *res = json_object();
	bool has_floor = false;
	static CtlPins pins = {.max_vcpu = -1};
	const char *group = NULL, *disk_arg = NULL;
	unsigned long long disk = 0, u, ports = 0;
	bool has_ports = false;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case OPT_BALLOON:
			if (ctl_parse_balloon("--balloon", optarg, &balloon) < 0)
				return EXIT_USAGE;
			has_balloon = true;
			break;
		case OPT_FLOOR:
			if (ctl_parse_balloon_floor("--balloon-floor", optarg, &bfloor) < 0)
				return EXIT_USAGE;
			has_floor = true;
			break;
		case OPT_DISK:
			if (disk_arg) {
				fputs("hsctl: set: --disk: one disk per command (run hsctl set "
				      "again for another disk)\n",
				      stderr);
				return EXIT_USAGE;
			}
			if (ctl_parse_uint("--disk", optarg, 255, &disk) < 0)
				return EXIT_USAGE;
			disk_arg = optarg;
			break;
		case OPT_GROUP:
			if (!ctl_is_name(optarg)) {
				fprintf(stderr, "hsctl: --io-group: '%s' is not a group name\n",
					optarg);
				return EXIT_USAGE;
			}
			group = optarg;
			any_limit = true;
			break;
		case OPT_NO_LIMITS:
			no_limits = true;
			break;
		case OPT_VCPU_PIN:
			if (ctl_pins_add_vcpu(&pins, optarg) < 0)
				return EXIT_USAGE;
			break;
		case OPT_EMULATOR_PIN:
			if (ctl_pins_set_emulator(&pins, optarg) < 0)
				return EXIT_USAGE;
			break;
		case OPT_NO_PIN:
			no_pin = true;
			break;
		case OPT_PORTS:
			if (ctl_parse_uint("--hotplug-ports", optarg, 8, &ports) < 0)
				return EXIT_USAGE;
			has_ports = true;
			break;
		default:
			if (c >= CTL_OPT_RESOURCE && c < CTL_OPT_RESOURCE + CTL_N_RESOURCE_OPTS) {
				if (ctl_resource_opt(c, optarg, res) < 0)
					return EXIT_USAGE;
				break;
			}
			if (c < OPT_LIMIT || c >= OPT_LIMIT + LIM_N) {
				set_usage();
				return EXIT_USAGE;
			}
			size_t i = (size_t)(c - OPT_LIMIT);
			char opt[32];
			snprintf(opt, sizeof(opt), "--%s", limit_names[i]);
			if (i < 6) { /* bytes/s */
				if (parse_rate(opt, optarg, &v[i]) < 0)
					return EXIT_USAGE;
			} else {
				if (ctl_parse_uint(opt, optarg, LIMIT_MAX, &u) < 0)
					return EXIT_USAGE;
				v[i] = u;
			}
			any_limit = true;
			break;
		}
	}
	if (optind != argc - 1 || !ctl_is_name(argv[optind])) {
		set_usage();
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (no_limits && any_limit) {
		fputs("hsctl: set: --no-limits cannot be combined with limit options\n", stderr);
		return EXIT_USAGE;
	}
	if (no_pin && pins.any) {
		fputs("hsctl: set: --no-pin cannot be combined with --vcpu-pin or --emulator-pin\n",
		      stderr);
		return EXIT_USAGE;
	}
	bool patch_disk = no_limits || any_limit, patch_pins = no_pin || pins.any;
	if (disk_arg && !patch_disk) {
		fprintf(stderr, "hsctl: set: --disk %s: give that disk's limits (--bps-read ...) "
				"or --no-limits\n",
			disk_arg);
		return EXIT_USAGE;
	}
	bool patch_res = json_object_size(res) > 0;
	if (!patch_disk && !has_balloon && !has_floor && !patch_pins && !patch_res && !has_ports) {
		fputs("hsctl: set: nothing to change: give --balloon, --balloon-floor, limit "
		      "options, --no-limits, pinning options, --no-pin, cgroup limits "
		      "(--cpu-max ...) or --hotplug-ports\n",
		      stderr);
		set_usage();
		return EXIT_USAGE;
	}
	if (check_limits(v) < 0)
		return EXIT_USAGE;

	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s", name);
	json_auto_t *body = json_object();
	int r;
	if (has_balloon)
		json_object_set_new(body, "balloon_mib", json_integer((json_int_t)balloon));
	if (has_floor)
		json_object_set_new(body, "balloon_floor_mib", json_integer((json_int_t)bfloor));
	if (has_ports)
		json_object_set_new(body, "hotplug_ports", json_integer((json_int_t)ports));
	/* Name a disk the VM has, rather than leave hsd to refuse an array
	 * longer than the VM's disks; one list per vCPU needs their number. */
	json_auto_t *vm = NULL;
	if (patch_disk || pins.max_vcpu >= 0 || patch_res) {
		r = ctl_call(ctl, "GET", path, NULL, &vm);
		if (r)
			return r;
	}
	if (patch_pins) {
		json_int_t cpus = json_integer_value(json_object_get(json_object_get(vm, "spec"),
								     "cpus"));
		if (pins.max_vcpu >= 0 && pins.max_vcpu >= cpus) {
			fprintf(stderr, "hsctl: set: VM '%s' has %lld vCPU%s (0 to %lld), no vCPU %ld\n",
				name, cpus, cpus == 1 ? "" : "s", cpus - 1, pins.max_vcpu);
			return EXIT_HSD_ERROR;
		}
		json_t *p = json_object();
		json_t *vcpus = ctl_pins_vcpus_json(&pins, cpus > 0 ? (unsigned)cpus : 0);
		if (vcpus)
			json_object_set_new(p, "vcpus", vcpus);
		if (pins.emulator)
			json_object_set_new(p, "emulator", json_string(pins.emulator));
		json_object_set_new(body, "cpu_pinning", p);
	}
	if (patch_res) {
		/* hsd replaces the whole object: the options change theirs only. */
		json_t *cur = json_object_get(json_object_get(vm, "spec"), "resources");
		json_t *all = json_is_object(cur) ? json_deep_copy(cur) : json_object();
		ctl_resources_merge(all, res);
		json_object_set_new(body, "resources", all);
	}
	if (patch_disk) {
		size_t n_disks = json_array_size(json_object_get(json_object_get(vm, "spec"),
								 "disks"));
		if (disk >= n_disks) {
			if (n_disks == 1)
				fprintf(stderr, "hsctl: set: VM '%s' has one disk (0), no disk "
						"%llu\n",
					name, disk);
			else if (n_disks)
				fprintf(stderr,
					"hsctl: set: VM '%s' has %zu disks (0 to %zu), no disk "
					"%llu\n",
					name, n_disks, n_disks - 1, disk);
			else
				fprintf(stderr, "hsctl: set: VM '%s' has no disks\n", name);
			return EXIT_HSD_ERROR;
		}
		json_t *limits = json_object();
		for (size_t i = 0; i < LIM_N; i++)
			if (v[i]) {
				char key[32];
				limit_key(i, key);
				json_object_set_new(limits, key, json_integer((json_int_t)v[i]));
			}
		if (group)
			json_object_set_new(limits, "group", json_string(group));
		json_t *disks = json_array();
		for (size_t i = 0; i < disk; i++)
			json_array_append_new(disks, json_null());
		json_array_append_new(disks, json_pack("{s:o}", "limits", limits));
		json_object_set_new(body, "disks", disks);
	}
	json_auto_t *j = NULL;
	r = ctl_call(ctl, "PATCH", path, body, &j);
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(j);
	else
		print_result(name, j, patch_disk ? (long)disk : -1, has_balloon, has_floor,
			     patch_pins, patch_res, has_ports);
	return 0;
}
