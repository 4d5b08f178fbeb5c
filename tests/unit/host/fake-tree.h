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
