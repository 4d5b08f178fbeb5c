/* SPDX-License-Identifier: Apache-2.0 */
/* cgroup v2 module: fake trees for the parsing, the decisions and the exact
 * bytes written; this machine's kernel for what the kernel accepts
 * (process and thread moves, threaded sub-groups, clone3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "cgroup.h"
#include "fake-tree.h"

/* ---- the fake kernel ----
 * Linked with -Wl,--wrap=mkdirat,--wrap=unlinkat,--wrap=write. In a fake
 * tree:
 * - mkdirat under a fake group (a plain directory holding
 *   cgroup.subtree_control) fills the new group with the control files its
 *   parent's subtree_control enables, as cgroupfs does;
 * - a write to a fake cgroup.subtree_control is applied as the kernel
 *   applies it: "+x" fails with ENOENT unless cgroup.controllers offers x,
 *   and the file then reads back in the kernel's form ("cpuset cpu io");
 *   each request is logged in fake_requests ("hsd +cpu\n");
 * - rmdir of a fake group fails with EBUSY while it holds processes,
 *   threads or sub-groups, and takes its control files along otherwise.
 * On the real cgroupfs all three pass through. Other control files keep
 * the raw bytes written (one value per write), which the tests check. */

int __real_mkdirat(int dirfd, const char *path, mode_t mode);
int __wrap_mkdirat(int dirfd, const char *path, mode_t mode);
int __real_unlinkat(int dirfd, const char *path, int flags);
int __wrap_unlinkat(int dirfd, const char *path, int flags);
ssize_t __real_write(int fd, const void *buf, size_t len);
ssize_t __wrap_write(int fd, const void *buf, size_t len);

static char fake_requests[4096];

static bool on_cgroupfs(int fd)
{
	struct statfs sf;
	return fstatfs(fd, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
}

static void put(int dirfd, const char *name, const char *content)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (__real_write(fd, content, strlen(content)) < 0)
		fprintf(stderr, "fake: write %s: %m\n", name);
	close(fd);
}

/* The kernel lists controllers in its own order. */
static const char *const kernel_order[] = {"cpuset", "cpu", "io", "memory", "hugetlb", "pids",
					   "rdma", "misc"};

static unsigned names_mask(const char *s)
{
	unsigned mask = 0;
	for (size_t i = 0; i < ARRAY_SIZE(kernel_order); i++) {
		size_t n = strlen(kernel_order[i]);
		for (const char *p = strstr(s, kernel_order[i]); p; p = strstr(p + 1, kernel_order[i]))
			if ((p == s || p[-1] == ' ') && (!p[n] || p[n] == ' ' || p[n] == '\n'))
				mask |= 1u << i;
	}
	return mask;
}

static void names_format(unsigned mask, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(kernel_order); i++)
		if (mask & (1u << i))
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? " " : "",
						kernel_order[i]);
	snprintf(buf + len, size - len, "\n");
}

/* Kernel-order mask to CG_*. */
static unsigned cg_mask(unsigned kmask)
{
	unsigned mask = 0;
	for (unsigned bit = 1; bit & CG_ALL; bit <<= 1)
		for (size_t i = 0; i < ARRAY_SIZE(kernel_order); i++)
			if ((kmask & (1u << i)) && !strcmp(kernel_order[i], cgroup_controller_name(bit)))
				mask |= bit;
	return mask;
}

static unsigned fake_subtree(int dirfd)
{
	char buf[512];
	if (hs_read_small(dirfd, "cgroup.subtree_control", buf, sizeof(buf)) < 0)
		return 0;
	return cg_mask(names_mask(buf));
}

static void fake_populate(int dirfd, const char *path)
{
	struct stat st;
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	int pfd = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0 || on_cgroupfs(fd) || fstatat(pfd, "cgroup.subtree_control", &st, 0) < 0 ||
	    !S_ISREG(st.st_mode)) {
		if (pfd >= 0)
			close(pfd);
		close(fd);
		return;
	}
	char line[128];
	unsigned mask = fake_subtree(pfd);
	if (hs_read_small(pfd, "cgroup.subtree_control", line, sizeof(line)) < 0)
		line[0] = '\0';
	names_format(names_mask(line), line, sizeof(line));
	put(fd, "cgroup.controllers", line);
	put(fd, "cgroup.subtree_control", "\n");
	put(fd, "cgroup.procs", "");
	put(fd, "cgroup.threads", "");
	put(fd, "cgroup.type", "domain\n");
	put(fd, "cgroup.events", "populated 0\nfrozen 0\n");
	if (mask & CG_CPU) {
		put(fd, "cpu.max", "max 100000\n");
		put(fd, "cpu.weight", "100\n");
	}
	if (mask & CG_CPUSET) {
		put(fd, "cpuset.cpus", "\n");
		put(fd, "cpuset.mems", "\n");
	}
	if (mask & CG_MEMORY) {
		put(fd, "memory.max", "max\n");
		put(fd, "memory.high", "max\n");
	}
	if (mask & CG_IO)
		put(fd, "io.max", "");
	if (mask & CG_PIDS)
		put(fd, "pids.max", "max\n");
	close(pfd);
	close(fd);
}

int __wrap_mkdirat(int dirfd, const char *path, mode_t mode)
{
	int r = __real_mkdirat(dirfd, path, mode);
	if (r == 0) {
		int saved = errno;
		fake_populate(dirfd, path);
		errno = saved;
	}
	return r;
}

/* A write to a fake cgroup.subtree_control, applied as the kernel would. */
static ssize_t fake_subtree_write(int fd, const char *file, const char *req, size_t len)
{
	char dir[4096], buf[512], line[128];
	snprintf(dir, sizeof(dir), "%s", file);
	*strrchr(dir, '/') = '\0';
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	unsigned offered = 0, enabled = 0;
	if (hs_read_small(dfd, "cgroup.controllers", buf, sizeof(buf)) == 0)
		offered = names_mask(buf);
	if (hs_read_small(dfd, "cgroup.subtree_control", buf, sizeof(buf)) == 0)
		enabled = names_mask(buf);
	snprintf(buf, sizeof(buf), "%.*s", (int)len, req);
	char *save = NULL;
	for (char *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
		unsigned m = names_mask(t + 1);
		if ((t[0] != '+' && t[0] != '-') || !m) {
			close(dfd);
			errno = EINVAL;
			return -1;
		}
		if (t[0] == '+' && !(offered & m)) {
			close(dfd);
			errno = ENOENT;
			return -1;
		}
		enabled = t[0] == '+' ? enabled | m : enabled & ~m;
		const char *rel = strstr(dir, "/hs-fake-");
		rel = rel ? strchr(rel + 1, '/') : NULL;
		snprintf(line, sizeof(line), "%.100s %.20s\n", rel ? rel + 1 : dir, t);
		strncat(fake_requests, line, sizeof(fake_requests) - strlen(fake_requests) - 1);
	}
	names_format(enabled, buf, sizeof(buf));
	put(dfd, "cgroup.subtree_control", buf);
	close(dfd);
	(void)fd;
	return (ssize_t)len;
}

ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
	char file[4096];
	const char *base = strrchr(fake_fd_path(fd, file, sizeof(file)), '/');
	if (base && !strcmp(base, "/cgroup.subtree_control") && strstr(file, "/hs-fake-") &&
	    !on_cgroupfs(fd))
		return fake_subtree_write(fd, file, buf, len);
	return __real_write(fd, buf, len);
}

