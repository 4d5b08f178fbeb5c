/* SPDX-License-Identifier: Apache-2.0 */
#include "cgroup.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hs-util.h"

/* In CG_* bit order. */
static const char *const controller_names[] = {"cpu", "cpuset", "memory", "io", "pids"};
/* Controllers a threaded sub-group can use; the VM group enables these
 * (and only these) for its children. pids is threaded too but has nothing
 * to do per thread. */
#define CG_VM_SUBTREE (CG_CPU | CG_CPUSET)

#define SUPERVISOR_GROUP "supervisor"
#define VMS_GROUP "vms"
#define DEFAULT_BASE "hsd"

const char *cgroup_controller_name(unsigned bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++)
		if (bit == 1u << i)
			return controller_names[i];
	return NULL;
}

const char *cgroup_controllers_format(unsigned mask, char *buf, size_t size)
{
	size_t len = 0;
	if (size == 0)
		return buf;
	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++) {
		if (!(mask & (1u << i)))
			continue;
		int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", controller_names[i]);
		if (n < 0 || (size_t)n >= size - len) {
			buf[len] = '\0'; /* whole names only */
			break;
		}
		len += (size_t)n;
	}
	return buf;
}

/* "cpu io memory" (cgroup.controllers, cgroup.subtree_control) to CG_*;
 * names hsd does not manage (hugetlb, rdma, misc...) are ignored. */
static unsigned parse_controllers(const char *s)
{
	unsigned mask = 0;
	while (*s) {
		while (*s && isspace((unsigned char)*s))
			s++;
		size_t n = strcspn(s, " \t\n");
		for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++)
			if (n && strlen(controller_names[i]) == n && !strncmp(s, controller_names[i], n))
				mask |= 1u << i;
		s += n;
	}
	return mask;
}

/* a/b with empty or "." parts left out; "." when both are. */
static int path_join(char *buf, size_t size, const char *a, const char *b)
{
	bool has_a = a && *a && strcmp(a, "."), has_b = b && *b;
	int n;
	if (has_a && has_b)
		n = snprintf(buf, size, "%s/%s", a, b);
	else
		n = snprintf(buf, size, "%s", has_a ? a : has_b ? b : ".");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}


/* The value as shown in messages: without its trailing newline. */
static int write_error(HsError *err, int r, const char *dir, const char *file, const char *value)
{
	int len = (int)strcspn(value, "\n");
	return hs_error_set(err, r, r == -EINVAL || r == -ERANGE ? "invalid-argument" : "cgroup-failed",
			    "cannot write '%.*s' to /%s/%s: %s", len, value, dir, file, strerror(-r));
}

/* Human text into a fixed buffer: truncation is acceptable there. */
static void text_printf(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
static void text_printf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

/* ---- names and limits ---- */

bool cgroup_name_valid(const char *vm_name)
{
	if (!vm_name)
		return false;
	size_t n = strlen(vm_name);
	if (n < 1 || n > CGROUP_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = vm_name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* "emu" or "vcpu<N>", N decimal without leading zeros, below 10000. */
static bool sub_name_valid(const char *sub)
{
	if (!sub)
		return false;
	if (!strcmp(sub, "emu"))
		return true;
	if (!hs_str_has_prefix(sub, "vcpu"))
		return false;
	const char *d = sub + 4;
	size_t n = strlen(d);
	if (n < 1 || n > 4 || (n > 1 && d[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)d[i]))
			return false;
	return true;
}

/* A kernel list ("0-3,8"), NUL-terminated inside its array. */
static bool cpulist_valid(const char *s, size_t size)
{
	if (!memchr(s, '\0', size))
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s) && *s != ',' && *s != '-')
			return false;
	return true;
}

int cgroup_limits_validate(const CgroupLimits *l, HsError *err)
{
	if (!l)
		return 0;
	if (l->cpu_quota_us && l->cpu_quota_us < 1000)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "cpu quota %" PRIu64 "us is below the kernel's minimum of 1000us",
				    l->cpu_quota_us);
	if (l->cpu_period_us && (l->cpu_period_us < 1000 || l->cpu_period_us > 1000000))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "cpu period %" PRIu64 "us is outside 1000..1000000us",
				    l->cpu_period_us);
	if (l->cpu_weight > 10000)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "cpu weight %u is outside 1..10000", l->cpu_weight);
	if (l->n_io > CGROUP_MAX_IO)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "%zu io limits, at most %d devices", l->n_io, CGROUP_MAX_IO);
	for (size_t i = 0; i < l->n_io; i++) {
		const CgroupIoLimit *a = &l->io[i];
		if (a->major > 4095 || a->minor > 1048575)
			return hs_error_set(err, -EINVAL, "invalid-argument",
					    "io limit for device %u:%u: no such device number",
					    a->major, a->minor);
		for (size_t j = 0; j < i; j++)
			if (l->io[j].major == a->major && l->io[j].minor == a->minor)
				return hs_error_set(err, -EINVAL, "invalid-argument",
						    "two io limits for device %u:%u", a->major,
						    a->minor);
	}
	if (!cpulist_valid(l->cpuset_cpus, sizeof(l->cpuset_cpus)))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "cpuset cpus: not a CPU list (\"0-3,8\")");
	if (!cpulist_valid(l->cpuset_mems, sizeof(l->cpuset_mems)))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "cpuset mems: not a node list (\"0-1\")");
	return 0;
}

