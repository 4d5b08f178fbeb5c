/* SPDX-License-Identifier: Apache-2.0 */
/* Launching QEMU with least privilege: hsd opens every file the VM needs
 * and hands QEMU descriptors; the child drops to the QEMU user with no
 * capabilities and no_new_privs before exec. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "argv.h"
#include "paths.h"
#include "hs-util.h"
#include "spec.h"

/* At most what one SCM_RIGHTS message carries (253), less the spawner's 3. */
#define LAUNCH_MAX_FDS 249 /* + log, run dir, go, cgroup: 253 */

/* Descriptors for the child: src[i] becomes fd 3 + i in QEMU. */
typedef struct ChildFds {
	int src[LAUNCH_MAX_FDS];
	int n;
} ChildFds;

void child_fds_close(ChildFds *f);
/* Takes fd; returns its number in the child, or -EMFILE (fd closed). */
int child_fds_add(ChildFds *f, int fd);

/* Who QEMU runs as. change=false: as hsd itself (hsd not root). */
typedef struct QemuUser {
	bool change;
	char name[64];
	uid_t uid;
	gid_t gid;
	gid_t groups[8]; /* supplementary: kvm, when it exists */
	size_t n_groups;
} QemuUser;

/* Looks the user up; as root with create=true, creates a system user (and
 * group) of that name when missing (useradd). */
int qemu_user_resolve(const char *name, bool create, QemuUser *ret, HsError *err);

/* Opens what the spec names (console log in state_dirfd, kernel, initrd,
 * disks, taps for bridge NICs) and fills launch's fd numbers. qmp and
 * serial listening sockets come first (fds 3 and 4). On failure everything
 * opened is closed and err names the field. */
int launch_prepare(const VmSpec *spec, const AllowedDirs *allowed, int state_dirfd, int rootfd,
		   int qmp_listen, int serial_listen, ChildFds *fds, QemuLaunch *launch,
		   HsError *err);

/* For a child after fork that will exec (QEMU here, the spawner's tools).
 * All three are async-signal-safe: no allocation, no locks.
 *
 * Default dispositions, no signal blocked, a session of its own. */
void launch_child_reset_signals(void);
/* Copies src[0..n) to moved[], and each of keep[0..n_keep) in place, onto
 * numbers from 3 + n + 16 up (close-on-exec): clear of every number
 * launch_child_place_fds() writes, so that placing one descriptor never
 * overwrites another not yet placed. -1 (errno set) on failure. */
int launch_child_move_fds(const int *src, int n, int *moved, int *keep, int n_keep);
/* stdin from null, stdout and stderr to out, moved[i] at 3 + i (dup2
 * clears close-on-exec), every descriptor from 3 + n up closed. -1 (errno
 * set) on failure. */
int launch_child_place_fds(int null, int out, const int *moved, int n);

/* In the child after fork: never returns. Writes the pidfile (run_dirfd),
 * waits for hsd's go (go_fd), places the descriptors, drops privileges,
 * execs argv. merge_any: offer all of QEMU's anonymous memory to KSM
 * (PR_SET_MEMORY_MERGE, kept across exec), not only guest RAM. */
_Noreturn void launch_child(char **argv, const ChildFds *fds, int log_fd, int run_dirfd,
			    const char *pidfile, int go_fd, int cgroup_fd, const QemuUser *user,
			    bool merge_any);
