/* SPDX-License-Identifier: Apache-2.0 */
#include "spec.h"
#include "vfio.h"

#include "numa.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <net/if.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#define INVALID "invalid-spec"

const char *vm_accel_to_string(VmAccel a)
{
	return a == VM_ACCEL_KVM ? "kvm" : "tcg";
}

const char *vm_disk_format_to_string(VmDiskFormat f)
{
	return f == VM_DISK_RAW ? "raw" : "qcow2";
}


bool vm_name_is_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > VM_NAME_MAX)
		return false;
	if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!islower(c) && !isdigit(c) && c != '_' && c != '-')
			return false;
	}
	return true;
}

/* Refuse members other than the allowed ones, naming the first unknown. */
static int check_keys(json_t *obj, const char *where, const char *const *allowed, HsError *err)
{
	const char *key;
	json_t *v;
	json_object_foreach (obj, key, v) {
		bool ok = false;
		for (size_t i = 0; allowed[i]; i++)
			if (!strcmp(key, allowed[i]))
				ok = true;
		if (!ok)
			return hs_error_set(err, -EINVAL, INVALID, "%s%sunknown field '%s'", where,
					    *where ? ": " : "", key);
	}
	return 0;
}

static int get_string(json_t *obj, const char *key, const char *field, size_t max, char **ret,
		      HsError *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be a string", field);
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must not contain NUL", field);
	if (strlen(s) > max)
		return hs_error_set(err, -EINVAL, INVALID, "%s: longer than %zu characters",
				    field, max);
	char *d = strdup(s);
	if (!d)
		return -ENOMEM;
	free(*ret);
	*ret = d;
	return 1;
}

static int get_uint(json_t *obj, const char *key, const char *field, uint64_t min, uint64_t max,
		    uint64_t *ret, HsError *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: must be an integer from %" PRIu64 " to %" PRIu64, field, min,
				    max);
	*ret = (uint64_t)json_integer_value(v);
	return 1;
}

static int get_bool(json_t *obj, const char *key, const char *field, bool *ret, HsError *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be true or false", field);
	*ret = json_is_true(v);
	return 1;
}

/* Absolute, normalised (no '.', '..', '//'), printable, no ','-free needed
 * since argv quoting doubles commas. */
static int check_path(const char *path, const char *field, bool check_file, bool want_dir,
		      HsError *err)
{
	if (path[0] != '/')
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an absolute path", field);
	for (const char *p = path; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: contains a control character", field);
	for (const char *p = path; *p;) {
		const char *seg = p + 1;
		const char *end = strchrnul(seg, '/');
		size_t n = (size_t)(end - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: '%s' is not a normalised path (no '.', '..' or "
					    "empty components)",
					    field, path);
		p = end;
	}
	if (!check_file)
		return 0;
	struct stat st;
	if (stat(path, &st) < 0)
		return hs_error_set(err, -EINVAL, INVALID, "%s: cannot use '%s': %s", field, path,
				    strerror(errno));
	if (!want_dir && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: '%s' is not a regular file or block device", field, path);
	if (access(path, R_OK) < 0)
		return hs_error_set(err, -EINVAL, INVALID, "%s: cannot read '%s': %s", field, path,
				    strerror(errno));
	return 0;
}

static bool mac_is_valid(const char *mac)
{
	if (strlen(mac) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2) {
			if (mac[i] != ':')
				return false;
		} else if (!isxdigit((unsigned char)mac[i])) {
			return false;
		}
	}
	unsigned first = (unsigned)strtoul(mac, NULL, 16);
	return (first & 1) == 0; /* unicast */
}

void vm_mac_generate(char out[18])
{
	unsigned char b[3] = {0};
	if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
		uint64_t t = hs_now_ns();
		memcpy(b, &t, sizeof(b));
	}
	snprintf(out, 18, "52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]);
}

void vm_guid_generate(char out[37])
{
	unsigned char b[16] = {0};
	if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
		uint64_t t = hs_now_ns();
		memcpy(b, &t, sizeof(t));
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

static bool guid_is_valid(const char *g)
{
	if (strlen(g) != 36)
		return false;
	for (size_t i = 0; i < 36; i++)
		if (i == 8 || i == 13 || i == 18 || i == 23 ? g[i] != '-'
							      : !isxdigit((unsigned char)g[i]))
			return false;
	return true;
}

/* A size: bytes as a JSON integer, or a string with a binary suffix
 * ("20G", "512M"). */
static int get_size(json_t *obj, const char *key, const char *field, uint64_t *ret, HsError *err)
{
	json_t *v = json_object_get(obj, key);
	*ret = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*ret = (uint64_t)json_integer_value(v);
	} else if (!json_is_string(v) || hs_parse_size(json_string_value(v), ret) < 0 || !*ret) {
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: must be a size in bytes or with a suffix (K, M, G, T: "
				    "powers of 1024), e.g. \"20G\"",
				    field);
	}
	if (*ret > VM_MAX_DISK_SIZE)
		return hs_error_set(err, -EINVAL, INVALID, "%s: at most 64 TiB", field);
	return 1;
}

static const char *const limit_kinds[3] = {"total", "read", "write"};

bool vm_disk_limits_any(const VmDiskLimits *l)
{
	for (int k = 0; k < 3; k++)
		if (l->bps[k] || l->bps_max[k] || l->iops[k] || l->iops_max[k])
			return true;
	return l->group[0] != '\0';
}

int vm_disk_limits_from_json(json_t *j, const char *field, VmDiskLimits *ret, HsError *err)
{
	static const char *const keys[] = {
	    "bps_total",     "bps_read",	  "bps_write",	       "bps_total_max",  "bps_read_max",
	    "bps_write_max", "iops_total",	  "iops_read",	       "iops_write",     "iops_total_max",
	    "iops_read_max", "iops_write_max", "group",		       NULL};
	char f[96];
	int r;
	memset(ret, 0, sizeof(*ret));
	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an object", field);
	r = check_keys(j, field, keys, err);
	if (r < 0)
		return r;
	for (int k = 0; k < 3; k++) {
		struct {
			const char *pre, *post;
			uint64_t *v;
		} fields[] = {{"bps_", "", &ret->bps[k]},
			      {"bps_", "_max", &ret->bps_max[k]},
			      {"iops_", "", &ret->iops[k]},
			      {"iops_", "_max", &ret->iops_max[k]}};
		for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
			char key[32];
			snprintf(key, sizeof(key), "%s%s%s", fields[i].pre, limit_kinds[k],
				 fields[i].post);
			snprintf(f, sizeof(f), "%s.%s", field, key);
			/* QEMU's own ceiling for throttling values. */
			r = get_uint(j, key, f, 0, 1000000000000000ull, fields[i].v, err);
			if (r < 0)
				return r;
		}
	}
	/* QEMU: a total limit excludes read/write ones of the same kind. */
	if ((ret->bps[0] && (ret->bps[1] || ret->bps[2])) ||
	    (ret->iops[0] && (ret->iops[1] || ret->iops[2])))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: a total limit and read/write limits of the same kind "
				    "cannot be combined",
				    field);
	for (int k = 0; k < 3; k++)
		if ((ret->bps_max[k] && ret->bps_max[k] < ret->bps[k]) ||
		    (ret->iops_max[k] && ret->iops_max[k] < ret->iops[k]) ||
		    (ret->bps_max[k] && !ret->bps[k]) || (ret->iops_max[k] && !ret->iops[k]))
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: a burst (%s_max) needs its rate and must not be "
					    "below it",
					    field, limit_kinds[k]);
	_cleanup_free_ char *group = NULL;
	snprintf(f, sizeof(f), "%s.group", field);
	r = get_string(j, "group", f, 32, &group, err);
	if (r < 0)
		return r;
	if (group) {
		if (!vm_name_is_valid(group))
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: '%s' is not a valid group name (a-z 0-9 _ -)", f,
					    group);
		snprintf(ret->group, sizeof(ret->group), "%s", group);
	}
	return 0;
}

