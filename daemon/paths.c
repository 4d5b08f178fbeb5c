/* SPDX-License-Identifier: Apache-2.0 */
#include "paths.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>

int allowed_dirs_add(AllowedDirs *a, const char *dir)
{
	if (a->n >= PATHS_MAX_DIRS)
		return -E2BIG;
	if (dir[0] != '/')
		return -EINVAL;
	char *d = strdup(dir);
	if (!d)
		return -ENOMEM;
	size_t n = strlen(d);
	while (n > 1 && d[n - 1] == '/')
		d[--n] = '\0';
	a->dirs[a->n++] = d;
	return 0;
}

void allowed_dirs_clear(AllowedDirs *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->dirs[i]);
	a->n = 0;
}

char *allowed_dirs_join(const AllowedDirs *a)
{
	size_t len = 1;
	for (size_t i = 0; i < a->n; i++)
		len += strlen(a->dirs[i]) + 2;
	char *s = calloc(1, len);
	if (!s)
		return NULL;
	for (size_t i = 0; i < a->n; i++) {
		if (i)
			strcat(s, ", ");
		strcat(s, a->dirs[i]);
	}
	return s;
}

/* The allowed dir with the longest matching prefix; the rest of the path
 * goes to ret_rel. */
static const char *find_base(const AllowedDirs *a, const char *path, const char **ret_rel)
{
	const char *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; i < a->n; i++) {
		const char *d = a->dirs[i];
		size_t n = strlen(d);
		if (!strcmp(d, "/")) {
			if (!best) {
				best = d;
				*ret_rel = path + 1;
			}
			continue;
		}
		if (!strncmp(path, d, n) && path[n] == '/' && path[n + 1] && n > best_len) {
			best = d;
			best_len = n;
			*ret_rel = path + n + 1;
		}
	}
	return best;
}

int paths_open_beneath(const AllowedDirs *a, const char *path, int flags, const char *field,
		       HsError *err)
{
	const char *rel = NULL;
	const char *base = find_base(a, path, &rel);
	if (!base) {
		_cleanup_free_ char *list = allowed_dirs_join(a);
		return hs_error_set(err, -EPERM, "path-not-allowed",
				    "%s: '%s' is outside the allowed directories (%s)", field, path,
				    list ? list : "?");
	}
	_cleanup_close_ int dfd = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return hs_error_set(err, -errno, "invalid-spec", "%s: cannot open %s: %m", field,
				    base);
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC | O_NOCTTY),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof(how));
	if (fd < 0) {
		if (errno == EXDEV || errno == ELOOP)
			return hs_error_set(err, -EPERM, "path-not-allowed",
					    "%s: '%s' leads outside %s (through a symlink or '..')",
					    field, path, base);
		return hs_error_set(err, -errno, "invalid-spec", "%s: cannot open '%s': %m", field,
				    path);
	}
	return fd;
}