/* 0 when the fake group may go (its control files removed), -EBUSY when
 * it holds processes, threads or sub-groups. */
static int fake_rmdir_prepare(int fd)
{
	char buf[64];
	if ((hs_read_small(fd, "cgroup.procs", buf, sizeof(buf)) == 0 && buf[0]) ||
	    (hs_read_small(fd, "cgroup.threads", buf, sizeof(buf)) == 0 && buf[0]))
		return -EBUSY;
	DIR *d = fdopendir(dup(fd));
	if (!d)
		return -errno;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d)))
		if (de->d_type == DT_DIR && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			r = -EBUSY;
	rewinddir(d);
	while (r == 0 && (de = readdir(d)))
		if (de->d_type == DT_REG)
			__real_unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	return r;
}

int __wrap_unlinkat(int dirfd, const char *path, int flags)
{
	if (flags & AT_REMOVEDIR) {
		struct stat st;
		int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			int r = 0;
			if (!on_cgroupfs(fd) && fstatat(fd, "cgroup.procs", &st, 0) == 0)
				r = fake_rmdir_prepare(fd);
			close(fd);
			if (r < 0) {
				errno = -r;
				return -1;
			}
		}
	}
	return __real_unlinkat(dirfd, path, flags);
}

/* ---- fake trees ---- */

#define MOUNTINFO_SYSTEMD                                                                          \
	"22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw\n"            \
	"23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n"            \
	"25 23 0:7 / /sys/kernel/security rw shared:3 - securityfs securityfs rw\n"               \
	"27 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "  \
	"rw,nsdelegate,memory_recursiveprot\n"                                                     \
	"28 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"

/* This machine's: cgroup v1 holds the controllers, v2 has none. */
#define MOUNTINFO_HYBRID                                                                           \
	"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"                      \
	"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"                     \
	"33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"             \
	"34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"               \
	"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"               \
	"36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"             \
	"37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"             \
	"38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"                 \
	"39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"                   \
	"40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"        \
	"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"

/* A fake group: rel/cgroup.* as the kernel shows them. */
static void fake_group(const char *root, const char *rel, const char *controllers,
		       const char *subtree)
{
	char path[512];
	static const char *const files[] = {"cgroup.controllers", "cgroup.subtree_control",
					    "cgroup.procs", "cgroup.threads", "cgroup.type"};
	const char *values[] = {controllers, subtree, "", "", "domain\n"};
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", rel, files[i]);
		fake_write(root, path, values[i]);
	}
}

typedef struct Fake {
	char *root;
	int fd;
	CgroupHost h;
} Fake;

/* A systemd-like host: cgroup2 at /sys/fs/cgroup offering the given
 * controllers, with subtree already enabled at the root; hsd in self. */
static void fake_host(Fake *f, const char *mountinfo, const char *mount, const char *offered,
		      const char *subtree, const char *self)
{
	f->root = fake_tree_new();
	assert_non_null(f->root);
	fake_requests[0] = '\0';
	fake_write(f->root, "proc/self/mountinfo", mountinfo);
	fake_write(f->root, "proc/self/cgroup", self);
	fake_group(f->root, mount, offered, subtree);
	f->fd = fake_open(f->root);
	assert_true(f->fd >= 0);
}

static void fake_done(Fake *f)
{
	close(f->fd);
	fake_tree_free(f->root);
}

static void fake_full(Fake *f)
{
	fake_host(f, MOUNTINFO_SYSTEMD, "sys/fs/cgroup", "cpuset cpu io memory hugetlb pids rdma misc\n",
		  "cpu io memory pids\n", "0::/system.slice/hsd.service\n");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f->fd, NULL, &f->h, &err), 0);
}

static char *slurp(const char *root, const char *rel)
{
	char path[1024];
	char *data = NULL;
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if (hs_read_file(AT_FDCWD, path, 1 << 20, &data, NULL) < 0)
		return NULL;
	return data;
}

static void assert_file(const char *root, const char *rel, const char *expected)
{
	char *data = slurp(root, rel);
	if (!data)
		fail_msg("%s: missing, expected \"%s\"", rel, expected);
	if (strcmp(data, expected))
		print_message("%s: \"%s\" != \"%s\"\n", rel, data, expected);
	assert_string_equal(data, expected);
	free(data);
}

/* The subtree_control requests since the last check, one per line. */
static void assert_requests(const char *expected)
{
	if (strcmp(fake_requests, expected))
		print_message("requests:\n%s-- expected:\n%s--\n", fake_requests, expected);
	assert_string_equal(fake_requests, expected);
	fake_requests[0] = '\0';
}

static bool exists(const char *root, const char *rel)
{
	char path[1024];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	return lstat(path, &st) == 0;
}

/* ---- mountinfo, base, controllers ---- */

static void test_mount_found_among_others(void **state)
{
	Fake f;
	fake_full(&f);
	assert_string_equal(f.h.mount, "sys/fs/cgroup");
	assert_string_equal(f.h.mount_root, "/");
	assert_string_equal(f.h.self, "/system.slice/hsd.service");
	assert_false(f.h.delegated); /* no delegate mark, and we are root */
	assert_string_equal(f.h.base, "hsd");
	assert_int_equal(f.h.controllers, CG_ALL);
	assert_int_equal(f.h.v1, 0);
	assert_string_equal(f.h.missing, "");
	/* The root got what it lacked, hsd everything: one request per write. */
	assert_requests("sys/fs/cgroup +cpuset\n"
			"sys/fs/cgroup/hsd +cpu\n"
			"sys/fs/cgroup/hsd +cpuset\n"
			"sys/fs/cgroup/hsd +memory\n"
			"sys/fs/cgroup/hsd +io\n"
			"sys/fs/cgroup/hsd +pids\n");
	assert_file(f.root, "sys/fs/cgroup/cgroup.subtree_control", "cpuset cpu io memory pids\n");
	assert_file(f.root, "sys/fs/cgroup/hsd/cgroup.controllers", "cpuset cpu io memory pids\n");
	assert_file(f.root, "sys/fs/cgroup/hsd/cgroup.subtree_control",
		    "cpuset cpu io memory pids\n");
	/* Opening again asks for nothing. */
	CgroupHost again;
	assert_int_equal(cgroup_host_open(f.fd, NULL, &again, NULL), 0);
	assert_int_equal(again.controllers, CG_ALL);
	assert_requests("");
	fake_done(&f);
}

static void test_no_cgroup2_mount(void **state)
{
	Fake f;
	fake_host(&f,
		  "22 28 0:21 / /proc rw - proc proc rw\n"
		  "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n",
		  "sys/fs/cgroup/unified", "", "", "0::/\n");
	CgroupHost h;
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &h, &err), -ENOENT);
	assert_string_equal(err.kind, "cgroup-unavailable");
	assert_non_null(strstr(err.message, "no cgroup2 file system is mounted"));
	fake_done(&f);

	/* No mountinfo at all (no /proc) is an error too, a clear one. */
	char *root = fake_tree_new();
	int fd = fake_open(root);
	assert_int_equal(cgroup_host_open(fd, NULL, &h, &err), -ENOENT);
	assert_non_null(strstr(err.message, "/proc/self/mountinfo"));
	close(fd);
	fake_tree_free(root);
}