/* ---- finding the mount and hsd's group ---- */

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;
	for (const char *r = s; *r; w++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 4;
		} else {
			*w = *r++;
		}
	}
	*w = '\0';
}

/* v1 hierarchies' super options name their controllers ("rw,cpu,cpuacct"). */
static unsigned v1_controllers(const char *opts)
{
	static const struct {
		const char *name;
		unsigned bit;
	} map[] = {{"cpu", CG_CPU},       {"cpuset", CG_CPUSET}, {"memory", CG_MEMORY},
		   {"blkio", CG_IO},      {"pids", CG_PIDS}};
	unsigned mask = 0;
	while (opts && *opts) {
		size_t n = strcspn(opts, ",");
		for (size_t i = 0; i < ARRAY_SIZE(map); i++)
			if (strlen(map[i].name) == n && !strncmp(opts, map[i].name, n))
				mask |= map[i].bit;
		opts += n;
		if (*opts == ',')
			opts++;
	}
	return mask;
}

/* The first cgroup2 entry of mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT
 * OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS". */
static int find_mount(int rootfd, CgroupHost *h, HsError *err)
{
	_cleanup_free_ char *buf = NULL;
	int r = hs_read_file(rootfd, "proc/self/mountinfo", 4 << 20, &buf, NULL);
	if (r < 0)
		return hs_error_set(err, r, "cgroup-unavailable", "cannot read /proc/self/mountinfo: %s",
				    strerror(-r));
	bool found = false;
	char *next;
	for (char *line = buf; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		char *save = NULL, *field[5];
		size_t n = 0;
		for (char *t = strtok_r(line, " ", &save); t && n < 5; t = strtok_r(NULL, " ", &save))
			field[n++] = t;
		char *fstype = strtok_r(sep + 3, " ", &save);
		(void)strtok_r(NULL, " ", &save); /* the source */
		char *super = strtok_r(NULL, " ", &save);
		if (n < 5 || !fstype)
			continue;
		if (!strcmp(fstype, "cgroup")) {
			h->v1 |= v1_controllers(super);
			continue;
		}
		if (strcmp(fstype, "cgroup2") || found)
			continue;
		unescape_octal(field[3]);
		unescape_octal(field[4]);
		if (field[4][0] != '/' || field[3][0] != '/')
			continue;
		if (path_join(h->mount, sizeof(h->mount), field[4] + 1, NULL) < 0 ||
		    snprintf(h->mount_root, sizeof(h->mount_root), "%s", field[3]) >=
			    (int)sizeof(h->mount_root))
			continue;
		found = true;
	}
	if (!found)
		return hs_error_set(err, -ENOENT, "cgroup-unavailable",
				    "no cgroup2 file system is mounted (see /proc/self/mountinfo)");
	return 0;
}

/* The "0::/path" line of proc/self/cgroup into h->self ("" when absent). */
static void read_self(int rootfd, CgroupHost *h)
{
	_cleanup_free_ char *buf = NULL;
	h->self[0] = '\0';
	if (hs_read_file(rootfd, "proc/self/cgroup", 1 << 20, &buf, NULL) < 0)
		return;
	for (char *line = buf; line && *line;) {
		char *next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (hs_str_has_prefix(line, "0::/")) {
			if (snprintf(h->self, sizeof(h->self), "%s", line + 3) >= (int)sizeof(h->self))
				h->self[0] = '\0';
			return;
		}
		line = next;
	}
}

/* h->self relative to the mount ("system.slice/hsd.service"; "" for the
 * mount's root), or -ENOENT when the mount does not show our group. */
static int self_in_mount(const CgroupHost *h, char *buf, size_t size)
{
	const char *p;
	if (!h->self[0])
		return -ENOENT;
	if (!strcmp(h->mount_root, "/")) {
		p = h->self + 1;
	} else {
		size_t n = strlen(h->mount_root);
		if (strncmp(h->self, h->mount_root, n) || (h->self[n] && h->self[n] != '/'))
			return -ENOENT;
		p = h->self + n + (h->self[n] == '/');
	}
	return snprintf(buf, size, "%s", p) >= (int)size ? -ENAMETOOLONG : 0;
}

/* systemd marks groups it delegates (Delegate=yes) with trusted.delegate
 * (root's units) or user.delegate (user units) = "1". Without the mark, an
 * unprivileged hsd takes a group whose files it owns as delegated (root
 * owns every group, so ownership says nothing for root). */
