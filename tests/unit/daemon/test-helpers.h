/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by the daemon unit tests (header-only: each test is
 * one binary). Include after <cmocka.h>. */
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hs-util.h"

/* A fresh private directory under $TMPDIR (or /tmp); free with
 * test_tmpdir_remove. */
static inline char *test_tmpdir_new(const char *what)
{
	const char *base = getenv("TMPDIR");
	char *p = hs_strdup_printf("%s/hs-test-%s-XXXXXX", base && *base ? base : "/tmp", what);
	assert_non_null(p);
	assert_non_null(mkdtemp(p));
	return p;
}

static inline void test_tmpdir_remove(char **p)
{
	if (!*p)
		return;
	assert_int_equal(hs_rm_rf_at(AT_FDCWD, *p), 0);
	free(*p);
	*p = NULL;
}

/* Write a whole file (plain, not atomic: tests use it to plant content). */
static inline void test_write_file(const char *path, const char *data, size_t len, int mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(hs_write_all(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

/* Number of entries in a directory, "." and ".." excluded; with a non-NULL
 * prefix, only names starting with it. */
static inline size_t test_count_entries(const char *dir, const char *prefix)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	DIR *d = fdopendir(fd);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (prefix && !hs_str_has_prefix(de->d_name, prefix))
			continue;
		n++;
	}
	closedir(d);
	return n;
}