static void test_hybrid_like_this_host(void **state)
{
	Fake f;
	fake_host(&f, MOUNTINFO_HYBRID, "sys/fs/cgroup/unified", "hugetlb\n", "", "0::/\n");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_string_equal(f.h.mount, "sys/fs/cgroup/unified");
	assert_string_equal(f.h.self, "/");
	assert_string_equal(f.h.base, "hsd");
	assert_int_equal(f.h.controllers, 0);
	assert_int_equal(f.h.v1, CG_ALL);
	assert_string_equal(f.h.missing, "cgroup v2 at /sys/fs/cgroup/unified has no controllers "
					 "enabled (cgroup v1 holds them)");
	/* hugetlb is not ours to enable: the root's file is untouched. */
	assert_file(f.root, "sys/fs/cgroup/unified/cgroup.subtree_control", "");
	assert_true(exists(f.root, "sys/fs/cgroup/unified/hsd/cgroup.procs"));
	assert_file(f.root, "sys/fs/cgroup/unified/hsd/cgroup.subtree_control", "\n");
	assert_requests("");
	fake_done(&f);

	/* v1 holding only some: named. */
	fake_host(&f,
		  "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
		  "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
		  "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
		  "sys/fs/cgroup/unified", "", "", "0::/\n");
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_int_equal(f.h.v1, CG_CPU | CG_MEMORY);
	assert_string_equal(f.h.missing, "cgroup v2 at /sys/fs/cgroup/unified has no controllers "
					 "enabled (cgroup v1 holds cpu memory)");
	fake_done(&f);
}

static void test_some_controllers_missing(void **state)
{
	Fake f;
	/* cpuset held by v1, io not in the kernel; cpu refused at hsd's level
	 * (a directory in place of the file makes the write fail). */
	fake_host(&f,
		  "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
		  "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
		  "sys/fs/cgroup/unified", "cpu memory pids\n", "cpu memory\n", "0::/\n");
	fake_write(f.root, "sys/fs/cgroup/unified/hsd/cgroup.controllers", "cpu memory pids\n");
	fake_write(f.root, "sys/fs/cgroup/unified/hsd/cgroup.subtree_control/x", "");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_int_equal(f.h.controllers, 0);
	assert_string_equal(f.h.missing,
			    "cpu: cannot be enabled in /sys/fs/cgroup/unified/hsd: Is a directory; "
			    "cpuset: held by cgroup v1; "
			    "memory: cannot be enabled in /sys/fs/cgroup/unified/hsd: Is a directory; "
			    "io: not in this kernel's cgroup v2; "
			    "pids: cannot be enabled in /sys/fs/cgroup/unified/hsd: Is a directory");
	fake_done(&f);

	/* The same without the obstacle. */
	fake_host(&f,
		  "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
		  "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
		  "sys/fs/cgroup/unified", "cpu memory pids\n", "cpu memory\n", "0::/\n");
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_int_equal(f.h.controllers, CG_CPU | CG_MEMORY | CG_PIDS);
	assert_string_equal(f.h.missing,
			    "cpuset: held by cgroup v1; io: not in this kernel's cgroup v2");
	assert_requests("sys/fs/cgroup/unified +pids\n"
			"sys/fs/cgroup/unified/hsd +cpu\n"
			"sys/fs/cgroup/unified/hsd +memory\n"
			"sys/fs/cgroup/unified/hsd +pids\n");
	char names[64];
	assert_string_equal(cgroup_controllers_format(f.h.controllers, names, sizeof(names)),
			    "cpu memory pids");
	fake_done(&f);
}

static void test_mountinfo_escapes_and_mount_root(void **state)
{
	Fake f;
	/* A space in the mount point, and a mount of a sub-tree (a bind mount or
	 * another cgroup namespace's view): /proc/PID/cgroup paths include it. */
	fake_host(&f, "41 31 0:38 /ns\\0401 /run/my\\040cg rw - cgroup2 cgroup2 rw\n", "run/my cg",
		  "memory\n", "memory\n", "0::/\n");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_string_equal(f.h.mount, "run/my cg");
	assert_string_equal(f.h.mount_root, "/ns 1");
	assert_int_equal(f.h.controllers, CG_MEMORY);
	assert_true(exists(f.root, "run/my cg/hsd/memory.max"));
	char path[128];
	assert_int_equal(cgroup_vm_path(&f.h, "web1", path, sizeof(path)), 0);
	assert_string_equal(path, "/ns 1/hsd/vm-web1");
	fake_done(&f);
}

static bool set_delegate_mark(const char *root, const char *rel)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	return setxattr(path, "trusted.delegate", "1", 1, 0) == 0 ||
	       setxattr(path, "user.delegate", "1", 1, 0) == 0;
}

static void test_delegated_group(void **state)
{
	Fake f;
	fake_host(&f, MOUNTINFO_SYSTEMD, "sys/fs/cgroup", "cpuset cpu io memory pids\n",
		  "cpu io memory pids\n", "0::/system.slice/hsd.service\n");
	fake_group(f.root, "sys/fs/cgroup/system.slice", "cpu io memory pids\n",
		   "cpu io memory pids\n");
	fake_group(f.root, "sys/fs/cgroup/system.slice/hsd.service", "cpu memory pids\n", "");
	fake_write(f.root, "sys/fs/cgroup/system.slice/hsd.service/cgroup.procs", "4242\n");
	if (!set_delegate_mark(f.root, "sys/fs/cgroup/system.slice/hsd.service")) {
		fake_done(&f);
		print_message("skipping: %s cannot hold trusted.* or user.* xattrs\n", "/tmp");
		skip();
	}
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_true(f.h.delegated);
	assert_string_equal(f.h.base, "system.slice/hsd.service/vms");
	/* hsd left the group so that it may enable controllers... */
	assert_file(f.root, "sys/fs/cgroup/system.slice/hsd.service/supervisor/cgroup.procs", "0\n");
	assert_string_equal(f.h.self, "/system.slice/hsd.service/supervisor");
	/* ...which it did only inside the delegated group, never above it. */
	assert_file(f.root, "sys/fs/cgroup/cgroup.subtree_control", "cpu io memory pids\n");
	assert_file(f.root, "sys/fs/cgroup/system.slice/cgroup.subtree_control",
		    "cpu io memory pids\n");
	assert_requests("sys/fs/cgroup/system.slice/hsd.service +cpu\n"
			"sys/fs/cgroup/system.slice/hsd.service +memory\n"
			"sys/fs/cgroup/system.slice/hsd.service +pids\n"
			"sys/fs/cgroup/system.slice/hsd.service/vms +cpu\n"
			"sys/fs/cgroup/system.slice/hsd.service/vms +memory\n"
			"sys/fs/cgroup/system.slice/hsd.service/vms +pids\n");
	assert_file(f.root, "sys/fs/cgroup/system.slice/hsd.service/cgroup.subtree_control",
		    "cpu memory pids\n");
	assert_int_equal(f.h.controllers, CG_CPU | CG_MEMORY | CG_PIDS);
	assert_string_equal(f.h.missing,
			    "cpuset: not delegated to /sys/fs/cgroup/system.slice/hsd.service; "
			    "io: not delegated to /sys/fs/cgroup/system.slice/hsd.service");

	/* Started again from the supervisor group: the same base. */
	fake_write(f.root, "proc/self/cgroup", "0::/system.slice/hsd.service/supervisor\n");
	CgroupHost again;
	assert_int_equal(cgroup_host_open(f.fd, NULL, &again, &err), 0);
	assert_true(again.delegated);
	assert_string_equal(again.base, "system.slice/hsd.service/vms");
	fake_done(&f);

	/* Without systemd's mark, a root hsd does not take its group as its own. */
	fake_host(&f, MOUNTINFO_SYSTEMD, "sys/fs/cgroup", "cpu memory\n", "cpu memory\n",
		  "0::/system.slice/hsd.service\n");
	fake_group(f.root, "sys/fs/cgroup/system.slice/hsd.service", "cpu memory\n", "");
	if (geteuid() == 0) {
		assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
		assert_false(f.h.delegated);
		assert_string_equal(f.h.base, "hsd");
	}
	fake_done(&f);
}