static bool is_delegated(int rootfd, const char *dir)
{
	static const char *const attrs[] = {"trusted.delegate", "user.delegate"};
	_cleanup_close_ int fd = openat(rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(attrs); i++) {
		char v[8];
		ssize_t n = fgetxattr(fd, attrs[i], v, sizeof(v));
		if (n == 1 && v[0] == '1')
			return true;
	}
	uid_t uid = geteuid();
	struct stat st;
	if (uid == 0 || fstat(fd, &st) < 0 || st.st_uid != uid)
		return false;
	return fstatat(fd, "cgroup.procs", &st, 0) == 0 && st.st_uid == uid &&
	       fstatat(fd, "cgroup.subtree_control", &st, 0) == 0 && st.st_uid == uid;
}

/* Component by component: [A-Za-z0-9_.@:-]+, no "." or "..". */
static bool base_valid(const char *b)
{
	if (!*b)
		return false;
	for (const char *c = b; *c;) {
		size_t n = strcspn(c, "/");
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!isalnum((unsigned char)c[i]) && !strchr("_.@:-", c[i]))
				return false;
		c += n;
		if (*c == '/' && !*++c)
			return false;
	}
	return true;
}

/* A group that holds processes cannot give controllers to its children:
 * leave it for <group>/supervisor. Only this process moves; others that
 * stay make the enabling fail, which cgroup_host_open reports. */
static void leave_delegated_group(CgroupHost *h, const char *group)
{
	char dir[512], buf[64];
	_cleanup_close_ int fd = -1;
	if (path_join(dir, sizeof(dir), h->mount, group) < 0)
		return;
	fd = openat(h->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || hs_read_small(fd, "cgroup.procs", buf, sizeof(buf)) < 0 || !buf[0])
		return;
	if (mkdirat(fd, SUPERVISOR_GROUP, 0755) < 0 && errno != EEXIST)
		return;
	if (hs_write_value_at(fd, SUPERVISOR_GROUP "/cgroup.procs", "0\n") == 0)
		snprintf(h->self, sizeof(h->self), "%s/%s/" SUPERVISOR_GROUP,
			 strcmp(h->mount_root, "/") ? h->mount_root : "", group);
}

typedef struct Why {
	char text[ARRAY_SIZE(controller_names)][112];
} Why;

static void why_set(Why *why, unsigned bit, const char *fmt, ...) _printf_(3, 4);
static void why_set(Why *why, unsigned bit, const char *fmt, ...)
{
	for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++) {
		if (bit != 1u << i || why->text[i][0])
			continue;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why->text[i], sizeof(why->text[i]), fmt, ap);
		va_end(ap);
	}
}

/* Enables in dir's cgroup.subtree_control what its cgroup.controllers
 * offers, one controller per write (the kernel applies a write all or
 * nothing). Returns the CG_* now enabled there. */
static unsigned enable_level(int rootfd, const char *dir, Why *why)
{
	char buf[512];
	unsigned offered = 0, enabled = 0;
	_cleanup_close_ int fd = openat(rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (hs_read_small(fd, "cgroup.controllers", buf, sizeof(buf)) == 0)
		offered = parse_controllers(buf);
	if (hs_read_small(fd, "cgroup.subtree_control", buf, sizeof(buf)) == 0)
		enabled = parse_controllers(buf) & offered;
	unsigned todo = offered & ~enabled;
	if (!todo)
		return enabled;
	_cleanup_close_ int cfd = openat(fd, "cgroup.subtree_control", O_WRONLY | O_CLOEXEC);
	int open_r = cfd < 0 ? -errno : 0;
	for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++) {
		unsigned bit = 1u << i;
		if (!(todo & bit))
			continue;
		snprintf(buf, sizeof(buf), "+%s\n", controller_names[i]);
		int r = open_r < 0 ? open_r : hs_write_value(cfd, buf);
		if (r == 0)
			enabled |= bit;
		else
			why_set(why, bit, "cannot be enabled in /%s: %s%s", dir, strerror(-r),
				r == -EBUSY ? " (the group holds processes)" : "");
	}
	return enabled;
}

static void describe_missing(CgroupHost *h, unsigned offered_root, const char *start, Why *why)
{
	char names[64], group[512];
	unsigned miss = CG_ALL & ~h->controllers;
	const char *mp = strcmp(h->mount, ".") ? h->mount : "";
	h->missing[0] = '\0';
	if (!miss)
		return;
	if (!(offered_root & CG_ALL)) {
		if ((h->v1 & CG_ALL) == CG_ALL)
			text_printf(h->missing, sizeof(h->missing),
				 "cgroup v2 at /%s has no controllers enabled (cgroup v1 holds them)",
				 mp);
		else if (h->v1 & CG_ALL)
			text_printf(h->missing, sizeof(h->missing),
				 "cgroup v2 at /%s has no controllers enabled (cgroup v1 holds %s)", mp,
				 cgroup_controllers_format(h->v1 & CG_ALL, names, sizeof(names)));
		else
			text_printf(h->missing, sizeof(h->missing),
				 "cgroup v2 at /%s has none of cpu, cpuset, memory, io, pids", mp);
		return;
	}
	size_t len = 0;
	if (path_join(group, sizeof(group), h->mount, start) < 0)
		snprintf(group, sizeof(group), "%s", mp);
	for (size_t i = 0; i < ARRAY_SIZE(controller_names); i++) {
		unsigned bit = 1u << i;
		char reason[128];
		if (!(miss & bit))
			continue;
		if (!(offered_root & bit))
			text_printf(reason, sizeof(reason), "%s",
				 h->v1 & bit ? "held by cgroup v1" : "not in this kernel's cgroup v2");
		else if (why->text[i][0])
			text_printf(reason, sizeof(reason), "%s", why->text[i]);
		else
			text_printf(reason, sizeof(reason), "not delegated to /%s", group);
		int n = snprintf(h->missing + len, sizeof(h->missing) - len, "%s%s: %s",
				 len ? "; " : "", controller_names[i], reason);
		if (n < 0 || (size_t)n >= sizeof(h->missing) - len)
			break;
		len += (size_t)n;
	}
}

