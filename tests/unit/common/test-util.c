/* SPDX-License-Identifier: Apache-2.0 */
/* common/hs-util: the directory walk, on a real temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "hs-util.h"

typedef struct Seen {
	char names[8][32];
	size_t n;
	size_t stop_after; /* 0: never stop */
	bool dfd_ok;       /* every dfd given let us stat its entry */
} Seen;

static int collect(int dfd, const char *name, void *ud)
{
	Seen *s = ud;
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		s->dfd_ok = false;
	if (s->n < ARRAY_SIZE(s->names))
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
	s->n++;
	return s->stop_after && s->n >= s->stop_after ? 42 : 0;
}

static bool seen(const Seen *s, const char *name)
{
	for (size_t i = 0; i < s->n && i < ARRAY_SIZE(s->names); i++)
		if (!strcmp(s->names[i], name))
			return true;
	return false;
}

static void touch(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
}

static int setup(void **state)
{
	char *dir = strdup("/tmp/hs-util-XXXXXX");
	assert_non_null(dir);
	assert_non_null(mkdtemp(dir));
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(mkdirat(fd, "sub", 0755), 0);
	assert_int_equal(mkdirat(fd, "empty", 0755), 0);
	touch(fd, "sub/a");
	touch(fd, "sub/.hidden");
	assert_int_equal(mkdirat(fd, "sub/c", 0755), 0);
	close(fd);
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	char *dir = *state;
	assert_int_equal(hs_rm_rf_at(AT_FDCWD, dir), 0);
	free(dir);
	return 0;
}

static void test_dir_foreach_all(void **state)
{
	int fd = open(*state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	Seen s = {.dfd_ok = true};
	assert_int_equal(hs_dir_foreach(fd, "sub", collect, &s), 0);
	/* Every entry but "." and "..", hidden ones included. */
	assert_int_equal(s.n, 3);
	assert_true(seen(&s, "a"));
	assert_true(seen(&s, ".hidden"));
	assert_true(seen(&s, "c"));
	assert_false(seen(&s, "."));
	assert_false(seen(&s, ".."));
	assert_true(s.dfd_ok);

	Seen e = {.dfd_ok = true};
	assert_int_equal(hs_dir_foreach(fd, "empty", collect, &e), 0);
	assert_int_equal(e.n, 0);
	close(fd);
}

static void test_dir_foreach_stop(void **state)
{
	int fd = open(*state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	/* A callback's non-zero answer ends the walk and is returned. */
	Seen s = {.stop_after = 2, .dfd_ok = true};
	assert_int_equal(hs_dir_foreach(fd, "sub", collect, &s), 42);
	assert_int_equal(s.n, 2);
	close(fd);
}

static void test_dir_foreach_errors(void **state)
{
	int fd = open(*state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	Seen s = {0};
	assert_int_equal(hs_dir_foreach(fd, "missing", collect, &s), -ENOENT);
	assert_int_equal(hs_dir_foreach(fd, "sub/a", collect, &s), -ENOTDIR);
	assert_int_equal(s.n, 0);
	close(fd);

	/* An absolute path ignores dirfd; "." walks dirfd itself. */
	Seen t = {.dfd_ok = true};
	char p[256];
	snprintf(p, sizeof(p), "%s/sub", (const char *)*state);
	assert_int_equal(hs_dir_foreach(-1, p, collect, &t), 0);
	assert_int_equal(t.n, 3);
	int sub = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sub >= 0);
	Seen u = {.dfd_ok = true};
	assert_int_equal(hs_dir_foreach(sub, ".", collect, &u), 0);
	assert_int_equal(u.n, 3);
	assert_true(u.dfd_ok);
	close(sub);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dir_foreach_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_foreach_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_foreach_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
