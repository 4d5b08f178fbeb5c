/* SPDX-License-Identifier: Apache-2.0 */
#include "vfio.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hs-util.h"

static unsigned count_entries(int rootfd, const char *path)
{
	int fd = openat(rootfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

void vfio_probe_host(int rootfd, VfioHost *ret)
{
	VfioHost v = {0};
	struct stat st;
	v.iommu_units = count_entries(rootfd, "sys/class/iommu");
	v.iommu_groups = count_entries(rootfd, "sys/kernel/iommu_groups");
	v.iommu_on = v.iommu_units > 0 && v.iommu_groups > 0;
	v.vfio_pci_loaded = fstatat(rootfd, "sys/bus/pci/drivers/vfio-pci", &st, 0) == 0;

	static char cpuinfo[65536];
	if (hs_read_small(rootfd, "proc/cpuinfo", cpuinfo, sizeof(cpuinfo)) == 0) {
		if (strstr(cpuinfo, "GenuineIntel"))
			snprintf(v.vendor, sizeof(v.vendor), "intel");
		else if (strstr(cpuinfo, "AuthenticAMD"))
			snprintf(v.vendor, sizeof(v.vendor), "amd");
	}
	if (!v.iommu_on) {
		if (!strcmp(v.vendor, "intel"))
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable VT-d in the firmware and boot the "
				 "kernel with intel_iommu=on iommu=pt");
		else if (!strcmp(v.vendor, "amd"))
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable AMD-Vi (IOMMU) in the firmware and "
				 "boot the kernel with amd_iommu=on iommu=pt");
		else
			snprintf(v.advice, sizeof(v.advice),
				 "no IOMMU is active: enable it in the firmware (VT-d / AMD-Vi) "
				 "and on the kernel command line (intel_iommu=on or amd_iommu=on)");
	}
	*ret = v;
}