static void test_configured_base(void **state)
{
	Fake f;
	fake_host(&f, MOUNTINFO_SYSTEMD, "sys/fs/cgroup", "cpu memory\n", "cpu memory\n", "0::/\n");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, "/machines/hs.slice", &f.h, &err), 0);
	assert_string_equal(f.h.base, "machines/hs.slice");
	assert_int_equal(f.h.controllers, CG_CPU | CG_MEMORY);
	assert_file(f.root, "sys/fs/cgroup/machines/cgroup.subtree_control", "cpu memory\n");
	assert_file(f.root, "sys/fs/cgroup/machines/hs.slice/cgroup.subtree_control",
		    "cpu memory\n");
	static const char *const bad[] = {"", "/", "../x", "a/../b", "a//b", "a/./b", "a b",
					  "a/", "x\ny", "a/b\\c"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		CgroupHost h;
		err = (HsError){0};
		assert_int_equal(cgroup_host_open(f.fd, bad[i], &h, &err), -EINVAL);
		assert_string_equal(err.kind, "invalid-config");
	}
	fake_done(&f);
}

/* ---- VM groups ---- */

static CgroupLimits every_limit(void)
{
	CgroupLimits l = {
		.cpu_quota_us = 150000,
		.cpu_period_us = 50000,
		.cpu_weight = 200,
		.memory_max = 1ull << 30,
		.memory_high = 768ull << 20,
		.pids_max = 512,
		.n_io = 2,
		.io = {{.major = 8, .minor = 0, .rbps = 1048576, .wiops = 300},
		       {.major = 259, .minor = 3, .wbps = 2097152, .riops = 100}},
	};
	snprintf(l.cpuset_cpus, sizeof(l.cpuset_cpus), "0-1,4");
	snprintf(l.cpuset_mems, sizeof(l.cpuset_mems), "0");
	return l;
}

#define VM "sys/fs/cgroup/hsd/vm-web1"

static void test_limits_exact_contents(void **state)
{
	Fake f;
	fake_full(&f);
	CgroupLimits l = every_limit();
	HsError err = {0};
	fake_requests[0] = '\0';
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), 0);
	assert_requests("sys/fs/cgroup/hsd/vm-web1 +cpu\nsys/fs/cgroup/hsd/vm-web1 +cpuset\n");
	assert_file(f.root, VM "/cgroup.subtree_control", "cpuset cpu\n");
	assert_file(f.root, VM "/cpu.max", "150000 50000\n");
	assert_file(f.root, VM "/cpu.weight", "200\n");
	assert_file(f.root, VM "/memory.max", "1073741824\n");
	assert_file(f.root, VM "/memory.high", "805306368\n");
	assert_file(f.root, VM "/pids.max", "512\n");
	assert_file(f.root, VM "/io.max",
		    "8:0 rbps=1048576 wbps=max riops=max wiops=300\n"
		    "259:3 rbps=max wbps=2097152 riops=100 wiops=max\n");
	assert_file(f.root, VM "/emu/cgroup.type", "threaded\n");
	assert_file(f.root, VM "/emu/cpuset.cpus", "0-1,4\n");
	assert_file(f.root, VM "/emu/cpuset.mems", "0\n");
	/* The VM group itself keeps inheriting its CPUs. */
	assert_file(f.root, VM "/cpuset.cpus", "\n");
	fake_done(&f);
}

static void test_limits_max_forms(void **state)
{
	Fake f;
	fake_full(&f);
	CgroupLimits l = {0};
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, NULL), 0);
	assert_file(f.root, VM "/cpu.max", "max 100000\n");
	assert_file(f.root, VM "/cpu.weight", "100\n");
	assert_file(f.root, VM "/memory.max", "max\n");
	assert_file(f.root, VM "/memory.high", "max\n");
	assert_file(f.root, VM "/pids.max", "max\n");
	assert_file(f.root, VM "/io.max", "");
	assert_false(exists(f.root, VM "/emu")); /* no cpuset asked for: no sub-group */
	/* NULL limits: the same. */
	assert_int_equal(cgroup_vm_create(&f.h, "web2", NULL, NULL), 0);
	assert_file(f.root, "sys/fs/cgroup/hsd/vm-web2/cpu.max", "max 100000\n");
	/* No quota but a period; a quota with the default period. */
	l.cpu_period_us = 20000;
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, NULL), 0);
	assert_file(f.root, VM "/cpu.max", "max 20000\n");
	l = (CgroupLimits){.cpu_quota_us = 1000, .cpu_weight = 1};
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, NULL), 0);
	assert_file(f.root, VM "/cpu.max", "1000 100000\n");
	assert_file(f.root, VM "/cpu.weight", "1\n");
	l.cpu_weight = 10000;
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, NULL), 0);
	assert_file(f.root, VM "/cpu.weight", "10000\n");
	fake_done(&f);
}

static void test_live_change(void **state)
{
	Fake f;
	fake_full(&f);
	CgroupLimits l = every_limit();
	HsError err = {0};
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), 0);
	/* Memory up, one device dropped, one changed, the emulator moved. */
	l.memory_max = 2ull << 30;
	l.memory_high = 0;
	l.cpu_weight = 0;
	l.n_io = 1;
	l.io[0] = (CgroupIoLimit){.major = 259, .minor = 3, .wbps = 4096};
	snprintf(l.cpuset_cpus, sizeof(l.cpuset_cpus), "7");
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, &err), 0);
	assert_file(f.root, VM "/memory.max", "2147483648\n");
	assert_file(f.root, VM "/memory.high", "max\n");
	assert_file(f.root, VM "/cpu.weight", "100\n");
	assert_file(f.root, VM "/cpu.max", "150000 50000\n");
	/* The kernel drops a device's line once all four are max. */
	assert_file(f.root, VM "/io.max",
		    "259:3 rbps=max wbps=4096 riops=max wiops=max\n"
		    "8:0 rbps=max wbps=max riops=max wiops=max\n");
	assert_file(f.root, VM "/emu/cpuset.cpus", "7\n");
	/* Back to no limits at all: emu's sets go back to inherit. */
	l = (CgroupLimits){0};
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, &err), 0);
	assert_file(f.root, VM "/memory.max", "max\n");
	assert_file(f.root, VM "/pids.max", "max\n");
	assert_file(f.root, VM "/emu/cpuset.cpus", "\n");
	assert_file(f.root, VM "/emu/cpuset.mems", "\n");
	/* A VM without a group. */
	err = (HsError){0};
	assert_int_equal(cgroup_vm_set_limits(&f.h, "nope", &l, &err), -ENOENT);
	assert_string_equal(err.kind, "not-found");
	fake_done(&f);
}

