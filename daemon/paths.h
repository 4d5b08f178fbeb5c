/* SPDX-License-Identifier: Apache-2.0 */
/* Files named in a VM spec must lie inside allowed directories, reached
 * without following a symlink (or '..') out of them: openat2 with
 * RESOLVE_BENEATH from the allowed directory. */
#pragma once

#include <stddef.h>

#include "hs-util.h"

#define PATHS_MAX_DIRS 16

typedef struct AllowedDirs {
	char *dirs[PATHS_MAX_DIRS]; /* absolute, no trailing '/' (except "/") */
	size_t n;
} AllowedDirs;

int allowed_dirs_add(AllowedDirs *a, const char *dir);
void allowed_dirs_clear(AllowedDirs *a);
/* "dir1, dir2" for messages (new string). */
char *allowed_dirs_join(const AllowedDirs *a);

/* Opens `path` (absolute) with `flags` if it lies beneath an allowed dir.
 * Errors name `field`: -EPERM ("path-not-allowed") when outside or when a
 * symlink leads out, else the open's errno ("invalid-spec"). */
int paths_open_beneath(const AllowedDirs *a, const char *path, int flags, const char *field,
		       HsError *err);
