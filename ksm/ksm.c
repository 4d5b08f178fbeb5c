/* SPDX-License-Identifier: Apache-2.0 */
#include "ksm.h"

#include <errno.h>
#include <inttypes.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hs-util.h"

#define KSM_DIR "sys/kernel/mm/ksm"


static int read_i64(int rootfd, const char *dir, const char *name, int64_t *ret)
{
	char path[256], buf[64], *end;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int r = hs_read_small(rootfd, path, buf, sizeof(buf));
	if (r < 0)
		return r;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n'))
		return -EINVAL;
	*ret = v;
	return 0;
}

static void get_u64(int rootfd, const char *name, uint64_t *ret)
{
	int64_t v;
	if (read_i64(rootfd, KSM_DIR, name, &v) == 0 && v >= 0)
		*ret = (uint64_t)v;
}

int ksm_read_stats(int rootfd, KsmStats *ret)
{
	KsmStats s = {.merge_across_nodes = -1, .run = -1};
	int64_t v;
	int r = read_i64(rootfd, KSM_DIR, "run", &v);
	if (r == -ENOENT) {
		*ret = s;
		return 0;
	}
	if (r < 0)
		return r;
	s.present = true;
	s.run = (int)v;
	get_u64(rootfd, "pages_to_scan", &s.pages_to_scan);
	get_u64(rootfd, "sleep_millisecs", &s.sleep_millisecs);
	get_u64(rootfd, "pages_shared", &s.pages_shared);
	get_u64(rootfd, "pages_sharing", &s.pages_sharing);
	get_u64(rootfd, "pages_unshared", &s.pages_unshared);
	get_u64(rootfd, "pages_volatile", &s.pages_volatile);
	get_u64(rootfd, "full_scans", &s.full_scans);
	if (read_i64(rootfd, KSM_DIR, "merge_across_nodes", &v) == 0)
		s.merge_across_nodes = (int)v;
	if (read_i64(rootfd, KSM_DIR, "general_profit", &v) == 0) {
		s.has_general_profit = true;
		s.general_profit = v;
	}
	if (read_i64(rootfd, KSM_DIR, "ksm_zero_pages", &v) == 0 && v >= 0) {
		s.has_zero_pages = true;
		s.ksm_zero_pages = (uint64_t)v;
	}
	if (read_i64(rootfd, KSM_DIR, "use_zero_pages", &v) == 0) {
		s.has_use_zero_pages = true;
		s.use_zero_pages = (int)v;
	}
	*ret = s;
	return 0;
}

uint64_t ksm_saved_bytes(const KsmStats *s, long page_size)
{
	uint64_t pages = s->pages_sharing + (s->has_zero_pages ? s->ksm_zero_pages : 0);
	return pages * (uint64_t)page_size;
}

int ksm_write_knob(int rootfd, const char *knob, uint64_t value)
{
	static const char *const allowed[] = {"run", "pages_to_scan", "sleep_millisecs",
					      "merge_across_nodes", "use_zero_pages", NULL};
	bool ok = false;
	for (size_t i = 0; allowed[i]; i++)
		ok |= !strcmp(knob, allowed[i]);
	if (!ok)
		return -EINVAL;
	char path[256], buf[32];
	snprintf(path, sizeof(path), KSM_DIR "/%s", knob);
	_cleanup_close_ int fd = openat(rootfd, path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", value);
	if (write(fd, buf, (size_t)n) != n)
		return -errno ? -errno : -EIO;
	return 0;
}

int ksm_read_process(int rootfd, pid_t pid, KsmProcess *ret)
{
	char dir[64], path[96], buf[1024];
	KsmProcess p = {0};
	int64_t v;
	snprintf(dir, sizeof(dir), "proc/%d", (int)pid);
	int r = read_i64(rootfd, dir, "ksm_merging_pages", &v);
	if (r == 0 && v >= 0) {
		p.present = true;
		p.merging_pages = (uint64_t)v;
	} else if (r != -ENOENT) {
		return r;
	}
	snprintf(path, sizeof(path), "%s/ksm_stat", dir);
	if (hs_read_small(rootfd, path, buf, sizeof(buf)) == 0) {
		char *line = strstr(buf, "ksm_process_profit ");
		if (line) {
			p.has_profit = true;
			p.profit = strtoll(line + strlen("ksm_process_profit "), NULL, 10);
		}
		line = strstr(buf, "ksm_merging_pages ");
		if (line && !p.present) {
			p.present = true;
			p.merging_pages = strtoull(line + strlen("ksm_merging_pages "), NULL, 10);
		}
	}
	*ret = p;
	return 0;
}

pid_t ksm_find_ksmd(int rootfd)
{
	int dfd = openat(rootfd, "proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return 0;
	}
	pid_t found = 0;
	struct dirent *de;
	while (!found && (de = readdir(d))) {
		char path[300], comm[32];
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "%s/comm", de->d_name);
		if (hs_read_small(dirfd(d), path, comm, sizeof(comm)) == 0 &&
		    !strcmp(comm, "ksmd\n"))
			found = (pid_t)strtol(de->d_name, NULL, 10);
	}
	closedir(d);
	return found;
}

int ksm_read_cpu_ticks(int rootfd, pid_t pid, uint64_t *ret)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "proc/%d/stat", (int)pid);
	int r = hs_read_small(rootfd, path, buf, sizeof(buf));
	if (r < 0)
		return r;
	/* The comm field may hold spaces: count fields after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	unsigned long long utime, stime;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
		   &stime) != 2)
		return -EINVAL;
	*ret = utime + stime;
	return 0;
}