static void test_unavailable_controllers_skipped(void **state)
{
	Fake f;
	fake_host(&f, MOUNTINFO_SYSTEMD, "sys/fs/cgroup", "memory\n", "memory\n", "0::/\n");
	HsError err = {0};
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	assert_int_equal(f.h.controllers, CG_MEMORY);
	CgroupLimits l = every_limit();
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err),
			 CG_CPU | CG_CPUSET | CG_IO | CG_PIDS);
	assert_file(f.root, VM "/memory.max", "1073741824\n");
	assert_false(exists(f.root, VM "/cpu.max"));
	assert_false(exists(f.root, VM "/pids.max"));
	assert_false(exists(f.root, VM "/io.max"));
	assert_false(exists(f.root, VM "/emu"));
	assert_file(f.root, VM "/cgroup.subtree_control", "\n");
	/* Nothing asked of the missing ones: nothing skipped. */
	l = (CgroupLimits){.memory_max = 4096};
	assert_int_equal(cgroup_vm_set_limits(&f.h, "web1", &l, &err), 0);
	/* Threads still get their groups; only the CPU set is skipped. */
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu0", 1234, "3", &err), CG_CPUSET);
	assert_file(f.root, VM "/vcpu0/cgroup.threads", "1234\n");
	fake_done(&f);

	/* This machine: no controllers at all; the group is still made. */
	fake_host(&f, MOUNTINFO_HYBRID, "sys/fs/cgroup/unified", "hugetlb\n", "", "0::/\n");
	assert_int_equal(cgroup_host_open(f.fd, NULL, &f.h, &err), 0);
	l = every_limit();
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), CG_ALL);
	assert_true(exists(f.root, "sys/fs/cgroup/unified/hsd/vm-web1/cgroup.procs"));
	fake_done(&f);
}

static void test_domain_controllers_disabled_for_threads(void **state)
{
	Fake f;
	fake_full(&f);
	/* A group left with memory and io enabled for its children (an older
	 * layout) could not get threaded sub-groups: create turns them off. */
	char path[1024];
	snprintf(path, sizeof(path), "%s/" VM, f.root);
	assert_int_equal(mkdirat(AT_FDCWD, path, 0755), 0);
	fake_write(f.root, VM "/cgroup.subtree_control", "cpu io memory\n");
	fake_requests[0] = '\0';
	assert_int_equal(cgroup_vm_create(&f.h, "web1", NULL, NULL), 0);
	assert_requests("sys/fs/cgroup/hsd/vm-web1 -memory\n"
			"sys/fs/cgroup/hsd/vm-web1 -io\n"
			"sys/fs/cgroup/hsd/vm-web1 +cpuset\n");
	assert_file(f.root, VM "/cgroup.subtree_control", "cpuset cpu\n");
	fake_done(&f);
}

static void test_threaded_subgroups(void **state)
{
	Fake f;
	fake_full(&f);
	HsError err = {0};
	assert_int_equal(cgroup_vm_create(&f.h, "web1", NULL, &err), 0);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu0", 1234, "2", &err), 0);
	assert_file(f.root, VM "/vcpu0/cgroup.type", "threaded\n");
	assert_file(f.root, VM "/vcpu0/cpuset.cpus", "2\n");
	assert_file(f.root, VM "/vcpu0/cgroup.threads", "1234\n");
	/* Again (a new thread id after a vCPU hot-plug): CPUs kept when NULL. */
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu0", 1240, NULL, &err), 0);
	assert_file(f.root, VM "/vcpu0/cpuset.cpus", "2\n");
	assert_file(f.root, VM "/vcpu0/cgroup.threads", "1240\n");
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu0", 1240, "", &err), 0);
	assert_file(f.root, VM "/vcpu0/cpuset.cpus", "\n");
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu17", 1250, "0-3", &err), 0);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "emu", 1200, NULL, &err), 0);
	assert_file(f.root, VM "/emu/cgroup.type", "threaded\n");
	assert_file(f.root, VM "/emu/cgroup.threads", "1200\n");

	static const char *const bad_subs[] = {"", "vcpu", "vcpu01", "vcpu12345", "emu2", "../x",
					       "vcpu0/..", "VCPU0", "vcpu-1"};
	for (size_t i = 0; i < ARRAY_SIZE(bad_subs); i++) {
		err = (HsError){0};
		assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", bad_subs[i], 1, NULL, &err),
				 -EINVAL);
		assert_string_equal(err.kind, "invalid-argument");
	}
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", NULL, 1, NULL, &err), -EINVAL);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu1", 0, NULL, &err), -EINVAL);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu1", 1, "0;1", &err), -EINVAL);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "nope", "vcpu1", 1, NULL, &err), -ENOENT);
	assert_false(exists(f.root, VM "/vcpu1"));
	fake_done(&f);
}

static void test_invalid_names(void **state)
{
	Fake f;
	fake_full(&f);
	char long63[64], long64[65];
	memset(long63, 'a', 63);
	long63[63] = '\0';
	memset(long64, 'a', 64);
	long64[64] = '\0';
	assert_true(cgroup_name_valid(long63));
	assert_true(cgroup_name_valid("web-1_a"));
	static const char *bad[] = {"", "Web", "a/b", "..", ".", "a.b", "a b", "a\n", "é", NULL};
	bad[ARRAY_SIZE(bad) - 1] = long64;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		HsError err = {0};
		char path[256];
		assert_false(cgroup_name_valid(bad[i]));
		assert_int_equal(cgroup_vm_create(&f.h, bad[i], NULL, &err), -EINVAL);
		assert_string_equal(err.kind, "invalid-argument");
		assert_int_equal(cgroup_vm_set_limits(&f.h, bad[i], NULL, NULL), -EINVAL);
		assert_int_equal(cgroup_vm_remove(&f.h, bad[i], NULL), -EINVAL);
		assert_int_equal(cgroup_vm_fd(&f.h, bad[i]), -EINVAL);
		assert_int_equal(cgroup_vm_procs(&f.h, bad[i], NULL, 0), -EINVAL);
		assert_int_equal(cgroup_vm_path(&f.h, bad[i], path, sizeof(path)), -EINVAL);
		assert_int_equal(cgroup_vm_place_thread(&f.h, bad[i], "emu", 1, NULL, NULL), -EINVAL);
	}
	assert_false(cgroup_name_valid(NULL));
	assert_int_equal(cgroup_vm_create(&f.h, NULL, NULL, NULL), -EINVAL);
	/* Nothing was made outside hsd's base. */
	assert_false(exists(f.root, "sys/fs/cgroup/b"));
	assert_false(exists(f.root, "sys/fs/cgroup/hsd/vm-a"));
	fake_done(&f);
}

static void test_limits_validation(void **state)
{
	CgroupLimits l;
	HsError err = {0};
	assert_int_equal(cgroup_limits_validate(NULL, &err), 0);
	l = every_limit();
	assert_int_equal(cgroup_limits_validate(&l, &err), 0);
#define BAD(stmt)                                                                                  \
	do {                                                                                       \
		l = every_limit();                                                                 \
		stmt;                                                                              \
		err = (HsError){0};                                                                \
		assert_int_equal(cgroup_limits_validate(&l, &err), -EINVAL);                       \
		assert_string_equal(err.kind, "invalid-argument");                                 \
	} while (0)
	BAD(l.cpu_quota_us = 999);
	BAD(l.cpu_period_us = 999);
	BAD(l.cpu_period_us = 1000001);
	BAD(l.cpu_weight = 10001);
	BAD(l.n_io = CGROUP_MAX_IO + 1);
	BAD(l.io[1] = l.io[0]);
	BAD(l.io[0].major = 4096);
	BAD(l.io[0].minor = 1 << 20);
	BAD(snprintf(l.cpuset_cpus, sizeof(l.cpuset_cpus), "0-3;"));
	BAD(snprintf(l.cpuset_mems, sizeof(l.cpuset_mems), "0\n"));
	BAD(memset(l.cpuset_mems, '1', sizeof(l.cpuset_mems)));
#undef BAD
	/* And create refuses before touching anything. */
	Fake f;
	fake_full(&f);
	l = every_limit();
	l.cpu_weight = 20000;
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), -EINVAL);
	assert_non_null(strstr(err.message, "cpu weight 20000"));
	assert_false(exists(f.root, VM));
	fake_done(&f);
}