json_t *vm_disk_limits_to_json(const VmDiskLimits *l)
{
	json_t *o = json_object();
	for (int k = 0; k < 3; k++) {
		char key[32];
		const uint64_t vals[4] = {l->bps[k], l->bps_max[k], l->iops[k], l->iops_max[k]};
		const char *pre[4] = {"bps_", "bps_", "iops_", "iops_"};
		const char *post[4] = {"", "_max", "", "_max"};
		for (int i = 0; i < 4; i++)
			if (vals[i]) {
				snprintf(key, sizeof(key), "%s%s%s", pre[i], limit_kinds[k], post[i]);
				json_object_set_new(o, key, json_integer((json_int_t)vals[i]));
			}
	}
	if (l->group[0])
		json_object_set_new(o, "group", json_string(l->group));
	return o;
}

static int parse_disk(json_t *d, size_t i, const VmSpecDefaults *defs, VmDisk *ret, HsError *err)
{
	static const char *const keys[] = {"path", "template", "size", "format", "readonly",
					   "limits", NULL};
	char field[64];
	int r;

	snprintf(field, sizeof(field), "disks[%zu]", i);
	if (!json_is_object(d))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an object", field);
	r = check_keys(d, field, keys, err);
	if (r < 0)
		return r;
	snprintf(field, sizeof(field), "disks[%zu].path", i);
	r = get_string(d, "path", field, 4095, &ret->path, err);
	if (r < 0)
		return r;
	snprintf(field, sizeof(field), "disks[%zu].template", i);
	r = get_string(d, "template", field, VM_NAME_MAX, &ret->template, err);
	if (r < 0)
		return r;
	snprintf(field, sizeof(field), "disks[%zu].size", i);
	r = get_size(d, "size", field, &ret->size, err);
	if (r < 0)
		return r;
	snprintf(field, sizeof(field), "disks[%zu]", i);
	if (ret->path && (ret->template || ret->size))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: either 'path' (a file of yours) or 'template'/'size' (a "
				    "disk hsd makes and manages), not both",
				    field);
	if (!ret->path && !ret->template && !ret->size)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: needs 'path', 'template' or 'size'", field);
	ret->managed = !ret->path;
	if (ret->template && !vm_name_is_valid(ret->template))
		return hs_error_set(err, -EINVAL, INVALID, "%s.template: '%s' is not a valid name",
				    field, ret->template);
	if (ret->path) {
		snprintf(field, sizeof(field), "disks[%zu].path", i);
		r = check_path(ret->path, field, defs->check_files, false, err);
		if (r < 0)
			return r;
	}

	_cleanup_free_ char *fmt = NULL;
	snprintf(field, sizeof(field), "disks[%zu].format", i);
	r = get_string(d, "format", field, 16, &fmt, err);
	if (r < 0)
		return r;
	ret->format = VM_DISK_QCOW2;
	if (fmt && !strcmp(fmt, "raw"))
		ret->format = VM_DISK_RAW;
	else if (fmt && strcmp(fmt, "qcow2"))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be 'qcow2' or 'raw', not '%s'",
				    field, fmt);
	if (ret->managed && ret->format != VM_DISK_QCOW2)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: a managed disk is always qcow2 (its layers are)", field);
	snprintf(field, sizeof(field), "disks[%zu].limits", i);
	r = vm_disk_limits_from_json(json_object_get(d, "limits"), field, &ret->limits, err);
	if (r < 0)
		return r;
	snprintf(field, sizeof(field), "disks[%zu].readonly", i);
	return get_bool(d, "readonly", field, &ret->readonly, err) < 0 ? -EINVAL : 0;
}

/* "resources": {"cpu_max_pct": 150, "cpu_weight": 200,
 * "memory_overhead_mib": 256, "pids_max": 512}: the VM's cgroup. */
static int parse_resources(json_t *j, VmSpec *s, HsError *err)
{
	static const char *const keys[] = {"cpu_max_pct", "cpu_weight", "memory_overhead_mib",
					   "pids_max", NULL};
	uint64_t v;
	int r;
	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, INVALID, "resources: must be an object");
	if ((r = check_keys(j, "resources", keys, err)) < 0)
		return r;
	/* cpu.max's quota is at least 1 ms per 100 ms period: 1 %. */
	if ((r = get_uint(j, "cpu_max_pct", "resources.cpu_max_pct", 1, 100u * VM_MAX_CPUS, &v,
			  err)) < 0)
		return r;
	s->cpu_max_pct = r ? (unsigned)v : 0;
	if ((r = get_uint(j, "cpu_weight", "resources.cpu_weight", 1, 10000, &v, err)) < 0)
		return r;
	s->cpu_weight = r ? (unsigned)v : 0;
	if ((r = get_uint(j, "memory_overhead_mib", "resources.memory_overhead_mib", 16,
			  1024 * 1024, &s->memory_overhead_mib, err)) < 0)
		return r;
	if ((r = get_uint(j, "pids_max", "resources.pids_max", 16, 4194304, &s->pids_max, err)) < 0)
		return r;
	return 0;
}

const char *vm_hugepages_to_string(uint64_t size, char *buf, size_t buf_size)
{
	static const char units[] = "KMGT";
	unsigned u = 0;
	size >>= 10;
	while (u + 1 < sizeof(units) - 1 && size >= 1024 && size % 1024 == 0) {
		size /= 1024;
		u++;
	}
	snprintf(buf, buf_size, "%llu%c", (unsigned long long)size, units[u]);
	return buf;
}

const char *vm_spec_ksm_excluded(const VmSpec *s)
{
	if (s->hugepage_size)
		return "guest RAM is on huge pages (hugetlb), which KSM never merges";
	if (s->no_mem_merge)
		return "mem_merge is false";
	return NULL;
}

/* "hugepages": "2M" / "1G" (any size string; null: ordinary RAM). After
 * memory_mib. */
static int parse_hugepages(json_t *obj, VmSpec *s, HsError *err)
{
	json_t *v = json_object_get(obj, "hugepages");
	uint64_t size = 0;
	char a[16];
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return hs_error_set(err, -EINVAL, INVALID,
				    "hugepages: must be a huge page size such as \"2M\" or \"1G\" "
				    "(or null: ordinary RAM)");
	const char *str = json_string_value(v);
	if (strlen(str) != json_string_length(v) || strlen(str) > 16 ||
	    hs_parse_size(str, &size) < 0 || size < VM_HUGEPAGE_MIN || size > VM_HUGEPAGE_MAX ||
	    (size & (size - 1)))
		return hs_error_set(err, -EINVAL, INVALID,
				    "hugepages: '%.16s' is not a huge page size (a power of two from "
				    "64K to 16G, such as \"2M\" or \"1G\")",
				    str);
	if ((s->memory_mib << 20) % size)
		return hs_error_set(err, -EINVAL, INVALID,
				    "memory_mib: %" PRIu64 " is not a whole number of %s huge pages "
				    "(hugepages): give a multiple of %" PRIu64,
				    s->memory_mib, vm_hugepages_to_string(size, a, sizeof(a)),
				    size >> 20);
	s->hugepage_size = size;
	return 0;
}

