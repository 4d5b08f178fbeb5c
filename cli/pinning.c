/* SPDX-License-Identifier: Apache-2.0 */
/* CPU pinning and NUMA on the command line: the --vcpu-pin and
 * --emulator-pin options of create and set (the spec's "cpu_pinning"), and
 * the lines info prints for pinning, NUMA placement and the cgroup.
 *
 * A kernel CPU list has commas of its own ("0-3,8"), so one --vcpu-pin
 * never holds several vCPUs' lists: "--vcpu-pin LIST" is every vCPU's
 * list, "--vcpu-pin N:LIST" vCPU N's (repeatable, and it overrides LIST for
 * that vCPU). hsd checks the CPUs against the host; hsctl checks the
 * syntax, so that a typo is named by its option. */
#include <string.h>

#include "hsctl.h"

/* hsd's longest CPU list (spec.c pin_list). */
#define CPU_LIST_MAX 255

bool ctl_check_cpu_list(const char *opt, const char *s)
{
	const char *p = s;
	bool ok = *s && strlen(s) <= CPU_LIST_MAX;
	while (ok && *p) {
		/* N or N-M, N <= M, then ',' and another or the end. */
		char *end;
		if (*p < '0' || *p > '9')
			break;
		unsigned long a = strtoul(p, &end, 10), b = a;
		p = end;
		if (*p == '-') {
			if (p[1] < '0' || p[1] > '9')
				break;
			b = strtoul(p + 1, &end, 10);
			p = end;
		}
		if (b < a || b >= CTL_MAX_HOST_CPUS) {
			fprintf(stderr,
				"hsctl: %s: '%s': %s (host CPUs are numbered from 0 to %d at "
				"most)\n",
				opt, s, b < a ? "a range must not run backwards" : "CPU number too high",
				CTL_MAX_HOST_CPUS - 1);
			return false;
		}
		if (*p == ',' && p[1])
			p++;
		else if (*p)
			break;
	}
	if (ok && !*p)
		return true;
	fprintf(stderr,
		"hsctl: %s: '%s' is not a list of host CPUs: numbers and ranges separated "
		"by commas (digits, '-' and ','), as in 2, 0-3 or 0-3,8\n",
		opt, s);
	return false;
}

int ctl_pins_add_vcpu(CtlPins *p, const char *arg)
{
	const char *colon = strchr(arg, ':');
	if (!colon) {
		if (p->all) {
			fprintf(stderr,
				"hsctl: --vcpu-pin: '%s' after '%s': one list for all vCPUs (give "
				"VCPU:LIST for a single vCPU)\n",
				arg, p->all);
			return -1;
		}
		if (!ctl_check_cpu_list("--vcpu-pin", arg))
			return -1;
		p->all = arg;
		p->any = true;
		return 0;
	}
	_cleanup_free_ char *idx = strndup(arg, (size_t)(colon - arg));
	unsigned long long i;
	if (!idx) {
		fputs("hsctl: out of memory\n", stderr);
		return -1;
	}
	if (!*idx || strspn(idx, "0123456789") != strlen(idx)) {
		fprintf(stderr,
			"hsctl: --vcpu-pin: '%s': before ':' comes a vCPU's index (as in 0:2 for "
			"vCPU 0 on host CPU 2)\n",
			arg);
		return -1;
	}
	if (ctl_parse_uint("--vcpu-pin", idx, CTL_MAX_VCPUS - 1, &i) < 0)
		return -1;
	if (p->vcpu[i]) {
		fprintf(stderr, "hsctl: --vcpu-pin: vCPU %llu is given twice\n", i);
		return -1;
	}
	if (!ctl_check_cpu_list("--vcpu-pin", colon + 1))
		return -1;
	p->vcpu[i] = colon + 1;
	if ((long)i > p->max_vcpu)
		p->max_vcpu = (long)i;
	p->any = true;
	return 0;
}

int ctl_pins_set_emulator(CtlPins *p, const char *arg)
{
	if (!ctl_check_cpu_list("--emulator-pin", arg))
		return -1;
	p->emulator = arg;
	p->any = true;
	return 0;
}

json_t *ctl_pins_vcpus_json(const CtlPins *p, unsigned cpus)
{
	if (p->max_vcpu < 0)
		return p->all ? json_string(p->all) : NULL;
	json_t *a = json_array();
	for (unsigned i = 0; i < cpus; i++) {
		const char *l = i < CTL_MAX_VCPUS && p->vcpu[i] ? p->vcpu[i] : p->all;
		json_array_append_new(a, l ? json_string(l) : json_null());
	}
	return a;
}

/* "vcpus" as hsd shows it: an array (or, from a spec file, a string). The
 * list of vCPU i; NULL when it is not pinned. */
static const char *vcpu_list(json_t *vcpus, size_t i)
{
	if (json_is_string(vcpus))
		return json_string_value(vcpus);
	return json_string_value(json_array_get(vcpus, i));
}