static void test_idempotent_create_remove(void **state)
{
	Fake f;
	fake_full(&f);
	CgroupLimits l = every_limit();
	HsError err = {0};
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), 0);
	assert_int_equal(cgroup_vm_place_thread(&f.h, "web1", "vcpu0", 1234, "2", &err), 0);
	/* hsd restarts: the group is re-found and its limits rewritten. */
	fake_write(f.root, VM "/memory.max", "12345\n");
	fake_write(f.root, VM "/cgroup.threads", "");
	assert_int_equal(cgroup_vm_create(&f.h, "web1", &l, &err), 0);
	assert_file(f.root, VM "/memory.max", "1073741824\n");
	assert_file(f.root, VM "/vcpu0/cgroup.type", "threaded\n");

	/* Busy: the processes are named, nothing loops. */
	fake_write(f.root, VM "/cgroup.procs", "777\n778\n");
	pid_t pids[4];
	assert_int_equal(cgroup_vm_procs(&f.h, "web1", pids, 4), 2);
	assert_int_equal(pids[0], 777);
	assert_int_equal(pids[1], 778);
	assert_int_equal(cgroup_vm_procs(&f.h, "web1", pids, 1), 2);
	assert_int_equal(cgroup_vm_procs(&f.h, "nope", pids, 1), -ENOENT);
	/* The vCPU thread went with its process. */
	fake_write(f.root, VM "/vcpu0/cgroup.threads", "");
	err = (HsError){0};
	assert_int_equal(cgroup_vm_remove(&f.h, "web1", &err), -EBUSY);
	assert_string_equal(err.kind, "cgroup-busy");
	assert_string_equal(err.message,
			    "cgroup /sys/fs/cgroup/hsd/vm-web1 still holds 2 processes: 777 778");
	/* Sub-groups went first; the group stays until its processes are gone. */
	assert_false(exists(f.root, VM "/vcpu0"));
	assert_true(exists(f.root, VM));

	fake_write(f.root, VM "/cgroup.procs", "");
	assert_int_equal(cgroup_vm_remove(&f.h, "web1", &err), 0);
	assert_false(exists(f.root, VM));
	assert_int_equal(cgroup_vm_remove(&f.h, "web1", &err), 0);
	assert_int_equal(cgroup_vm_remove(&f.h, "never-made", &err), 0);
	assert_true(exists(f.root, "sys/fs/cgroup/hsd/cgroup.procs"));
	fake_done(&f);
}

static void test_fd_enter_path(void **state)
{
	Fake f;
	fake_full(&f);
	assert_int_equal(cgroup_vm_fd(&f.h, "web1"), -ENOENT);
	assert_int_equal(cgroup_vm_create(&f.h, "web1", NULL, NULL), 0);
	int fd = cgroup_vm_fd(&f.h, "web1");
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GETFL) & O_PATH, O_PATH);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(cgroup_enter(fd), 0);
	assert_file(f.root, VM "/cgroup.procs", "0\n");
	close(fd);
	assert_int_equal(cgroup_enter(-1), -EBADF);
	char path[64];
	assert_int_equal(cgroup_vm_path(&f.h, "web1", path, sizeof(path)), 0);
	assert_string_equal(path, "/hsd/vm-web1");
	assert_int_equal(cgroup_vm_path(&f.h, "web1", path, 8), -ENAMETOOLONG);
	fake_done(&f);
}

static void test_controller_names(void **state)
{
	char buf[64];
	assert_string_equal(cgroup_controller_name(CG_IO), "io");
	assert_null(cgroup_controller_name(CG_CPU | CG_IO));
	assert_null(cgroup_controller_name(0));
	assert_string_equal(cgroup_controllers_format(CG_ALL, buf, sizeof(buf)),
			    "cpu cpuset memory io pids");
	assert_string_equal(cgroup_controllers_format(0, buf, sizeof(buf)), "");
	assert_string_equal(cgroup_controllers_format(CG_ALL, buf, 8), "cpu");
}

/* A partition's io.max goes to its disk; a device with no block device
 * behind it (major 0, or unknown to sysfs) has none. */
static void test_io_device(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "sys/devices/virtual/block/vda/dev", "254:0\n");
	fake_write(root, "sys/devices/virtual/block/vda/vda1/dev", "254:1\n");
	fake_write(root, "sys/devices/virtual/block/vda/vda1/partition", "1\n");
	fake_write(root, "sys/dev/block/.keep", "");
	char path[4096];
	snprintf(path, sizeof(path), "%s/sys/dev/block/254:0", root);
	assert_int_equal(symlink("../../devices/virtual/block/vda", path), 0);
	snprintf(path, sizeof(path), "%s/sys/dev/block/254:1", root);
	assert_int_equal(symlink("../../devices/virtual/block/vda/vda1", path), 0);
	int rootfd = fake_open(root);
	unsigned ma = 1, mi = 1;
	assert_int_equal(cgroup_io_device(rootfd, 254, 1, &ma, &mi), 0);
	assert_int_equal(ma, 254);
	assert_int_equal(mi, 0);
	ma = mi = 1;
	assert_int_equal(cgroup_io_device(rootfd, 254, 0, &ma, &mi), 0);
	assert_int_equal(ma, 254);
	assert_int_equal(mi, 0);
	assert_int_equal(cgroup_io_device(rootfd, 0, 45, &ma, &mi), -ENODEV);
	assert_int_equal(cgroup_io_device(rootfd, 8, 0, &ma, &mi), -ENODEV);
	close(rootfd);
	fake_tree_free(root);

	/* This machine's root file system: its disk, or no block device. */
	struct stat st;
	assert_int_equal(stat("/", &st), 0);
	int slash = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(slash >= 0);
	int r = cgroup_io_device(slash, major(st.st_dev), minor(st.st_dev), &ma, &mi);
	close(slash);
	if (major(st.st_dev) == 0) {
		assert_int_equal(r, -ENODEV);
	} else {
		assert_int_equal(r, 0);
		char dev[64];
		snprintf(dev, sizeof(dev), "/sys/dev/block/%u:%u", ma, mi);
		assert_int_equal(access(dev, F_OK), 0);
		print_message("/ is on %u:%u, io.max device %u:%u\n", major(st.st_dev),
			      minor(st.st_dev), ma, mi);
	}
}

/* ---- the real kernel ---- */

typedef struct Real {
	int rootfd;
	CgroupHost h;
	bool opened;
	char base[64];
	pid_t children[4];
	char root_subtree[512];
} Real;