bool vm_spec_pinned(const VmSpec *s)
{
	for (unsigned i = 0; i < s->cpus; i++)
		if (s->vcpu_pins[i])
			return true;
	return s->emulator_pin != NULL;
}

static int pin_list(json_t *v, const char *field, char **ret, HsError *err)
{
	unsigned char bits[NUMA_MAX_CPUS / 8] = {0};
	if (!json_is_string(v) || json_string_length(v) > 255 ||
	    numa_parse_cpulist(json_string_value(v), bits, NUMA_MAX_CPUS) <= 0)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: must be a list of host CPUs like \"2\" or \"0-3,8\"",
				    field);
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

/* "cpu_pinning": {"vcpus": "2-3" (every vCPU) or ["2", "3", ...] (one
 * per vCPU), "emulator": "0-1"}. */
static int parse_pinning(json_t *p, VmSpec *s, HsError *err)
{
	static const char *const keys[] = {"vcpus", "emulator", NULL};
	if (!p || json_is_null(p))
		return 0;
	if (!json_is_object(p))
		return hs_error_set(err, -EINVAL, INVALID, "cpu_pinning: must be an object");
	int r = check_keys(p, "cpu_pinning", keys, err);
	if (r < 0)
		return r;
	json_t *v = json_object_get(p, "vcpus"), *e = json_object_get(p, "emulator");
	char field[48];
	if (json_is_string(v)) {
		for (unsigned i = 0; i < s->cpus; i++)
			if ((r = pin_list(v, "cpu_pinning.vcpus", &s->vcpu_pins[i], err)) < 0)
				return r;
	} else if (json_is_array(v)) {
		if (json_array_size(v) != s->cpus)
			return hs_error_set(err, -EINVAL, INVALID,
					    "cpu_pinning.vcpus: %zu entries for %u vCPUs (one per vCPU, "
					    "or one string for all)",
					    json_array_size(v), s->cpus);
		for (unsigned i = 0; i < s->cpus; i++) {
			snprintf(field, sizeof(field), "cpu_pinning.vcpus[%u]", i);
			json_t *x = json_array_get(v, i);
			if (json_is_null(x))
				continue;
			if ((r = pin_list(x, field, &s->vcpu_pins[i], err)) < 0)
				return r;
		}
	} else if (v && !json_is_null(v)) {
		return hs_error_set(err, -EINVAL, INVALID,
				    "cpu_pinning.vcpus: a CPU list for all vCPUs or an array with "
				    "one per vCPU");
	}
	if (e && !json_is_null(e) && (r = pin_list(e, "cpu_pinning.emulator", &s->emulator_pin, err)) < 0)
		return r;
	return 0;
}

static const char *const nic_types[] = {
	[VM_NIC_USER] = "user",	      [VM_NIC_BRIDGE] = "bridge", [VM_NIC_MACVTAP] = "macvtap",
	[VM_NIC_VF] = "vf",	      [VM_NIC_NETWORK] = "network",
};
static const char *const nic_models[] = {
	[VM_NIC_VIRTIO] = "virtio",
	[VM_NIC_E1000] = "e1000",
	[VM_NIC_E1000E] = "e1000e",
	[VM_NIC_RTL8139] = "rtl8139",
};

const char *vm_nic_type_to_string(VmNicType t)
{
	return nic_types[t];
}

const char *vm_nic_model_to_string(VmNicModel m)
{
	return nic_models[m];
}

bool vm_ifname_is_valid(const char *n)
{
	if (!n[0] || strlen(n) >= IFNAMSIZ)
		return false;
	for (const char *p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("_.-", *p))
			return false;
	return true;
}

static bool nic_id_is_valid(const char *id)
{
	if (!id[0] || strlen(id) > VM_NIC_ID_MAX)
		return false;
	for (const char *p = id; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && !strchr("_-", *p))
			return false;
	return true;
}

void vm_nic_clear(VmNic *n)
{
	free(n->bridge);
	free(n->network);
	memset(n, 0, sizeof(*n));
}

unsigned vm_nic_queues(const VmNic *n, unsigned cpus)
{
	if (n->model != VM_NIC_VIRTIO || n->type == VM_NIC_USER || n->type == VM_NIC_VF)
		return 1;
	unsigned q = n->queues ? n->queues : cpus;
	return q < 1 ? 1 : q > VM_NIC_MAX_QUEUES ? VM_NIC_MAX_QUEUES : q;
}