bool ctl_fmt_pinning(json_t *spec, char *buf, size_t size)
{
	json_t *pin = json_object_get(spec, "cpu_pinning");
	json_t *vcpus = json_object_get(pin, "vcpus");
	const char *emu = json_string_value(json_object_get(pin, "emulator"));
	size_t n = json_is_string(vcpus) ? (size_t)json_integer_value(json_object_get(spec, "cpus"))
					 : json_array_size(vcpus);
	size_t len = 0;
	buf[0] = '\0';
	/* Runs of vCPUs on the same list as one: "0-3→2-3". */
	for (size_t i = 0; i < n && len < size;) {
		const char *l = vcpu_list(vcpus, i);
		size_t j = i + 1;
		while (j < n && l && vcpu_list(vcpus, j) && !strcmp(l, vcpu_list(vcpus, j)))
			j++;
		if (l) {
			int w;
			if (j - i > 1)
				w = snprintf(buf + len, size - len, "%s%zu-%zu→%s", len ? ", " : "", i,
					     j - 1, l);
			else
				w = snprintf(buf + len, size - len, "%s%zu→%s", len ? ", " : "", i, l);
			len += w > 0 ? (size_t)w : 0;
		}
		i = j;
	}
	if (emu && len < size)
		snprintf(buf + len, size - len, "%semulator %s", len ? "; " : "none; ", emu);
	return buf[0] != '\0';
}

void ctl_print_placement(json_t *vm)
{
	json_t *spec = json_object_get(vm, "spec");
	char pins[1024];
	if (ctl_fmt_pinning(spec, pins, sizeof(pins)))
		printf("vCPU pins:   %s\n", pins);
	json_t *node = json_object_get(spec, "numa_node");
	if (json_is_integer(node))
		printf("NUMA node:   %lld\n", json_integer_value(node));
	json_t *cells = json_object_get(json_object_get(vm, "placement"), "cells");
	size_t i;
	json_t *c;
	json_array_foreach (cells, i, c) {
		json_int_t v = json_integer_value(json_object_get(c, "vcpus"));
		printf("%s host node %lld: %lld MiB, %lld vCPU%s", i ? ";" : "Placement:  ",
		       json_integer_value(json_object_get(c, "host_node")),
		       json_integer_value(json_object_get(c, "memory_mib")), v, v == 1 ? "" : "s");
	}
	if (json_array_size(cells))
		printf("\n");
	const char *cg = json_string_value(json_object_get(vm, "cgroup"));
	if (cg)
		printf("Cgroup:      %s\n", cg);
	json_t *res = json_object_get(spec, "resources");
	if (json_object_size(res)) {
		char line[256] = "";
		size_t len = 0;
		json_t *v;
		if ((v = json_object_get(res, "cpu_max_pct")))
			len += (size_t)snprintf(line + len, sizeof(line) - len, ", CPU %lld%%",
						json_integer_value(v));
		if ((v = json_object_get(res, "cpu_weight")) && len < sizeof(line))
			len += (size_t)snprintf(line + len, sizeof(line) - len, ", weight %lld",
						json_integer_value(v));
		if ((v = json_object_get(res, "memory_overhead_mib")) && len < sizeof(line))
			len += (size_t)snprintf(line + len, sizeof(line) - len,
						", QEMU overhead %lld MiB", json_integer_value(v));
		if ((v = json_object_get(res, "pids_max")) && len < sizeof(line))
			snprintf(line + len, sizeof(line) - len, ", %lld tasks",
				 json_integer_value(v));
		printf("Limits:      %s\n", line + 2);
	}
	size_t i2;
	json_t *io;
	json_array_foreach (json_object_get(vm, "cgroup_io_max"), i2, io)
		printf("%s%s\n", i2 ? "             " : "io.max:      ", json_string_value(io));
	const char *skipped = json_string_value(json_object_get(vm, "cgroup_skipped"));
	if (skipped && *skipped)
		printf("Not applied: %s (the host's cgroup lacks the controller%s: hsctl host)\n",
		       skipped, strchr(skipped, ' ') ? "s" : "");
}

const struct option ctl_resource_opts[CTL_N_RESOURCE_OPTS] = {
	{"cpu-max", required_argument, NULL, CTL_OPT_RESOURCE},
	{"cpu-weight", required_argument, NULL, CTL_OPT_RESOURCE + 1},
	{"memory-overhead", required_argument, NULL, CTL_OPT_RESOURCE + 2},
	{"pids-max", required_argument, NULL, CTL_OPT_RESOURCE + 3},
};

int ctl_resource_opt(int opt, const char *arg, json_t *res)
{
	static const char *const keys[CTL_N_RESOURCE_OPTS] = {"cpu_max_pct", "cpu_weight",
							      "memory_overhead_mib", "pids_max"};
	size_t i = (size_t)(opt - CTL_OPT_RESOURCE);
	char name[32];
	snprintf(name, sizeof(name), "--%s", ctl_resource_opts[i].name);
	if (!strcmp(arg, "none")) {
		json_object_set_new(res, keys[i], json_null());
		return 0;
	}
	uint64_t v;
	if (i == 2) { /* a size: MiB, or with a suffix */
		if (ctl_parse_balloon(name, arg, &v) < 0)
			return -1;
		if (!v) {
			fprintf(stderr, "hsctl: %s: give a size, or none\n", name);
			return -1;
		}
	} else {
		unsigned long long u;
		size_t len = strlen(arg);
		_cleanup_free_ char *t = strdup(arg);
		if (!t)
			return -1;
		if (i == 0 && len > 1 && t[len - 1] == '%')
			t[len - 1] = '\0'; /* "150%" */
		if (ctl_parse_uint(name, t, UINT32_MAX, &u) < 0)
			return -1;
		v = u;
	}
	json_object_set_new(res, keys[i], json_integer((json_int_t)v));
	return 0;
}

void ctl_resources_merge(json_t *into, json_t *res)
{
	const char *k;
	json_t *v;
	json_object_foreach (res, k, v) {
		if (json_is_null(v))
			json_object_del(into, k);
		else
			json_object_set(into, k, v);
	}
}