static int real_setup(void **state)
{
	Real *r = calloc(1, sizeof(*r));
	if (!r)
		return -1;
	r->rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(r->base, sizeof(r->base), "hs-test-%d", (int)getpid());
	*state = r;
	return r->rootfd >= 0 ? 0 : -1;
}

/* rmdir only, deepest first: cgroupfs directories hold no removable files. */
static void real_rmdir_tree(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_type == DT_DIR && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			real_rmdir_tree(dirfd(d), de->d_name);
	closedir(d);
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		fprintf(stderr, "cleanup: rmdir %s: %m\n", name);
}

static void kill_child(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGKILL);
		while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	*pid = 0;
}

static unsigned mask_of(const char *s);

/* Gives back to the host's root what hsd enabled there (nothing on a root
 * that offers none of hsd's controllers, or that had them all). */
static void real_restore_root(Real *r)
{
	char path[600], now[512];
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", r->h.mount);
	if (hs_read_small(r->rootfd, path, now, sizeof(now)) < 0)
		return;
	unsigned added = mask_of(now) & ~mask_of(r->root_subtree);
	for (unsigned bit = 1; bit & CG_ALL; bit <<= 1) {
		char req[32];
		int fd = openat(r->rootfd, path, O_WRONLY | O_CLOEXEC);
		if (!(added & bit) || fd < 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		snprintf(req, sizeof(req), "-%s\n", cgroup_controller_name(bit));
		if (write(fd, req, strlen(req)) < 0)
			fprintf(stderr, "cleanup: %s to /%s: %m\n", req, path);
		close(fd);
	}
}

static int real_teardown(void **state)
{
	Real *r = *state;
	for (size_t i = 0; i < ARRAY_SIZE(r->children); i++)
		kill_child(&r->children[i]);
	if (r->opened) {
		char dir[512];
		snprintf(dir, sizeof(dir), "%s/%s", r->h.mount, r->base);
		real_rmdir_tree(r->rootfd, dir);
		struct stat st;
		if (fstatat(r->rootfd, dir, &st, 0) == 0)
			fprintf(stderr, "cleanup: /%s is still there\n", dir);
		real_restore_root(r);
	}
	close(r->rootfd);
	free(r);
	return 0;
}

/* The cgroup2 mount point from /proc/self/mountinfo, as the test sees it
 * (independently of the module), relative to "/"; false when none. */
static bool real_mount(char *buf, size_t size)
{
	char *data = NULL;
	bool found = false;
	if (hs_read_file(AT_FDCWD, "/proc/self/mountinfo", 4 << 20, &data, NULL) < 0)
		return false;
	for (char *line = strtok(data, "\n"); line && !found; line = strtok(NULL, "\n")) {
		char mp[256];
		if (!strstr(line, " - cgroup2 ") ||
		    sscanf(line, "%*s %*s %*s %*s /%255s", mp) != 1)
			continue;
		snprintf(buf, size, "%s", mp);
		found = true;
	}
	free(data);
	return found;
}

/* Skips (never passes) without root or without a cgroup2 mount; opens
 * hs-test-<pid> under the real mount. */
static void real_open(Real *r)
{
	HsError err = {0};
	char mount[256], path[600];
	if (geteuid() != 0) {
		print_message("skipping: needs root to create cgroups\n");
		skip();
	}
	if (!real_mount(mount, sizeof(mount))) {
		print_message("skipping: no cgroup2 file system is mounted\n");
		skip();
	}
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", mount);
	assert_int_equal(hs_read_small(r->rootfd, path, r->root_subtree, sizeof(r->root_subtree)), 0);
	r->opened = true;
	int rc = cgroup_host_open(r->rootfd, r->base, &r->h, &err);
	if (rc < 0)
		fail_msg("cgroup_host_open: %s", err.message);
	assert_string_equal(r->h.mount, mount);
	assert_string_equal(r->h.base, r->base);
	print_message("cgroup2 at /%s, base %s, controllers [%s], missing: %s\n", r->h.mount,
		      r->h.base, cgroup_controllers_format(r->h.controllers, path, sizeof(path)),
		      r->h.missing[0] ? r->h.missing : "none");
}

static unsigned mask_of(const char *s)
{
	unsigned mask = 0;
	for (unsigned bit = 1; bit & CG_ALL; bit <<= 1) {
		const char *name = cgroup_controller_name(bit);
		for (const char *p = strstr(s, name); p; p = strstr(p + 1, name))
			if ((p == s || p[-1] == ' ') && (!p[strlen(name)] || strchr(" \n", p[strlen(name)])))
				mask |= bit;
	}
	return mask;
}

/* The host's root group: hsd may only have added controllers it offered
 * and hsd uses; on a root that offers none of them, not a byte changed. */
static void assert_root_untouched(Real *r)
{
	char path[600], now[512];
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", r->h.mount);
	assert_int_equal(hs_read_small(r->rootfd, path, now, sizeof(now)), 0);
	unsigned before = mask_of(r->root_subtree), after = mask_of(now);
	assert_int_equal(after & before, before);
	if (!(r->h.controllers & ~before))
		assert_string_equal(now, r->root_subtree);
}

/* The 0:: line of /proc/PID[/task/TID]/cgroup. */
static void proc_cgroup(pid_t pid, pid_t tid, char *buf, size_t size)
{
	char path[96], data[4096];
	if (tid)
		snprintf(path, sizeof(path), "/proc/%d/task/%d/cgroup", (int)pid, (int)tid);
	else
		snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	assert_int_equal(hs_read_small(AT_FDCWD, path, data, sizeof(data)), 0);
	char *line = strstr(data, "0::");
	assert_non_null(line);
	line += 3;
	line[strcspn(line, "\n")] = '\0';
	snprintf(buf, size, "%s", line);
}

static int report_fd = -1;

static void *child_thread(void *arg)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);
	if (write(report_fd, &tid, sizeof(tid)) != sizeof(tid))
		_exit(3);
	for (;;)
		pause();
	return arg;
}

/* A child that enters the group, starts a thread and waits to be killed;
 * returns its pid and its second thread's id. */
static pid_t spawn_in_group(int group_fd, pid_t *ret_tid)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		int rc = cgroup_enter(group_fd);
		if (write(p[1], &rc, sizeof(rc)) != sizeof(rc) || rc < 0)
			_exit(2);
		report_fd = p[1];
		pthread_t t;
		if (pthread_create(&t, NULL, child_thread, NULL) != 0)
			_exit(4);
		for (;;)
			pause();
	}
	close(p[1]);
	struct pollfd pfd = {.fd = p[0], .events = POLLIN};
	int rc = -EIO;
	pid_t tid = 0;
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(read(p[0], &rc, sizeof(rc)), sizeof(rc));
	if (rc < 0) {
		close(p[0]);
		fail_msg("cgroup_enter in the child: %s", strerror(-rc));
	}
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(read(p[0], &tid, sizeof(tid)), sizeof(tid));
	close(p[0]);
	*ret_tid = tid;
	return pid;
}

static bool pid_listed(const CgroupHost *h, const char *vm, pid_t pid)
{
	pid_t pids[64];
	int n = cgroup_vm_procs(h, vm, pids, ARRAY_SIZE(pids));
	for (int i = 0; i < n && i < (int)ARRAY_SIZE(pids); i++)
		if (pids[i] == pid)
			return true;
	return false;
}