int vm_nic_from_json(json_t *n, const char *where, char (*used)[VM_NIC_ID_MAX + 1],
		     size_t n_used, VmNic *ret, HsError *err)
{
	static const char *const keys[] = {"id",     "type",  "bridge", "network", "mac",
					   "model",  "queues", "vhost", "vlan",	   "link", NULL};
	char field[64];
	int r;
	VmNic nic = {.vhost = -1};

	if (!json_is_object(n))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an object", where);
	r = check_keys(n, where, keys, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *type = NULL, *mac = NULL, *id = NULL, *model = NULL, *link = NULL;
	snprintf(field, sizeof(field), "%s.id", where);
	if ((r = get_string(n, "id", field, VM_NIC_ID_MAX, &id, err)) < 0)
		goto fail;
	if (id && !nic_id_is_valid(id)) {
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: '%s' is not a NIC id (a-z, 0-9, '_', '-'; at most %d)", field,
				 id, VM_NIC_ID_MAX);
		goto fail;
	}
	for (size_t i = 0; id && i < n_used; i++)
		if (!strcmp(used[i], id)) {
			r = hs_error_set(err, -EINVAL, INVALID, "%s: '%s' is already a NIC of the VM",
					 field, id);
			goto fail;
		}
	if (id) {
		snprintf(nic.id, sizeof(nic.id), "%s", id);
	} else {
		for (unsigned k = 0; !nic.id[0]; k++) {
			char cand[VM_NIC_ID_MAX + 1];
			snprintf(cand, sizeof(cand), "net%u", k);
			bool taken = false;
			for (size_t i = 0; i < n_used; i++)
				taken |= !strcmp(used[i], cand);
			if (!taken)
				snprintf(nic.id, sizeof(nic.id), "%s", cand);
		}
	}

	snprintf(field, sizeof(field), "%s.network", where);
	if ((r = get_string(n, "network", field, VM_NAME_MAX, &nic.network, err)) < 0)
		goto fail;
	if (nic.network && !vm_name_is_valid(nic.network)) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: '%s' is not a network name", field,
				 nic.network);
		goto fail;
	}
	snprintf(field, sizeof(field), "%s.type", where);
	if ((r = get_string(n, "type", field, 16, &type, err)) < 0)
		goto fail;
	if (!type) {
		nic.type = nic.network ? VM_NIC_NETWORK
				       : json_object_get(n, "bridge") ? VM_NIC_BRIDGE : VM_NIC_USER;
	} else {
		size_t t = 0;
		while (t < ARRAY_SIZE(nic_types) && strcmp(type, nic_types[t]))
			t++;
		if (t == ARRAY_SIZE(nic_types) || t == VM_NIC_NETWORK) {
			r = hs_error_set(err, -EINVAL, INVALID,
					 "%s: must be 'user', 'bridge', 'macvtap' or 'vf', not '%s'",
					 field, type);
			goto fail;
		}
		nic.type = (VmNicType)t;
	}
	if (nic.network && nic.type == VM_NIC_USER) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: a 'user' NIC has no network", field);
		goto fail;
	}
	if (!nic.network && (nic.type == VM_NIC_MACVTAP || nic.type == VM_NIC_VF)) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s.network: required for a %s NIC", where,
				 nic_types[nic.type]);
		goto fail;
	}

	snprintf(field, sizeof(field), "%s.bridge", where);
	if ((r = get_string(n, "bridge", field, IFNAMSIZ - 1, &nic.bridge, err)) < 0)
		goto fail;
	if (nic.bridge && (nic.network || nic.type != VM_NIC_BRIDGE)) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: only for a bridge NIC without a network",
				 field);
		goto fail;
	}
	if (nic.type == VM_NIC_BRIDGE && !nic.network) {
		if (!nic.bridge || !nic.bridge[0]) {
			r = hs_error_set(err, -EINVAL, INVALID,
					 "%s: required for a bridge NIC (or a network)", field);
			goto fail;
		}
		if (!vm_ifname_is_valid(nic.bridge)) {
			r = hs_error_set(err, -EINVAL, INVALID, "%s: '%s' is not a valid interface name",
					 field, nic.bridge);
			goto fail;
		}
	}

	snprintf(field, sizeof(field), "%s.mac", where);
	if ((r = get_string(n, "mac", field, 17, &mac, err)) < 0)
		goto fail;
	if (mac) {
		if (!mac_is_valid(mac)) {
			r = hs_error_set(err, -EINVAL, INVALID,
					 "%s: '%s' is not a unicast MAC like 52:54:00:12:34:56",
					 field, mac);
			goto fail;
		}
		for (char *p = mac; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		memcpy(nic.mac, mac, 18);
		nic.mac_given = true;
	} else {
		vm_mac_generate(nic.mac);
	}

	snprintf(field, sizeof(field), "%s.model", where);
	if ((r = get_string(n, "model", field, 16, &model, err)) < 0)
		goto fail;
	if (model) {
		size_t m = 0;
		while (m < ARRAY_SIZE(nic_models) && strcmp(model, nic_models[m]))
			m++;
		if (m == ARRAY_SIZE(nic_models)) {
			r = hs_error_set(err, -EINVAL, INVALID,
					 "%s: must be 'virtio', 'e1000', 'e1000e' or 'rtl8139', "
					 "not '%s'",
					 field, model);
			goto fail;
		}
		nic.model = (VmNicModel)m;
	}
	uint64_t v = 0;
	snprintf(field, sizeof(field), "%s.queues", where);
	if ((r = get_uint(n, "queues", field, 0, VM_NIC_MAX_QUEUES, &v, err)) < 0)
		goto fail;
	nic.queues = (unsigned)v;
	if (nic.queues > 1 && (nic.model != VM_NIC_VIRTIO || nic.type == VM_NIC_USER ||
			       nic.type == VM_NIC_VF)) {
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: more than one queue needs a virtio NIC on a bridge or macvtap",
				 field);
		goto fail;
	}
	v = 0;
	snprintf(field, sizeof(field), "%s.vlan", where);
	if ((r = get_uint(n, "vlan", field, 0, 4094, &v, err)) < 0)
		goto fail;
	nic.vlan = (unsigned)v;
	if (nic.vlan && (nic.type == VM_NIC_USER || nic.type == VM_NIC_MACVTAP)) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: a VLAN is for bridge and vf NICs",
				 field);
		goto fail;
	}
	snprintf(field, sizeof(field), "%s.vhost", where);
	bool vh = false;
	if ((r = get_bool(n, "vhost", field, &vh, err)) < 0)
		goto fail;
	if (r > 0)
		nic.vhost = vh;
	snprintf(field, sizeof(field), "%s.link", where);
	if ((r = get_string(n, "link", field, 8, &link, err)) < 0)
		goto fail;
	if (link && strcmp(link, "up") && strcmp(link, "down")) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: must be 'up' or 'down', not '%s'", field,
				 link);
		goto fail;
	}
	nic.link_down = link && !strcmp(link, "down");
	*ret = nic;
	return 0;
fail:
	vm_nic_clear(&nic);
	return r < 0 ? r : -EINVAL;
}

json_t *vm_nic_to_json(const VmNic *n)
{
	json_t *o = json_pack("{s:s, s:s}", "id", n->id, "mac", n->mac);
	if (!o)
		return NULL;
	if (n->type != VM_NIC_NETWORK)
		json_object_set_new(o, "type", json_string(vm_nic_type_to_string(n->type)));
	if (n->network)
		json_object_set_new(o, "network", json_string(n->network));
	if (n->bridge)
		json_object_set_new(o, "bridge", json_string(n->bridge));
	if (n->type != VM_NIC_VF)
		json_object_set_new(o, "model", json_string(nic_models[n->model]));
	if (n->queues)
		json_object_set_new(o, "queues", json_integer(n->queues));
	if (n->vhost >= 0)
		json_object_set_new(o, "vhost", json_boolean(n->vhost));
	if (n->vlan)
		json_object_set_new(o, "vlan", json_integer(n->vlan));
	json_object_set_new(o, "link", json_string(n->link_down ? "down" : "up"));
	return o;
}

bool vm_machine_is_q35(const char *machine)
{
	return machine && (hs_str_has_prefix(machine, "q35") || hs_str_has_prefix(machine, "pc-q35"));
}

void vm_hostdev_clear(VmHostdev *h)
{
	free(h->rom_file);
	memset(h, 0, sizeof(*h));
}

const char *vm_hostdev_describe(const VmHostdev *h, char *buf, size_t size)
{
	if (h->address[0])
		snprintf(buf, size, "%s", h->address);
	else
		snprintf(buf, size, "%04x:%04x#%u", h->vendor, h->device, h->index);
	return buf;
}

/* "10de:1b80": vendor and device ids, four hex digits each. */
static bool parse_pci_id(const char *s, unsigned *vendor, unsigned *device)
{
	if (strlen(s) != 9 || s[4] != ':')
		return false;
	for (int i = 0; i < 9; i++)
		if (i != 4 && !isxdigit((unsigned char)s[i]))
			return false;
	*vendor = (unsigned)strtoul(s, NULL, 16);
	*device = (unsigned)strtoul(s + 5, NULL, 16);
	return true;
}

