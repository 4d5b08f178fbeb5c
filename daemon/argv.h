/* SPDX-License-Identifier: Apache-2.0 */
/* Building QEMU's argv from a VM spec: pure, no I/O, unit-tested. */
#pragma once

#include <stdbool.h>

#include "spec.h"

typedef struct QemuLaunch {
	const char *binary;     /* qemu-system-x86_64 path */
	int qmp_fd;             /* listening socket fd number in the child */
	int serial_fd;          /* listening socket fd number in the child */
	const char *serial_log; /* QEMU appends all serial output here; may be NULL */
	bool sandbox;           /* QEMU built with seccomp: -sandbox on,... */
} QemuLaunch;

/* A NULL-terminated argv. Every value that goes into a QEMU option list has
 * its commas doubled, so no spec value can inject an option. */
int qemu_argv_build(const VmSpec *spec, const QemuLaunch *launch, char ***ret_argv);
void strv_free(char **v);
/* The argv as one shell-like line (for logs only). */
char *strv_join(char *const *v);
