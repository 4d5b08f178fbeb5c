/* SPDX-License-Identifier: Apache-2.0 */
#include "sriov.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hs-util.h"

#define CLASS_NET "sys/class/net"
#define PCI_DEVICES "sys/bus/pci/devices"

/* A name that is one path component, shorter than `size`. */
static bool component_ok(const char *name, size_t size)
{
	return name && *name && strlen(name) < size && !strchr(name, '/') && strcmp(name, ".") &&
	       strcmp(name, "..");
}

static int read_unsigned(int rootfd, const char *path, unsigned *ret)
{
	char buf[32], *end;
	int r = hs_read_small(rootfd, path, buf, sizeof(buf));
	if (r < 0)
		return r;
	errno = 0;
	unsigned long v = strtoul(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || v > UINT_MAX)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

static int first_entry_cb(int dfd, const char *name, void *ud)
{
	snprintf(ud, IFNAMSIZ, "%s", name);
	return 1;
}

/* The first interface of the PCI device `addr` (its net/ dir), "" when it
 * has none. */
static void device_netdev(int rootfd, const char *addr, char ret[IFNAMSIZ])
{
	char path[PATH_MAX];
	ret[0] = '\0';
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/net", addr);
	if (hs_dir_foreach(rootfd, path, first_entry_cb, ret) != 1)
		ret[0] = '\0';
}

static void read_vf(int rootfd, const char *addr, SriovVf *vf)
{
	char path[PATH_MAX];
	snprintf(vf->address, sizeof(vf->address), "%s", addr);
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/driver", addr);
	if (hs_read_link_base(rootfd, path, vf->driver, sizeof(vf->driver)) < 0)
		vf->driver[0] = '\0';
	device_netdev(rootfd, addr, vf->netdev);
}

/* The SR-IOV counts of `ifname` (the first step of reading or setting). */
static int read_counts(int rootfd, const char *ifname, SriovPf *pf, HsError *err)
{
	char path[PATH_MAX];
	struct stat st;
	if (!component_ok(ifname, IFNAMSIZ))
		return hs_error_set(err, -EINVAL, "invalid", "invalid interface name '%s'",
				    ifname ? ifname : "");
	snprintf(path, sizeof(path), CLASS_NET "/%s", ifname);
	if (fstatat(rootfd, path, &st, 0) < 0)
		return hs_error_set(err, -ENODEV, "not-found", "no interface %s", ifname);
	snprintf(pf->name, sizeof(pf->name), "%s", ifname);
	snprintf(path, sizeof(path), CLASS_NET "/%s/device/sriov_totalvfs", ifname);
	int r = read_unsigned(rootfd, path, &pf->totalvfs);
	if (r == -ENOENT || (r == 0 && pf->totalvfs == 0))
		return hs_error_set(err, -EOPNOTSUPP, "not-sriov", "%s has no SR-IOV", ifname);
	if (r < 0)
		return hs_error_set(err, r, "network", "%s: cannot read sriov_totalvfs: %s", ifname,
				    strerror(-r));
	snprintf(path, sizeof(path), CLASS_NET "/%s/device/sriov_numvfs", ifname);
	r = read_unsigned(rootfd, path, &pf->numvfs);
	if (r < 0)
		return hs_error_set(err, r, "network", "%s: cannot read sriov_numvfs: %s", ifname,
				    strerror(-r));
	return 0;
}

int sriov_pf_read(int rootfd, const char *ifname, SriovPf *ret, HsError *err)
{
	SriovPf pf = {0};
	char path[PATH_MAX];
	int r = read_counts(rootfd, ifname, &pf, err);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), CLASS_NET "/%s/device", ifname);
	if (hs_read_link_base(rootfd, path, pf.address, sizeof(pf.address)) < 0)
		pf.address[0] = '\0';
	if (pf.numvfs) {
		pf.vfs = calloc(pf.numvfs, sizeof(*pf.vfs));
		if (!pf.vfs)
			return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	for (unsigned i = 0; i < pf.numvfs; i++) {
		char addr[sizeof(pf.vfs->address)];
		snprintf(path, sizeof(path), CLASS_NET "/%s/device/virtfn%u", ifname, i);
		/* Missing while the kernel is still making (or removing) VFs. */
		if (hs_read_link_base(rootfd, path, addr, sizeof(addr)) < 0)
			continue;
		SriovVf *vf = &pf.vfs[pf.n_vfs++];
		vf->index = i;
		read_vf(rootfd, addr, vf);
	}
	*ret = pf;
	return 0;
}

void sriov_pf_clear(SriovPf *pf)
{
	if (!pf)
		return;
	free(pf->vfs);
	pf->vfs = NULL;
	pf->n_vfs = 0;
}

typedef struct PfList {
	int rootfd;
	SriovPf *pfs;
	size_t n, cap;
	HsError *err; /* set by list_cb when it stops the walk */
	bool failed;
} PfList;

static int list_cb(int dfd, const char *name, void *ud)
{
	PfList *l = ud;
	SriovPf pf;
	char path[PATH_MAX];
	unsigned total;
	snprintf(path, sizeof(path), CLASS_NET "/%s/device/sriov_totalvfs", name);
	if (read_unsigned(l->rootfd, path, &total) < 0 || total == 0)
		return 0;
	int r = sriov_pf_read(l->rootfd, name, &pf, l->err);
	if (r == -ENODEV || r == -EOPNOTSUPP) /* gone meanwhile */
		return 0;
	if (r < 0) {
		l->failed = true;
		return r;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4;
		SriovPf *p = realloc(l->pfs, cap * sizeof(*p));
		if (!p) {
			sriov_pf_clear(&pf);
			l->failed = true;
			return hs_error_set(l->err, -ENOMEM, "internal", "out of memory");
		}
		l->pfs = p;
		l->cap = cap;
	}
	l->pfs[l->n++] = pf;
	return 0;
}