int vm_hostdev_from_json(json_t *j, const char *field, VmHostdev *ret, HsError *err)
{
	static const char *const keys[] = {"address", "id",	 "index",   "all_functions",
					   "x_vga",   "rom_file", "rom_bar", "display", NULL};
	VmHostdev h = {.all_functions = -1};
	char f[80];
	_cleanup_free_ char *addr = NULL, *id = NULL, *display = NULL;
	uint64_t u = 0;
	bool b;
	int r;

	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an object", field);
	r = check_keys(j, field, keys, err);
	if (r < 0)
		return r;
	snprintf(f, sizeof(f), "%s.address", field);
	if ((r = get_string(j, "address", f, 32, &addr, err)) < 0)
		return r;
	snprintf(f, sizeof(f), "%s.id", field);
	if ((r = get_string(j, "id", f, 16, &id, err)) < 0)
		return r;
	if (!addr == !id)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: give either 'address' (\"0000:01:00.0\") or 'id' "
				    "(vendor:device, \"10de:1b80\")",
				    field);
	if (addr && !vfio_addr_parse(addr, h.address))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s.address: '%s' is not a PCI address like 0000:01:00.0", field,
				    addr);
	if (id && !parse_pci_id(id, &h.vendor, &h.device))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s.id: '%s' is not vendor:device like 10de:1b80", field, id);
	snprintf(f, sizeof(f), "%s.index", field);
	if ((r = get_uint(j, "index", f, 0, 255, &u, err)) < 0)
		return r;
	if (r > 0 && addr)
		return hs_error_set(err, -EINVAL, INVALID, "%s: only with 'id'", f);
	h.index = (unsigned)u;
	snprintf(f, sizeof(f), "%s.all_functions", field);
	if ((r = get_bool(j, "all_functions", f, &b, err)) < 0)
		return r;
	if (r > 0)
		h.all_functions = b;
	snprintf(f, sizeof(f), "%s.x_vga", field);
	if ((r = get_bool(j, "x_vga", f, &h.x_vga, err)) < 0)
		return r;
	b = true;
	snprintf(f, sizeof(f), "%s.rom_bar", field);
	if ((r = get_bool(j, "rom_bar", f, &b, err)) < 0)
		return r;
	h.rom_bar_off = !b;
	snprintf(f, sizeof(f), "%s.rom_file", field);
	if ((r = get_string(j, "rom_file", f, 4095, &h.rom_file, err)) < 0 ||
	    (h.rom_file && (r = check_path(h.rom_file, f, false, false, err)) < 0)) {
		free(h.rom_file);
		return r;
	}
	snprintf(f, sizeof(f), "%s.display", field);
	if ((r = get_string(j, "display", f, 8, &display, err)) < 0)
		goto fail;
	if (display && strcmp(display, "off") && strcmp(display, "on") && strcmp(display, "auto")) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: must be 'off', 'on' or 'auto', not '%s'",
				 f, display);
		goto fail;
	}
	if (display)
		snprintf(h.display, sizeof(h.display), "%s", display);
	*ret = h;
	return 0;
fail:
	free(h.rom_file);
	return r;
}

json_t *vm_hostdev_to_json(const VmHostdev *h)
{
	json_t *o = json_object();
	if (h->address[0]) {
		json_object_set_new(o, "address", json_string(h->address));
	} else {
		char id[16];
		snprintf(id, sizeof(id), "%04x:%04x", h->vendor, h->device);
		json_object_set_new(o, "id", json_string(id));
		json_object_set_new(o, "index", json_integer(h->index));
	}
	if (h->all_functions >= 0)
		json_object_set_new(o, "all_functions", json_boolean(h->all_functions));
	if (h->x_vga)
		json_object_set_new(o, "x_vga", json_true());
	if (h->rom_bar_off)
		json_object_set_new(o, "rom_bar", json_false());
	if (h->rom_file)
		json_object_set_new(o, "rom_file", json_string(h->rom_file));
	if (h->display[0])
		json_object_set_new(o, "display", json_string(h->display));
	return o;
}

static bool hostdev_same(const VmHostdev *a, const VmHostdev *b)
{
	return a->address[0] ? !strcmp(a->address, b->address)
			     : a->vendor == b->vendor && a->device == b->device &&
				       a->index == b->index && !b->address[0];
}

static int parse_hostdevs(json_t *obj, VmSpec *s, HsError *err)
{
	json_t *hd = json_object_get(obj, "hostdevs");
	uint64_t u = 0;
	int r = get_uint(obj, "hotplug_ports", "hotplug_ports", 0, VM_MAX_HOTPLUG_PORTS, &u, err);
	if (r < 0)
		return r;
	if (u && !vm_machine_is_q35(s->machine))
		return hs_error_set(err, -EINVAL, INVALID,
				    "hotplug_ports: only for q35 machines (on '%s' host devices "
				    "are hot-plugged onto the PCI bus itself)",
				    s->machine);
	s->hotplug_ports = (unsigned)u;
	if (!hd || json_is_null(hd))
		return 0;
	if (!json_is_array(hd))
		return hs_error_set(err, -EINVAL, INVALID, "hostdevs: must be an array");
	if (json_array_size(hd) > VM_MAX_HOSTDEVS)
		return hs_error_set(err, -EINVAL, INVALID, "hostdevs: at most %d", VM_MAX_HOSTDEVS);
	bool vga = false;
	for (size_t i = 0; i < json_array_size(hd); i++) {
		char field[32];
		snprintf(field, sizeof(field), "hostdevs[%zu]", i);
		r = vm_hostdev_from_json(json_array_get(hd, i), field, &s->hostdevs[i], err);
		if (r < 0)
			return r;
		s->n_hostdevs = i + 1;
		for (size_t k = 0; k < i; k++)
			if (hostdev_same(&s->hostdevs[k], &s->hostdevs[i])) {
				char d[40];
				return hs_error_set(
					err, -EINVAL, INVALID, "%s: %s already given as hostdevs[%zu]",
					field, vm_hostdev_describe(&s->hostdevs[i], d, sizeof(d)), k);
			}
		if (s->hostdevs[i].x_vga && vga)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s.x_vga: only one host device can be the guest's VGA",
					    field);
		vga |= s->hostdevs[i].x_vga;
	}
	return 0;
}

