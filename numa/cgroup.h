/* SPDX-License-Identifier: Apache-2.0 */
/* cgroup v2: one group per VM under hsd's base group, with threaded
 * sub-groups for the vCPU and emulator threads of its QEMU.
 *
 * Every access goes through a root directory fd ("/" or a fake tree in
 * tests): the cgroup2 mount is found in <root>/proc/self/mountinfo and all
 * paths below are relative to rootfd.
 *
 * Layout (paths relative to the cgroup2 mount):
 *
 *   <base>/                   cgroup.subtree_control: +cpu +cpuset +memory +io +pids
 *   <base>/vm-<name>/         the VM: cpu.max, cpu.weight, memory.max, memory.high,
 *                             pids.max, io.max; QEMU's process lives here.
 *                             cgroup.subtree_control: only threaded controllers
 *                             (+cpu +cpuset), so that it can hold threaded children
 *                             (its cgroup.type then reads "domain threaded")
 *   <base>/vm-<name>/emu      threaded: emulator threads, cpuset from the limits
 *   <base>/vm-<name>/vcpu<N>  threaded: one vCPU thread, cpuset from placement
 *
 * Return values: negative errno on failure, with *err filled (when the
 * function takes one). Functions that apply limits return a non-negative
 * CG_* mask of the controllers whose requested settings were skipped
 * because the controller is not available (0: everything applied); see
 * CgroupHost.missing for why. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hs-util.h"

enum {
	CG_CPU = 1u << 0,
	CG_CPUSET = 1u << 1,
	CG_MEMORY = 1u << 2,
	CG_IO = 1u << 3,
	CG_PIDS = 1u << 4,
};
#define CG_ALL (CG_CPU | CG_CPUSET | CG_MEMORY | CG_IO | CG_PIDS)

/* VM names: [a-z0-9_-], 1..CGROUP_NAME_MAX characters. */
#define CGROUP_NAME_MAX 63
#define CGROUP_MAX_IO 16

typedef struct CgroupHost {
	int rootfd;           /* borrowed: "/" or a fake tree */
	char mount[256];      /* the cgroup2 mount point relative to rootfd ("sys/fs/cgroup") */
	char mount_root[256]; /* the mount's root in the hierarchy (mountinfo field 4), "/" usually */
	char base[256];       /* hsd's base group relative to the mount ("hsd") */
	char self[256];       /* the group hsd ran in (proc/self/cgroup "0::" line), "" unknown */
	bool delegated;       /* base lies in a group delegated to hsd (systemd Delegate=yes) */
	unsigned controllers; /* CG_* enabled in base's cgroup.subtree_control */
	unsigned v1;          /* CG_* held by cgroup v1 hierarchies (hybrid hosts) */
	char missing[512];    /* why controllers are missing, "" when none are */
} CgroupHost;

/* Finds the cgroup2 mount and sets up hsd's base group:
 *
 * - configured_base (relative to the mount; a leading '/' is ignored;
 *   components [A-Za-z0-9_.@:-], no "." or ".."): used as given, every
 *   missing level created.
 * - NULL and hsd's own group is delegated to it: base is "<group>/vms".
 *   Delegated means the directory carries systemd's "trusted.delegate" or
 *   "user.delegate" xattr (Delegate=yes), or, when not running as root, the
 *   group and its cgroup.procs and cgroup.subtree_control belong to our
 *   euid. A group that holds processes cannot enable controllers for its
 *   children (the no-internal-process rule), so when the delegated group
 *   holds processes hsd moves itself into "<group>/supervisor" (as systemd's
 *   Delegate= documentation asks); already being in "<group>/supervisor"
 *   counts as running in <group>.
 * - otherwise: "hsd" under the mount's root (needs root).
 *
 * Then, from the mount's root (or the delegated group, which hsd may not
 * reconfigure above) down to base, enables in each cgroup.subtree_control
 * every controller of cpu, cpuset, memory, io, pids that the level's
 * cgroup.controllers offers, one at a time so that one refusal does not
 * block the others; refusals only end up in ret->missing. Fails
 * (-ENOENT, "cgroup-unavailable") when there is no cgroup2 mount, and when a
 * level cannot be created. */
int cgroup_host_open(int rootfd, const char *configured_base, CgroupHost *ret, HsError *err);

/* "cpu", "cpuset", "memory", "io", "pids" for one CG_* bit; NULL for others. */
const char *cgroup_controller_name(unsigned bit);
/* The names of the bits of mask, space-separated ("cpu memory"; "" for 0),
 * into buf; returns buf. */
const char *cgroup_controllers_format(unsigned mask, char *buf, size_t size);

typedef struct CgroupIoLimit {
	unsigned major, minor;
	uint64_t rbps, wbps, riops, wiops; /* 0: "max" */
} CgroupIoLimit;