int cgroup_host_open(int rootfd, const char *configured_base, CgroupHost *ret, HsError *err)
{
	CgroupHost h = {.rootfd = rootfd};
	char start[256] = "", dir[512], buf[512];
	Why why = {0};
	int r = find_mount(rootfd, &h, err);
	if (r < 0)
		return r;
	read_self(rootfd, &h);

	if (configured_base) {
		while (*configured_base == '/')
			configured_base++;
		if (!base_valid(configured_base) ||
		    snprintf(h.base, sizeof(h.base), "%s", configured_base) >= (int)sizeof(h.base))
			return hs_error_set(err, -EINVAL, "invalid-config",
					    "cgroup base '%s': not a group path (a/b, letters, "
					    "digits, _.@:-)",
					    configured_base);
	} else {
		char self[256];
		if (self_in_mount(&h, self, sizeof(self)) == 0 && self[0]) {
			char *slash = strrchr(self, '/');
			/* An earlier start already left for <group>/supervisor. */
			if (slash && !strcmp(slash + 1, SUPERVISOR_GROUP)) {
				*slash = '\0';
				if (path_join(dir, sizeof(dir), h.mount, self) < 0 ||
				    !is_delegated(rootfd, dir))
					*slash = '/';
			}
			if (path_join(dir, sizeof(dir), h.mount, self) == 0 &&
			    is_delegated(rootfd, dir) &&
			    snprintf(h.base, sizeof(h.base), "%s/" VMS_GROUP, self) <
				    (int)sizeof(h.base)) {
				h.delegated = true;
				snprintf(start, sizeof(start), "%s", self);
			}
		}
		if (h.delegated)
			leave_delegated_group(&h, start);
		else
			snprintf(h.base, sizeof(h.base), DEFAULT_BASE);
	}

	unsigned offered_root = 0;
	r = path_join(dir, sizeof(dir), h.mount, "cgroup.controllers");
	if (r == 0)
		r = hs_read_small(rootfd, dir, buf, sizeof(buf));
	if (r < 0)
		return hs_error_set(err, r, "cgroup-unavailable",
				    "cannot read the cgroup2 mount's /%s: %s", dir, strerror(-r));
	offered_root = parse_controllers(buf);

	/* From start (already there) down to base, creating each level. */
	char level[256];
	snprintf(level, sizeof(level), "%s", start);
	const char *rest = h.base + strlen(start);
	for (;;) {
		r = path_join(dir, sizeof(dir), h.mount, level);
		if (r < 0)
			return hs_error_set(err, r, "invalid-config", "cgroup base %s: too long",
					    h.base);
		if (strcmp(level, start) && mkdirat(rootfd, dir, 0755) < 0 && errno != EEXIST) {
			int e = errno;
			return hs_error_set(err, -e, "cgroup-failed", "cannot create cgroup /%s: %s%s",
					    dir, strerror(e),
					    e == EACCES || e == EPERM || e == EROFS
						    ? " (hsd needs root, or systemd's Delegate=yes)"
						    : "");
		}
		unsigned enabled = enable_level(rootfd, dir, &why);
		while (*rest == '/')
			rest++;
		if (!*rest) {
			h.controllers = enabled;
			break;
		}
		size_t n = strcspn(rest, "/"), len = strlen(level);
		if (len + 1 + n >= sizeof(level))
			return hs_error_set(err, -ENAMETOOLONG, "invalid-config",
					    "cgroup base %s: too long", h.base);
		if (len)
			level[len++] = '/';
		memcpy(level + len, rest, n);
		level[len + n] = '\0';
		rest += n;
	}
	describe_missing(&h, offered_root, start, &why);
	*ret = h;
	return 0;
}

/* ---- VM groups ---- */

/* <mount>/<base>/vm-<name>[/<sub>], relative to rootfd. */
static int vm_dir(const CgroupHost *h, const char *vm_name, char *buf, size_t size)
{
	char rel[512];
	if (!cgroup_name_valid(vm_name))
		return -EINVAL;
	if (snprintf(rel, sizeof(rel), "%s/vm-%s", h->base, vm_name) >= (int)sizeof(rel))
		return -ENAMETOOLONG;
	return path_join(buf, size, h->mount, rel);
}