static int parse_machine(const char *m, HsError *err)
{
	if (!m[0])
		return hs_error_set(err, -EINVAL, INVALID, "machine: must not be empty");
	for (const char *p = m; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
			return hs_error_set(err, -EINVAL, INVALID,
					    "machine: '%s' is not a machine type name", m);
	return 0;
}

/* A model name, optionally followed by ,+flag / ,-flag / ,prop=value. */
static int parse_cpu_model(const char *m, HsError *err)
{
	if (!m[0] || m[0] == ',')
		return hs_error_set(err, -EINVAL, INVALID, "cpu_model: must start with a model name");
	for (const char *p = m; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._+-,=", *p))
			return hs_error_set(err, -EINVAL, INVALID,
					    "cpu_model: '%s' has a character not allowed in a QEMU "
					    "CPU model",
					    m);
	return 0;
}

int vm_spec_check_balloon(const VmSpec *s, HsError *err)
{
	if (s->balloon_mib > s->memory_mib ||
	    (s->balloon_mib && s->balloon_mib < VM_MIN_MEMORY_MIB))
		return hs_error_set(err, -EINVAL, INVALID,
				    "balloon_mib: must be 0 (all of memory) or from %d to %" PRIu64
				    " (memory_mib)",
				    VM_MIN_MEMORY_MIB, s->memory_mib);
	if (s->balloon_floor_mib &&
	    (s->balloon_floor_mib < VM_MIN_MEMORY_MIB || s->balloon_floor_mib > s->memory_mib))
		return hs_error_set(err, -EINVAL, INVALID,
				    "balloon_floor_mib: must be 0 (not in the automatic balloon "
				    "policy) or from %d to %" PRIu64 " (memory_mib)",
				    VM_MIN_MEMORY_MIB, s->memory_mib);
	if (s->balloon_mib && s->balloon_mib < s->memory_mib && s->hugepage_size)
		return hs_error_set(err, -EINVAL, INVALID, VM_BALLOON_HUGEPAGES_ERROR);
	if (s->balloon_floor_mib && s->hugepage_size)
		return hs_error_set(err, -EINVAL, INVALID,
				    "balloon_floor_mib: not with hugepages (the automatic policy "
				    "would balloon the guest: see balloon_mib)");
	if (s->balloon_floor_mib && s->balloon_mib && s->balloon_floor_mib > s->balloon_mib)
		return hs_error_set(err, -EINVAL, INVALID,
				    "balloon_floor_mib: %" PRIu64 " is above balloon_mib (%" PRIu64
				    "), the VM's target",
				    s->balloon_floor_mib, s->balloon_mib);
	return 0;
}

const char *vm_firmware_to_string(VmFirmware f)
{
	return f == VM_FIRMWARE_UEFI ? "uefi" : "bios";
}

/* "firmware", "secure_boot", "tpm" (after "machine"). */
static int parse_firmware(json_t *obj, VmSpec *s, HsError *err)
{
	_cleanup_free_ char *fw = NULL;
	int r = get_string(obj, "firmware", "firmware", 8, &fw, err);
	if (r < 0)
		return r;
	if (!fw || !strcmp(fw, "bios"))
		s->firmware = VM_FIRMWARE_BIOS;
	else if (!strcmp(fw, "uefi"))
		s->firmware = VM_FIRMWARE_UEFI;
	else
		return hs_error_set(err, -EINVAL, INVALID,
				    "firmware: must be \"bios\" or \"uefi\", not '%s'", fw);
	if ((r = get_bool(obj, "secure_boot", "secure_boot", &s->secure_boot, err)) < 0)
		return r;
	if (s->secure_boot && s->firmware != VM_FIRMWARE_UEFI)
		return hs_error_set(err, -EINVAL, INVALID,
				    "secure_boot: only with \"firmware\": \"uefi\"");
	/* OVMF's Secure Boot build keeps its variables in SMM, which only
	 * q35 has. */
	if (s->secure_boot && !vm_machine_is_q35(s->machine))
		return hs_error_set(err, -EINVAL, INVALID,
				    "secure_boot: needs a q35 machine (SMM), not '%s'", s->machine);
	r = get_bool(obj, "tpm", "tpm", &s->tpm, err);
	return r < 0 ? r : 0;
}

/* "memory_file", "vmgenid" (made when absent), "warm_template". */
static int parse_memory_file(json_t *obj, VmSpec *s, HsError *err)
{
	int r = get_bool(obj, "memory_file", "memory_file", &s->memory_file, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *guid = NULL, *tpl = NULL;
	r = get_string(obj, "vmgenid", "vmgenid", 36, &guid, err);
	if (r < 0)
		return r;
	r = get_string(obj, "warm_template", "warm_template", VM_NAME_MAX, &tpl, err);
	if (r < 0)
		return r;
	if (s->memory_file && s->hugepage_size)
		return hs_error_set(err, -EINVAL, INVALID,
				    "memory_file: not with hugepages (not supported yet)");
	if ((guid || tpl) && !s->memory_file)
		return hs_error_set(err, -EINVAL, INVALID, "%s: only with memory_file: true",
				    guid ? "vmgenid" : "warm_template");
	if (guid && !guid_is_valid(guid))
		return hs_error_set(err, -EINVAL, INVALID,
				    "vmgenid: '%s' is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-"
				    "xxxxxxxxxxxx)",
				    guid);
	if (tpl && !vm_name_is_valid(tpl))
		return hs_error_set(err, -EINVAL, INVALID, "warm_template: not a template name");
	if (guid)
		snprintf(s->vmgenid, sizeof(s->vmgenid), "%s", guid);
	else if (s->memory_file)
		vm_guid_generate(s->vmgenid);
	if (tpl)
		snprintf(s->warm_template, sizeof(s->warm_template), "%s", tpl);
	return 0;
}

static const char *const display_types[] = {
	[VM_DISPLAY_NONE] = "none",
	[VM_DISPLAY_VIRTIO] = "virtio",
	[VM_DISPLAY_QXL] = "qxl",
};

const char *vm_display_type_to_string(VmDisplayType t)
{
	return (size_t)t < ARRAY_SIZE(display_types) ? display_types[t] : "none";
}

int vm_display_from_json(json_t *j, const char *field, VmDisplay *ret, HsError *err)
{
	static const char *const keys[] = {"type", "listen", NULL};
	VmDisplay d = {.type = VM_DISPLAY_NONE};
	char where[64];

	if (!j || json_is_null(j)) {
		*ret = d;
		return 0;
	}
	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, INVALID, "%s: must be an object", field);
	int r = check_keys(j, field, keys, err);
	if (r < 0)
		return r;
	json_t *t = json_object_get(j, "type");
	if (!t)
		return hs_error_set(err, -EINVAL, INVALID, "%s.type: required", field);
	bool found = false;
	for (size_t i = 0; json_is_string(t) && i < ARRAY_SIZE(display_types); i++)
		if (!strcmp(json_string_value(t), display_types[i])) {
			d.type = (VmDisplayType)i;
			found = true;
		}
	if (!found)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s.type: must be 'virtio', 'qxl' or 'none'", field);
	snprintf(where, sizeof(where), "%s.listen", field);
	_cleanup_free_ char *listen = NULL;
	r = get_string(j, "listen", where, sizeof(d.listen) - 1, &listen, err);
	if (r < 0)
		return r;
	if (listen) {
		/* An address, not a host name: nothing to resolve, and it goes
		 * into QEMU's option list as it is. */
		unsigned char buf[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, listen, buf) != 1 && inet_pton(AF_INET6, listen, buf) != 1)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: '%s' is not an IPv4 or IPv6 address", where,
					    listen);
		if (d.type == VM_DISPLAY_NONE)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: only with a display (type 'virtio' or 'qxl')",
					    where);
		snprintf(d.listen, sizeof(d.listen), "%s", listen);
	}
	*ret = d;
	return 0;
}

json_t *vm_display_to_json(const VmDisplay *d)
{
	json_t *o = json_pack("{s:s}", "type", vm_display_type_to_string(d->type));
	if (o && d->listen[0])
		json_object_set_new(o, "listen", json_string(d->listen));
	return o;
}

