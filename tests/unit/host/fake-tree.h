/* SPDX-License-Identifier: Apache-2.0 */
/* Builds fake sysfs/procfs trees in a temp dir for unit tests. */
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hs-util.h"

static inline char *fake_tree_new(void)
{
	char tmpl[] = "/tmp/hs-fake-XXXXXX";
	char *d = mkdtemp(tmpl);
	return d ? strdup(d) : NULL;
}

static inline void fake_write(const char *root, const char *rel, const char *content)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	hs_mkdir_p(path, 0755);
	*slash = '/';
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(content, f);
		fclose(f);
	}
}

static inline int fake_open(const char *root)
{
	return open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static inline void fake_tree_free(char *root)
{
	if (!root)
		return;
	hs_rm_rf_at(AT_FDCWD, root);
	free(root);
}

static inline void fake_mkdir(const char *root, const char *rel)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	hs_mkdir_p(path, 0755);
}

/* root/rel -> target (target as given: relative to rel's directory). */
static inline void fake_symlink(const char *root, const char *rel, const char *target)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	hs_mkdir_p(path, 0755);
	*slash = '/';
	unlink(path);
	if (symlink(target, path) < 0)
		fprintf(stderr, "fake_symlink %s: %m\n", path);
}

/* The content of root/rel ("" when missing), NUL-terminated. */
static inline char *fake_read(const char *root, const char *rel, char *buf, size_t size)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	buf[0] = '\0';
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(buf, 1, size - 1, f);
		buf[n] = '\0';
		fclose(f);
	}
	return buf;
}

/* The last component of the symlink root/rel's target ("" when none). */
static inline char *fake_link_base(const char *root, const char *rel, char *buf, size_t size)
{
	char path[4096], target[4096];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	buf[0] = '\0';
	if (n > 0) {
		target[n] = '\0';
		const char *base = strrchr(target, '/');
		if (snprintf(buf, size, "%s", base ? base + 1 : target) >= (int)size)
			buf[0] = '\0';
	}
	return buf;
}

static inline bool fake_exists(const char *root, const char *rel)
{
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	return lstat(path, &st) == 0;
}

/* The path the open fd refers to ("" when unknown), for --wrap'ed calls
 * that act on some files only. */
static inline char *fake_fd_path(int fd, char *buf, size_t size)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, size - 1);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}