static int name_error(HsError *err, const char *vm_name)
{
	return hs_error_set(err, -EINVAL, "invalid-argument",
			    "'%s' cannot name a cgroup: use 1..%d of a-z, 0-9, _ and -",
			    vm_name ? vm_name : "(null)", CGROUP_NAME_MAX);
}

/* Opens the VM's group; -ENOENT ("not-found") when it is not there. */
static int open_vm(const CgroupHost *h, const char *vm_name, char *dir, size_t size, HsError *err)
{
	int r = vm_dir(h, vm_name, dir, size);
	if (r == -EINVAL)
		return name_error(err, vm_name);
	if (r < 0)
		return hs_error_set(err, r, "invalid-argument", "cgroup path for %s: too long",
				    vm_name);
	int fd = openat(h->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return hs_error_set(err, -e, e == ENOENT ? "not-found" : "cgroup-failed",
				    "cgroup /%s: %s", dir, strerror(e));
	}
	return fd;
}

int cgroup_vm_path(const CgroupHost *h, const char *vm_name, char *buf, size_t size)
{
	if (!cgroup_name_valid(vm_name))
		return -EINVAL;
	const char *root = strcmp(h->mount_root, "/") ? h->mount_root : "";
	int n = snprintf(buf, size, "%s/%s/vm-%s", root, h->base, vm_name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Makes dirfd/sub a threaded sub-group (mkdir if needed, then cgroup.type
 * "threaded" unless it already is). */
static int ensure_threaded(int dirfd, const char *dir, const char *sub, HsError *err)
{
	char type[64], file[64];
	if (mkdirat(dirfd, sub, 0755) < 0 && errno != EEXIST) {
		int e = errno;
		return hs_error_set(err, -e, "cgroup-failed", "cannot create cgroup /%s/%s: %s", dir,
				    sub, strerror(e));
	}
	snprintf(file, sizeof(file), "%s/cgroup.type", sub);
	int r = hs_read_small(dirfd, file, type, sizeof(type));
	if (r == 0 && !strcmp(type, "threaded\n"))
		return 0;
	r = hs_write_value_at(dirfd, file, "threaded\n");
	if (r == -EOPNOTSUPP)
		return hs_error_set(err, r, "cgroup-failed",
				    "/%s/%s cannot become threaded: /%s has domain controllers in its "
				    "cgroup.subtree_control or domain sub-groups",
				    dir, sub, dir);
	if (r < 0)
		return write_error(err, r, dir, file, "threaded");
	return 0;
}

/* The threaded controllers enabled in the VM group's subtree_control. */
static unsigned vm_subtree(int vmfd)
{
	char buf[256];
	if (hs_read_small(vmfd, "cgroup.subtree_control", buf, sizeof(buf)) < 0)
		return 0;
	return parse_controllers(buf) & CG_VM_SUBTREE;
}

/* Threaded children need a group without domain controllers for its
 * children: disable those (an older layout, or an operator's doing) and
 * enable cpu and cpuset for per-thread weights and CPU sets. */
static int prepare_vm_subtree(const CgroupHost *h, int vmfd, const char *dir, HsError *err)
{
	char buf[256];
	unsigned enabled = 0;
	if (hs_read_small(vmfd, "cgroup.subtree_control", buf, sizeof(buf)) == 0)
		enabled = parse_controllers(buf);
	unsigned off = enabled & ~CG_VM_SUBTREE, on = h->controllers & CG_VM_SUBTREE & ~enabled;
	if (!off && !on)
		return 0;
	_cleanup_close_ int fd = openat(vmfd, "cgroup.subtree_control", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return write_error(err, -errno, dir, "cgroup.subtree_control", "+cpu");
	/* Off first, then on. A refused "-" would forbid threaded sub-groups;
	 * a refused "+" only costs per-thread settings (skipped later). */
	for (size_t k = 0; k < 2 * ARRAY_SIZE(controller_names); k++) {
		size_t i = k % ARRAY_SIZE(controller_names);
		unsigned bit = 1u << i, set = k < ARRAY_SIZE(controller_names) ? off : on;
		if (!(set & bit))
			continue;
		snprintf(buf, sizeof(buf), "%c%s\n", set == off ? '-' : '+', controller_names[i]);
		int r = hs_write_value(fd, buf);
		if (r < 0 && set == off)
			return write_error(err, r, dir, "cgroup.subtree_control", buf);
	}
	return 0;
}

static void fmt_max(char *buf, size_t size, uint64_t v)
{
	if (v)
		snprintf(buf, size, "%" PRIu64 "\n", v);
	else
		snprintf(buf, size, "max\n");
}

static void fmt_io_value(char *buf, size_t size, const char *key, uint64_t v)
{
	if (v)
		snprintf(buf, size, "%s=%" PRIu64, key, v);
	else
		snprintf(buf, size, "%s=max", key);
}

static bool io_listed(const CgroupLimits *l, unsigned major, unsigned minor)
{
	for (size_t i = 0; i < l->n_io; i++)
		if (l->io[i].major == major && l->io[i].minor == minor)
			return true;
	return false;
}

const char *cgroup_io_line(const CgroupIoLimit *a, char *buf, size_t size)
{
	char rb[40], wb[40], ri[40], wi[40];
	fmt_io_value(rb, sizeof(rb), "rbps", a->rbps);
	fmt_io_value(wb, sizeof(wb), "wbps", a->wbps);
	fmt_io_value(ri, sizeof(ri), "riops", a->riops);
	fmt_io_value(wi, sizeof(wi), "wiops", a->wiops);
	snprintf(buf, size, "%u:%u %s %s %s %s", a->major, a->minor, rb, wb, ri, wi);
	return buf;
}

int cgroup_io_device(int rootfd, unsigned major, unsigned minor, unsigned *ret_major,
		     unsigned *ret_minor)
{
	char path[96], buf[32];
	struct stat st;
	if (major == 0)
		return -ENODEV;
	snprintf(path, sizeof(path), "sys/dev/block/%u:%u", major, minor);
	if (fstatat(rootfd, path, &st, 0) < 0)
		return -ENODEV;
	/* The link leads to .../block/vda/vda1: ".." after it is the disk. */
	snprintf(path, sizeof(path), "sys/dev/block/%u:%u/partition", major, minor);
	if (fstatat(rootfd, path, &st, 0) == 0)
		snprintf(path, sizeof(path), "sys/dev/block/%u:%u/../dev", major, minor);
	else
		snprintf(path, sizeof(path), "sys/dev/block/%u:%u/dev", major, minor);
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) < 0 ||
	    sscanf(buf, "%u:%u", ret_major, ret_minor) != 2)
		return -ENODEV;
	return 0;
}

/* io.max: one device per write. Devices limited before but not listed now
 * are written back to max (the kernel then drops their line). */
static int write_io(int vmfd, const char *dir, const CgroupLimits *l, HsError *err)
{
	_cleanup_free_ char *old = NULL;
	char line[256];
	(void)hs_read_file(vmfd, "io.max", 1 << 20, &old, NULL);
	_cleanup_close_ int fd = openat(vmfd, "io.max", O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return write_error(err, -errno, dir, "io.max", "");
	for (size_t i = 0; i < l->n_io; i++) {
		const CgroupIoLimit *a = &l->io[i];
		cgroup_io_line(a, line, sizeof(line));
		strcat(line, "\n");
		int r = hs_write_value(fd, line);
		if (r == -ENODEV)
			return hs_error_set(err, r, "invalid-argument",
					    "io limit for %u:%u: no such block device", a->major,
					    a->minor);
		if (r < 0)
			return write_error(err, r, dir, "io.max", line);
	}
	for (char *p = old; p && *p;) {
		unsigned major, minor;
		if (sscanf(p, "%u:%u ", &major, &minor) == 2 && !io_listed(l, major, minor)) {
			snprintf(line, sizeof(line), "%u:%u rbps=max wbps=max riops=max wiops=max\n",
				 major, minor);
			int r = hs_write_value(fd, line);
			if (r < 0 && r != -ENODEV)
				return write_error(err, r, dir, "io.max", line);
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return 0;
}

/* The emulator threads' CPU and node sets, in the "emu" sub-group. An
 * empty set resets an existing emu to inherit and creates nothing. */
static int write_emu_cpuset(int vmfd, const char *dir, const CgroupLimits *l, HsError *err)
{
	bool want = l->cpuset_cpus[0] || l->cpuset_mems[0];
	struct stat st;
	if (!want && fstatat(vmfd, "emu/cpuset.cpus", &st, 0) < 0)
		return 0;
	if (want) {
		int r = ensure_threaded(vmfd, dir, "emu", err);
		if (r < 0)
			return r;
	}
	static const char *const files[] = {"emu/cpuset.cpus", "emu/cpuset.mems"};
	const char *values[] = {l->cpuset_cpus, l->cpuset_mems};
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char v[300];
		snprintf(v, sizeof(v), "%s\n", values[i]);
		int r = hs_write_value_at(vmfd, files[i], v);
		if (r < 0)
			return write_error(err, r, dir, files[i], v);
	}
	return 0;
}

static int write_limits(const CgroupHost *h, int vmfd, const char *dir, const CgroupLimits *l,
			HsError *err)
{
	static const CgroupLimits none;
	unsigned skipped = 0, avail = h->controllers;
	char v[64];
	int r;
	if (!l)
		l = &none;
	if (!(vm_subtree(vmfd) & CG_CPUSET))
		avail &= ~(unsigned)CG_CPUSET;

	if (l->cpu_quota_us || l->cpu_period_us || l->cpu_weight)
		skipped |= CG_CPU;
	if (l->memory_max || l->memory_high)
		skipped |= CG_MEMORY;
	if (l->pids_max)
		skipped |= CG_PIDS;
	if (l->n_io)
		skipped |= CG_IO;
	if (l->cpuset_cpus[0] || l->cpuset_mems[0])
		skipped |= CG_CPUSET;
	skipped &= ~avail;

	if (avail & CG_CPU) {
		uint64_t period = l->cpu_period_us ? l->cpu_period_us : 100000;
		if (l->cpu_quota_us)
			snprintf(v, sizeof(v), "%" PRIu64 " %" PRIu64 "\n", l->cpu_quota_us, period);
		else
			snprintf(v, sizeof(v), "max %" PRIu64 "\n", period);
		if ((r = hs_write_value_at(vmfd, "cpu.max", v)) < 0)
			return write_error(err, r, dir, "cpu.max", v);
		snprintf(v, sizeof(v), "%u\n", l->cpu_weight ? l->cpu_weight : 100);
		if ((r = hs_write_value_at(vmfd, "cpu.weight", v)) < 0)
			return write_error(err, r, dir, "cpu.weight", v);
	}
	if (avail & CG_MEMORY) {
		fmt_max(v, sizeof(v), l->memory_high);
		if ((r = hs_write_value_at(vmfd, "memory.high", v)) < 0)
			return write_error(err, r, dir, "memory.high", v);
		fmt_max(v, sizeof(v), l->memory_max);
		if ((r = hs_write_value_at(vmfd, "memory.max", v)) < 0)
			return write_error(err, r, dir, "memory.max", v);
	}
	if (avail & CG_PIDS) {
		fmt_max(v, sizeof(v), l->pids_max);
		if ((r = hs_write_value_at(vmfd, "pids.max", v)) < 0)
			return write_error(err, r, dir, "pids.max", v);
	}
	if ((avail & CG_IO) && (r = write_io(vmfd, dir, l, err)) < 0)
		return r;
	if ((avail & CG_CPUSET) && (r = write_emu_cpuset(vmfd, dir, l, err)) < 0)
		return r;
	return (int)skipped;
}

int cgroup_vm_set_limits(const CgroupHost *h, const char *vm_name, const CgroupLimits *l,
			 HsError *err)
{
	char dir[512];
	int r = cgroup_limits_validate(l, err);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open_vm(h, vm_name, dir, sizeof(dir), err);
	if (fd < 0)
		return fd;
	return write_limits(h, fd, dir, l, err);
}

int cgroup_vm_create(const CgroupHost *h, const char *vm_name, const CgroupLimits *l,
		     HsError *err)
{
	char dir[512];
	int r = cgroup_limits_validate(l, err);
	if (r < 0)
		return r;
	r = vm_dir(h, vm_name, dir, sizeof(dir));
	if (r == -EINVAL)
		return name_error(err, vm_name);
	if (r < 0)
		return hs_error_set(err, r, "invalid-argument", "cgroup path for %s: too long",
				    vm_name);
	if (mkdirat(h->rootfd, dir, 0755) < 0 && errno != EEXIST) {
		int e = errno;
		return hs_error_set(err, -e, "cgroup-failed", "cannot create cgroup /%s: %s", dir,
				    strerror(e));
	}
	_cleanup_close_ int fd = open_vm(h, vm_name, dir, sizeof(dir), err);
	if (fd < 0)
		return fd;
	r = prepare_vm_subtree(h, fd, dir, err);
	if (r < 0)
		return r;
	return write_limits(h, fd, dir, l, err);
}

int cgroup_vm_fd(const CgroupHost *h, const char *vm_name)
{
	char dir[512];
	int r = vm_dir(h, vm_name, dir, sizeof(dir));
	if (r < 0)
		return r;
	int fd = openat(h->rootfd, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int cgroup_enter(int group_fd)
{
	int fd = openat(group_fd, "cgroup.procs", O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = hs_write_value(fd, "0\n");
	close(fd);
	return r;
}

int cgroup_vm_place_thread(const CgroupHost *h, const char *vm_name, const char *sub, pid_t tid,
			   const char *cpus, HsError *err)
{
	char dir[512], file[64], v[300];
	unsigned skipped = 0;
	if (!sub_name_valid(sub))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "'%s' is not a thread group (emu, vcpu<N>)", sub ? sub : "(null)");
	if (tid <= 0)
		return hs_error_set(err, -EINVAL, "invalid-argument", "no thread id %d", (int)tid);
	if (cpus && !cpulist_valid(cpus, strlen(cpus) + 1))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "'%s' is not a CPU list (\"0-3,8\")", cpus);
	_cleanup_close_ int fd = open_vm(h, vm_name, dir, sizeof(dir), err);
	if (fd < 0)
		return fd;
	int r = ensure_threaded(fd, dir, sub, err);
	if (r < 0)
		return r;
	if (cpus) {
		struct stat st;
		snprintf(file, sizeof(file), "%s/cpuset.cpus", sub);
		if (!(h->controllers & CG_CPUSET) || fstatat(fd, file, &st, 0) < 0) {
			skipped |= cpus[0] ? CG_CPUSET : 0;
		} else {
			snprintf(v, sizeof(v), "%s\n", cpus);
			r = hs_write_value_at(fd, file, v);
			if (r < 0)
				return write_error(err, r, dir, file, v);
		}
	}
	snprintf(file, sizeof(file), "%s/cgroup.threads", sub);
	snprintf(v, sizeof(v), "%d\n", (int)tid);
	r = hs_write_value_at(fd, file, v);
	if (r == -ESRCH)
		return hs_error_set(err, r, "not-found", "thread %d does not exist", (int)tid);
	if (r == -EOPNOTSUPP || r == -EINVAL)
		return hs_error_set(err, r, "cgroup-failed",
				    "cannot move thread %d into /%s/%s: its process must be in /%s "
				    "first (%s)",
				    (int)tid, dir, sub, dir, strerror(-r));
	if (r < 0)
		return write_error(err, r, dir, file, v);
	return (int)skipped;
}

static int parse_pids(const char *buf, pid_t *pids, size_t max)
{
	size_t n = 0;
	for (const char *p = buf; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (v > 0) {
			if (n < max)
				pids[n] = (pid_t)v;
			n++;
		}
		p = end;
		while (*p == '\n' || *p == ' ')
			p++;
	}
	return n > INT32_MAX ? INT32_MAX : (int)n;
}

int cgroup_vm_procs(const CgroupHost *h, const char *vm_name, pid_t *pids, size_t max)
{
	char dir[512], path[600];
	_cleanup_free_ char *buf = NULL;
	int r = vm_dir(h, vm_name, dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	r = hs_read_file(h->rootfd, path, 16 << 20, &buf, NULL);
	if (r < 0)
		return r;
	return parse_pids(buf, pids, max);
}

/* rmdir of every sub-group below dirfd, deepest first. Passes repeat
 * until one removes nothing, so that removing while reading the directory
 * cannot skip an entry. */
static int rmdir_children(int dirfd, unsigned depth)
{
	if (depth > 16)
		return -ELOOP;
	int first = 0;
	for (bool removed = true; removed;) {
		removed = false;
		int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		if (!d) {
			if (dfd >= 0)
				close(dfd);
			return -errno;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			struct stat st;
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (de->d_type != DT_DIR &&
			    (de->d_type != DT_UNKNOWN ||
			     fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			     !S_ISDIR(st.st_mode)))
				continue;
			int cfd = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int r = cfd < 0 ? -errno : rmdir_children(cfd, depth + 1);
			if (cfd >= 0)
				close(cfd);
			if (r == 0 && unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
				r = -errno;
			if (r == 0)
				removed = true;
			else if (!first)
				first = r;
		}
		closedir(d);
		if (first)
			return first;
	}
	return 0;
}

static int busy_error(const CgroupHost *h, const char *vm_name, const char *dir, int r,
		      HsError *err)
{
	pid_t pids[8];
	char list[128] = "";
	int n = cgroup_vm_procs(h, vm_name, pids, ARRAY_SIZE(pids));
	size_t len = 0;
	for (int i = 0; i < n && (size_t)i < ARRAY_SIZE(pids); i++) {
		int k = snprintf(list + len, sizeof(list) - len, " %d", (int)pids[i]);
		if (k < 0 || (size_t)k >= sizeof(list) - len)
			break;
		len += (size_t)k;
	}
	if (n > 0)
		return hs_error_set(err, -EBUSY, "cgroup-busy",
				    "cgroup /%s still holds %d process%s:%s%s", dir, n,
				    n == 1 ? "" : "es", list, n > (int)ARRAY_SIZE(pids) ? " ..." : "");
	return hs_error_set(err, -EBUSY, "cgroup-busy",
			    "cgroup /%s is still busy (%s; exiting threads?)", dir, strerror(-r));
}

int cgroup_vm_remove(const CgroupHost *h, const char *vm_name, HsError *err)
{
	char dir[512];
	int r = vm_dir(h, vm_name, dir, sizeof(dir));
	if (r == -EINVAL)
		return name_error(err, vm_name);
	if (r < 0)
		return hs_error_set(err, r, "invalid-argument", "cgroup path for %s: too long",
				    vm_name);
	_cleanup_close_ int fd = openat(h->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		int e = errno;
		return hs_error_set(err, -e, "cgroup-failed", "cgroup /%s: %s", dir, strerror(e));
	}
	r = rmdir_children(fd, 0);
	if (r == 0 && unlinkat(h->rootfd, dir, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;
	/* cgroupfs says EBUSY; a plain directory (a fake tree) ENOTEMPTY. */
	if (r == -EBUSY || r == -ENOTEMPTY)
		return busy_error(h, vm_name, dir, r, err);
	if (r < 0)
		return hs_error_set(err, r, "cgroup-failed", "cannot remove cgroup /%s: %s", dir,
				    strerror(-r));
	return 0;
}