int vm_spec_from_json(json_t *obj, const VmSpecDefaults *defs, VmSpec *ret, HsError *err)
{
	static const char *const keys[] = {"name",    "cpus",      "memory_mib", "accel",
					   "agent", /* the guest agent's port */
					   "machine", "cpu_model", "mem_merge",  "kernel",
					   "initrd",  "cmdline",   "disks",      "nics", "cloud_init", "balloon_mib",
					   "cpu_pinning", "numa_node", "resources", "hugepages",
					   "balloon_floor_mib", "hostdevs", "hotplug_ports",
					   "memory_file", "vmgenid", "warm_template", "display",
					   "firmware", "secure_boot", "tpm", NULL};
	VmSpec s = {0};
	_cleanup_free_ char *accel = NULL;
	uint64_t u;
	int r;

	if (!json_is_object(obj))
		return hs_error_set(err, -EINVAL, INVALID, "the VM spec must be a JSON object");
	r = check_keys(obj, "", keys, err);
	if (r < 0)
		return r;

	json_t *name = json_object_get(obj, "name");
	if (!name)
		return hs_error_set(err, -EINVAL, INVALID, "name: required");
	/* A NUL inside would cut the name short into another, valid, one. */
	if (!json_is_string(name) || strlen(json_string_value(name)) != json_string_length(name) ||
	    !vm_name_is_valid(json_string_value(name)))
		return hs_error_set(err, -EINVAL, INVALID,
				    "name: must match [a-z0-9][a-z0-9_-]{0,62}");
	snprintf(s.name, sizeof(s.name), "%s", json_string_value(name));

	s.cpus = 1;
	r = get_uint(obj, "cpus", "cpus", 1, VM_MAX_CPUS, &u, err);
	if (r < 0)
		goto fail;
	if (r > 0)
		s.cpus = (unsigned)u;

	s.memory_mib = 512;
	r = get_uint(obj, "memory_mib", "memory_mib", VM_MIN_MEMORY_MIB, VM_MAX_MEMORY_MIB,
		     &s.memory_mib, err);
	if (r < 0)
		goto fail;

	s.accel = defs->accel;
	r = get_string(obj, "accel", "accel", 8, &accel, err);
	if (r < 0)
		goto fail;
	if (accel && !strcmp(accel, "kvm"))
		s.accel = VM_ACCEL_KVM;
	else if (accel && !strcmp(accel, "tcg"))
		s.accel = VM_ACCEL_TCG;
	else if (accel) {
		r = hs_error_set(err, -EINVAL, INVALID, "accel: must be 'kvm' or 'tcg', not '%s'",
				 accel);
		goto fail;
	}

	r = get_string(obj, "machine", "machine", 64, &s.machine, err);
	if (r < 0)
		goto fail;
	if (!s.machine && !(s.machine = strdup("q35"))) {
		r = -ENOMEM;
		goto fail;
	}
	r = parse_machine(s.machine, err);
	if (r < 0)
		goto fail;

	bool merge = true;
	r = get_bool(obj, "mem_merge", "mem_merge", &merge, err);
	if (r < 0)
		goto fail;
	s.no_mem_merge = !merge;
	/* The guest agent's port (default: none). */
	if ((r = get_bool(obj, "agent", "agent", &s.agent, err)) < 0)
		goto fail;

	r = get_string(obj, "cpu_model", "cpu_model", 256, &s.cpu_model, err);
	if (r < 0)
		goto fail;
	if (s.cpu_model && (r = parse_cpu_model(s.cpu_model, err)) < 0)
		goto fail;

	r = get_string(obj, "kernel", "kernel", 4095, &s.kernel, err);
	if (r < 0)
		goto fail;
	if (s.kernel && (r = check_path(s.kernel, "kernel", defs->check_files, false, err)) < 0)
		goto fail;
	r = get_string(obj, "initrd", "initrd", 4095, &s.initrd, err);
	if (r < 0)
		goto fail;
	if (s.initrd && (r = check_path(s.initrd, "initrd", defs->check_files, false, err)) < 0)
		goto fail;
	r = get_string(obj, "cmdline", "cmdline", 4096, &s.cmdline, err);
	if (r < 0)
		goto fail;
	if ((s.initrd || s.cmdline) && !s.kernel) {
		r = hs_error_set(err, -EINVAL, INVALID, "%s: needs 'kernel' (direct kernel boot)",
				 s.initrd ? "initrd" : "cmdline");
		goto fail;
	}

	json_t *disks = json_object_get(obj, "disks");
	if (disks && !json_is_null(disks)) {
		if (!json_is_array(disks)) {
			r = hs_error_set(err, -EINVAL, INVALID, "disks: must be an array");
			goto fail;
		}
		if (json_array_size(disks) > VM_MAX_DISKS) {
			r = hs_error_set(err, -EINVAL, INVALID, "disks: at most %d", VM_MAX_DISKS);
			goto fail;
		}
		for (size_t i = 0; i < json_array_size(disks); i++) {
			s.n_disks = i + 1;
			r = parse_disk(json_array_get(disks, i), i, defs, &s.disks[i], err);
			if (r < 0)
				goto fail;
		}
	}
	if (!s.kernel && s.n_disks == 0) {
		r = hs_error_set(err, -EINVAL, INVALID,
				 "kernel: a VM needs a kernel (direct boot) or at least one disk");
		goto fail;
	}

	json_t *nics = json_object_get(obj, "nics");
	if (nics && !json_is_null(nics)) {
		if (!json_is_array(nics)) {
			r = hs_error_set(err, -EINVAL, INVALID, "nics: must be an array");
			goto fail;
		}
		if (json_array_size(nics) > VM_MAX_NICS) {
			r = hs_error_set(err, -EINVAL, INVALID, "nics: at most %d", VM_MAX_NICS);
			goto fail;
		}
		/* Generated ids go around the given ones; a given id clashes
		 * with those given before it. */
		for (size_t i = 0; i < json_array_size(nics); i++) {
			char where[32];
			snprintf(where, sizeof(where), "nics[%zu]", i);
			json_t *nj = json_array_get(nics, i);
			bool has_id = json_is_string(json_object_get(nj, "id"));
			char others[VM_MAX_NICS][VM_NIC_ID_MAX + 1];
			size_t n_others = 0;
			for (size_t k = 0; k < i; k++)
				memcpy(others[n_others++], s.nics[k].id, sizeof(others[0]));
			for (size_t k = i + 1; !has_id && k < json_array_size(nics); k++) {
				const char *id = json_string_value(
					json_object_get(json_array_get(nics, k), "id"));
				if (id && strlen(id) <= VM_NIC_ID_MAX)
					snprintf(others[n_others++], sizeof(others[0]), "%s", id);
			}
			s.n_nics = i + 1;
			r = vm_nic_from_json(nj, where, others, n_others, &s.nics[i], err);
			if (r < 0)
				goto fail;
		}
		for (size_t i = 0; i < s.n_nics; i++)
			for (size_t j = 0; j < i; j++)
				if (!strcmp(s.nics[i].mac, s.nics[j].mac)) {
					r = hs_error_set(err, -EINVAL, INVALID,
							 "nics[%zu].mac: %s already used by nics[%zu]",
							 i, s.nics[i].mac, j);
					goto fail;
				}
	}

	r = parse_hugepages(obj, &s, err);
	if (r < 0)
		goto fail;

	r = get_uint(obj, "balloon_mib", "balloon_mib", 0, s.memory_mib, &s.balloon_mib, err);
	if (r >= 0)
		r = get_uint(obj, "balloon_floor_mib", "balloon_floor_mib", 0, s.memory_mib,
			     &s.balloon_floor_mib, err);
	if (r >= 0)
		r = vm_spec_check_balloon(&s, err);
	if (r < 0)
		goto fail;

	r = parse_pinning(json_object_get(obj, "cpu_pinning"), &s, err);
	if (r < 0)
		goto fail;
	{
		uint64_t node = 0;
		s.numa_node = -1;
		r = get_uint(obj, "numa_node", "numa_node", 0, NUMA_MAX_NODES - 1, &node, err);
		if (r < 0)
			goto fail;
		if (r > 0)
			s.numa_node = (int)node;
	}

	r = parse_resources(json_object_get(obj, "resources"), &s, err);
	if (r < 0)
		goto fail;
	r = parse_hostdevs(obj, &s, err);
	if (r < 0)
		goto fail;

	r = parse_memory_file(obj, &s, err);
	if (r < 0)
		goto fail;
	r = vm_display_from_json(json_object_get(obj, "display"), "display", &s.display, err);
	if (r < 0)
		goto fail;
	r = parse_firmware(obj, &s, err);
	if (r < 0)
		goto fail;

	json_t *ci = json_object_get(obj, "cloud_init");
	if (ci && !json_is_null(ci)) {
		CloudInitConfig c;
		r = cloudinit_config_from_json(ci, &c, err);
		if (r < 0)
			goto fail;
		s.cloud_init = malloc(sizeof(*s.cloud_init));
		if (!s.cloud_init) {
			cloudinit_config_clear(&c);
			r = -ENOMEM;
			goto fail;
		}
		*s.cloud_init = c;
	}

	*ret = s;
	return 0;
fail:
	vm_spec_clear(&s);
	return r == -ENOMEM ? hs_error_set(err, r, "internal", "out of memory") : r;
}

