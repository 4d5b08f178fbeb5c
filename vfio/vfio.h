/* SPDX-License-Identifier: Apache-2.0 */
/* PCI passthrough, host side: plain C, no JSON. Everything is read and
 * written through a root directory fd ("/" or a fake tree in unit tests):
 * sysfs under <root>/sys, device nodes under <root>/dev.
 *
 * - What the host's IOMMU offers (vfio_probe_host).
 * - PCI devices: enumeration, IOMMU groups, functions of a slot.
 * - Group viability: every endpoint of a group bound to vfio-pci, unbound,
 *   or about to be taken by the same VM; bridges do not count.
 * - Claims: which VM holds which device, and the driver it had before,
 *   recorded durably in a claims directory (one file per device) BEFORE
 *   anything is changed, so that a crash at any point is recovered by
 *   releasing what the record names. One device is never held by two VMs:
 *   a claim file is created exclusively.
 * - Bind: driver_override = vfio-pci, unbind from the current driver,
 *   drivers_probe, wait for the driver link to say vfio-pci. Release: the
 *   original driver_override back, unbind from vfio-pci, drivers_probe, wait
 *   for the original driver (if it had one), then the claim is removed.
 *
 * Binding blocks (sysfs writes run the drivers' probe and remove), so hsd
 * runs it in the hs-vfio tool (vfio/hs-vfio.c) through its spawner, never
 * in its event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hs-util.h"

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

/* A PCI address in its full, lower-case form "0000:01:00.0". */
#define VFIO_ADDR_SIZE 16
typedef char VfioAddr[VFIO_ADDR_SIZE];

/* Accepts "0000:01:00.0", "01:00.0" (domain 0) in either case; false on
 * anything else (range checked: bus <= ff, device <= 1f, function <= 7). */
bool vfio_addr_parse(const char *s, VfioAddr ret);

#define VFIO_DRIVER_SIZE 64
typedef struct VfioPciDev {
	VfioAddr addr;
	unsigned vendor, device; /* 16 bit each */
	unsigned class_code;     /* 24 bit: 0x030000 VGA, 0x040300 audio, 0x0604xx bridge */
	char driver[VFIO_DRIVER_SIZE];   /* bound driver's name; "" unbound */
	char override_[VFIO_DRIVER_SIZE]; /* driver_override; "" none ("(null)") */
	int group;          /* IOMMU group number; -1: none (no IOMMU) */
	bool bridge;        /* class 0x06xxxx (a bridge: allowed in a viable group) */
	bool boot_vga;      /* boot_vga = 1: it drives the host's console */
	char reset_methods[64]; /* reset_method ("flr bus"); "" when the kernel has no file */
	bool can_reset;     /* a reset file exists */
	unsigned n_slot_functions; /* functions present in its slot (itself included) */
} VfioPciDev;

/* One device; -ENOENT when no such device. */
int vfio_pci_read(int rootfd, const char *addr, VfioPciDev *ret);
/* Every PCI device, sorted by address (free(*ret)). */
int vfio_pci_list(int rootfd, VfioPciDev **ret, size_t *n);
/* The index-th (0-based, in address order) device with this vendor and
 * device id; -ENOENT when there are fewer. */
int vfio_pci_find_id(int rootfd, unsigned vendor, unsigned device, unsigned index,
		     VfioAddr ret);
/* Functions of addr's slot present on the host (addr's included), sorted;
 * returns how many (at most max are written). */
size_t vfio_slot_functions(int rootfd, const char *addr, VfioAddr *ret, size_t max);
/* Members of IOMMU group `group`, sorted; returns how many (at most max
 * written); 0 when the group does not exist. */
size_t vfio_group_members(int rootfd, int group, VfioAddr *ret, size_t max);

/* Whether `group` may go to a VM that takes the devices `taking`: every
 * endpoint (non-bridge) member is bound to vfio-pci, unbound, or in
 * `taking`. 0: viable. -EBUSY: not, and why names each other device and its
 * driver ("IOMMU group 3 also holds 0000:00:1f.0 (lpc_ich), 0000:00:1f.2
 * (ahci): pass them all or unbind them"). -ENOENT: no such group. */
