/* SPDX-License-Identifier: Apache-2.0 */
/* SR-IOV physical functions and their virtual functions, read and set
 * through sysfs under a root directory fd (the real "/" or a test's fake
 * tree): sys/class/net/<pf>/device/{sriov_totalvfs,sriov_numvfs,virtfnN}. */
#pragma once

#include <net/if.h>
#include <stddef.h>

#include "hs-util.h"

typedef struct SriovVf {
	unsigned index;     /* N of virtfnN */
	char address[16];   /* PCI address "0000:01:10.1" */
	char driver[32];    /* bound driver ("" none), e.g. "iavf", "vfio-pci" */
	char netdev[IFNAMSIZ]; /* its host interface while a host driver holds it, else "" */
} SriovVf;

typedef struct SriovPf {
	char name[IFNAMSIZ];
	char address[16];   /* the PF's PCI address */
	unsigned totalvfs, numvfs;
	SriovVf *vfs;       /* numvfs entries, by index */
	size_t n_vfs;
} SriovPf;

/* One PF by interface name. -ENODEV (kind "not-found") when there is no
 * such interface; -EOPNOTSUPP (kind "not-sriov") when it has no SR-IOV. */
int sriov_pf_read(int rootfd, const char *ifname, SriovPf *ret, HsError *err);
void sriov_pf_clear(SriovPf *pf);

/* Every interface of sys/class/net with sriov_totalvfs > 0, sorted by name. */
int sriov_list(int rootfd, SriovPf **ret, size_t *ret_n, HsError *err);
void sriov_list_free(SriovPf *pfs, size_t n);

/* Sets sriov_numvfs (through 0 when changing from one non-zero count to
 * another, as the kernel requires). -ERANGE (kind "invalid") above
 * sriov_totalvfs. */
int sriov_set_numvfs(int rootfd, const char *ifname, unsigned n, HsError *err);

/* A VF of `pf` for a VM: one not in taken[] (addresses of VFs other VMs
 * have), preferring one no host driver holds (none, or vfio-pci) over one
 * bound to the VF's host driver. -EBUSY (kind "no-free-vf") when every VF
 * is taken (or none is enabled). */
int sriov_vf_pick(int rootfd, const char *pf, const char (*taken)[16], size_t n_taken,
		  SriovVf *ret, HsError *err);

/* The PF interface and VF index of a PCI address, if it is a VF of a PF
 * under sys/class/net (its physfn link). -ENOENT when it is not. */
int sriov_vf_of(int rootfd, const char *address, char pf[IFNAMSIZ], unsigned *ret_index);