static int pf_cmp(const void *a, const void *b)
{
	return strcmp(((const SriovPf *)a)->name, ((const SriovPf *)b)->name);
}

int sriov_list(int rootfd, SriovPf **ret, size_t *ret_n, HsError *err)
{
	PfList l = {.rootfd = rootfd, .err = err};
	int r = hs_dir_foreach(rootfd, CLASS_NET, list_cb, &l);
	if (r < 0 && r != -ENOENT) {
		sriov_list_free(l.pfs, l.n);
		if (!l.failed)
			hs_error_set(err, r, "network", "cannot read " CLASS_NET ": %s", strerror(-r));
		return r;
	}
	if (l.n)
		qsort(l.pfs, l.n, sizeof(*l.pfs), pf_cmp);
	*ret = l.pfs;
	*ret_n = l.n;
	return 0;
}

void sriov_list_free(SriovPf *pfs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sriov_pf_clear(&pfs[i]);
	free(pfs);
}

static int write_numvfs(int rootfd, const char *ifname, unsigned n, HsError *err)
{
	char path[PATH_MAX], value[16];
	snprintf(path, sizeof(path), CLASS_NET "/%s/device/sriov_numvfs", ifname);
	snprintf(value, sizeof(value), "%u", n);
	int r = hs_write_value_at(rootfd, path, value);
	if (r < 0)
		return hs_error_set(err, r, "network", "%s: cannot set sriov_numvfs to %u: %s",
				    ifname, n, strerror(-r));
	return 0;
}

int sriov_set_numvfs(int rootfd, const char *ifname, unsigned n, HsError *err)
{
	SriovPf pf = {0};
	int r = read_counts(rootfd, ifname, &pf, err);
	if (r < 0)
		return r;
	if (n > pf.totalvfs)
		return hs_error_set(err, -ERANGE, "invalid", "%s has at most %u VFs, not %u",
				    ifname, pf.totalvfs, n);
	if (n == pf.numvfs)
		return 0;
	/* The kernel takes a new non-zero count only from 0. */
	if (pf.numvfs && n) {
		r = write_numvfs(rootfd, ifname, 0, err);
		if (r < 0)
			return r;
	}
	return write_numvfs(rootfd, ifname, n, err);
}

typedef struct VfSearch {
	const char *address;
	unsigned index;
	bool found;
} VfSearch;

static int virtfn_cb(int dfd, const char *name, void *ud)
{
	VfSearch *s = ud;
	char addr[32], end;
	unsigned i;
	if (sscanf(name, "virtfn%u%c", &i, &end) != 1)
		return 0;
	if (hs_read_link_base(dfd, name, addr, sizeof(addr)) < 0 || strcmp(addr, s->address))
		return 0;
	s->index = i;
	s->found = true;
	return 1;
}

int sriov_vf_of(int rootfd, const char *address, char pf[IFNAMSIZ], unsigned *ret_index)
{
	char path[PATH_MAX], pf_addr[32], name[IFNAMSIZ];
	struct stat st;
	if (!component_ok(address, sizeof(((SriovVf *)NULL)->address)))
		return -EINVAL;
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/physfn", address);
	if (hs_read_link_base(rootfd, path, pf_addr, sizeof(pf_addr)) < 0)
		return -ENOENT;
	device_netdev(rootfd, pf_addr, name);
	if (!*name)
		return -ENOENT;
	snprintf(path, sizeof(path), CLASS_NET "/%s", name);
	if (fstatat(rootfd, path, &st, 0) < 0)
		return -ENOENT;
	VfSearch s = {.address = address};
	snprintf(path, sizeof(path), PCI_DEVICES "/%s", pf_addr);
	if (hs_dir_foreach(rootfd, path, virtfn_cb, &s) < 0 || !s.found)
		return -ENOENT;
	snprintf(pf, IFNAMSIZ, "%s", name);
	if (ret_index)
		*ret_index = s.index;
	return 0;
}

/* 0: free for a VM, no host user (no driver, or vfio-pci); 1: a host
 * driver holds it; 2: taken. */
static int vf_rank(const SriovVf *vf, const char (*taken)[16], size_t n_taken)
{
	for (size_t i = 0; i < n_taken; i++)
		if (!strcmp(taken[i], vf->address))
			return 2;
	return vf->driver[0] && strcmp(vf->driver, "vfio-pci") ? 1 : 0;
}

int sriov_vf_pick(int rootfd, const char *pf, const char (*taken)[16], size_t n_taken,
		  SriovVf *ret, HsError *err)
{
	SriovPf p = {0};
	int r = sriov_pf_read(rootfd, pf, &p, err);
	if (r < 0)
		return r;
	int best = -1, best_rank = 2;
	for (size_t i = 0; i < p.n_vfs; i++) {
		int rank = vf_rank(&p.vfs[i], taken, n_taken);
		if (rank < best_rank) {
			best = (int)i;
			best_rank = rank;
		}
	}
	if (best >= 0)
		*ret = p.vfs[best];
	else
		r = hs_error_set(err, -EBUSY, "no-free-vf",
				 "%s has no free virtual function (%u of %u enabled, all given to "
				 "VMs): more with hsctl sriov set %s --numvfs N",
				 pf, p.numvfs, p.totalvfs, pf);
	sriov_pf_clear(&p);
	return r < 0 ? r : 0;
}