json_t *vm_spec_to_json(const VmSpec *s)
{
	json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s}", "name", s->name, "cpus",
			      (json_int_t)s->cpus, "memory_mib", (json_int_t)s->memory_mib, "accel",
			      vm_accel_to_string(s->accel), "machine", s->machine);
	if (!o)
		return NULL;
	if (s->cpu_model)
		json_object_set_new(o, "cpu_model", json_string(s->cpu_model));
	json_object_set_new(o, "mem_merge", json_boolean(!s->no_mem_merge));
	if (s->agent) /* absent: false, as specs without it always were */
		json_object_set_new(o, "agent", json_true());
	if (s->kernel)
		json_object_set_new(o, "kernel", json_string(s->kernel));
	if (s->initrd)
		json_object_set_new(o, "initrd", json_string(s->initrd));
	if (s->cmdline)
		json_object_set_new(o, "cmdline", json_string(s->cmdline));
	json_t *disks = json_array();
	for (size_t i = 0; i < s->n_disks; i++) {
		const VmDisk *d = &s->disks[i];
		json_t *dj = json_pack("{s:s, s:b}", "format", vm_disk_format_to_string(d->format),
				       "readonly", d->readonly);
		if (d->path)
			json_object_set_new(dj, "path", json_string(d->path));
		if (d->template)
			json_object_set_new(dj, "template", json_string(d->template));
		if (d->size)
			json_object_set_new(dj, "size", json_integer((json_int_t)d->size));
		if (vm_disk_limits_any(&d->limits))
			json_object_set_new(dj, "limits", vm_disk_limits_to_json(&d->limits));
		json_array_append_new(disks, dj);
	}
	json_object_set_new(o, "disks", disks);
	json_t *nics = json_array();
	for (size_t i = 0; i < s->n_nics; i++)
		json_array_append_new(nics, vm_nic_to_json(&s->nics[i]));
	json_object_set_new(o, "nics", nics);
	if (s->cloud_init)
		json_object_set_new(o, "cloud_init", cloudinit_config_to_json(s->cloud_init));
	if (s->balloon_mib)
		json_object_set_new(o, "balloon_mib", json_integer((json_int_t)s->balloon_mib));
	if (s->balloon_floor_mib)
		json_object_set_new(o, "balloon_floor_mib",
				    json_integer((json_int_t)s->balloon_floor_mib));
	if (s->numa_node >= 0)
		json_object_set_new(o, "numa_node", json_integer(s->numa_node));
	if (s->hugepage_size) {
		char hp[16];
		json_object_set_new(o, "hugepages",
				    json_string(vm_hugepages_to_string(s->hugepage_size, hp,
								       sizeof(hp))));
	}
	if (s->cpu_max_pct || s->cpu_weight || s->memory_overhead_mib || s->pids_max) {
		json_t *res = json_object();
		if (s->cpu_max_pct)
			json_object_set_new(res, "cpu_max_pct", json_integer(s->cpu_max_pct));
		if (s->cpu_weight)
			json_object_set_new(res, "cpu_weight", json_integer(s->cpu_weight));
		if (s->memory_overhead_mib)
			json_object_set_new(res, "memory_overhead_mib",
					    json_integer((json_int_t)s->memory_overhead_mib));
		if (s->pids_max)
			json_object_set_new(res, "pids_max", json_integer((json_int_t)s->pids_max));
		json_object_set_new(o, "resources", res);
	}
	if (s->n_hostdevs) {
		json_t *hd = json_array();
		for (size_t i = 0; i < s->n_hostdevs; i++)
			json_array_append_new(hd, vm_hostdev_to_json(&s->hostdevs[i]));
		json_object_set_new(o, "hostdevs", hd);
	}
	if (s->hotplug_ports)
		json_object_set_new(o, "hotplug_ports", json_integer(s->hotplug_ports));
	if (s->memory_file) {
		json_object_set_new(o, "memory_file", json_true());
		json_object_set_new(o, "vmgenid", json_string(s->vmgenid));
	}
	if (s->warm_template[0])
		json_object_set_new(o, "warm_template", json_string(s->warm_template));
	/* Headless VMs keep the form they always had. */
	if (s->display.type != VM_DISPLAY_NONE)
		json_object_set_new(o, "display", vm_display_to_json(&s->display));
	/* BIOS VMs without a TPM keep the form they always had. */
	if (s->firmware != VM_FIRMWARE_BIOS)
		json_object_set_new(o, "firmware", json_string(vm_firmware_to_string(s->firmware)));
	if (s->secure_boot)
		json_object_set_new(o, "secure_boot", json_true());
	if (s->tpm)
		json_object_set_new(o, "tpm", json_true());
	if (vm_spec_pinned(s)) {
		json_t *p = json_object(), *vc = json_array();
		bool any = false;
		for (unsigned i = 0; i < s->cpus; i++) {
			any |= s->vcpu_pins[i] != NULL;
			json_array_append_new(vc, s->vcpu_pins[i] ? json_string(s->vcpu_pins[i])
								  : json_null());
		}
		if (any)
			json_object_set_new(p, "vcpus", vc);
		else
			json_decref(vc);
		if (s->emulator_pin)
			json_object_set_new(p, "emulator", json_string(s->emulator_pin));
		json_object_set_new(o, "cpu_pinning", p);
	}
	return o;
}

void vm_spec_clear(VmSpec *s)
{
	free(s->machine);
	free(s->cpu_model);
	free(s->kernel);
	free(s->initrd);
	free(s->cmdline);
	for (size_t i = 0; i < s->n_disks; i++) {
		free(s->disks[i].path);
		free(s->disks[i].template);
	}
	for (size_t i = 0; i < s->n_nics; i++)
		vm_nic_clear(&s->nics[i]);
	for (size_t i = 0; i < s->n_hostdevs; i++)
		vm_hostdev_clear(&s->hostdevs[i]);
	if (s->cloud_init) {
		cloudinit_config_clear(s->cloud_init);
		free(s->cloud_init);
	}
	for (unsigned i = 0; i < VM_MAX_CPUS; i++)
		free(s->vcpu_pins[i]);
	free(s->emulator_pin);
	memset(s, 0, sizeof(*s));
}

int vm_spec_copy(const VmSpec *src, VmSpec *dst)
{
	json_auto_t *j = vm_spec_to_json(src);
	VmSpecDefaults d = {.accel = src->accel, .check_files = false};
	if (!j)
		return -ENOMEM;
	return vm_spec_from_json(j, &d, dst, NULL);
}
