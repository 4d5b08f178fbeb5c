/* SPDX-License-Identifier: Apache-2.0 */
/* Running tools (qemu-img) without blocking the loop: the spawner forks
 * them, their output goes to a memfd, their exit comes back through the
 * spawner's reports. Every run has a timeout, after which it is killed. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "hs-util.h"

typedef struct Hsd Hsd;

typedef struct ToolResult {
	bool ok;          /* exited with status 0 */
	int wstatus;
	bool timed_out;
	const char *output; /* stdout + stderr, NUL-terminated (at most 1 MiB) */
	double seconds;
} ToolResult;

typedef void (*ToolDoneCb)(Hsd *h, const ToolResult *res, void *ud);

/* argv[0] is looked up in PATH. fds[i] becomes fd 3 + i in the tool (the
 * caller keeps its own copies). The callback always runs, later, from the
 * loop, never from inside tool_run. */
int tool_run(Hsd *h, char *const *argv, const int *fds, unsigned n_fds, double timeout,
	     ToolDoneCb cb, void *ud, HsError *err);
/* The spawner reported an exit: true if it was one of ours. */
bool tool_spawner_exit(Hsd *h, pid_t pid, int wstatus);
/* hsd is stopping: kill every tool, drop callbacks. */
void tool_free_all(Hsd *h);
/* A one-line summary of a failed run, for error messages. */
void tool_describe_failure(const ToolResult *res, char *buf, size_t size);