int vfio_group_check(int rootfd, int group, const VfioAddr *taking, size_t n_taking, char *why,
		     size_t why_size);

/* ---- claims ---- */

typedef enum VfioClaimState {
	VFIO_CLAIM_BINDING,   /* recorded; the device may be anywhere between its
			       * driver and vfio-pci */
	VFIO_CLAIM_BOUND,     /* bound to vfio-pci, the VM may use it */
	VFIO_CLAIM_RELEASING, /* on its way back to the original driver */
} VfioClaimState;

typedef struct VfioClaim {
	VfioAddr addr;
	char vm[64];
	char orig_driver[VFIO_DRIVER_SIZE];   /* "" was unbound */
	char orig_override[VFIO_DRIVER_SIZE]; /* "" none */
	VfioClaimState state;
	/* The owner given to /dev/vfio/<group> (the QEMU user) and what it
	 * had before; uid -1: not changed. */
	int group;
	long owner_uid, owner_gid;
	long prev_uid, prev_gid; /* recorded before the chown; -1: unknown */
} VfioClaim;

const char *vfio_claim_state_to_string(VfioClaimState s);

/* The claim on addr: 0, -ENOENT when none. A record that cannot be parsed
 * is -EBADMSG. */
int vfio_claim_read(int claimsfd, const char *addr, VfioClaim *ret);
/* Every claim, sorted by address (free(*ret)). Unparsable records are
 * skipped. */
int vfio_claims_list(int claimsfd, VfioClaim **ret, size_t *n);

/* Options of a bind. */
typedef struct VfioBindOpts {
	double timeout;    /* seconds to wait for each driver change; <= 0: 5 */
	long owner_uid;    /* chown /dev/vfio/<group> to this (-1: leave it) */
	long owner_gid;
} VfioBindOpts;

/* A bind's refusals, nothing changed (hs-vfio check): "invalid" (not an
 * address), "not-found", "no-iommu", "device-busy" (claimed by a VM other
 * than vm; with vm NULL, by any VM), "host-device". claimsfd -1: claims
 * not looked at. The device in *ret when it passes. */
int vfio_device_check(int rootfd, int claimsfd, const char *addr, const char *vm,
		      VfioPciDev *ret, HsError *err);

/* Claims `addr` for `vm` and binds it to vfio-pci. In order: refusals
 * (device missing, no IOMMU group, held by another VM, boot VGA), the claim
 * recorded (state binding, the original driver), driver_override, unbind,
 * drivers_probe, wait for vfio-pci, /dev/vfio/<group> owner, state bound.
 * A device already claimed by the same VM is bound again (idempotent).
 * Errors (err->kind): "not-found" (no such device), "no-iommu" (no IOMMU
 * group), "device-busy" (another VM holds it: named), "host-device" (it
 * drives the host console), "bind-failed" (the kernel did not bind it in
 * time; the device is released again). Does not check group viability:
 * the caller checks the whole set first (vfio_group_check). */
int vfio_bind(int rootfd, int claimsfd, const char *addr, const char *vm,
	      const VfioBindOpts *opts, HsError *err);

/* Gives addr back to the host: state releasing, driver_override as it was,
 * unbind from vfio-pci, drivers_probe, wait for the original driver (when
 * there was one), /dev/vfio/<group> back to the owner it had before the
 * bind (prev_uid) when no other claim holds the group (a node already gone
 * is fine), then the claim removed. With vm non-NULL only that VM's claim
 * is released (-EBUSY otherwise). No claim: 0 (nothing to do). When the
 * original driver does not come back in time the claim is still removed
 * (the override is already cleared, so the host may probe it again), and
 * the result is -ETIMEDOUT with err saying so. */
int vfio_release(int rootfd, int claimsfd, const char *addr, const char *vm, double timeout,
		 HsError *err);

/* For fault-injection tests: called with the name of each step of a bind or
 * release just before it is taken ("claim", "override", "unbind", "probe",
 * "bound", "release", "restore-override", "release-unbind",
 * "release-probe", "unclaim"). NULL: none. */
extern void (*vfio_step_hook)(const char *step);