/* The whole block device io.max takes for dev (a file's st_dev or a block
 * device's st_rdev), looked up in <root>/sys/dev/block: a partition gives
 * its disk (the kernel refuses io.max on partitions). -ENODEV when dev is
 * no block device (tmpfs, overlayfs, btrfs subvolumes: major 0). */
int cgroup_io_device(int rootfd, unsigned major, unsigned minor, unsigned *ret_major,
		     unsigned *ret_minor);

/* One io.max line, as written ("8:0 rbps=1048576 wbps=max riops=max
 * wiops=max", no newline; 200 bytes hold any), into buf; returns buf. */
const char *cgroup_io_line(const CgroupIoLimit *a, char *buf, size_t size);

/* A VM's limits. Zero everywhere means no limit (the kernel's defaults). */
typedef struct CgroupLimits {
	uint64_t cpu_quota_us;  /* cpu.max quota; 0: "max"; else >= 1000 */
	uint64_t cpu_period_us; /* cpu.max period; 0: 100000; else 1000..1000000 */
	unsigned cpu_weight;    /* cpu.weight 1..10000; 0: the default, 100 */
	uint64_t memory_max;    /* bytes; 0: "max" */
	uint64_t memory_high;   /* bytes; 0: "max" */
	uint64_t pids_max;      /* 0: "max" */
	CgroupIoLimit io[CGROUP_MAX_IO]; /* io.max, one line per device */
	size_t n_io;
	/* The emulator threads (the "emu" sub-group): cpuset.cpus and
	 * cpuset.mems, kernel list syntax ("0-3,8"); "": inherit. */
	char cpuset_cpus[256];
	char cpuset_mems[64];
} CgroupLimits;

/* true for [a-z0-9_-]{1,63}. */
bool cgroup_name_valid(const char *vm_name);
/* Checks the ranges above (-EINVAL, "invalid-argument"). */
int cgroup_limits_validate(const CgroupLimits *l, HsError *err);

/* Creates <base>/vm-<name>, or re-finds the one an earlier hsd left, enables
 * the threaded controllers (cpu, cpuset) in its cgroup.subtree_control (and
 * disables domain ones found there, which would forbid threaded children),
 * then writes every limit as cgroup_vm_set_limits does. Returns the skipped
 * mask (see the top of this file). */
int cgroup_vm_create(const CgroupHost *h, const char *vm_name, const CgroupLimits *l,
		     HsError *err);

/* Rewrites every limit of an existing VM group (-ENOENT, "not-found"
 * otherwise), live: fields left at 0 are written back to "max" or the
 * default, io.max lines of devices no longer listed are reset, and an empty
 * cpuset resets the "emu" sub-group to inherit. Controllers that are not
 * available are skipped; returns the skipped mask. */
int cgroup_vm_set_limits(const CgroupHost *h, const char *vm_name, const CgroupLimits *l,
			 HsError *err);

/* An O_PATH|O_DIRECTORY|O_CLOEXEC fd of the VM's group, for
 * clone3(CLONE_INTO_CGROUP) (.cgroup = fd) or for cgroup_enter() in a
 * forked child. Negative errno on failure (-ENOENT before create). */
int cgroup_vm_fd(const CgroupHost *h, const char *vm_name);

/* Moves the calling process (all its threads) into the group: writes "0" to
 * group_fd's cgroup.procs. Async-signal-safe: meant for a forked child
 * before exec. Returns 0 or a negative errno. */
int cgroup_enter(int group_fd);

/* Puts thread tid (of a process already in the VM's group) into the
 * threaded sub-group sub ("emu" or "vcpu<N>"), creating it on demand
 * (cgroup.type "threaded"), after setting its cpuset.cpus to cpus when
 * cpus is not NULL ("" resets it to inherit). Returns CG_CPUSET when cpus
 * were asked for but cpuset is not available, else 0. */
int cgroup_vm_place_thread(const CgroupHost *h, const char *vm_name, const char *sub, pid_t tid,
			   const char *cpus, HsError *err);

/* Removes the VM's sub-groups, then its group. Idempotent (0 when already
 * gone). While processes remain: -EBUSY ("cgroup-busy") naming them, after
 * one attempt: call again once they have been reaped. */
int cgroup_vm_remove(const CgroupHost *h, const char *vm_name, HsError *err);

/* Reads the VM group's cgroup.procs (every process of its threaded
 * subtree): fills up to max pids and returns how many there are (may be more
 * than max), or a negative errno. */
int cgroup_vm_procs(const CgroupHost *h, const char *vm_name, pid_t *pids, size_t max);

/* The VM group as /proc/PID/cgroup shows it ("/hsd/vm-web1"), into buf. */
int cgroup_vm_path(const CgroupHost *h, const char *vm_name, char *buf, size_t size);
