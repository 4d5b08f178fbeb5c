/* SPDX-License-Identifier: Apache-2.0 */
/* PCI passthrough, host side: what the host's IOMMU offers, read through a
 * root directory fd so tests use fake sysfs trees. (Device enumeration,
 * group viability and rebinding come with the passthrough issue.) */
#pragma once

#include <stdbool.h>

typedef struct VfioHost {
	bool iommu_on;         /* an IOMMU unit is registered (/sys/class/iommu) */
	unsigned iommu_units;
	unsigned iommu_groups; /* /sys/kernel/iommu_groups entries */
	bool vfio_pci_loaded;  /* /sys/bus/pci/drivers/vfio-pci */
	char vendor[16];       /* "intel", "amd" or "" (from the CPU flags) */
	char advice[256];      /* what to change when the IOMMU is off */
} VfioHost;

/* Never fails: what cannot be read counts as absent. */
void vfio_probe_host(int rootfd, VfioHost *ret);
