/* SPDX-License-Identifier: Apache-2.0 */
/* The spawner: a small process forked by hsd at start, before hsd confines
 * itself with seccomp. It is the only part of hsd that may fork and exec:
 * hsd sends it an argv and descriptors over a SOCK_SEQPACKET pair, it forks
 * the QEMU child (launch_child), answers with the pid, reaps its children
 * and reports each exit status. It dies with hsd (PR_SET_PDEATHSIG); its
 * QEMUs do not (they are re-adopted by the next hsd). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "launch.h"

typedef struct Spawner {
	pid_t pid;
	int fd; /* hsd's end */
} Spawner;

/* Forks the spawner. */
int spawner_start(Spawner *sp, HsError *err);
void spawner_stop(Spawner *sp);

/* Asks for a QEMU (in the cgroup cgroup_fd, an O_PATH directory, from its
 * first instruction; -1: none); blocking but quick (the spawner only forks). Messages
 * about exits that arrive meanwhile go to on_exit. */
typedef void (*SpawnerExitCb)(pid_t pid, int wstatus, void *ud);
pid_t spawner_spawn(Spawner *sp, char **argv, const ChildFds *fds, int log_fd, int run_dirfd,
		    const char *pidfile, int go_fd, int cgroup_fd, const QemuUser *user,
		    bool merge_any, SpawnerExitCb on_exit, void *ud, HsError *err);
/* Runs a tool (qemu-img) as hsd's own user: stdout and stderr go to
 * out_fd, fds[i] becomes fd 3 + i. Its exit is reported like a QEMU's. */
pid_t spawner_run(Spawner *sp, char **argv, int out_fd, const int *fds, unsigned n_fds,
		  SpawnerExitCb on_exit, void *ud, HsError *err);
/* Reads every pending exit report (non-blocking). Returns -EPIPE when the
 * spawner is gone. */
int spawner_dispatch(Spawner *sp, SpawnerExitCb on_exit, void *ud);