static void assert_group_file(const Real *r, const char *rel, const char *expected)
{
	char path[700], buf[256];
	snprintf(path, sizeof(path), "%s/%s/%s", r->h.mount, r->h.base, rel);
	assert_int_equal(hs_read_small(r->rootfd, path, buf, sizeof(buf)), 0);
	assert_string_equal(buf, expected);
}

static void test_real_kernel_group(void **state)
{
	Real *r = *state;
	HsError err = {0};
	char want[256], got[256];
	real_open(r);

	CgroupLimits l = {.memory_max = 256ull << 20, .cpu_weight = 50, .pids_max = 64};
	int skipped = cgroup_vm_create(&r->h, "x", &l, &err);
	if (skipped < 0)
		fail_msg("cgroup_vm_create: %s", err.message);
	assert_int_equal(skipped, (CG_MEMORY | CG_CPU | CG_PIDS) & ~r->h.controllers);
	/* Idempotent. */
	assert_int_equal(cgroup_vm_create(&r->h, "x", &l, &err), skipped);

	int fd = cgroup_vm_fd(&r->h, "x");
	assert_true(fd >= 0);
	pid_t tid;
	r->children[0] = spawn_in_group(fd, &tid);
	close(fd);
	assert_true(pid_listed(&r->h, "x", r->children[0]));
	assert_int_equal(cgroup_vm_path(&r->h, "x", want, sizeof(want)), 0);
	snprintf(got, sizeof(got), "/%s/vm-x", r->base);
	assert_string_equal(want, got);
	proc_cgroup(r->children[0], 0, got, sizeof(got));
	assert_string_equal(got, want);

	/* The second thread alone into a threaded vCPU group. */
	int q = cgroup_vm_place_thread(&r->h, "x", "vcpu0", tid, "0", &err);
	if (q < 0)
		fail_msg("cgroup_vm_place_thread: %s", err.message);
	assert_int_equal(q, r->h.controllers & CG_CPUSET ? 0 : CG_CPUSET);
	proc_cgroup(r->children[0], tid, got, sizeof(got));
	snprintf(want + strlen(want), sizeof(want) - strlen(want), "/vcpu0");
	assert_string_equal(got, want);
	proc_cgroup(r->children[0], r->children[0], got, sizeof(got)); /* the main thread stays */
	assert_int_equal(cgroup_vm_path(&r->h, "x", want, sizeof(want)), 0);
	assert_string_equal(got, want);
	assert_group_file(r, "vm-x/cgroup.type", "domain threaded\n");
	assert_group_file(r, "vm-x/vcpu0/cgroup.type", "threaded\n");
	snprintf(want, sizeof(want), "%d\n", (int)tid);
	assert_group_file(r, "vm-x/vcpu0/cgroup.threads", want);
	/* The threaded domain's cgroup.procs still lists the whole process. */
	assert_true(pid_listed(&r->h, "x", r->children[0]));

	/* The main thread into emu. */
	q = cgroup_vm_place_thread(&r->h, "x", "emu", r->children[0], NULL, &err);
	if (q < 0)
		fail_msg("cgroup_vm_place_thread emu: %s", err.message);
	snprintf(want, sizeof(want), "%d\n", (int)r->children[0]);
	assert_group_file(r, "vm-x/emu/cgroup.threads", want);
	assert_true(pid_listed(&r->h, "x", r->children[0]));

	/* A thread of a process outside the VM is refused, with a reason. */
	err = (HsError){0};
	q = cgroup_vm_place_thread(&r->h, "x", "vcpu1", getpid(), NULL, &err);
	assert_true(q < 0);
	print_message("placing an outside thread: %s\n", err.message);

	/* Live change of limits on the real group. */
	l.memory_max = 0;
	q = cgroup_vm_set_limits(&r->h, "x", &l, &err);
	if (q < 0)
		fail_msg("cgroup_vm_set_limits: %s", err.message);

	/* Busy while the child lives: named, no looping. */
	err = (HsError){0};
	assert_int_equal(cgroup_vm_remove(&r->h, "x", &err), -EBUSY);
	assert_string_equal(err.kind, "cgroup-busy");
	snprintf(want, sizeof(want), "1 process: %d", (int)r->children[0]);
	assert_non_null(strstr(err.message, want));
	print_message("remove while busy: %s\n", err.message);

	kill_child(&r->children[0]);
	assert_int_equal(cgroup_vm_remove(&r->h, "x", &err), 0);
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/%s/vm-x", r->h.mount, r->h.base);
	struct stat st;
	assert_int_equal(fstatat(r->rootfd, dir, &st, 0), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(cgroup_vm_remove(&r->h, "x", &err), 0);
	assert_root_untouched(r);
}

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* struct clone_args up to .cgroup (CLONE_ARGS_SIZE_VER2). */
typedef struct CloneArgs {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
		set_tid_size, cgroup;
} CloneArgs;

static void test_real_kernel_clone_into_cgroup(void **state)
{
	Real *r = *state;
	HsError err = {0};
	char want[256], got[256];
	real_open(r);
	int skipped = cgroup_vm_create(&r->h, "c3", NULL, &err);
	if (skipped < 0)
		fail_msg("cgroup_vm_create: %s", err.message);
	int fd = cgroup_vm_fd(&r->h, "c3");
	assert_true(fd >= 0);
	CloneArgs args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)fd};
	long pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid == 0) {
		/* The child: nothing but system calls until killed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	int e = errno;
	close(fd);
	if (pid < 0 && (e == ENOSYS || e == EINVAL || e == E2BIG)) {
		print_message("skipping: clone3(CLONE_INTO_CGROUP) unsupported here: %s\n",
			      strerror(e));
		skip();
	}
	if (pid < 0)
		fail_msg("clone3(CLONE_INTO_CGROUP): %s", strerror(e));
	r->children[1] = (pid_t)pid;
	/* Born in the group: no window in which it ran elsewhere. */
	proc_cgroup(r->children[1], 0, got, sizeof(got));
	assert_int_equal(cgroup_vm_path(&r->h, "c3", want, sizeof(want)), 0);
	assert_string_equal(got, want);
	assert_true(pid_listed(&r->h, "c3", r->children[1]));
	kill_child(&r->children[1]);
	assert_int_equal(cgroup_vm_remove(&r->h, "c3", &err), 0);
	assert_root_untouched(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mount_found_among_others),
		cmocka_unit_test(test_no_cgroup2_mount),
		cmocka_unit_test(test_hybrid_like_this_host),
		cmocka_unit_test(test_some_controllers_missing),
		cmocka_unit_test(test_mountinfo_escapes_and_mount_root),
		cmocka_unit_test(test_delegated_group),
		cmocka_unit_test(test_configured_base),
		cmocka_unit_test(test_limits_exact_contents),
		cmocka_unit_test(test_limits_max_forms),
		cmocka_unit_test(test_live_change),
		cmocka_unit_test(test_unavailable_controllers_skipped),
		cmocka_unit_test(test_domain_controllers_disabled_for_threads),
		cmocka_unit_test(test_threaded_subgroups),
		cmocka_unit_test(test_invalid_names),
		cmocka_unit_test(test_limits_validation),
		cmocka_unit_test(test_idempotent_create_remove),
		cmocka_unit_test(test_fd_enter_path),
		cmocka_unit_test(test_controller_names),
		cmocka_unit_test(test_io_device),
		cmocka_unit_test_setup_teardown(test_real_kernel_group, real_setup, real_teardown),
		cmocka_unit_test_setup_teardown(test_real_kernel_clone_into_cgroup, real_setup,
						real_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
