/* SPDX-License-Identifier: Apache-2.0 */
/* The allowed-directories policy on a real file system. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "paths.h"

typedef struct Fx {
	char dir[64];
	AllowedDirs a;
} Fx;

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
}

static int setup(void **state)
{
	Fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/hs-paths-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char p[256];
	snprintf(p, sizeof(p), "%s/ok", f->dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/ok/deep", f->dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/ok/file", f->dir);
	touch(p);
	snprintf(p, sizeof(p), "%s/ok/deep/file2", f->dir);
	touch(p);
	snprintf(p, sizeof(p), "%s/secret", f->dir);
	touch(p);
	snprintf(p, sizeof(p), "%s/ok/inlink", f->dir);
	assert_int_equal(symlink("deep/file2", p), 0);
	snprintf(p, sizeof(p), "%s/ok/outlink", f->dir);
	assert_int_equal(symlink("../secret", p), 0);
	snprintf(p, sizeof(p), "%s/ok/abslink", f->dir);
	assert_int_equal(symlink("/etc/hostname", p), 0);
	snprintf(p, sizeof(p), "%s/ok/", f->dir); /* trailing slash is trimmed */
	assert_int_equal(allowed_dirs_add(&f->a, p), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	Fx *f = *state;
	hs_rm_rf_at(AT_FDCWD, f->dir);
	allowed_dirs_clear(&f->a);
	free(f);
	return 0;
}

static int try_open(Fx *f, const char *rel, HsError *err)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", f->dir, rel);
	int fd = paths_open_beneath(&f->a, p, O_RDONLY, "kernel", err);
	if (fd >= 0)
		close(fd);
	return fd < 0 ? fd : 0;
}

static void test_inside(void **state)
{
	Fx *f = *state;
	HsError err = {0};
	assert_int_equal(try_open(f, "ok/file", &err), 0);
	assert_int_equal(try_open(f, "ok/deep/file2", &err), 0);
	assert_int_equal(try_open(f, "ok/inlink", &err), 0); /* symlink staying inside */
}

static void test_outside(void **state)
{
	Fx *f = *state;
	HsError err = {0};
	assert_int_equal(try_open(f, "secret", &err), -EPERM);
	assert_string_equal(err.kind, "path-not-allowed");
	assert_non_null(strstr(err.message, "kernel: "));
	assert_non_null(strstr(err.message, "outside the allowed directories"));
	/* a prefix that is not a directory boundary */
	assert_int_equal(try_open(f, "okay", &err), -EPERM);
	/* the allowed dir itself is not a file */
	char p[256];
	snprintf(p, sizeof(p), "%s/ok", f->dir);
	assert_int_equal(paths_open_beneath(&f->a, p, O_RDONLY, "kernel", &err), -EPERM);
}

static void test_symlinks_out(void **state)
{
	Fx *f = *state;
	HsError err = {0};
	assert_int_equal(try_open(f, "ok/outlink", &err), -EPERM);
	assert_non_null(strstr(err.message, "leads outside"));
	assert_int_equal(try_open(f, "ok/abslink", &err), -EPERM);
}

static void test_missing(void **state)
{
	Fx *f = *state;
	HsError err = {0};
	assert_int_equal(try_open(f, "ok/nope", &err), -ENOENT);
	assert_string_equal(err.kind, "invalid-spec");
}

static void test_root_allows_all_and_longest_prefix(void **state)
{
	AllowedDirs a = {0};
	HsError err = {0};
	assert_int_equal(allowed_dirs_add(&a, "/"), 0);
	int fd = paths_open_beneath(&a, "/etc/hostname", O_RDONLY, "kernel", &err);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(allowed_dirs_add(&a, "relative"), -EINVAL);
	_cleanup_free_ char *j = allowed_dirs_join(&a);
	assert_string_equal(j, "/");
	allowed_dirs_clear(&a);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_inside),
		T(test_outside),
		T(test_symlinks_out),
		T(test_missing),
		cmocka_unit_test(test_root_allows_all_and_longest_prefix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
